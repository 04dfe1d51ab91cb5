r"""NormalFloat4
============

NormalFloat4 (NF4) stores each weight in 4 bits as one of 16 levels placed at quantiles of the
normal distribution, scaled per block of weights by the block's largest magnitude: the data type of
QLoRA, to reach for when normally distributed weights must be held in 4 bits.

Equation
--------

.. math::

   \begin{aligned}
   \ell^{+}_j &= \Phi^{-1}\!\left(\delta + j\,\frac{\tfrac12 - \delta}{8}\right),\ j = 0..8, \qquad
   \ell^{-}_j = -\Phi^{-1}\!\left(\delta + j\,\frac{\tfrac12 - \delta}{7}\right),\ j = 0..7, \\
   L &= \frac{\{\ell^{+}_j\} \cup \{\ell^{-}_j\}}{\Phi^{-1}(\delta)}
        \quad\text{(16 levels, } -1 = L_0 < \dots < L_7 = 0 < \dots < L_{15} = 1\text{)}, \\
   c_i &= \operatorname{argmin}_k \left\lvert \frac{w_i}{m} - L_k \right\rvert, \qquad
   \hat{w}_i = m\, L_{c_i}, \qquad m = \max_{i \in \text{block}} \lvert w_i \rvert
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`\Phi^{-1}`
     - quantile function of the standard normal distribution
     - ``NormalDist().inv_cdf``
     - scalar function
   * - :math:`\delta`
     - the largest probability used, :math:`1 - \tfrac12(\tfrac1{30} + \tfrac1{32})`
     - ``offset``
     - scalar
   * - :math:`\ell^{+}_j`, :math:`\ell^{-}_j`
     - quantiles for the positive and the negative half; both halves hold a 0, kept once
     - ``positive``, ``negative``
     - 9 and 8 values
   * - :math:`j`, :math:`k`
     - index of a quantile, index of a level
     - loop index, last axis of ``distance``
     - scalar
   * - :math:`L`
     - the 16 NF4 levels, ascending
     - ``NF4_LEVELS``
     - ``(16,)``
   * - :math:`w_i`
     - a weight
     - ``w``
     - ``(..., D)``
   * - :math:`m`
     - block absmax, one float per block of ``block_size`` weights
     - ``absmax``
     - ``(..., D / block_size, 1)``
   * - :math:`c_i`
     - 4-bit code of a weight (held in a ``uint8``)
     - ``codes``
     - ``(..., D)``
   * - :math:`\hat{w}_i`
     - weight read back
     - returned by ``dequantize_nf4``
     - ``(..., D)``

Explanation
-----------

The weights of a trained network are close to normally distributed with zero mean. A uniform grid
(:doc:`quantization`) spends as many levels in the sparse tails as near zero, where most weights
lie. :footcite:t:`dettmers2023qlora` build a grid from the distribution instead: each level is a
quantile of the standard normal, so that (before the block's rescaling) each level stands for about
the same share of weights, which is what an optimal data type for equally probable codes does. The
quantiles at probabilities 0 and 1 are infinite, so the outermost probability is pulled in to
:math:`\delta`; the levels are then divided by the largest one so that they run from :math:`-1`
to :math:`1`, and each block of weights is scaled by its own absmax :math:`m` to match.

A grid symmetric about zero with an even number of levels has no level at zero, and zero matters
(padding, pruned weights). NF4 is therefore asymmetric: 9 quantiles for the positive half and 8 for
the negative, each set including the median 0, which is kept once. The result is 16 levels with
an exact 0, seven below it and eight above, ``NF4_LEVELS``; the tests rebuild them with SciPy and
check them against the table the paper publishes.

*Double quantisation.* With blocks of 64 weights, one float32 absmax per block adds
:math:`32/64 = 0.5` bits per weight to the 4. QLoRA quantises those absmaxes again, to 8 bits in
blocks of 256 with one float32 each, which brings the overhead to :math:`8/64 + 32/(64 \cdot 256)
\approx 0.127` bits per weight (not implemented here; ``quantize_absmax`` of :doc:`quantization`
applied to the ``absmax`` array is the idea).

.. admonition:: Intuition

   A shop that sorts its customers into 16 queues by height puts the dividing lines where they
   split the crowd into equal groups, close together around the average height and far apart for
   the rare very tall or very short: every queue then gets about the same traffic.

*Numerical traps.* The levels are computed once, in float64 Python arithmetic, and used in float32.
An all-zero block has :math:`m = 0`; it is divided by 1 instead, every code is that of the exact 0,
and it reads back as zeros, never NaN. Ties between two levels go to the lower one.

*Bad input.* ``w`` must be floating-point with a last axis that is a multiple of ``block_size``,
and finite when concrete (a NaN or infinity raises a ``ValueError``; under :func:`jax.jit` its block
reads back as NaN); ``codes`` must be integers from 0 to 15 when concrete.

Inductive bias
--------------

NF4 assumes that within each block the weights, divided by their absmax, are spread like a normal
sample: many near zero, few large. For such weights it has a lower rounding error than a uniform
4-bit grid at the same storage: on Gaussian weights in blocks of 64 the tests measure a mean squared
error more than a fifth below that of 4-bit absmax. For data far from normal
(activations with heavy outliers, one-sided ReLU outputs) the levels sit in the wrong places.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.efficiency.nf4 import NF4_LEVELS, quantize_nf4, dequantize_nf4
>>> NF4_LEVELS.shape, float(NF4_LEVELS[0]), float(NF4_LEVELS[7]), float(NF4_LEVELS[15])
((16,), -1.0, 0.0, 1.0)
>>> round(float(NF4_LEVELS[8]), 4), round(float(NF4_LEVELS[14]), 4)
(0.0796, 0.723)
>>> w = jax.random.normal(jax.random.key(0), (3, 128))
>>> codes, absmax = quantize_nf4(w, block_size=64)
>>> codes.dtype, codes.shape, absmax.shape
(dtype('uint8'), (3, 128), (3, 2, 1))
>>> w_hat = dequantize_nf4(codes, absmax)
>>> bool(jnp.abs(w - w_hat).max() < 0.2 * jnp.abs(w).max())
True
>>> 32 / 64, round(8 / 64 + 32 / (64 * 256), 3)  # bits of scale per weight: plain, double-quantised
(0.5, 0.127)
"""

