r"""Loss functions
==============

The numbers that training minimises: squared, absolute and Huber error for regression,
cross-entropy for classification, and the Kullback-Leibler divergence between distributions; reach
for this page when choosing what "wrong" should cost.

Equation
--------

.. math::

   r = \hat{y} - y, \qquad
   \operatorname{MSE} = r^2, \qquad
   \operatorname{MAE} = |r|, \qquad
   \operatorname{Huber}_\delta(r) =
   \begin{cases} \tfrac{1}{2} r^2 & |r| \le \delta \\
                 \delta \left(|r| - \tfrac{1}{2}\delta\right) & |r| > \delta \end{cases}

   \operatorname{BCE}(z, y) = -y \log \sigma(z) - (1 - y) \log\left(1 - \sigma(z)\right),
   \qquad
   \operatorname{CE}(z, q) = -\sum_{k=1}^{K} q_k \log \operatorname{softmax}(z)_k

   \operatorname{KL}(p \,\|\, q) = \sum_{k=1}^{K} p_k \log \frac{p_k}{q_k},
   \qquad 0 \log 0 = 0, \qquad
   L = \frac{1}{N} \sum_{i=1}^{N} \ell_i

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`\hat{y}`, :math:`y`
     - prediction and target (regression); for BCE, :math:`y` is the probability of class 1
       (0 or 1, or a soft label in between)
     - ``prediction``, ``target``; ``labels``
     - any, the same for both
   * - :math:`r`
     - residual
     - ``r``
     - as :math:`y`
   * - :math:`\delta`
     - Huber threshold between the quadratic and the linear part
     - ``delta``
     - scalar
   * - :math:`z`
     - logit (BCE) or vector of logits (CE)
     - ``logits``
     - ``(...)``; ``(..., K)``
   * - :math:`\sigma`
     - logistic sigmoid
     - (inside ``binary_cross_entropy``)
     - elementwise
   * - :math:`q`, :math:`q_k`
     - target distribution over classes (CE: the one-hot vector of an integer label); in KL, the
       approximating distribution
     - ``targets``, ``labels``; ``q``
     - ``(..., K)``
   * - :math:`p`, :math:`p_k`
     - the reference distribution in KL
     - ``p``
     - ``(..., K)``
   * - :math:`k`, :math:`K`
     - class index; number of classes
     - the last axis of ``logits``; ``K``
     - scalar
   * - :math:`\ell_i`, :math:`L`
     - the loss of example :math:`i`; its mean, the number returned
     - the return value
     - ``()``
   * - :math:`N`, :math:`i`
     - number of terms averaged; index of a term
     - the entries that ``jnp.mean`` averages
     - scalar

Explanation
-----------

Every loss here is the negative log-likelihood of the targets under some assumed noise
:footcite:`bishop2006pattern`, and that assumption is the best guide to choosing one.

.. admonition:: Intuition

   A loss is a schedule of fines. Squared error fines a driver by the square of the speeding, so one
   reckless driver pays more than a hundred careless ones and the rules end up written around him;
   absolute error fines by the kilometre per hour, so nobody dominates; Huber fines by the square up
   to a limit and by the kilometre after it. Cross-entropy fines a forecaster by how surprised they
   were by what happened: a confident wrong forecast is ruinous, a hedged one merely costly.

**Squared error** is Gaussian noise. It is smooth, its gradient :math:`2r` is proportional to the
error, and its minimiser is the conditional *mean*. Because the cost grows with the square, one
point ten units off costs as much as a hundred points one unit off, so outliers dominate the fit.
(:func:`optax.l2_loss` is :math:`\tfrac{1}{2} r^2`, half of this; the factor only rescales the
learning rate.)

**Absolute error** is Laplace noise. Its gradient has the same size, :math:`\pm 1`, whatever the
error, so outliers pull no harder than anything else; its minimiser is the conditional *median*.
The price is a kink at zero: the gradient does not shrink near the optimum, and gradient descent
with a fixed step rattles around it.

**Huber loss** :footcite:`huber1964robust` takes the best of both: quadratic (half the squared
error) for residuals up to :math:`\delta`, and linear with slope :math:`\delta` beyond, joined so
that the value and the slope are continuous. Small errors are treated as Gaussian, large ones as
outliers whose pull is capped at :math:`\delta`. (Object detectors know it, with
:math:`\delta = 1`, as the "smooth L1" loss.)

**Binary cross-entropy** is a Bernoulli likelihood for a probability :math:`\sigma(z)`. It takes the
logit :math:`z`, not the probability: the code computes
:math:`\max(z, 0) - y z + \log(1 + e^{-|z|})`, which never exponentiates a positive number, where
:math:`\log \sigma(z)` computed from a rounded :math:`\sigma(z) = 0` would be :math:`-\infty`.
**Categorical cross-entropy** is its many-class version, the categorical likelihood of a softmax; it
is computed from the log-softmax with the largest logit subtracted (see :doc:`softmax_regression`).
Its target may be an integer label (the usual case, and cheaper: since :math:`-\log
\operatorname{softmax}(z)_y = \log \sum_k e^{z_k} - z_y`, the code reads only the log-normaliser and
one logit per example) or a full distribution :math:`q`, such as a one-hot vector or a smoothed
label. An integer label outside :math:`0, \dots, K - 1` raises a ``ValueError``; under
:func:`jax.jit`, where the labels are not known, it makes the loss NaN rather than the loss of
another class.

**Kullback-Leibler divergence** :footcite:`kullback1951information` measures how many extra nats
are spent coding samples of :math:`p` with a code built for :math:`q`. It is zero exactly when the
two distributions agree and positive otherwise (Gibbs' inequality), but it is not symmetric and not
a distance. Cross-entropy is the KL divergence plus the entropy of the targets, a constant, so
minimising one minimises the other. *Numerical traps*: a term with :math:`p_k = 0` contributes
nothing, by the limit :math:`p \log p \to 0`, but computed naively it is :math:`0 \cdot (-\infty)`,
which is NaN; the code selects zero for those entries *and* feeds the logarithm a harmless 1 there,
so that the gradient is not NaN either. A term with :math:`p_k > 0` and :math:`q_k = 0` is truly
infinite: :math:`q` says impossible what :math:`p` says happens.

.. plot::

   from cookbook.foundations.losses import binary_cross_entropy, huber, mae, mse
   import jax, jax.numpy as jnp

   r = jnp.linspace(-3.0, 3.0, 301)
   z = jnp.linspace(-6.0, 6.0, 301)
   each = lambda loss, a, b: jax.vmap(loss)(a, b)  # the loss of each point, not their mean
   fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
   left.plot(r, each(mse, r, 0 * r), label="squared error")
   left.plot(r, each(mae, r, 0 * r), label="absolute error")
   left.plot(r, each(lambda a, b: huber(a, b, delta=1.0), r, 0 * r), label=r"Huber, $\delta = 1$")
   left.set(xlabel=r"residual $r = \hat{y} - y$", ylabel="loss", ylim=(0, 4), title="regression")
   left.legend()
   right.plot(z, each(binary_cross_entropy, z, jnp.ones_like(z)), label="BCE, y = 1")
   right.plot(z, each(binary_cross_entropy, z, jnp.zeros_like(z)), label="BCE, y = 0")
   right.plot(z, (z < 0).astype(float), "k:", label="0-1 error, y = 1")
   right.set(xlabel="logit $z$", ylabel="loss", title="binary classification")
   right.legend()
   fig.tight_layout()

Left: squared error is flat near zero and steep far out, absolute error has the same slope
everywhere, and the Huber loss follows half the squared error until :math:`|r| = \delta` and the
absolute error's slope after. Right: cross-entropy is a smooth, convex upper bound on the 0-1
error that keeps pushing a correct but unconfident prediction, and that grows linearly (not
exponentially, as the probability itself shrinks) for a confidently wrong one.

Inductive bias
--------------

A loss is an assumption about the noise in the targets. Squared error assumes light-tailed,
symmetric noise, and predicts the mean; absolute error assumes heavy tails, and predicts the median;
Huber assumes mostly Gaussian noise with occasional gross errors, at a scale :math:`\delta` that the
user must know. Cross-entropy assumes the labels are samples from the predicted distribution, so
it rewards calibrated probabilities, and it trusts every label: a mislabelled example with a large
logit costs a large loss. The KL divergence :math:`\operatorname{KL}(p \,\|\, q)` punishes
:math:`q` for missing any mass of :math:`p` (it is "mean-seeking" when fitted in :math:`q`), while
the reverse direction lets :math:`q` ignore parts of :math:`p` ("mode-seeking").

Example
-------

>>> import jax.numpy as jnp
>>> from cookbook.foundations.losses import (
...     binary_cross_entropy, cross_entropy, cross_entropy_one_hot, huber, kl_divergence, mae, mse)
>>> prediction, target = jnp.array([0.5, 1.0, 5.0]), jnp.array([0.0, 1.0, 1.0])
>>> round(float(mse(prediction, target)), 4), float(mae(prediction, target))  # 16.25 / 3, 4.5 / 3
(5.4167, 1.5)
>>> round(float(huber(prediction, target, delta=1.0)), 4)  # (0.125 + 0 + 3.5) / 3
1.2083
>>> logits, labels = jnp.array([-1e4, 0.0]), jnp.array([0.0, 1.0])
>>> round(float(binary_cross_entropy(logits, labels)), 4)  # (0 + log 2) / 2, finite at -1e4
0.3466
>>> logits = jnp.array([[2.0, 0.0, -2.0], [0.0, 0.0, 0.0]])
>>> cross_entropy(logits, jnp.array([0, 2])).round(4)  # (log(1 + e^-2 + e^-4) + log 3) / 2
Array(0.6208, dtype=float32)
>>> cross_entropy_one_hot(logits, jnp.eye(3)[jnp.array([0, 2])]).round(4)
Array(0.6208, dtype=float32)
>>> p = jnp.array([0.5, 0.5, 0.0])
>>> float(kl_divergence(p, p)), kl_divergence(p, jnp.array([0.25, 0.25, 0.5])).round(4)  # log 2
(0.0, Array(0.6931, dtype=float32))

Implementation notes
--------------------

Writing out the whole log-softmax and then picking one entry per example, as
``cross_entropy_one_hot`` must, made the integer-label loss 1.3 times slower than optax's on
32,000 classes on the book's benchmark machine (:doc:`/docs/performance`); reading only the
log-normaliser and the one logit closed the gap. :func:`optax.l2_loss` is half the squared error
used here; :func:`optax.huber_loss`, :func:`optax.sigmoid_binary_cross_entropy`,
:func:`optax.softmax_cross_entropy_with_integer_labels` and :func:`optax.kl_divergence` return the
per-example values that these functions average.
"""

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.foundations.softmax_regression import binary_cross_entropy as _binary_cross_entropy
from cookbook.foundations.softmax_regression import log_softmax

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "mse": (),
    "mae": (),
    "huber": (),
    "binary_cross_entropy": (),
    "cross_entropy": (),
    "cross_entropy_one_hot": (),
    "kl_divergence": (),
}


