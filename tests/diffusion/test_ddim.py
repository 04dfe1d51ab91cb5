import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.diffusion.ddim import ddim_sample, ddim_step, ddim_timesteps, sampler_quality
from cookbook.diffusion.ddpm import ancestral_step

T = 100


def _np_schedule():
    betas = np.linspace(1e-3, 0.2, T)
    return betas, np.cumprod(1.0 - betas)


def _rng(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def _equation_12(xt, eps, t, s, alpha_bar, eta, z):
    """DDIM's update in float64, page notation (s = -1 is the data)."""
    a_t, a_s = alpha_bar[t], (1.0 if s == -1 else alpha_bar[s])
    sigma = eta * np.sqrt((1 - a_s) / (1 - a_t)) * np.sqrt(1 - a_t / a_s)
    x0_hat = (xt - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
    return np.sqrt(a_s) * x0_hat + np.sqrt(1 - a_s - sigma**2) * eps + sigma * z


@pytest.mark.parametrize("t, t_prev", [(0, -1), (50, 49), (50, 9), (99, 98), (99, -1)])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_step_matches_equation_12_in_float64(t, t_prev, eta):
    _, alpha_bar = _np_schedule()
    xt, eps, z = _rng(0, 5, 3), _rng(1, 5, 3), _rng(2, 5, 3)
    expected = _equation_12(xt, eps, t, t_prev, alpha_bar, eta, z)
    with jax.enable_x64(True):
        got = ddim_step(xt, eps, t, t_prev, alpha_bar, eta=eta, noise=z)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-11)
        per_row = ddim_step(xt, eps, np.full(5, t), np.full(5, t_prev), alpha_bar, eta=eta, noise=z)
        np.testing.assert_allclose(per_row, expected, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("t", [0, 50, 99])
def test_eta_one_over_one_step_is_the_ddpm_ancestral_step(t):
    betas, alpha_bar = _np_schedule()
    xt, eps, z = _rng(3, 7, 2), _rng(4, 7, 2), _rng(5, 7, 2)
    with jax.enable_x64(True):
        np.testing.assert_allclose(ddim_step(xt, eps, t, t - 1, alpha_bar, eta=1.0, noise=z),
                                   ancestral_step(xt, eps, t, betas, z), rtol=1e-10, atol=1e-10)


def test_with_the_true_noise_every_jump_stays_on_the_same_trajectory():
    _, alpha_bar = _np_schedule()
    x0, eps = _rng(6, 3, 2), _rng(7, 3, 2)
    xt = np.sqrt(alpha_bar[80]) * x0 + np.sqrt(1 - alpha_bar[80]) * eps
    with jax.enable_x64(True):
        for s in (79, 40, 0):
            np.testing.assert_allclose(ddim_step(xt, eps, 80, s, alpha_bar),
                                       np.sqrt(alpha_bar[s]) * x0 + np.sqrt(1 - alpha_bar[s]) * eps, rtol=1e-12)
        np.testing.assert_allclose(ddim_step(xt, eps, 80, -1, alpha_bar), x0, rtol=1e-12)


def test_every_eta_keeps_the_marginals_of_the_forward_process():
    # x_t ~ q(x_t | x_0) with the true noise as prediction: x_s ~ q(x_s | x_0), mean and variance.
    _, alpha_bar = _np_schedule()
    x0, n = 1.5, 100_000
    eps, z = _rng(8, n, 1), _rng(9, n, 1)
    xt = np.sqrt(alpha_bar[60]) * x0 + np.sqrt(1 - alpha_bar[60]) * eps
    for eta in (0.0, 1.0):
        xs = np.asarray(ddim_step(xt.astype(np.float32), eps.astype(np.float32), 60, 20,
                                  alpha_bar.astype(np.float32), eta=eta, noise=z.astype(np.float32)))
        assert abs(xs.mean() - np.sqrt(alpha_bar[20]) * x0) < 0.01
        assert abs(xs.var() - (1 - alpha_bar[20])) < 0.01


def test_timesteps_are_evenly_spaced_and_end_on_the_last_step():
    np.testing.assert_array_equal(ddim_timesteps(4, 10), [1, 4, 6, 9])
    np.testing.assert_array_equal(ddim_timesteps(T, T), np.arange(T))
    np.testing.assert_array_equal(ddim_timesteps(1, T), [T - 1])
    with pytest.raises(ValueError, match="num_steps must be at most num_train_steps = 10, got 11"):
        ddim_timesteps(11, 10)


def test_the_sampler_is_deterministic_at_eta_zero_and_visits_the_stated_steps():
    params = [{"W": jnp.asarray(_rng(10, 14, 5), jnp.float32) / 4, "b": jnp.zeros(5)},
              {"W": jnp.asarray(_rng(11, 5, 2), jnp.float32) / 3, "b": jnp.zeros(2)}]
    alpha_bar = jnp.asarray(_np_schedule()[1], jnp.float32)
    sample = jax.jit(ddim_sample, static_argnames=("num_samples", "num_steps"))
    a = sample(params, jax.random.key(0), num_samples=3, alpha_bar=alpha_bar, num_steps=4)
    b = sample(params, jax.random.key(0), num_samples=3, alpha_bar=alpha_bar, num_steps=4)
    np.testing.assert_array_equal(a, b)
    # the same four jumps written out with ddim_step
    from cookbook.diffusion.ddpm import _net
    k_start, _ = jax.random.split(jax.random.key(0))
    x = jax.random.normal(k_start, (3, 2))
    steps = list(ddim_timesteps(4, T))
    for t, s in zip(steps[::-1], (steps[::-1] + [-1])[1:]):
        eps = jax.vmap(_net, in_axes=(None, 0, None))(params, x, (t + 1.0) / T)
        x = ddim_step(x, eps, t, s, alpha_bar)
    np.testing.assert_allclose(a, x, rtol=1e-5, atol=1e-5)


def test_quality_against_steps_of_the_figure():
    steps, ddim, ancestral, flow, baseline = sampler_quality()
    at = {int(k): i for i, k in enumerate(steps)}
    # measured: DDIM 0.029 (10 steps), 0.012 (20); ancestral 0.052, 0.019, 0.009 (50); Euler 0.037 (5),
    # 0.011 (10), 0.007 (20); data against data 0.008
    assert ddim[at[10]] > 2 * baseline > ddim[at[20]]
    assert ancestral[at[20]] > 2 * baseline > ancestral[at[50]]
    assert flow[at[5]] > 2 * baseline > flow[at[10]]
    assert np.all(ancestral[at[10]:at[20] + 1] > ddim[at[10]:at[20] + 1])  # fresh noise costs steps
    np.testing.assert_allclose([ddim[at[10]], ddim[at[20]], ancestral[at[10]], ancestral[at[20]],
                                flow[at[10]], flow[at[20]], baseline],
                               [0.029, 0.012, 0.052, 0.019, 0.011, 0.007, 0.008], rtol=0.1, atol=5e-4)


@pytest.mark.parametrize("call, match", [
    (lambda a: ddim_step(jnp.ones((3, 2)), jnp.ones((3, 2)), 5, 5, a), r"t_prev must come before t"),
    (lambda a: ddim_step(jnp.ones((3, 2)), jnp.ones((3, 2)), 5, -2, a), r"t_prev \(an index into alpha_bar of length 100, or -1\) must lie in \[-1, 100\)"),
    (lambda a: ddim_step(jnp.ones((3, 2)), jnp.ones((3, 2)), 5, 1, a, eta=0.5), r"noise is needed when eta is not 0"),
    (lambda a: ddim_step(jnp.ones((3, 2)), jnp.ones((3, 2)), 5, 1, a, eta=1.5, noise=jnp.ones((3, 2))), r"eta must lie in \[0, 1\]"),
    (lambda a: ddim_step(jnp.ones((3, 2)), jnp.ones((3, 2)), jnp.array([5, 6, 7]), jnp.array([1, 2]), a), r"t_prev must have the shape of t"),
    (lambda a: ddim_step(jnp.ones((3, 2)), jnp.ones((2, 2)), 5, 1, a), r"eps must have shape \(3, 2\) \(the shape of xt\)"),
    (lambda a: ddim_step(jnp.ones((3, 2)), jnp.ones((3, 2)), 100, 1, a), r"t \(an index into alpha_bar of length 100\)"),
])
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call(jnp.asarray(_np_schedule()[1], jnp.float32))


def test_integer_input_raises_type_error():
    with pytest.raises(TypeError, match="t_prev must be an integer array"):
        ddim_step(jnp.ones((3, 2)), jnp.ones((3, 2)), 5, 1.0, jnp.ones(10) / 2)
