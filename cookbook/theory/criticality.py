r"""Criticality and the edge of chaos
=================================

Through a deep network the size of a signal and its sensitivity to the input are multiplied by a
factor at every layer; critical initialisation sets the weights' and biases' variances so that both
factors are one, and it is what to reach for before training a deep network from scratch.

Equation
--------

.. math::

   \begin{aligned}
   z^{(l+1)} &= b^{(l+1)} + \sigma\big(z^{(l)}\big) W^{(l+1)}, \qquad
   b_i \sim \mathcal{N}(0, C_b), \quad W_{ji} \sim \mathcal{N}(0, C_W / n), \\
   K^{(l+1)} &= C_b + C_W \big\langle \sigma(z)^2 \big\rangle_{K^{(l)}}, \qquad
   \big\langle g(z) \big\rangle_K = \mathbb{E}_{z \sim \mathcal{N}(0, K)}\, g(z), \\
   \chi_\parallel(K) &= \frac{C_W}{2K^2} \big\langle \sigma(z)^2 \big(z^2 - K\big) \big\rangle_K, \qquad
   \chi_\perp(K) = C_W \big\langle \sigma'(z)^2 \big\rangle_K, \\
   \text{critical:}\quad & \chi_\parallel(K^\star) = \chi_\perp(K^\star) = 1 \text{ at a fixed point }
   K^\star: \quad (C_b, C_W) = (0, 2) \text{ for ReLU}, \ (0, 1) \text{ for } \tanh
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`z^{(l)}`, :math:`l`
     - preactivations of layer :math:`l`; the layer
     - ``z``
     - ``(n,)``
   * - :math:`\sigma`, :math:`\sigma'`
     - activation and its derivative
     - ``activation`` names it
     - elementwise
   * - :math:`W`, :math:`b`, :math:`i`, :math:`j`
     - weights and biases, drawn at initialisation, and their indices
     - ``W``, ``b``
     - ``(n, n)``, ``(n,)``
   * - :math:`C_W`, :math:`C_b`
     - variance of the weights times the fan-in, and of the biases
     - ``C_W``, ``C_b``
     - scalars
   * - :math:`n`
     - width of each hidden layer
     - ``width``
     - scalar
   * - :math:`K^{(l)}`, :math:`K`
     - the variance of a preactivation over random networks
     - ``K``
     - any
   * - :math:`g`
     - any function averaged over :math:`z \sim \mathcal{N}(0, K)`
     - ``g``
     - elementwise
   * - :math:`\chi_\parallel`
     - parallel susceptibility: how a change of :math:`K` grows per layer
     - ``chi_parallel``
     - as ``K``
   * - :math:`\chi_\perp`
     - perpendicular susceptibility: how a small change of the input, at fixed size, grows per layer
     - ``chi_perp``
     - as ``K``
   * - :math:`K^\star`
     - a fixed point of the recursion, :math:`K^{(l+1)} = K^{(l)}`
     - in words
     - scalar

Explanation
-----------

With the weights' variance scaled by the fan-in, a preactivation of a wide network is Gaussian
(:doc:`nngp`) and its variance :math:`K^{(l)}` obeys the one-dimensional recursion of the second
line (``kernel_map``). Two numbers tell how perturbations travel through it. The parallel
susceptibility :math:`\chi_\parallel = dK^{(l+1)}/dK^{(l)}` multiplies, at every layer, a deviation
of the signal's size from the fixed point :math:`K^\star`; the perpendicular susceptibility
:math:`\chi_\perp` multiplies the squared size of a small change of the input that keeps its size.
A factor above one compounds to
an explosion over :math:`L` layers, one below to a decay: only where both are one does information
about the input and the gradient survive a deep network, at a rate set by a power of the depth
rather than an exponential. :footcite:t:`poole2016exponential` and :footcite:t:`schoenholz2017deep`
called the boundary between the ordered phase (:math:`\chi_\perp < 1`, all inputs look alike) and
the chaotic phase (:math:`\chi_\perp > 1`, nearby inputs are torn apart) the *edge of chaos*;
:footcite:t:`roberts2022principles` (chapter 5), whose notation this page follows, derive the
critical initialisations (``critical_initialization``).

For the ReLU :math:`\langle\sigma^2\rangle_K = K/2` and :math:`\langle\sigma'^2\rangle = 1/2`, so
:math:`\chi_\parallel = \chi_\perp = C_W/2` for every :math:`K` when :math:`C_b = 0`:
:math:`C_W = 2` is He's initialisation :footcite:p:`he2015delving`, and any :math:`K` is a fixed point.
For :math:`\tanh` the fixed point with :math:`C_b = 0` is :math:`K^\star = 0`, where both
susceptibilities equal :math:`C_W`, so :math:`C_W = 1`; the signal then still fades, but only as
:math:`K^{(l)} \approx 1/(2l)`, a power law.

.. admonition:: Intuition

   A rumour passed along a line of people: if each repeats it a little louder it ends as a shout, a
   little softer and it dies out, and either way the content is lost. Only a line of faithful
   repeaters carries the message to the end, and even then the small errors of each add up slowly,
   with the length of the line, instead of multiplying.

The code measures it: ``signal_propagation`` draws one network of width :math:`n` and pushes an
input and a small perpendicular change of it through :math:`L` layers by forward-mode
differentiation, returning per layer the mean squared preactivation (the measured :math:`K`) and
the mean squared change (whose ratio from layer to layer is the measured :math:`\chi_\perp`). The
tests compare their means over sampled networks with the recursions, within a few standard errors.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.theory.criticality import kernel_map, signal_propagation, susceptibilities

   x, dx = jnp.ones(8), jnp.concatenate([jnp.ones(4), -jnp.ones(4)])
   keys = jax.random.split(jax.random.key(0), 200)
   fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
   for ax, activation, values in ((axes[0], "relu", (1.7, 2.0, 2.3)), (axes[1], "tanh", (0.6, 1.0, 1.6))):
       for k, C_W in enumerate(values):
           run = jax.vmap(lambda key: signal_propagation(key, x, dx, activation, depth=12, width=64,
                                                         C_b=0.0, C_W=C_W))
           G = run(keys)[1].mean(0)
           K, g, predicted = C_W * 1.0, C_W * 1.0, []
           for l in range(12):
               predicted.append(g)
               g, K = g * susceptibilities(K, activation, C_W=C_W)[1], kernel_map(K, activation, C_b=0.0, C_W=C_W)
           ax.semilogy(range(1, 13), predicted, f"C{k}-", label=f"C_W = {C_W}")
           ax.semilogy(range(1, 13), G, f"C{k}o", ms=3)
       ax.set(title=f"{activation}: size of a small change of the input", xlabel="layer")
       ax.legend(fontsize=8)
   fig.tight_layout()

The figure draws the squared size of a small change of the input through 12 layers of width 64
(dots, the mean of 200 networks) over the product of the predicted :math:`\chi_\perp` (lines). For
the ReLU it grows or shrinks exponentially except at :math:`C_W = 2`. For :math:`\tanh` it dies
exponentially in the ordered phase (:math:`C_W = 0.6`), fades as a power law at :math:`C_W = 1`, and in
the chaotic phase (:math:`C_W = 1.6`) grows again once the signal has settled at its fixed point,
where :math:`\chi_\perp > 1`.

Inductive bias
--------------

Criticality is not a property of the data but a precondition for learning it with depth: off
criticality a deep network at initialisation either maps all inputs to nearly the same output
(ordered) or to unrelated ones (chaotic), and its gradients vanish or explode, so the depth it can be
trained at is limited to a few multiples of :math:`1/|\log\chi|` layers
:footcite:p:`schoenholz2017deep`. At criticality the remaining corrections grow with depth over width,
:math:`L/n`, the subject of finite-width theory.

Example
-------

>>> from cookbook.theory.criticality import critical_initialization, susceptibilities, kernel_map
>>> critical_initialization("relu"), critical_initialization("tanh")
((0.0, 2.0), (0.0, 1.0))
>>> [round(float(chi), 4) for chi in susceptibilities(0.7, "relu", C_W=2.0)]
[1.0, 1.0]
>>> [round(float(chi), 3) for chi in susceptibilities(1e-3, "tanh", C_W=1.0)]
[0.996, 0.998]
>>> round(float(kernel_map(0.5, "tanh", C_b=0.0, C_W=1.0)), 4)  # the signal fades slowly at C_W = 1
0.2737

One network, 16 layers of width 32, at ReLU's critical point: the size of the signal stays put.

>>> import jax, jax.numpy as jnp
>>> from cookbook.theory.criticality import signal_propagation
>>> x, dx = jnp.ones(4), jnp.array([1.0, -1.0, 1.0, -1.0])
>>> K, G = signal_propagation(jax.random.key(0), x, dx, "relu", depth=16, width=32, C_b=0.0, C_W=2.0)
>>> K.shape, G.shape
((16,), (16,))

Implementation notes
--------------------

The Gaussian averages :math:`\langle\cdot\rangle_K` are the trapezoid rule on 4800 points of
:math:`z/\sqrt{K} \in [-12, 12]`, which converges exponentially fast for smooth integrands; the tests
find them within :math:`10^{-5}` (relative) of adaptive quadrature for :math:`\tanh` up to
:math:`K = 30`, and exact for the ReLU up to float32 rounding: the grid is symmetric about the kink
and misses it, so the step's average is exactly half the total weight. Gauss–Hermite quadrature, the usual choice, needs hundreds of nodes for
:math:`\tanh` at large :math:`K`. The
susceptibility :math:`\chi_\parallel` uses the integration-by-parts form of
:math:`\frac{d}{dK}\langle\sigma^2\rangle_K`, which needs no derivative of :math:`\sigma`.
``susceptibilities`` needs :math:`K > 0`; as :math:`K \to 0` it tends to :math:`C_W\,\sigma'(0)^2` for
smooth activations. ``critical_initialization`` knows the two activations of this page; other
activations have their own critical points (the swish and GELU have nonzero :math:`K^\star`, see
:footcite:t:`roberts2022principles`, section 5.3).
"""

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"kernel_map": ("activation",), "susceptibilities": ("activation",),
       "signal_propagation": ("activation", "depth", "width")}

_ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh}
_CRITICAL = {"relu": (0.0, 2.0), "tanh": (0.0, 1.0)}


def _check_activation(activation):
    if not isinstance(activation, str) or activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    return _ACTIVATIONS[activation]


def critical_initialization(activation):
    """``(C_b, C_W)``, the critical variances of the biases and of the weights (times the fan-in)."""
    _check_activation(activation)
    return _CRITICAL[activation]


def _variance(K, name):
    if isinstance(K, numbers.Real) and not isinstance(K, bool):
        K = jnp.asarray(float(K), jnp.float32)
    K = _checks.float_array(K, name)
    if _checks.is_concrete(K) and (np.asarray(K) < 0).any():
        raise ValueError(f"{name} is a variance and must be non-negative, got a negative value")
    return K


def _average(g, K):
    """<g(z)> over z ~ N(0, K), elementwise in K: the trapezoid rule in z / sqrt(K) on [-12, 12], on
    an even number of points, symmetric about 0 and missing it (the ReLU's kink)."""
    eps = np.linspace(-12.0, 12.0, 4800)
    weights = np.exp(-eps**2 / 2) / np.sqrt(2 * np.pi) * (eps[1] - eps[0])  # the ends weigh ~1e-32
    lead = (1,) * K.ndim
    z = jnp.sqrt(K)[..., None] * jnp.asarray(eps, K.dtype).reshape(lead + (-1,))  # (..., 4800)
    return jnp.sum(jnp.asarray(weights, K.dtype).reshape(lead + (-1,)) * g(z), axis=-1)