import functools
from statistics import NormalDist

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"quantize_nf4": ("block_size",), "dequantize_nf4": ()}


def normal_float_levels(offset=1 - (1 / 30 + 1 / 32) / 2):
    """The 16 NF4 levels (a tuple of Python floats), ascending from -1 to 1 with an exact 0.

    Quantiles of N(0, 1) at 9 evenly spaced probabilities from ``offset`` down to 1/2 (the positive
    half) and at 8 from ``offset`` to 1/2 (the negative half, negated), the shared 0 kept once,
    divided by the largest.
    """
    quantile = NormalDist().inv_cdf
    positive = [quantile(offset + j * (0.5 - offset) / 8) for j in range(9)]  # ends at quantile(1/2) = 0
    negative = [-quantile(offset + j * (0.5 - offset) / 7) for j in range(7)]  # its 0 (j = 7) left out
    top = positive[0]
    return tuple(sorted(v / top for v in positive + negative))


#: The 16 NormalFloat4 levels of QLoRA, ascending from -1 to 1, ``NF4_LEVELS[7] == 0.0`` exactly: a
#: read-only NumPy float64 array (16,), so that it has a shape and converts to any float dtype.
NF4_LEVELS = np.array(normal_float_levels(), np.float64)
NF4_LEVELS.flags.writeable = False


def quantize_nf4(w, *, block_size=64):
    """``(codes, absmax)``: the 4-bit code (``uint8``, 0..15) of every weight, and one absmax per
    block of ``block_size`` consecutive weights along the last axis, shape ``(..., D // block_size, 1)``."""
    w = _checks.float_array(w, "w", min_ndim=1, what=" (..., D)")
    block_size = _checks.size(block_size, "block_size")
    if w.shape[-1] % block_size:
        raise ValueError(f"w must have a last axis that is a multiple of block_size = {block_size}, "
                         f"got shape {tuple(w.shape)}")
    if _checks.is_concrete(w) and w.size and not bool(np.isfinite(np.asarray(w, np.float32)).all()):
        raise ValueError("w holds NaN or infinity; expected finite values")
    return _quantize(w, block_size)


# The checks run in Python; the work is one compiled program per shape, dtype and block size, rather
# than a dozen eager operations that each compile for every shape.
@functools.partial(jax.jit, static_argnums=1)
def _quantize(w, block_size):
    w = w.astype(jnp.promote_types(w.dtype, jnp.float32))
    blocks = w.reshape(*w.shape[:-1], w.shape[-1] // block_size, block_size)  # (..., D / bs, bs)
    absmax = jnp.max(jnp.abs(blocks), axis=-1, keepdims=True)  # (..., D / bs, 1)
    normalised = blocks / jnp.where(absmax > 0, absmax, 1)
    levels = jnp.asarray(NF4_LEVELS, w.dtype).reshape((1,) * normalised.ndim + (16,))
    distance = jnp.abs(normalised[..., None] - levels)  # (..., D / bs, bs, 16)
    codes = jnp.argmin(distance, axis=-1)  # the first, lower level on a tie
    return codes.reshape(w.shape).astype(jnp.uint8), absmax


def dequantize_nf4(codes, absmax):
    """The weights that ``codes`` (..., D) stand for: ``absmax`` of each block times its level."""
    codes = _checks.int_array(codes, "codes", min_ndim=1, what=" (..., D)")
    absmax = _checks.float_array(absmax, "absmax", min_ndim=2, what=" (..., D // block_size, 1)")
    n_blocks = absmax.shape[-2]
    if (absmax.shape[-1] != 1 or absmax.shape[:-2] != codes.shape[:-1] or n_blocks == 0
            or codes.shape[-1] % n_blocks):
        raise ValueError(f"absmax must have shape (..., n_blocks, 1) with the leading axes of codes "
                         f"{tuple(codes.shape)} and n_blocks dividing D, got shape {tuple(absmax.shape)}")
    _checks.check_range(codes, "codes", 0, 16)
    return _dequantize(codes, absmax)


@jax.jit
def _dequantize(codes, absmax):
    n_blocks = absmax.shape[-2]
    levels = jnp.asarray(NF4_LEVELS, absmax.dtype)[codes.astype(jnp.int32)]  # (..., D)
    blocks = levels.reshape(*codes.shape[:-1], n_blocks, codes.shape[-1] // n_blocks) * absmax
    return blocks.reshape(codes.shape)
