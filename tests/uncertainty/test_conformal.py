import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import QuantileRegressor

from cookbook.uncertainty.conformal import conformal_quantile, cqr, fit_linear_quantiles, pinball_loss, split_conformal

ALPHA = 0.1
fit_jit = jax.jit(fit_linear_quantiles, static_argnames="steps")


def reference_quantile(scores, alpha):
    """The ceil((n+1)(1-alpha))-th smallest score, the rank computed in exact rational arithmetic."""
    n = len(scores)
    k = math.ceil((n + 1) * (1 - Fraction(str(alpha))))
    return np.inf if k > n else np.sort(scores)[k - 1]


# ---- The quantile ------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [3, 5, 9, 11, 19, 100])
@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.3, 0.7])
def test_conformal_quantile_matches_the_rank_in_exact_arithmetic(n, alpha):
    scores = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    assert float(conformal_quantile(scores, alpha)) == reference_quantile(scores, alpha)


def test_integer_ranks_are_not_rounded_up_and_the_textbook_formula_agrees():
    scores = np.arange(19, dtype=np.float32)[::-1] * 1.5  # n = 19
    assert (19 + 1) * (1 - 0.7) > 6  # 6.000000000000001 in floating point
    assert float(conformal_quantile(scores, 0.7)) == 5 * 1.5  # the 6th smallest
    scores = np.random.default_rng(0).random(50).astype(np.float32)
    k = math.ceil(51 * 0.9)
    assert float(conformal_quantile(scores, 0.1)) == np.quantile(scores, k / 50, method="inverted_cdf")


def test_infinite_when_the_rank_exceeds_n_and_nan_shows():
    assert float(conformal_quantile(np.ones(8, np.float32), 0.1)) == np.inf  # ceil(9 * 0.9) = 9 > 8
    assert float(conformal_quantile(np.ones(9, np.float32), 0.1)) == 1.0  # ceil(10 * 0.9) = 9
    assert float(conformal_quantile([1.0], 0.4)) == np.inf  # ceil(2 * 0.6) = 2 > 1
    assert np.isnan(conformal_quantile(np.float32([1.0, np.nan, 2.0, 3.0, 4.0]), 0.5))
    assert float(jax.jit(conformal_quantile, static_argnames="alpha")(np.ones(8, np.float32), alpha=0.1)) == np.inf


def test_coverage_is_exactly_k_over_n_plus_one_for_exchangeable_scores():
    # 4000 draws of 19 calibration scores and one test score, i.i.d.: P(s_test <= q_hat) = 18/20.
    scores = np.random.default_rng(0).exponential(size=(4000, 20)).astype(np.float32)
    q_hat = np.asarray(jax.vmap(lambda s: conformal_quantile(s, ALPHA))(scores[:, :19]))
    coverage = float(np.mean(scores[:, 19] <= q_hat))
    assert abs(coverage - 18 / 20) < 0.015, coverage


# ---- It works: 50 random splits of the diabetes data ------------------------------------------------

def test_split_conformal_coverage_on_diabetes_averaged_over_50_splits():
    X, y = load_diabetes(return_X_y=True)
    X = np.c_[np.ones(len(X)), X]
    rng = np.random.default_rng(0)
    pred_cal, y_cal, pred_test, y_test = [], [], [], []
    for _ in range(50):
        order = rng.permutation(len(y))
        train, cal, test = order[:200], order[200:321], order[321:]
        w = np.linalg.lstsq(X[train], y[train], rcond=None)[0]  # any model will do
        pred_cal.append(X[cal] @ w), y_cal.append(y[cal]), pred_test.append(X[test] @ w), y_test.append(y[test])
    pred_cal, y_cal, pred_test, y_test = (np.float32(a) for a in (pred_cal, y_cal, pred_test, y_test))
    lower, upper = map(np.asarray, jax.vmap(lambda p, t, q: split_conformal(p, t, q, alpha=ALPHA))(
        pred_cal, y_cal, pred_test))
    covered = (lower <= y_test) & (y_test <= upper)  # (50, 121)
    coverage = float(covered.mean())
    assert 0.88 <= coverage <= 0.94, coverage  # expected: ceil(122 * 0.9) / 122 = 0.9016
    assert np.all((upper - lower).std(axis=1) < 1e-3)  # one width per split


@pytest.fixture(scope="module")
def heteroscedastic():
    """600 points with noise growing in |x|; 50 random splits into 200 train, 200 calibration, 200 test,
    with lower, median and upper linear quantile regression fitted on each training part."""
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 3, 600)
    y = np.float32(0.5 * x + (0.1 + 0.4 * np.abs(x)) * rng.standard_normal(600))
    feats = np.float32(np.stack([np.ones_like(x), x, np.abs(x)], 1))
    orders = np.stack([rng.permutation(600) for _ in range(50)])
    taus = np.float32([ALPHA / 2, 0.5, 1 - ALPHA / 2])
    fit = jax.vmap(lambda idx: fit_linear_quantiles(jnp.asarray(feats)[idx], jnp.asarray(y)[idx], taus=taus, steps=400)[0])
    W = jax.jit(fit)(orders[:, :200])  # (50, 3, 3)
    pred = np.einsum("nf,sfq->snq", feats, np.asarray(W))  # (50 splits, 600, 3)
    return x, y, feats, orders, pred


