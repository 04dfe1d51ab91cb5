import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.attention.memory_efficient import memory_efficient_attention
from cookbook.attention.scaled_dot_product import scaled_dot_product_attention

TOL = dict(rtol=1e-5, atol=1e-5)  # reached against the direct form, float32
# memory_efficient_attention runs one compiled core: called directly, at the example's shapes it runs
# the example's program, where a jax.jit around it compiled one more. The direct form, which runs its
# operations eagerly, is one compiled program per shape under jax.jit.
efficient = memory_efficient_attention
direct = jax.jit(scaled_dot_product_attention)


def _qkv(seed, T=7, S=13, D=8, Dv=3, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(s).astype(dtype) for s in [(T, D), (S, D), (S, Dv)])


@pytest.mark.parametrize("block_size", [1, 5, 64])  # 5 leaves a partial block; 64 > S is one padded block
def test_equals_the_direct_form_for_any_block_size(block_size):
    q, k, v = _qkv(0)
    np.testing.assert_allclose(efficient(q, k, v, block_size=block_size), direct(q, k, v), **TOL)


def test_equals_the_direct_form_with_masks_causal_and_both():
    # The example's shapes and blocks of four (13 keys: a partial last block), so that the mask and the
    # causal calls run the programs of the example and of the fully-masked test; causal alone is the
    # example's square (7, 7) case.
    q, k, v = _qkv(1)
    mask = np.random.default_rng(1).random((7, 13)) < 0.5
    causal = np.tril(np.ones((7, 13), bool))
    np.testing.assert_allclose(efficient(q, k, v, mask, block_size=4), direct(q, k, v, mask), **TOL)
    np.testing.assert_allclose(efficient(q, k[:7], v[:7], causal=True, block_size=4),
                               direct(q, k[:7], v[:7], causal[:, :7]), **TOL)
    np.testing.assert_allclose(efficient(q, k, v, mask, causal=True, block_size=4),
                               direct(q, k, v, mask & causal), **TOL)
    padding = np.arange(13)[None, :] < 6  # a (1, S) mask broadcast over the queries
    np.testing.assert_allclose(efficient(q, k, v, padding, block_size=4),
                               direct(q, k, v, np.broadcast_to(padding, (7, 13))), **TOL)


def test_fully_masked_rows_give_zeros_like_the_direct_form():
    q, k, v = _qkv(2)
    mask = np.ones((7, 13), bool)
    mask[3], mask[5, :8] = False, False  # row 3 empty; row 5 only in the third block
    y = np.asarray(efficient(q, k, v, mask, block_size=4))
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(y[3], np.zeros(3))
    np.testing.assert_allclose(y, direct(q, k, v, mask), **TOL)


def test_huge_scores_stay_finite_and_exact():
    q, k, v = _qkv(3)
    np.testing.assert_allclose(efficient(q * 1e3, k, v, block_size=4), direct(q * 1e3, k, v), **TOL)


def test_gradients_match_the_direct_form():
    # The gradient of sum(sin(attention)) is the gradient of sum(dy * attention) at dy = cos(attention):
    # the module's two gradient programs (below), at their shapes, with a mask that leaves a partial
    # last block of keys.
    q, k, v = _qkv(4, T=6, S=11, D=5, Dv=4)
    mask = np.tril(np.ones((6, 11), bool), k=2)
    dy = np.cos(np.asarray(direct(q, k, v, mask), np.float64)).astype(np.float32)
    g_eff = _efficient_gradient(q, k, v, mask, dy, causal=False)
    g_dir = _direct_gradient(q, k, v, mask, dy)
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


@functools.cache
def _table_bytes(name, S):
    """Temporary bytes of a program of the page's table, compiled once in this module."""
    from benchmarks.attention_memory import temp_bytes, variants

    return temp_bytes(variants()[name], S)


def test_temporary_memory_grows_linearly_not_quadratically():
    # Causal self-attention (T = S, D = 64, blocks of 64) at S = 512 and 8 x 512, the programs of the
    # page's table: the direct form holds the S x S scores (64x the memory; measured 64.0); the
    # blocked form holds one S x 64 tile and O(S) running values (about 8x; measured 7.7).
    eff = [_table_bytes("memory-efficient, forward", S) for S in (512, 4096)]
    dir_ = [_table_bytes("direct, forward", S) for S in (512, 4096)]
    assert dir_[1] >= 4096 * 4096 * 4  # at least the float32 score matrix
    assert dir_[1] / dir_[0] > 48  # three quarters of quadratic growth
    assert eff[1] / eff[0] < 12  # one and a half times linear growth
    assert eff[1] < dir_[1] / 5


def test_gradient_temporary_memory_grows_linearly():
    # The backward pass keeps Y and L, not the carry of every block: the temporary memory of the
    # gradient grows about as S (it grew ~3.7x per doubling when autodiff went through the scan). The
    # gradient programs of the page's table at S = 512 and 8 x 512 (compiled once for this module):
    # the blocked form's grows 7.6 times (asserted < 10, one and a quarter times linear, as < 2.5 per
    # doubling was), the direct one's 86 times (asserted > 48, three quarters of quadratic, as > 12
    # was for 4 times), since it holds S x S matrices.
    temps = [_table_bytes("memory-efficient, gradient", S) for S in (512, 4096)]
    direct = [_table_bytes("direct, gradient", S) for S in (512, 4096)]
    assert temps[1] / temps[0] < 10, temps
    assert direct[1] / direct[0] > 48, direct
    assert temps[1] < direct[1] / 5


