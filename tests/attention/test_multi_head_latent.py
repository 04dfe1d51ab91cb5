import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.attention import multi_head_latent as mla
from cookbook.attention.grouped_query import kv_cache_floats

# The sizes of the page's example, and its 7 tokens in every test: the tests and the example compile
# the same programs (init's draws, the two forms, the decoding step).
SIZES = dict(d_model=11, num_heads=3, head_dim=5, latent_dim=7, query_latent_dim=9, rope_dim=4)
T = 7


def normal(seed, *shape):
    """Test inputs drawn with NumPy: jax.random.normal would compile a sampler for every shape."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


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
    x = normal(1, T, 11)
    expected = reference(params, x)
    np.testing.assert_allclose(np.asarray(mla.apply(params, x)), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(mla.apply_absorbed(params, x)), expected, rtol=1e-4, atol=1e-5)


def test_decoding_from_the_latent_cache_gives_the_full_pass(params):
    x = normal(2, T, 11)
    full = np.asarray(mla.apply(params, x))
    cache = mla.init_cache(params, max_len=T)
    assert sum(a.size for a in (cache.c_kv, cache.k_rope)) == mla.cache_floats(T, latent_dim=7, rope_dim=4)
    for t in range(T):  # decode_step runs one compiled core: no jax.jit around it
        u, cache = mla.decode_step(params, cache, x[t])
        np.testing.assert_allclose(np.asarray(u), full[t], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"cache.length \(the cache is full\) must lie in \[0, 7\), got values from 7 to 7"):
        mla.decode_step(params, cache, x[0])


def test_causal_and_differentiable(params):
    x = normal(3, T, 11)
    x2 = x.copy()
    x2[5] += 3.0
    y, y2 = np.asarray(mla.apply(params, x)), np.asarray(mla.apply(params, x2))
    np.testing.assert_array_equal(y[:5], y2[:5])
    assert not np.allclose(y[5:], y2[5:])

    @jax.jit  # both gradients in one compiled program
    def gradients(p):
        return (jax.grad(lambda p: jnp.sum(mla.apply_absorbed(p, x) ** 2))(p),
                jax.grad(lambda p: jnp.sum(mla.apply(p, x) ** 2))(p))

    grads, naive = gradients(params)
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
    x = np.ones((4, 11), np.float32)
    with pytest.raises(ValueError, match=r"rope_dim must be even"):
        mla.init(jax.random.key(0), **{**SIZES, "rope_dim": 3})
    with pytest.raises(ValueError, match=r"x must have shape \(4, 11\) \(d_model from params\), got shape \(4, 10\)"):
        mla.apply(params, x[:, :10])
    with pytest.raises(TypeError, match=r"x must be a floating-point array"):
        mla.apply_absorbed(params, x.astype(np.int32))
    bad = {**params, "W_uk": np.asarray(params["W_uk"])[:, :2]}
    with pytest.raises(ValueError, match=r'params\["W_uk"\] must have shape \(7, 3, 5\)'):
        mla.apply(bad, x)
    with pytest.raises(ValueError, match=r"params must be the dict of init"):
        mla.apply({k: v for k, v in params.items() if k != "W_o"}, x)
    with pytest.raises(TypeError, match=r"cache must be a Cache from init_cache, got tuple"):
        mla.decode_step(params, (1, 2, 3), x[0])
    with pytest.raises(ValueError, match=r"x_t must have 1 axes"):
        mla.decode_step(params, mla.init_cache(params, 3), x)
