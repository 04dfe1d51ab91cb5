r"""Transposed convolution
======================

Run a strided convolution backwards: every input pixel stamps a copy of the kernel, scaled by its
value, onto a larger output grid; reach for it to upsample learned feature maps in decoders,
segmentation networks and image generators.

Equation
--------

.. math::

   x_{u,v,c} = \sum_{i,j} \sum_{o=0}^{C_{\text{out}}-1} y_{i,j,o}\;
   w_{u + p - s i,\; v + p - s j,\; c,\; o}, \qquad
   H = (H' - 1)\, s + K_H - 2 p

.. math::

   \langle \operatorname{conv}_w(z),\, y \rangle = \langle z,\, \operatorname{conv}^{\top}_w(y) \rangle
   \quad\Longrightarrow\quad
   \operatorname{conv}^{\top}_w(y) = \left(\frac{\partial \operatorname{conv}_w(z)}{\partial z}\right)^{\!\top} y

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`y_{i,j,o}`
     - the small input map, at row :math:`i`, column :math:`j`, channel :math:`o` (indices from 0)
     - ``y``
     - ``(H', W', C_out)``
   * - :math:`x_{u,v,c}`
     - the upsampled output, at row :math:`u`, column :math:`v`, channel :math:`c`
     - ``conv_transpose(y, w, ...)``
     - ``(H, W, C_in)``
   * - :math:`w`
     - the kernel *of the forward convolution* that this layer transposes (taps outside the
       kernel count as zero)
     - ``w``
     - ``(KH, KW, C_in, C_out)``
   * - :math:`C_{\text{out}}`
     - channels of :math:`y` (the forward convolution's outputs)
     - ``w.shape[3]``
     - scalar
   * - :math:`s`, :math:`p`
     - stride and padding of the forward convolution
     - ``stride``, ``padding``
     - scalars
   * - :math:`H'`, :math:`H`, :math:`K_H`
     - input height, output height, kernel height (widths likewise)
     - ``H_in``, the output's first axis, ``KH``
     - scalars
   * - :math:`z`
     - any input of the forward convolution, of the output's shape
     - (not formed here; the tests draw one for :func:`jax.vjp`)
     - ``(H, W, C_in)``

Explanation
-----------

A convolution with stride :math:`s` is a linear map from a large image to a small one, so it is a
matrix (a huge, sparse one). Its *transpose* maps small to large, and that is the layer: each input
pixel :math:`y_{ij}` adds :math:`y_{ij} \cdot w` to the window that pixel :math:`(i, j)` of the
forward convolution read, and the windows that overlap are summed. ``conv_transpose_scatter`` does
exactly that with loops. The second equation says the same thing in the language of gradients: the
transpose of a linear map is what its vector-Jacobian product computes, so a transposed convolution
*is* the backward pass of a convolution with respect to its input, and every framework computes one
with the other's code. The size formula inverts the forward one (for :math:`s > 1` several input
sizes give the same output size; this one is the smallest). The name *deconvolution*, used for it
:footcite:`zeiler2010deconvolutional`, is a misnomer: it does not invert a convolution, it only has
the inverse's shapes.

The fast form (``conv_transpose``) is an ordinary convolution on a *dilated* input: insert
:math:`s - 1` zeros between the pixels of :math:`y`, pad by :math:`K - 1 - p`, and convolve with
the kernel flipped in space and with its input and output channels swapped. That is
:func:`jax.lax.conv_general_dilated` with ``lhs_dilation``, and also
:func:`jax.lax.conv_transpose` with ``transpose_kernel=True``; the test checks all three against
:func:`jax.vjp` of :doc:`conv2d`. Fully convolutional segmentation networks
:footcite:`long2015fully` and :doc:`unet` upsample with it.

**The checkerboard artefact.** When the kernel size is not divisible by the stride, the stamped
kernels overlap unevenly: with :math:`K = 3, s = 2`, output rows :math:`2, 4, \dots` (counting
from 0) are covered by two stamps and the rows between them by one, so even a constant input comes
out striped, and in two dimensions chequered with counts 1, 2 and 4
:footcite:`odena2016deconvolution`. The network can learn weights that cancel the pattern, but it
starts with it and seldom removes it fully. A kernel divisible by the stride (:math:`K = 4, s = 2`)
covers the interior evenly (though learned weights can still re-create the pattern), and the common
cure is to upsample by nearest-neighbour resizing and then apply an ordinary convolution.
``overlap_count`` draws the number of stamps covering each output pixel:

.. plot::

   from cookbook.convolution.transposed_conv import overlap_count
   fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.4))
   for ax, k in zip(axes, (3, 4)):
       counts = overlap_count(6, k, stride=2)
       im = ax.imshow(counts, cmap="viridis", vmin=0, vmax=4)
       ax.set_title(f"kernel {k}, stride 2")
       ax.set_xlabel("output column")
   axes[0].set_ylabel("output row")
   fig.colorbar(im, ax=axes, label="kernels overlapping the pixel", shrink=0.8)

.. admonition:: Intuition

   Think of potato printing: each pixel of the small map dips the same carved stamp in ink, as
   much ink as its value, and presses it onto a larger sheet, each press :math:`s` pixels further
   along. Where presses overlap the ink adds up, which is both how the layer blends neighbours and
   where the chequered pattern comes from when the stamp's width is not a multiple of the step.

Bad input (an integer map, a float stride, channels that do not match the kernel) raises a
``ValueError`` or ``TypeError`` naming the argument.

Inductive bias
--------------

A transposed convolution inherits the convolution's assumptions, locality and weight sharing, for
the way up: every coarse pixel is expanded into a fine patch by the same learned stamp, wherever it
sits. It assumes that fine detail can be predicted from a small coarse neighbourhood; it has no
notion of smoothness, which is why uneven overlap shows through as a periodic pattern unless the
kernel and stride are chosen to avoid it.

Example
-------

One pixel stamps the kernel; a constant image shows the uneven overlap:

>>> import jax.numpy as jnp
>>> from cookbook.convolution.transposed_conv import conv_transpose, overlap_count
>>> w = jnp.arange(1.0, 10.0).reshape(3, 3, 1, 1)
>>> y = jnp.zeros((2, 2, 1)).at[1, 0, 0].set(1.0)
>>> conv_transpose(y, w, stride=2)[..., 0]
Array([[0., 0., 0., 0., 0.],
       [0., 0., 0., 0., 0.],
       [1., 2., 3., 0., 0.],
       [4., 5., 6., 0., 0.],
       [7., 8., 9., 0., 0.]], dtype=float32)
>>> overlap_count(3, 3, stride=2)
Array([[1., 1., 2., 1., 2., 1., 1.],
       [1., 1., 2., 1., 2., 1., 1.],
       [2., 2., 4., 2., 4., 2., 2.],
       [1., 1., 2., 1., 2., 1., 1.],
       [2., 2., 4., 2., 4., 2., 2.],
       [1., 1., 2., 1., 2., 1., 1.],
       [1., 1., 2., 1., 2., 1., 1.]], dtype=float32)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"conv_transpose": ("stride", "padding"), "overlap_count": ("input_size", "kernel_size", "stride")}


def _check(y, w, stride, padding):
    """``y`` and ``w`` as JAX arrays; clear errors for every bad argument."""
    y = _checks.float_array(y, "y", ndim=3, what=" (H', W', C_out): one map; batch with jax.vmap")
    w = _checks.float_array(w, "w", ndim=4, what=" (KH, KW, C_in, C_out)")
    if y.shape[-1] != w.shape[3]:
        raise ValueError(
            f"y has {y.shape[-1]} channels (shape {y.shape}) but the kernel w (KH, KW, C_in, C_out) = "
            f"{w.shape} transposes a convolution with C_out = {w.shape[3]}"
        )
    stride = _checks.size(stride, "stride")
    if not (isinstance(padding, int) and 0 <= 2 * padding < min(w.shape[:2]) + (min(y.shape[:2]) - 1) * stride):
        raise ValueError(f"padding must be a non-negative int that leaves a non-empty output, got {padding!r}")
    return y, w


def output_size(input_size, kernel_size, *, stride=1, padding=0):
    """Output length of a transposed convolution: ``(input_size - 1) * stride + kernel_size - 2 * padding``."""
    return (input_size - 1) * stride + kernel_size - 2 * padding


def conv_transpose_scatter(y, w, *, stride=1, padding=0):
    """The definition: each input pixel adds ``y[i, j] * w`` to its window (NumPy loops, a reference)."""
    y, w = _check(y, w, stride, padding)
    H_in, W_in, _ = y.shape
    KH, KW, C_in, _ = w.shape
    y64, w64 = np.asarray(y, np.float64), np.asarray(w, np.float64)
    x = np.zeros(((H_in - 1) * stride + KH, (W_in - 1) * stride + KW, C_in))
    for i in range(H_in):
        for j in range(W_in):
            x[stride * i: stride * i + KH, stride * j: stride * j + KW] += w64 @ y64[i, j]  # (KH, KW, C_in)
    x = x[padding: x.shape[0] - padding, padding: x.shape[1] - padding]  # the forward padding, removed
    return jnp.asarray(x, y.dtype)


def conv_transpose(y, w, *, stride=1, padding=0):
    """Transposed convolution of ``y`` (H', W', C_out) with the forward kernel ``w`` (KH, KW, C_in, C_out).

    Equals the gradient of ``conv2d(x, w, stride=stride, padding=padding)`` with respect to ``x``.
    """
    y, w = _check(y, w, stride, padding)
    return _conv_transpose(y, w, stride, padding)


# The checks run in Python; each computation below is one compiled program (called eagerly, each of
# its operations would compile on its own for every new shape).
@functools.partial(jax.jit, static_argnums=(2, 3))
def _conv_transpose(y, w, stride, padding):
    KH, KW = w.shape[:2]
    w_t = jnp.flip(w, axis=(0, 1)).transpose(0, 1, 3, 2)  # (KH, KW, C_out, C_in): flipped, channels swapped
    return jax.lax.conv_general_dilated(
        y[None], w_t, window_strides=(1, 1),
        padding=((KH - 1 - padding, KH - 1 - padding), (KW - 1 - padding, KW - 1 - padding)),
        lhs_dilation=(stride, stride),  # s - 1 zeros between input pixels
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )[0]  # (H, W, C_in)


def overlap_count(input_size, kernel_size, *, stride):
    """How many stamped kernels cover each output pixel, for a square input of ``input_size`` pixels."""
    input_size, kernel_size = _checks.size(input_size, "input_size"), _checks.size(kernel_size, "kernel_size")
    return _overlap_count(input_size, kernel_size, _checks.size(stride, "stride"))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _overlap_count(input_size, kernel_size, stride):
    ones = jnp.ones((input_size, input_size, 1))
    return _conv_transpose(ones, jnp.ones((kernel_size, kernel_size, 1, 1)), stride, 0)[..., 0]
