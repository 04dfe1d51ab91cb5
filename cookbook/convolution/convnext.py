r"""ConvNeXt
========

A plain convolutional network modernised step by step with the design choices of vision
transformers (large depthwise kernels, an inverted bottleneck, LayerNorm, GELU, few normalisations
and activations, a patchify stem): it matches a transformer's accuracy while staying a convolution.

Equation
--------

.. math::

   y = x + \gamma \odot \Big( \operatorname{GELU}\big( \operatorname{LN}(\operatorname{DW}_{k \times k}(x))\, W_1 + b_1 \big)\, W_2 + b_2 \Big)

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`, :math:`y`
     - a block's input and output feature maps
     - ``x``; the result of ``block``
     - ``(H, W, C)``
   * - :math:`\operatorname{DW}_{k \times k}`
     - a depthwise convolution: each channel filtered by its own :math:`k \times k` kernel (see
       :doc:`depthwise_separable`)
     - ``depthwise_conv2d`` with ``params["dw"]``
     - kernel ``(k, k, C)``
   * - :math:`k`
     - the kernel size, 7 in the paper
     - ``kernel_size``
     - integer
   * - :math:`\operatorname{LN}`
     - layer normalisation over the channels of each pixel (see :doc:`../normalization/layer_norm`)
     - ``layer_norm``
     - ``(H, W, C)``
   * - :math:`W_1, b_1`
     - the expansion to four times the channels: a 1 × 1 convolution
     - ``params["W1"]``, ``params["b1"]``
     - ``(C, 4C)``, ``(4C,)``
   * - :math:`\operatorname{GELU}`
     - the Gaussian error linear unit
     - ``jax.nn.gelu``
     - elementwise
   * - :math:`W_2, b_2`
     - the projection back to :math:`C` channels
     - ``params["W2"]``, ``params["b2"]``
     - ``(4C, C)``, ``(C,)``
   * - :math:`\gamma`
     - layer scale: a per-channel gain on the branch, started at :math:`10^{-6}`
     - ``params["gamma"]``
     - ``(C,)``

Explanation
-----------

:footcite:t:`liu2022convnext` started from a ResNet-50 (:doc:`resnet`) and applied, one at a time, the
changes that separate it from a Swin transformer, keeping each that improved ImageNet accuracy. The
block above is the result. Its parts, and the transformer habit each copies:

- **Depthwise convolution, large kernel**: the spatial mixing is done per channel, like attention's
  weighted sum mixes positions but not channels, and with a :math:`7 \times 7` window like Swin's
  local attention. Per channel it costs :math:`k^2` weights, not :math:`k^2 C`: a
  :math:`7 \times 7` depthwise layer has fewer weights than a :math:`3 \times 3` ordinary one once
  :math:`C > 5`.
- **Inverted bottleneck**: channels expand four times and contract again, as in a transformer's MLP;
  the two :math:`1 \times 1` convolutions hold most of the weights and all the channel mixing.
- **One LayerNorm and one GELU per block**, where a ResNet block has three batch norms and three
  ReLUs; batch statistics are gone.
- **Layer scale** :footcite:`touvron2021cait`: a per-channel gain on the residual branch, started
  at :math:`10^{-6}`, so that every block begins as the identity and deep stacks train stably.
- **Patchify stem and separate downsampling**: the image is cut into non-overlapping patches by a
  strided convolution, as a vision transformer does (:doc:`../transformers/vision_transformer`), and
  between stages a LayerNorm and a :math:`2 \times 2` stride-2 convolution halve the resolution.

.. admonition:: Intuition

   It is a renovation rather than a new building: the convolutional house keeps its foundations
   (weight sharing across positions, locality), and each room is refitted with the fixtures that
   proved themselves next door in the transformer, one at a time, keeping only what made the house
   better to live in.

Inductive bias
--------------

ConvNeXt keeps the convolution's biases that vision transformers give up: locality (a block sees a
:math:`k \times k` neighbourhood; depth and downsampling grow the view) and translation equivariance
(weights shared across positions), which let it learn from less data than a transformer. It assumes
that spatial and channel mixing can be separated, as depthwise-then-pointwise does.

Example
-------

At initialisation the layer scale makes each block the identity to within a few millionths, and
the network maps an image to class logits:

>>> import jax, jax.numpy as jnp
>>> from cookbook.convolution.convnext import apply, block, init, init_block
>>> x = jax.random.normal(jax.random.key(0), (9, 8, 6))  # height, width, channels
>>> p = init_block(jax.random.key(1), channels=6, kernel_size=7)
>>> bool(jnp.max(jnp.abs(block(p, x) - x)) < 1e-5)
True
>>> params = init(jax.random.key(2), in_channels=1, num_classes=10, widths=(16, 32), depths=(1, 1), patch=2)
>>> apply(params, jnp.ones((8, 8, 1)), patch=2).shape
(10,)
"""

