r"""Quantisation
============

Quantisation stores each weight or activation as a small integer and one shared floating-point
scale, cutting memory four-fold (8 bits instead of 32) or more at a bounded rounding error: the first
thing to reach for when a trained model does not fit or is too slow to move through memory.

Equation
--------

.. math::

   \begin{aligned}
   \text{absmax:}\quad & s = \frac{\max_{i \in S} \lvert x_i \rvert}{2^{b-1} - 1}, \quad
   q_i = \operatorname{round}\!\left(\frac{x_i}{s}\right), \quad
   \hat{x}_i = s\, q_i, \\
   \text{zero-point:}\quad & s = \frac{\max_{i \in S} x_i - \min_{i \in S} x_i}{2^{b} - 1}, \quad
   z = \operatorname{round}\!\left(-\frac{\min_{i \in S} x_i}{s}\right), \\
   & q_i = \operatorname{clip}\!\left(\operatorname{round}\!\left(\frac{x_i}{s}\right) + z,\ 0,\ 2^{b} - 1\right), \quad
   \hat{x}_i = s\, (q_i - z), \\
   \text{both:}\quad & \lvert x_i - \hat{x}_i \rvert \le \frac{s}{2}
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_i`
     - a real value (a weight, an activation)
     - ``x``
     - any
   * - :math:`S`
     - the group sharing one scale: the whole tensor, or a slice along the kept axes
     - the axes named by ``axis`` (all when it is ``None``)
     - set
   * - :math:`i`
     - an entry of the group
     - index into ``x``
     - scalar
   * - :math:`b`
     - bits per integer
     - ``bits``
     - scalar
   * - :math:`s`
     - scale, the step between neighbouring levels
     - ``scale``
     - ``x``'s shape with the reduced axes of size 1
   * - :math:`q_i`
     - the stored integer: ``int8`` (absmax) or ``uint8`` (zero-point) for up to 8 bits
     - ``q``
     - shape of ``x``
   * - :math:`z`
     - zero point, the integer that stands for the real 0
     - ``zero``
     - shape of ``scale``
   * - :math:`\hat{x}_i`
     - the value read back
     - returned by ``dequantize`` and ``dequantize_zeropoint``
     - shape of ``x``

Explanation
-----------

A tensor of real numbers is replaced by integers on an evenly spaced grid. *Absmax* (symmetric)
quantisation puts the grid's ends at :math:`\pm\max\lvert x\rvert`, so that with :math:`b = 8`
the integers run from :math:`-127` to :math:`127` and the real 0 is the integer 0; reading a value
back is one multiplication. Rounding to the nearest level is off by at most half a step,
:math:`s/2`, everywhere: that is the whole error, and it is set by the largest value in the group.
An all-zero group has :math:`s = 0`; there ``quantize_absmax`` returns :math:`q = 0` (it divides by 1
instead of 0), so reading back gives exact zeros and never a NaN.

*Zero-point* (asymmetric) quantisation :footcite:p:`jacob2018quantization` fits the grid to
:math:`[\min x, \max x]` instead, using all :math:`2^b` levels of an unsigned integer and shifting
them by the zero point :math:`z`, the integer that stands for 0 (the range is widened to hold 0,
so that zero padding and ReLU zeros are exact). For one-sided data such as ReLU outputs, absmax
wastes the negative half of its levels; at 4 bits the zero-point grid has 15 steps over the range
where absmax has 7, and the tests measure its mean squared error at less than a third of absmax's.

**Granularity and outliers.** Since the step is set by the largest magnitude in the group, one
large value coarsens the grid for everyone that shares its scale. Weights of trained networks
often have a few output channels, and activations of large transformers a few feature dimensions
:footcite:p:`dettmers2022llmint8`, far larger than the rest. One scale per channel (``axis``
naming the axes to reduce over, so ``axis=0`` of a ``(D_in, D_out)`` weight gives one scale per
output) confines the damage to the outlier's own channel: in the tests, a weight with one channel
a hundred times larger than the others, quantised to 8 bits, has a root-mean-square error on the
other channels more than 50 times smaller per channel than per tensor, and the same error on the
outlier's channel either way. LLM.int8() goes further and keeps the outlier dimensions in 16-bit floating point.

.. admonition:: Intuition

   A ruler with 255 marks must be long enough for the longest thing it measures. Measure a
   building and a pencil with the same ruler and the pencil gets at most a mark or two; give each
   shelf of objects its own ruler, sized to its largest item, and the pencils are measured finely
   again.

*Numerical traps.* The scale and the division are computed in at least float32 (a ``bfloat16``
input is widened first, since its 8-bit mantissa would round :math:`x/s` by more than half a step),
and ``scale`` is returned in that type. :math:`x/s` can land a hair above :math:`2^{b-1}-1`;
``q`` is clipped to the grid only to absorb that rounding. Ties round to even, as ``jnp.round`` does.

*Bad input.* ``x`` must be floating-point and, when concrete, finite (a NaN or infinity raises a
``ValueError``: it would set the scale of its whole group; under :func:`jax.jit` the check cannot
run and the scale of that group comes out NaN or infinite); ``bits`` is an integer from 2 to 8;
``axis`` is ``None``, an axis or a tuple of distinct axes of ``x``; ``dequantize`` needs an integer
``q`` and a float ``scale`` whose axes are those of ``q`` or of size 1.

Inductive bias
--------------

Quantisation assumes that a network's function does not depend on differences smaller than half a
step, and that within each group the values are of a similar size, so that one scale serves them
all. Trained weights mostly satisfy both at 8 bits; at 4 bits and below, and where outliers matter,
finer groups, non-uniform levels (such as the NormalFloat4 levels of QLoRA for normally
distributed weights) or training
with the rounding in the loop are needed.

Example
-------

Eight bits per tensor and per output channel, and the error bound:

>>> import jax, jax.numpy as jnp
>>> from cookbook.efficiency.quantization import quantize_absmax, dequantize
>>> W = jax.random.normal(jax.random.key(0), (7, 5))
>>> q, scale = quantize_absmax(W)
>>> q.dtype, scale.shape, int(jnp.abs(q).max())
(dtype('int8'), (1, 1), 127)
>>> bool(jnp.all(jnp.abs(W - dequantize(q, scale)) <= scale / 2 * (1 + 1e-6)))
True
>>> q, scale = quantize_absmax(W, bits=4, axis=0)  # one scale per output channel
>>> scale.shape, int(jnp.abs(q).max())
((1, 5), 7)
>>> W.nbytes // q.nbytes  # int8 storage; 4-bit values would pack two to a byte
4
>>> quantize_absmax(jnp.zeros(3))  # an all-zero group: scale 0, read back as zeros
(Array([0, 0, 0], dtype=int8), Array([0.], dtype=float32))

Zero-point quantisation of non-negative values uses all 16 levels of 4 bits:

>>> from cookbook.efficiency.quantization import quantize_zeropoint, dequantize_zeropoint
>>> h = jax.nn.relu(W)
>>> q, scale, zero = quantize_zeropoint(h, bits=4)
>>> int(q.min()), int(q.max()), int(zero[0, 0])
(0, 15, 0)
>>> bool(jnp.all(jnp.abs(h - dequantize_zeropoint(q, scale, zero)) <= scale / 2 * (1 + 1e-6)))
True

Implementation notes
--------------------

The integers here are held in ``int8`` or ``uint8`` arrays one per byte; real 4-bit kernels pack two
values per byte and unpack them inside the matrix product. Per-channel absmax for weights with
per-tensor or per-token scales for activations is the usual 8-bit recipe; group-wise scales (one
per block of 32 to 128 consecutive weights) are the usual 4-bit one. Quantisation-aware training
(not on this page) keeps float weights and rounds them in the forward pass, passing the gradient
straight through the rounding, so that the network learns weights that survive it.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "quantize_absmax": ("bits", "axis"),
    "dequantize": (),
    "quantize_zeropoint": ("bits", "axis"),
    "dequantize_zeropoint": (),
}


def _finite(x):
    """``x`` after checking, when it is concrete, that it holds no NaN or infinity."""
    if _checks.is_concrete(x) and x.size and not bool(np.isfinite(np.asarray(x, np.float32)).all()):
        raise ValueError("x holds NaN or infinity; expected finite values (one would set the scale of its group)")
    return x


def _axes(axis, ndim):
    """``axis`` (None, an int or a tuple of ints) as a tuple of non-negative axes of an array of ``ndim`` axes."""
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    for a in items:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"axis must be None, an int or a tuple of ints, got {axis!r}")
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for x with {ndim} axes (expected -{ndim} to {ndim - 1})")
    axes = tuple(sorted(int(a) % ndim for a in items))
    if len(set(axes)) != len(axes):
        raise ValueError(f"axis must name distinct axes, got {axis!r}")
    return axes


def _prepare(x, bits, axis):
    x = _finite(_checks.float_array(x, "x"))
    bits = _checks.size(bits, "bits", minimum=2)
    if bits > 8:
        raise ValueError(f"bits must be from 2 to 8 (the integers are stored as 8-bit), got {bits}")
    axes = _axes(axis, x.ndim)
    return x, bits, axes


def _safe(scale):
    """The scale with zeros replaced by 1, to divide by (an all-zero group then gives q = 0)."""
    return jnp.where(scale > 0, scale, 1)


def quantize_absmax(x, *, bits=8, axis=None):
    """``(q, scale)``: ``scale = max|x| / (2**(bits-1) - 1)`` over ``axis`` (all of ``x`` when None,
    reduced axes kept with size 1) and ``q = round(x / scale)`` as ``int8``.

    An all-zero group gets ``scale = 0`` and ``q = 0``. ``scale`` is at least float32.
    """
    return _absmax(*_prepare(x, bits, axis))


# The checks above run in Python; the arithmetic runs as one compiled program per shape, bits and axes
# (operation by operation, each new shape would compile every operation on its own).
@functools.partial(jax.jit, static_argnums=(1, 2))
def _absmax(x, bits, axes):
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    q_max = 2 ** (bits - 1) - 1
    scale = jnp.max(jnp.abs(x), axis=axes, keepdims=True) / q_max  # reduced axes of size 1
    q = jnp.clip(jnp.round(x / _safe(scale)), -q_max, q_max)  # the clip only absorbs rounding of x / s
    return q.astype(jnp.int8), scale


def _integers_and_scale(q, scale, name_q="q"):
    q = _checks.int_array(q, name_q)
    scale = _checks.float_array(scale, "scale")
    if scale.ndim != 0 and (scale.ndim != q.ndim or any(s not in (1, n) for s, n in zip(scale.shape, q.shape))):
        raise ValueError(f"scale must have the axes of q {tuple(q.shape)}, each of that size or 1, "
                         f"got shape {tuple(scale.shape)}")
    return q, scale


def dequantize(q, scale):
    """``q * scale``: the values that absmax integers ``q`` stand for, in the dtype of ``scale``."""
    return _dequantize(*_integers_and_scale(q, scale))


@jax.jit
def _dequantize(q, scale):
    return q.astype(scale.dtype) * scale


def quantize_zeropoint(x, *, bits=8, axis=None):
    """``(q, scale, zero)`` of asymmetric quantisation to ``uint8`` integers in ``[0, 2**bits - 1]``.

    The range ``[min(x, 0), max(x, 0)]`` of each group is cut into ``2**bits - 1`` steps;
    ``zero`` (int32, the shape of ``scale``) is the integer standing for the real 0.
    """
    return _zeropoint(*_prepare(x, bits, axis))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _zeropoint(x, bits, axes):
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    levels = 2 ** bits - 1
    low = jnp.minimum(jnp.min(x, axis=axes, keepdims=True), 0)
    high = jnp.maximum(jnp.max(x, axis=axes, keepdims=True), 0)
    scale = (high - low) / levels
    zero = jnp.round(-low / _safe(scale))
    q = jnp.clip(jnp.round(x / _safe(scale)) + zero, 0, levels)
    return q.astype(jnp.uint8), scale, zero.astype(jnp.int32)


def dequantize_zeropoint(q, scale, zero):
    """``(q - zero) * scale``, in the dtype of ``scale``."""
    q, scale = _integers_and_scale(q, scale)
    zero = _checks.int_array(zero, "zero")
    _checks.same_shape(zero, "zero", scale.shape, expected_from="the shape of scale")
    return _dequantize_zeropoint(q, scale, zero)


@jax.jit
def _dequantize_zeropoint(q, scale, zero):
    return (q.astype(jnp.int32) - zero).astype(scale.dtype) * scale