def test_implementation_notes_figures():
    # The table of the page (causal, D = 64, block 64): the figures in MB, to the digits printed,
    # at S = 512 and 4096, forward and gradient, for both forms.
    table = {"direct, forward": (2.1, 134.2), "memory-efficient, forward": (0.42, 3.21),
             "direct, gradient": (3.1, 268.5), "memory-efficient, gradient": (0.56, 4.26)}
    for name, figures in table.items():
        for S, expected in zip((512, 4096), figures):
            assert _table_bytes(name, S) / 1e6 == pytest.approx(expected, rel=0.03), (name, S)


def test_score_matrix_of_32k_tokens_is_4_gb():
    assert 32_000**2 * 4 / 1e9 == pytest.approx(4.1, abs=0.05)


# The gradients of sum(dy * attention) with the mask and dy as arguments, not constants of the program.
_efficient_gradient = jax.jit(jax.grad(
    lambda q, k, v, mask, dy, causal: jnp.sum(dy * memory_efficient_attention(q, k, v, mask, causal=causal,
                                                                              block_size=4)),
    argnums=(0, 1, 2)), static_argnames="causal")
_direct_gradient = jax.jit(jax.grad(lambda q, k, v, mask, dy: jnp.sum(dy * scaled_dot_product_attention(q, k, v, mask)),
                                    argnums=(0, 1, 2)))


@pytest.mark.parametrize("causal, masked", [(False, False), (True, False), (False, True), (True, True)])
def test_custom_gradient_matches_autodiff_of_the_direct_form(causal, masked):
    T, S = 6, 11
    q, k, v = _qkv(7, T=T, S=S, D=5, Dv=4)
    mask = np.random.default_rng(8).random((T, S)) < 0.6 if masked else None
    if masked:
        mask[2] = False  # a query that sees nothing: zero output, zero gradient
    full = np.ones((T, S), bool) if mask is None else mask
    if causal:
        full = full & np.tril(np.ones((T, S), bool))
    dy = np.random.default_rng(9).standard_normal((T, 4)).astype(np.float32)
    g_eff = _efficient_gradient(q, k, v, mask, dy, causal=causal)
    g_dir = _direct_gradient(q, k, v, full, dy)  # one program for the four cases: the mask is an argument
    for a, b in zip(g_eff, g_dir):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    if masked:
        np.testing.assert_array_equal(g_eff[0][2], np.zeros(5))


def test_check_grads_against_finite_differences():
    from jax.test_util import check_grads

    q, k, v = _qkv(10)  # the example's shapes, masked and causal: the forward program of the mask test
    mask = np.tril(np.ones((7, 13), bool), k=2)
    fn = lambda q, k, v: memory_efficient_attention(q, k, v, mask, causal=True, block_size=4)
    # Reverse mode only (a custom_vjp); float32 finite differences need loose tolerances.
    check_grads(fn, (q, k, v), order=1, modes=["rev"], eps=1e-2, atol=2e-2, rtol=2e-2)


def test_no_tile_is_kept_for_the_backward_pass():
    # The residuals of the forward pass are Q, the padded K and V, Y and L: O((T + S) D) numbers.
    # The example's shapes, differentiated in k as the example's gradient is: its forward program.
    q, k, v = _qkv(11, T=7, S=13)
    _, vjp = jax.vjp(lambda k: memory_efficient_attention(q, k, v, block_size=4), k)
    sizes = sorted(leaf.size for leaf in jax.tree.leaves(vjp) if hasattr(leaf, "size"))
    assert max(sizes) <= 16 * 8  # the padded keys; no (T, S) or (blocks, T, ...) array
    assert 7 in sizes  # L, one number per query


def test_nan_in_the_inputs_stays_nan():
    q, k, v = _qkv(12)
    q[0, 0] = np.nan
    y = np.asarray(efficient(q, k, v, block_size=4))
    assert np.all(np.isnan(y[0])) and np.all(np.isfinite(y[1:]))


@pytest.mark.parametrize(
    "shapes, kwargs, error, match",
    [
        (((7, 8), (13, 6), (13, 3)), {}, ValueError, r"k must have shape \(13, 8\)"),
        (((7, 8), (13, 8), (12, 3)), {}, ValueError, r"k must have shape \(12, 8\)"),
        (((8,), (13, 8), (13, 3)), {}, ValueError, r"q must have 2 axes \(T, D\), got shape \(8,\)"),
        (((7, 8), (13, 8), (13, 3)), {"block_size": 0}, ValueError, r"block_size must be at least 1, got 0"),
        (((7, 8), (13, 8), (13, 3)), {"block_size": 4.5}, TypeError, r"block_size must be an int"),
        (((7, 8), (13, 8), (13, 3)), {"mask": np.ones((7, 12), bool)}, ValueError,
         r"mask must have shape \(T, S\) = \(7, 13\) or \(1, S\)"),
        (((7, 8), (13, 8), (13, 3)), {"mask": np.ones((7, 1), bool)}, ValueError, r"mask must have shape"),
        (((7, 8), (13, 8), (13, 3)), {"mask": np.ones((7, 13))}, TypeError, r"mask must be boolean"),
        (((7, 8), (13, 8), (13, 3)), {"causal": 1}, TypeError, r"causal must be a bool"),
    ],
)
def test_bad_arguments_raise_clear_errors(shapes, kwargs, error, match):
    with pytest.raises(error, match=match):
        memory_efficient_attention(*(np.ones(s, np.float32) for s in shapes), **kwargs)


def test_integer_inputs_raise_type_errors():
    q, k, v = _qkv(13)
    with pytest.raises(TypeError, match="v must be a floating-point array, got dtype int32"):
        memory_efficient_attention(q, k, v.astype(np.int32))
