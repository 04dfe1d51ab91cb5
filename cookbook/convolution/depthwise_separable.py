r"""Depthwise separable convolution
===============================

Split a convolution into a spatial filter per channel (depthwise) followed by a 1 by 1 mixing of
channels (pointwise), for nearly the same expressive use at a fraction of the parameters and
arithmetic: the building block to reach for when a network must run on a phone or a budget.

Equation
--------

.. math::

   z_{i,j,c} = \sum_{m=0}^{K-1} \sum_{n=0}^{K-1} \tilde{x}_{s i + m,\; s j + n,\; c}\; v_{m,n,c},
   \qquad
   y_{i,j,o} = \sum_{c=0}^{M-1} z_{i,j,c}\; u_{c,o}

.. math::

   \frac{\text{cost}_{\text{separable}}}{\text{cost}_{\text{standard}}}
   = \frac{H W (K^2 M + M N)}{H W K^2 M N} = \frac{1}{N} + \frac{1}{K^2}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`\tilde{x}`
     - the input image, zero-padded
     - ``x``
     - ``(H_in, W_in, M)``
   * - :math:`v_{m,n,c}`
     - depthwise kernel: one :math:`K \times K` filter per channel :math:`c`
     - ``w_depthwise``
     - ``(K, K, M)``
   * - :math:`z_{i,j,c}`
     - depthwise output: channel :math:`c` filtered on its own
     - ``depthwise_conv2d(x, w_depthwise)``
     - ``(H, W, M)``
   * - :math:`u_{c,o}`
     - pointwise (1 by 1) kernel mixing the channels
     - ``w_pointwise``
     - ``(M, N)``
   * - :math:`y_{i,j,o}`
     - output at row :math:`i`, column :math:`j`, channel :math:`o` (every index from 0)
     - ``separable_conv2d(...)``
     - ``(H, W, N)``
   * - :math:`K`, :math:`m`, :math:`n`, :math:`s`
     - kernel size; offsets in the window; stride
     - ``K``, ``stride``
     - scalars
   * - :math:`M`, :math:`N`
     - input and output channels
     - ``M, N``
     - scalars
   * - :math:`H`, :math:`W`
     - output height and width
     - the first two axes of the output
     - scalars

Explanation
-----------

A standard :math:`K \times K` convolution from :math:`M` to :math:`N` channels does two jobs at once
with one kernel of :math:`K^2 M N` weights: it filters in space and it mixes channels. A depthwise
separable convolution does them one after the other :footcite:`sifre2014rigid`: the *depthwise*
step filters each input channel with its own :math:`K \times K` kernel (:math:`K^2 M` weights, no
mixing), and the *pointwise* step mixes the channels at each pixel with a 1 by 1 convolution
(:math:`M N` weights, no spatial extent). MobileNets :footcite:`howard2017mobilenets` are built
almost entirely from these pairs (with normalisation and ReLU after each). Per output pixel the
multiply-adds fall from :math:`K^2 M N` to :math:`K^2 M + M N`; the ratio is the second equation,
:math:`1/N + 1/K^2`, so with :math:`3 \times 3` kernels and many channels the cost falls by
a factor of about eight (:math:`N = 64`) to nine (:math:`N \to \infty`). ``costs`` counts both; the tests check the counts against the formulas
and against the parameters actually created.

The depthwise step is a *grouped* convolution with as many groups as channels:
:func:`jax.lax.conv_general_dilated` with ``feature_group_count=M`` and a kernel of shape
``(K, K, 1, M)``, in which each group sees one input channel and produces one output channel.
``depthwise_conv2d_loops`` computes it channel by channel with :doc:`conv2d`, as a reference.

.. admonition:: Intuition

   A standard convolution is a cook who seasons and mixes in one gesture. The separable version
   splits the work the way a kitchen does: first each ingredient is prepared on its own (chopped,
   strained: the per-channel spatial filter), then the prepared ingredients are combined in the
   pot in proportions of the recipe's choosing (the 1 by 1 mix). Two cheap, specialised steps
   replace one expensive general one.

*Numerical traps.* The depthwise step alone cannot create new combinations of channels and the
pointwise step alone cannot see neighbours: a separable layer is a *restricted* (rank-limited)
convolution, whose kernel :math:`v_{m,n,c} u_{c,o}` factorises over space and output channels, not
an approximation that improves with training. Depthwise convolutions also do little arithmetic
per byte of memory they read, so their speed-up on real hardware is smaller than the count of
multiply-adds suggests. The arrays must be floating-point and the stride a Python integer; a
wrong shape, dtype or channel count raises an error that names the argument.

Inductive bias
--------------

A separable layer assumes that spatial patterns and cross-channel correlations can be learned
separately: that the useful kernels of a full convolution are (sums of) a spatial filter per channel
followed by a channel mix. That assumption holds well enough in practice that networks built this
way lose a percent or so of accuracy for an eight- or ninefold saving
:footcite:`howard2017mobilenets`, and the saved budget is
usually spent on more channels or layers.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.convolution.depthwise_separable import costs, depthwise_conv2d, init, separable_conv2d
>>> params = init(jax.random.key(0), kernel_size=3, in_channels=32, out_channels=64)
>>> x = jax.random.normal(jax.random.key(1), (16, 16, 32))
>>> separable_conv2d(x, params["depthwise"], params["pointwise"]).shape
(16, 16, 64)
>>> depthwise_conv2d(x, params["depthwise"], stride=2).shape
(8, 8, 32)
>>> c = costs(16, 16, kernel_size=3, in_channels=32, out_channels=64)
>>> c["standard_params"], c["separable_params"]
(18432, 2336)
>>> round(c["separable_mult_adds"] / c["standard_mult_adds"], 4), round(1 / 64 + 1 / 9, 4)
(0.1267, 0.1267)
"""

