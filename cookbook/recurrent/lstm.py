r"""Long short-term memory
======================

The LSTM cell adds to the recurrent state a memory cell that is changed only by gated, additive
updates, so that errors can flow back over hundreds of steps: the cell to reach for when a plain
recurrent network forgets too soon.

Equation
--------

.. math::

   \begin{aligned}
   i_t &= \sigma\left(x_t W_{xi} + h_{t-1} W_{hi} + b_i\right), &
   f_t &= \sigma\left(x_t W_{xf} + h_{t-1} W_{hf} + b_f\right), \\
   g_t &= \tanh\left(x_t W_{xg} + h_{t-1} W_{hg} + b_g\right), &
   o_t &= \sigma\left(x_t W_{xo} + h_{t-1} W_{ho} + b_o\right), \\
   c_t &= f_t \odot c_{t-1} + i_t \odot g_t, &
   h_t &= o_t \odot \tanh(c_t)
   \end{aligned}

.. math::

   \frac{\partial c_t}{\partial c_{t-1}}\bigg|_{\text{direct}} = \operatorname{diag}(f_t)

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_t`
     - input at step :math:`t`
     - ``x``, a row of ``xs``
     - ``(D,)``
   * - :math:`h_t`
     - hidden state, the cell's output
     - ``h``, a row of ``hs``
     - ``(H,)``
   * - :math:`c_t`
     - memory cell
     - ``c``
     - ``(H,)``
   * - :math:`i_t`, :math:`f_t`, :math:`o_t`
     - input, forget and output gates, each in :math:`(0, 1)`
     - ``i``, ``f``, ``o``
     - ``(H,)``
   * - :math:`g_t`
     - candidate values to write into the cell
     - ``g``
     - ``(H,)``
   * - :math:`W_{xi}`, :math:`W_{xf}`, :math:`W_{xg}`, :math:`W_{xo}`
     - input weights of each gate, stored side by side in the order i, f, g, o
     - ``params["W_x"]``
     - ``(D, 4H)``
   * - :math:`W_{hi}`, :math:`W_{hf}`, :math:`W_{hg}`, :math:`W_{ho}`
     - recurrent weights of each gate, same order
     - ``params["W_h"]``
     - ``(H, 4H)``
   * - :math:`b_i`, :math:`b_f`, :math:`b_g`, :math:`b_o`
     - biases, same order; :math:`b_f = 1` at initialisation
     - ``params["b"]``
     - ``(4H,)``
   * - :math:`\sigma`
     - logistic sigmoid
     - ``jax.nn.sigmoid``
     - elementwise
   * - :math:`t`
     - time step
     - row index of ``xs``
     - scalar

Explanation
-----------

:footcite:t:`hochreiter1997long` traced the vanishing gradient of :doc:`rnn` to the repeated
multiplication by the recurrent Jacobian, and removed it from one path: the memory cell
:math:`c_t` is updated by *adding* new content, not by squashing the old state through a weight
matrix and a nonlinearity. Along that path the Jacobian from one cell state to the next is just the
forget gate (the second equation, which leaves out the smaller indirect paths through
:math:`h_{t-1}` and the gates), so when :math:`f_t \approx 1` an error signal travels back through
time unchanged: the *constant error carousel*, a gradient highway through time. The three gates
decide, from the current input and the previous output, what to write (:math:`i_t` scales the
candidate :math:`g_t`), what to keep (:math:`f_t`) and what to show (:math:`o_t`). The forget gate
was not in the 1997 cell (there :math:`f_t = 1` always); :footcite:t:`gers2000learning` added it so
that the cell can reset itself between unrelated parts of a stream. Without it, :math:`c_t = c_0 +
\sum_{k \le t} i_k \odot g_k` is a running sum of terms in :math:`(-1, 1)` that is never cleared: it
can rise or fall, and over a long stream it drifts without bound, though by less than one per step
(:math:`\lvert c_t - c_0 \rvert < t`).

.. admonition:: Intuition

   The memory cell is a conveyor belt running through time. The gates are workers beside it: one
   decides what to put on the belt, one what to take off, one what to show to the next station,
   while the belt itself carries everything forward at no cost. An error signal rides the belt
   backwards the same way, which is why it survives long distances.

**Forget-gate bias.** With all biases zero the forget gate starts near :math:`\sigma(0) = 0.5`, so
at initialisation the cell halves its memory every step and the gradient highway vanishes just as in
a plain network. :footcite:t:`jozefowicz2015empirical` found that initialising :math:`b_f = 1`
(so :math:`f_t \approx 0.73`) closes most of the gap between the LSTM and the best architectures
they searched; ``init`` does this through ``forget_bias``.

The four gates are computed with one matrix product each for the input and the recurrent state
(weights stored side by side as ``(D, 4H)`` and ``(H, 4H)``) and then split, which is faster than
eight small products and is how cuDNN and most libraries store them. Flax's
``flax.linen.LSTMCell`` keeps eight separate dense layers instead; the test maps one layout onto
the other: ``ii``, ``if``, ``ig``, ``io`` are the four column blocks of ``W_x``, ``hi``, ``hf``,
``hg``, ``ho`` those of ``W_h``, and the biases of the ``h`` layers are the blocks of ``b`` (Flax's
input layers have none). The carry is the pair :math:`(c, h)`, in Flax's order.

*Numerical traps.* The gates use the sigmoid, which saturates without overflow in JAX; the cell
state is unbounded in principle (it is a running sum), so very long sequences with :math:`f_t
\approx 1` and :math:`i_t > 0` can let :math:`\lvert c_t \rvert` grow, while :math:`h_t` stays in
:math:`(-1, 1)` because of the final :math:`\tanh`.

*Bad input.* ``init`` takes positive integer sizes; ``cell`` and ``apply`` check that the inputs
are floating-point arrays of the sizes the parameters were made for, and that the parameters have
the shapes ``init`` gives them, raising a ``ValueError`` or ``TypeError`` that names the argument.

Inductive bias
--------------

Like :doc:`rnn`, the LSTM applies one rule at every step and reads left to right. In addition it
assumes that what matters in the past can be stored as a few quantities that are kept *unchanged*
until needed (counts, flags, remembered values), which is why it can bridge long gaps between a
cause and its effect: the adding problem in the tests, where two marked numbers among fifty must
be remembered and summed, defeats a plain recurrent network trained for the same number of steps
and is solved by the LSTM.

Example
-------

A layer of 5 units over 7 steps of 3 features; the forget gate starts mostly open:

>>> import jax, jax.numpy as jnp
>>> from cookbook.recurrent.lstm import init, cell, apply
>>> k_p, k_x = jax.random.split(jax.random.key(0))
>>> params = init(k_p, 3, 5)
>>> params["b"].reshape(4, 5)[:, 0]  # biases of the gates i, f, g, o
Array([0., 1., 0., 0.], dtype=float32)
>>> xs = jax.random.normal(k_x, (7, 3))
>>> hs = apply(params, xs)
>>> hs.shape
(7, 5)
>>> c, h = cell(params, (jnp.zeros(5), jnp.zeros(5)), xs[0])
>>> bool(jnp.allclose(h, hs[0])), c.shape
(True, (5,))
"""

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"cell": (), "apply": ()}