def kernel_map(K, activation, *, C_b, C_W):
    """K^(l+1) = C_b + C_W <sigma(z)^2>_K, elementwise in ``K``."""
    sigma = _check_activation(activation)
    K = _variance(K, "K")
    C_b = _checks.positive(C_b, "C_b", allow_zero=True)
    C_W = _checks.positive(C_W, "C_W")
    return _kernel_map(K, activation, C_W, C_b)


# The cores take the keyword arguments C_W, C_b in the order in which jax.jit flattens them (sorted by
# name), so that the function traced under jax.jit is one call of its core on its own inputs and the
# jit check does not compile it again.
@functools.partial(jax.jit, static_argnums=1)  # compiled once per activation and shape, also eagerly
def _kernel_map(K, activation, C_W, C_b):
    sigma = _ACTIVATIONS[activation]
    return C_b + C_W * _average(lambda z: sigma(z) ** 2, K)


def susceptibilities(K, activation, *, C_W):
    """``(chi_parallel, chi_perp)`` at the variance ``K`` (> 0), elementwise."""
    _check_activation(activation)
    K = _variance(K, "K")
    C_W = _checks.positive(C_W, "C_W")
    return _susceptibilities(K, activation, C_W)


@functools.partial(jax.jit, static_argnums=1)
def _susceptibilities(K, activation, C_W):
    sigma = _ACTIVATIONS[activation]
    Kb = K[..., None]
    chi_parallel = C_W / (2 * K**2) * _average(lambda z: sigma(z) ** 2 * (z**2 - Kb), K)
    slope = jax.vmap(jax.grad(sigma))  # sigma'(z) for a vector of z
    chi_perp = C_W * _average(lambda z: slope(z.reshape(-1)).reshape(z.shape) ** 2, K)
    return chi_parallel, chi_perp


