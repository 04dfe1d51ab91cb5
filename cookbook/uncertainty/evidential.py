r"""Evidential deep learning
========================

One network, one forward pass: instead of a prediction, it outputs the parameters of a distribution
*over* predictions (a Dirichlet over class probabilities, a normal-inverse-gamma over a Gaussian's
mean and variance), read as evidence, and reports uncertainty where the evidence is thin. Cheap and
popular; this page also shows where its uncertainty cannot be trusted.

Equation
--------

.. math::

   \begin{aligned}
   \text{classification:}\quad & \alpha = e + 1, \quad S = \textstyle\sum_{k=1}^{K} \alpha_k, \quad
     \hat{p}_k = \alpha_k / S, \quad u = K / S, \\
   & \mathcal{L} = \textstyle\sum_k \left[(y_k - \hat{p}_k)^2 + \frac{\hat{p}_k (1 - \hat{p}_k)}{S + 1}\right]
     + \lambda_t \operatorname{KL}\left(\operatorname{Dir}(\tilde{\alpha}) \,\Vert\, \operatorname{Dir}(1)\right), \\
   & \tilde{\alpha} = y + (1 - y) \odot \alpha, \\
   \text{regression:}\quad & p(z) = \operatorname{St}\left(z;\; \gamma,\; \frac{\beta (1 + \nu)}{\nu a},\; 2a\right), \\
   & \mathbb{E}[\sigma^2] = \frac{\beta}{a - 1}, \quad \operatorname{Var}[\mu] = \frac{\beta}{\nu (a - 1)}
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`e`, :math:`\alpha`, :math:`\tilde{\alpha}`
     - evidence per class (non-negative network output); Dirichlet parameters; the same with the true
       class's evidence removed
     - ``evidence``, ``alpha``, ``alpha_tilde``
     - ``(K,)``
   * - :math:`S`, :math:`K`, :math:`k`
     - Dirichlet strength; number of classes; class index
     - ``S``, ``K``
     - scalars
   * - :math:`\hat{p}_k`, :math:`u`
     - expected class probability; uncertainty mass
     - ``probs``, ``uncertainty``
     - ``(K,)``, scalar
   * - :math:`y`, :math:`y_k`
     - one-hot label
     - ``y`` (from ``label``)
     - ``(K,)``
   * - :math:`\mathcal{L}`, :math:`\lambda_t`, :math:`t`
     - loss of one example; weight of the KL term at step :math:`t`, annealed from 0
     - ``classification_loss``, ``kl_weight``
     - scalar
   * - :math:`\gamma`, :math:`\nu`, :math:`a`, :math:`\beta`
     - normal-inverse-gamma parameters (:math:`a` is the paper's :math:`\alpha`, renamed here)
     - ``gamma``, ``nu``, ``a``, ``beta``
     - scalars
   * - :math:`z`, :math:`p(z)`
     - a regression target; its marginal density, a Student-t
     - ``target``, ``nig_nll`` (its negative logarithm)
     - scalar
   * - :math:`\mu`, :math:`\sigma^2`
     - the Gaussian's unknown mean and variance, which the NIG is a distribution over
     - ``nig_uncertainties``
     - scalars

Explanation
-----------

Sensoy et al. :footcite:p:`sensoy2018evidential` read a classifier's non-negative outputs as
*evidence* for each class, in the sense of subjective logic: the Dirichlet with parameters
:math:`e + 1` has mean :math:`\hat{p}` and strength :math:`S`, and :math:`u = K/S` is the mass of
belief not assigned to any class, 1 with no evidence at all. The loss is the expected squared
error under the Dirichlet, plus a KL term that pulls the evidence for wrong classes back to zero,
with a weight annealed from zero so that the network first learns to classify. Amini et al.
:footcite:p:`amini2020deep` do the same for regression: the network outputs the four parameters of
a normal-inverse-gamma distribution over a Gaussian's mean and variance; integrating them out gives a
Student-t likelihood, and the NIG's moments split the uncertainty into the data's noise,
:math:`\mathbb{E}[\sigma^2]`, and the model's, :math:`\operatorname{Var}[\mu]`.

.. admonition:: Intuition

   A juror who, instead of a verdict, reports how much evidence she has heard for each verdict: a
   lot for one is a confident verdict, a little for all is "I don't know". The trouble is that she
   grades her own evidence, and nobody has told her what evidence looks like for a case unlike any
   she has heard.

**Failure modes.** That is the catch: nothing in the loss says how much evidence an input unlike
the training data deserves. A ReLU network's outputs grow linearly along any ray away from the data
:footcite:p:`hein2019relu`, so the evidence grows too and :math:`u` goes to zero: the tests train
a classifier on two blobs, find :math:`u` below 0.05 on the data and, ten times farther out, less
than a quarter of that.
In regression, the likelihood depends on :math:`\nu` and :math:`\beta` only through
:math:`\beta (1 + \nu) / \nu`: any two settings with the same ratio fit the data equally well but
report different epistemic uncertainty, so :math:`\operatorname{Var}[\mu]` is set by the
regulariser and the initialisation, not by the data :footcite:p:`meinert2023unreasonable`. The
tests show both.

Inductive bias
--------------

An evidential head assumes that a single deterministic network can learn, from in-distribution
data alone, how much evidence each input carries; it has no mechanism (sampling, several models, a
prior over functions) that produces uncertainty where no data was seen. Its outputs are useful as
a learned confidence score and for aleatoric noise, cheaply; as epistemic uncertainty they need
validation on held-out, shifted data.

Example
-------

No evidence is total uncertainty; nine units for class 0 of three classes:

>>> import jax, jax.numpy as jnp
>>> from cookbook.uncertainty.evidential import (classification_loss, dirichlet_prediction, evidence_of,
...     fit_classifier, init, nig_nll, nig_uncertainties)
>>> probs, uncertainty = dirichlet_prediction(jnp.zeros(3))
>>> probs.round(3), float(uncertainty)
(Array([0.333, 0.333, 0.333], dtype=float32), 1.0)
>>> probs, uncertainty = dirichlet_prediction(jnp.array([9.0, 0.0, 0.0]))
>>> probs.round(3), round(float(uncertainty), 3)
(Array([0.833, 0.083, 0.083], dtype=float32), 0.25)
>>> round(float(classification_loss(jnp.array([9.0, 0.0, 0.0]), 0, kl_weight=1.0)), 4)
0.0641

The regression head: aleatoric and epistemic variance, and the Student-t negative log-likelihood:

>>> nig_uncertainties(nu=2.0, a=3.0, beta=1.0)
(Array(0.5, dtype=float32, weak_type=True), Array(0.25, dtype=float32, weak_type=True))
>>> round(float(nig_nll(0.0, 2.0, 3.0, 1.0, 0.5)), 4)
0.894

A two-class classifier, trained briefly:

>>> params = init(jax.random.key(0), (2, 8, 2))
>>> X = jnp.array([[-1.0, 0.0], [1.0, 0.0]] * 5)
>>> labels = jnp.array([0, 1] * 5)
>>> params, losses = fit_classifier(params, X, labels, steps=200)
>>> bool(losses[-1] < losses[0]), evidence_of(params, X[0]).shape
(True, (2,))
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook._memo import cached
from cookbook.foundations.mlp import apply as mlp_apply
from cookbook.foundations.mlp import init as mlp_init
from cookbook.optimization.adam import adam

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"dirichlet_prediction": (), "classification_loss": (), "nig_nll": (), "nig_uncertainties": (),
       "evidence_of": (), "fit_classifier": ("steps",)}


def _evidence(evidence):
    evidence = _checks.float_array(evidence, "evidence", ndim=1, what=" (K,)")
    if evidence.shape[0] < 2:
        raise ValueError(f"evidence must hold K >= 2 classes (one class leaves nothing to be unsure about), "
                         f"got shape {evidence.shape}")
    return evidence


def dirichlet_prediction(evidence):
    """Expected class probabilities (K,) and the uncertainty mass ``K / S`` for non-negative ``evidence`` (K,)."""
    return _dirichlet_prediction(_evidence(evidence))


@jax.jit
def _dirichlet_prediction(evidence):
    alpha = evidence + 1.0
    S = jnp.sum(alpha)
    K = evidence.shape[0]
    probs, uncertainty = alpha / S, K / S
    return probs, uncertainty


def _kl_to_uniform(alpha):
    """KL(Dir(alpha) || Dir(1, ..., 1))."""
    K = alpha.shape[0]
    S = jnp.sum(alpha)
    digamma = jax.scipy.special.digamma
    return (jax.scipy.special.gammaln(S) - jax.scipy.special.gammaln(K) - jnp.sum(jax.scipy.special.gammaln(alpha))
            + jnp.sum((alpha - 1) * (digamma(alpha) - digamma(S))))


def classification_loss(evidence, label, *, kl_weight):
    """The evidential loss of one example: expected squared error under ``Dir(evidence + 1)`` for the
    integer ``label``, plus ``kl_weight`` times the KL divergence of the misleading evidence from the
    uniform Dirichlet."""
    evidence = _evidence(evidence)
    K = evidence.shape[0]
    label = _checks.int_array(label, "label", ndim=0, what=" (a scalar class index)")
    _checks.check_range(label, "label", 0, K)
    _checks.positive(kl_weight, "kl_weight", allow_zero=True)
    return _classification_loss_jit(evidence, label, kl_weight)


def _classification_loss(evidence, label, kl_weight):
    K = evidence.shape[0]
    y = jax.nn.one_hot(label, K, dtype=evidence.dtype)
    alpha = evidence + 1.0
    S = jnp.sum(alpha)
    probs = alpha / S
    squared_error = jnp.sum((y - probs) ** 2 + probs * (1 - probs) / (S + 1))
    alpha_tilde = y + (1 - y) * alpha  # the true class's evidence does not count as misleading
    return squared_error + kl_weight * _kl_to_uniform(alpha_tilde)


_classification_loss_jit = jax.jit(_classification_loss)  # one program, not one per eager operation


def nig_nll(gamma, nu, a, beta, target):
    """``-log p(target)`` under the normal-inverse-gamma ``(gamma, nu, a, beta)``, the Student-t with
    ``2a`` degrees of freedom, location ``gamma`` and squared scale ``beta (1 + nu) / (nu a)``."""
    for name, value in (("nu", nu), ("a", a), ("beta", beta)):
        _checks.positive(value, name)
    gamma, target = (_checks.float_array(v, n, ndim=0) for v, n in ((gamma, "gamma"), (target, "target")))
    return _nig_nll(gamma, nu, a, beta, target)


@jax.jit
def _nig_nll(gamma, nu, a, beta, target):
    omega = 2 * beta * (1 + nu)
    gammaln = jax.scipy.special.gammaln
    return (0.5 * jnp.log(jnp.pi / nu) - a * jnp.log(omega) + (a + 0.5) * jnp.log(nu * (target - gamma) ** 2 + omega)
            + gammaln(a) - gammaln(a + 0.5))


def nig_uncertainties(nu, a, beta):
    """Aleatoric ``E[sigma^2] = beta / (a - 1)`` and epistemic ``Var[mu] = beta / (nu (a - 1))``, for ``a > 1``."""
    _checks.positive(nu, "nu")
    _checks.positive(beta, "beta")
    if isinstance(a, (int, float)) and not a > 1:
        raise ValueError(f"a must exceed 1 for the variances to exist, got {a}")
    aleatoric = beta / (jnp.asarray(a) - 1)
    return aleatoric, aleatoric / nu


def init(key, sizes):
    """A ReLU MLP of widths ``sizes = (D, hidden..., K)`` whose outputs become evidence."""
    return mlp_init(key, sizes, activation="relu")


def evidence_of(params, x):
    """Non-negative evidence (K,) for one input ``x`` (D,): the softplus of the network's outputs."""
    return jax.nn.softplus(mlp_apply(params, x, activation="relu"))