def init(key, D, H, *, forget_bias=1.0, dtype=jnp.float32):
    """Parameters of an LSTM layer with ``D`` inputs and ``H`` units, gates ordered i, f, g, o.

    ``W_x`` is LeCun-normal, ``W_h`` is Gaussian with variance ``1/H``, the forget
    gate's bias is ``forget_bias`` and the other biases are zero.
    """
    D, H = _checks.size(D, "D"), _checks.size(H, "H")
    k_x, k_h = jax.random.split(key)
    b = jnp.zeros((4, H), dtype).at[1].set(forget_bias)
    return {
        "W_x": jax.random.normal(k_x, (D, 4 * H), dtype) / jnp.sqrt(D).astype(dtype),
        "W_h": jax.random.normal(k_h, (H, 4 * H), dtype) / jnp.sqrt(H).astype(dtype),
        "b": b.reshape(4 * H),
    }


def _sizes(params):
    """``(D, H)`` of a layer, after checking that ``params`` has the shapes ``init`` gives it."""
    W_x = _checks.float_array(params["W_x"], "params['W_x']", ndim=2, what=" (D, 4H)")
    D, H = W_x.shape[0], W_x.shape[1] // 4
    for name, shape in (("W_x", (D, 4 * H)), ("W_h", (H, 4 * H)), ("b", (4 * H,))):
        where = f"params['{name}']"
        _checks.same_shape(_checks.float_array(params[name], where), where, shape, expected_from="init(key, D, H)")
    return D, H


def cell(params, carry, x):
    """One step: the new carry ``(c, h)`` from the previous one and the input ``x`` (D,)."""
    D, H = _sizes(params)
    c, h = carry
    x = _checks.float_array(x, "x")
    if x.shape != (D,):
        raise ValueError(f"x must have shape (D,) = ({D},), got shape {x.shape}")
    c, h = _checks.float_array(c, "carry"), _checks.float_array(h, "carry")
    if c.shape != (H,) or h.shape != (H,):
        raise ValueError(f"carry (c, h) must have shapes ({H},) and ({H},), got {c.shape} and {h.shape}")
    # Called eagerly, one compiled program; traced (inside a caller's jax.jit), the plain function,
    # which then compiles into the caller's program as before.
    return (_cell_compiled if _checks.is_concrete((params, c, h, x)) else _cell)(params, (c, h), x)


def _cell(params, carry, x):
    c, h = carry
    z = x @ params["W_x"] + h @ params["W_h"] + params["b"]  # (4H,)
    i, f, g, o = jnp.split(z, 4)
    i, f, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jax.nn.sigmoid(o)
    c = f * c + i * jnp.tanh(g)
    h = o * jnp.tanh(c)
    return c, h


_cell_compiled = jax.jit(_cell)


def apply(params, xs, carry0=None):
    """The hidden states (T, H) of the layer over ``xs`` (T, D), from ``carry0 = (c0, h0)`` or zeros."""
    D, H = _sizes(params)
    xs = _checks.float_array(xs, "xs")
    if xs.ndim != 2 or xs.shape[1] != D:
        raise ValueError(f"xs must have shape (T, D) with D = {D}, got shape {xs.shape}")
    if carry0 is not None:
        c0, h0 = carry0
        c0, h0 = _checks.float_array(c0, "carry"), _checks.float_array(h0, "carry")
        if c0.shape != (H,) or h0.shape != (H,):
            raise ValueError(f"carry (c, h) must have shapes ({H},) and ({H},), got {c0.shape} and {h0.shape}")
        carry0 = (c0, h0)
    return _apply(params, xs, carry0)


# The checks run in Python and the scan is one compiled program: called eagerly, the scan would
# trace and compile again on every call (its step is a new closure each time). A missing carry0
# comes in as None and the zeros are made here, so that apply under jax.jit traces to this program.
@jax.jit
def _apply(params, xs, carry0):
    if carry0 is None:
        H = params["W_h"].shape[0]
        carry0 = (jnp.zeros((H,), xs.dtype), jnp.zeros((H,), xs.dtype))

    def step(carry, x):
        carry = _cell(params, carry, x)
        return carry, carry[1]

    _, hs = jax.lax.scan(step, carry0, xs)  # (T, H)
    return hs
