import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal, norm
from sklearn.datasets import load_digits

from cookbook.generative.vae import elbo, fit, gaussian_kl, init, mean_elbo, reparameterise

SAMPLES = 200_000  # Monte Carlo samples of every sampling test: one shape, so one program per sampler

_samples = jax.jit(jax.vmap(reparameterise, in_axes=(0, None, None)))


def samples(key, mu, log_var):
    """``SAMPLES`` reparameterised draws (SAMPLES, Z) from the keys split off ``key``, as a NumPy array."""
    return np.asarray(_samples(jax.random.split(key, SAMPLES), mu, log_var))


def test_gaussian_kl_matches_distrax_over_leading_axes():
    rng = np.random.default_rng(0)
    mu, log_var = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)

    @jax.jit  # distrax's operations as one program, not one each
    def reference(mu, log_var):
        q = distrax.MultivariateNormalDiag(mu, jnp.exp(0.5 * log_var))
        return q.kl_divergence(distrax.MultivariateNormalDiag(jnp.zeros_like(mu), jnp.ones_like(mu)))

    got = gaussian_kl(mu, log_var)
    assert got.shape == (3, 5)
    np.testing.assert_allclose(got, reference(mu, log_var), rtol=1e-5, atol=1e-5)


def test_gaussian_kl_matches_a_monte_carlo_estimate_from_reparameterised_samples():
    mu, log_var = np.float32([0.5, -1.0, 0.2]), np.float32([-0.7, 0.3, 0.0])
    z = samples(jax.random.key(1), mu, log_var)
    # The log-densities in NumPy (SciPy), float64.
    log_q = norm.logpdf(z, mu, np.exp(0.5 * np.float64(log_var))).sum(-1)
    log_p = norm.logpdf(z).sum(-1)
    np.testing.assert_allclose(np.mean(log_q - log_p), gaussian_kl(mu, log_var), atol=0.01)
    # The samples have the mean and variance asked for.
    np.testing.assert_allclose(z.mean(0), mu, atol=0.01)
    np.testing.assert_allclose(z.var(0), np.exp(log_var), rtol=0.01)


def test_gaussian_kl_is_zero_only_at_the_prior_and_stays_finite_far_out():
    assert float(gaussian_kl(np.zeros(5, np.float32), np.zeros(5, np.float32))) == 0.0
    assert float(gaussian_kl(np.float32([1e-2]), np.zeros(1, np.float32))) > 0.0
    assert np.isfinite(float(gaussian_kl(np.float32([1e3, -1e3]), np.float32([-30.0, 30.0]))))


class LinearGaussian:
    """p(z) = N(0, I_Z), p(x | z) = N(W z + b, s^2 I_D); W has orthogonal columns, so the true
    posterior is a diagonal Gaussian and the ELBO can be tight."""

    D, Z, s = 7, 3, 0.5

    def __init__(self):
        rng = np.random.default_rng(2)  # NumPy: no sampler compiled per shape
        Q, _ = np.linalg.qr(rng.standard_normal((self.D, self.Z)))
        self.W = Q * np.array([2.0, 1.0, 0.3])
        self.b = rng.standard_normal(self.D)
        self.x = rng.standard_normal(self.D) * 2

    def log_likelihood(self):  # log p(x), exact
        cov = self.W @ self.W.T + self.s**2 * np.eye(self.D)
        return multivariate_normal(self.b, cov).logpdf(self.x)

    def expected_log_lik(self, mu, var):  # E_q log p(x | z), exact
        r = self.x - self.W @ mu - self.b
        return (-0.5 * self.D * np.log(2 * np.pi * self.s**2)
                - (r @ r + np.sum(self.W**2 * var)) / (2 * self.s**2))

    def posterior(self):
        prec = np.diag(self.W.T @ self.W) / self.s**2 + 1.0
        return (self.W.T @ (self.x - self.b) / self.s**2) / prec, 1.0 / prec


def test_elbo_never_exceeds_the_log_likelihood_and_is_tight_at_the_posterior():
    m = LinearGaussian()
    log_px = m.log_likelihood()
    rng = np.random.default_rng(0)
    for _ in range(11):
        mu, log_var = rng.normal(size=3), rng.normal(size=3)
        bound = m.expected_log_lik(mu, np.exp(log_var)) - float(gaussian_kl(np.float32(mu), np.float32(log_var)))
        assert bound < log_px
    mu, var = m.posterior()
    bound = m.expected_log_lik(mu, var) - float(gaussian_kl(np.float32(mu), np.float32(np.log(var))))
    np.testing.assert_allclose(bound, log_px, atol=1e-4)


