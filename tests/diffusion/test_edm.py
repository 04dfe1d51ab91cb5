import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.diffusion.ddpm import denoiser_init, mmd2, two_moons
from cookbook.diffusion.edm import (
    _heun,
    denoise,
    edm_loss,
    heun_sample,
    preconditioning,
    sigma_schedule,
    trained_moons_edm,
)


def _params(seed=0):
    """Random weights in NumPy, in the shapes of the page's network: its compiled programs serve."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda key: denoiser_init(key, 2), jax.random.key(0))
    return [{"W": (rng.standard_normal(layer["W"].shape) / np.sqrt(layer["W"].shape[0])).astype(np.float32),
             "b": np.zeros(layer["b"].shape, np.float32)} for layer in shapes]


@pytest.mark.parametrize("N", [2, 16, 32])  # the levels of the Heun test: its programs
def test_schedule_matches_the_closed_form_in_float64(N):
    i = np.arange(N)
    expected = (80.0 ** (1 / 7) + i / (N - 1) * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    got = sigma_schedule(N)
    assert got.shape == (N + 1,) and got.dtype == jnp.float32
    got = np.asarray(got)  # read in NumPy: indexing the array would compile a slice per shape
    assert float(got[-1]) == 0.0
    np.testing.assert_allclose(got[:-1], expected, rtol=2e-5)
    np.testing.assert_allclose([got[0], got[N - 1]], [80.0, 0.002], rtol=2e-5)  # first and last levels


@pytest.mark.parametrize("sigma", [0.002, 1.0, 80.0])
def test_preconditioning_matches_the_closed_forms_and_gives_unit_variance(sigma):
    sd = 0.5
    c_skip, c_out, c_in, c_noise = (np.asarray(c) for c in preconditioning(jnp.float32(sigma), sigma_data=sd))
    total = sigma**2 + sd**2
    np.testing.assert_allclose([c_skip, c_out, c_in, c_noise],
                               [sd**2 / total, sigma * sd / np.sqrt(total), 1 / np.sqrt(total), np.log(sigma) / 4], rtol=1e-5)
    # the network's input c_in (y + n) has unit variance, and so has its effective target
    # (y - c_skip (y + n)) / c_out, for y of variance sd^2 and n of variance sigma^2
    assert (float(c_in) ** 2 * total) == pytest.approx(1.0, rel=1e-5)
    target_var = ((1 - c_skip) ** 2 * sd**2 + c_skip**2 * sigma**2) / c_out**2
    assert float(target_var) == pytest.approx(1.0, rel=1e-4)


def test_the_weighted_loss_is_the_unit_weight_regression_of_the_raw_network():
    # lambda |D - y|^2 = |F - (y - c_skip x) / c_out|^2: the weight times c_out^2 is exactly 1
    sigma = np.array([0.01, 0.3, 2.0, 50.0], np.float32)
    c_skip, c_out, c_in, _ = preconditioning(sigma, sigma_data=1.0)
    weight = (sigma**2 + 1.0) / sigma**2
    np.testing.assert_allclose(weight * np.asarray(c_out) ** 2, np.ones(4), rtol=1e-5)


def test_heun_is_second_order_on_gaussian_data_with_the_exact_denoiser():
    s = 0.7
    exact_denoiser = lambda x, sigma: s**2 / (s**2 + sigma**2) * x  # E[y | x] for y ~ N(0, s^2)
    x0 = np.linspace(-3.0, 3.0, 7, dtype=np.float32)[:, None] * 80.0
    exact = x0 * s / np.float32(np.sqrt(s**2 + 80.0**2))  # x(sigma) = x(sigma_0) sqrt((s^2 + sigma^2) / (s^2 + sigma_0^2))
    # one program for both numbers of levels
    heun = jax.jit(lambda *schedules: [_heun(exact_denoiser, x0, sigmas) for sigmas in schedules])

    def euler(x, sigmas):  # the first-order reference, in NumPy (float32, as the recipe)
        for k in range(sigmas.shape[0] - 1):
            x = x + (sigmas[k + 1] - sigmas[k]) * (x - exact_denoiser(x, sigmas[k])) / sigmas[k]
        return x

    schedules = [np.asarray(sigma_schedule(N)) for N in (16, 32)]
    heun_err = [float(np.max(np.abs(np.asarray(x) - exact))) for x in heun(*schedules)]
    euler_err = [float(np.max(np.abs(euler(x0, sigmas) - exact))) for sigmas in schedules]
    # measured: Heun 0.137 -> 0.030 (ratio 4.6), Euler about halves
    assert 3.5 < heun_err[0] / heun_err[1] < 5.5
    assert 1.5 < euler_err[0] / euler_err[1] < 2.6
    assert heun_err[1] < euler_err[1] / 4  # measured: 0.030 against 0.176


def test_denoiser_output_at_tiny_noise_is_the_input():
    # c_skip -> 1 and c_out -> 0 as sigma -> 0: the denoiser leaves a clean point alone
    x = np.array([0.3, -1.2], np.float32)
    np.testing.assert_allclose(denoise(_params(), x, np.float32(1e-4)), x, atol=2e-4)  # measured: within 1e-5


@pytest.fixture(scope="module")
def trained():
    return trained_moons_edm()


def test_it_learns_two_moons_with_heun_in_35_evaluations(trained):
    params, _ = trained
    data, other = two_moons(jax.random.key(3), 1000), two_moons(jax.random.key(4), 1000)
    baseline = float(mmd2(other, data))
    # measured: 0.037 with 10 levels, 0.011 with 18; data against data 0.008
    assert float(mmd2(heun_sample(params, jax.random.key(5), 1000, 18), data)) < 2 * baseline
    assert float(mmd2(heun_sample(params, jax.random.key(5), 1000, 10), data)) > 2 * baseline


def test_a_schedule_traced_by_an_outer_jit_samples_as_the_same_numbers_do():
    # Numbers for sigma_min, sigma_max and rho are built into the sampler's program; traced by an
    # outer jax.jit they are arguments of a second program, which must draw the same points.
    params, key, schedule = _params(1), jax.random.key(2), dict(sigma_min=0.01, sigma_max=20.0, rho=5.0)
    eager = np.asarray(heun_sample(params, key, 6, 4, **schedule))
    traced = jax.jit(heun_sample, static_argnums=(2, 3))(params, key, 6, 4, **schedule)
    assert eager.shape == (6, 2) and np.all(np.isfinite(eager))
    np.testing.assert_allclose(np.asarray(traced), eager, rtol=1e-5, atol=1e-5)
    other = np.asarray(jax.jit(heun_sample, static_argnums=(2, 3))(params, key, 6, 4, 0.01, 20.0, 3.0))
    assert np.abs(other - eager).max() > 0.1  # and rho reaches it (0.85 apart; the two above 2e-7)


@pytest.mark.parametrize("call, match", [
    (lambda: sigma_schedule(1), "num_steps must be at least 2"),
    (lambda: sigma_schedule(5, 1.0, 0.5), "sigma_min must be below sigma_max"),
    (lambda: preconditioning(jnp.float32(1.0), sigma_data=0.0), "sigma_data must be positive"),
    (lambda: denoise(_params(), np.ones(3, np.float32), np.float32(1.0)), r"x must have shape \(2,\)"),
    (lambda: denoise(_params(), np.ones(2, np.float32), np.ones(2, np.float32)), r"sigma must have 0 axes"),
    (lambda: edm_loss(_params(), np.ones((3, 3), np.float32), jax.random.key(0)), r"y must have shape \(3, 2\)"),
])
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_integer_input_raises_type_error():
    with pytest.raises(TypeError, match="sigma must be a floating-point array"):
        preconditioning(np.ones(3, np.int32))