import math
from functools import partial

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.convolution.conv2d import _geometry, conv2d

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"depthwise_conv2d": ("stride", "padding"), "separable_conv2d": ("stride", "padding")}


def init(key, *, kernel_size, in_channels, out_channels):
    """Depthwise kernel (K, K, M) and pointwise kernel (M, N), He-normal."""
    K = _checks.size(kernel_size, "kernel_size")
    in_channels, out_channels = _checks.size(in_channels, "in_channels"), _checks.size(out_channels, "out_channels")
    return _init(key, K, in_channels, out_channels)


@partial(jax.jit, static_argnums=(1, 2, 3))  # one compiled program per set of sizes
def _init(key, K, in_channels, out_channels):
    k_dw, k_pw = jax.random.split(key)
    return {
        "depthwise": jax.random.normal(k_dw, (K, K, in_channels)) * math.sqrt(2.0 / (K * K)),
        "pointwise": jax.random.normal(k_pw, (in_channels, out_channels)) * math.sqrt(2.0 / in_channels),
    }


def _check(x, w_depthwise):
    """``x`` and ``w_depthwise`` as JAX arrays, checked."""
    x = _checks.float_array(x, "x", ndim=3, what=" (H, W, M): one image; batch with jax.vmap")
    w_depthwise = _checks.float_array(w_depthwise, "w_depthwise")
    if w_depthwise.ndim != 3 or w_depthwise.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"w_depthwise must have shape (K, K, M) with M = {x.shape[-1]} channels of x {x.shape}, "
            f"got shape {w_depthwise.shape}"
        )
    return x, w_depthwise


def depthwise_conv2d_loops(x, w_depthwise, *, stride=1, padding="SAME"):
    """Reference: filter each channel on its own with :func:`conv2d`, then stack."""
    x, w_depthwise = _check(x, w_depthwise)
    return jnp.concatenate(
        [conv2d(x[..., c: c + 1], w_depthwise[:, :, c, None, None], stride=stride, padding=padding)
         for c in range(x.shape[-1])], axis=-1)


def depthwise_conv2d(x, w_depthwise, *, stride=1, padding="SAME"):
    """Each channel of ``x`` (H, W, M) filtered by its own kernel ``w_depthwise[:, :, c]``."""
    x, w_depthwise = _check(x, w_depthwise)
    stride, _, pads, _ = _geometry(x.shape[:2], w_depthwise.shape[:2], stride, padding, 1)
    return _depthwise(x, w_depthwise, stride, pads)


@partial(jax.jit, static_argnums=(2, 3))  # one compiled program per shape, stride and padding
def _depthwise(x, w_depthwise, stride, pads):
    M = x.shape[-1]
    return jax.lax.conv_general_dilated(
        x[None], w_depthwise[:, :, None, :], window_strides=stride, padding=pads,  # kernel (K, K, 1, M)
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=M,  # one group per channel
    )[0]


def pointwise_conv2d(z, w_pointwise):
    """A 1 by 1 convolution: mix the channels of ``z`` (H, W, M) at every pixel with ``w_pointwise`` (M, N)."""
    z = _checks.float_array(z, "z", ndim=3, what=" (H, W, M)")
    w_pointwise = _checks.float_array(w_pointwise, "w_pointwise")
    _check_pointwise(w_pointwise, z.shape[-1])
    return jnp.einsum("hwm,mn->hwn", z, w_pointwise)


def _check_pointwise(w_pointwise, M):
    if w_pointwise.ndim != 2 or w_pointwise.shape[0] != M:
        raise ValueError(f"w_pointwise must have shape (M, N) with M = {M}, got shape {w_pointwise.shape}")


def separable_conv2d(x, w_depthwise, w_pointwise, *, stride=1, padding="SAME"):
    """Depthwise then pointwise convolution of one image ``x`` (H, W, M): shape (H_out, W_out, N)."""
    w_pointwise = _checks.float_array(w_pointwise, "w_pointwise")
    x, w_depthwise = _check(x, w_depthwise)
    stride, _, pads, _ = _geometry(x.shape[:2], w_depthwise.shape[:2], stride, padding, 1)
    _check_pointwise(w_pointwise, x.shape[-1])
    return _separable(x, w_depthwise, w_pointwise, stride, pads)


@partial(jax.jit, static_argnums=(3, 4))  # both convolutions in one compiled program
def _separable(x, w_depthwise, w_pointwise, stride, pads):
    return jnp.einsum("hwm,mn->hwn", _depthwise(x, w_depthwise, stride, pads), w_pointwise)


def costs(height, width, *, kernel_size, in_channels, out_channels):
    """Parameters (without biases) and multiply-adds of a standard and a separable convolution with
    an output of ``height`` by ``width`` pixels."""
    sizes = (height, width, kernel_size, in_channels, out_channels)
    names = ("height", "width", "kernel_size", "in_channels", "out_channels")
    height, width, kernel_size, in_channels, out_channels = (_checks.size(v, n) for v, n in zip(sizes, names))
    K2, M, N, HW = kernel_size**2, in_channels, out_channels, height * width
    return {
        "standard_params": K2 * M * N,
        "separable_params": K2 * M + M * N,
        "standard_mult_adds": HW * K2 * M * N,
        "separable_mult_adds": HW * (K2 * M + M * N),
    }
