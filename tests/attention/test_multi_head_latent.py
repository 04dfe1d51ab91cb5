import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.attention import multi_head_latent as mla
from cookbook.attention.grouped_query import kv_cache_floats

SIZES = dict(d_model=11, num_heads=3, head_dim=5, latent_dim=7, query_latent_dim=9, rope_dim=4)


@pytest.fixture(scope="module")
def params():
    return mla.init(jax.random.key(0), **SIZES)


def rope_np(x, positions, base=10000.0):
    D = x.shape[-1]
    freq = base ** (-np.arange(0, D, 2) / D)
    angle = positions[:, None] * freq[None, :]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * np.cos(angle) - odd * np.sin(angle)
    out[..., 1::2] = even * np.sin(angle) + odd * np.cos(angle)
    return out


def reference(params, x):
    """The page's equation head by head, in float64 NumPy."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    x = np.asarray(x, np.float64)
    T, pos = len(x), np.arange(len(x), dtype=np.float64)
    c_kv, c_q = x @ p["W_dkv"], x @ p["W_dq"]
    k_rope = rope_np(x @ p["W_kr"], pos)
    u = np.zeros((T, p["W_o"].shape[2]))
    for i in range(p["W_uq"].shape[1]):
        q = np.concatenate([c_q @ p["W_uq"][:, i], rope_np(c_q @ p["W_qr"][:, i], pos)], axis=1)
        k = np.concatenate([c_kv @ p["W_uk"][:, i], k_rope], axis=1)
        v = c_kv @ p["W_uv"][:, i]
        scores = q @ k.T / np.sqrt(q.shape[1]) + np.triu(np.full((T, T), -np.inf), 1)
        w = np.exp(scores - scores.max(axis=1, keepdims=True))
        u += (w / w.sum(axis=1, keepdims=True)) @ v @ p["W_o"][i]
    return u


def test_naive_and_absorbed_forms_equal_the_equation(params):
    x = jax.random.normal(jax.random.key(1), (9, 11))
    expected = reference(params, x)
    np.testing.assert_allclose(np.asarray(mla.apply(params, x)), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(mla.apply_absorbed(params, x)), expected, rtol=1e-4, atol=1e-5)


def test_decoding_from_the_latent_cache_gives_the_full_pass(params):
    x = jax.random.normal(jax.random.key(2), (6, 11))
    full = mla.apply(params, x)
    cache = mla.init_cache(params, max_len=6)
    assert sum(a.size for a in (cache.c_kv, cache.k_rope)) == mla.cache_floats(6, latent_dim=7, rope_dim=4)
    step = jax.jit(mla.decode_step)
    for t in range(6):
        u, cache = step(params, cache, x[t])
        np.testing.assert_allclose(np.asarray(u), np.asarray(full[t]), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"cache.length \(the cache is full\) must lie in \[0, 6\), got values from 6 to 6"):
        mla.decode_step(params, cache, x[0])


def test_causal_and_differentiable(params):
    x = jax.random.normal(jax.random.key(3), (8, 11))
    y, y2 = mla.apply(params, x), mla.apply(params, x.at[5].add(3.0))
    np.testing.assert_array_equal(np.asarray(y[:5]), np.asarray(y2[:5]))
    assert not np.allclose(np.asarray(y[5:]), np.asarray(y2[5:]))
    grads = jax.grad(lambda p: jnp.sum(mla.apply_absorbed(p, x) ** 2))(params)
    naive = jax.grad(lambda p: jnp.sum(mla.apply(p, x) ** 2))(params)
    for name in params:
        np.testing.assert_allclose(np.asarray(grads[name]), np.asarray(naive[name]), rtol=1e-3, atol=1e-4)


def test_deepseek_v2_cache_is_57_times_smaller_than_multi_head_and_between_two_and_three_groups():
    mla_floats = mla.cache_floats(1, latent_dim=512, rope_dim=64)
    mha_floats = kv_cache_floats(1, 128, 128)
    assert (mla_floats, mha_floats) == (576, 32768)
    assert round(mha_floats / mla_floats) == 57
    assert kv_cache_floats(1, 2, 128) < mla_floats < kv_cache_floats(1, 3, 128)
    assert mla_floats / (2 * 128) == 2.25


def test_bad_input_raises(params):
    x = jnp.ones((4, 11))
    with pytest.raises(ValueError, match=r"rope_dim must be even"):
        mla.init(jax.random.key(0), **{**SIZES, "rope_dim": 3})
    with pytest.raises(ValueError, match=r"x must have shape \(4, 11\) \(d_model from params\), got shape \(4, 10\)"):
        mla.apply(params, x[:, :10])
    with pytest.raises(TypeError, match=r"x must be a floating-point array"):
        mla.apply_absorbed(params, x.astype(jnp.int32))
    bad = {**params, "W_uk": params["W_uk"][:, :2]}
    with pytest.raises(ValueError, match=r'params\["W_uk"\] must have shape \(7, 3, 5\)'):
        mla.apply(bad, x)
    with pytest.raises(ValueError, match=r"params must be the dict of init"):
        mla.apply({k: v for k, v in params.items() if k != "W_o"}, x)
    with pytest.raises(TypeError, match=r"cache must be a Cache from init_cache, got tuple"):
        mla.decode_step(params, (1, 2, 3), x[0])
    with pytest.raises(ValueError, match=r"x_t must have 1 axes"):
        mla.decode_step(params, mla.init_cache(params, 3), x)
