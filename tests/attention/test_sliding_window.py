import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.attention.sliding_window import (
    decode_step,
    init_cache,
    sliding_window_attention,
    sliding_window_mask,
)


def reference(q, k, v, window, num_sinks):
    """A float64 loop over queries: softmax over the window and the sinks, written from the page."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    out = np.zeros((len(q), v.shape[1]))
    for t in range(len(q)):
        seen = [s for s in range(t + 1) if s > t - window or s < num_sinks]
        scores = k[seen] @ q[t] / np.sqrt(q.shape[1])
        w = np.exp(scores - scores.max())
        out[t] = (w / w.sum()) @ v[seen]
    return out


def qkv(T, D=3, Dv=5, seed=0):
    """Random queries, keys and values, drawn in NumPy (a jax.random draw compiles for every shape)."""
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal((T, d)).astype(np.float32) for d in (D, D, Dv))


@pytest.mark.parametrize("T, window, num_sinks", [(11, 3, 0), (11, 3, 2), (7, 7, 0), (5, 8, 1), (9, 1, 3), (12, 4, 6)])
def test_blocked_form_equals_the_definition(T, window, num_sinks):
    q, k, v = qkv(T)
    y = sliding_window_attention(q, k, v, window, num_sinks=num_sinks)  # checks, then one compiled core
    np.testing.assert_allclose(np.asarray(y), reference(q, k, v, window, num_sinks), rtol=1e-5, atol=1e-5)


def test_mask_is_a_band_plus_sink_columns():
    M = np.asarray(sliding_window_mask(8, 3, num_sinks=2))
    t, s = np.indices(M.shape)
    np.testing.assert_array_equal(M, (s <= t) & ((t - s < 3) | (s < 2)))
    assert M.sum(axis=1).tolist() == [1, 2, 3, 4, 5, 5, 5, 5]  # at most window + sinks keys per query


@pytest.mark.parametrize("window, layers", [(3, 1), (3, 4), (5, 2)])
def test_reach_grows_by_window_minus_one_per_layer(window, layers):
    # Output t of L stacked layers depends on input s exactly when 0 <= t - s <= L (W - 1).
    M = np.asarray(sliding_window_mask(20, window), np.int64)
    reach = np.linalg.matrix_power(M, layers) > 0
    t, s = np.indices(reach.shape)
    np.testing.assert_array_equal(reach, (t - s >= 0) & (t - s <= layers * (window - 1)))


@pytest.mark.parametrize("window, num_sinks", [(4, 0), (4, 2), (3, 5)])
def test_rolling_cache_decoding_equals_the_full_pass(window, num_sinks):
    T = 13
    q, k, v = qkv(T, seed=1)
    cache = init_cache(window, num_sinks, 3, 5)
    outputs = []
    for t in range(T):
        y, cache = decode_step(cache, q[t], k[t], v[t])  # checks, then one compiled core
        outputs.append(np.asarray(y))
    assert cache.ring_k.shape == (window, 3) and cache.sink_k.shape == (num_sinks, 3)  # fixed size
    np.testing.assert_allclose(np.stack(outputs), reference(q, k, v, window, num_sinks), rtol=1e-5, atol=1e-5)


def test_causal_gradients_and_bfloat16():
    q, k, v = qkv(11)  # the shapes of a case above, so that the forward pass is its program
    # Changing a later key never changes an earlier output.
    y = np.asarray(sliding_window_attention(q, k, v, 3))
    changed = k.copy()
    changed[7] = 9.0
    y2 = np.asarray(sliding_window_attention(q, changed, v, 3))
    np.testing.assert_array_equal(y[:7], y2[:7])
    # Outside the window the gradient is exactly zero.
    g = np.asarray(jax.jit(jax.grad(lambda v: sliding_window_attention(q, k, v, 3)[9].sum()))(v))
    assert np.all(g[:7] == 0) and np.all(g[10:] == 0) and np.all(np.abs(g[7:10]) > 0)  # the window of 9
    yb = sliding_window_attention(*(a.astype(jnp.bfloat16) for a in (q, k, v)), 3)
    assert yb.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(yb, np.float32), y, atol=5e-2)


def test_bad_input_raises():
    q, k, v = qkv(6)
    with pytest.raises(ValueError, match=r"window must be"):
        sliding_window_attention(q, k, v, 0)
    with pytest.raises(TypeError, match=r"window must be an int"):
        sliding_window_attention(q, k, v, 2.0)
    with pytest.raises(ValueError, match=r"num_sinks must be"):
        sliding_window_mask(6, 2, num_sinks=-1)
    with pytest.raises(ValueError, match=r"k"):
        sliding_window_attention(q, k[:5], v, 2)
    with pytest.raises(TypeError, match=r"q must be a floating-point array"):
        sliding_window_attention(q.astype(jnp.int32), k, v, 2)
    cache = init_cache(3, 1, 3, 5)
    with pytest.raises(ValueError, match=r"q must have shape \(3,\) \(D of the cache\), got shape \(4,\)"):
        decode_step(cache, np.ones(4, np.float32), k[0], v[0])
    with pytest.raises(ValueError, match=r"v must have 1 axes \(Dv,\), got shape \(2, 5\)"):
        decode_step(cache, q[0], k[0], v[:2])
