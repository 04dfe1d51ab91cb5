import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax.flatten_util import ravel_pytree

from cookbook.foundations.mlp import apply, init
from cookbook.uncertainty._data import gap_data
from cookbook.uncertainty.laplace import fit_map, posterior_precision, predictive

# posterior_precision and predictive run one compiled core each, called as they are (a jax.jit
# around posterior_precision compiled a second program per shape); the tests read results in NumPy.
predict_many = jax.jit(lambda params, H, xs, noise, subset: jax.vmap(
    lambda x: predictive(params, H, x, noise=noise, subset=subset))(xs), static_argnames="subset")
NOISE, PRIOR = 0.3, 2.0


def linear_problem(seed=0, N=11, D=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D))
    return X, X @ rng.standard_normal(D) + 0.5 + np.sqrt(NOISE) * rng.standard_normal(N)


def exact_posterior(X, y):
    """Bayesian linear regression with weights and bias under the prior N(0, 1 / PRIOR): the
    parameters ordered as ravel_pytree orders [{"W", "b"}], weights then bias."""
    A = np.c_[X, np.ones(len(X))]
    precision = A.T @ A / NOISE + PRIOR * np.eye(A.shape[1])
    mean = np.linalg.solve(precision, A.T @ y / NOISE)
    return mean, precision


def as_params(theta):
    return [{"W": theta[:-1, None].astype(np.float32), "b": theta[-1:].astype(np.float32)}]


def numpy_layers(*sizes, bias=0.0):  # an MLP's layers drawn in NumPy: no sampler to compile
    rng = np.random.default_rng(5)
    return [{"W": rng.standard_normal((a, b)).astype(np.float32), "b": np.full(b, bias, np.float32)}
            for a, b in zip(sizes[:-1], sizes[1:])]


# ---- Exact for a linear-Gaussian model -------------------------------------------------------------

def test_precision_and_predictive_are_the_exact_bayesian_linear_regression():
    X, y = linear_problem()
    mean, precision = exact_posterior(X, y)
    params = as_params(mean)
    for subset in ("all", "last_layer"):  # without a hidden layer, the last layer is all
        H = posterior_precision(params, np.float32(X), noise=NOISE, prior_precision=PRIOR, subset=subset)
        np.testing.assert_allclose(H, precision, rtol=1e-5)
    x_new = np.float32(np.random.default_rng(1).standard_normal((5, 3)))
    got_mean, got_var = predict_many(params, np.float32(precision), x_new, noise=NOISE, subset="all")
    A_new = np.c_[x_new, np.ones(5)]
    np.testing.assert_allclose(got_mean, A_new @ mean, rtol=1e-5, atol=1e-5)
    want_var = np.einsum("np,pq,nq->n", A_new, np.linalg.inv(precision), A_new) + NOISE
    np.testing.assert_allclose(got_var, want_var, rtol=1e-4)


def test_fit_map_reaches_the_exact_posterior_mean():
    X, y = linear_problem(2)
    mean, _ = exact_posterior(X, y)
    params, losses = fit_map(numpy_layers(3, 1), np.float32(X), np.float32(y), noise=NOISE,
                             prior_precision=PRIOR, steps=1500, learning_rate=0.02)  # runs a compiled core
    W, b, losses = np.asarray(params[0]["W"]), np.asarray(params[0]["b"]), np.asarray(losses)
    np.testing.assert_allclose(np.r_[W[:, 0], b], mean, atol=2e-3)
    assert losses[-1] < losses[0]


# ---- The GGN -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_net():
    params = numpy_layers(2, 7, 1, bias=0.1)  # non-zero biases
    X = np.random.default_rng(4).standard_normal((5, 2)).astype(np.float32)
    return params, X


def test_last_layer_ggn_is_the_exact_hessian_of_the_negative_log_posterior(small_net):
    params, X = small_net
    y = np.arange(5, dtype=np.float32)
    def neg_log_posterior(last):
        pred = jax.vmap(apply, in_axes=(None, 0))(params[:-1] + [last], X)[:, 0]
        return jnp.sum((y - pred) ** 2) / (2 * NOISE) + 0.5 * PRIOR * sum(jnp.sum(p**2) for p in jax.tree.leaves(last))

    theta, unravel = ravel_pytree(params[-1])
    hessian = jax.jit(jax.hessian(lambda t: neg_log_posterior(unravel(t))))(theta)
    H = posterior_precision(params, X, noise=NOISE, prior_precision=PRIOR, subset="last_layer")
    assert H.shape == (8, 8)
    np.testing.assert_allclose(H, hessian, rtol=1e-4, atol=1e-4)


def test_full_ggn_is_symmetric_and_at_least_the_prior(small_net):
    params, X = small_net
    H = np.asarray(posterior_precision(params, X, noise=NOISE, prior_precision=PRIOR, subset="all"), np.float64)
    assert H.shape == (2 * 7 + 7 + 7 + 1,) * 2
    np.testing.assert_allclose(H, H.T, atol=1e-5)
    assert np.linalg.eigvalsh(H).min() > PRIOR - 1e-3  # J^T J / noise is positive semidefinite


# ---- It works: sure on the data, unsure in the gap --------------------------------------------------

@pytest.fixture(scope="module")
def trained():
    x, y = gap_data()
    params, losses = fit_map(init(jax.random.key(0), (1, 32, 32, 1)), x, y, noise=0.01, prior_precision=1.0,
                             steps=500, learning_rate=0.02)
    return x, y, params, losses


def test_last_layer_predictive_variance_is_at_least_three_times_larger_in_the_gap(trained, subset="last_layer"):
    x, y, params, losses = trained
    losses = np.asarray(losses)
    assert losses[-1] < 0.2 * losses[0]
    H = posterior_precision(params, x, noise=0.01, prior_precision=1.0, subset=subset)
    gap = np.linspace(-0.5, 0.5, 11, dtype=np.float32)[:, None]
    mean, var = map(np.asarray, predict_many(params, H, np.concatenate([x, gap]), noise=0.01, subset=subset))
    mean_on, var_on, var_gap = mean[: len(x)], var[: len(x)], var[len(x):]
    assert float(np.sqrt(np.mean((mean_on - y) ** 2))) < 0.15  # the MAP network fits the data
    ratio = float(var_gap.mean() / var_on.mean())
    assert ratio > 3, ratio  # measured: 46


# ---- Bad input --------------------------------------------------------------------------------------

def test_clear_errors_on_bad_input():
    params = numpy_layers(2, 3, 1)
    X = np.ones((4, 2), np.float32)
    with pytest.raises(ValueError, match="subset"):
        posterior_precision(params, X, noise=0.1, prior_precision=1.0, subset="first_layer")
    with pytest.raises(ValueError, match="X"):
        posterior_precision(params, np.ones((4, 3), np.float32), noise=0.1, prior_precision=1.0)
    with pytest.raises(ValueError, match="noise"):
        posterior_precision(params, X, noise=0.0, prior_precision=1.0)
    with pytest.raises(ValueError, match="params"):
        posterior_precision(numpy_layers(2, 3, 2), X, noise=0.1, prior_precision=1.0)
    with pytest.raises(ValueError, match="precision"):
        predictive(params, np.eye(5, dtype=np.float32), np.ones(2, np.float32), noise=0.1)
    with pytest.raises(ValueError, match="x"):
        predictive(params, np.eye(4, dtype=np.float32), np.ones(3, np.float32), noise=0.1)
    with pytest.raises(ValueError, match="y"):
        fit_map(params, X, np.ones(3, np.float32), noise=0.1, prior_precision=1.0, steps=2)
