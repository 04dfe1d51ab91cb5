import jax
import numpy as np
import pytest

from cookbook.uncertainty.bayes_by_backprop import apply, fit, init, kl_divergence, negative_elbo, predict

NOISE, PRIOR_STD = 0.25, 1.0


def random_layer(seed, n_in=3, n_out=5):
    rng = np.random.default_rng(seed)
    return [{"W_mu": np.float32(rng.standard_normal((n_in, n_out))), "W_rho": np.float32(rng.uniform(-2, 0, (n_in, n_out))),
             "b_mu": np.float32(rng.standard_normal(n_out)), "b_rho": np.float32(rng.uniform(-2, 0, n_out))}]


def softplus(v):
    return np.log1p(np.exp(np.asarray(v, np.float64)))


def test_kl_matches_the_closed_form_and_sampling():
    params = random_layer(0)
    got = float(kl_divergence(params, prior_std=0.7))
    mu = np.r_[np.ravel(params[0]["W_mu"]), params[0]["b_mu"]].astype(np.float64)
    sigma = softplus(np.r_[np.ravel(params[0]["W_rho"]), params[0]["b_rho"]])
    closed = np.sum(np.log(0.7 / sigma) + (sigma**2 + mu**2) / (2 * 0.7**2) - 0.5)
    np.testing.assert_allclose(got, closed, rtol=1e-5)
    w = mu + sigma * np.random.default_rng(1).standard_normal((100_000, mu.size))
    log_q = -0.5 * ((w - mu) / sigma) ** 2 - np.log(sigma)
    log_p = -0.5 * (w / 0.7) ** 2 - np.log(0.7)
    np.testing.assert_allclose(got, np.mean(np.sum(log_q - log_p, axis=1)), rtol=0.02)


@pytest.mark.parametrize("local", [True, False])
def test_both_samplers_give_the_pre_activations_gaussian(local):
    params = random_layer(2)
    x = np.float32([0.5, -1.0, 2.0])
    samples = jax.jit(jax.vmap(lambda k: apply(params, x, k, local=local)))(jax.random.split(jax.random.key(3), 20000))
    M, V = np.float64(params[0]["W_mu"]), softplus(params[0]["W_rho"]) ** 2
    mean = np.float64(x) @ M + np.float64(params[0]["b_mu"])
    var = np.float64(x) ** 2 @ V + softplus(params[0]["b_rho"]) ** 2
    np.testing.assert_allclose(samples.mean(0), mean, atol=4 * np.sqrt(var.max() / 20000))
    np.testing.assert_allclose(samples.var(0), var, rtol=0.05)


def test_local_reparameterisation_lowers_the_gradient_variance_over_a_batch():
    params = random_layer(4, n_in=3, n_out=1)
    rng = np.random.default_rng(5)
    X, y = np.float32(rng.standard_normal((32, 3))), np.float32(rng.standard_normal(32))
    keys = jax.random.split(jax.random.key(6), 300)

    def grads(local):
        g = jax.vmap(lambda k: jax.grad(negative_elbo)(params, X, y, k, noise=NOISE, prior_std=PRIOR_STD, local=local))
        return g(keys)[0]["W_mu"].reshape(300, -1)

    local, shared = (np.asarray(a) for a in jax.jit(lambda: (grads(True), grads(False)))())
    np.testing.assert_allclose(local.mean(0), shared.mean(0), atol=0.3 * np.abs(shared.mean(0)).max())  # same expectation
    assert np.all(local.var(0) < 0.5 * shared.var(0)), (local.var(0), shared.var(0))


def test_on_a_linear_model_it_finds_the_optimal_mean_field_gaussian():
    # Bayesian linear regression: the optimal factorised q has the exact posterior means and variances
    # 1 / diag(posterior precision), below the exact marginal variances.
    rng = np.random.default_rng(7)
    X = rng.standard_normal((40, 3)) + np.array([1.0, 0.0, 0.0])  # correlated with the bias
    y = X @ np.array([0.5, -1.0, 2.0]) + 0.3 + np.sqrt(NOISE) * rng.standard_normal(40)
    A = np.c_[X, np.ones(40)]
    H = A.T @ A / NOISE + np.eye(4) / PRIOR_STD**2
    mean, cov = np.linalg.solve(H, A.T @ y / NOISE), np.linalg.inv(H)
    params, losses = jax.jit(fit, static_argnames="steps")(init(jax.random.key(8), (3, 1)), np.float32(X), np.float32(y),
                                                          jax.random.key(9), noise=NOISE, prior_std=PRIOR_STD, steps=3000)
    params, losses = jax.tree.map(np.asarray, (params, losses))  # checked in NumPy
    mu = np.r_[params[0]["W_mu"][:, 0], params[0]["b_mu"]]
    var = softplus(np.r_[params[0]["W_rho"][:, 0], params[0]["b_rho"]]) ** 2
    std = np.sqrt(np.diag(cov))
    assert np.all(np.abs(mu - mean) < 0.2 * std), (mu - mean) / std
    np.testing.assert_allclose(var, 1 / np.diag(H), rtol=0.3)
    assert var[0] < 0.8 * cov[0, 0] and var[3] < 0.8 * cov[3, 3]  # under-estimated where correlated
    assert losses[-1] < losses[0]


def test_predict_is_the_mean_and_variance_of_sampled_passes():
    params = random_layer(10, n_in=3, n_out=1)
    x = np.float32([0.5, -1.0, 2.0])
    mean, variance = jax.jit(lambda p, k: predict(p, x, k, num_samples=20000, noise=0.1))(params, jax.random.key(11))
    want = float(x @ params[0]["W_mu"][:, 0] + params[0]["b_mu"][0])
    var = float(np.float64(x) ** 2 @ softplus(params[0]["W_rho"])[:, 0] ** 2 + softplus(params[0]["b_rho"][0]) ** 2)
    np.testing.assert_allclose(mean, want, atol=4 * np.sqrt(var / 20000))
    np.testing.assert_allclose(variance, var + 0.1, rtol=0.05)


def test_clear_errors_on_bad_input():
    params = random_layer(0, n_in=2, n_out=3) + random_layer(1, n_in=3, n_out=1)  # sizes (2, 3, 1), drawn in NumPy
    with pytest.raises(ValueError, match="x"):
        apply(params, np.ones(3, np.float32), jax.random.key(0))
    with pytest.raises(TypeError, match="local"):
        apply(params, np.ones(2, np.float32), jax.random.key(0), local=1)
    with pytest.raises(ValueError, match="params"):
        kl_divergence([{"W_mu": np.ones((2, 3), np.float32)}], prior_std=1.0)
    with pytest.raises(ValueError, match="prior_std"):
        kl_divergence(params, prior_std=0.0)
    with pytest.raises(ValueError, match="y"):
        negative_elbo(params, np.ones((4, 2), np.float32), np.ones(3, np.float32), jax.random.key(0), noise=0.1, prior_std=1.0)
    with pytest.raises(ValueError, match="params"):
        broken = [dict(layer) for layer in params]
        broken[0]["W_rho"] = broken[0]["W_rho"][:, :2]
        apply(broken, np.ones(2, np.float32), None)