def test_cqr_covers_90_percent_and_adapts_its_width(heteroscedastic):
    x, y, feats, orders, pred = heteroscedastic
    take = lambda a, part: np.take_along_axis(a, orders[:, part], axis=1)
    cal, test = slice(200, 400), slice(400, 600)
    ys = np.broadcast_to(y, (50, 600))
    lo, mid, hi = pred[..., 0], pred[..., 1], pred[..., 2]
    cqr_lower, cqr_upper = jax.vmap(lambda a, b, c, d, e: cqr(a, b, c, d, e, alpha=ALPHA))(
        take(lo, cal), take(hi, cal), take(ys, cal), take(lo, test), take(hi, test))
    sc_lower, sc_upper = jax.vmap(lambda a, b, c: split_conformal(a, b, c, alpha=ALPHA))(
        take(mid, cal), take(ys, cal), take(mid, test))
    cqr_lower, cqr_upper, sc_lower, sc_upper = map(np.asarray, (cqr_lower, cqr_upper, sc_lower, sc_upper))
    y_test, x_test = take(ys, test), take(np.broadcast_to(x, (50, 600)), test)
    for lower, upper in [(cqr_lower, cqr_upper), (sc_lower, sc_upper)]:
        coverage = float(((lower <= y_test) & (y_test <= upper)).mean())
        assert 0.88 <= coverage <= 0.94, coverage
    cqr_width, sc_width = cqr_upper - cqr_lower, sc_upper - sc_lower
    near, far = np.abs(x_test) < 0.5, np.abs(x_test) > 2.5
    assert cqr_width[near].mean() < 0.5 * sc_width[near].mean()  # CQR is narrow where the noise is small
    assert cqr_width[far].mean() > 1.3 * sc_width[far].mean()  # and wide where it is large
    assert cqr_width.mean() < sc_width.mean()


# ---- Quantile regression and the pinball loss ---------------------------------------------------------

def test_fitted_quantiles_reach_the_loss_of_sklearns_linear_program(heteroscedastic):
    x, y, feats, orders, pred = heteroscedastic
    idx = orders[0, :200]
    for j, tau in enumerate([ALPHA / 2, 0.5, 1 - ALPHA / 2]):
        sk = QuantileRegressor(quantile=tau, alpha=0.0, fit_intercept=False, solver="highs").fit(feats[idx], y[idx])
        best = float(pinball_loss(feats[idx] @ np.float32(sk.coef_), y[idx], tau=tau))
        ours = float(pinball_loss(pred[0, idx, j], y[idx], tau=tau))
        assert best <= ours <= 1.01 * best, (tau, ours, best)


def test_pinball_loss_by_hand_and_its_minimiser_is_the_quantile():
    np.testing.assert_allclose(pinball_loss(np.zeros(3, np.float32), np.float32([2.0, -1.0, 0.0]), tau=0.25),
                               (0.5 + 0.75) / 3)
    y = np.random.default_rng(2).standard_normal(101).astype(np.float32)
    grid = np.linspace(-3, 3, 601, dtype=np.float32)
    losses = np.asarray(jax.jit(jax.vmap(lambda c: pinball_loss(jnp.full(101, c), y, tau=0.8)))(grid))
    assert abs(grid[int(np.argmin(losses))] - np.quantile(y, 0.8, method="inverted_cdf")) <= 0.01


# ---- Bad input ---------------------------------------------------------------------------------------

def test_clear_errors_on_bad_input():
    s = np.ones(5, np.float32)
    with pytest.raises(TypeError, match="scores"):
        conformal_quantile(np.arange(5), 0.1)
    with pytest.raises(ValueError, match="scores"):
        conformal_quantile(np.ones((5, 1), np.float32), 0.1)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="alpha"):
            conformal_quantile(s, bad)
    with pytest.raises(TypeError, match="alpha"):
        conformal_quantile(s, "0.1")
    with pytest.raises(TypeError, match="alpha"):  # traced: the rank must be known when tracing
        jax.jit(conformal_quantile)(s, 0.1)
    # NumPy and concrete JAX scalars are numbers too.
    assert float(conformal_quantile(s, np.float32(0.5))) == float(conformal_quantile(s, jnp.float32(0.5))) == 1.0
    scores = np.arange(19, dtype=np.float32)
    for alpha in (np.float32(0.7), jnp.float32(0.7), np.float64(0.7)):  # float32 0.7 is 0.699999988: still rank 6
        assert float(conformal_quantile(scores, alpha)) == 5.0
    with pytest.raises(ValueError, match="pred_cal"):
        split_conformal(np.ones(4, np.float32), s, s, alpha=0.1)
    with pytest.raises(ValueError, match="hi_test"):
        cqr(s, s, s, np.ones(3, np.float32), np.ones(4, np.float32), alpha=0.1)
    with pytest.raises(ValueError, match="taus"):
        fit_linear_quantiles(np.ones((5, 2), np.float32), s, taus=np.float32([0.5, 1.5]), steps=3)
    with pytest.raises(ValueError, match="y"):
        fit_linear_quantiles(np.ones((5, 2), np.float32), np.ones(4, np.float32), taus=np.float32([0.5]), steps=3)