@cached  # a training run that the tests may share with the build (cookbook/_memo.py)
def fit_classifier(params, X, labels, *, steps, kl_weight=1.0, learning_rate=0.01):
    """Full-batch Adam on the mean :func:`classification_loss` over ``X`` (N, D) and integer ``labels``
    (N,), the KL weight rising linearly from 0 to ``kl_weight`` over the first half of the steps.
    Returns the parameters and the loss before each step, (steps,)."""
    X = _checks.float_array(X, "X", ndim=2, what=" (N, D)")
    labels = _checks.int_array(labels, "labels", ndim=1, what=" (N,)")
    _checks.same_shape(labels, "labels", X.shape[:1], expected_from="N from X")
    if not isinstance(params, (list, tuple)) or not params:
        raise TypeError(f"params must be a non-empty list of {{'W', 'b'}} layers, got {type(params).__name__}")
    for l, layer in enumerate(params):
        _checks.float_array(layer["W"], f"params[{l}]['W']", ndim=2)
        _checks.float_array(layer["b"], f"params[{l}]['b']", ndim=1)
    D, K = jnp.shape(params[0]["W"])[0], jnp.shape(params[-1]["W"])[-1]
    _checks.same_shape(X, "X", (X.shape[0], D), expected_from="D from params[0]['W']")
    _checks.check_range(labels, "labels", 0, K)
    _checks.size(steps, "steps")
    _checks.positive(kl_weight, "kl_weight", allow_zero=True)
    _checks.positive(learning_rate, "learning_rate")
    return _fit(params, X, labels, _checks.static_number(kl_weight, "kl_weight"),
                _checks.static_number(learning_rate, "learning_rate"), steps)


# The checks run in Python and the training is one compiled program: called eagerly, the scan would
# trace and compile again on every call. kl_weight and learning_rate are static (Python floats), so
# that under jax.jit fit_classifier only forwards its arrays here and the jit check reuses this
# compilation instead of compiling the whole run once more.
@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _fit(params, X, labels, kl_weight, learning_rate, steps):
    def loss(params, weight):
        evidence = jax.vmap(evidence_of, in_axes=(None, 0))(params, X)  # (N, K)
        return jnp.mean(jax.vmap(lambda e, l: _classification_loss(e, l, weight))(evidence, labels))

    optimizer = adam(1.0)  # the step size is applied below

    def step(carry, weight):
        params, state = carry
        value, grads = jax.value_and_grad(loss)(params, weight)
        updates, state = optimizer.update(grads, state, params)
        return (jax.tree.map(lambda p, u: p + learning_rate * u, params, updates), state), value

    weights = kl_weight * jnp.minimum(1.0, jnp.arange(steps, dtype=X.dtype) / max(steps // 2, 1))
    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), weights)
    return params, losses
