r"""Fourier features and volume rendering
=====================================

Two ideas behind neural radiance fields: map coordinates through sinusoids of random frequencies so
that a small network can fit fine detail, and render a field of densities and colours along a ray
as a weighted sum that is differentiable in every sample.

Equation
--------

.. math::

   \gamma(x) = \big[\cos(2\pi B x),\ \sin(2\pi B x)\big]

   T_i = \exp\Big(-\sum_{j<i} \sigma_j \delta_j\Big), \qquad
   w_i = T_i \big(1 - e^{-\sigma_i \delta_i}\big), \qquad
   \hat{C} = \sum_{i=1}^{S} w_i c_i

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`
     - a coordinate (a point, a pixel position)
     - ``x``
     - ``(D,)``
   * - :math:`B`
     - random frequencies, entries drawn from :math:`\mathcal{N}(0, s^2)` for a scale :math:`s`
     - ``B``
     - ``(F, D)``
   * - :math:`s`
     - the scale of the frequencies: the finest detail the features can show
     - the standard deviation of the entries of ``B``
     - scalar
   * - :math:`\gamma`
     - Fourier features of a coordinate
     - ``fourier_features``
     - ``(2F,)``
   * - :math:`\sigma_i`, :math:`\delta_i`
     - density at sample :math:`i` of a ray; length of its interval
     - ``sigmas``, ``deltas``
     - ``(S,)``
   * - :math:`i`, :math:`j`, :math:`S`
     - indices of samples along the ray; their number
     - positions in ``sigmas``; its length
     - scalar
   * - :math:`T_i`
     - transmittance: the probability that light reaches sample :math:`i` unblocked
     - ``T``
     - ``(S,)``
   * - :math:`w_i`
     - rendering weight of sample :math:`i`
     - ``w``
     - ``(S,)``
   * - :math:`c_i`, :math:`\hat{C}`
     - colour at sample :math:`i`; rendered colour of the ray
     - ``colors``; the result of ``render``
     - ``(S, C)``; ``(C,)``

Explanation
-----------

**Fourier features.** A ReLU network fed raw coordinates learns smooth functions first and fine
detail very slowly, a spectral bias. Tancik et al. :footcite:`tancik2020fourier` show that mapping
the input through sinusoids of random frequencies :math:`B` turns the network's neural tangent
kernel into a stationary kernel whose bandwidth is set by the scale :math:`s`: too small a scale
blurs, too large a one overfits with noise between the samples. In the tests, a network with one
hidden layer fits a signal with frequencies 5 and 13, sampled at 128 points, to a root-mean-square
error below 0.05 between the samples with :math:`s = 5`; with :math:`s = 1` it stays above 0.2 (a
blur), and with :math:`s = 50` it fits the samples exactly and is off by more than 0.5 between them.

**Volume rendering.** A radiance field gives each point a density :math:`\sigma` (how much light
it stops per unit length) and a colour. Along a ray cut into intervals of lengths :math:`\delta_i`,
interval :math:`i` stops the fraction :math:`1 - e^{-\sigma_i \delta_i}` of the light that reaches
it, and :math:`T_i` is the fraction that reaches it: the product of what every earlier interval let
through. The weights :math:`w_i` are then the probability that the ray ends in interval :math:`i`,
they sum to :math:`1 - T_{S+1}` (the light that does not pass), and the colour is the weighted
sum of the samples' colours :footcite:`max1995optical,mildenhall2020nerf`. Everything is a
smooth function of the densities and colours, so a field can be trained from images alone. The
code computes :math:`1 - e^{-u}` as ``-expm1(-u)`` so that a thin interval does not round its
weight to zero, and the sums of :math:`\sigma\delta` with an exclusive cumulative sum.

.. admonition:: Intuition

   Looking into fog: each slice of air along your line of sight dims what lies behind it and adds
   a little of its own colour. A wall is a slice so dense that nothing behind it shows. Fourier
   features are the opposite trick, on the input side: describe a position by many wave patterns at
   once, and a small network can tell apart points that are close together.

Inductive bias
--------------

Fourier features assume the target varies at the scale :math:`1/s` everywhere (a stationary
kernel); a signal that is smooth in one place and sharp in another is fitted with one compromise.
Volume rendering assumes light travels in straight lines and is absorbed and emitted but never
scattered, and a radiance field assumes the scene stays still between views; in return it needs
no mesh or surface, only images from known cameras.

Example
-------

A ray through a constant fog of density 0.5 over a length of 2, in 4 samples: the weights sum to
:math:`1 - e^{-1}`, and a ray that meets a wall at its third sample takes the wall's colour:

>>> import jax, jax.numpy as jnp
>>> from cookbook.niche.nerf import apply, fourier_features, init, render, rendering_weights
>>> w = rendering_weights(jnp.full(4, 0.5), jnp.full(4, 0.5))
>>> w.round(4), round(float(w.sum()), 4), round(1 - float(jnp.exp(-1.0)), 4)
(Array([0.2212, 0.1723, 0.1342, 0.1045], dtype=float32), 0.6321, 0.6321)
>>> sigmas = jnp.array([0.0, 0.0, 1e3, 0.0])  # a wall
>>> colors = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
>>> render(sigmas, colors, jnp.full(4, 0.5))
Array([0., 0., 1.], dtype=float32)

Fourier features and a network on them:

>>> B = 10.0 * jax.random.normal(jax.random.key(0), (8, 1))
>>> fourier_features(jnp.array([0.25]), B).shape
(16,)
>>> params = init(jax.random.key(1), (16, 32, 1))
>>> apply(params, jnp.array([0.25]), B).shape
(1,)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"rendering_weights": (), "render": (), "fourier_features": (), "apply": ()}


def _non_negative(x, name):
    if _checks.is_concrete(x) and x.size and bool(np.any(np.asarray(x) < 0)):
        raise ValueError(f"{name} must be non-negative, got a minimum of {float(np.min(np.asarray(x)))}")
    return x


def _ray(sigmas, deltas):
    sigmas = _checks.float_array(sigmas, "sigmas", ndim=1, what=" (S,)")
    deltas = _checks.float_array(deltas, "deltas", ndim=1, what=" (S,)")
    _checks.same_shape(deltas, "deltas", sigmas.shape, expected_from="the shape of sigmas")
    _non_negative(sigmas, "sigmas")
    _non_negative(deltas, "deltas")
    return sigmas, deltas


def rendering_weights(sigmas, deltas):
    """``w_i = T_i (1 - exp(-sigma_i delta_i))`` with ``T_i = exp(-sum_{j<i} sigma_j delta_j)``: (S,).

    Densities and interval lengths (S,), non-negative (checked when concrete; under :func:`jax.jit`
    a negative one gives a weight below zero or above one, in plain sight).
    """
    return _rendering_weights(*_ray(sigmas, deltas))


# Each public function checks its input, then runs one compiled core (one program per shape, rather
# than one per eager operation).
@jax.jit
def _rendering_weights(sigmas, deltas):
    u = sigmas * deltas  # (S,) optical depth of each interval
    T = jnp.exp(-(jnp.cumsum(u) - u))  # exclusive sum: T_1 = 1
    w = T * -jnp.expm1(-u)
    return w


def render(sigmas, colors, deltas):
    """The colour (C,) of a ray from densities (S,), colours (S, C) and interval lengths (S,)."""
    colors = _checks.float_array(colors, "colors", ndim=2, what=" (S, C)")
    sigmas, deltas = _ray(sigmas, deltas)
    if colors.shape[0] != sigmas.shape[0]:
        raise ValueError(f"colors must have shape (S, C) with S = {sigmas.shape[0]} as sigmas, got {colors.shape}")
    return _render(sigmas, colors, deltas)


@jax.jit
def _render(sigmas, colors, deltas):
    return _rendering_weights(sigmas, deltas) @ colors  # (C,)


def _coordinate(x, B):
    x = _checks.float_array(x, "x", ndim=1, what=" (D,)")
    B = _checks.float_array(B, "B", ndim=2, what=" (F, D)")
    if B.shape[1] != x.shape[0]:
        raise ValueError(f"B must have shape (F, D) with D = {x.shape[0]} as x, got B {B.shape}")
    return x, B


def fourier_features(x, B):
    """``[cos(2 pi B x), sin(2 pi B x)]`` for a coordinate x (D,) and frequencies B (F, D): (2F,)."""
    return _fourier_features(*_coordinate(x, B))


@jax.jit
def _fourier_features(x, B):
    angle = 2 * jnp.pi * (B @ x)  # (F,)
    return jnp.concatenate([jnp.cos(angle), jnp.sin(angle)])


def init(key, sizes):
    """A ReLU network with widths ``sizes`` (2F, ..., C): He-normal weights, zero biases."""
    if not isinstance(sizes, (tuple, list)) or len(sizes) < 2:
        raise ValueError(f"sizes must be a tuple of at least two widths, got {sizes!r}")
    return _init(key, tuple(_checks.size(s, "sizes") for s in sizes))


@functools.partial(jax.jit, static_argnums=1)
def _init(key, sizes):
    params = []
    for m, n in zip(sizes[:-1], sizes[1:]):
        key, k_w = jax.random.split(key)
        params.append({"W": jax.random.normal(k_w, (m, n)) * jnp.sqrt(2.0 / m), "b": jnp.zeros(n)})
    return params


def apply(params, x, B):
    """The network on the Fourier features of one coordinate x (D,). Batch with :func:`jax.vmap`."""
    x, B = _coordinate(x, B)
    width = 2 * B.shape[0]
    if not isinstance(params, (list, tuple)) or not params:
        raise ValueError(f"params must be a non-empty list of layers, got {type(params).__name__}")
    for n, layer in enumerate(params):
        W = _checks.float_array(layer["W"], f"params[{n}]['W']", ndim=2, what=" (in, out)")
        b = _checks.float_array(layer["b"], f"params[{n}]['b']", ndim=1, what=" (out,)")
        if W.shape[0] != width:
            raise ValueError(f"params[{n}]['W'] must take {width} inputs, got shape {W.shape}")
        _checks.same_shape(b, f"params[{n}]['b']", W.shape[1:], expected_from="out of W")
        width = W.shape[1]
    return _apply(params, x, B)


@jax.jit
def _apply(params, x, B):
    h = _fourier_features(x, B)
    for n, layer in enumerate(params):
        h = h @ layer["W"] + layer["b"]
        if n < len(params) - 1:
            h = jax.nn.relu(h)
    return h
