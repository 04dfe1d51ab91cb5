r"""U-Net
=====

An encoder that pools the image down to coarse, wide features and a decoder that upsamples them
back, with skip connections that hand each decoder level the encoder's sharp maps of the same size:
the network to reach for when every pixel needs a label (segmentation, denoising, the noise
predictor of a diffusion model).

Equation
--------

.. math::

   e_1 = f_1(x), \quad e_2 = f_2(\operatorname{pool}(e_1)), \quad
   c = f_3(\operatorname{pool}(e_2))

.. math::

   d_2 = g_2\big([\,U_2 \circledast c,\; e_2\,]\big), \quad
   d_1 = g_1\big([\,U_1 \circledast d_2,\; e_1\,]\big), \quad
   \hat{p}_{ij} = \sigma\big((d_1 V)_{ij}\big)

.. math::

   L = -\frac{1}{H W} \sum_{i,j} \big(t_{ij} \log \hat{p}_{ij} + (1 - t_{ij}) \log(1 - \hat{p}_{ij})\big),
   \qquad
   \operatorname{IoU} = \frac{\lvert P \cap T \rvert}{\lvert P \cup T \rvert}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`
     - input image
     - ``x``
     - ``(H, W, 1)``, here 16 by 16
   * - :math:`e_1`, :math:`e_2`
     - encoder maps at full and half resolution
     - ``e1``, ``e2``
     - ``(H, W, 8)``, ``(H/2, W/2, 16)``
   * - :math:`c`
     - bottleneck at quarter resolution
     - ``c``
     - ``(H/4, W/4, 32)``
   * - :math:`f_1`, :math:`f_2`, :math:`f_3`, :math:`g_1`, :math:`g_2`
     - 3 by 3 convolution and ReLU (encoder, bottleneck, decoder)
     - ``_conv_relu``
     - maps
   * - :math:`U_1`, :math:`U_2`, :math:`\circledast`
     - kernels of the 2 by 2, stride 2 transposed convolutions (:doc:`transposed_conv`)
     - ``params["up1"]``, ``params["up2"]``
     - ``(2, 2, 8, 16)``, ``(2, 2, 16, 32)``
   * - :math:`[\cdot, \cdot]`
     - concatenation along channels: the skip connection
     - ``jnp.concatenate``
     - channels add up
   * - :math:`d_1`, :math:`d_2`
     - decoder maps
     - ``d1``, ``d2``
     - ``(H, W, 8)``, ``(H/2, W/2, 16)``
   * - :math:`V`
     - 1 by 1 convolution to one logit per pixel
     - ``params["head"]``
     - ``(8, 1)``
   * - :math:`\sigma`, :math:`\hat{p}_{ij}`
     - logistic sigmoid; predicted probability that pixel :math:`(i, j)` is foreground
     - ``jax.nn.sigmoid(apply(params, x))``
     - ``(H, W)``
   * - :math:`t_{ij}`, :math:`T`, :math:`P`
     - target mask; the sets of target and predicted (:math:`\hat{p} > 1/2`) foreground pixels
     - ``masks``, ``iou``
     - ``(H, W)``
   * - :math:`L`, :math:`H`, :math:`W`
     - per-pixel binary cross-entropy; image height and width
     - ``loss``
     - scalar

Explanation
-----------

A classifier may throw away *where* things are; a segmenter may not. :footcite:t:`ronneberger2015unet`
solved this with a symmetric encoder-decoder: the encoder is an ordinary convolutional network whose
pooling trades resolution for context (what is this region?), and the decoder upsamples step by step
with transposed convolutions back to full resolution. Upsampling alone would produce blurry
boundaries, because the coarse maps no longer know exactly where an edge was; so at every level the
decoder concatenates the encoder's map of the same size (the *skip connection*, drawn as the
horizontal bars of the "U") and convolves the two together, combining *what* from below with
*where* from the side. Fully convolutional networks :footcite:`long2015fully` added coarse
predictions instead of concatenating features; the U-Net's concatenation lets the decoder learn how
to combine them.

This U-Net has two levels and one convolution per level (the original has four levels and two
convolutions each), enough for 16 by 16 images: noisy backgrounds with a random disc and a random
rectangle drawn by ``make_shapes``. It learns the foreground mask with a per-pixel logistic loss and
is scored by the intersection over union of the predicted and true masks. Trained for a few
seconds with Adam (100 steps of 16 images) it reaches an IoU of about 0.89 on held-out images,
while the best threshold on the noisy pixels one by one gives about 0.54 (the test checks both):

.. plot::

   import jax
   from cookbook.convolution.unet import init, make_shapes, predict, train
   x, t = make_shapes(jax.random.key(0), 512)
   params, _ = train(jax.random.key(1), init(jax.random.key(2)), x, t, steps=100)
   x_te, t_te = make_shapes(jax.random.key(3), 3)
   p = jax.vmap(predict, in_axes=(None, 0))(params, x_te)
   fig, axes = plt.subplots(3, 3, figsize=(5, 5))
   for r in range(3):
       for ax, img, title in zip(axes[r], (x_te[r, ..., 0], t_te[r], p[r]), ("input", "target", "prediction")):
           ax.imshow(img, cmap="gray")
           ax.set_xticks([]); ax.set_yticks([])
           if r == 0:
               ax.set_title(title)
   plt.tight_layout()

.. admonition:: Intuition

   The U-Net works like an artist redrawing a photograph as a clean outline: squint to see the
   overall shapes (the encoder shrinks the picture until only the gist is left), then draw at full
   size while glancing back at the photograph for exactly where each edge runs (the skip
   connections). The squint says *what* to draw; the glance says *where*.

*Numerical traps.* The loss takes logits and uses :math:`\log \sigma(a) = -\operatorname{softplus}(-a)`,
so that confident predictions do not produce :math:`\log 0`. Concatenation needs the encoder and
decoder maps to have exactly the same size, so the image sides must be divisible by
:math:`2^{\text{levels}}` (the original U-Net, without padding, cropped the encoder maps instead).
Images and masks must be floating-point and parameters shaped as ``init`` makes them; each
function raises an error naming the argument otherwise.

Inductive bias
--------------

The U-Net assumes that a pixel's label depends both on local detail (kept by the skips) and on
context at several scales (gathered by the encoder), and that the mapping is the same everywhere in
the image (it is fully convolutional, so it also runs on larger images than it was trained on). It
assumes the output is aligned with the input, pixel for pixel, which suits segmentation and
image-to-image tasks and does not suit outputs that move things around.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.convolution.unet import apply, init, iou, loss, make_shapes
>>> x, mask = make_shapes(jax.random.key(0), 4)
>>> x.shape, mask.shape, mask.dtype
((4, 16, 16, 1), (4, 16, 16), dtype('float32'))
>>> params = init(jax.random.key(1))
>>> apply(params, x[0]).shape
(16, 16)
>>> round(float(iou(mask, mask)), 3), round(float(iou(mask, 1.0 - mask)), 3)
(1.0, 0.0)
>>> bool(loss(params, x, mask) > 0.0)
True
"""

