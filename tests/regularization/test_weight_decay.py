import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.linear_model import Ridge

from cookbook.regularization.weight_decay import (
    decoupled_sgd_step,
    fit_ridge_gradient_descent,
    l2_penalty,
    l2_sgd_step,
    polynomial_features,
    ridge,
    ridge_loss,
)

RNG = np.random.default_rng(0)
# The functions check their input and then run one compiled core per shape: the tests call them as they
# are, with NumPy inputs, and check their results in NumPy; a gradient is one compiled program.
ridge_loss_grad = jax.jit(jax.grad(ridge_loss))
penalty_grad = jax.jit(jax.grad(l2_penalty))


def _data(N=11, D=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D)).astype(np.float32)
    y = (X @ rng.standard_normal(D) + 0.1 * rng.standard_normal(N)).astype(np.float32)
    return X, y


@pytest.mark.parametrize("lam", [0.01, 0.7, 13.0])
@pytest.mark.parametrize("shape", [(11, 5), (3, 7)])  # under- and over-determined
def test_matches_sklearn_ridge_and_the_normal_equations(lam, shape):
    X, y = _data(*shape)
    w = np.asarray(ridge(X, y, lam))
    # sklearn's Ridge minimises |y - Xw|^2 + alpha |w|^2: twice our loss, so alpha = lambda.
    ref = Ridge(alpha=lam, fit_intercept=False, solver="svd").fit(X.astype(np.float64), y.astype(np.float64)).coef_
    X64 = X.astype(np.float64)
    normal = np.linalg.solve(X64.T @ X64 + lam * np.eye(X.shape[1]), X64.T @ y)
    np.testing.assert_allclose(w, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(w, normal, rtol=1e-4, atol=1e-5)


def test_tiny_case_by_hand():
    # X^T X = [[2, 1], [1, 2]], X^T y = [4, 5]; with lambda = 1: [[3, 1], [1, 3]] w = [4, 5].
    X = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = jnp.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(ridge(X, y, 1.0), [7 / 8, 11 / 8], rtol=1e-6)


def test_zero_decay_is_minimum_norm_least_squares():
    X, y = _data(3, 7)  # more features than examples: infinitely many exact fits
    w = np.asarray(ridge(X, y, 0.0))
    ref, *_ = np.linalg.lstsq(X.astype(np.float64), y.astype(np.float64), rcond=None)
    np.testing.assert_allclose(w, ref, rtol=1e-4, atol=1e-5)


def test_weights_shrink_monotonically_in_norm():
    X, y = _data(11, 5)
    lams = np.array([0.0, 0.01, 0.1, 1.0, 10.0, 100.0, 1e4], np.float32)
    norms = np.linalg.norm(np.asarray(jax.vmap(lambda lam: ridge(X, y, lam))(lams), np.float64), axis=1)
    assert np.all(np.diff(norms) < 0), norms
    assert norms[-1] < 1e-2 * norms[0]


def test_the_gradient_vanishes_at_the_closed_form_and_equals_the_map_of_a_gaussian_prior():
    X, y = _data(11, 5)
    sigma, tau = 0.3, 0.5
    w = ridge(X, y, sigma**2 / tau**2)

    @jax.jit
    @jax.grad
    def neg_log_posterior(w):
        return jnp.sum((X @ w - y) ** 2) / (2 * sigma**2) + jnp.sum(w**2) / (2 * tau**2)

    np.testing.assert_allclose(ridge_loss_grad(w, X, y, sigma**2 / tau**2), np.zeros(5), atol=1e-4)
    np.testing.assert_allclose(neg_log_posterior(w), np.zeros(5), atol=1e-3)


def test_gradient_descent_reaches_the_closed_form():
    X, y = _data(11, 5)
    lam = 0.5
    s_max = float(np.linalg.norm(X, 2))
    w, losses = fit_ridge_gradient_descent(X, y, lam, learning_rate=1.0 / (s_max**2 + lam), steps=400)
    np.testing.assert_allclose(w, ridge(X, y, lam), atol=1e-4)
    assert np.all(np.diff(np.asarray(losses)) <= 1e-5)


def test_penalty_value_and_gradient():
    params = {"w": RNG.standard_normal((3, 5)).astype(np.float32), "b": RNG.standard_normal(7).astype(np.float32)}
    expected = 0.5 * 0.3 * (np.sum(params["w"] ** 2) + np.sum(params["b"] ** 2))
    np.testing.assert_allclose(l2_penalty(params, 0.3), expected, rtol=1e-5)
    grads = penalty_grad(params, 0.3)
    jax.tree.map(lambda g, p: np.testing.assert_allclose(g, 0.3 * p, rtol=1e-6), grads, params)


def test_decoupled_step_equals_l2_step_for_sgd_and_optax():
    params = {"w": RNG.standard_normal((3, 5)).astype(np.float32)}
    grads = {"w": RNG.standard_normal((3, 5)).astype(np.float32)}
    lr, wd = 0.1, 0.05
    coupled = l2_sgd_step(params, grads, learning_rate=lr, weight_decay=wd)
    decoupled = decoupled_sgd_step(params, grads, learning_rate=lr, weight_decay=wd)
    np.testing.assert_allclose(coupled["w"], decoupled["w"], rtol=1e-6, atol=1e-7)
    tx = optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr))
    optax_step = jax.jit(lambda p, g: optax.apply_updates(p, tx.update(g, tx.init(p), p)[0]))  # one program
    np.testing.assert_allclose(optax_step(params, grads)["w"], decoupled["w"], rtol=1e-6, atol=1e-7)
    # And the coupled step is plain SGD on the gradient of loss + penalty.
    total = jax.tree.map(lambda g, d: g + np.asarray(d), grads, penalty_grad(params, wd))
    np.testing.assert_allclose(params["w"] - lr * total["w"], coupled["w"], rtol=1e-6, atol=1e-7)