def _pair(a, b, names):
    """Both arguments as floating-point arrays of one shape (lists are accepted)."""
    a, b = _checks.float_array(a, names[0]), _checks.float_array(b, names[1])
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got {a.shape} and {b.shape}")
    return a, b


def mse(prediction, target):
    """Mean squared error over all entries (twice the mean of :func:`optax.l2_loss`)."""
    prediction, target = _pair(prediction, target, ("prediction", "target"))
    r = prediction - target
    return jnp.mean(r**2)


def mae(prediction, target):
    """Mean absolute error over all entries."""
    prediction, target = _pair(prediction, target, ("prediction", "target"))
    return jnp.mean(jnp.abs(prediction - target))


def huber(prediction, target, delta=1.0):
    """Mean Huber loss: ``r**2 / 2`` where ``|r| <= delta``, ``delta * (|r| - delta / 2)`` beyond."""
    prediction, target = _pair(prediction, target, ("prediction", "target"))
    _checks.positive(delta, "delta")
    abs_r = jnp.abs(prediction - target)
    quadratic = jnp.minimum(abs_r, delta)  # the part of |r| inside delta
    linear = abs_r - quadratic  # the part beyond
    return jnp.mean(0.5 * quadratic**2 + delta * linear)


def binary_cross_entropy(logits, labels):
    """Mean binary cross-entropy of ``logits`` against probabilities ``labels`` (0, 1 or soft)."""
    logits, labels = _pair(logits, labels, ("logits", "labels"))
    return jnp.mean(_binary_cross_entropy(logits, labels))


