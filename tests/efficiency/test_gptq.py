import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.efficiency.gptq import gptq, hessian, obs_step
from cookbook.efficiency.quantization import dequantize, quantize_absmax

D_IN, D_OUT, B = 32, 11, 96


def _layer(seed, correlated=True):
    """A weight (D_IN, D_OUT) and calibration inputs (B, D_IN), in float32 from NumPy."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((D_IN, D_OUT))
    if correlated:  # a few shared factors plus noise: strongly correlated inputs
        X = rng.standard_normal((B, 3)) @ rng.standard_normal((3, D_IN)) + 0.2 * rng.standard_normal((B, D_IN))
    else:  # orthogonal columns: X^T X = I, so H is diagonal
        X = np.linalg.qr(rng.standard_normal((B, D_IN)))[0]
    return W.astype(np.float32), X.astype(np.float32)


def _gptq_numpy(W, X, bits, damp=0.01):
    """GPTQ written as sequential OBS in float64: the explicit inverse, updated after each input."""
    W = W.astype(np.float64).copy()
    X = X.astype(np.float64)
    H = 2 / X.shape[0] * X.T @ X
    H += damp * np.mean(np.diag(H)) * np.eye(H.shape[0])
    H_inv = np.linalg.inv(H)
    q_max = 2 ** (bits - 1) - 1
    scale = np.abs(W).max(0) / q_max
    Q = np.zeros_like(W)
    for i in range(W.shape[0]):
        Q[i] = np.clip(np.round(W[i] / scale), -q_max, q_max)
        err = (W[i] - Q[i] * scale) / H_inv[i, i]
        W[i + 1:] -= np.outer(H_inv[i + 1:, i], err)
        H_inv = H_inv - np.outer(H_inv[:, i], H_inv[i, :]) / H_inv[i, i]  # input i removed
    return Q, scale


def _output_error(W, W_hat, X):
    X = X.astype(np.float64)
    return float(np.sum((X @ W.astype(np.float64) - X @ np.asarray(W_hat, np.float64)) ** 2))


def test_against_sequential_obs_in_float64():
    W, X = _layer(0)
    q, scale = gptq(W, X, bits=4)
    assert q.dtype == jnp.int8 and q.shape == (D_IN, D_OUT) and scale.shape == (1, D_OUT)
    np.testing.assert_array_equal(scale, quantize_absmax(W, bits=4, axis=0)[1])
    Q, _ = _gptq_numpy(W, X, bits=4)
    assert np.mean(np.asarray(q) == Q) > 0.99  # float32 against float64: a rare tie may round the other way
    assert np.abs(np.asarray(q)).max() <= 7
    np.testing.assert_allclose(_output_error(W, dequantize(q, scale), X), _output_error(W, Q * scale, X), rtol=0.02)


def test_beats_round_to_nearest_on_the_layer_output():
    W, X = _layer(1)
    for bits, ratio in ((4, 1 / 4), (3, 1 / 6)):  # measured: 0.18 and 0.11
        rtn = _output_error(W, dequantize(*quantize_absmax(W, bits=bits, axis=0)), X)
        ours = _output_error(W, dequantize(*gptq(W, X, bits=bits)), X)
        assert ours < ratio * rtn, (bits, ours, rtn)  # the page's "under a quarter ... under a sixth"


def test_uncorrelated_inputs_give_the_round_to_nearest_codes():
    W, X = _layer(2, correlated=False)
    H = np.asarray(hessian(X))
    assert np.allclose(H, np.diag(np.diag(H)), atol=1e-6)  # diagonal: nothing to compensate
    np.testing.assert_array_equal(gptq(W, X, bits=4)[0], quantize_absmax(W, bits=4, axis=0)[0])


def test_hessian_against_numpy_and_damping():
    _, X = _layer(3)
    H = 2 / B * X.astype(np.float64).T @ X.astype(np.float64)
    expected = H + 0.05 * np.mean(np.diag(H)) * np.eye(D_IN)
    np.testing.assert_allclose(hessian(X, damp=0.05), expected, rtol=1e-4, atol=1e-4)
    # Dead inputs (always zero) leave H singular without damping; with it, GPTQ stays finite.
    X_dead = X.copy()
    X_dead[:, :5] = 0
    W, _ = _layer(3)
    q, scale = gptq(W, X_dead, bits=4)
    assert np.all(np.isfinite(np.asarray(dequantize(q, scale))))
    np.testing.assert_allclose(hessian(np.zeros((3, 4), np.float32)), np.eye(4) * 0.01, rtol=1e-6)  # all zero: lam = damp


def test_obs_step_is_the_constrained_least_squares_optimum():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((13, 7))
    H = (X.T @ X).astype(np.float32)
    w = rng.standard_normal(7).astype(np.float32)
    i, value = 2, np.float32(0.25)
    w_new, cost = obs_step(w, H, i, value)
    assert float(w_new[i]) == value
    # The reference: fix w_i = value, fit the other weights to keep X w by least squares (float64).
    others = [j for j in range(7) if j != i]
    target = X @ w - X[:, i] * value
    best = np.linalg.lstsq(X[:, others], target, rcond=None)[0]
    np.testing.assert_allclose(np.asarray(w_new)[others], best, rtol=1e-3, atol=1e-3)
    delta = np.asarray(w_new, np.float64) - w
    np.testing.assert_allclose(float(cost), 0.5 * delta @ H.astype(np.float64) @ delta, rtol=1e-3)
    # No other change with w_i fixed costs less.
    for _ in range(5):
        other = delta + np.concatenate([rng.standard_normal(7) * 0.01 * (np.arange(7) != i)])
        assert 0.5 * other @ H @ other >= float(cost) * (1 - 1e-4)


def test_bfloat16_weights_give_the_codes_of_their_float32_values():
    W, X = _layer(5)
    Wb = jnp.asarray(W, jnp.bfloat16)
    q, scale = gptq(Wb, X, bits=4)
    np.testing.assert_array_equal(q, gptq(np.asarray(Wb, np.float32), X, bits=4)[0])
    assert scale.dtype == jnp.float32


def test_bad_input():
    W, X = _layer(6)
    with pytest.raises(ValueError, match="X"):
        gptq(W, X[:, :7], bits=4)
    with pytest.raises(TypeError, match="W"):
        gptq(W.astype(np.int32), X, bits=4)
    with pytest.raises(ValueError, match="bits"):
        gptq(W, X, bits=9)
    with pytest.raises(TypeError, match="bits"):
        gptq(W, X, bits=4.0)
    with pytest.raises(ValueError, match="damp"):
        hessian(X, damp=-1.0)
    with pytest.raises(ValueError, match="i"):
        obs_step(W[:, 0], np.eye(D_IN, dtype=np.float32), 40, np.float32(0.0))
    W[0, 0] = np.nan
    with pytest.raises(ValueError, match="W"):
        gptq(W, X, bits=4)