import functools
import math

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.convolution.depthwise_separable import depthwise_conv2d
from cookbook.normalization.layer_norm import layer_norm

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "init_block": ("channels", "kernel_size", "layer_scale"),
    "block": (),
    "init": ("in_channels", "num_classes", "widths", "depths", "patch", "kernel_size"),
    "apply": ("patch",),
}

#: The starting value of the layer scale.
LAYER_SCALE_INIT = 1e-6


def init_block(key, channels, kernel_size=7, layer_scale=LAYER_SCALE_INIT):
    """One block's weights: depthwise kernel, LayerNorm, the two 1 x 1 layers, the layer scale."""
    _checks.size(channels, "channels", minimum=1)
    _checks.size(kernel_size, "kernel_size", minimum=1)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd, so that 'SAME' padding is symmetric, got {kernel_size}")
    return _init_block(key, channels, kernel_size, _checks.static_number(layer_scale, "layer_scale"))


def _block_weights(key, C, kernel_size, layer_scale):
    k_dw, k_1, k_2 = jax.random.split(key, 3)
    return {
        "dw": jax.random.normal(k_dw, (kernel_size, kernel_size, C)) / kernel_size,
        "ln_scale": jnp.ones(C), "ln_bias": jnp.zeros(C),
        "W1": jax.random.normal(k_1, (C, 4 * C)) / math.sqrt(C), "b1": jnp.zeros(4 * C),
        "W2": jax.random.normal(k_2, (4 * C, C)) / math.sqrt(4 * C), "b2": jnp.zeros(C),
        "gamma": jnp.full((C,), layer_scale, jnp.float32),
    }


# One compiled program per configuration, not one per random draw and division; init's own core
# traces _block_weights itself.
_init_block = jax.jit(_block_weights, static_argnums=(1, 2, 3))


def block(params, x):
    """The ConvNeXt block on one feature map ``x`` (H, W, C); batch with :func:`jax.vmap`."""
    x = _checks.float_array(x, "x", ndim=3, what=" (H, W, C)")
    C = x.shape[-1]
    k = jnp.shape(params["dw"])[0]
    shapes = {"dw": (k, k, C), "ln_scale": (C,), "ln_bias": (C,), "W1": (C, 4 * C), "b1": (4 * C,),
              "W2": (4 * C, C), "b2": (C,), "gamma": (C,)}
    for name, shape in shapes.items():
        where = f'params["{name}"]'
        _checks.same_shape(_checks.float_array(params[name], where), where, shape, expected_from="C from x")
    return _block(params, x)


@jax.jit  # one compilation per shape, not one per operation when called eagerly
def _block(params, x):
    h = depthwise_conv2d(x, params["dw"])  # spatial mixing, channel by channel
    h = layer_norm(h, params["ln_scale"], params["ln_bias"])
    h = jax.nn.gelu(h @ params["W1"] + params["b1"][None, None, :], approximate=False)  # (H, W, 4C)
    h = h @ params["W2"] + params["b2"][None, None, :]  # (H, W, C)
    return x + params["gamma"][None, None, :] * h


def _patchify(x, w, b, size):
    """A stride-``size`` convolution with a ``size`` x ``size`` kernel: non-overlapping patches, each
    mapped linearly; x (H, W, C_in) with H and W multiples of ``size``, w (size, size, C_in, C_out)."""
    H, W, C = x.shape
    if H % size or W % size:
        raise ValueError(f"x must have a height and width divisible by {size}, got shape {x.shape}")
    patches = x.reshape(H // size, size, W // size, size, C).transpose(0, 2, 1, 3, 4)  # (H', W', s, s, C)
    return jnp.einsum("abijc,ijcd->abd", patches, w) + b[None, None, :]


def init(key, in_channels, num_classes, widths=(96, 192, 384, 768), depths=(3, 3, 9, 3), patch=4, kernel_size=7):
    """A ConvNeXt: a patchify stem, stages of ``depths`` blocks at ``widths`` channels separated by
    downsampling layers, global average pooling, LayerNorm and a linear head."""
    _checks.size(in_channels, "in_channels", minimum=1)
    _checks.size(num_classes, "num_classes", minimum=1)
    _checks.size(patch, "patch", minimum=1)
    if not (isinstance(widths, tuple) and isinstance(depths, tuple) and len(widths) == len(depths) >= 1):
        raise ValueError(f"widths and depths must be tuples of one length, got {widths!r} and {depths!r}")
    for w, d in zip(widths, depths):
        _checks.size(w, "widths[...]", minimum=1)
        _checks.size(d, "depths[...]", minimum=1)
    _checks.size(kernel_size, "kernel_size", minimum=1)
    return _init(key, in_channels, num_classes, widths, depths, patch, kernel_size)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5, 6))  # one compilation, not one per random draw
