import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.attention.memory_efficient import memory_efficient_attention
from cookbook.attention.scaled_dot_product import scaled_dot_product_attention

TOL = dict(rtol=1e-5, atol=1e-5)  # reached against the direct form, float32
efficient = jax.jit(memory_efficient_attention, static_argnames=("causal", "block_size"))
direct = jax.jit(scaled_dot_product_attention)


def _qkv(seed, T=7, S=13, D=8, Dv=3, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(s).astype(dtype) for s in [(T, D), (S, D), (S, Dv)])


@pytest.mark.parametrize("block_size", [1, 5, 64])  # 5 leaves a partial block; 64 > S is one padded block
def test_equals_the_direct_form_for_any_block_size(block_size):
    q, k, v = _qkv(0)
    np.testing.assert_allclose(efficient(q, k, v, block_size=block_size), direct(q, k, v), **TOL)


def test_equals_the_direct_form_with_masks_causal_and_both():
    q, k, v = _qkv(1, T=11, S=11)
    mask = jnp.asarray(np.random.default_rng(1).random((11, 11)) < 0.5)
    causal = np.tril(np.ones((11, 11), bool))
    np.testing.assert_allclose(efficient(q, k, v, mask, block_size=3), direct(q, k, v, mask), **TOL)
    np.testing.assert_allclose(efficient(q, k, v, causal=True, block_size=3), direct(q, k, v, causal), **TOL)
    np.testing.assert_allclose(efficient(q, k, v, mask, causal=True, block_size=3),
                               direct(q, k, v, mask & causal), **TOL)
    padding = np.arange(11)[None, :] < 6  # a (1, S) mask broadcast over the queries
    np.testing.assert_allclose(efficient(q, k, v, padding, block_size=4), direct(q, k, v, padding), **TOL)


def test_fully_masked_rows_give_zeros_like_the_direct_form():
    q, k, v = _qkv(2)
    mask = np.ones((7, 13), bool)
    mask[3], mask[5, :8] = False, False  # row 3 empty; row 5 only in the third block
    y = efficient(q, k, v, mask, block_size=4)
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(y[3], np.zeros(3))
    np.testing.assert_allclose(y, direct(q, k, v, mask), **TOL)


def test_huge_scores_stay_finite_and_exact():
    q, k, v = _qkv(3)
    np.testing.assert_allclose(efficient(q * 1e3, k, v, block_size=4), direct(q * 1e3, k, v), **TOL)


def test_gradients_match_the_direct_form():
    q, k, v = _qkv(4, T=5, S=7)
    mask = np.tril(np.ones((5, 7), bool), k=2)
    loss_eff = lambda q, k, v: jnp.sum(jnp.sin(memory_efficient_attention(q, k, v, mask, block_size=3)))
    loss_dir = lambda q, k, v: jnp.sum(jnp.sin(scaled_dot_product_attention(q, k, v, mask)))
    g_eff = jax.jit(jax.grad(loss_eff, argnums=(0, 1, 2)))(q, k, v)
    g_dir = jax.jit(jax.grad(loss_dir, argnums=(0, 1, 2)))(q, k, v)
    for a, b in zip(g_eff, g_dir):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_bfloat16_inputs_keep_their_dtype():
    q, k, v = _qkv(5, dtype=jnp.bfloat16)
    y = efficient(q, k, v, block_size=4)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(direct(q, k, v), np.float32), atol=2e-2)


def test_vmap_over_heads():
    rng = np.random.default_rng(6)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in [(3, 5, 4), (3, 7, 4), (3, 7, 2)])
    y = jax.vmap(lambda q, k, v: memory_efficient_attention(q, k, v, block_size=3))(q, k, v)
    np.testing.assert_allclose(y, direct(q, k, v), **TOL)


def _temp_bytes(fn, n):
    x = jax.ShapeDtypeStruct((n, 16), jnp.float32)
    stats = jax.jit(fn).lower(x, x, x).compile().memory_analysis()
    if stats is None:
        pytest.skip("this backend reports no memory analysis")
    return stats.temp_size_in_bytes


def test_temporary_memory_grows_linearly_not_quadratically():
    # Self-attention (T = S = n) at n and 4n: the direct form holds the n x n scores (16x the
    # memory); the blocked form holds one n x 64 tile and O(n) running values (about 4x).
    fn = lambda q, k, v: memory_efficient_attention(q, k, v, causal=True, block_size=64)
    eff = [_temp_bytes(fn, n) for n in (256, 1024)]
    dir_ = [_temp_bytes(scaled_dot_product_attention, n) for n in (256, 1024)]
    assert dir_[1] >= 1024 * 1024 * 4  # at least the float32 score matrix
    assert dir_[1] / dir_[0] > 12
    assert eff[1] / eff[0] < 6
    assert eff[1] < dir_[1] / 5


@pytest.mark.parametrize(
    "shapes, kwargs, match",
    [
        (((7, 8), (13, 6), (13, 3)), {}, r"q and k must have shapes \(T, D\) and \(S, D\)"),
        (((7, 8), (13, 8), (12, 3)), {}, r"v must have shape \(S, Dv\) = \(13, Dv\)"),
        (((7, 8), (13, 8), (13, 3)), {"block_size": 0}, r"block_size must be a positive integer, got 0"),
        (((7, 8), (13, 8), (13, 3)), {"mask": np.ones((7, 12), bool)}, r"mask must broadcast to \(T, S\) = \(7, 13\)"),
        (((7, 8), (13, 8), (13, 3)), {"mask": np.ones((7, 13))}, r"mask must be boolean"),
    ],
)
def test_bad_arguments_raise_clear_errors(shapes, kwargs, match):
    with pytest.raises(ValueError, match=match):
        memory_efficient_attention(*(np.ones(s) for s in shapes), **kwargs)
