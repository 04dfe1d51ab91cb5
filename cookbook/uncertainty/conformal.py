r"""Conformal prediction
====================

Split conformal prediction turns any fitted regressor into intervals that contain the truth with a
chosen probability, whatever the model and whatever the distribution of the data, using nothing but
a held-out calibration set: the tool to reach for when a guarantee matters more than a model.

Equation
--------

.. math::

   \begin{aligned}
   s_i &= \lvert y_i - \hat{\mu}(x_i) \rvert, \qquad i = 1, \dots, n, \\
   \hat{q} &= s_{(k)}, \qquad k = \lceil (n + 1)(1 - \alpha) \rceil
     \quad (\hat{q} = \infty \text{ if } k > n), \\
   C(x) &= [\hat{\mu}(x) - \hat{q},\; \hat{\mu}(x) + \hat{q}], \qquad
   1 - \alpha \le P\left(y_{n+1} \in C(x_{n+1})\right) \le 1 - \alpha + \tfrac{1}{n + 1}, \\
   \text{CQR:}\quad s_i &= \max\left(\hat{q}_{\mathrm{lo}}(x_i) - y_i,\; y_i - \hat{q}_{\mathrm{hi}}(x_i)\right),
   \qquad C(x) = [\hat{q}_{\mathrm{lo}}(x) - \hat{q},\; \hat{q}_{\mathrm{hi}}(x) + \hat{q}], \\
   \rho_\tau(u) &= \max\left(\tau u,\; (\tau - 1) u\right)
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_i`, :math:`y_i`, :math:`i`, :math:`n`
     - calibration inputs and targets, their index and number
     - ``y_cal``
     - ``(n,)``
   * - :math:`\hat{\mu}`
     - any point predictor, fitted on other data
     - ``pred_cal``, ``pred_test`` (its predictions)
     - ``(n,)``, ``(M,)``
   * - :math:`s_i`, :math:`s_{(k)}`
     - nonconformity scores; the :math:`k`-th smallest of them
     - ``scores``, ``jnp.sort(scores)[k - 1]``
     - ``(n,)``, scalar
   * - :math:`\alpha`, :math:`k`
     - miscoverage level (0.1 for 90 % intervals); rank of the quantile
     - ``alpha``, ``k``
     - scalars
   * - :math:`\hat{q}`
     - conformal quantile: how far to widen
     - ``conformal_quantile``, ``q_hat``
     - scalar
   * - :math:`C(x)`
     - the prediction interval at a new input
     - ``(lower, upper)``
     - ``(M,)`` each
   * - :math:`P`
     - probability over the calibration data and the new point together
     - (none)
     - scalar
   * - :math:`\hat{q}_{\mathrm{lo}}`, :math:`\hat{q}_{\mathrm{hi}}`
     - fitted lower and upper conditional quantiles (CQR)
     - ``lo_cal``, ``hi_cal``, ``lo_test``, ``hi_test``
     - ``(n,)``, ``(M,)``
   * - :math:`\rho_\tau`, :math:`\tau`, :math:`u`
     - pinball (quantile) loss, its level, a residual :math:`y - \hat{q}_\tau(x)`
     - ``pinball_loss``, ``tau``, ``u``
     - scalar

Explanation
-----------

Fit any model on one part of the data. On a second part, the calibration set, measure how wrong it
is: the scores :math:`s_i`. If a new point is exchangeable with the calibration points (drawn the
same way, the order carrying no information), its score is equally likely to fall in any of the
:math:`n + 1` ranks among them. So the probability that it is at most the :math:`k`-th smallest
calibration score is at least :math:`k / (n + 1) \ge 1 - \alpha`, and exactly that when scores
do not tie :footcite:p:`vovk2005algorithmic,lei2018distribution`. Widening every prediction by
:math:`\hat{q}` therefore covers the truth with probability at least :math:`1 - \alpha`, and at most
:math:`1/(n+1)` more. The model can be wrong, misspecified or a deep network; nothing but
exchangeability is assumed. The :math:`+1` is the new point's own rank: with too few calibration
points (:math:`(n + 1)(1 - \alpha) > n`, for example :math:`n < 9` at :math:`\alpha = 0.1`) no
finite :math:`\hat{q}` suffices, and the interval is the whole line.

The guarantee is *marginal*: averaged over inputs and over the draw of the calibration set, not for
each input. With absolute residuals every interval has the same width, too wide where the noise is
small and too narrow where it is large. Conformalised quantile regression (CQR)
:footcite:p:`romano2019conformalized` fixes the shape: fit the :math:`\alpha/2` and
:math:`1 - \alpha/2` conditional quantiles by minimising the pinball loss :math:`\rho_\tau`, whose
minimiser is the :math:`\tau`-quantile, then conformalise the band's errors the same way. The band
keeps the fitted shape and gains the guarantee.

.. admonition:: Intuition

   A tailor who does not trust his measuring tape measures, on a test run of customers, how far off
   each of his suits is, and adds the seam allowance that would have fitted nine customers in ten.
   He need not know why his tape is wrong, only that the next customer is like the last ones.

.. plot::

   import jax
   import numpy as np
   from cookbook.uncertainty.conformal import cqr, fit_linear_quantiles, split_conformal

   rng = np.random.default_rng(0)
   x = rng.uniform(-3, 3, 600).astype(np.float32)
   y = (0.5 * x + (0.1 + 0.4 * np.abs(x)) * rng.standard_normal(600)).astype(np.float32)
   feats = np.stack([np.ones_like(x), x, np.abs(x)], 1)
   fit = jax.jit(fit_linear_quantiles, static_argnames="steps")
   W, _ = fit(feats[:300], y[:300], taus=np.float32([0.05, 0.5, 0.95]), steps=500)
   pred = feats @ np.asarray(W)  # (N, 3): lower, median, upper
   grid = np.linspace(-3, 3, 101, dtype=np.float32)
   g = np.stack([np.ones_like(grid), grid, np.abs(grid)], 1) @ np.asarray(W)
   cal = slice(300, 600)
   lo1, hi1 = split_conformal(pred[cal, 1], y[cal], g[:, 1], alpha=0.1)
   lo2, hi2 = cqr(pred[cal, 0], pred[cal, 2], y[cal], g[:, 0], g[:, 2], alpha=0.1)
   fig, axes = plt.subplots(1, 2, figsize=(8, 3), sharey=True)
   for ax, lo, hi, name in [(axes[0], lo1, hi1, "split conformal"), (axes[1], lo2, hi2, "CQR")]:
       ax.plot(x, y, "k.", ms=2)
       ax.fill_between(grid, lo, hi, alpha=0.3)
       ax.set(title=f"{name}: 90 % intervals", xlabel="x")
   fig.tight_layout()

On data whose noise grows with :math:`|x|`, both bands cover 90 % of new points (the tests check it
over 50 random splits); only the CQR band is narrow where the noise is small.

Inductive bias
--------------

Conformal prediction assumes exchangeability and nothing else: no model, no noise distribution. That
is its strength and its limit. It cannot repair a shift between calibration and test data (new
hospitals, a later year), which breaks the assumption, and its guarantee says nothing about any one
input: a poor model yields honest but wide intervals. The width is where the model's quality shows;
CQR lets a model that knows where the noise is large say so.

Example
-------

Ten calibration scores; at :math:`\alpha = 0.1`, :math:`k = \lceil 11 \cdot 0.9 \rceil = 10`:

>>> import jax.numpy as jnp
>>> from cookbook.uncertainty.conformal import conformal_quantile, cqr, pinball_loss, split_conformal
>>> scores = jnp.array([0.3, 1.2, 0.1, 0.8, 0.5, 2.0, 0.7, 0.2, 0.9, 0.4])
>>> float(conformal_quantile(scores, 0.1)), round(float(conformal_quantile(scores, 0.2)), 3)  # k = 10, then 9
(2.0, 1.2)
>>> float(conformal_quantile(scores[:8], 0.1))  # too few points: the whole line
inf

An interval around each prediction, and CQR widening a band:

>>> y_cal = jnp.array([1.0, 2.0, 3.0, 4.0])
>>> lower, upper = split_conformal(jnp.array([1.5, 2.0, 2.0, 4.5]), y_cal, jnp.array([0.0, 10.0]), alpha=0.2)
>>> lower, upper
(Array([-1., 9.], dtype=float32), Array([ 1., 11.], dtype=float32))
>>> lo, hi = cqr(y_cal - 1, y_cal + 0.5, y_cal, jnp.array([0.0]), jnp.array([1.0]), alpha=0.2)
>>> lo, hi  # the scores are all -0.5: the band shrinks by 0.5 on both sides
(Array([0.5], dtype=float32), Array([0.5], dtype=float32))
>>> float(pinball_loss(jnp.array([0.0, 0.0]), jnp.array([1.0, -1.0]), tau=0.9))
0.5

Linear quantile regression of a noiseless line finds the line for every level:

>>> from cookbook.uncertainty.conformal import fit_linear_quantiles
>>> x = jnp.linspace(0.0, 1.0, 11)
>>> W, losses = fit_linear_quantiles(jnp.stack([jnp.ones(11), x], 1), 2 * x, taus=jnp.array([0.1, 0.9]), steps=300)
>>> W.round(1) + 0.0  # + 0.0 turns -0.0 into 0.0
Array([[0., 0.],
       [2., 2.]], dtype=float32)

Implementation notes
--------------------

The rank :math:`k` is computed in Python from the static ``alpha`` and a tolerance of
:math:`10^{-9}`, so that :math:`(n + 1)(1 - \alpha)` that is an integer in exact arithmetic
(:math:`20 \cdot 0.3`, which is 6.000000000000001 in floating point) is not rounded up to the next
rank; a NumPy or JAX scalar ``alpha`` is read as the shortest decimal of its dtype (a float32
0.7, stored as 0.699999988, as 0.7). In NumPy the same number is ``np.quantile(scores, k / n, method="inverted_cdf")``; see
Angelopoulos and Bates :footcite:p:`angelopoulos2023conformal` for a practical introduction.
``fit_linear_quantiles`` fits linear quantile regression by Adam (:doc:`/docs/chapters/optimization/adam`) on the pinball loss; the tests check
that it reaches the loss of scikit-learn's linear-programming ``QuantileRegressor`` within 1 %.
The libraries MAPIE and crepes implement these and many other conformal methods (full, jackknife+,
conformal classification with prediction sets).
"""