def test_polynomial_features_and_jit():
    x = np.array([-1.0, 0.5, 2.0], np.float32)
    np.testing.assert_allclose(polynomial_features(x, 3), [[1, -1, 1, -1], [1, 0.5, 0.25, 0.125], [1, 2, 4, 8]])
    X, y = _data(11, 5)  # the other tests' shape: ridge's program is compiled already
    np.testing.assert_allclose(jax.jit(ridge)(X, y, 0.3), ridge(X, y, 0.3), rtol=1e-5, atol=1e-6)


def test_overparameterised_polynomial_is_tamed_by_decay():
    # Degree 15 on 12 points: without decay the fit interpolates and swings; with decay it does not.
    rng = np.random.default_rng(1)
    x = np.sort(rng.uniform(-1, 1, 12)).astype(np.float32)
    y = (np.sin(np.pi * x) + 0.2 * rng.standard_normal(12)).astype(np.float32)
    line = np.linspace(-1, 1, 201, dtype=np.float32)
    Phi, grid = polynomial_features(x, 15), np.asarray(polynomial_features(line, 15))
    w0, w1 = np.asarray(ridge(Phi, y, 0.0)), np.asarray(ridge(Phi, y, 1e-2))
    Phi = np.asarray(Phi)  # the fits and the errors in NumPy, float32 as before
    fit0, fit1 = float(np.max(np.abs(Phi @ w0 - y))), float(np.max(np.abs(Phi @ w1 - y)))
    assert fit0 < 0.1 and fit0 < fit1  # (nearly) interpolates the noise; float32 loses the last digits
    assert float(np.linalg.norm(w0)) > 100 * float(np.linalg.norm(w1))
    truth = np.sin(np.float32(np.pi) * line)
    assert float(np.mean((grid @ w1 - truth) ** 2)) < float(np.mean((grid @ w0 - truth) ** 2))


@pytest.mark.parametrize(
    "X, y, lam, match",
    [
        (np.ones(4, np.float32), np.ones(4, np.float32), 0.1, r"X must have 2 axes \(N, D\), got shape \(4,\)"),
        (np.ones((4, 3), np.float32), np.ones(5, np.float32), 0.1, r"y must have shape \(4,\) \(\(N,\), N from X\)"),
        (np.ones((4, 3), np.float32), np.ones(4, np.float32), -0.1, r"weight_decay must be >= 0, got -0.1"),
    ],
)
def test_bad_input_raises(X, y, lam, match):
    with pytest.raises(ValueError, match=match):
        ridge(X, y, lam)


def test_bad_polynomial_input_and_negative_decay_in_steps_raise():
    with pytest.raises(ValueError, match=r"x must have 1 axes \(N,\)"):
        polynomial_features(np.ones((2, 3), np.float32), 3)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        decoupled_sgd_step({"w": np.ones(3, np.float32)}, {"w": np.ones(3, np.float32)}, learning_rate=0.1,
                           weight_decay=-1.0)


def test_gradients_unlike_the_parameters_and_integer_data_raise():
    # Fail on the old code: a (3, 1) gradient was broadcast against a (3, 2) weight in silence, and
    # integer data were taken as they came.
    params = {"w": np.ones((3, 2), np.float32)}
    for step in (l2_sgd_step, decoupled_sgd_step):
        with pytest.raises(ValueError, match=r"grads\['w'\] must have the shape of params\['w'\], \(3, 2\), got \(3, 1\)"):
            step(params, {"w": np.ones((3, 1), np.float32)}, learning_rate=0.1, weight_decay=0.1)
        with pytest.raises(TypeError, match=r"params\['w'\] must be a floating-point array"):
            step({"w": np.ones((3, 2), np.int32)}, params, learning_rate=0.1, weight_decay=0.1)
    with pytest.raises(TypeError, match=r"X must be a floating-point array"):
        ridge(np.ones((4, 3), np.int32), np.ones(4, np.float32), 0.1)
    with pytest.raises(ValueError, match=r"w must have shape \(3,\) \(\(D,\), D from X\)"):
        ridge_loss(np.ones(2, np.float32), np.ones((4, 3), np.float32), np.ones(4, np.float32), 0.1)
    with pytest.raises(TypeError, match=r"x must be a floating-point array"):
        polynomial_features(np.arange(3, dtype=np.int32), 2)


def test_a_batch_averaged_loss_needs_a_decay_of_lambda_over_n():
    # The page: averaging the squared error over N examples moves the same solution to lambda / N.
    rng = np.random.default_rng(7)
    X, y, lam = rng.standard_normal((11, 3)).astype(np.float32), rng.standard_normal(11).astype(np.float32), 0.7
    w = ridge(X, y, lam)
    mean_loss = lambda w: 0.5 * jnp.mean((X @ w - y) ** 2) + 0.5 * (lam / 11) * jnp.sum(w**2)  # noqa: E731
    np.testing.assert_allclose(jax.jit(jax.grad(mean_loss))(w), np.zeros(3), atol=1e-5)