def signal_propagation(key, x, dx, activation, *, depth, width, C_b, C_W):
    """One network drawn at random: per layer, the mean squared preactivation (depth,) and the mean
    squared change of the preactivations (depth,) caused by the input change ``dx`` (to first order).
    """
    sigma = _check_activation(activation)
    x = _checks.float_array(x, "x", ndim=1, what=" (D,)")
    dx = _checks.float_array(dx, "dx", ndim=1, what=" (D,)")
    _checks.same_shape(dx, "dx", x.shape, expected_from="the shape of x")
    depth, width = _checks.size(depth, "depth"), _checks.size(width, "width")
    C_b = _checks.positive(C_b, "C_b", allow_zero=True)
    C_W = _checks.positive(C_W, "C_W")
    return _propagate(key, x, dx, activation, depth, width, C_W, C_b)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _propagate(key, x, dx, activation, depth, width, C_W, C_b):
    sigma = _ACTIVATIONS[activation]
    D = x.shape[0]
    first = (D + 1) * width
    eps = jax.random.normal(key, (first + (depth - 1) * (width + 1) * width,), x.dtype)  # every weight, one draw
    W1 = eps[: first - width].reshape(D, width) * jnp.sqrt(C_W / D)
    z = eps[first - width : first] * jnp.sqrt(C_b) + x @ W1  # (n,)
    dz = dx @ W1  # a change of the input moves z by dx W

    def layer(carry, eps):
        z, dz = carry
        W, b = eps[:-1] * jnp.sqrt(C_W / width), eps[-1] * jnp.sqrt(C_b)
        h, dh = jax.jvp(sigma, (z,), (dz,))  # dh = sigma'(z) dz
        z, dz = b + h @ W, dh @ W
        return (z, dz), (jnp.mean(z**2), jnp.mean(dz**2))

    rest = eps[first:].reshape(depth - 1, width + 1, width)
    _, (K, G) = jax.lax.scan(layer, (z, dz), rest)
    return jnp.concatenate([jnp.mean(z**2)[None], K]), jnp.concatenate([jnp.mean(dz**2)[None], G])
