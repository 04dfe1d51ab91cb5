import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import logsumexp
from scipy.stats import norm

from cookbook.uncertainty.mixture_density import MIN_SCALE, apply, fit, init, log_likelihood, negative_log_likelihood

ll_many = jax.jit(jax.vmap(log_likelihood, in_axes=(None, None, None, 0)))


def random_mixture(seed, K=5):
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(K))
    return np.float32(np.log(weights)), np.float32(rng.standard_normal(K)), np.float32(rng.uniform(0.2, 1.5, K))


def test_log_likelihood_matches_scipy():
    log_w, means, scales = random_mixture(0)
    y = np.float32(np.linspace(-4, 4, 7))
    want = logsumexp(log_w[None] + norm.logpdf(y[:, None], means[None], scales[None]), axis=1)
    np.testing.assert_allclose(ll_many(log_w, means, scales, y), want, rtol=1e-5, atol=1e-6)


def test_one_component_is_a_gaussian_and_far_targets_stay_finite():
    got = log_likelihood(jnp.zeros(1), jnp.array([0.3]), jnp.array([0.7]), 1.1)
    np.testing.assert_allclose(got, norm.logpdf(1.1, 0.3, 0.7), rtol=1e-6)
    log_w, means, scales = random_mixture(1)
    far = ll_many(log_w, means, scales, np.float32([1e3, -1e4]))
    want = logsumexp(log_w[None] + norm.logpdf(np.array([[1e3], [-1e4]]), means[None], np.float64(scales)[None]), axis=1)
    assert np.all(np.isfinite(far))
    np.testing.assert_allclose(far, want, rtol=1e-5)


def test_apply_gives_weights_that_sum_to_one_and_widths_above_the_floor():
    # The network of the training test below (1 input, 32 hidden, K = 3): its initial weights and
    # apply's program are compiled once for the module.
    params = init(jax.random.key(0), (1, 32), num_components=3)
    b = np.array(params[-1]["b"])
    b[6:] = -50.0  # raw widths far below zero
    params[-1]["b"] = b
    log_w, means, scales = jax.jit(apply)(params, np.float32([0.3]))
    assert log_w.shape == means.shape == scales.shape == (3,)
    np.testing.assert_allclose(np.exp(np.asarray(log_w)).sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(scales, MIN_SCALE, rtol=1e-3)


# ---- It learns: Bishop's inverted sine has three answers at x = 0.5 -----------------------------------

@pytest.fixture(scope="module")
def inverted_sine():
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 1, 400)
    x = t + 0.3 * np.sin(2 * np.pi * t) + rng.uniform(-0.1, 0.1, 400)
    X, y = np.float32(x[:, None]), np.float32(t)
    params, losses = fit(init(jax.random.key(0), (1, 32), num_components=3), X[:300], y[:300], steps=1500)
    return X, y, params, losses


def test_it_finds_the_three_branches_of_the_inverted_sine(inverted_sine):
    X, y, params, losses = inverted_sine
    assert losses[-1] < losses[0] - 1.0
    # The branches: the solutions t of t + 0.3 sin(2 pi t) = 0.5 (noiseless).
    f = lambda t: t + 0.3 * np.sin(2 * np.pi * t) - 0.5
    branches = [brentq(f, 0.0, 0.34), 0.5, brentq(f, 0.66, 1.0)]
    log_w, means, scales = jax.jit(apply)(params, jnp.array([0.5]))
    order = np.argsort(means)
    np.testing.assert_allclose(np.asarray(means)[order], branches, atol=0.06)
    assert np.all(np.exp(log_w) > 0.1)
    held_out = float(jax.jit(negative_log_likelihood)(params, X[300:], y[300:]))
    assert held_out < -0.8, held_out  # measured: -0.95


def test_clear_errors_on_bad_input():
    params = init(jax.random.key(1), (1, 32), num_components=3)  # the shapes of the tests above
    with pytest.raises(ValueError, match="x"):
        apply(params, np.ones(3, np.float32))
    with pytest.raises(ValueError, match="params"):
        apply(params[:-1] + [{"W": np.ones((32, 4), np.float32), "b": np.ones(4, np.float32)}], np.ones(1, np.float32))
    with pytest.raises(ValueError, match="scales"):
        log_likelihood(np.zeros(2, np.float32), np.zeros(2, np.float32), np.ones(3, np.float32), 0.0)
    with pytest.raises(ValueError, match="y"):
        log_likelihood(np.zeros(2, np.float32), np.zeros(2, np.float32), np.ones(2, np.float32), np.zeros(2, np.float32))
    with pytest.raises(TypeError, match="num_components"):
        init(jax.random.key(1), (2, 3), num_components=2.0)
    with pytest.raises(ValueError, match="y"):
        negative_log_likelihood(params, np.ones((4, 1), np.float32), np.ones(5, np.float32))
