import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from cookbook.normalization.dynamic_tanh import dynamic_tanh, init, s_curve_data, tanh_fit
from cookbook.normalization.layer_norm import layer_norm


def random_params(D, seed=0):
    k_a, k_g, k_b = jax.random.split(jax.random.key(seed), 3)
    return {"alpha": jnp.float32(0.7), "gamma": jax.random.normal(k_g, (D,)), "beta": jax.random.normal(k_b, (D,))}


def test_equals_the_formula_in_float64():
    params = random_params(5)
    x = jax.random.normal(jax.random.key(1), (3, 4, 5)) * 3
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    expected = p["gamma"] * np.tanh(p["alpha"] * np.asarray(x, np.float64)) + p["beta"]
    np.testing.assert_allclose(np.asarray(dynamic_tanh(params, x)), expected, rtol=1e-5, atol=1e-6)


def test_each_output_depends_on_its_own_feature_only_unlike_layer_norm():
    params = random_params(6, seed=2)
    x = jax.random.normal(jax.random.key(3), (6,))
    J = np.asarray(jax.jacobian(lambda x: dynamic_tanh(params, x))(x))
    np.testing.assert_array_equal(J - np.diag(np.diag(J)), 0.0)
    J_ln = np.asarray(jax.jacobian(lambda x: layer_norm(x, jnp.ones(6), jnp.zeros(6)))(x))
    assert np.all(np.abs(J_ln[~np.eye(6, dtype=bool)]) > 0)


def test_linear_near_zero_and_bounded_by_gamma():
    params = random_params(4, seed=4)
    slope = jax.jacobian(lambda x: dynamic_tanh(params, x))(jnp.zeros(4))
    np.testing.assert_allclose(np.diag(np.asarray(slope)), 0.7 * np.asarray(params["gamma"]), rtol=1e-6)
    y = dynamic_tanh(params, jnp.full((4,), 1e4))
    np.testing.assert_allclose(np.asarray(y), np.asarray(params["gamma"] + params["beta"]), rtol=1e-6)


def test_layer_norm_of_an_outlier_feature_is_an_s_curve_that_a_tanh_fits_ten_times_better_than_a_line():
    v, y = s_curve_data()
    A = np.stack([v, np.ones_like(v)], axis=1)
    line_mse = float(np.mean((A @ np.linalg.lstsq(A, y, rcond=None)[0] - y) ** 2))
    alpha, gamma, beta, tanh_mse = tanh_fit(v, y)
    assert tanh_mse < 0.1 * line_mse, (tanh_mse, line_mse)
    assert np.abs(y).max() < np.sqrt(16 - 1)  # LayerNorm bounds one feature by sqrt(D - 1)
    assert 0.05 < alpha < 1.0 and gamma > 0


def test_gradients_dtype_and_jit():
    params = random_params(3, seed=5)
    x = jax.random.normal(jax.random.key(6), (2, 3))
    check_grads(lambda a, g, b, x: dynamic_tanh({"alpha": a, "gamma": g, "beta": b}, x),
                (params["alpha"], params["gamma"], params["beta"], x), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    assert dynamic_tanh(params, x.astype(jnp.bfloat16)).dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(jax.jit(dynamic_tanh)(params, x)), np.asarray(dynamic_tanh(params, x)), rtol=1e-6)


def test_bad_input_raises():
    params = init(3)
    with pytest.raises(ValueError, match=r'params\["gamma"\] must have shape \(4,\) \(D from x\), got shape \(3,\)'):
        dynamic_tanh(params, jnp.ones(4))
    with pytest.raises(TypeError, match=r"x must be a floating-point array"):
        dynamic_tanh(params, jnp.ones(3, jnp.int32))
    with pytest.raises(ValueError, match=r"alpha must be a positive number, got 0"):
        init(3, alpha=0)
    with pytest.raises(ValueError, match=r'params\["alpha"\] must have shape \(\)'):
        dynamic_tanh({**params, "alpha": jnp.ones(3)}, jnp.ones(3))
