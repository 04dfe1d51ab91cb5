r"""Calibration and temperature scaling
===================================

A classifier is calibrated when, among the inputs to which it gives 80 % confidence, 80 % are
right; the expected calibration error measures how far it is from that, a reliability diagram
shows where, and temperature scaling, one number fitted on held-out data, is the standard repair.

Equation
--------

.. math::

   \begin{aligned}
   \hat{p}_i &= \max_k \operatorname{softmax}(\mathbf{z}_i / T)_k, \qquad
   \hat{y}_i = \arg\max_k z_{ik}, \\
   B_m &= \left\{ i : \hat{p}_i \in \left(\tfrac{m - 1}{M}, \tfrac{m}{M}\right] \right\},
   \qquad m = 1, \dots, M \quad (B_1 \text{ also holds } \hat{p}_i = 0), \\
   \operatorname{ECE} &= \sum_{m=1}^{M} \frac{\lvert B_m \rvert}{N}
   \left\lvert \operatorname{acc}(B_m) - \operatorname{conf}(B_m) \right\rvert, \quad
   \operatorname{acc}(B_m) = \frac{1}{\lvert B_m \rvert} \sum_{i \in B_m} \mathbb{1}[\hat{y}_i = y_i], \quad
   \operatorname{conf}(B_m) = \frac{1}{\lvert B_m \rvert} \sum_{i \in B_m} \hat{p}_i, \\
   T^\star &= \arg\min_{T > 0} \; -\sum_{i=1}^{N} \log \operatorname{softmax}(\mathbf{z}_i / T)_{y_i}
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`\mathbf{z}_i`, :math:`z_{ik}`
     - logits of example :math:`i`; the one of class :math:`k`
     - ``logits``
     - ``(N, K)``
   * - :math:`T`, :math:`T^\star`
     - temperature; the one that minimises the held-out negative log-likelihood
     - ``temperature``, ``fit_temperature``
     - scalar
   * - :math:`\hat{p}_i`
     - confidence: the largest predicted probability
     - ``confidence`` (from ``probs``)
     - ``(N,)``
   * - :math:`\hat{y}_i`, :math:`y_i`
     - predicted class and true label
     - ``predicted``, ``labels``
     - ``(N,)``
   * - :math:`B_m`, :math:`m`, :math:`M`
     - the examples whose confidence falls in bin :math:`m`; bin index; number of bins
     - ``bins``, ``num_bins``
     - ``(N,)`` bin of each example
   * - :math:`\operatorname{acc}`, :math:`\operatorname{conf}`
     - accuracy and mean confidence in a bin
     - ``accuracy``, ``mean_confidence``
     - ``(M,)``
   * - :math:`N`, :math:`i`, :math:`k`
     - number of examples; example index; class index
     - ``N``
     - scalars

Explanation
-----------

A network's softmax output looks like a probability, but nothing in training makes it one on new
data. Modern networks, large and trained long on cross-entropy, keep pushing the logits of training
examples apart after they are already classified correctly, and end up over-confident: on held-out
data their 99 % answers are right far less than 99 % of the time :footcite:p:`guo2017calibration`.
Sort the predictions by confidence into :math:`M` equal bins and compare, per bin, the fraction
correct with the average confidence; plotted, that is the reliability diagram
:footcite:p:`niculescu2005predicting`, and a calibrated model lies on the diagonal. The expected
calibration error :footcite:p:`naeini2015obtaining` is the gap averaged over bins, weighted by how
many examples each holds. It depends on the binning (the tests check the conventions: equal-width
bins open on the left, 15 of them by default) and is zero for a model that always predicts the
base rate, so it is reported next to accuracy, never alone.

Temperature scaling divides all logits by one number :math:`T` before the softmax and chooses
:math:`T` to minimise the negative log-likelihood on a held-out set. :math:`T > 1` softens
over-confident predictions; the arg max, hence the accuracy, does not change. It is one parameter,
so it cannot overfit the held-out set, and on the tests' over-confident digits classifier it
lowers the ECE by more than half. ``fit_temperature`` minimises over :math:`\log T`, where the
loss is smooth and :math:`T` stays positive, by Newton's method in one dimension.

.. admonition:: Intuition

   A weather forecaster is calibrated if it rains on 30 % of the days she says "30 %". Temperature
   scaling is the editor who notices that her "90 %" days get rain only 70 % of the time and tones
   every forecast down by the same amount, without changing which days she calls wettest.

.. plot::

   import jax
   import numpy as np
   from sklearn.datasets import load_digits
   from sklearn.linear_model import LogisticRegression
   from cookbook.uncertainty.calibration import fit_temperature, reliability_diagram

   X, y = load_digits(return_X_y=True)
   rng = np.random.default_rng(0)
   order = rng.permutation(len(y))
   train, val, test = order[:300], order[300:1000], order[1000:]
   model = LogisticRegression(C=1e4, max_iter=3000).fit(X[train] / 16, y[train])
   logits = np.float32(model.decision_function(X / 16))
   T = float(jax.jit(fit_temperature)(logits[val], y[val]))
   fig, axes = plt.subplots(1, 2, figsize=(7, 3.2), sharey=True)
   for ax, t, name in [(axes[0], 1.0, "as trained"), (axes[1], T, f"T = {T:.1f}")]:
       z = logits[test] / t
       probs = np.exp(z - z.max(1, keepdims=True)); probs /= probs.sum(1, keepdims=True)
       conf, acc, count = (np.asarray(a) for a in reliability_diagram(probs, y[test], num_bins=10))
       edges = np.linspace(0, 1, 11)
       ax.bar(edges[:-1], acc, width=0.1, align="edge", edgecolor="k", label="accuracy")
       ax.plot([0, 1], [0, 1], "k--", lw=1)
       ax.set(xlabel="confidence", title=name)
   axes[0].set(ylabel="accuracy in the bin")
   fig.tight_layout()

A nearly unregularised logistic regression on 300 digits is right 93 % of the time on the held-out
digits but says so with more confidence than that (left: bars below the diagonal); one temperature,
fitted on 700 other digits, brings the bars to the diagonal without changing a single prediction.

Inductive bias
--------------

Temperature scaling assumes that the model ranks its predictions well and is wrong only about their
scale, by the same factor everywhere. It cannot fix a model that is over-confident on some inputs
and under-confident on others, and calibration on held-out data from the training distribution
says nothing about shifted data, where over-confidence returns. Richer maps (vector and matrix
scaling, isotonic regression) fix more and overfit more.

Example
-------

Four predictions, two classes; 15 bins:

>>> import jax.numpy as jnp
>>> from cookbook.uncertainty.calibration import expected_calibration_error, fit_temperature, reliability_diagram
>>> probs = jnp.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
>>> labels = jnp.array([0, 1, 1, 0])
>>> round(float(expected_calibration_error(probs, labels)), 4)  # |1-0.9| + |0-0.8| + |1-0.7| + |0-0.55|, over 4
0.4375
>>> conf, acc, count = reliability_diagram(probs, labels, num_bins=2)
>>> conf.round(4), acc, count
(Array([0.   , 0.7375], dtype=float32), Array([0. , 0.5], dtype=float32), Array([0, 4], dtype=int32))

The temperature that fits over-confident logits is above 1:

>>> from cookbook.uncertainty.calibration import temperature_nll
>>> logits = jnp.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [4.0, 0.0]])
>>> T = fit_temperature(logits, jnp.array([0, 1, 1, 0]))
>>> round(float(T), 3)
3.641
>>> [round(float(temperature_nll(logits, jnp.array([0, 1, 1, 0]), t)), 3) for t in (1.0, T)]
[1.018, 0.562]

Implementation notes
--------------------

An example with confidence exactly on a bin edge :math:`m/M` belongs to the bin below; the edges
are those of ``np.linspace(0, 1, M + 1)``, in the dtype of ``probs``. Bins without examples add
nothing. Guo et al. also describe vector and matrix scaling (a temperature per class, a full affine
map of the logits); Platt scaling is their two-class ancestor. With few validation examples, the
ECE itself is a noisy, biased-upward estimate; debiased and adaptive-bin variants exist.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"expected_calibration_error": ("num_bins",), "reliability_diagram": ("num_bins",),
       "temperature_nll": (), "fit_temperature": ("steps",)}


def _probs_labels(probs, labels, probs_name="probs"):
    probs = _checks.float_array(probs, probs_name, ndim=2, what=" (N, K)")
    labels = _checks.int_array(labels, "labels", ndim=1, what=" (N,)")
    _checks.same_shape(labels, "labels", probs.shape[:1], expected_from=f"N from {probs_name}")
    try:
        _checks.check_range(labels, "labels", 0, probs.shape[1])
    except ValueError as error:
        raise ValueError(f"{error}: one class per column of {probs_name}, shape {tuple(probs.shape)}") from None
    return probs, labels


def _binned(probs, labels, num_bins):
    """Per bin: the summed confidence, the number correct and the count, each (M,)."""
    N = probs.shape[0]
    confidence = jnp.max(probs, axis=1)
    predicted = jnp.argmax(probs, axis=1)
    correct = (predicted == labels).astype(probs.dtype)
    edges = jnp.asarray(np.linspace(0.0, 1.0, num_bins + 1), probs.dtype)
    # Bin m holds (edges[m], edges[m + 1]]; a confidence of 0 joins the first bin.
    bins = jnp.clip(jnp.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
    total_confidence = jax.ops.segment_sum(confidence, bins, num_bins)
    total_correct = jax.ops.segment_sum(correct, bins, num_bins)
    count = jax.ops.segment_sum(jnp.ones(N, jnp.int32), bins, num_bins)
    return total_confidence, total_correct, count


def expected_calibration_error(probs, labels, num_bins=15):
    """The ECE of predicted probabilities ``probs`` (N, K) for integer ``labels`` (N,): the top-class
    confidence binned into ``num_bins`` equal bins (lo, hi] of [0, 1], the first also holding 0."""
    probs, labels = _probs_labels(probs, labels)
    num_bins = _checks.size(num_bins, "num_bins")
    return _expected_calibration_error(probs, labels, num_bins)


# The public functions check their input, then run compiled cores like this one: the page's calls,
# the tests' and the jit check's reuse one program per shape instead of dispatching op by op.
@functools.partial(jax.jit, static_argnums=2)
def _expected_calibration_error(probs, labels, num_bins):
    total_confidence, total_correct, _ = _binned(probs, labels, num_bins)
    N = probs.shape[0]
    return jnp.sum(jnp.abs(total_correct - total_confidence)) / N  # sum_m |B_m|/N |acc - conf|


def reliability_diagram(probs, labels, num_bins=15):
    """Per bin, shape (num_bins,) each: the mean confidence, the accuracy (0 for an empty bin) and
    the number of examples."""
    probs, labels = _probs_labels(probs, labels)
    num_bins = _checks.size(num_bins, "num_bins")
    return _reliability_diagram(probs, labels, num_bins)


@functools.partial(jax.jit, static_argnums=2)
def _reliability_diagram(probs, labels, num_bins):
    total_confidence, total_correct, count = _binned(probs, labels, num_bins)
    safe = jnp.maximum(count, 1).astype(probs.dtype)
    mean_confidence, accuracy = total_confidence / safe, total_correct / safe
    return mean_confidence, accuracy, count


def temperature_nll(logits, labels, temperature):
    """Mean negative log-likelihood of ``labels`` (N,) under ``softmax(logits / temperature)``,
    ``logits`` (N, K)."""
    logits, labels = _probs_labels(logits, labels, "logits")
    _checks.positive(temperature, "temperature")
    return _temperature_nll(logits, labels, temperature)


def _nll(logits, labels, temperature):
    log_probs = jax.nn.log_softmax(logits / temperature, axis=1)  # max subtracted inside
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))


def fit_temperature(logits, labels, steps=30):
    """The temperature that minimises :func:`temperature_nll` on held-out ``logits`` (N, K) and
    ``labels`` (N,): ``steps`` Newton steps on its logarithm from ``T = 1``."""
    logits, labels = _probs_labels(logits, labels, "logits")
    _checks.size(steps, "steps")
    return _fit_temperature(logits, labels, steps)


_temperature_nll = jax.jit(_nll)


@functools.partial(jax.jit, static_argnums=2)
def _fit_temperature(logits, labels, steps):
    def loss(log_t):
        return _nll(logits, labels, jnp.exp(log_t))

    grad = jax.grad(loss)
    curvature = jax.grad(grad)

    def step(log_t, _):
        g, h = grad(log_t), curvature(log_t)
        # A Newton step where the loss curves upwards, a small gradient step elsewhere; at most 1 in log T.
        move = jnp.where(h > 0, g / jnp.where(h > 0, h, 1.0), 0.1 * g)
        return log_t - jnp.clip(move, -1.0, 1.0), None

    log_t, _ = jax.lax.scan(step, jnp.zeros((), logits.dtype), length=steps)
    return jnp.exp(log_t)
