r"""Truncated backpropagation through time
======================================

Train a recurrent network on a sequence too long to backpropagate through in one piece by cutting
it into windows: the state flows forward across windows unchanged, the gradient is stopped at
each window's start, and the parameters are updated after every window. The way language models
and other recurrent networks are trained on long streams.

Equation
--------

.. math::

   \tilde{h}_{k} = \operatorname{stopgrad}\left(h_{(k-1)\tau}\right), \qquad
   h_t = \operatorname{cell}_\theta\left(h_{t-1}, x_t\right), \quad
   t = (k-1)\tau + 1, \dots, k\tau, \ \text{starting from } \tilde{h}_{k}

.. math::

   \mathcal{L}_k = \frac{1}{\tau} \sum_{t=(k-1)\tau+1}^{k\tau} \left(\hat{y}_t - y_t\right)^2, \quad
   \hat{y}_t = h_t w + c, \qquad
   \theta \leftarrow \theta - \eta \nabla_\theta \mathcal{L}_k, \qquad
   \frac{\partial \mathcal{L}_k}{\partial x_s} = 0 \ \text{for } s \le (k-1)\tau

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_t`, :math:`x_s`
     - input at step :math:`t` (or :math:`s`)
     - a row of ``xs``
     - ``(D,)``
   * - :math:`y_t`, :math:`\hat{y}_t`
     - target and prediction at step :math:`t`
     - entry :math:`t` of ``ys`` and of ``predict(params, xs)``
     - ``()``
   * - :math:`h_t`
     - hidden state of the Elman cell of :doc:`rnn`
     - a row of ``hs``
     - ``(H,)``
   * - :math:`\tilde{h}_{k}`
     - state entering window :math:`k`: the value of :math:`h_{(k-1)\tau}`, with no gradient
     - ``h`` carried by the scan over windows
     - ``(H,)``
   * - :math:`w`, :math:`c`
     - readout weights and bias
     - ``params["w"]``, ``params["c"]``
     - ``(H,)``, ``()``
   * - :math:`\theta`
     - all parameters: the cell's and the readout's
     - ``params``
     - pytree
   * - :math:`\tau`
     - window (truncation) length
     - ``window``
     - scalar
   * - :math:`k`
     - window index, from 1 to :math:`T / \tau`
     - scan step of ``train``
     - scalar
   * - :math:`\mathcal{L}_k`
     - mean squared error over window :math:`k`
     - ``window_loss``
     - ``()``
   * - :math:`\eta`
     - learning rate
     - ``learning_rate``
     - scalar
   * - :math:`t`, :math:`s`
     - time steps
     - row indices of ``xs``
     - scalar

Explanation
-----------

Full backpropagation through time (:doc:`rnn`) keeps every state of the sequence for the backward
pass and makes one update per sequence: on a stream of a million characters that is a million
states in memory and one update. *Truncated* BPTT :footcite:`williams1990efficient` cuts the stream
into windows of :math:`\tau` steps. Each window starts from the state the previous window ended
in, so the forward computation is exactly the full unrolled one, but the gradient is stopped there
(:func:`jax.lax.stop_gradient`), so the backward pass only runs :math:`\tau` steps back, memory is
:math:`O(\tau)`, and the parameters can be updated after every window. The price is stated by the
last equation: the loss of a window has no gradient with respect to anything before the window, so
the network is never *taught* to store information for longer than :math:`\tau` steps; it can
still use such information if it happens to keep it. The carried state was computed with the
parameters of one update before, which is harmless as long as each update is small.

``forward_windows`` computes the states window by window and is the place to see both facts: its
output equals the full ``rnn.apply`` (the test asserts equality to float precision) and the gradient
of its last window with respect to earlier inputs is exactly zero (not small: zero).
``train`` scans over the windows, taking one step of gradient descent on each and handing the
window's last state, not recomputed, to the next window, as a streaming training loop does.

.. admonition:: Intuition

   Reading a long novel, you revise your understanding at the end of each chapter by re-thinking
   only that chapter; what you remember of the earlier ones carries on as it is, unrevised. You
   still use that memory, but you never go back to ask which earlier page should have been read
   differently, so a clue planted three chapters ago is learned only if you happen to keep it.

*Numerical traps.* The windows must tile the sequence: ``T`` must be a multiple of ``window``
(``train`` raises otherwise; drop or pad the tail). Truncation bounds the length of the product of
Jacobians, which also bounds gradient explosion, one reason truncation is used even when memory is
not short. Sizes and the window are positive integers, the arrays floating-point and shaped as the
parameters expect; each function raises a ``ValueError`` or ``TypeError`` naming the argument.

Inductive bias
--------------

Truncation adds an assumption to the model's own: that the dependencies worth learning by gradient
are shorter than :math:`\tau` steps. Choose the window longer than the longest lag the task needs
(in the tests, a target that echoes the input 3 steps back is learned with windows of 8).

Example
-------

A 96-step sequence in windows of 8: the state matches the full unroll, the gradient does not
cross the window boundary, and training on a 3-step echo reduces the loss:

>>> import jax, numpy as np
>>> from cookbook.recurrent.truncated_bptt import (
...     init, forward_windows, window_loss, train, predict)
>>> from cookbook.recurrent import rnn
>>> k_p, k_x = jax.random.split(jax.random.key(0))
>>> params = init(k_p, 1, 16)
>>> xs = jax.random.normal(k_x, (96, 1))
>>> ys = np.roll(xs[:, 0], 3)  # y_t = x_{t-3}
>>> ys[:3] = 0.0
>>> hs = forward_windows(params, xs, window=8)
>>> bool(np.allclose(hs, rnn.apply(params["rnn"], xs), atol=1e-6))
True
>>> grads = np.asarray(jax.grad(lambda xs: forward_windows(params, xs, window=8)[-1].sum())(xs))
>>> bool(np.all(grads[:88] == 0)), bool(np.all(grads[88:] != 0))
(True, True)
>>> loss, h = window_loss(params, hs[7], xs[8:16], ys[8:16])
>>> loss.shape, h.shape
((), (16,))
>>> trained, losses = train(params, xs, ys, window=8, learning_rate=0.1)
>>> losses.shape, predict(trained, xs).shape
((12,), (96,))
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks
from cookbook.recurrent import rnn

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"predict": (), "window_loss": (), "forward_windows": ("window",), "train": ("window",)}


def init(key, D, H, *, scale=0.9):
    """An Elman layer (:doc:`rnn`) with ``D`` inputs and ``H`` units, and a scalar linear readout."""
    D, H = _checks.size(D, "D"), _checks.size(H, "H")
    # sqrt(H) comes in as an argument (correctly rounded, as jnp.sqrt): a constant divisor would be
    # turned into a multiplication by its inverse, and the readout would move in its last bit.
    return _init(key, D, H, scale, np.sqrt(np.float32(H)))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _init(key, D, H, scale, sqrt_H):
    k_rnn, k_w = jax.random.split(key)
    return {"rnn": rnn._init(k_rnn, D, H, scale, jnp.dtype(jnp.float32)),
            "w": jax.random.normal(k_w, (H,)) / sqrt_H, "c": jnp.zeros(())}


def _sizes(params):
    """``(D, H)`` of the model, after checking the cell's and the readout's parameter shapes."""
    D, H = rnn._sizes(params["rnn"])
    _checks.same_shape(_checks.float_array(params["w"], "params['w']"), "params['w']", (H,))
    _checks.same_shape(_checks.float_array(params["c"], "params['c']"), "params['c']", ())
    return D, H


def _state(h0, H, dtype):
    """The initial state: zeros, or ``h0`` checked to be a float vector of ``H`` entries."""
    if h0 is None:
        return jnp.zeros((H,), dtype)
    return _checks.same_shape(_checks.float_array(h0, "h0"), "h0", (H,), expected_from="(H,)")


def _check_state(h0, H):
    """``h0`` checked as :func:`_state` does; ``None`` stays ``None``: the compiled core makes the zeros."""
    return None if h0 is None else _state(h0, H, None)


def predict(params, xs, h0=None):
    """The predictions (T,) for the sequence ``xs`` (T, D), unrolled in full from ``h0``."""
    _, H = _sizes(params)
    xs = _checks.float_array(xs, "xs", ndim=2, what=" (T, D)")
    return _predict(params, xs, _check_state(h0, H))


# The checks run in Python; each computation below is one compiled program (called eagerly, the
# layer's scan would trace and compile again on every call, its step being a new closure). The
# public functions hand their inputs to it as they come (a missing h0 as None, the sequence before
# it is cut into windows), so that under jax.jit they trace to that very program.
@jax.jit
def _predict(params, xs, h0):
    h0 = jnp.zeros(params["w"].shape, xs.dtype) if h0 is None else h0
    return rnn.apply(params["rnn"], xs, h0) @ params["w"] + params["c"]


def window_loss(params, h0, xs, ys):
    """Mean squared error over one window from state ``h0``, and the state at the window's end."""
    _, H = _sizes(params)
    xs = _checks.float_array(xs, "xs", ndim=2, what=" (tau, D)")
    ys = _checks.same_shape(_checks.float_array(ys, "ys"), "ys", xs.shape[:1], expected_from="(tau,)")
    return _window_loss(params, _state(h0, H, xs.dtype), xs, ys)


