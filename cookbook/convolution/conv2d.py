r"""Two-dimensional convolution
===========================

Slide a small bank of filters over an image and take, at every position, the dot product of each
filter with the window beneath it: the layer to reach for whenever the input is a grid (images,
spectrograms, board games) whose meaning does not depend on where a pattern sits.

Equation
--------

.. math::

   y_{i,j,o} = b_o + \sum_{m=0}^{K_H-1} \sum_{n=0}^{K_W-1} \sum_{c=0}^{C_{\text{in}}-1}
   \tilde{x}_{s i + d m,\; s j + d n,\; c}\; w_{m,n,c,o}

.. math::

   H_{\text{out}} = \left\lfloor
   \frac{H + p_{\text{lo}} + p_{\text{hi}} - d (K_H - 1) - 1}{s} \right\rfloor + 1

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`\tilde{x}`
     - the input image after zero padding
     - ``x`` padded inside ``conv2d_loops``, ``im2col``
     - ``(H + p_lo + p_hi, W + ..., C_in)``
   * - :math:`y_{i,j,o}`
     - output (feature map) at row :math:`i`, column :math:`j`, channel :math:`o`, every index
       counted from 0 as in the code
     - ``conv2d(x, w)``
     - ``(H_out, W_out, C_out)``
   * - :math:`w_{m,n,c,o}`
     - kernel: offset :math:`(m, n)` in the window, input channel :math:`c`, output channel
       :math:`o`
     - ``w``
     - ``(KH, KW, C_in, C_out)``
   * - :math:`b_o`
     - bias of output channel :math:`o`
     - ``b``
     - ``(C_out,)``
   * - :math:`K_H`, :math:`K_W`
     - kernel height and width
     - ``KH, KW``
     - scalars
   * - :math:`C_{\text{in}}`
     - input channels
     - ``C_in``
     - scalar
   * - :math:`s`
     - stride: how far the window moves between outputs
     - ``stride``
     - scalar (or a pair)
   * - :math:`d`
     - dilation: the gap between the taps of the kernel
     - ``dilation``
     - scalar (or a pair)
   * - :math:`H`, :math:`H_{\text{out}}`
     - input and output height (the width follows the same formula)
     - ``x.shape[0]``, ``H_out``
     - scalars
   * - :math:`p_{\text{lo}}`, :math:`p_{\text{hi}}`
     - zeros added before and after the rows
     - ``padding``
     - scalars

Explanation
-----------

Each output pixel is a weighted sum over a :math:`K_H \times K_W` window of the input and over all
of its channels, plus a bias; a layer has :math:`C_{\text{out}}` such filters, one per output
channel. The *same* weights are used at every position, which is the whole idea: a filter that
detects a vertical edge detects it everywhere. The layer goes back to the neocognitron
:footcite:`fukushima1980neocognitron` and, trained by backpropagation, to
:footcite:t:`lecun1989backpropagation`; :footcite:t:`dumoulin2016guide` draw every case of the
arithmetic below.

**Cross-correlation, not convolution.** Mathematicians flip the kernel
(:math:`\sum_m x_{i-m} w_m`); deep learning libraries do not (:math:`\sum_m x_{i+m} w_m`), and the
equation above follows them. Since the kernel is learned, the flip makes no difference to what a
network can represent; it matters only when copying weights between conventions
(:func:`scipy.signal.convolve2d` flips, :func:`scipy.signal.correlate2d` does not).

**Padding, stride, dilation.** Without padding (``"VALID"``) the window must fit inside the image,
so a layer with stride 1 shrinks the image by the span of its kernel less one, :math:`d(K - 1)`
(:math:`K - 1` without dilation; a :math:`3 \times 3` kernel with :math:`d = 2` takes 4 rows off).
``"SAME"`` adds :math:`\max((H_{\text{out}} - 1)s + d(K-1) + 1 - H, 0)` zeros, the odd one at the
end, so that :math:`H_{\text{out}} = \lceil H / s \rceil`; an explicit integer :math:`p` adds
:math:`p` on both sides. The stride :math:`s` skips positions (a cheap downsampling), and the
dilation :math:`d` spreads the taps of the kernel apart, so a :math:`3 \times 3` kernel with
:math:`d = 2` covers a :math:`5 \times 5` window with nine weights. The second equation counts the
window positions that fit: the dilated kernel spans :math:`d(K - 1) + 1` pixels, and every
:math:`s`-th start is kept.

.. admonition:: Intuition

   A convolution is a stencil slid across a page: at every position you note how well the ink
   under it matches the stencil's pattern. The same stencil is used everywhere, so it finds its
   pattern wherever it sits, and a layer is a drawer of such stencils, one per output channel. The
   original inspiration is the visual cortex, whose simple cells each answer to an edge in a small
   patch of the visual field :footcite:`hubel1962receptive`; Fukushima's neocognitron copied that
   arrangement, and weight sharing is the stencil.

**Three ways to compute it.**

1. ``conv2d_loops`` is the definition, a loop over every output pixel. It is the reference that
   the others are tested against, and far too slow for anything but tiny images.
2. ``conv2d_im2col`` gathers every window into a row of a matrix (*im2col*) of shape
   :math:`(H_{\text{out}} W_{\text{out}}, K_H K_W C_{\text{in}})` and multiplies it by the kernel
   flattened to :math:`(K_H K_W C_{\text{in}}, C_{\text{out}})`: one large matrix product, which is
   how early GPU libraries ran convolutions :footcite:`chellapilla2006high`. With stride 1 and
   ``"SAME"`` padding the patch matrix holds :math:`K_H K_W` times as many numbers as the input.
3. ``conv2d`` calls :func:`jax.lax.conv_general_dilated`, which lets the compiler choose the
   algorithm (direct, im2col-like or Winograd) for the hardware. Use this one.

*Numerical traps.* An even kernel has no centre, so ``"SAME"`` padding is lopsided (one more zero
at the end), and the output is shifted by half a pixel relative to the input; stacked even kernels
drift the image. With a stride, the last rows of the input may never be read under ``"VALID"``
padding (the floor in the formula).

*Bad input.* The image and the kernel must be floating-point arrays of three and four axes, and the
kernel's third axis must equal the image's channels. A kernel in PyTorch's layout
:math:`(C_{\text{out}}, C_{\text{in}}, K_H, K_W)` fails that check or, when its shape happens to read
both ways (such as ``(5, 3, 3, 3)`` for a 3-channel image), is refused as ambiguous. Strides,
dilations and the padding are Python integers (a ``TypeError`` for ``1.0``).

Inductive bias
--------------

A convolution assumes two things about its input: *locality* (a pixel's meaning depends mostly on
its neighbours, so a small window suffices) and *stationarity* (the same pattern means the same thing
wherever it appears, so the weights can be shared). Together they make the layer *translation
equivariant*: shifting the input shifts the output by the same amount (exactly, with circular
padding; up to the borders with zero padding, and only for shifts that are multiples of the stride).
The price of these assumptions is that a convolution alone cannot tell *where* something is, and
cannot relate distant pixels without many layers; the reward is the parameter count. A
:math:`3 \times 3` convolution from 3 to 16 channels has :math:`3 \cdot 3 \cdot 3 \cdot 16 + 16 = 448`
parameters whatever the image size, while a dense layer from a :math:`32 \times 32 \times 3` image
to a :math:`32 \times 32 \times 16` one has over fifty million.

Example
-------

A vertical-edge detector on a tiny image, computed three ways:

>>> import jax, jax.numpy as jnp
>>> from cookbook.convolution.conv2d import (
...     conv2d, conv2d_im2col, conv2d_loops, conv_output_size, init)
>>> x = jnp.zeros((4, 5, 1)).at[:, 2:, 0].set(1.0)  # dark left, bright right
>>> w = jnp.array([[-1.0, 1.0]]).reshape(1, 2, 1, 1)  # right minus left
>>> conv2d(x, w, padding="VALID")[..., 0]
Array([[0., 1., 0., 0.],
       [0., 1., 0., 0.],
       [0., 1., 0., 0.],
       [0., 1., 0., 0.]], dtype=float32)
>>> bool(jnp.allclose(conv2d_im2col(x, w, padding="VALID"), conv2d_loops(x, w, padding="VALID")))
True

Output sizes for stride 2 and dilation 2, and a layer applied to a batch with :func:`jax.vmap`:

>>> conv_output_size(11, 3, stride=2, padding="SAME"), conv_output_size(11, 3, dilation=2, padding="VALID")
(6, 7)
>>> params = init(jax.random.key(0), kernel_size=(3, 3), in_channels=3, out_channels=8)
>>> images = jnp.ones((2, 7, 5, 3))
>>> y = jax.vmap(lambda im: conv2d(im, params["w"], params["b"], stride=2))(images)
>>> y.shape
(2, 4, 3, 8)
>>> conv2d(images[0], params["w"], params["b"], stride=2, dilation=2).shape
(4, 3, 8)

Implementation notes
--------------------

On the book's benchmark machine (two CPU cores) the im2col form is about two to four times slower
than the direct call (2.4, 3.7 and 1.9 times at the three recorded sizes; :doc:`/docs/performance`),
and its temporary memory grows with the patch matrix, where the compiled direct convolution needs
none: the copy of every window into a row is the price of turning a convolution into one matrix
product. Flax's ``flax.linen.Conv`` stores its kernel as ``(KH, KW, C_in, C_out)`` like this page;
PyTorch's ``torch.nn.Conv2d`` stores ``(C_out, C_in, KH, KW)`` and works on ``(C, H, W)`` images, so
weights moved from it are transposed with ``w.transpose(2, 3, 1, 0)``.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "conv2d": ("stride", "padding", "dilation"),
    "conv2d_im2col": ("stride", "padding", "dilation"),
}


def _pair(value, name):
    """An int or a pair of ints, as a pair of positive ints (a TypeError for a float such as 1.0)."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return tuple(_checks.size(v, name) for v in pair)


