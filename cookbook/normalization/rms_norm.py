r"""RMS normalisation
=================

Divide each example's feature vector by its root mean square and apply a learned scale, without
subtracting the mean: a cheaper layer normalisation, the usual choice in large Transformer
language models.

Equation
--------

.. math::

   \operatorname{RMS}(x) = \sqrt{\frac{1}{D} \sum_{i=1}^{D} x_i^2 + \epsilon}, \qquad
   y_i = \gamma_i \, \frac{x_i}{\operatorname{RMS}(x)}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_i`
     - feature :math:`i` of one example
     - ``x``
     - ``(..., D)``
   * - :math:`y_i`
     - normalised output
     - the return value
     - same as ``x``
   * - :math:`i`, :math:`D`
     - index of a feature; number of features
     - the last axis of ``x``
     - scalar
   * - :math:`\gamma_i`
     - learned scale (there is no shift)
     - ``scale``
     - ``(D,)``
   * - :math:`\epsilon`
     - small constant that keeps the division finite
     - ``eps``
     - scalar

Explanation
-----------

Zhang and Sennrich asked which half of :doc:`layer_norm` does the work: the re-centring
(subtracting the mean) or the re-scaling (dividing by the spread). They found that re-scaling alone
trains as well on machine translation and other tasks, and dropping the mean saves a reduction
and an elementwise pass, which cut running time by 7% to 64% in their models :footcite:`zhang2019root`. RMS normalisation
therefore divides by the root mean square of the features, the length of the vector divided by
:math:`\sqrt{D}`, and keeps only a learned gain. The output has mean square 1 (before
:math:`\gamma`), not mean 0: the vector is projected onto the sphere of radius :math:`\sqrt{D}`
and its direction is left alone. Like layer normalisation it pools nothing across examples, so it
behaves the same in training and evaluation.

.. admonition:: Intuition

   RMS normalisation is the loudness levelling of a music player: every track is played back at the
   same average power, whatever level it was recorded at. Unlike layer normalisation it leaves a
   constant hum (the mean) in place and only turns the volume knob, which is all that the
   experiments showed to be needed.

The output is invariant to multiplying the input by a positive number, as layer normalisation's
is, but not to adding a constant to every feature: RMS normalisation keeps the mean direction that
layer normalisation throws away. A model that needs the features centred must learn to produce
centred features itself.

**Numerical traps.** The mean of squares is accumulated in float32 for float16 or bfloat16 inputs:
squaring doubles the exponent, so :math:`x_i^2` overflows float16 (largest value 65504) as soon as
:math:`|x_i| \ge 256`, and a float16 sum of many squares overflows sooner still. :math:`\epsilon` sits
inside the square root, so a zero vector maps to zero instead of to a division by zero.

Inductive bias
--------------

Like layer normalisation, RMS normalisation assumes that the overall scale of an example's feature
vector carries no information and that all features are commensurable enough to share one
statistic. Unlike it, it assumes the mean of the features *is* information worth keeping, and that
the network has no particular need for centred inputs; the success of the layer in large language
models suggests that assumption costs little there.

Example
-------

>>> import jax.numpy as jnp
>>> from cookbook.normalization.rms_norm import rms_norm
>>> x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
>>> rms_norm(x, jnp.ones(2)).round(3)  # the RMS of (3, 4) is sqrt(12.5)
Array([[0.849, 1.131],
       [0.   , 0.   ]], dtype=float32)
>>> rms_norm(100.0 * x, jnp.array([1.0, 2.0])).round(3)
Array([[0.849, 2.263],
       [0.   , 0.   ]], dtype=float32)
"""

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"rms_norm": ()}


def rms_norm(x, scale, eps=1e-6):
    """Divide ``x`` of shape (..., D) by its root mean square over the last axis; ``scale`` is (D,).

    The mean of squares is accumulated in at least float32; the result has the dtype of ``x``.
    """
    x = _checks.float_array(x, "x", min_ndim=1, what=" (..., D)")
    scale = _checks.float_array(scale, "scale")
    _checks.positive(eps, "eps", allow_zero=True)
    D = x.shape[-1]
    if scale.shape != (D,):
        raise ValueError(f"scale must have shape ({D},) to match the last axis of x {x.shape}, "
                         f"got shape {scale.shape}")
    if isinstance(eps, jax.core.Tracer):
        return _rms_norm_traced(x, scale, eps)
    return _rms_norm_jit(x, scale, float(eps))


# rms_norm checks its input in Python, then runs one compiled core, so that a repeated call with
# the same shapes (the examples', the tests', the jit and bad-input checks') reuses one program
# instead of compiling each small operation alone. A number eps is a constant of the core's program,
# so the core takes the function's array inputs as they come (and a jax.jit around the function
# compiles nothing more); a traced eps runs in a second core that traces it.
def _rms_norm(x, scale, eps):
    D = x.shape[-1]
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    mean_square = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)  # (..., 1)
    y = x32 * jax.lax.rsqrt(mean_square + eps) * scale.reshape((1,) * (x.ndim - 1) + (D,))
    return y.astype(x.dtype)


_rms_norm_jit = jax.jit(_rms_norm, static_argnums=2)
_rms_norm_traced = jax.jit(_rms_norm)