@jax.jit
def _window_loss(params, h0, xs, ys):
    hs = rnn.apply(params["rnn"], xs, h0)  # (tau, H)
    return jnp.mean((hs @ params["w"] + params["c"] - ys) ** 2), hs[-1]


def _check_windows(xs, window):
    """``window`` checked to be a size that divides the length of ``xs``."""
    window = _checks.size(window, "window")
    T = xs.shape[0]
    if T % window:
        raise ValueError(f"the sequence length T = {T} must be a multiple of window = {window}")
    return window


def _windows(xs, window):
    return xs.reshape(xs.shape[0] // window, window, *xs.shape[1:])  # (T / tau, tau, ...)


def forward_windows(params, xs, *, window, h0=None):
    """The states (T, H), computed window by window with the gradient stopped between windows."""
    _, H = rnn._sizes(params["rnn"])
    xs = _checks.float_array(xs, "xs", ndim=2, what=" (T, D)")
    return _forward_windows(params, xs, _check_windows(xs, window), _check_state(h0, H))


@functools.partial(jax.jit, static_argnums=2)
def _forward_windows(params, xs, window, h0):
    H = params["w"].shape[0]
    h0 = jnp.zeros((H,), xs.dtype) if h0 is None else h0
    xs_windows = _windows(xs, window)

    def step(h, xs_k):
        hs = rnn.apply(params["rnn"], xs_k, jax.lax.stop_gradient(h))  # (tau, H)
        return hs[-1], hs

    _, hs = jax.lax.scan(step, h0, xs_windows)  # (T / tau, tau, H)
    return hs.reshape(-1, H)


def train(params, xs, ys, *, window, learning_rate, h0=None):
    """One pass over ``xs`` (T, D), ``ys`` (T,): a gradient step after each window of ``window`` steps.

    Returns the trained parameters and each window's loss before its update, shape (T / window,).
    """
    _, H = _sizes(params)
    xs = _checks.float_array(xs, "xs", ndim=2, what=" (T, D)")
    ys = _checks.float_array(ys, "ys")
    if ys.shape != xs.shape[:1]:
        raise ValueError(f"ys must have shape (T,) = ({xs.shape[0]},), got shape {ys.shape}")
    learning_rate = _checks.positive(learning_rate, "learning_rate")
    return _train(params, xs, ys, _check_windows(xs, window), learning_rate, _check_state(h0, H))


@functools.partial(jax.jit, static_argnums=3)
def _train(params, xs, ys, window, learning_rate, h0):
    h0 = jnp.zeros(params["w"].shape, xs.dtype) if h0 is None else h0
    xs_windows, ys_windows = _windows(xs, window), _windows(ys, window)

    def step(carry, window_data):
        params, h = carry
        xs_k, ys_k = window_data
        (loss, h), grads = jax.value_and_grad(_window_loss, has_aux=True)(
            params, jax.lax.stop_gradient(h), xs_k, ys_k)
        params = jax.tree.map(lambda p, g: p - learning_rate * g, params, grads)
        return (params, h), loss

    (params, _), losses = jax.lax.scan(step, (params, h0), (xs_windows, ys_windows))
    return params, losses
