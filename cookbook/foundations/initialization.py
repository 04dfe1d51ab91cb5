r"""Weight initialization
=====================

Draw a network's initial weights at the scale that keeps the signal's variance constant from layer
to layer, Glorot (Xavier) for tanh-like units and He (Kaiming) for ReLU: reach for it whenever a
network is deeper than a few layers, because at the wrong scale the signal vanishes or explodes
before training can start.

Equation
--------

A dense layer without bias, and the variance of its output when weights and inputs are independent
with mean zero:

.. math::

   z^{(l)} = h^{(l-1)} W^{(l)}, \qquad h^{(l)} = \phi\left(z^{(l)}\right), \qquad
   \operatorname{Var}\left[z^{(l)}_j\right]
   = n_{\text{in}} \operatorname{Var}[W] \; \mathbb{E}\left[\left(h^{(l-1)}_i\right)^2\right]

The two schemes choose the weight variance that keeps that product at one:

.. math::

   \text{Glorot:}\ \operatorname{Var}[W] = \frac{2}{n_{\text{in}} + n_{\text{out}}}, \qquad
   \text{He:}\ \operatorname{Var}[W] = \frac{2}{n_{\text{in}}}

and draw the weights from a uniform or a (truncated) normal distribution with that variance:

.. math::

   W_{ij} \sim \mathcal{U}(-a, a),\quad a = \sqrt{3 \operatorname{Var}[W]}
   \qquad \text{or} \qquad
   W_{ij} \sim \mathcal{N}(0, s^2) \text{ truncated to } [-2s, 2s],\quad s = \frac{\sqrt{\operatorname{Var}[W]}}{c}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`W^{(l)}`, :math:`W_{ij}`, :math:`W`
     - weight matrix of layer :math:`l`; its entry from input :math:`i` to output :math:`j`
     - the result of ``glorot_uniform`` etc.; ``W``, one matrix of ``weights``
     - ``(fan_in, fan_out)``
   * - :math:`l`
     - layer index, 1 to :math:`L`
     - the scan step in ``layer_variances``
     - scalar
   * - :math:`i`, :math:`j`
     - index of an input unit and of an output unit
     - the row and the column of ``W``
     - scalar
   * - :math:`h^{(l)}`
     - activations of layer :math:`l`; :math:`h^{(0)}` is the input
     - ``h``; ``x``
     - ``(B, H)``
   * - :math:`z^{(l)}`
     - pre-activations of layer :math:`l`
     - ``z``
     - ``(B, H)``
   * - :math:`\phi`
     - the nonlinearity (ReLU, tanh, or none)
     - ``activation``
     - element-wise
   * - :math:`n_{\text{in}}`, :math:`n_{\text{out}}`
     - fan-in and fan-out: the inputs and outputs of the layer
     - ``fan_in``, ``fan_out``
     - scalar
   * - :math:`a`
     - half-width of the uniform distribution
     - ``bound``
     - scalar
   * - :math:`s`
     - scale of the normal before truncation
     - ``std / TRUNCATED_STD``
     - scalar
   * - :math:`c`
     - standard deviation of a standard normal truncated to :math:`[-2, 2]`, 0.8796
     - ``TRUNCATED_STD``
     - scalar

Explanation
-----------

**The variance argument.** Each pre-activation is a sum of :math:`n_{\text{in}}` products of a
weight and an input. When weights and inputs are independent and the weights have mean zero, the
variance of the sum is the sum of the variances, which gives the equation above. For the variance
to stay the same from layer to layer, :math:`n_{\text{in}}\operatorname{Var}[W]\,\mathbb{E}[h^2]`
must equal :math:`\operatorname{Var}[z]`:

* **tanh (Glorot).** Near zero, tanh is the identity, so :math:`\mathbb{E}[h^2] \approx
  \operatorname{Var}[z]` and the forward pass needs :math:`\operatorname{Var}[W] = 1/n_{\text{in}}`.
  The backward pass multiplies the error signal by :math:`W^\top`, which by the same argument needs
  :math:`1/n_{\text{out}}`. :footcite:t:`glorot2010understanding` compromise with the harmonic
  mean, :math:`2/(n_{\text{in}} + n_{\text{out}})`, which is both when the layer is square.
* **ReLU (He).** ReLU zeroes half of a symmetric input, so :math:`\mathbb{E}[h^2] =
  \frac{1}{2}\operatorname{Var}[z]`: the factor 2 in :math:`2/n_{\text{in}}` gives back the half that
  ReLU throws away :footcite:`he2015delving`. With Glorot's scale a ReLU network halves its variance
  at every layer, a factor :math:`2^{-20} \approx 10^{-6}` after twenty.

A scale off by any constant factor compounds geometrically with depth: weights with standard deviation
:math:`0.5/\sqrt{n_{\text{in}}}` divide the *variance* of a ReLU signal by 8 per layer
(:math:`0.25 \times \tfrac{1}{2}`), so its size, the standard deviation, by :math:`\sqrt{8} \approx
2.8`, and the variance by :math:`8^{20} \approx 10^{18}` over 20 layers; :math:`2/\sqrt{n_{\text{in}}}`
doubles the variance per layer (the size grows by :math:`\sqrt{2}`). The backward pass has the same
product, so the gradients vanish or explode with the activations. LeCun's earlier rule,
:math:`\operatorname{Var}[W] = 1/n_{\text{in}}`, is the forward half of Glorot's
:footcite:`lecun1998efficient`.

For tanh even the right scale does not hold the variance exactly: the curvature of tanh shrinks
large inputs, :math:`\tanh(x)^2 \approx x^2 - \tfrac{2}{3}x^4`, so a layer maps a variance
:math:`q` to about :math:`q - 2q^2`, which decays like :math:`1/(2l)`: slowly, by a power of the
depth, not geometrically; networks at this scale sit at the "edge of chaos" where signals travel
furthest :footcite:`schoenholz2017deep`. The figure shows the variance of the pre-activations
through 20 layers of width 256:

.. admonition:: Intuition

   A deep network is a long game of telephone in which every player repeats the message at some
   volume relative to what they heard. If each speaks a little softer, the message is inaudible
   twenty players later; a little louder, and it ends as a roar. Initialization sets every
   player's gain to exactly one. A ReLU player hears only the positive half of the message, so
   He's rule has them speak twice as loud, in power, to make up for it.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.foundations.initialization import (
       glorot_normal, he_normal, layer_variances, variance_scaling)
   H, L = 256, 20
   k_x, k_w = jax.random.split(jax.random.key(0))
   x = jax.random.normal(k_x, (256, H))
   keys = jax.random.split(k_w, L)
   # The same keys for every scheme, on purpose: the same draws at different scales.
   stack = lambda init: jax.vmap(lambda k: init(k, H, H))(keys)  # (L, H, H)
   small = lambda k, n_in, n_out: variance_scaling(k, n_in, n_out, scale=0.25, mode="fan_in")
   large = lambda k, n_in, n_out: variance_scaling(k, n_in, n_out, scale=4.0, mode="fan_in")
   for label, init, act in [("He, ReLU", he_normal, "relu"), ("Glorot, tanh", glorot_normal, "tanh"),
                            ("Glorot, ReLU", glorot_normal, "relu"),
                            (r"std $0.5/\sqrt{n}$, ReLU", small, "relu"),
                            (r"std $2/\sqrt{n}$, ReLU", large, "relu")]:
       plt.semilogy(range(1, L + 1), layer_variances(stack(init), x, act), "o-", ms=3, label=label)
   plt.xticks(range(0, L + 1, 5)); plt.xlabel("layer $l$"); plt.ylabel(r"Var[$z^{(l)}$]"); plt.legend(fontsize=8)
   plt.title("Pre-activation variance through a deep network")

**Uniform or normal.** Both have the same variance; only the shape differs. A uniform on
:math:`[-a, a]` has variance :math:`a^2/3`, hence :math:`a = \sqrt{3\operatorname{Var}[W]}`. The
normal variants here follow :func:`jax.nn.initializers.glorot_normal` and ``he_normal``: they are
*truncated* at two standard deviations (redrawing the rare large weights that would dominate a
unit) and then rescaled by :math:`1/c` so that the variance after truncation is exactly the
target. Without the rescaling a truncated normal would be about 23% short of it
(:math:`c^2 \approx 0.774`). ``variance_scaling`` also offers the untruncated
``distribution="normal"``, the form He et al. wrote down.

**Traps.** The fans of a dense layer ``x @ W`` are ``W.shape == (fan_in, fan_out)``: swapping them
matters whenever the layer is not square. Biases start at zero. The argument assumes inputs of unit
variance, so standardise the data first. Batch normalisation (and residual connections) later made
deep networks far less sensitive to this scale, but the first layers of every model still start
from one of these rules.

Inductive bias
--------------

Initialization encodes a prior belief about the network before it has seen data: that every unit is
equally important (all weights from one distribution), that no input direction is preferred (mean
zero, independent weights) and that the signal should reach the last layer at the size it left the
first. It assumes the nonlinearity it was derived for (ReLU's factor 2, tanh's linear centre) and
independent, standardised inputs; with other activations (GELU, SiLU) the right factor differs
slightly, and schemes such as orthogonal initialization go further and preserve the length of every
input exactly, not only on average.

Example
-------

Large matrices have the variance the formulas promise (the weights' statistics in NumPy):

>>> import jax, numpy as np
>>> from cookbook.foundations.initialization import glorot_uniform, he_normal, layer_variances
>>> k_g, k_h, k_w, k_x, k_small = jax.random.split(jax.random.key(0), 5)
>>> W = np.asarray(glorot_uniform(k_g, 300, 500))
>>> W.shape, round(float(W.var() * (300 + 500) / 2), 2)  # Var[W] (n_in + n_out) / 2
((300, 500), 1.0)
>>> bool(np.abs(W).max() <= np.sqrt(3 * 2 / (300 + 500)))
True
>>> V = np.asarray(he_normal(k_h, 400, 200))
>>> round(float(V.var() * 400 / 2), 2)  # Var[W] n_in / 2
1.0

He-initialised ReLU layers keep the variance of the signal layer after layer; Glorot's scale, made
for tanh, halves it at every ReLU layer:

>>> from cookbook.foundations.initialization import glorot_normal
>>> keys, x = jax.random.split(k_w, 6), jax.random.normal(k_x, (64, 128))  # keys shared on purpose
>>> he = layer_variances(jax.vmap(lambda k: he_normal(k, 128, 128))(keys), x, "relu")
>>> glorot = layer_variances(jax.vmap(lambda k: glorot_normal(k, 128, 128))(keys), x, "relu")
>>> [round(float(v), 2) for v in he]
[2.01, 1.91, 1.94, 1.83, 1.9, 1.96]
>>> [round(float(v), 2) for v in glorot]
[1.0, 0.48, 0.24, 0.11, 0.06, 0.03]

The other variants, and the general form they are built from:

>>> from cookbook.foundations.initialization import he_uniform, variance_scaling
>>> k1, k2, k3 = jax.random.split(k_small, 3)
>>> bool(np.abs(he_uniform(k1, 3, 5)).max() <= np.sqrt(3 * 2 / 3))  # a = sqrt(6 / n_in)
True
>>> bool(np.abs(glorot_normal(k2, 3, 5)).max() <= 2 * np.sqrt(2 / (3 + 5)) / 0.8796)  # 2 s
True
>>> variance_scaling(k3, 3, 5, scale=1.0, mode="fan_out", distribution="normal").shape
(3, 5)
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "variance_scaling": ("fan_in", "fan_out", "scale", "mode", "distribution", "dtype"),
    "glorot_uniform": ("fan_in", "fan_out", "dtype"),
    "glorot_normal": ("fan_in", "fan_out", "dtype"),
    "he_uniform": ("fan_in", "fan_out", "dtype"),
    "he_normal": ("fan_in", "fan_out", "dtype"),
    "layer_variances": ("activation",),
}

#: Standard deviation of a standard normal truncated to [-2, 2]:
#: sqrt(1 - 4 pdf(2) / (cdf(2) - cdf(-2))).
TRUNCATED_STD = 0.87962566103423978

_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("uniform", "normal", "truncated_normal")
_ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "linear": lambda z: z}


def variance_scaling(key, fan_in, fan_out, *, scale, mode, distribution="truncated_normal", dtype=jnp.float32):
    """A ``(fan_in, fan_out)`` weight matrix with variance ``scale / n``, ``n`` chosen by ``mode``.

    ``mode`` is ``"fan_in"``, ``"fan_out"`` or ``"fan_avg"`` (their mean); ``distribution`` is
    ``"uniform"``, ``"normal"`` or ``"truncated_normal"`` (at two standard deviations, rescaled so
    that the variance is still ``scale / n``).
    """
    fan_in, fan_out = _checks.size(fan_in, "fan_in"), _checks.size(fan_out, "fan_out")
    _checks.positive(scale, "scale")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if distribution not in _DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {_DISTRIBUTIONS}, got {distribution!r}")
    if _checks.is_concrete(scale):
        return _variance_scaling(key, fan_in, fan_out, _checks.static_number(scale, "scale"), mode, distribution,
                                 jnp.dtype(dtype))
    return _variance_scaling_traced(key, fan_in, fan_out, scale, mode, distribution, jnp.dtype(dtype))


# The public functions check their input in Python, then run a compiled core (sizes, scale, names
# and dtype static): the page's examples, the tests and the bad-input checks share one program per
# shape instead of dispatching each draw and product eagerly, or compiling a fresh scan per call.
# A scale traced by an outer jax.jit goes to a second core that takes it as an argument.
def _draw(key, fan_in, fan_out, scale, mode, distribution, dtype):
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    std = (scale / n) ** 0.5  # a Python float where the scale is a number (static)
    shape = (fan_in, fan_out)
    if distribution == "uniform":
        bound = (3.0 * scale / n) ** 0.5  # Var[U(-a, a)] = a^2 / 3
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)
    if distribution == "normal":  # astype: a traced float32 scale would promote bfloat16 weights
        return (std * jax.random.normal(key, shape, dtype)).astype(dtype)
    return ((std / TRUNCATED_STD) * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)).astype(dtype)


_variance_scaling = jax.jit(_draw, static_argnums=(1, 2, 3, 4, 5, 6))
_variance_scaling_traced = jax.jit(_draw, static_argnums=(1, 2, 4, 5, 6))


def glorot_uniform(key, fan_in, fan_out, dtype=jnp.float32):
    """Glorot (Xavier) uniform: ``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))``."""
    return variance_scaling(key, fan_in, fan_out, scale=1.0, mode="fan_avg", distribution="uniform", dtype=dtype)


def glorot_normal(key, fan_in, fan_out, dtype=jnp.float32):
    """Glorot (Xavier) truncated normal with variance ``2 / (fan_in + fan_out)``."""
    return variance_scaling(key, fan_in, fan_out, scale=1.0, mode="fan_avg", distribution="truncated_normal", dtype=dtype)


def he_uniform(key, fan_in, fan_out, dtype=jnp.float32):
    """He (Kaiming) uniform: ``U(-a, a)`` with ``a = sqrt(6 / fan_in)``."""
    return variance_scaling(key, fan_in, fan_out, scale=2.0, mode="fan_in", distribution="uniform", dtype=dtype)


def he_normal(key, fan_in, fan_out, dtype=jnp.float32):
    """He (Kaiming) truncated normal with variance ``2 / fan_in``."""
    return variance_scaling(key, fan_in, fan_out, scale=2.0, mode="fan_in", distribution="truncated_normal", dtype=dtype)


def layer_variances(weights, x, activation="relu"):
    """Variance of the pre-activations at each layer of a deep bias-free network.

    ``weights`` is a stack of ``L`` square matrices ``(L, H, H)`` and ``x`` a batch ``(B, H)``; the
    network computes ``z = h @ W``, ``h = activation(z)`` layer after layer (a ``scan``) and returns
    the variance of ``z`` over the batch and the units at each layer, shape ``(L,)``. The batch is
    part of the idea here: the variance is taken across it.
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    weights = _checks.float_array(weights, "weights", ndim=3, what=" (L, H, H)")
    if weights.shape[1] != weights.shape[2]:
        raise ValueError(f"weights must have shape (L, H, H), got shape {weights.shape}")
    x = _checks.float_array(x, "x", ndim=2, what=" (B, H)")
    if x.shape[1] != weights.shape[1]:
        raise ValueError(f"x must have shape (B, H) = (B, {weights.shape[1]}), got shape {x.shape}")
    return _layer_variances(weights, x, activation)


@functools.partial(jax.jit, static_argnums=2)
def _layer_variances(weights, x, activation):
    phi = _ACTIVATIONS[activation]

    def layer(h, W):
        z = h @ W  # (B, H)
        return phi(z), jnp.var(z.astype(jnp.float32))

    _, variances = jax.lax.scan(layer, x, weights)
    return variances  # (L,)