import functools
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks
from cookbook.optimization.adam import adam

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"conformal_quantile": ("alpha",), "split_conformal": ("alpha",), "cqr": ("alpha",), "pinball_loss": (),
       "fit_linear_quantiles": ("steps",)}
#: Arguments whose last axis may take any size: any number n of calibration scores is valid.
FREE_LENGTH = {"conformal_quantile": ("scores",)}


def _alpha(alpha):
    """``alpha`` as a Python float in (0, 1): a number, or a concrete scalar array (it is static)."""
    if (isinstance(alpha, (jax.Array, np.ndarray, np.floating)) and np.ndim(alpha) == 0
            and _checks.is_concrete(alpha) and jnp.issubdtype(alpha.dtype, jnp.floating)):
        alpha = float(str(np.asarray(alpha)[()]))  # the shortest decimal of its dtype: float32 0.7 is 0.7
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be a real number in (0, 1), known when the function is traced (it is "
                        f"static), got {alpha!r}"[:200])
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    return float(alpha)


def conformal_quantile(scores, alpha):
    """The ``ceil((n + 1)(1 - alpha))``-th smallest of the ``n`` calibration ``scores`` (n,), or ``+inf``
    when that rank exceeds ``n``. A NaN among the scores gives NaN."""
    scores = _checks.float_array(scores, "scores", ndim=1, what=" (n,)")
    return _conformal_quantile(scores, alpha=_alpha(alpha))


