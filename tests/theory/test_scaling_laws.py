import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import curve_fit, minimize_scalar

from cookbook.theory.scaling_laws import (
    CHINCHILLA,
    KAPLAN,
    allocation_exponents,
    chinchilla_loss,
    compute_optimal,
    fit_power_law,
    power_law,
    predicted_loss,
    spectrum_sweep,
)

WIDTHS = (1, 2, 4, 8, 16, 32, 64)  # those of the page's figure


def test_chinchilla_allocation_exponents_from_the_published_fit():
    a, b = allocation_exponents(CHINCHILLA["alpha"], CHINCHILLA["beta"])
    assert a + b == pytest.approx(1.0)
    assert a == pytest.approx(0.45, abs=0.005) and b == pytest.approx(0.55, abs=0.005)  # the page
    assert abs(a - 0.5) < 0.06 and abs(b - 0.5) < 0.06  # about equal growth, unlike Kaplan's 0.73
    # N_opt grows as C^a: ten times the compute, 10^a times the parameters
    N1, D1 = compute_optimal(jnp.float32(1e21))
    N2, D2 = compute_optimal(jnp.float32(1e22))
    assert float(N2 / N1) == pytest.approx(10 ** a, rel=1e-4)
    assert float(D2 / D1) == pytest.approx(10 ** b, rel=1e-4)


@pytest.mark.parametrize("C", [1e18, 5.76e23, 1e26])
def test_compute_optimal_minimises_the_loss_on_the_compute_curve(C):
    # scipy's scalar minimiser of L(N, C / 6N) over log N, in float64, against the closed form
    p = CHINCHILLA
    loss_at = lambda log_n: p["A"] * np.exp(-p["alpha"] * log_n) + p["B"] * (C / (6 * np.exp(log_n))) ** (-p["beta"])
    best = minimize_scalar(loss_at, bracket=(5.0, 40.0), tol=1e-12)
    N, D = compute_optimal(jnp.float32(C))
    assert float(N) == pytest.approx(np.exp(best.x), rel=1e-3)
    assert float(6 * N * D) == pytest.approx(C, rel=1e-4)  # on the budget


def test_the_numbers_of_the_page():
    N, D = compute_optimal(jnp.float32(5.76e23))
    assert float(N) == pytest.approx(32.2e9, rel=0.01) and float(D) == pytest.approx(2.98e12, rel=0.01)
    # Chinchilla (70B, 1.4T tokens) against Gopher (280B, 300B tokens), the same compute: Chinchilla's
    # predicted loss is lower
    chinchilla = chinchilla_loss(jnp.float32(70e9), jnp.float32(1.4e12))
    gopher = chinchilla_loss(jnp.float32(280e9), jnp.float32(300e9))
    assert float(chinchilla) == pytest.approx(1.9366, abs=1e-3) and float(chinchilla) < float(gopher)
    # Kaplan's laws: the loss of a model of N_c parameters is 1 nat; exponents as published
    assert float(power_law(KAPLAN["N_c"], KAPLAN["N_c"] ** KAPLAN["alpha_N"], KAPLAN["alpha_N"])) == pytest.approx(1.0)
    assert (KAPLAN["alpha_N"], KAPLAN["alpha_D"]) == (0.076, 0.095)


def test_fit_power_law_recovers_a_law_and_agrees_with_scipy():
    x = np.geomspace(10.0, 1e5, 9)
    exact = power_law(x, 3.0, 0.35, 0.5)
    E, A, alpha = fit_power_law(x, exact)
    np.testing.assert_allclose([E, A, alpha], [0.5, 3.0, 0.35], rtol=2e-3)
    # with 1 % multiplicative noise, against scipy's curve_fit with the same relative weights
    y = np.asarray(exact, np.float64) * (1.0 + 0.01 * np.random.default_rng(0).standard_normal(x.size))
    reference, _ = curve_fit(lambda x, E, A, a: E + A * x ** (-a), x, y, p0=(0.5, 3.0, 0.35), sigma=y, maxfev=20000)
    got = fit_power_law(x.astype(np.float32), y.astype(np.float32))
    np.testing.assert_allclose(got, reference, rtol=2e-2)


@pytest.fixture(scope="module")
def sweep():
    return np.asarray(spectrum_sweep(jax.random.key(0), WIDTHS), np.float64)


def test_trained_models_follow_the_predicted_law(sweep):
    # The prediction assumes unlimited data and training. SGD's 300 steps on fresh batches of 256 leave
    # the weights a little short of the teacher's, a gap that grows with the number of weights
    # (0.8 % of the loss at the largest size, measured); 1 % is the page's figure.
    np.testing.assert_allclose(sweep, predicted_loss(WIDTHS), rtol=0.01)
    assert np.all(np.diff(sweep) < 0)  # a bigger model, a lower loss


def test_the_fit_reads_the_exponent_and_the_floor_back(sweep):
    E, A, alpha = fit_power_law(2.0 * np.array(WIDTHS, np.float32), sweep.astype(np.float32))
    assert float(alpha) == pytest.approx(1.5, abs=0.02)  # the page: 1.50
    assert float(E) == pytest.approx(0.01, abs=0.0005)  # the page: 0.010, the noise variance
    assert float(A) == pytest.approx(2 ** 1.5, rel=0.02)  # n^-alpha = 2^alpha N^-alpha


def test_bad_input_gets_a_clear_error():
    with pytest.raises(ValueError, match="N must be positive"):
        chinchilla_loss(jnp.float32(-1.0), jnp.float32(1e9))
    with pytest.raises(ValueError, match="D must have shape"):
        chinchilla_loss(jnp.ones(3), jnp.ones(4))
    with pytest.raises(TypeError, match="C must be a floating-point array"):
        compute_optimal(jnp.int32(10 ** 6))
    with pytest.raises(ValueError, match="at least 3 points"):
        fit_power_law(jnp.array([1.0, 2.0]), jnp.array([1.0, 0.5]))
    with pytest.raises(ValueError, match="y must have shape"):
        fit_power_law(jnp.array([1.0, 2.0, 3.0]), jnp.array([1.0, 0.5]))
    with pytest.raises(ValueError, match="alpha must be positive"):
        allocation_exponents(0.0, 0.3)
    with pytest.raises(ValueError, match="widths must be below"):
        spectrum_sweep(jax.random.key(0), (1, 300))
