import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.theory.double_descent import expected_risk, fit, sampled_risk

#: Monte Carlo tolerance: a measured mean lies within Z standard errors of the prediction.
Z = 4.0
N, D, NOISE, TRIALS = 40, 120, 0.1, 400
#: Numbers of features on both sides of the threshold p = n = 40, at least 7 away from it: the test
#: error's variance over training sets is finite only for |p - n| > 3.
PS = (5, 10, 20, 30, 55, 80, 120)


@pytest.fixture(scope="module")
def risks():
    beta = jnp.ones(D) / math.sqrt(D)  # every feature carries the same small part of the signal
    return np.asarray(sampled_risk(jax.random.key(0), beta, jnp.array(PS), n=N, noise=NOISE, trials=TRIALS))


def test_measured_test_error_matches_the_exact_formula(risks):
    expected = [expected_risk(N, p, signal_in=p / D, signal_out=1 - p / D, noise=NOISE) for p in PS]
    z = [(row.mean() - e) / (row.std() / math.sqrt(TRIALS)) for row, e in zip(risks, expected)]
    assert max(map(abs, z)) < Z, z
    # The page's example (the same fits, key 0): the formula's values, and all within 2 standard errors.
    assert [round(e, 2) for e in expected] == [1.21, 1.37, 1.92, 3.68, 2.6, 1.21, 0.82]
    assert max(map(abs, z)) < 2, z


def test_the_curve_descends_twice_and_the_largest_model_is_best():
    curve = {p: expected_risk(N, p, signal_in=p / D, signal_out=1 - p / D, noise=NOISE) for p in range(1, D + 1)}
    # First descent is absent here (weak features): the error rises from p = 1 up to the threshold...
    assert all(curve[p] < curve[p + 1] for p in range(1, N - 2))
    assert all(math.isinf(curve[p]) for p in (N - 1, N, N + 1))
    # ...falls all the way after it, and ends below the best small model.
    assert all(curve[p] > curve[p + 1] for p in range(N + 2, D))
    assert curve[D] < min(curve[p] for p in range(1, N - 1))
    assert round(curve[D], 4) == 0.8173 and round(curve[1], 4) == 1.1204


def test_the_formula_tends_to_the_asymptotic_limit():
    # Hastie et al.: with all features seen (signal_out = 0), r^2 = 1 and gamma = p / n, the excess
    # error is sigma^2 gamma / (1 - gamma) below the threshold and r^2 (1 - 1/gamma) + sigma^2 / (gamma - 1)
    # above; the test error adds sigma^2. At n = 10^5 the finite-sample formula is within 0.1 %.
    n = 100_000
    for gamma in (0.5, 2.0, 4.0):
        p = int(gamma * n)
        limit = NOISE * gamma / (1 - gamma) if gamma < 1 else (1 - 1 / gamma) + NOISE / (gamma - 1)
        assert expected_risk(n, p, signal_in=1.0, signal_out=0.0, noise=NOISE) == pytest.approx(limit + NOISE, rel=1e-3)


def test_fit_is_numpys_minimum_norm_least_squares():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(7, 11)).astype(np.float32), rng.normal(size=7).astype(np.float32)
    for p in (3, 7, 11):
        expected = np.zeros(11)
        expected[:p] = np.linalg.lstsq(X[:, :p].astype(np.float64), y.astype(np.float64), rcond=None)[0]
        np.testing.assert_allclose(fit(X, y, p), expected, rtol=1e-4, atol=1e-4)
    # Past the threshold it interpolates, and it is the interpolant of smallest norm.
    beta_hat = np.asarray(fit(X, y, 11), np.float64)
    np.testing.assert_allclose(X @ beta_hat, y, atol=1e-4)
    other = beta_hat + np.linalg.svd(X)[2][-1]  # add a direction of the null space
    np.testing.assert_allclose(X @ other, y, atol=1e-4)
    assert np.linalg.norm(other) > np.linalg.norm(beta_hat)


def test_bad_input_raises_clear_errors():
    X, y = jnp.ones((3, 5)), jnp.ones(3)
    with pytest.raises(ValueError, match=r"p must be in \[1, D\] = \[1, 5\] with D the columns of X, got 6"):
        fit(X, y, 6)
    with pytest.raises(TypeError, match=r"p must be an int"):
        fit(X, y, 2.0)
    with pytest.raises(ValueError, match=r"y must have shape \(3,\)"):
        fit(X, jnp.ones(4), 2)
    with pytest.raises(ValueError, match=r"ps must lie in \[1, D\] with D = 5 the length of beta"):
        sampled_risk(jax.random.key(0), jnp.ones(5), jnp.array([0, 2]), n=3, noise=0.1, trials=2)
    with pytest.raises(TypeError, match=r"ps must be an integer array"):
        sampled_risk(jax.random.key(0), jnp.ones(5), jnp.array([1.0]), n=3, noise=0.1, trials=2)
    with pytest.raises(ValueError, match=r"noise must be non-negative"):
        expected_risk(10, 3, signal_in=1.0, signal_out=0.0, noise=-0.1)