def test_monte_carlo_elbo_matches_the_closed_form():
    m = LinearGaussian()
    mu, log_var = np.float32([0.3, -0.2, 0.5]), np.float32([-1.0, -0.5, -2.0])
    z = samples(jax.random.key(3), mu, log_var)
    mean = z @ np.float32(m.W.T) + np.float32(m.b)[None]  # (S, D)
    log_lik = norm.logpdf(np.float32(m.x), mean, m.s).sum(-1)  # in NumPy (SciPy)
    mc = float(np.mean(log_lik) - gaussian_kl(mu, log_var))
    exact = m.expected_log_lik(np.asarray(mu, np.float64), np.exp(np.asarray(log_var, np.float64))) \
        - float(gaussian_kl(mu, log_var))
    np.testing.assert_allclose(mc, exact, rtol=2e-3)


def test_reparameterised_gradient_agrees_with_the_score_function_and_has_less_variance():
    # f(z) = |z|^2: E f = |mu|^2 + sum exp(log_var); d/dmu = 2 mu, d/dlog_var = exp(log_var).
    mu, log_var = np.float32([0.7, -0.4, 1.2]), np.float32([-0.5, 0.2, -1.0])
    key = jax.random.key(4)

    def f_of_sample(k, mu, log_var):
        return jnp.sum(reparameterise(k, mu, log_var) ** 2)

    gradients = jax.vmap(jax.grad(f_of_sample, argnums=(1, 2)), in_axes=(0, None, None))
    g_mu, g_lv = (np.asarray(g) for g in jax.jit(gradients)(jax.random.split(key, SAMPLES), mu, log_var))
    z = samples(key, mu, log_var)  # the same keys: the same draws
    f = np.sum(z**2, axis=-1, keepdims=True)  # the score-function estimates in NumPy
    var = np.exp(log_var)[None]
    s_mu = f * (z - mu[None]) / var  # f(z) * d log q / d mu
    s_lv = f * 0.5 * ((z - mu[None]) ** 2 / var - 1.0)  # f(z) * d log q / d log_var
    for reparam, score, exact in ((g_mu, s_mu, 2 * mu), (g_lv, s_lv, var[0])):
        np.testing.assert_allclose(reparam.mean(0), exact, atol=0.03)
        np.testing.assert_allclose(score.mean(0), exact, atol=0.15)
        assert np.all(reparam.var(0) < score.var(0) / 4)


@pytest.fixture(scope="module")
def digits():
    X = (load_digits().data > 8).astype(np.float32)
    X = X[np.random.default_rng(0).permutation(len(X))]
    return jnp.asarray(X[:1500]), jnp.asarray(X[1500:])


@pytest.fixture(scope="module")
def trained(digits):
    train, _ = digits
    params0 = init(jax.random.key(0), D=64, H=16, Z=5)
    params, values = fit(params0, jax.random.key(1), train, steps=300, batch=32, learning_rate=2e-2)
    return params0, params, values


held_out = jax.jit(mean_elbo)  # one compiled function for every held-out figure (beta always passed, so one program)


def test_it_learns_held_out_elbo_on_digits(digits, trained):
    _, test = digits
    params0, params, values = trained
    before = float(held_out(params0, jax.random.key(5), test, beta=1.0))
    after = float(held_out(params, jax.random.key(5), test, beta=1.0))
    assert before < -45.0  # about -48 nats per image untrained
    assert after > -23.0  # about -21 after 300 steps
    assert after - before > 20.0
    values = np.asarray(values)
    assert float(values[-50:].mean()) > float(values[:50].mean()) + 5.0  # the training ELBO rose too


def test_beta_zero_is_the_reconstruction_alone_and_exceeds_the_elbo(digits, trained):
    _, test = digits
    _, params, _ = trained
    key = jax.random.key(6)  # the same noise for both, so only the KL term differs
    reconstruction, bound = held_out(params, key, test, beta=0.0), held_out(params, key, test, beta=1.0)
    assert float(reconstruction) > float(bound)  # the KL is positive
    assert float(held_out(params, key, test, beta=4.0)) < float(bound)  # a beta-VAE weighs it more


def test_bad_input_gets_a_clear_error(trained):
    _, params, _ = trained  # D = 64, H = 16, Z = 5
    with pytest.raises(ValueError, match="log_var"):
        gaussian_kl(np.zeros(3, np.float32), np.zeros(5, np.float32))
    with pytest.raises(TypeError, match="mu"):
        gaussian_kl(np.zeros(3, np.int32), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="x"):
        elbo(params, jax.random.key(0), np.zeros(7, np.float32))
    with pytest.raises(TypeError, match="x"):
        elbo(params, jax.random.key(0), np.zeros(64, np.int32))
    with pytest.raises(TypeError, match="Z"):
        init(jax.random.key(0), D=11, H=3, Z=2.5)
    with pytest.raises(ValueError, match="params"):
        elbo({**params, "mu_W": np.zeros((16, 4), np.float32)}, jax.random.key(0), np.zeros(64, np.float32))
    with pytest.raises(ValueError, match="beta"):
        elbo(params, jax.random.key(0), np.zeros(64, np.float32), beta=-1.0)
