r"""Group normalisation
===================

Split the channels of one example into groups and standardise each group with the mean and
variance of all its values over every pixel: batch normalisation's replacement for vision models
trained with small batches, with instance normalisation and layer normalisation as its two
extremes.

Equation
--------

.. math::

   \mu_g = \frac{1}{N |S_g|} \sum_{n=1}^{N} \sum_{c \in S_g} x_{nc}, \qquad
   \sigma_g^2 = \frac{1}{N |S_g|} \sum_{n=1}^{N} \sum_{c \in S_g} \left(x_{nc} - \mu_g\right)^2

   y_{nc} = \gamma_c \, \frac{x_{nc} - \mu_{g}}{\sqrt{\sigma_{g}^2 + \epsilon}} + \beta_c
   \quad \text{for } c \in S_g, \qquad
   S_g = \left\{ (g - 1) \tfrac{C}{G} + 1, \dots, g \tfrac{C}{G} \right\}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_{nc}`
     - one example: channel :math:`c` at pixel :math:`n`
     - ``x``
     - ``(H, W, C)`` or ``(C,)``
   * - :math:`y_{nc}`
     - normalised output
     - the return value
     - same as ``x``
   * - :math:`n`, :math:`N`
     - index of a pixel; number of pixels of the example (:math:`H W`, or 1 for a vector)
     - the leading axes of ``x``
     - scalar
   * - :math:`c`, :math:`C`
     - index of a channel; number of channels
     - the last axis of ``x``
     - scalar
   * - :math:`g`, :math:`G`
     - index of a group; number of groups
     - ``num_groups``
     - scalar
   * - :math:`S_g`
     - the :math:`C / G` consecutive channels of group :math:`g`
     - ``x.reshape(..., G, C // G)``
     - set
   * - :math:`\mu_g`, :math:`\sigma_g^2`
     - mean and (biased) variance of group :math:`g` of this example
     - ``mean``, ``var``
     - ``(1, 1, G, 1)``
   * - :math:`\gamma_c`, :math:`\beta_c`
     - learned scale and shift, one per channel
     - ``scale``, ``bias``
     - ``(C,)``
   * - :math:`\epsilon`
     - small constant that keeps the division finite
     - ``eps``
     - scalar

Explanation
-----------

**Which axes.** ``group_norm`` takes *one example*: an image of shape ``(H, W, C)`` (or any
number of spatial axes before the channels) or a vector of shape ``(C,)``. The channels are split
into :math:`G` groups of :math:`C/G` consecutive channels, and each group gets one mean and one
variance, pooled over **all spatial axes and the channels of that group**, so
:math:`H W C / G` values per statistic. Nothing is pooled across examples: a batch is mapped with
:func:`jax.vmap`, and each example is normalised on its own, in training as in evaluation. This
is what flax's ``nn.GroupNorm`` does with its default reduction axes on a batch ``(B, H, W, C)``.

:footcite:t:`wu2018group` built the layer for detection and segmentation, where memory allows
only one or two images per device and :doc:`batch_norm`'s statistics turn to noise. Their
argument is that channels of a convolutional layer come in families (filters that respond to the
same pattern at different orientations, or that are trained to vary together), so pooling within
a family is natural. With :math:`G = 32` groups on ImageNet they came within about half a point
of batch norm at 32 images per device, and beat it by about ten points at two images per device,
since the group statistics do not depend on the batch at all.

The two ends of the range are older layers. With **one group** every value of the example is
pooled: this is layer normalisation of the whole feature map :footcite:`ba2016layer`, and on a
vector it is exactly the :doc:`layer_norm` recipe. With **one channel per group**
(:math:`G = C`) each channel of each image is standardised over its own pixels: instance
normalisation, introduced for style transfer, where removing each image's per-channel contrast is
exactly what is wanted :footcite:`ulyanov2016instance`.

.. admonition:: Intuition

   The channels of a convolutional layer are like the instruments of an orchestra: each section
   (strings, brass, percussion) has its own typical loudness, and the sections are balanced
   separately, within each performance. Layer normalisation would balance the whole orchestra as
   one; instance normalisation every instrument alone; group normalisation balances sections of
   instruments that play alike, without listening to any other performance, that is, any other
   example of the batch.

The figure shows, for one output value, which inputs its statistics were pooled from, computed from the recipes themselves (by the
gradient of that output): batch norm pools one channel across the batch; the other three pool
within one example. Dark: the output value (example 0, channel 0); light: the other inputs its
mean and variance pool.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.normalization.batch_norm import init, batch_norm
   from cookbook.normalization.group_norm import group_norm
   B, H, W, C = 4, 3, 3, 6
   x = jax.random.normal(jax.random.key(0), (B, H, W, C))
   ones, zeros = jnp.ones(C), jnp.zeros(C)
   params, state = init(C)
   layers = {
       "batch norm": lambda x: batch_norm(params, state, x, training=True)[0],
       "layer norm (G = 1)": jax.vmap(lambda x: group_norm(x, ones, zeros, 1)),
       "instance norm (G = C)": jax.vmap(lambda x: group_norm(x, ones, zeros, C)),
       "group norm (G = 3)": jax.vmap(lambda x: group_norm(x, ones, zeros, 3)),
   }
   fig, axes = plt.subplots(1, 4, figsize=(11, 2.8), sharey=True)
   for ax, (name, f) in zip(axes, layers.items()):
       # Inputs that the statistics of output (example 0, channel 0) depend on.
       grad = jax.grad(lambda x: f(x)[0, 0, 0, 0])(x)
       pooled = np.asarray(jnp.abs(grad).sum(axis=(1, 2)) > 1e-6, float)
       pooled[0, 0] = 2.0  # the output itself
       ax.imshow(pooled, cmap="Blues", vmin=0, vmax=2.2)
       ax.set(title=name, xlabel="channel c", xticks=range(C), yticks=range(B))
   axes[0].set_ylabel("example (each cell: all H x W pixels)")
   fig.tight_layout()

**Numerical traps.** As in the other recipes, sums are accumulated in float32 for low-precision
inputs and the variance is computed in two passes. :math:`C` must be divisible by :math:`G`; the
recipe raises a ``ValueError`` rather than silently making unequal groups. The default
:math:`\epsilon = 10^{-5}` follows the paper and PyTorch; flax's ``nn.GroupNorm`` defaults to
:math:`10^{-6}`. Instance normalisation of a :math:`1 \times 1` feature map, or of a vector, has a
single value per statistic: its output is always :math:`\beta`, whatever the input.

Inductive bias
--------------

Group normalisation assumes that the channels of one group share a scale and offset that carry no
information (only the pattern within the group does), and that this holds for each example on its
own, so no independence between the examples of a batch is needed. Instance normalisation takes
the strongest form of the assumption: each image's per-channel contrast is nuisance, which is
right for style transfer and wrong for tasks where absolute intensity matters. Layer
normalisation the weakest: only the overall scale of an example is nuisance. The grouping of
consecutive channels is arbitrary at initialisation; the network learns to put channels that
should be normalised together into the same group.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.normalization.group_norm import group_norm
>>> x = jax.random.normal(jax.random.key(0), (5, 7, 6))  # one image: H=5, W=7, C=6
>>> y = group_norm(x, jnp.ones(6), jnp.zeros(6), num_groups=3)
>>> groups = y.reshape(5, 7, 3, 2)  # 3 groups of 2 channels
>>> bool(jnp.all(jnp.abs(groups.mean(axis=(0, 1, 3))) < 1e-6)), groups.var(axis=(0, 1, 3)).round(3)
(True, Array([1., 1., 1.], dtype=float32))
>>> v = jnp.array([1.0, 2.0, 3.0, 6.0])  # a vector: one group is layer normalisation
>>> group_norm(v, jnp.ones(4), jnp.zeros(4), num_groups=1).round(3)
Array([-1.069, -0.535,  0.   ,  1.604], dtype=float32)
"""