import functools
import math

import jax
import jax.numpy as jnp

from cookbook.convolution.conv2d import conv2d
from cookbook import _checks
from cookbook.convolution.lenet import _check_params_like, adam_step
from cookbook._memo import cached

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"apply": (), "loss": (), "iou": (), "make_shapes": ("n", "size")}


def make_shapes(key, n, *, size=16, noise=0.4):
    """``n`` noisy images (n, size, size, 1) each holding one disc and one rectangle, and their
    foreground masks (n, size, size), 1.0 inside a shape."""
    n, size = _checks.size(n, "n"), _checks.size(size, "size", minimum=8)
    return _make_shapes(key, n, size, noise)


@functools.partial(jax.jit, static_argnums=(1, 2))  # one compilation per (n, size), not one per operation
def _make_shapes(key, n, size, noise):
    k_disc, k_rect, k_noise, k_bg = jax.random.split(key, 4)
    rows, cols = jnp.meshgrid(jnp.arange(size), jnp.arange(size), indexing="ij")  # (size, size)

    def one(k_d, k_r):
        centre = jax.random.uniform(k_d, (2,), minval=3, maxval=size - 3)
        radius = jax.random.uniform(jax.random.fold_in(k_d, 1), (), minval=2, maxval=size / 4)
        disc = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2
        corner = jax.random.randint(k_r, (2,), 0, size - 4)
        extent = jax.random.randint(jax.random.fold_in(k_r, 1), (2,), 3, size // 2)
        rect = ((rows >= corner[0]) & (rows < corner[0] + extent[0])
                & (cols >= corner[1]) & (cols < corner[1] + extent[1]))
        return (disc | rect).astype(jnp.float32)

    masks = jax.vmap(one)(jax.random.split(k_disc, n), jax.random.split(k_rect, n))  # (n, size, size)
    background = jax.random.uniform(k_bg, (n, 1, 1), minval=-0.5, maxval=0.5)  # a random grey level
    images = masks + background + noise * jax.random.normal(k_noise, masks.shape)
    return images[..., None], masks


def _conv_init(key, k, c_in, c_out):
    return {"w": jax.random.normal(key, (k, k, c_in, c_out)) * math.sqrt(2.0 / (k * k * c_in)),
            "b": jnp.zeros(c_out)}


def init(key, *, in_channels=1, widths=(8, 16, 32)):
    """Parameters of a two-level U-Net with the given channel widths per level."""
    _checks.size(in_channels, "in_channels")
    if not (isinstance(widths, tuple) and len(widths) == 3):
        raise ValueError(f"widths must be a tuple of three channel counts, got {widths!r}")
    for w in widths:
        _checks.size(w, "widths[...]")
    return _init(key, in_channels, widths)


@functools.partial(jax.jit, static_argnums=(1, 2))  # one compilation, not one per random draw
def _init(key, in_channels, widths):
    a, b, c = widths
    keys = jax.random.split(key, 8)
    return {
        "enc1": _conv_init(keys[0], 3, in_channels, a), "enc2": _conv_init(keys[1], 3, a, b),
        "mid": _conv_init(keys[2], 3, b, c),
        # Transposed convolutions written as the forward kernels they transpose: (2, 2, out, in).
        "up2": {"w": jax.random.normal(keys[3], (2, 2, b, c)) * math.sqrt(1.0 / c)},
        "dec2": _conv_init(keys[4], 3, 2 * b, b),
        "up1": {"w": jax.random.normal(keys[5], (2, 2, a, b)) * math.sqrt(1.0 / b)},
        "dec1": _conv_init(keys[6], 3, 2 * a, a),
        "head": {"w": jax.random.normal(keys[7], (a, 1)) * math.sqrt(1.0 / a), "b": jnp.zeros(1)},
    }


def _conv_relu(p, x):
    return jax.nn.relu(conv2d(x, p["w"], p["b"]))


def _pool2(x):
    """2 by 2 max pooling with stride 2 as a reshape: the same as ``max_pool(x, 2)``, cheaper to
    differentiate."""
    H, W, C = x.shape
    return x.reshape(H // 2, 2, W // 2, 2, C).max(axis=(1, 3))


def _up2(y, w):
    """A transposed convolution with a 2 by 2 kernel and stride 2, ``conv_transpose(y, w, stride=2)``.

    Kernel size equal to the stride means that the stamps do not overlap, so each input pixel is
    simply expanded into its own 2 by 2 block: a matrix product followed by a reshape.
    """
    H, W, _ = y.shape
    blocks = jnp.einsum("ijo,abco->iajbc", y, w)  # (H, 2, W, 2, C_out)
    return blocks.reshape(2 * H, 2 * W, w.shape[2])


def apply(params, x):
    """Foreground logits (H, W) for one image ``x`` (H, W, C), H and W divisible by 4."""
    x = _checks.float_array(x, "x")
    if x.ndim != 3 or x.shape[0] % 4 or x.shape[1] % 4:
        raise ValueError(f"x must be one image (H, W, C) with H and W divisible by 4, got shape {x.shape}")
    C = params["enc1"]["w"].shape[2]
    if x.shape[-1] != C:
        raise ValueError(f"x must have C = {C} channels (those of params['enc1']), got shape {x.shape}")
    _check_params(params, C)
    e1 = _conv_relu(params["enc1"], x)  # (H, W, 8)
    e2 = _conv_relu(params["enc2"], _pool2(e1))  # (H/2, W/2, 16)
    c = _conv_relu(params["mid"], _pool2(e2))  # (H/4, W/4, 32)
    u2 = _up2(c, params["up2"]["w"])  # (H/2, W/2, 16)
    d2 = _conv_relu(params["dec2"], jnp.concatenate([u2, e2], axis=-1))  # skip: (H/2, W/2, 32) -> 16
    u1 = _up2(d2, params["up1"]["w"])  # (H, W, 8)
    d1 = _conv_relu(params["dec1"], jnp.concatenate([u1, e1], axis=-1))  # skip: (H, W, 16) -> 8
    return (d1 @ params["head"]["w"])[..., 0] + params["head"]["b"][0]  # (H, W)


@functools.lru_cache(maxsize=32)
def _init_shapes(in_channels, widths):
    return jax.eval_shape(lambda k: init(k, in_channels=in_channels, widths=widths), jax.random.key(0))


def _check_params(params, in_channels):
    """Check ``params`` against ``init`` with the widths that its kernels imply."""
    widths = tuple(params[k]["w"].shape[-1] for k in ("enc1", "enc2", "mid"))
    return _check_params_like(params, _init_shapes(in_channels, widths))


def predict(params, x):
    """Predicted foreground mask (H, W) of 0.0 and 1.0."""
    return (apply(params, x) > 0).astype(jnp.float32)


def loss(params, X, masks):
    """Mean per-pixel binary cross-entropy over images ``X`` (N, H, W, C) and masks (N, H, W)."""
    X, masks = _checks.float_array(X, "X"), _checks.float_array(masks, "masks")
    if X.ndim != 4 or masks.shape != X.shape[:3]:
        raise ValueError(f"X must be (N, H, W, C) and masks (N, H, W), got shapes {X.shape} and {masks.shape}")
    if X.shape[3] != params["enc1"]["w"].shape[2]:
        raise ValueError(f"X must have C = {params['enc1']['w'].shape[2]} channels (those of params['enc1']), "
                         f"got shape {X.shape}")
    _check_params(params, X.shape[3])
    return _loss(params, X, masks)


@jax.jit  # one compilation per shape, not one per operation when called eagerly
def _loss(params, X, masks):
    logits = jax.vmap(apply, in_axes=(None, 0))(params, X)  # (N, H, W)
    # -[t log sigma(a) + (1 - t) log(1 - sigma(a))] = softplus(a) - t a, stable for large |a|
    return jnp.mean(jax.nn.softplus(logits) - masks * logits)


def iou(predicted, target):
    """Intersection over union of two binary masks (any shape), pooled over all their pixels."""
    predicted, target = _checks.float_array(predicted, "predicted"), _checks.float_array(target, "target")
    if predicted.shape != target.shape:
        raise ValueError(f"predicted and target must have the same shape, got {predicted.shape} and {target.shape}")
    p, t = predicted > 0.5, target > 0.5
    return jnp.sum(p & t) / jnp.maximum(jnp.sum(p | t), 1)


@cached  # the page's figure and the tests share this run when the book is built (cookbook/_memo.py)
@functools.partial(jax.jit, static_argnames=("steps", "batch_size"))
def train(key, params, X, masks, *, steps, batch_size=16, learning_rate=1e-2):
    """Adam on random minibatches; returns the parameters and the loss of each step."""
    zeros = jax.tree.map(jnp.zeros_like, params)

    def step(carry, key):
        params, opt = carry
        idx = jax.random.choice(key, X.shape[0], (batch_size,), replace=False)
        value, grads = jax.value_and_grad(loss)(params, X[idx], masks[idx])
        params, opt = adam_step(params, grads, opt, learning_rate=learning_rate)
        return (params, opt), value

    opt = (zeros, zeros, jnp.zeros((), jnp.int32))
    (params, _), losses = jax.lax.scan(step, (params, opt), jax.random.split(key, steps))
    return params, losses
