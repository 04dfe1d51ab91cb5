import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from cookbook.normalization.dynamic_tanh import dynamic_tanh, init, s_curve_data, tanh_fit
from cookbook.normalization.layer_norm import layer_norm

# One feature width and one input shape for the module, drawn with NumPy: each new shape of an
# eager call or a jax.random draw compiles a program of its own.
D = 6
_rng = np.random.default_rng(0)
PARAMS = {"alpha": np.array(0.7, np.float32), "gamma": _rng.standard_normal(D).astype(np.float32),
          "beta": _rng.standard_normal(D).astype(np.float32)}
X = (_rng.standard_normal((3, 4, D)) * 3).astype(np.float32)


def test_equals_the_formula_in_float64():
    p = {k: v.astype(np.float64) for k, v in PARAMS.items()}
    expected = p["gamma"] * np.tanh(p["alpha"] * X.astype(np.float64)) + p["beta"]
    np.testing.assert_allclose(np.asarray(dynamic_tanh(PARAMS, X)), expected, rtol=1e-5, atol=1e-6)


def test_each_output_depends_on_its_own_feature_only_unlike_layer_norm():
    x = X[0, 0]  # (D,)
    J = np.asarray(jax.jacobian(lambda x: dynamic_tanh(PARAMS, x))(x))
    np.testing.assert_array_equal(J - np.diag(np.diag(J)), 0.0)
    J_ln = np.asarray(jax.jacobian(lambda x: layer_norm(x, np.ones(D, np.float32), np.zeros(D, np.float32)))(x))
    assert np.all(np.abs(J_ln[~np.eye(D, dtype=bool)]) > 0)


def test_linear_near_zero_and_bounded_by_gamma():
    slope = jax.jacobian(lambda x: dynamic_tanh(PARAMS, x))(np.zeros(D, np.float32))
    np.testing.assert_allclose(np.diag(np.asarray(slope)), 0.7 * PARAMS["gamma"], rtol=1e-6)
    y = dynamic_tanh(PARAMS, np.full((D,), 1e4, np.float32))
    np.testing.assert_allclose(np.asarray(y), PARAMS["gamma"] + PARAMS["beta"], rtol=1e-6)


def test_layer_norm_of_an_outlier_feature_is_an_s_curve_that_a_tanh_fits_ten_times_better_than_a_line():
    v, y = s_curve_data()
    A = np.stack([v, np.ones_like(v)], axis=1)
    line_mse = float(np.mean((A @ np.linalg.lstsq(A, y, rcond=None)[0] - y) ** 2))
    alpha, gamma, beta, tanh_mse = tanh_fit(v, y)
    assert tanh_mse < 0.1 * line_mse, (tanh_mse, line_mse)
    assert np.abs(y).max() < np.sqrt(16 - 1)  # LayerNorm bounds one feature by sqrt(D - 1)
    assert 0.05 < alpha < 1.0 and gamma > 0


def test_gradients_dtype_and_jit():
    params, x = PARAMS, X
    check_grads(lambda a, g, b, x: dynamic_tanh({"alpha": a, "gamma": g, "beta": b}, x),
                (params["alpha"], params["gamma"], params["beta"], x), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    assert dynamic_tanh(params, x.astype(jnp.bfloat16)).dtype == jnp.bfloat16  # rounded by NumPy
    np.testing.assert_allclose(np.asarray(jax.jit(dynamic_tanh)(params, x)), np.asarray(dynamic_tanh(params, x)), rtol=1e-6)


def test_bad_input_raises():
    params = init(3)
    with pytest.raises(ValueError, match=r'params\["gamma"\] must have shape \(4,\) \(D from x\), got shape \(3,\)'):
        dynamic_tanh(params, np.ones(4, np.float32))
    with pytest.raises(TypeError, match=r"x must be a floating-point array"):
        dynamic_tanh(params, np.ones(3, np.int32))
    with pytest.raises(ValueError, match=r"alpha must be a positive number, got 0"):
        init(3, alpha=0)
    with pytest.raises(ValueError, match=r'params\["alpha"\] must have shape \(\)'):
        dynamic_tanh({**params, "alpha": np.ones(3, np.float32)}, np.ones(3, np.float32))
