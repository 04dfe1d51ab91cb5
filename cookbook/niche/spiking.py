r"""Spiking neural networks
=======================

Neurons that integrate their input over time and emit all-or-nothing spikes, trained by gradient
descent with a smooth surrogate for the spike's derivative: reach for them to model event-driven,
low-power (neuromorphic) computation, or to study how brains might learn.

Equation
--------

.. math::

   v_t = \beta\, v_{t-1} + x_t W - \vartheta\, s_{t-1}, \qquad
   s_t = \Theta(v_t - \vartheta)

   \frac{\partial s_t}{\partial v_t} \approx \sigma'(v_t - \vartheta)
   = \frac{1}{(1 + k\, \lvert v_t - \vartheta \rvert)^2}, \qquad
   z = W_{\text{out}}^\top \sum_{t=1}^{T} s_t

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_t`
     - input at step :math:`t` (here the same image at every step: a constant current)
     - row :math:`t` of ``inputs``
     - ``(D,)``
   * - :math:`t`, :math:`T`
     - time step; number of steps
     - ``T``
     - scalar
   * - :math:`W`
     - input weights of the spiking layer
     - ``W``, ``params["W"]``
     - ``(D, N)``
   * - :math:`v_t`
     - membrane potentials of the :math:`N` neurons
     - ``v``
     - ``(N,)``
   * - :math:`s_t`
     - spikes: 1 where a neuron fires at step :math:`t`, else 0
     - ``s``, the spikes of ``lif_layer``
     - ``(N,)``
   * - :math:`\beta`
     - leak: the fraction of the potential kept from one step to the next
     - ``beta``
     - scalar
   * - :math:`\vartheta`
     - firing threshold; a spike subtracts it from the potential (reset by subtraction)
     - ``threshold``
     - scalar
   * - :math:`\Theta`
     - the Heaviside step, :math:`\Theta(u) = 1` for :math:`u > 0`
     - ``spike``
     - elementwise
   * - :math:`\sigma'`, :math:`k`
     - the surrogate derivative (of a fast sigmoid) and its steepness
     - ``spike``'s backward pass, ``slope``
     - elementwise; scalar
   * - :math:`W_{\text{out}}`, :math:`z`
     - readout weights; class scores from the spike counts
     - ``params["W_out"]``; the result of ``apply``
     - ``(N, C)``; ``(C,)``

Explanation
-----------

A leaky integrate-and-fire neuron is the simplest model of a biological neuron: its membrane
potential leaks towards zero by the factor :math:`\beta` each step, adds the input current, and
when it crosses the threshold the neuron emits a spike and its potential drops by the threshold.
Information is carried by when and how often neurons fire; a constant current above
:math:`\vartheta (1 - \beta)` makes a neuron fire regularly, faster for a stronger current. Written
as a recurrence over time it is a recurrent network whose nonlinearity is a step function
:footcite:`neftci2019surrogate`.

That step is what makes training hard: its derivative is zero everywhere except at the threshold,
where it is infinite, so backpropagation through time receives no signal. The **surrogate gradient**
keeps the true step in the forward pass and, in the backward pass only, pretends that its
derivative is that of a smooth function: here the fast sigmoid
:math:`1 / (1 + k |u|)^2` of SuperSpike :footcite:`zenke2018superspike`, largest when the
potential is at the threshold and decaying away from it. Spike counts stay exact integers, while
gradients tell each weight which way to move the potentials that were close to firing or to
staying silent. The reset term :math:`\vartheta s_{t-1}` is treated as a constant in the backward
pass (the gradient is stopped through it), a common choice that keeps the surrogate from
propagating through the reset.

The tests feed scikit-learn's 8 × 8 digits as constant currents for 5 steps into 32 spiking
neurons and classify from their spike counts: after 100 steps of Adam on 1200 digits, at least
90 % of the other 597 are classified correctly.

.. admonition:: Intuition

   A leaky integrate-and-fire neuron is a leaky bucket under a tap: water (input) flows in, some
   leaks out, and when the level reaches a mark a cup is scooped out and counted as a spike. To
   learn, we pretend that a bucket almost at the mark "almost spilled", so that turning its tap up
   a little is credited with a spike, even though spilling is all or nothing.

Inductive bias
--------------

Spiking networks assume that information is carried by sparse binary events in time, integrated
with a decay: they suit event-based data (from neuromorphic sensors) and hardware where a spike
costs energy only when it happens. On static data such as images they must first turn intensities
into spikes over several steps, and they trail conventional networks of the same size in accuracy;
the surrogate gradient is a heuristic, not the gradient of the network that runs, so training is
less predictable.

Example
-------

One neuron with a constant input current of 0.4, leak 0.9 and threshold 1: the potential climbs,
fires at the third step, and the surrogate gradient of a spike is 1 at the threshold:

>>> import jax, jax.numpy as jnp
>>> from cookbook.niche.spiking import apply, init, lif_layer, spike
>>> spikes, v = lif_layer(jnp.ones((1, 1)), jnp.full((6, 1), 0.4), 0.9)
>>> spikes[:, 0]
Array([0., 0., 1., 0., 0., 1.], dtype=float32)
>>> v[:, 0].round(3)
Array([0.4  , 0.76 , 1.084, 0.376, 0.738, 1.064], dtype=float32)
>>> float(spike(jnp.float32(0.0), 5.0)), float(jax.grad(spike)(jnp.float32(0.0), 5.0))
(0.0, 1.0)
>>> params = init(jax.random.key(0), sizes=(64, 32, 10))
>>> apply(params, jnp.ones(64), 0.9, T=3).shape
(10,)

Implementation notes
--------------------

Here a spike at exactly the threshold does not fire (:math:`\Theta(0) = 0`). Libraries: snnTorch
and Norse (PyTorch) and Spyx (JAX) provide these neurons with several surrogates (fast sigmoid,
arctangent, triangle); Intel's Loihi and SpiNNaker run spiking networks in hardware. The readout
here counts spikes and applies a linear layer; an output layer of non-spiking leaky integrators or
a loss on the first spike's time are common alternatives.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"lif_layer": (), "apply": ("T",)}


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def spike(u, slope):
    """The Heaviside step ``u > 0`` as floats, whose derivative is replaced by the fast sigmoid's
    ``1 / (1 + slope * |u|)^2`` (the surrogate gradient)."""
    return (u > 0).astype(u.dtype)


@spike.defjvp
def _spike_jvp(slope, primals, tangents):
    (u,), (du,) = primals, tangents
    return spike(u, slope), du / (1 + slope * jnp.abs(u)) ** 2


def _lif(W, inputs, beta, threshold, slope):
    currents = inputs @ W  # (T, N)

    def step(carry, current):
        v, s = carry
        v = beta * v + current - threshold * jax.lax.stop_gradient(s)  # reset by subtraction
        s = spike(v - threshold, slope)
        return (v, s), (s, v)

    zeros = jnp.zeros(W.shape[1], currents.dtype)
    return jax.lax.scan(step, (zeros, zeros), currents)[1]


def lif_layer(W, inputs, beta, threshold=1.0, slope=5.0):
    """Spikes and membrane potentials (T, N) of N leaky integrate-and-fire neurons driven by the
    currents ``inputs @ W`` (inputs (T, D), W (D, N)), from rest; ``beta`` is the leak in [0, 1).

    A NaN in ``W`` or ``inputs`` is refused when concrete: it would compare as "no spike" and be
    counted as silence. Under :func:`jax.jit` that check cannot run, and a NaN potential never fires.
    """
    W = _checks.float_array(W, "W", ndim=2, what=" (D, N)")
    inputs = _checks.float_array(inputs, "inputs", ndim=2, what=" (T, D)")
    _checks.same_shape(inputs, "inputs", (inputs.shape[0], W.shape[0]), expected_from="D from W (D, N)")
    _check_constants(beta, threshold, slope)
    _checks.check_no_nan(W, "W")
    _checks.check_no_nan(inputs, "inputs")
    return _lif_jit(W, inputs, beta, threshold, slope)


def _check_constants(beta, threshold, slope):
    beta = _checks.positive(beta, "beta", allow_zero=True)
    if isinstance(beta, float) and beta >= 1:
        raise ValueError(f"beta must lie in [0, 1) (a leak), got {beta}")
    _checks.positive(threshold, "threshold")
    if isinstance(slope, bool) or not isinstance(slope, (int, float)) or slope <= 0:
        raise ValueError(f"slope must be a positive Python number (it is static), got {slope!r}")


_lif_jit = jax.jit(_lif, static_argnums=4)


def init(key, *, sizes):
    """``{"W": (D, N), "W_out": (N, C)}`` for ``sizes = (D, N, C)``: inputs, spiking neurons, classes."""
    if not isinstance(sizes, tuple) or len(sizes) != 3:
        raise TypeError(f"sizes must be a tuple (D, N, C), got {sizes!r}")
    D, N, C = (_checks.size(s, f"sizes[{i}]") for i, s in enumerate(sizes))
    return _init(key, D, N, C)


@partial(jax.jit, static_argnums=(1, 2, 3))
def _init(key, D, N, C):
    k_w, k_out = jax.random.split(key)
    return {"W": jax.random.normal(k_w, (D, N)) / np.sqrt(D), "W_out": jax.random.normal(k_out, (N, C)) / np.sqrt(N)}


def apply(params, x, beta, *, T, threshold=1.0, slope=5.0):
    """Class scores (C,) of one input ``x`` (D,), fed as a constant current for ``T`` steps into the
    spiking layer; the scores are a linear readout of each neuron's spike count."""
    if not isinstance(params, dict) or set(params) != {"W", "W_out"}:
        raise TypeError(f"params must be a dict with keys 'W', 'W_out' (from init), got "
                        f"{sorted(params) if isinstance(params, dict) else type(params).__name__}")
    W = _checks.float_array(params["W"], "params['W']", ndim=2, what=" (D, N)")
    W_out = _checks.float_array(params["W_out"], "params['W_out']", ndim=2, what=" (N, C)")
    _checks.same_shape(W_out, "params['W_out']", (W.shape[1], W_out.shape[1]), expected_from="N from params['W']")
    x = _checks.float_array(x, "x", ndim=1, what=" (D,)")
    _checks.same_shape(x, "x", (W.shape[0],), expected_from="D from params['W'] (D, N)")
    _checks.check_no_nan(W, "params['W']")
    _checks.check_no_nan(x, "x")
    T = _checks.size(T, "T")
    _check_constants(beta, threshold, slope)
    return _apply(params, x, beta, T, threshold, slope)


@partial(jax.jit, static_argnums=(3, 5))
def _apply(params, x, beta, T, threshold, slope):
    spikes, _ = _lif(params["W"], jnp.broadcast_to(x[None], (T, x.shape[0])), beta, threshold, slope)
    return spikes.sum(0) @ params["W_out"]  # (C,)