from functools import partial

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"group_norm": ("num_groups",)}


def group_norm(x, scale, bias, num_groups, eps=1e-5):
    """Group-normalise one example ``x`` of shape (..., C), e.g. (H, W, C) or (C,).

    Each of the ``num_groups`` groups of ``C // num_groups`` consecutive channels is normalised
    with one mean and variance pooled over all leading (spatial) axes and the group's channels.
    ``scale`` and ``bias`` have shape (C,). Batch with :func:`jax.vmap`. Statistics are
    accumulated in at least float32; the result has the dtype of ``x``.
    """
    x = _checks.float_array(x, "x", min_ndim=1, what=" (..., C), e.g. (H, W, C) or (C,)")
    scale, bias = _checks.float_array(scale, "scale"), _checks.float_array(bias, "bias")
    _checks.positive(eps, "eps", allow_zero=True)
    C = x.shape[-1]
    if not isinstance(num_groups, int) or num_groups < 1 or C % num_groups:
        raise ValueError(f"num_groups must be a positive int that divides the number of channels "
                         f"C={C} of x {x.shape}, got {num_groups!r}")
    for name, value in (("scale", scale), ("bias", bias)):
        if value.shape != (C,):
            raise ValueError(f"{name} must have shape ({C},) to match the channels of x {x.shape}, "
                             f"got shape {value.shape}")
    return _group_norm(x, scale, bias, num_groups, eps)


@partial(jax.jit, static_argnums=3)  # one compiled program per shape and number of groups
def _group_norm(x, scale, bias, G, eps):
    C = x.shape[-1]
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    xg = x32.reshape(x.shape[:-1] + (G, C // G))  # (..., G, C/G)
    axes = tuple(range(x.ndim - 1)) + (x.ndim,)  # every axis but the group axis
    mean = jnp.mean(xg, axis=axes, keepdims=True)  # (1, ..., 1, G, 1)
    var = jnp.mean(jnp.square(xg - mean), axis=axes, keepdims=True)  # two-pass, biased
    x_hat = ((xg - mean) * jax.lax.rsqrt(var + eps)).reshape(x.shape)  # (..., C)
    per_channel = (1,) * (x.ndim - 1) + (C,)
    y = x_hat * scale.reshape(per_channel) + bias.reshape(per_channel)
    return y.astype(x.dtype)
