r"""Label smoothing
===============

Train a classifier against targets that give the true class :math:`1 - \alpha + \alpha/K` and every
class :math:`\alpha/K`, instead of a hard one-hot vector, so that it stops pushing its logits
towards infinity; reach for it when a classifier trained with cross-entropy is over-confident.

Equation
--------

.. math::

   q_k = (1 - \alpha)\, y_k + \frac{\alpha}{K}, \qquad
   \ell(z) = -\sum_{k=1}^{K} q_k \log \operatorname{softmax}(z)_k

   z_c - z_j \;\to\; \log \frac{1 - \alpha + \alpha / K}{\alpha / K}
   \quad \text{at the minimum, for every } j \ne c

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`z`
     - logits of one example (any leading batch axes are kept)
     - ``logits``
     - ``(..., K)``
   * - :math:`y_k`
     - one-hot target: 1 for the true class, 0 elsewhere
     - ``labels``
     - ``(..., K)``
   * - :math:`q_k`
     - smoothed target
     - ``smooth_labels(labels, alpha)``
     - ``(..., K)``
   * - :math:`\alpha`
     - smoothing strength, in :math:`[0, 1]`
     - ``alpha``
     - scalar
   * - :math:`K`, :math:`k`
     - number of classes; index of a class
     - ``K = logits.shape[-1]``
     - scalar
   * - :math:`c`, :math:`j`
     - the true class; any other class
     - (argmax of ``labels``)
     - scalar
   * - :math:`\ell`
     - cross-entropy against the smoothed target
     - ``smoothed_cross_entropy``
     - ``(...)``

Explanation
-----------

Smoothing mixes the one-hot target with the uniform distribution over the :math:`K` classes: the
true class keeps :math:`1 - \alpha + \alpha/K` of the probability and every other class gets
:math:`\alpha/K`. Because cross-entropy is linear in the target, the loss is also
:math:`(1-\alpha)` times the usual cross-entropy plus :math:`\alpha` times the cross-entropy against
the uniform distribution, a penalty on predictions that stray far from uniform. It was introduced
as "label-smoothing regularization" for the Inception-v3 image classifier, with
:math:`\alpha = 0.1` :footcite:`szegedy2016rethinking`, and is now standard in image classification
and in machine translation.

**What it does to the logits.** The gradient of the loss with respect to the logits is
:math:`\operatorname{softmax}(z) - q`, so the minimum is where the predicted distribution equals
:math:`q`. With a hard target (:math:`\alpha = 0`) that is unreachable: the predicted probability of
the true class only approaches 1 as the gap between its logit and the others grows without bound,
so training keeps inflating the logits (and the weights behind them) long after every example is
classified correctly. With :math:`\alpha > 0` the minimum exists and has a finite gap,
:math:`\log\bigl((1 - \alpha + \alpha/K)/(\alpha/K)\bigr)` (about 4.5 for :math:`\alpha = 0.1` and
:math:`K = 10`, 6.8 for :math:`K = 100`): the network is rewarded for a confident but not certain answer.
:footcite:t:`muller2019when` show the consequences: predictions become better calibrated, and the
penultimate-layer representations of each class gather into tight, equally spaced clusters, because
every wrong class must sit at the same distance below the true one. That same erasure of how much
an example resembles the other classes is why a smoothed teacher makes a worse teacher for
knowledge distillation.

.. plot::

   import jax.numpy as jnp
   from cookbook.regularization.label_smoothing import optimal_logit_gap, smoothed_cross_entropy
   K = 10
   gaps = jnp.linspace(0.0, 15.0, 301)
   logits = gaps[:, None] * (jnp.arange(K) == 0)[None, :]  # true class 0 leads by the gap
   labels = jnp.broadcast_to((jnp.arange(K) == 0).astype(jnp.float32), (301, K))
   fig, ax = plt.subplots(figsize=(6.5, 3.8))
   for alpha in [0.0, 0.05, 0.1, 0.2]:
       line, = ax.plot(gaps, smoothed_cross_entropy(logits, labels, alpha), label=f"$\\alpha$ = {alpha}")
       if alpha > 0:
           g = optimal_logit_gap(alpha, K)
           ax.plot(g, smoothed_cross_entropy(g * (jnp.arange(K) == 0), labels[0], alpha), "o", color=line.get_color())
   ax.set_xlabel("gap between the true logit and the others, $z_c - z_j$")
   ax.set_ylabel("loss (K = 10)")
   ax.legend()
   fig.tight_layout()

**Conventions and traps.** This page (like ``optax.smooth_labels``) spreads :math:`\alpha/K` over
*all* classes, the true one included; some code spreads :math:`\alpha/(K-1)` over the wrong classes
only, which changes the optimum gap to :math:`\log\bigl((1-\alpha)(K-1)/\alpha\bigr)`, so compare
values of :math:`\alpha` only within one convention. The log-softmax is computed after subtracting
the largest logit, so logits in the thousands stay finite, and in float32 even for low-precision
inputs. At :math:`\alpha = 0` the loss is the plain cross-entropy. A
smoothing weight outside :math:`[0, 1]` is an error when it is a concrete number; under
:func:`jax.jit` a traced ``alpha`` is not checked.

.. admonition:: Intuition

   Label smoothing is a teacher who never marks an answer as 100 % certain: the right answer
   earns most of the credit, and a little is always held back and spread over the rest, in case
   the answer key itself is wrong. A student marked this way stops trying to be infinitely sure
   and settles on confident-but-modest answers, which is the finite logit gap.

Inductive bias
--------------

Label smoothing assumes that the labels are not certain: that some examples are mislabelled or
ambiguous, and that no input deserves a probability of exactly 1 for one class. It assumes, too,
that every wrong class is equally wrong, since the smoothed target is uniform over them; when the
classes have structure (a husky is closer to a wolf than to a lorry), that uniform prior throws
the structure away, which knowledge distillation, with a teacher's soft targets, keeps.

Example
-------

>>> import jax.numpy as jnp
>>> from cookbook.regularization.label_smoothing import (
...     optimal_logit_gap, smooth_labels, smoothed_cross_entropy)
>>> labels = jnp.array([[0.0, 1.0, 0.0, 0.0]])
>>> smooth_labels(labels, 0.2)
Array([[0.05, 0.85, 0.05, 0.05]], dtype=float32)
>>> logits = jnp.array([[0.5, 2.0, -1.0, 0.0]])
>>> smoothed_cross_entropy(logits, labels, 0.0).round(4)  # plain cross-entropy
Array([0.3423], dtype=float32)
>>> smoothed_cross_entropy(logits, labels, 0.2).round(4)
Array([0.6673], dtype=float32)
>>> gap = optimal_logit_gap(0.2, 4)
>>> round(float(gap), 4)  # log(0.85 / 0.05)
2.8332
>>> best = gap * labels  # the true logit leads the others by the gap
>>> jnp.exp(best - jnp.log(jnp.exp(best).sum())).round(4)  # softmax equals the smoothed target
Array([[0.05, 0.85, 0.05, 0.05]], dtype=float32)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"smooth_labels": (), "smoothed_cross_entropy": (), "optimal_logit_gap": ("num_classes",)}


def _check_alpha(alpha):
    if not isinstance(alpha, jax.core.Tracer):  # checked whenever the value is known
        a = np.asarray(alpha)
        if np.any(a < 0) or np.any(a > 1):
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}")


def smooth_labels(labels, alpha):
    """Smoothed targets ``(1 - alpha) * labels + alpha / K`` for one-hot ``labels`` of shape (..., K)."""
    _check_alpha(alpha)
    labels = _checks.float_array(labels, "labels", min_ndim=1, what=" (..., K)")
    return _smooth_labels_jit(labels, alpha)


# Each public function checks its input in Python, then runs one compiled core (alpha traced), so
# that a repeated call with the same shapes (the examples', the tests', the jit and bad-input
# checks') reuses one program instead of compiling each small operation alone.
def _smooth_labels(labels, alpha):
    K = labels.shape[-1]
    return (1.0 - alpha) * labels + alpha / K


_smooth_labels_jit = jax.jit(_smooth_labels)


def smoothed_cross_entropy(logits, labels, alpha):
    """Cross-entropy of ``logits`` (..., K) against ``labels`` (..., K) smoothed by ``alpha``; shape (...)."""
    logits = _checks.float_array(logits, "logits", min_ndim=1, what=" (..., K)")
    labels = _checks.float_array(labels, "labels", min_ndim=1, what=" (..., K)")
    if logits.shape != labels.shape:
        raise ValueError(f"logits and labels must have the same shape (..., K), got {logits.shape} and {labels.shape}")
    _check_alpha(alpha)
    return _smoothed_cross_entropy(logits, labels, alpha)


@jax.jit
def _smoothed_cross_entropy(logits, labels, alpha):
    q = _smooth_labels(labels, alpha)
    z = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))  # accumulate in at least float32
    z = z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))  # exp never overflows
    log_p = z - jnp.log(jnp.sum(jnp.exp(z), axis=-1, keepdims=True))
    return -jnp.sum(q * log_p, axis=-1).astype(logits.dtype)


def optimal_logit_gap(alpha, num_classes):
    """The gap ``z_true - z_other`` that minimises the smoothed loss: ``log((1 - alpha + alpha/K) / (alpha/K))``.

    Infinite at ``alpha = 0``: hard targets have no finite minimiser.
    """
    _check_alpha(alpha)
    num_classes = _checks.size(num_classes, "num_classes", minimum=2)
    return _optimal_logit_gap(alpha, num_classes)


@functools.partial(jax.jit, static_argnums=1)
def _optimal_logit_gap(alpha, num_classes):
    alpha = jnp.asarray(alpha, jnp.float32)
    off = alpha / num_classes
    return jnp.log((1.0 - alpha + off) / off)  # log(x / 0) = inf at alpha = 0, on purpose
