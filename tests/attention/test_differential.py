import jax
import numpy as np
import pytest

from cookbook.attention.differential import (
    apply,
    differential_attention,
    differential_weights,
    init,
    lambda_init,
)
from cookbook.attention.scaled_dot_product import scaled_dot_product_attention


def softmax_np(s):
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def inputs(T=5, S=7, d=3, Dv=4, seed=0):
    rng = np.random.default_rng(seed)  # NumPy: jax.random.normal would compile a sampler per shape
    shapes = [(T, d), (S, d), (T, d), (S, d), (S, Dv)]
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def test_a_head_equals_the_difference_of_two_softmax_maps_in_float64():
    q1, k1, q2, k2, v = inputs()
    a = [np.asarray(t, np.float64) for t in (q1, k1, q2, k2, v)]
    expected = (softmax_np(a[0] @ a[1].T / np.sqrt(3)) - 0.4 * softmax_np(a[2] @ a[3].T / np.sqrt(3))) @ a[4]
    np.testing.assert_allclose(np.asarray(differential_attention(q1, k1, q2, k2, v, 0.4)), expected, rtol=1e-5, atol=1e-6)


def test_lambda_zero_is_ordinary_attention_and_equal_maps_at_lambda_one_cancel():
    q1, k1, q2, k2, v = inputs(seed=1)
    mask = np.tril(np.ones((5, 7), bool), k=2)
    np.testing.assert_allclose(
        np.asarray(differential_attention(q1, k1, q2, k2, v, 0.0, mask)),
        np.asarray(jax.jit(scaled_dot_product_attention)(q1, k1, v, mask)), rtol=1e-6, atol=1e-6)  # one program, not one per operation
    np.testing.assert_allclose(np.asarray(differential_attention(q1, k1, q1, k1, v, 1.0)), 0.0, atol=1e-6)


def test_rows_sum_to_one_minus_lambda_and_can_be_negative():
    q1, k1, q2, k2, _ = inputs(seed=2)
    w = np.asarray(differential_weights(q1, k1, q2, k2, 0.6))
    np.testing.assert_allclose(w.sum(axis=-1), 0.4, rtol=1e-5)
    assert (w < 0).any()


def test_the_common_part_of_the_two_maps_cancels():
    # Map 1 puts p on the relevant key 0 and spreads the rest evenly; map 2 (a zero query) is uniform.
    # With lambda = S (1 - p) / (S - 1) the irrelevant keys get exactly zero weight.
    S, d = 8, 4
    k = np.zeros((S, d), np.float32)
    k[0, 0] = 1.0
    q1 = np.zeros((1, d), np.float32)
    q1[0, 0] = 6.0
    p = float(softmax_np(np.float64(q1) @ k.T / 2.0)[0, 0])
    lam = S * (1 - p) / (S - 1)
    w = np.asarray(differential_weights(q1, k, np.zeros((1, d), np.float32), k, lam))
    np.testing.assert_allclose(w[0, 1:], 0.0, atol=1e-6)
    assert w[0, 0] > p - 0.2  # the relevant key keeps most of its weight


def test_lambda_init_grows_with_depth_towards_0_8():
    values = [lambda_init(layer) for layer in range(1, 30)]
    assert values[0] == pytest.approx(0.2) and values[1] == pytest.approx(0.8 - 0.6 * np.exp(-0.3))
    assert all(a < b for a, b in zip(values, values[1:])) and values[-1] < 0.8 and values[-1] > 0.79


def reference_layer(params, x, causal):
    p = {n: np.asarray(a, np.float64) for n, a in params.items()}
    x = np.asarray(x, np.float64)
    T, d_model = x.shape
    d = p["lambda_q1"].shape[0]
    H = d_model // (2 * d)
    lam = np.exp(p["lambda_q1"] @ p["lambda_k1"]) - np.exp(p["lambda_q2"] @ p["lambda_k2"]) + p["lambda_init"]
    q, k, v = x @ p["W_q"], x @ p["W_k"], x @ p["W_v"]
    mask = np.tril(np.ones((T, T))) if causal else np.ones((T, T))
    heads = []
    for i in range(H):
        cols = slice(2 * d * i, 2 * d * (i + 1))
        qi, ki, vi = q[:, cols], k[:, cols], v[:, cols]
        maps = [softmax_np(np.where(mask > 0, qi[:, j * d:(j + 1) * d] @ ki[:, j * d:(j + 1) * d].T / np.sqrt(d), -np.inf)) for j in (0, 1)]
        h = (maps[0] - lam * maps[1]) @ vi
        h = h / np.sqrt(np.mean(h**2, axis=-1, keepdims=True) + 1e-6) * p["rms_gain"]
        heads.append((1 - p["lambda_init"]) * h)
    return np.concatenate(heads, axis=1) @ p["W_o"]


@pytest.mark.parametrize("causal", [False, True])
def test_layer_matches_a_float64_loop_over_heads(causal):
    # The page example's sizes (d_model 16, 2 heads, 5 tokens): the draws of init and apply's program are shared.
    params = init(jax.random.key(3), d_model=16, num_heads=2, layer=3)
    x = np.random.default_rng(4).standard_normal((5, 16)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(apply(params, x, causal=causal)), reference_layer(params, x, causal), rtol=1e-4, atol=1e-5)


def test_causal_layer_ignores_later_tokens():
    params = init(jax.random.key(5), d_model=16, num_heads=2, layer=1)
    x = np.random.default_rng(6).standard_normal((5, 16)).astype(np.float32)
    x2 = x.copy()
    x2[3] += 2.0
    y, y2 = np.asarray(apply(params, x, causal=True)), np.asarray(apply(params, x2, causal=True))
    np.testing.assert_allclose(y[:3], y2[:3], rtol=1e-6, atol=1e-6)
    assert np.abs(y[3:] - y2[3:]).max() > 1e-3  # the changed token and those after it do see it


def test_bad_input_raises():
    q1, k1, q2, k2, v = inputs()
    with pytest.raises(ValueError, match=r"q2 must have shape \(5, 3\) \(like q1\), got shape \(4, 3\)"):
        differential_attention(q1, k1, q2[:4], k2, v, 0.5)
    with pytest.raises(ValueError, match=r"k1 must have shape \(7, 3\) \(d from q1\), got shape \(7, 2\)"):
        differential_attention(q1, k1[:, :2], q2, k2, v, 0.5)
    with pytest.raises(ValueError, match=r"lam must have 0 axes"):
        differential_weights(q1, k1, q2, k2, np.ones(2, np.float32))
    with pytest.raises(ValueError, match=r"v must have shape \(7, 4\) \(S from k1\), got shape \(6, 4\)"):
        differential_attention(q1, k1, q2, k2, v[:6], 0.5)
    with pytest.raises(ValueError, match=r"d_model must be a multiple of 2 \* num_heads = 6, got 8"):
        init(jax.random.key(0), d_model=8, num_heads=3, layer=1)
    with pytest.raises(ValueError, match=r"layer must be"):
        lambda_init(0)
    params = init(jax.random.key(0), d_model=16, num_heads=2, layer=1)
    with pytest.raises(ValueError, match=r"x must have shape \(3, 16\) \(d_model from params\), got shape \(3, 6\)"):
        apply(params, np.ones((3, 6), np.float32))
    with pytest.raises(ValueError, match=r'params\["rms_gain"\] must have shape \(8,\)'):
        apply({**params, "rms_gain": np.ones(3, np.float32)}, np.ones((3, 16), np.float32))
