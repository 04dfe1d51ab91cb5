import jax
import numpy as np
import pytest

from cookbook.uncertainty.sgmcmc import linear_regression_posterior, sample_linear_regression, sgld_step

NOISE, PRIOR = 0.25, 1.0


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 3))
    y = X @ np.array([0.5, -1.0, 2.0]) + np.sqrt(NOISE) * rng.standard_normal(100)
    precision = PRIOR * np.eye(3) + X.T @ X / NOISE
    cov = np.linalg.inv(precision)
    return np.float32(X), np.float32(y), cov @ X.T @ y / NOISE, cov


@pytest.fixture(scope="module")
def chains(data):
    X, y, _, _ = data
    run = jax.vmap(lambda key: sample_linear_regression(X, y, key, noise=NOISE, prior_precision=PRIOR, num_steps=4000,
                                                        batch_size=10, step_size=1e-4))
    samples = jax.jit(run)(jax.random.split(jax.random.key(0), 16))  # (16 chains, 4000, 3)
    return np.asarray(samples[:, 1000:], np.float64).reshape(-1, 3)  # burn-in dropped


def test_exact_posterior_matches_the_closed_form_in_float64(data):
    X, y, mean, cov = data
    got_mean, got_cov = linear_regression_posterior(X, y, noise=NOISE, prior_precision=PRIOR)  # runs a compiled core
    np.testing.assert_allclose(got_mean, mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_cov, cov, rtol=1e-4, atol=1e-7)


def test_sgld_samples_match_the_exact_posterior(data, chains):
    _, _, mean, cov = data
    std = np.sqrt(np.diag(cov))
    assert np.all(np.abs(chains.mean(0) - mean) < 0.15 * std), (chains.mean(0) - mean) / std
    ratio = np.diag(np.cov(chains.T)) / np.diag(cov)
    assert np.all((0.8 < ratio) & (ratio < 1.25)), ratio
    corr = np.corrcoef(chains.T)
    want = cov / np.outer(std, std)
    np.testing.assert_allclose(corr, want, atol=0.1)


def test_numpyro_nuts_agrees_with_the_exact_posterior_and_with_sgld(data, chains):
    numpyro = pytest.importorskip("numpyro")
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    X, y, mean, cov = data

    def model(X, y):
        theta = numpyro.sample("theta", dist.Normal(0.0, 1.0 / np.sqrt(PRIOR)).expand([3]).to_event(1))
        numpyro.sample("y", dist.Normal(X @ theta, np.sqrt(NOISE)), obs=y)

    @jax.jit  # the whole run, its initialisation included, as one program: run eagerly, it compiled 95
    def run(key, X, y):
        mcmc = MCMC(NUTS(model), num_warmup=200, num_samples=500, progress_bar=False)  # small: NUTS compiles slowly
        mcmc.run(key, X, y)
        return mcmc.get_samples()["theta"]

    nuts = np.asarray(run(jax.random.key(1), X, y), np.float64)
    std = np.sqrt(np.diag(cov))
    assert np.all(np.abs(nuts.mean(0) - mean) < 0.15 * std)
    assert np.all(np.abs(nuts.mean(0) - chains.mean(0)) < 0.2 * std)
    ratio = np.diag(np.cov(nuts.T)) / np.diag(np.cov(chains.T))
    assert np.all((0.7 < ratio) & (ratio < 1.4)), ratio


def test_one_step_drifts_by_half_the_step_times_the_gradient_and_adds_noise_of_variance_step_size():
    theta, grad = np.float32([1.0, -2.0, 0.5]), np.float32([4.0, 0.0, -2.0])
    steps = jax.jit(jax.vmap(lambda k: sgld_step(theta, grad, k, step_size=0.1)))(jax.random.split(jax.random.key(2), 20000))
    steps = np.asarray(steps)  # the moments in NumPy
    np.testing.assert_allclose(steps.mean(0), theta - 0.05 * grad, atol=0.01)
    np.testing.assert_allclose(steps.var(0), 0.1, rtol=0.05)


def test_clear_errors_on_bad_input(data):
    X, y, _, _ = data
    with pytest.raises(ValueError, match="grad"):
        sgld_step(np.zeros(3, np.float32), np.zeros(2, np.float32), jax.random.key(0), step_size=0.1)
    with pytest.raises(ValueError, match="step_size"):
        sgld_step(np.zeros(3, np.float32), np.zeros(3, np.float32), jax.random.key(0), step_size=-0.1)
    with pytest.raises(ValueError, match="batch_size"):
        sample_linear_regression(X, y, jax.random.key(0), noise=NOISE, prior_precision=PRIOR, num_steps=3,
                                 batch_size=101, step_size=1e-3)
    with pytest.raises(ValueError, match="y"):
        linear_regression_posterior(X, y[:5], noise=NOISE, prior_precision=PRIOR)
    with pytest.raises(TypeError, match="X"):
        linear_regression_posterior(np.int32(X), y, noise=NOISE, prior_precision=PRIOR)