def _pads(size, kernel, stride, dilation, padding):
    """The (lo, hi) zero padding of one spatial axis for "SAME", "VALID" or an int."""
    span = dilation * (kernel - 1) + 1
    if padding == "VALID":
        return (0, 0)
    if padding == "SAME":
        out = -(-size // stride)  # ceil(size / stride)
        total = max((out - 1) * stride + span - size, 0)
        return (total // 2, total - total // 2)
    if isinstance(padding, int) and not isinstance(padding, bool) and padding >= 0:
        return (padding, padding)
    raise ValueError(f'padding must be "SAME", "VALID" or a non-negative int, got {padding!r}')


def conv_output_size(size, kernel, *, stride=1, padding="SAME", dilation=1):
    """Output length along one axis: ``floor((size + lo + hi - dilation (kernel - 1) - 1) / stride) + 1``."""
    size, kernel = _checks.size(size, "size"), _checks.size(kernel, "kernel")
    stride, dilation = _checks.size(stride, "stride"), _checks.size(dilation, "dilation")
    lo, hi = _pads(size, kernel, stride, dilation, padding)
    return (size + lo + hi - dilation * (kernel - 1) - 1) // stride + 1


def _check(x, w, b, stride, padding, dilation):
    """The arrays as JAX arrays, and the geometry; clear errors for every bad argument."""
    x = _checks.float_array(x, "x", ndim=3, what=" (H, W, C_in): one image; batch with jax.vmap")
    w = _checks.float_array(w, "w", ndim=4, what=" (KH, KW, C_in, C_out)")
    C_in = x.shape[-1]
    if w.shape[2] != C_in:
        hint = (" (it looks like PyTorch's (C_out, C_in, KH, KW) layout: pass w.transpose(2, 3, 1, 0))"
                if w.shape[1] == C_in else "")
        raise ValueError(f"the channels must agree: x has C_in = {C_in} (shape {x.shape}) but "
                         f"w (KH, KW, C_in, C_out) = {w.shape} expects C_in = {w.shape[2]}{hint}")
    if w.shape[1] == w.shape[2] == w.shape[3] == C_in > 1 and w.shape[0] != C_in:
        # (C_out, C_in, K, K) with K = C_in reads as a K_H x C_in kernel from C_in to C_in channels.
        raise ValueError(f"w of shape {w.shape} looks like PyTorch's (C_out, C_in, KH, KW) layout; read as "
                         f"(KH, KW, C_in, C_out) it would be a {w.shape[0]} x {w.shape[1]} kernel from {C_in} "
                         f"to {C_in} channels, refused as ambiguous: pass w.transpose(2, 3, 1, 0)")
    if b is not None:
        b = _checks.same_shape(_checks.float_array(b, "b"), "b", (w.shape[3],), expected_from="(C_out,)")
    return x, w, b, _geometry(x.shape[:2], w.shape[:2], stride, padding, dilation)


def _geometry(image_hw, kernel_hw, stride, padding, dilation):
    """Strides, dilations, (lo, hi) pads and output size of both spatial axes."""
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    pads = tuple(_pads(image_hw[k], kernel_hw[k], stride[k], dilation[k], padding) for k in range(2))
    out = tuple(
        (image_hw[k] + sum(pads[k]) - dilation[k] * (kernel_hw[k] - 1) - 1) // stride[k] + 1 for k in range(2)
    )
    if min(out) < 1:
        raise ValueError(f"the kernel {tuple(kernel_hw)} (dilation {dilation}) does not fit in the padded image {tuple(image_hw)}")
    return stride, dilation, pads, out


def init(key, *, kernel_size, in_channels, out_channels):
    """He-normal kernel (KH, KW, C_in, C_out) and zero bias, for a layer followed by a ReLU."""
    KH, KW = _pair(kernel_size, "kernel_size")
    in_channels, out_channels = _checks.size(in_channels, "in_channels"), _checks.size(out_channels, "out_channels")
    fan_in = KH * KW * in_channels
    w = jax.random.normal(key, (KH, KW, in_channels, out_channels)) * math.sqrt(2.0 / fan_in)
    return {"w": w, "b": jnp.zeros((out_channels,))}


def conv2d_loops(x, w, b=None, *, stride=1, padding="SAME", dilation=1):
    """The definition, one output pixel at a time (NumPy, float64): the reference, for tiny images."""
    x, w, b, ((sh, sw), (dh, dw), pads, (H_out, W_out)) = _check(x, w, b, stride, padding, dilation)
    x_pad = np.pad(np.asarray(x, np.float64), (pads[0], pads[1], (0, 0)))
    w64 = np.asarray(w, np.float64)
    KH, KW, _, C_out = w.shape
    y = np.zeros((H_out, W_out, C_out))
    for i in range(H_out):
        for j in range(W_out):
            for m in range(KH):
                for n in range(KW):
                    y[i, j] += x_pad[sh * i + dh * m, sw * j + dw * n] @ w64[m, n]  # (C_in,) @ (C_in, C_out)
    if b is not None:
        y += np.asarray(b, np.float64)[None, None, :]
    return jnp.asarray(y.astype(x.dtype))  # cast in NumPy: no program compiled per shape


def im2col(x, kernel_size, *, stride=1, padding="SAME", dilation=1):
    """Every window of ``x`` (H, W, C) as a row: shape (H_out, W_out, KH * KW * C), ordered (m, n, c)."""
    KH, KW = _pair(kernel_size, "kernel_size")
    x = _checks.float_array(x, "x", ndim=3, what=" (H, W, C): one image")
    return _im2col(x, (KH, KW), *_geometry(x.shape[:2], (KH, KW), stride, padding, dilation))


# Each public function checks its input in Python, then hands it as it comes to one compiled core
# (the geometry static): a program per shape, rather than a few eager operations that each compile.
@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _im2col(x, kernel_hw, stride, dilation, pads, out_hw):
    (KH, KW), (sh, sw), (dh, dw), (H_out, W_out) = kernel_hw, stride, dilation, out_hw
    x_pad = jnp.pad(x, (pads[0], pads[1], (0, 0)))
    rows = sh * np.arange(H_out)[:, None] + dh * np.arange(KH)[None, :]  # (H_out, KH), static indices
    cols = sw * np.arange(W_out)[:, None] + dw * np.arange(KW)[None, :]  # (W_out, KW)
    flat = rows[:, None, :, None] * x_pad.shape[1] + cols[None, :, None, :]  # (H_out, W_out, KH, KW)
    patches = jnp.take(x_pad.reshape(-1, x.shape[-1]), flat.reshape(-1), axis=0)  # (H_out W_out KH KW, C)
    return patches.reshape(H_out, W_out, -1)


def conv2d_im2col(x, w, b=None, *, stride=1, padding="SAME", dilation=1):
    """Convolution as im2col followed by one matrix product."""
    x, w, b, geometry = _check(x, w, b, stride, padding, dilation)
    return _conv2d_im2col(x, w, b, *geometry)


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6))
def _conv2d_im2col(x, w, b, stride, dilation, pads, out_hw):
    KH, KW, C_in, C_out = w.shape
    cols = _im2col(x, (KH, KW), stride, dilation, pads, out_hw)  # (H_out, W_out, KH KW C_in)
    y = cols @ w.reshape(KH * KW * C_in, C_out)  # (H_out, W_out, C_out)
    return y if b is None else y + b[None, None, :]


def conv2d(x, w, b=None, *, stride=1, padding="SAME", dilation=1):
    """Convolution (cross-correlation) of one image ``x`` (H, W, C_in) with ``w`` (KH, KW, C_in, C_out).

    ``padding`` is "SAME", "VALID" or an int; ``stride`` and ``dilation`` an int or a pair.
    """
    x, w, b, (stride, dilation, pads, _) = _check(x, w, b, stride, padding, dilation)
    return _conv2d(x, w, b, stride, dilation, pads)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _conv2d(x, w, b, stride, dilation, pads):
    y = jax.lax.conv_general_dilated(
        x[None], w, window_strides=stride, padding=pads, rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )[0]  # (H_out, W_out, C_out)
    return y if b is None else y + b[None, None, :]
