r"""Pooling
=======

Summarise each small window of a feature map by its maximum or its mean, shrinking the map and
making it less sensitive to where exactly a feature fired; reach for it between convolutions to
downsample, and for a global average at the end of a network to get one vector per image.

Equation
--------

.. math::

   y^{\max}_{i,j,c} = \max_{0 \le m, n < k} x_{s i + m,\; s j + n,\; c}, \qquad
   y^{\text{avg}}_{i,j,c} = \frac{1}{\lvert A_{ij} \rvert}
   \sum_{(u, v) \in A_{ij}} x_{u, v, c}, \qquad
   g_c = \frac{1}{H W} \sum_{u=0}^{H-1} \sum_{v=0}^{W-1} x_{u,v,c}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_{u,v,c}`
     - input feature map at row :math:`u`, column :math:`v`, channel :math:`c` (indices from 0)
     - ``x``
     - ``(H, W, C)``
   * - :math:`y^{\max}_{i,j,c}`, :math:`y^{\text{avg}}_{i,j,c}`
     - max- and average-pooled output at row :math:`i`, column :math:`j`
     - ``max_pool(x, window)``, ``avg_pool(x, window)``
     - ``(H_out, W_out, C)``
   * - :math:`g_c`
     - global average of channel :math:`c`
     - ``global_avg_pool(x)``
     - ``(C,)``
   * - :math:`k`, :math:`m`, :math:`n`
     - window size; offsets inside the window
     - ``window``
     - scalars
   * - :math:`s`
     - stride (by default the window size: windows that tile the map)
     - ``stride``
     - scalar
   * - :math:`A_{ij}`
     - the input positions of window :math:`(i, j)` that lie inside the image (padding excluded)
     - counted by ``avg_pool``
     - a set
   * - :math:`H`, :math:`W`
     - height and width of the input
     - ``x.shape[0]``, ``x.shape[1]``
     - scalars

Explanation
-----------

Pooling has no parameters: it replaces each :math:`k \times k` window by one number, independently
per channel. With stride :math:`s = k` the windows tile the map and the output is :math:`k` times
smaller in each direction, which cuts the cost of every later layer and widens what each later
output sees (see :doc:`receptive_field`). Padding and the output size follow the same rules as in
:doc:`conv2d`. Max pooling asks *did the feature fire anywhere in this window?*; average pooling
asks *how much did it fire on average?* :footcite:`scherer2010evaluation`. Global average pooling
:footcite:`lin2014network` averages the whole map to one number per channel, so a network can end
with a small linear classifier that works for any image size.

**Approximate translation invariance.** If the input moves by one pixel, the maximum of a window
often stays the same, because the winning pixel is still inside the window. For a random input and
a shift of one pixel along the width, the old and new windows share :math:`k - 1` of their
:math:`k + 1` columns, and the pooled value is unchanged exactly when the largest of those
:math:`k + 1` columns' values lies in a shared one: a fraction :math:`(k-1)/(k+1)` of the outputs,
one third for :math:`2 \times 2` pooling, which ``shift_unchanged_fraction`` measures per channel. A global
average under a circular shift is exactly invariant. So pooling buys only *partial* invariance,
more for larger windows, and the sampling it does can make a network's output jump under shifts
of one pixel :footcite:`zhang2019making`.

.. plot::

   from cookbook.convolution.pooling import shift_unchanged_fraction
   import jax
   x = jax.random.normal(jax.random.key(0), (60, 60, 8))
   ks = [1, 2, 3, 4, 5, 6]
   measured = [float(shift_unchanged_fraction(x, k).mean()) for k in ks]
   plt.figure(figsize=(5, 3.2))
   plt.plot(ks, measured, "o", label="measured, random input")
   kk = np.linspace(1, 6, 50)
   plt.plot(kk, (kk - 1) / (kk + 1), "-", label="(k - 1) / (k + 1)")
   plt.axhline(1.0, color="gray", ls="--", label="global average pool")
   plt.xlabel("max-pool window k (stride k)")
   plt.ylabel("outputs unchanged by a 1-pixel shift")
   plt.legend(fontsize=8)
   plt.tight_layout()

.. admonition:: Intuition

   Max pooling is a smoke detector per floor of a building: the report says *some* room on this
   floor has smoke, not which one, and it does not change when the smoke drifts to the next room.
   Average pooling is the floor's mean temperature. The idea goes back to the complex cells of the
   visual cortex, which answer to an edge anywhere within a small region
   :footcite:`hubel1962receptive`, and to the neocognitron's C-cells that copied them.

*Numerical traps.* Max pooling pads with :math:`-\infty`, never with zero (a zero would win over
negative activations). Average pooling at a padded border should divide by the number of real
pixels, :math:`\lvert A_{ij} \rvert`, not by :math:`k^2`, or the border is darkened; ``avg_pool``
counts them by pooling a map of ones. The gradient of a max flows only to the winning pixel.
The maps must be floating-point (an integer map would pool its truncated values); windows and
strides are Python integers.

Inductive bias
--------------

Pooling assumes that *whether* a feature is present in a region matters more than exactly *where*
(small shifts and deformations should not change the answer), an assumption that suits
classification and is wrong for tasks that need precise positions, such as segmentation (which is
why :doc:`unet` copies the unpooled maps across). Max pooling further assumes that features are
sparse detections, average pooling that they are evidence to be accumulated.

Example
-------

>>> import jax.numpy as jnp
>>> from cookbook.convolution.pooling import avg_pool, global_avg_pool, max_pool
>>> x = jnp.arange(16.0).reshape(4, 4, 1)
>>> max_pool(x, 2)[..., 0]
Array([[ 5.,  7.],
       [13., 15.]], dtype=float32)
>>> avg_pool(x, 2)[..., 0]
Array([[ 2.5,  4.5],
       [10.5, 12.5]], dtype=float32)
>>> avg_pool(x, 3, stride=1, padding="SAME")[0, 0, 0]  # (0 + 1 + 4 + 5) / 4 real pixels
Array(2.5, dtype=float32)
>>> global_avg_pool(x)
Array([7.5], dtype=float32)

The fraction of 2 by 2 max-pool outputs that survive a one-pixel shift of a random input, near 1/3:

>>> import jax
>>> from cookbook.convolution.pooling import shift_unchanged_fraction
>>> noise = jax.random.normal(jax.random.key(0), (40, 40, 4))
>>> round(float(shift_unchanged_fraction(noise, 2).mean()), 2)
0.34
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.convolution.conv2d import _geometry, _pair

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "max_pool": ("window", "stride", "padding"),
    "avg_pool": ("window", "stride", "padding"),
    "global_avg_pool": (),
    "shift_unchanged_fraction": ("window", "shift"),
}


def _feature_map(x):
    return _checks.float_array(x, "x", ndim=3, what=" (H, W, C): one feature map; batch with jax.vmap")


def _window_args(x, window, stride, padding):
    window = _pair(window, "window")
    stride = window if stride is None else stride
    stride, _, pads, _ = _geometry(x.shape[:2], window, stride, padding, 1)
    return (*window, 1), (*stride, 1), (*pads, (0, 0))


def max_pool(x, window, *, stride=None, padding="VALID"):
    """Maximum over each ``window`` of ``x`` (H, W, C); ``stride`` defaults to the window."""
    x = _feature_map(x)
    return _max_pool(x, *_window_args(x, window, stride, padding))


# The public functions check their input in Python, then run a compiled core (the window's
# dimensions, strides and padding static): the page's examples, the tests and the bad-input checks
# share one program per shape instead of dispatching each operation eagerly.
@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _max_pool(x, dims, strides, pads):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, strides, pads)  # pads with -inf


def avg_pool(x, window, *, stride=None, padding="VALID"):
    """Mean over each ``window`` of ``x`` (H, W, C), counting only pixels inside the image."""
    x = _feature_map(x)
    return _avg_pool(x, *_window_args(x, window, stride, padding))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _avg_pool(x, dims, strides, pads):
    sums = jax.lax.reduce_window(x.astype(jnp.float32), 0.0, jax.lax.add, dims, strides, pads)
    counts = jax.lax.reduce_window(jnp.ones(x.shape[:2] + (1,)), 0.0, jax.lax.add, dims, strides, pads)
    return (sums / counts).astype(x.dtype)


def global_avg_pool(x):
    """Mean of each channel of ``x`` (H, W, C) over all positions: shape (C,)."""
    return _global_avg_pool(_feature_map(x))


@jax.jit
def _global_avg_pool(x):
    return jnp.mean(x.astype(jnp.float32), axis=(0, 1)).astype(x.dtype)


def shift_unchanged_fraction(x, window, *, shift=1):
    """Fraction of ``max_pool(x, window)`` outputs left exactly unchanged when ``x`` is rolled
    ``shift`` pixels along its width (circularly, so that no border effects enter), per channel: (C,)."""
    x, shift = _feature_map(x), _checks.size(shift, "shift")
    return _shift_unchanged_fraction(x, _window_args(x, window, None, "VALID"), shift)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _shift_unchanged_fraction(x, window_args, shift):
    y = _max_pool(x, *window_args)
    y_shifted = _max_pool(jnp.roll(x, shift, axis=1), *window_args)
    return jnp.mean(y == y_shifted, axis=(0, 1))  # (C,)
