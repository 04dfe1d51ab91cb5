r"""Gated recurrent unit
====================

The GRU is a gated recurrent cell with two gates and no separate memory cell: nearly as good as
the LSTM at long-range dependencies with three weight blocks instead of four, and a common first
choice for a recurrent layer.

Equation
--------

.. math::

   \begin{aligned}
   r_t &= \sigma\left(x_t W_{xr} + b_r + h_{t-1} W_{hr}\right), \qquad
   z_t = \sigma\left(x_t W_{xz} + b_z + h_{t-1} W_{hz}\right), \\
   n_t &= \tanh\left(x_t W_{xn} + b_n + r_t \odot \left(h_{t-1} W_{hn} + b_{hn}\right)\right), \\
   h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}
   \end{aligned}

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
     - hidden state, the cell's output and its only memory
     - ``h``, a row of ``hs``
     - ``(H,)``
   * - :math:`r_t`
     - reset gate: how much of the old state the candidate may read
     - ``r``
     - ``(H,)``
   * - :math:`z_t`
     - update gate: how much of the old state is kept
     - ``z``
     - ``(H,)``
   * - :math:`n_t`
     - candidate state
     - ``n``
     - ``(H,)``
   * - :math:`W_{xr}`, :math:`W_{xz}`, :math:`W_{xn}`
     - input weights, side by side in the order r, z, n
     - ``params["W_x"]``
     - ``(D, 3H)``
   * - :math:`W_{hr}`, :math:`W_{hz}`, :math:`W_{hn}`
     - recurrent weights, same order
     - ``params["W_h"]``
     - ``(H, 3H)``
   * - :math:`b_r`, :math:`b_z`, :math:`b_n`
     - input biases, same order
     - ``params["b_x"]``
     - ``(3H,)``
   * - :math:`b_{hn}`
     - bias of the recurrent term of the candidate, inside the reset gate
     - ``params["b_hn"]``
     - ``(H,)``
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

:footcite:t:`cho2014learning` proposed the cell for their encoder-decoder translation model (see
:doc:`seq2seq`). Its last line is the whole idea: the new state is a convex combination, unit by
unit, of the old state and a candidate. Where the update gate :math:`z_t` is near 1 the unit copies
its old value forward, and the Jacobian :math:`\partial h_t / \partial h_{t-1}` along that path is
:math:`\operatorname{diag}(z_t)`: the same additive gradient highway as the LSTM's cell state. The
reset gate :math:`r_t` lets the candidate ignore the old state, so that a unit can start afresh
when a new segment of the input begins.

.. admonition:: Intuition

   Picture a blackboard of :math:`H` cells. At every step a helper drafts a new value for each
   cell (the candidate), and a dial per cell (the update gate) sets how much of the old chalk to
   keep and how much of the draft to write over it; a second dial (the reset gate) says whether the
   draft may look at what is already on the board. A cell whose dial stays at "keep" carries its
   value, and its gradient, across any number of steps.

**Relation to the LSTM** (:doc:`lstm`). The GRU merges the LSTM's cell and hidden state into one
vector and ties its input and forget gates together: :math:`z_t` plays the forget gate and
:math:`1 - z_t` the input gate, so writing new content and erasing old content are one decision.
It has no output gate, so its whole memory is always exposed. With three blocks of weights instead
of four it has a quarter fewer weights; with the extra bias :math:`b_{hn}`, a layer of 5 units on 3
inputs has 140 parameters against the LSTM's 180 (22% fewer). In the comparisons of :footcite:t:`chung2014empirical` and
:footcite:t:`jozefowicz2015empirical` neither cell dominates, the LSTM with forget bias 1 being
slightly ahead on language modelling.

**Where the reset gate acts.** Cho et al. apply the reset before the matrix product,
:math:`(r_t \odot h_{t-1}) W_{hn}`. cuDNN, PyTorch and Flax apply it after, as in the equation
above, which lets the three recurrent products be done as one ``(H, 3H)`` product per step and
needs the extra bias :math:`b_{hn}` inside the gate. The two variants are different functions but
perform alike; this recipe follows the second so that it can be checked against
``flax.linen.GRUCell``. Mapping the layouts: the column blocks of ``W_x`` and ``b_x`` are Flax's
``ir``, ``iz``, ``in`` kernels and biases, those of ``W_h`` its ``hr``, ``hz``, ``hn`` kernels, and
``b_hn`` the bias of ``hn``.

*Numerical traps.* :math:`h_t` stays in :math:`(-1, 1)` when :math:`h_0` does, since it is a
convex combination of values in that interval; there is no unbounded state as in the LSTM.
``init`` takes positive integer sizes; ``cell`` and ``apply`` check that inputs and states are
floating-point arrays of the sizes the parameters were made for, and that the parameters have the
shapes ``init`` gives them.

Inductive bias
--------------

The same as the LSTM's: one rule at every step, left to right, and a memory that persists
unchanged unless a gate decides otherwise. Tying writing to forgetting assumes that new
information should displace old information in the same units, which suits most sequence tasks
and costs a little capacity on tasks that need to accumulate (counting, for which the LSTM's
unbounded cell is a better fit).

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.recurrent.gru import init, cell, apply
>>> k_p, k_x = jax.random.split(jax.random.key(0))
>>> params = init(k_p, 3, 5)
>>> sum(p.size for p in params.values())  # (3 + 5 + 1) * 15 + 5, against the LSTM's (3 + 5 + 1) * 20
140
>>> xs = jax.random.normal(k_x, (7, 3))
>>> hs = apply(params, xs)
>>> hs.shape, bool(jnp.all(jnp.abs(hs) < 1))
((7, 5), True)
>>> bool(jnp.allclose(cell(params, jnp.zeros(5), xs[0]), hs[0]))
True
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"cell": (), "apply": ()}


def init(key, D, H, *, dtype=jnp.float32):
    """Parameters of a GRU layer with ``D`` inputs and ``H`` units, gates ordered r, z, n.

    ``W_x`` is LeCun-normal, ``W_h`` Gaussian with variance ``1/H``, biases zero.
    """
    D, H = _checks.size(D, "D"), _checks.size(H, "H")
    return _init(key, D, H, jnp.dtype(dtype))


# The public functions check their input, then run compiled cores like this one: the page's calls,
# the tests' and the jit check's reuse one program per shape instead of dispatching op by op (and
# instead of compiling apply's lax.scan again at every call).
@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _init(key, D, H, dtype):
    k_x, k_h = jax.random.split(key)
    return {
        "W_x": jax.random.normal(k_x, (D, 3 * H), dtype) / jnp.sqrt(D).astype(dtype),
        "W_h": jax.random.normal(k_h, (H, 3 * H), dtype) / jnp.sqrt(H).astype(dtype),
        "b_x": jnp.zeros((3 * H,), dtype),
        "b_hn": jnp.zeros((H,), dtype),
    }


def _sizes(params):
    """``(D, H)`` of a layer, after checking that ``params`` has the shapes ``init`` gives it."""
    W_x = _checks.float_array(params["W_x"], "params['W_x']", ndim=2, what=" (D, 3H)")
    D, H = W_x.shape[0], W_x.shape[1] // 3
    for name, shape in (("W_x", (D, 3 * H)), ("W_h", (H, 3 * H)), ("b_x", (3 * H,)), ("b_hn", (H,))):
        where = f"params['{name}']"
        _checks.same_shape(_checks.float_array(params[name], where), where, shape, expected_from="init(key, D, H)")
    return D, H


def cell(params, h, x):
    """One step: the new hidden state (H,) from the previous one ``h`` (H,) and the input ``x`` (D,)."""
    D, H = _sizes(params)
    x, h = _checks.float_array(x, "x"), _checks.float_array(h, "h")
    if x.shape != (D,):
        raise ValueError(f"x must have shape (D,) = ({D},), got shape {x.shape}")
    if h.shape != (H,):
        raise ValueError(f"h must have shape (H,) = ({H},), got shape {h.shape}")
    return _cell(params, h, x)


def _step(params, h, x):
    xr, xz, xn = jnp.split(x @ params["W_x"] + params["b_x"], 3)
    hr, hz, hn = jnp.split(h @ params["W_h"], 3)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * (hn + params["b_hn"]))
    return (1 - z) * n + z * h


_cell = jax.jit(_step)


def apply(params, xs, h0=None):
    """The hidden states (T, H) of the layer over ``xs`` (T, D), from ``h0`` (H,) or zeros."""
    D, H = _sizes(params)
    xs = _checks.float_array(xs, "xs")
    if xs.ndim != 2 or xs.shape[1] != D:
        raise ValueError(f"xs must have shape (T, D) with D = {D}, got shape {xs.shape}")
    if h0 is not None:
        h0 = _checks.float_array(h0, "h")
        if h0.shape != (H,):
            raise ValueError(f"h must have shape (H,) = ({H},), got shape {h0.shape}")
    return _apply(params, xs, h0)


@jax.jit
def _apply(params, xs, h0):
    if h0 is None:
        h0 = jnp.zeros(params["b_hn"].shape, xs.dtype)

    def step(h, x):
        h = _step(params, h, x)
        return h, h

    _, hs = jax.lax.scan(step, h0, xs)  # (T, H)
    return hs
