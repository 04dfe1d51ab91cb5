r"""Recurrent neural network
========================

The Elman network reads a sequence one step at a time and keeps a hidden state that summarises
everything seen so far: the simplest model for sequences of any length, and the one whose failure
to learn long-range dependencies motivates the gated cells of the next recipes.

Equation
--------

.. math::

   h_t = \tanh\left(x_t W_x + h_{t-1} W_h + b\right), \qquad t = 1, \dots, T

   \frac{\partial h_T}{\partial h_t} = \prod_{k=t+1}^{T} \operatorname{diag}\left(1 - h_k^{2}\right)
   W_h^\top, \qquad
   \left\lVert \frac{\partial h_T}{\partial h_t} \right\rVert \le \lVert W_h \rVert^{T-t}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_t`
     - input at time step :math:`t`
     - ``x``, a row of ``xs``
     - ``(D,)``
   * - :math:`h_t`, :math:`h_0`
     - hidden state after step :math:`t`; the initial state (zeros unless given)
     - ``h``, a row of ``hs``; ``h0``
     - ``(H,)``
   * - :math:`W_x`
     - input-to-hidden weights
     - ``params["W_x"]``
     - ``(D, H)``
   * - :math:`W_h`
     - hidden-to-hidden (recurrent) weights, shared by every step
     - ``params["W_h"]``
     - ``(H, H)``
   * - :math:`b`
     - bias
     - ``params["b"]``
     - ``(H,)``
   * - :math:`T`, :math:`t`, :math:`k`
     - sequence length; time indices
     - ``T = xs.shape[0]``
     - scalar

Explanation
-----------

:footcite:t:`elman1990finding` gave a feed-forward layer a memory: at each step the layer sees the
new input *and* its own output from the step before, through the recurrent weights :math:`W_h`. The
same weights are used at every step, so one small set of parameters handles sequences of any
length, and the state :math:`h_t` is a learned, fixed-size summary of the prefix
:math:`x_1, \dots, x_t`. ``cell`` is one step; ``apply`` runs it along the sequence with
:func:`jax.lax.scan`, which compiles the step once and loops inside XLA (a Python ``for`` would be
unrolled into :math:`T` copies of the step under :func:`jax.jit`).

**Backpropagation through time.** Unrolled over :math:`T` steps, the network is a :math:`T`-layer
feed-forward network whose layers share weights; its gradient is ordinary backpropagation through
that unrolled graph :footcite:`werbos1990backpropagation`. :func:`jax.grad` of a function that
calls ``apply`` does exactly this: the backward pass of ``scan`` is a scan running backwards in
time. Its memory grows with :math:`T`, since every :math:`h_t` is kept for the backward pass
(:doc:`truncated_bptt` bounds it).

**Vanishing and exploding gradients.** How much the last state depends on an early one is the
product of one Jacobian per step, the second equation. Each factor has norm at most
:math:`\lVert W_h \rVert` because :math:`\tanh' \le 1`, so when the recurrent weights are small the
product shrinks geometrically with the distance :math:`T - t`: the error signal from a late target
never reaches the early input that caused it, and the network cannot learn the dependency
:footcite:`bengio1994learning`. When the weights are large the product can instead grow
geometrically, and a single step of gradient descent throws the weights far away; large
weights are necessary for this but not sufficient, since a saturated :math:`\tanh` has a
vanishing derivative :footcite:`pascanu2013difficulty`. The figure measures the norm of
:math:`\partial h_T / \partial x_t` (``input_gradient_norms``) for Gaussian recurrent weights of
variance :math:`\text{scale}^2 / H`, whose eigenvalues fill a disc of radius about the scale: at
scale 0.5 the gradient falls by a factor of about two per step, at scale 1 it stays of the same order,
and at scale 2 it grows by orders of magnitude with the distance (more slowly than :math:`2^{T-t}`,
because saturated units pass no gradient). Gradient clipping tames the explosion; the vanishing is what the gated cells of
:doc:`lstm` and :doc:`gru` were designed to fix.

.. plot::

   import jax
   from cookbook.recurrent.rnn import init, input_gradient_norms
   k_p, k_x = jax.random.split(jax.random.key(0))
   T = 40
   xs = 0.1 * jax.random.normal(k_x, (T, 4))
   for scale in (0.5, 1.0, 2.0):
       params = init(k_p, 4, 32, scale=scale)
       norms = input_gradient_norms(params, xs)
       plt.semilogy(T - 1 - np.arange(T), norms, label=f"scale {scale}")
   plt.xlabel("distance $T - t$ from the last step")
   plt.ylabel(r"$\|\partial h_T / \partial x_t\|$")
   plt.legend()

.. admonition:: Intuition

   Think of reading a novel while keeping a one-page summary that you rewrite after every
   sentence, always with the same rules. The page never grows, so the summary works for a book of
   any length; but each rewrite blurs what was already there, and a detail from chapter one has
   been rewritten hundreds of times by the last chapter. Elman's *context units* are that page: a
   copy of the hidden layer's last state, read again with the next input, so that time shows in
   how the network processes each input rather than as one more axis of the input.

*Numerical traps.* The initial state must have the dtype of the inputs (``scan`` refuses a carry
whose dtype changes between steps); ``apply`` builds it from ``xs.dtype``. A recurrent weight scale
near 1 keeps the product of Jacobians closest to norm-preserving at the start of training; a scaled
random orthogonal matrix does this exactly and is a common alternative to the Gaussian used here.
``init`` takes positive integer sizes; ``cell`` and ``apply`` check that inputs and states are
floating-point arrays of the sizes the parameters were made for, and that the parameters have the
shapes ``init`` gives them.

Inductive bias
--------------

The same function is applied at every time step, so the model assumes the rule that updates the
summary does not depend on the absolute position in the sequence (stationarity), and that the past
matters only through a fixed-size vector. Processing is strictly left to right, so :math:`h_t` knows
nothing about later inputs (see :doc:`bidirectional`). In practice the usable memory is a few tens
of steps, because of the vanishing gradient above.

Example
-------

Run a layer over a sequence of 7 steps of 3 features with 5 hidden units, and see the gradient
with respect to the first input shrink for small recurrent weights:

>>> import jax, jax.numpy as jnp
>>> from cookbook.recurrent.rnn import init, cell, apply, input_gradient_norms
>>> k_p, k_x = jax.random.split(jax.random.key(0))
>>> params = init(k_p, 3, 5)
>>> xs = jax.random.normal(k_x, (7, 3))
>>> hs = apply(params, xs)
>>> hs.shape
(7, 5)
>>> bool(jnp.allclose(hs[0], cell(params, jnp.zeros(5), xs[0])))
True
>>> norms = input_gradient_norms(init(k_p, 3, 5, scale=0.3), xs)
>>> norms.shape, bool(norms[0] < 1e-2 * norms[-1])
((7,), True)
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"cell": (), "apply": (), "input_gradient_norms": ()}


def init(key, D, H, *, scale=1.0, dtype=jnp.float32):
    """Parameters of an Elman layer with ``D`` inputs and ``H`` hidden units.

    ``W_x`` is LeCun-normal (variance ``1/D``); ``W_h`` is Gaussian with variance ``scale**2 / H``,
    so its spectral radius is about ``scale``; ``b`` is zero.
    """
    D, H = _checks.size(D, "D"), _checks.size(H, "H")
    return _init(key, D, H, scale, jnp.dtype(dtype))


# The public functions check their input, then run compiled cores like this one: the page's calls,
# the tests' and the jit check's reuse one program per shape instead of dispatching op by op.
@functools.partial(jax.jit, static_argnums=(1, 2, 4))
def _init(key, D, H, scale, dtype):
    k_x, k_h = jax.random.split(key)
    return {
        "W_x": jax.random.normal(k_x, (D, H), dtype) / jnp.sqrt(D).astype(dtype),
        "W_h": scale * jax.random.normal(k_h, (H, H), dtype) / jnp.sqrt(H).astype(dtype),
        "b": jnp.zeros((H,), dtype),
    }


def _sizes(params):
    """``(D, H)`` of a layer, after checking that ``params`` has the shapes ``init`` gives it."""
    D, H = _checks.float_array(params["W_x"], "params['W_x']", ndim=2, what=" (D, H)").shape
    for name, shape in (("W_h", (H, H)), ("b", (H,))):
        where = f"params['{name}']"
        _checks.same_shape(_checks.float_array(params[name], where), where, shape, expected_from="init(key, D, H)")
    return D, H


def cell(params, h, x):
    """One step: the new hidden state (H,) from the previous one ``h`` (H,) and the input ``x`` (D,)."""
    D, H = _sizes(params)
    x = _checks.float_array(x, "x")
    if x.shape != (D,):
        raise ValueError(f"x must have shape (D,) = ({D},), got shape {x.shape}")
    return _cell(params, _check_state(h, H), x)


def _check_state(h, H):
    h = _checks.float_array(h, "h")
    if h.shape != (H,):
        raise ValueError(f"h must have shape (H,) = ({H},), got shape {h.shape}")
    return h


def _step(params, h, x):
    return jnp.tanh(x @ params["W_x"] + h @ params["W_h"] + params["b"])


_cell = jax.jit(_step)


def apply(params, xs, h0=None):
    """The hidden states (T, H) of the layer run over the sequence ``xs`` (T, D) from ``h0`` (H,)."""
    return _apply(params, *_check_sequence(params, xs, h0))


def _check_sequence(params, xs, h0):
    D, H = _sizes(params)
    xs = _checks.float_array(xs, "xs")
    if xs.ndim != 2 or xs.shape[1] != D:
        raise ValueError(f"xs must have shape (T, D) with D = {D}, got shape {xs.shape}")
    return xs, None if h0 is None else _check_state(h0, H)


def _run(params, xs, h0):
    if h0 is None:
        h0 = jnp.zeros(params["b"].shape, xs.dtype)

    def step(h, x):
        h = _step(params, h, x)
        return h, h

    _, hs = jax.lax.scan(step, h0, xs)  # (T, H)
    return hs


_apply = jax.jit(_run)


def input_gradient_norms(params, xs, h0=None):
    """The Frobenius norm of the Jacobian of the last state with respect to each input, shape (T,).

    Entry ``t`` is ``||d h_T / d x_t||``: how strongly the last output can still feel the input that
    came ``T - 1 - t`` steps before it.
    """
    return _norms(params, *_check_sequence(params, xs, h0))


@jax.jit
def _norms(params, xs, h0):
    jac = jax.jacrev(lambda xs: _run(params, xs, h0)[-1])(xs)  # (H, T, D)
    return jnp.sqrt(jnp.sum(jac**2, axis=(0, 2)))
