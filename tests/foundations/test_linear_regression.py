import jax
import numpy as np
import pytest

from cookbook.foundations.linear_regression import (
    fit_closed_form,
    fit_gradient_descent,
    mse_loss,
    predict,
)


def _ones(*shape):  # in NumPy: a jnp.ones would compile a program for each shape
    return np.ones(shape, np.float32)


def _data(seed, N=37, D=5, noise=0.1):
    """Noisy data from a random line, drawn with NumPy (float32): jax.random would compile per shape."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D)).astype(np.float32)
    w = rng.standard_normal(D).astype(np.float32)
    y = X @ w - np.float32(0.7) + np.float32(noise) * rng.standard_normal(N).astype(np.float32)
    return X, y


PAGE = dict(N=100, D=2)  # the page's data shape: its solver and its 200-step descent are one program each


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_form_matches_numpy_lstsq(seed):
    X, y = _data(seed)
    params = fit_closed_form(X, y)
    X_tilde = np.concatenate([np.asarray(X), np.ones((X.shape[0], 1))], axis=1).astype(np.float64)
    theta, *_ = np.linalg.lstsq(X_tilde, np.asarray(y, np.float64), rcond=None)
    np.testing.assert_allclose(params["w"], theta[:-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(params["b"], theta[-1], rtol=1e-4, atol=1e-5)


def test_residual_is_orthogonal_to_every_feature():
    X, y = _data(3)
    params = fit_closed_form(X, y)
    X, y, w, b = (np.asarray(a, np.float64) for a in (X, y, params["w"], params["b"]))  # checked in NumPy
    residual = X @ w + b - y
    np.testing.assert_allclose(X.T @ residual, np.zeros(X.shape[1]), atol=1e-3)
    np.testing.assert_allclose(residual.sum(), 0.0, atol=1e-3)  # the column of ones


def test_exact_line_through_two_points_by_hand():
    # y = 3x - 1 through (0, -1) and (2, 5).
    params = fit_closed_form(np.array([[0.0], [2.0]], np.float32), np.array([-1.0, 5.0], np.float32))
    np.testing.assert_allclose(params["w"], [3.0], atol=1e-5)
    np.testing.assert_allclose(params["b"], -1.0, atol=1e-5)
    assert float(predict(params, np.array([1.0], np.float32))) == pytest.approx(2.0, abs=1e-5)


def test_collinear_features_give_the_minimum_norm_solution():
    x = np.linspace(-1.0, 1.0, 11, dtype=np.float32)
    X = np.stack([x, x], axis=1)  # the two features are identical: X^T X is singular
    params = fit_closed_form(X, 4.0 * x)
    np.testing.assert_allclose(params["w"], [2.0, 2.0], atol=1e-4)
    assert np.all(np.isfinite(params["w"]))


def test_gradient_descent_reaches_the_closed_form_and_loss_decreases():
    X, y = _data(4, **PAGE)
    exact = fit_closed_form(X, y)
    params, losses = fit_gradient_descent(X, y, learning_rate=0.1, steps=200)
    assert losses.shape == (200,)
    assert np.all(np.diff(np.asarray(losses)) <= 1e-7)  # monotone for a small enough step
    np.testing.assert_allclose(params["w"], exact["w"], atol=1e-3)
    np.testing.assert_allclose(params["b"], exact["b"], atol=1e-3)


def test_gradient_descent_diverges_above_the_stability_bound():
    X, y = _data(5, **PAGE)
    X_tilde = np.concatenate([np.asarray(X, np.float64), np.ones((X.shape[0], 1))], axis=1)
    lam_max = float(np.linalg.eigvalsh(2.0 / X.shape[0] * X_tilde.T @ X_tilde)[-1])  # in NumPy, float64
    _, stable = fit_gradient_descent(X, y, learning_rate=1.9 / lam_max, steps=200)
    _, unstable = fit_gradient_descent(X, y, learning_rate=2.1 / lam_max, steps=200)
    stable, unstable = np.asarray(stable), np.asarray(unstable)
    assert stable[-1] < stable[0]
    assert unstable[-1] > unstable[0]


def test_mse_loss_gradient_matches_the_formula():
    X, y = _data(6)
    params = {"w": np.arange(5, dtype=np.float32) / 5, "b": np.float32(0.3)}
    grads = jax.jit(jax.grad(mse_loss))(params, X, y)  # one program
    X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)  # the formula in NumPy
    r = X @ params["w"] + params["b"] - y
    np.testing.assert_allclose(grads["w"], 2.0 / X.shape[0] * X.T @ r, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads["b"], 2.0 * r.mean(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "X, y, match",
    [
        (_ones(4), _ones(4), r"X must have 2 axes \(N, D\)"),
        (_ones(4, 3), _ones(5), r"y must have shape \(4,\) \(\(N,\) to match X\)"),
        (_ones(4, 3), _ones(4, 1), r"got shape \(4, 1\)"),
    ],
)
def test_bad_shapes_raise_clear_errors(X, y, match):
    with pytest.raises(ValueError, match=match):
        fit_closed_form(X, y)


def test_predict_rejects_wrong_feature_count():
    with pytest.raises(ValueError, match=r"x must have shape \(3,\)"):
        predict({"w": _ones(3), "b": np.float32(0.0)}, _ones(4))


@pytest.mark.parametrize("call, name", [
    (lambda: fit_closed_form(np.ones((4, 3), np.int32), _ones(4)), "X"),
    (lambda: fit_closed_form(_ones(4, 3), np.arange(4, dtype=np.int32)), "y"),
    (lambda: predict({"w": _ones(3), "b": np.zeros((), np.int32)}, _ones(3)), r"params\['b'\]"),
    (lambda: fit_gradient_descent(_ones(4, 3), _ones(4), learning_rate=0.1, steps=2.5), "steps"),
])
def test_wrong_types_raise_type_errors(call, name):
    with pytest.raises(TypeError, match=rf"{name} must be"):
        call()


def test_loss_rejects_data_with_other_features_than_the_weights():
    params = {"w": _ones(3), "b": np.float32(0.0)}
    with pytest.raises(ValueError, match=r"X must have shape \(4, 3\)"):
        mse_loss(params, _ones(4, 2), _ones(4))


def test_lists_are_accepted():
    params = fit_closed_form([[0.0], [1.0], [2.0]], [1.0, 3.0, 5.0])  # y = 2 x + 1
    np.testing.assert_allclose([np.asarray(params["w"])[0], params["b"]], [2.0, 1.0], atol=1e-5)


def test_the_numbers_on_the_page():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((50, 3)) @ np.diag([1.0, 10.0, 100.0])  # features on very different scales
    # forming X^T X squares the condition number: twice the digits lost
    np.testing.assert_allclose(np.linalg.cond(X.T @ X), np.linalg.cond(X) ** 2, rtol=1e-6)
    # gradient descent converges for eta < 2 / lambda_max of the Hessian (2 / N) X~^T X~, diverges above
    Xj = (X[:, :2] / 10.0).astype(np.float32)
    y = Xj @ np.array([1.0, -1.0], np.float32) + np.float32(0.5)
    X_tilde = np.concatenate([np.asarray(Xj, np.float64), np.ones((50, 1))], axis=1)
    lam_max = np.linalg.eigvalsh(2.0 / 50 * X_tilde.T @ X_tilde).max()
    _, below = fit_gradient_descent(Xj, y, learning_rate=0.95 * 2 / lam_max, steps=300)
    _, above = fit_gradient_descent(Xj, y, learning_rate=1.05 * 2 / lam_max, steps=300)
    below, above = np.asarray(below), np.asarray(above)
    assert float(below[-1]) < 1e-3 * float(below[0])
    assert not np.isfinite(float(above[-1])) or float(above[-1]) > float(above[0])
