r"""Receptive field
===============

The patch of the input that one output pixel of a convolutional stack can see, computed from the
kernel sizes, strides and dilations of its layers: the number to check when designing a network, to
make sure an output can see a whole object.

Equation
--------

.. math::

   r_0 = 1, \qquad
   r_l = r_{l-1} + (k_l - 1)\, d_l \prod_{i=1}^{l-1} s_i, \qquad l = 1, \dots, L

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`r_l`
     - receptive field (in input pixels, along one axis) of a unit after layer :math:`l`
     - ``receptive_field(layers)`` for :math:`l = L`
     - scalar
   * - :math:`k_l`, :math:`s_l`, :math:`d_l`
     - kernel size, stride and dilation of layer :math:`l`
     - ``k``, ``s``, ``d`` of entry :math:`l - 1` of ``layers``
     - scalars
   * - :math:`s_i`, :math:`i`
     - strides of the earlier layers; their index
     - ``jump``
     - scalars
   * - :math:`L`
     - number of layers
     - ``len(layers)``
     - scalar

Explanation
-----------

A layer with kernel :math:`k_l` widens what one unit sees by :math:`k_l - 1` of *its own input's*
pixels, on top of the field :math:`r_{l-1}` of a single one of them. How many input pixels apart two
neighbouring units of layer :math:`l - 1` sit is the product of the strides before it, the *jump*
:math:`\prod_{i<l} s_i`; a dilation :math:`d_l` spreads the kernel's taps that many units apart. So
each layer adds :math:`(k_l - 1) d_l` jumps, which is the recurrence above
:footcite:`dumoulin2016guide`. Three :math:`3 \times 3` convolutions see :math:`7 \times 7` pixels,
the same as one :math:`7 \times 7` convolution with fewer weights; a stride early in the network
multiplies the growth of every later layer; and dilations of :math:`1, 2, 4, \dots` grow the field
exponentially without losing resolution.

The recurrence is checked by the derivative that defines it: ``gradient_support`` builds the stack
with all-positive random kernels (so that no contributions cancel) and no padding, differentiates
one output pixel with respect to the input, and measures the extent of the pixels with a non-zero
gradient, which equals :math:`r_L` exactly. The gradient is not flat over that square, though: most
of it sits near the centre, because central input pixels reach the output through many more paths.
This *effective* receptive field :footcite:`luo2016understanding` is roughly Gaussian and grows only
like the square root of the depth, so a network may need a theoretical field well beyond the object
size:

.. plot::

   from cookbook.convolution.receptive_field import input_gradient, receptive_field
   layers = ((3, 1, 1),) * 6
   g = input_gradient(layers, size=21)
   r = receptive_field(layers)
   plt.figure(figsize=(4.2, 3.4))
   plt.imshow(g / g.max(), cmap="magma")
   c = (21 - 1) / 2
   plt.gca().add_patch(plt.Rectangle((c - r / 2, c - r / 2), r, r, fill=False, ec="cyan", lw=1.5))
   plt.colorbar(label="gradient of the centre output (scaled)")
   plt.title(f"six 3x3 layers: field {r} x {r} (cyan)")
   plt.xlabel("input column")
   plt.ylabel("input row")
   plt.tight_layout()

.. admonition:: Intuition

   Picture a chain of people passing on rumours: each listens to three neighbours, who each
   listened to three of theirs. After a few rounds someone has, in principle, heard from a wide
   stretch of the village (the receptive field), but most of what reached them came from the
   middle of that stretch, through many overlapping paths, and very little from its edges (the
   effective field).

*Numerical traps.* With "SAME" padding the formula still holds in the interior; near the border part
of the field falls on padding. ReLUs that are off, or max pooling, cut the gradient to parts of the
field for a particular input, which is why the check uses linear layers with positive weights. Kernels, strides, dilations and
the input size are positive Python integers, checked before any work.

Inductive bias
--------------

The receptive field is the hard limit of a convolutional network's locality assumption: an output
cannot depend on anything outside it, so a network whose field is smaller than the objects or the
context it must judge cannot learn the task at any data size. Growing the field by depth, stride,
pooling or dilation is how convolutional networks trade their locality for context, and the
effective field says that even within the limit, nearby pixels count for much more.

Example
-------

>>> from cookbook.convolution.receptive_field import gradient_support, receptive_field
>>> receptive_field(((3, 1, 1),) * 3)  # three 3x3 convolutions
7
>>> layers = ((7, 2, 1), (3, 2, 1), (3, 1, 1), (3, 1, 2))  # strides and a dilation
>>> receptive_field(layers)
35
>>> gradient_support(layers, size=45)
(35, 35)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks
from cookbook.convolution.conv2d import conv2d

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"input_gradient": ("layers", "size")}


def _check_layers(layers):
    for layer in layers:
        if len(layer) != 3 or not all(isinstance(v, int) and v >= 1 for v in layer):
            raise ValueError(f"each layer must be a (kernel, stride, dilation) tuple of positive ints, got {layer!r}")


def receptive_field(layers):
    """Receptive field (pixels along one axis) of a stack of ``(kernel, stride, dilation)`` layers."""
    _check_layers(layers)
    r, jump = 1, 1
    for k, s, d in layers:
        r += (k - 1) * d * jump
        jump *= s
    return r


@functools.partial(jax.jit, static_argnames=("layers", "size"))
def input_gradient(layers, size, key=None):
    """|d output / d input| of the centre output pixel of a linear stack of single-channel
    convolutions (no padding, positive random kernels) on a ``size`` by ``size`` input."""
    _check_layers(layers)
    size = _checks.size(size, "size")
    key = jax.random.key(0) if key is None else key
    kernels = [jax.random.uniform(k_l, (k, k, 1, 1), minval=0.5, maxval=1.5)
               for k_l, (k, _, _) in zip(jax.random.split(key, len(layers)), layers)]

    def centre_output(x):
        h = x
        for w, (_, s, d) in zip(kernels, layers):
            h = conv2d(h, w, stride=s, dilation=d, padding="VALID")
        return h[h.shape[0] // 2, h.shape[1] // 2, 0]

    return jnp.abs(jax.grad(centre_output)(jnp.zeros((size, size, 1)))[..., 0])  # (size, size)


def gradient_support(layers, size):
    """Height and width of the smallest box holding every input pixel with a non-zero gradient."""
    g = np.asarray(input_gradient(tuple(layers), size))  # NumPy from here: nothing more to compile
    rows, cols = np.nonzero(g > 0)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