def _quantile(scores, alpha):
    n = scores.shape[0]
    k = math.ceil((n + 1) * (1 - alpha) - 1e-9)  # exact-arithmetic integers are not rounded up
    if k > n:
        q_hat = jnp.array(jnp.inf, scores.dtype)
    else:
        q_hat = jnp.sort(scores)[k - 1]
    return jnp.where(jnp.isnan(scores).any(), jnp.nan, q_hat)


_conformal_quantile = jax.jit(_quantile, static_argnames="alpha")


def _pairs(cal, cal_names, test, test_names, y_cal):
    y_cal = _checks.float_array(y_cal, "y_cal", ndim=1, what=" (n,)")
    cal = [_checks.same_shape(_checks.float_array(a, name, ndim=1, what=" (n,)"), name, y_cal.shape,
                              expected_from="n from y_cal") for a, name in zip(cal, cal_names)]
    test = [_checks.float_array(a, name, ndim=1, what=" (M,)") for a, name in zip(test, test_names)]
    for a, name in zip(test[1:], test_names[1:]):
        _checks.same_shape(a, name, test[0].shape, expected_from=f"M from {test_names[0]}")
    return cal, test, y_cal


def split_conformal(pred_cal, y_cal, pred_test, alpha):
    """Intervals ``(lower, upper)``, each (M,), around point predictions ``pred_test`` (M,), from the
    absolute residuals of ``pred_cal`` (n,) on the calibration targets ``y_cal`` (n,)."""
    (pred_cal,), (pred_test,), y_cal = _pairs([pred_cal], ["pred_cal"], [pred_test], ["pred_test"], y_cal)
    return _split_conformal(pred_cal, y_cal, pred_test, alpha=_alpha(alpha))


