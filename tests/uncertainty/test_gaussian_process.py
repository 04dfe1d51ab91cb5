import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

from cookbook.uncertainty._data import GAP, gap_data
from cookbook.uncertainty.gaussian_process import fit_hyperparameters, log_marginal_likelihood, posterior, rbf_kernel

HYPER = dict(lengthscale=0.8, variance=1.7, noise=0.05)


def random_problem(seed=0, N=7, M=5, D=3):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, D)), rng.standard_normal(N), rng.standard_normal((M, D))


def sklearn_gp(x, y, lengthscale, variance, noise):
    kernel = ConstantKernel(variance, "fixed") * RBF(lengthscale, "fixed")
    return GaussianProcessRegressor(kernel, alpha=noise, optimizer=None).fit(x, y)


# ---- Against scikit-learn -------------------------------------------------------------------------

def test_posterior_and_marginal_likelihood_match_sklearn_in_float64():
    x, y, x_test = random_problem()
    gp = sklearn_gp(x, y, **HYPER)
    want_mean, want_cov = gp.predict(x_test, return_cov=True)
    with jax.enable_x64(True):
        mean, cov = posterior(x, y, x_test, **HYPER)
        lml = log_marginal_likelihood(x, y, **HYPER)
        assert mean.dtype == jnp.float64
        np.testing.assert_allclose(mean, want_mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(cov, want_cov, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(float(lml), gp.log_marginal_likelihood_value_, rtol=1e-12)


def test_posterior_in_float32_is_within_1e_4_of_sklearn():
    x, y, x_test = random_problem(1)
    want_mean, want_cov = sklearn_gp(x, y, **HYPER).predict(x_test, return_cov=True)
    mean, cov = posterior(np.float32(x), np.float32(y), np.float32(x_test), **HYPER)
    assert mean.shape == (5,) and cov.shape == (5, 5) and mean.dtype == jnp.float32
    np.testing.assert_allclose(mean, want_mean, atol=1e-4)
    np.testing.assert_allclose(cov, want_cov, atol=1e-4)


def test_rbf_kernel_matches_sklearn_and_a_loop():
    x1, _, x2 = random_problem(2)
    got = rbf_kernel(np.float32(x1), np.float32(x2), lengthscale=0.8, variance=1.7)
    want = (ConstantKernel(1.7) * RBF(0.8))(x1, x2)
    loop = np.array([[1.7 * np.exp(-np.sum((a - b) ** 2) / (2 * 0.8**2)) for b in x2] for a in x1])
    np.testing.assert_allclose(want, loop, rtol=1e-12)
    assert got.shape == (7, 5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_gradient_in_the_log_hyperparameters_matches_sklearn():
    x, y, _ = random_problem(3)
    kernel = ConstantKernel(HYPER["variance"]) * RBF(HYPER["lengthscale"]) + WhiteKernel(HYPER["noise"])
    gp = GaussianProcessRegressor(kernel, alpha=0.0, optimizer=None).fit(x, y)
    value, grad = gp.log_marginal_likelihood(gp.kernel_.theta, eval_gradient=True)  # order: variance, lengthscale, noise
    with jax.enable_x64(True):
        @jax.jit
        def f(log_theta):
            var, ell, sigma2 = jnp.exp(log_theta)
            return log_marginal_likelihood(x, y, lengthscale=ell, variance=var, noise=sigma2)

        log_theta = np.log([HYPER["variance"], HYPER["lengthscale"], HYPER["noise"]])
        got_value, got_grad = jax.jit(jax.value_and_grad(f))(log_theta)
        check_grads(f, (log_theta,), order=1, modes=("rev",))
    np.testing.assert_allclose(float(got_value), value, rtol=1e-10)
    np.testing.assert_allclose(got_grad, grad, rtol=1e-6, atol=1e-9)


# ---- Learning the hyperparameters -----------------------------------------------------------------

@pytest.fixture(scope="module")
def fitted():
    x, y = gap_data(n=20)
    theta, history = fit_hyperparameters(x, y, steps=200)
    return x, y, (theta, np.asarray(history))


def test_fitted_hyperparameters_reach_the_marginal_likelihood_of_sklearns_optimiser(fitted):
    x, y, (theta, history) = fitted
    kernel = ConstantKernel(1.0) * RBF(1.0) + WhiteKernel(0.1)
    gp = GaussianProcessRegressor(kernel, alpha=0.0).fit(np.float64(x), np.float64(y))
    best = gp.log_marginal_likelihood_value_
    reached = float(log_marginal_likelihood(x, y, **theta))
    assert reached > best - 0.05, (reached, best)
    assert history[-1] > history[0] + 10
    # The noise found is near the 0.1**2 that made the data.
    assert 0.002 < float(theta["noise"]) < 0.025


# ---- Properties the page claims -------------------------------------------------------------------

def test_tight_on_the_data_wide_in_the_gap_and_the_prior_far_away():
    x, y = gap_data()
    grid = np.array([[-1.5], [1.2], [0.0], [9.0]], np.float32)  # two on the data, the gap's middle, far
    mean, cov = posterior(x, y, grid, lengthscale=0.5, variance=1.0, noise=0.01)
    var = np.diag(cov)
    assert var[0] < 0.01 and var[1] < 0.01
    assert var[2] > 30 * max(var[0], var[1])
    np.testing.assert_allclose([mean[3], var[3]], [0.0, 1.0], atol=1e-5)  # the prior
    assert GAP[0] < 0.0 < GAP[1]


def test_covariance_is_symmetric_positive_semidefinite_and_below_the_prior():
    x, y, x_test = random_problem(4)
    with jax.enable_x64(True):
        _, cov = posterior(x, y, x_test, **HYPER)
        eig = np.linalg.eigvalsh(np.asarray(cov))
    np.testing.assert_allclose(cov, cov.T, atol=1e-14)
    assert eig.min() > -1e-12
    assert np.all(np.diag(cov) <= HYPER["variance"])


def test_with_little_noise_the_mean_interpolates_the_targets():
    x, y, _ = random_problem(5)
    with jax.enable_x64(True):
        mean, cov = posterior(x, y, x[:5], lengthscale=0.8, variance=1.7, noise=1e-10)
    np.testing.assert_allclose(mean, y[:5], atol=1e-6)
    np.testing.assert_allclose(np.diag(cov), 0.0, atol=1e-6)


def test_one_training_point_and_one_test_point_by_hand():
    x, y, x_test = np.array([[0.0]], np.float32), np.array([2.0], np.float32), np.array([[1.0]], np.float32)
    mean, cov = posterior(x, y, x_test, lengthscale=1.0, variance=1.0, noise=1.0)
    k = np.exp(-0.5)
    np.testing.assert_allclose(mean, [k * 2.0 / 2.0], rtol=1e-6)
    np.testing.assert_allclose(cov, [[1.0 - k**2 / 2.0]], rtol=1e-6)
    lml = log_marginal_likelihood(x, y, lengthscale=1.0, variance=1.0, noise=1.0)
    np.testing.assert_allclose(lml, -0.5 * 4 / 2 - 0.5 * np.log(2) - 0.5 * np.log(2 * np.pi), rtol=1e-6)


# ---- Bad input ------------------------------------------------------------------------------------

def test_clear_errors_on_bad_input():
    x, y, x_test = (np.float32(a) for a in random_problem())
    with pytest.raises(TypeError, match="x_train"):
        posterior(np.int32(x), y, x_test, **HYPER)
    with pytest.raises(ValueError, match="x_train"):
        posterior(x[:, 0], y, x_test, **HYPER)
    with pytest.raises(ValueError, match="y_train"):
        posterior(x, y[:3], x_test, **HYPER)
    with pytest.raises(ValueError, match="x_test"):
        posterior(x, y, x_test[:, :2], **HYPER)
    with pytest.raises(ValueError, match="lengthscale"):
        posterior(x, y, x_test, lengthscale=-1.0, variance=1.0, noise=0.1)
    with pytest.raises(TypeError, match="variance"):
        posterior(x, y, x_test, lengthscale=1.0, variance="1", noise=0.1)
    with pytest.raises(ValueError, match="noise"):
        fit_hyperparameters(x, y, steps=3, noise=0.0)
    with pytest.raises(TypeError, match="steps"):
        fit_hyperparameters(x, y, steps=3.5)
    with pytest.raises(TypeError):
        posterior(x, y, x_test, 1.0, 1.0, 0.1)  # the hyperparameters are keyword-only


def test_without_noise_close_inputs_make_the_factorisation_fail_with_nan_in_float32():
    x = np.array([[0.0], [1e-4], [1.0]], np.float32)  # the page: numerically singular without noise
    y = np.array([0.0, 0.1, 1.0], np.float32)
    x_test = x[:2]  # the two close inputs: the example's shapes, so its compiled posterior serves
    mean, _ = posterior(x, y, x_test, lengthscale=1.0, variance=1.0, noise=0.0)
    assert np.all(np.isnan(mean))
    mean, _ = posterior(x, y, x_test, lengthscale=1.0, variance=1.0, noise=0.01)
    assert np.all(np.isfinite(mean))
