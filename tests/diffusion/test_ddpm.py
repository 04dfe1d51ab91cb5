import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.diffusion.ddpm import (
    alpha_bar_schedule,
    ancestral_step,
    denoiser,
    denoiser_init,
    linear_beta_schedule,
    mmd2,
    posterior_mean_variance,
    q_sample,
    sample,
    trained_moons_model,
    two_moons,
)

T = 100
# One compilation each: eager code on (1000, 1000) kernels would compile every operation on its own.
_mmd2 = jax.jit(mmd2)
_moons = jax.jit(two_moons, static_argnums=1)
STEPS = (0, T // 2, T - 1)  # the first, a middle and the last step, 0-based


def _np_schedule(num_steps=T, start=1e-3, end=0.2):
    betas = np.linspace(start, end, num_steps, dtype=np.float64)
    return betas, np.cumprod(1.0 - betas)


def _rng(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def _ones(*shape):  # float32 ones in NumPy: a jnp.ones would compile a program for each shape
    return np.ones(shape, np.float32)


def test_linear_beta_schedule_matches_numpy_and_is_float32():
    betas = linear_beta_schedule(1000)
    assert betas.dtype == jnp.float32 and betas.shape == (1000,)
    betas = np.asarray(betas)
    np.testing.assert_allclose(betas, np.linspace(1e-4, 2e-2, 1000), rtol=1e-6, atol=1e-9)
    assert float(betas[0]) == pytest.approx(1e-4) and float(betas[-1]) == pytest.approx(2e-2)
    with jax.enable_x64(True):  # float32 even when float64 is on
        assert linear_beta_schedule(7, 0.1, 0.3).dtype == jnp.float32


def test_alpha_bar_of_the_stated_schedules():
    np.testing.assert_allclose(alpha_bar_schedule(linear_beta_schedule(T, 1e-3, 0.2)), _np_schedule()[1], rtol=1e-5)
    # the numbers of the page: about 4e-5 for Ho et al.'s schedule, 2e-5 for the examples' one,
    # 0.36 for 100 steps with the default ends (never reaches noise)
    last = lambda betas: float(np.asarray(alpha_bar_schedule(betas))[-1])
    assert last(linear_beta_schedule(1000)) == pytest.approx(4.04e-5, rel=1e-2)
    assert last(linear_beta_schedule(T, 1e-3, 0.2)) == pytest.approx(2.04e-5, rel=1e-2)
    assert last(linear_beta_schedule(T)) == pytest.approx(0.364, rel=1e-2)
    assert np.sqrt(_np_schedule()[1][-1]) == pytest.approx(0.0045, rel=1e-2)


@pytest.mark.parametrize("t", STEPS)
def test_q_sample_matches_the_closed_form_in_float64(t):
    betas, alpha_bar = _np_schedule()
    x0, noise = _rng(0, 5, 3), _rng(1, 5, 3)
    expected = np.sqrt(alpha_bar[t]) * x0 + np.sqrt(1 - alpha_bar[t]) * noise
    with jax.enable_x64(True):
        got = q_sample(x0, t, noise, alpha_bar)  # a scalar step
        batched = q_sample(x0, np.full(5, t), noise, alpha_bar)  # a step for each row
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(batched, expected, rtol=1e-13, atol=1e-14)


def test_q_sample_with_one_step_per_row():
    _, alpha_bar = _np_schedule()
    x0, noise, t = _rng(2, 7, 2), _rng(3, 7, 2), np.array([0, 3, 9, 50, 98, 99, 11])
    expected = np.sqrt(alpha_bar[t])[:, None] * x0 + np.sqrt(1 - alpha_bar[t])[:, None] * noise
    np.testing.assert_allclose(q_sample(x0.astype(np.float32), t, noise.astype(np.float32), alpha_bar.astype(np.float32)),
                               expected, rtol=1e-5, atol=1e-6)


def test_closed_form_matches_running_the_chain_step_by_step():
    # q(x_t | x_0) from the product is the law of t one-step noisings x <- sqrt(1 - beta) x + sqrt(beta) z.
    betas, alpha_bar = _np_schedule(num_steps=11, start=0.05, end=0.3)
    rng = np.random.default_rng(4)
    x = np.full(200_000, 1.5)
    for t in range(11):
        x = np.sqrt(1 - betas[t]) * x + np.sqrt(betas[t]) * rng.standard_normal(x.shape)
        if t in (0, 5, 10):  # mean and variance within 5 standard errors
            assert abs(x.mean() - np.sqrt(alpha_bar[t]) * 1.5) < 5 * np.sqrt((1 - alpha_bar[t]) / x.size)
            assert abs(x.var() - (1 - alpha_bar[t])) < 5 * (1 - alpha_bar[t]) * np.sqrt(2 / x.size)


def _posterior_by_conditioning(x0, xt, t, betas, alpha_bar):
    """q(x_{t-1} | x_t, x_0) by conditioning the joint Gaussian of (x_{t-1}, x_t) given x_0."""
    a_prev = 1.0 if t == 0 else alpha_bar[t - 1]
    var_prev, var_t = 1 - a_prev, 1 - alpha_bar[t]
    cov = np.sqrt(1 - betas[t]) * var_prev  # Cov(x_{t-1}, x_t | x_0), per coordinate
    mean = np.sqrt(a_prev) * x0 + cov / var_t * (xt - np.sqrt(alpha_bar[t]) * x0)
    return mean, var_prev - cov**2 / var_t


@pytest.mark.parametrize("t", STEPS)
def test_posterior_matches_the_formula_and_gaussian_conditioning_in_float64(t):
    betas, alpha_bar = _np_schedule()
    x0, xt = _rng(5, 3, 5), _rng(6, 3, 5)
    a_prev = 1.0 if t == 0 else alpha_bar[t - 1]
    formula_mean = (np.sqrt(a_prev) * betas[t] / (1 - alpha_bar[t]) * x0
                    + np.sqrt(1 - betas[t]) * (1 - a_prev) / (1 - alpha_bar[t]) * xt)
    formula_var = (1 - a_prev) / (1 - alpha_bar[t]) * betas[t]
    cond_mean, cond_var = _posterior_by_conditioning(x0, xt, t, betas, alpha_bar)
    with jax.enable_x64(True):
        mean, var = posterior_mean_variance(x0, xt, t, betas)
        assert mean.dtype == jnp.float64 and var.shape == ()
        np.testing.assert_allclose(mean, formula_mean, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(var, formula_var, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(mean, cond_mean, rtol=1e-10, atol=1e-11)
        np.testing.assert_allclose(var, cond_var, rtol=1e-9, atol=1e-14)
        mean_b, var_b = posterior_mean_variance(x0, xt, np.full(3, t), betas)
        np.testing.assert_allclose(mean_b, formula_mean, rtol=1e-12, atol=1e-13)
        assert var_b.shape == (3,)
    if t == 0:  # the last reverse step is deterministic and lands on x0
        assert float(var) == 0.0
        np.testing.assert_allclose(mean, x0, rtol=1e-12)


@pytest.mark.parametrize("t", STEPS)
def test_ancestral_step_matches_ho_et_al_equation_11_in_float64(t):
    # x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) + sqrt(beta~_t) z
    betas, alpha_bar = _np_schedule()
    xt, eps, z = _rng(7, 5, 2), _rng(8, 5, 2), _rng(9, 5, 2)
    a_prev = 1.0 if t == 0 else alpha_bar[t - 1]
    sigma = np.sqrt((1 - a_prev) / (1 - alpha_bar[t]) * betas[t])
    expected = (xt - betas[t] / np.sqrt(1 - alpha_bar[t]) * eps) / np.sqrt(1 - betas[t]) + sigma * z
    with jax.enable_x64(True):
        np.testing.assert_allclose(ancestral_step(xt, eps, t, betas, z), expected, rtol=1e-10, atol=1e-10)


def test_an_index_outside_the_schedule_is_refused_or_reads_nan_under_jit():
    _, alpha_bar = _np_schedule()
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match=r"t \(an index into alpha_bar of length 100\) must lie in \[0, 100\)"):
        q_sample(x, 100, x, alpha_bar.astype(np.float32))
    with pytest.raises(ValueError, match=r"must lie in \[0, 100\), got values from -1"):
        posterior_mean_variance(x, x, np.array([-1, 0, 1], np.int32), np.linspace(1e-3, 0.2, 100, dtype=np.float32))
    jitted = jax.jit(q_sample)
    out = np.asarray(jitted(x, np.array([0, 100, -1], np.int32), x, alpha_bar.astype(np.float32)))
    assert np.isfinite(out[0]).all() and np.isnan(out[1:]).all()  # never a clamped or wrapped neighbour


def test_two_moons_matches_scikit_learns_make_moons():
    from sklearn.datasets import make_moons

    ours = _moons(jax.random.key(0), 1000)
    theirs, _ = make_moons(1000, noise=0.1, random_state=0)
    theirs = ((theirs - [0.5, 0.25]) / [0.87, 0.5]).astype(np.float32)
    other = _moons(jax.random.key(1), 1000)
    # the two generators differ by no more than two draws of ours do (up to sampling noise)
    assert float(_mmd2(ours, theirs)) < 2 * float(_mmd2(ours, other))
    np.testing.assert_allclose(np.std(np.asarray(ours), axis=0), [1.0, 1.0], atol=0.1)
    np.testing.assert_allclose(np.mean(np.asarray(ours), axis=0), [0.0, 0.0], atol=0.1)


def test_mmd2_matches_a_numpy_reference_and_is_zero_on_identical_sets():
    x, y = _rng(10, 11, 3), _rng(11, 7, 3) + 0.5
    def k(a, b):
        d2 = ((a[:, None] - b[None]) ** 2).sum(-1)
        return sum(np.exp(-d2 / (2 * h * h)) for h in (0.1, 0.2, 0.5, 1.0))
    expected = k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
    np.testing.assert_allclose(_mmd2(x.astype(np.float32), y.astype(np.float32)), expected, rtol=1e-5)
    assert float(_mmd2(x.astype(np.float32), x.astype(np.float32))) == pytest.approx(0.0, abs=1e-6)


def _params(D, H, seed=13):
    sizes = (D + 12, H, H, H, D)
    return [{"W": (_rng(seed + l, a, b) / np.sqrt(a)).astype(np.float32), "b": np.zeros(b, np.float32)}
            for l, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]


def test_denoiser_init_shapes():
    params = denoiser_init(jax.random.key(0), 2)  # the sizes of the page's example: the same program
    assert [p["W"].shape for p in params] == [(14, 64), (64, 64), (64, 64), (64, 2)]
    assert all(np.abs(np.asarray(p["b"])).max() == 0.0 for p in params)


def test_denoiser_shapes_and_vmap_agree():
    params = _params(3, 11)
    x = _rng(12, 5, 3).astype(np.float32)
    s = np.linspace(0.1, 1.0, 5, dtype=np.float32)
    batched = jax.vmap(denoiser, in_axes=(None, 0, 0))(params, x, s)
    assert batched.shape == (5, 3)
    np.testing.assert_allclose(np.asarray(batched)[2], denoiser(params, x[2], s[2]), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def trained():
    return trained_moons_model()


def test_it_learns_two_moons_within_twice_the_data_baseline(trained):
    params, losses = trained
    losses = np.asarray(losses)
    assert float(losses[-500:].mean()) < 0.8 * float(losses[:100].mean())
    betas = linear_beta_schedule(T, 1e-3, 0.2)
    generated = sample(params, jax.random.key(2), 1000, betas)  # the program of the page's example
    data, other = _moons(jax.random.key(3), 1000), _moons(jax.random.key(4), 1000)
    model, baseline = float(_mmd2(generated, data)), float(_mmd2(other, data))
    noise = float(_mmd2(_rng(5, 1000, 2).astype(np.float32), data))
    # measured: model 0.0090, data against data 0.0080, a standard normal (drawn with NumPy) 0.089
    assert model < 2 * baseline < noise / 4


@pytest.mark.parametrize("call, match", [
    (lambda: linear_beta_schedule(0), "num_steps must be at least 1"),
    (lambda: linear_beta_schedule(10, 0.1, 1.5), r"beta_end must lie in \(0, 1\)"),
    (lambda: q_sample(_ones(3, 2), np.zeros(4, np.int32), _ones(3, 2), _ones(5)),
     r"t must be a scalar or have shape \(3,\) \(one step for each row of x0"),
    (lambda: q_sample(_ones(3, 2), 0, _ones(3, 1), _ones(5)), r"noise must have shape \(3, 2\) \(the shape of x0\)"),
    (lambda: posterior_mean_variance(_ones(2), _ones(3), 0, _ones(5)), r"xt must have shape \(2,\)"),
    (lambda: posterior_mean_variance(_ones(2), _ones(2), 0, _ones(5, 1)), r"betas must have 1 axes"),
    (lambda: sample(_params(2, 5), jax.random.key(0), 3, _ones(1) * 0.1),
     r"betas must hold at least 2 steps"),
    (lambda: denoiser(_params(2, 5), _ones(3), np.float32(0.5)), r"x must have shape \(2,\)"),
    (lambda: mmd2(_ones(3, 2), _ones(4, 3)), r"y must have shape \(4, 2\)"),
])
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call, name", [
    (lambda: q_sample(_ones(3, 2), np.zeros(3, np.float32), _ones(3, 2), _ones(5)), "t"),
    (lambda: q_sample(np.ones((3, 2), np.int32), 0, _ones(3, 2), _ones(5)), "x0"),
    (lambda: linear_beta_schedule(10.0), "num_steps"),
    (lambda: posterior_mean_variance(_ones(2), _ones(2), 0, np.arange(5, dtype=np.int32)), "betas"),
])
def test_wrong_types_raise_type_error(call, name):
    with pytest.raises(TypeError, match=rf"{name} must be"):
        call()


def test_posterior_at_the_first_step_is_the_data_to_float32_rounding():
    # With beta_0 = 1e-4, 1 - cumprod(1 - beta) in float32 loses most digits; the mean must still be
    # x0 exactly enough (relative 1e-6) and the variance zero.
    from cookbook.diffusion.ddpm import linear_beta_schedule, posterior_mean_variance

    x0, xt = np.full((3, 2), 1.7, np.float32), np.full((3, 2), -0.4, np.float32)
    mean, variance = posterior_mean_variance(x0, xt, 0, linear_beta_schedule(1000))
    np.testing.assert_allclose(np.asarray(mean), 1.7, rtol=1e-6)
    assert float(variance) == 0.0