def cross_entropy(logits, labels):
    """Mean categorical cross-entropy of ``logits`` (..., K) against integer ``labels`` (...).

    A label outside ``[0, K)`` raises a ``ValueError`` when ``labels`` is concrete; under
    :func:`jax.jit` it makes the loss NaN (never the loss of another class).
    """
    logits = _checks.float_array(logits, "logits", min_ndim=1, what=" (..., K)")
    labels = _checks.int_array(labels, "labels")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels must have shape logits.shape[:-1] = {logits.shape[:-1]}, got {labels.shape}")
    if labels.size == 0 or logits.shape[-1] == 0:
        raise ValueError(f"labels must hold at least one example of logits with at least one class "
                         f"(the mean of an empty batch is undefined), got labels {labels.shape}, logits {logits.shape}")
    K = logits.shape[-1]
    _checks.check_range(labels, f"labels (classes of the {K} logits)", 0, K)
    # -log softmax(z)_y = logsumexp(z) - z_y: one pass over the K logits for the log-normaliser and a
    # gather, without writing out the whole log-softmax that cross_entropy_one_hot needs.
    z32 = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    m = jax.lax.stop_gradient(jnp.max(z32, axis=-1, keepdims=True))  # (..., 1), subtracted before exp
    log_normaliser = (m + jnp.log(jnp.sum(jnp.exp(z32 - m), axis=-1, keepdims=True)))[..., 0]
    valid = (labels >= 0) & (labels < K)  # traced labels: an invalid one gives NaN, not a wrapped index
    picked = jnp.take_along_axis(z32, jnp.where(valid, labels, 0)[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return jnp.mean(jnp.where(valid, log_normaliser - picked, jnp.nan)).astype(logits.dtype)


def cross_entropy_one_hot(logits, targets):
    """Mean categorical cross-entropy of ``logits`` (..., K) against distributions ``targets`` (..., K)."""
    logits, targets = _pair(logits, targets, ("logits", "targets"))
    return -jnp.mean(jnp.sum(targets * log_softmax(logits), axis=-1))


def kl_divergence(p, q):
    """Mean over leading axes of ``KL(p || q)`` along the last axis, with ``0 log 0 = 0``."""
    p, q = _pair(p, q, ("p", "q"))
    positive = p > 0
    safe_p = jnp.where(positive, p, 1.0)  # log(1) = 0 instead of log(0), also in the gradient
    safe_q = jnp.where(positive, q, 1.0)  # q may be 0 where p is: that term is 0, not NaN
    terms = jnp.where(positive, p * (jnp.log(safe_p) - jnp.log(safe_q)), 0.0)
    return jnp.mean(jnp.sum(terms, axis=-1))