def _init(key, in_channels, num_classes, widths, depths, patch, kernel_size):
    keys = iter(jax.random.split(key, 2 + len(widths) + sum(depths)))
    dense = lambda k, shape, fan_in: jax.random.normal(k, shape) / math.sqrt(fan_in)
    params = {"stem_w": dense(next(keys), (patch, patch, in_channels, widths[0]), patch * patch * in_channels),
              "stem_b": jnp.zeros(widths[0]), "stem_ln": (jnp.ones(widths[0]), jnp.zeros(widths[0])), "stages": []}
    for i, (width, depth) in enumerate(zip(widths, depths)):
        stage = {"blocks": [_block_weights(next(keys), width, kernel_size, LAYER_SCALE_INIT) for _ in range(depth)]}
        if i > 0:  # LayerNorm, then a 2 x 2 stride-2 convolution from the previous width
            stage["down_ln"] = (jnp.ones(widths[i - 1]), jnp.zeros(widths[i - 1]))
            stage["down_w"] = dense(next(keys), (2, 2, widths[i - 1], width), 4 * widths[i - 1])
            stage["down_b"] = jnp.zeros(width)
        params["stages"].append(stage)
    params["head_ln"] = (jnp.ones(widths[-1]), jnp.zeros(widths[-1]))
    params["head_w"] = dense(next(keys), (widths[-1], num_classes), widths[-1])
    params["head_b"] = jnp.zeros(num_classes)
    return params


def _check_params(params):
    """The shapes of the stem, the downsampling layers and the head agree with the widths they join
    (each block checks its own weights)."""
    def check(value, where, shape):
        _checks.same_shape(_checks.float_array(value, where), where, shape, expected_from="the widths of init")

    width = jnp.shape(params["stem_w"])[-1]
    check(params["stem_b"], 'params["stem_b"]', (width,))
    for j, part in enumerate(params["stem_ln"]):
        check(part, f'params["stem_ln"][{j}]', (width,))
    for i, stage in enumerate(params["stages"]):
        if "down_w" in stage:
            new = jnp.shape(stage["down_w"])[-1]
            check(stage["down_w"], f'params["stages"][{i}]["down_w"]', (2, 2, width, new))
            check(stage["down_b"], f'params["stages"][{i}]["down_b"]', (new,))
            for j, part in enumerate(stage["down_ln"]):
                check(part, f'params["stages"][{i}]["down_ln"][{j}]', (width,))
            width = new
    num_classes = jnp.shape(params["head_w"])[-1]
    check(params["head_w"], 'params["head_w"]', (width, num_classes))
    check(params["head_b"], 'params["head_b"]', (num_classes,))
    for j, part in enumerate(params["head_ln"]):
        check(part, f'params["head_ln"][{j}]', (width,))


def apply(params, x, patch=4):
    """Class logits (num_classes,) for one image ``x`` (H, W, in_channels)."""
    x = _checks.float_array(x, "x", ndim=3, what=" (H, W, C)")
    stem_w = _checks.float_array(params["stem_w"], 'params["stem_w"]', ndim=4, what=" (patch, patch, C_in, C)")
    _checks.same_shape(stem_w, 'params["stem_w"]', (patch, patch, x.shape[-1], stem_w.shape[-1]),
                       expected_from="patch and the channels of x")
    _check_params(params)
    return _apply(params, x, patch)


@functools.partial(jax.jit, static_argnums=2)  # one compilation per shape, not one per operation
def _apply(params, x, patch):
    stem_w = params["stem_w"]
    h = layer_norm(_patchify(x, stem_w, params["stem_b"], patch), *params["stem_ln"])
    for stage in params["stages"]:
        if "down_w" in stage:
            h = _patchify(layer_norm(h, *stage["down_ln"]), stage["down_w"], stage["down_b"], 2)
        for p in stage["blocks"]:
            h = block(p, h)
    pooled = layer_norm(jnp.mean(h, axis=(0, 1)), *params["head_ln"])
    return pooled @ params["head_w"] + params["head_b"]