@functools.partial(jax.jit, static_argnames="alpha")
def _split_conformal(pred_cal, y_cal, pred_test, alpha):
    scores = jnp.abs(y_cal - pred_cal)
    q_hat = _quantile(scores, alpha)
    lower, upper = pred_test - q_hat, pred_test + q_hat
    return lower, upper


def cqr(lo_cal, hi_cal, y_cal, lo_test, hi_test, alpha):
    """Conformalised quantile regression: the fitted band ``[lo_test, hi_test]`` (M,) widened (or
    narrowed, when the band was too wide) by the conformal quantile of its calibration errors."""
    (lo_cal, hi_cal), (lo_test, hi_test), y_cal = _pairs(
        [lo_cal, hi_cal], ["lo_cal", "hi_cal"], [lo_test, hi_test], ["lo_test", "hi_test"], y_cal)
    return _cqr(lo_cal, hi_cal, y_cal, lo_test, hi_test, alpha=_alpha(alpha))


@functools.partial(jax.jit, static_argnames="alpha")
def _cqr(lo_cal, hi_cal, y_cal, lo_test, hi_test, alpha):
    scores = jnp.maximum(lo_cal - y_cal, y_cal - hi_cal)  # positive outside the band, negative inside
    q_hat = _quantile(scores, alpha)
    lower, upper = lo_test - q_hat, hi_test + q_hat
    return lower, upper


def pinball_loss(pred, y, tau):
    """Mean pinball loss of quantile predictions ``pred`` for targets ``y``, both (N,), at level ``tau``."""
    pred = _checks.float_array(pred, "pred", ndim=1, what=" (N,)")
    y = _checks.same_shape(_checks.float_array(y, "y", ndim=1, what=" (N,)"), "y", pred.shape, expected_from="pred")
    _checks.positive(tau, "tau")
    return _pinball_loss(pred, y, tau)


@jax.jit
def _pinball_loss(pred, y, tau):
    u = y - pred
    return jnp.mean(jnp.maximum(tau * u, (tau - 1) * u))


def fit_linear_quantiles(features, y, *, taus, steps, learning_rate=0.1):
    """Linear quantile regression: weights ``W`` (F, Q) such that ``features @ W[:, j]`` estimates the
    ``taus[j]`` conditional quantile of ``y`` (N,) given ``features`` (N, F), fitted by Adam on the
    summed pinball losses from zero, with a step size that falls linearly to zero. Returns ``W`` and the loss before each step, shape (steps,)."""
    features = _checks.float_array(features, "features", ndim=2, what=" (N, F)")
    y = _checks.float_array(y, "y", ndim=1, what=" (N,)")
    _checks.same_shape(y, "y", features.shape[:1], expected_from="N from features")
    taus = _checks.float_array(taus, "taus", ndim=1, what=" (Q,)")
    if _checks.is_concrete(taus) and not bool(np.all((np.asarray(taus) > 0) & (np.asarray(taus) < 1))):
        raise ValueError(f"taus must lie in (0, 1), got {taus}")
    _checks.size(steps, "steps")
    _checks.positive(learning_rate, "learning_rate")
    return _fit(features, y, taus, steps=steps, learning_rate=_checks.static_number(learning_rate, "learning_rate"))


@functools.partial(jax.jit, static_argnames=("steps", "learning_rate"))
def _fit(features, y, taus, steps, learning_rate):

    def loss(W):
        u = y[:, None] - features @ W  # (N, Q)
        return jnp.sum(jnp.mean(jnp.maximum(taus[None, :] * u, (taus[None, :] - 1) * u), axis=0))

    optimizer = adam(1.0)  # the step size is applied below, so that it may be traced

    def step(carry, decay):
        W, state = carry
        value, grad = jax.value_and_grad(loss)(W)
        updates, state = optimizer.update(grad, state, W)
        return (W + learning_rate * decay * updates, state), value  # shrinks to 0: the loss has kinks

    W = jnp.zeros((features.shape[1], taus.shape[0]), features.dtype)
    decay = 1.0 - jnp.arange(steps, dtype=features.dtype) / steps
    (W, _), losses = jax.lax.scan(step, (W, optimizer.init(W)), decay)
    return W, losses
