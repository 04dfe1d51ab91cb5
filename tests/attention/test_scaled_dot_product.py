import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.attention.scaled_dot_product import attention_weights, scaled_dot_product_attention

# Compiled once per shape: eager dispatch of every small operation is slower than the whole suite.
sdpa = jax.jit(scaled_dot_product_attention)
weights = jax.jit(attention_weights)

# Tolerances reached against jax.nn.dot_product_attention (stated, and asserted below).
F32_TOL = dict(rtol=1e-5, atol=1e-5)
BF16_TOL = dict(rtol=2e-2, atol=2e-2)  # bfloat16 keeps 8 bits of mantissa: about 0.4% per rounding


def _qkv(seed, B=2, H=3, T=5, S=7, D=11, Dv=11, dtype=jnp.float32):
    rng = np.random.default_rng(seed)  # numpy data: no compilation per shape
    return tuple(rng.standard_normal(shape).astype(dtype) for shape in
                 [(B, H, T, D), (B, H, S, D), (B, H, S, Dv)])


def _reference(q, k, v, mask=None, bias=None):
    """jax.nn.dot_product_attention works in the layout (B, T, N, H): heads third."""
    to_ref = lambda x: jnp.swapaxes(x, 1, 2)  # (B, H, T, D) -> (B, T, H, D)
    y = jax.nn.dot_product_attention(to_ref(q), to_ref(k), to_ref(v), mask=mask, bias=bias)
    return jnp.swapaxes(y, 1, 2)


_reference = jax.jit(_reference)


def _random_mask(seed, shape):
    mask = np.random.default_rng(seed).random(shape) < 0.6
    mask[..., 0] = True  # every query sees at least one key: no empty rows here
    return mask


@pytest.mark.parametrize("dtype, tol", [(jnp.float32, F32_TOL), (jnp.bfloat16, BF16_TOL)])
def test_matches_jax_nn_without_mask(dtype, tol):
    q, k, v = _qkv(0, dtype=dtype)
    y = sdpa(q, k, v)
    assert y.shape == (2, 3, 5, 11) and y.dtype == dtype
    ref = _reference(q, k, v)
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(ref, np.float32), **tol)


@pytest.mark.parametrize("dtype, tol", [(jnp.float32, F32_TOL), (jnp.bfloat16, BF16_TOL)])
def test_matches_jax_nn_with_mask_and_t_not_s(dtype, tol):
    q, k, v = _qkv(1, T=5, S=7, dtype=dtype)
    mask = _random_mask(1, (2, 3, 5, 7))
    y = sdpa(q, k, v, mask)
    ref = _reference(q, k, v, mask)
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(ref, np.float32), **tol)


def test_bfloat16_is_close_to_the_float32_result():
    q, k, v = _qkv(2)
    y32 = sdpa(q, k, v)
    y16 = sdpa(*(x.astype(jnp.bfloat16) for x in (q, k, v)))
    np.testing.assert_allclose(np.asarray(y16, np.float32), y32, rtol=3e-2, atol=3e-2)


def test_broadcast_masks_causal_and_padding():
    q, k, v = _qkv(3, T=7, S=7)
    causal = np.tril(np.ones((7, 7), bool))  # (T, S) broadcast over batch and heads
    y = np.asarray(sdpa(q, k, v, causal))
    np.testing.assert_allclose(y, _reference(q, k, v, np.broadcast_to(causal, (2, 3, 7, 7))), **F32_TOL)
    # Causal: the first output is exactly the first value; changing later keys leaves it alone.
    np.testing.assert_allclose(y[..., 0, :], v[..., 0, :], rtol=1e-6)
    v2 = v.copy()
    v2[..., 3:, :] = 100.0
    np.testing.assert_allclose(np.asarray(sdpa(q, k, v2, causal))[..., :3, :], y[..., :3, :], rtol=1e-6)
    padding = np.arange(7)[None, None, None, :] < 4  # (1, 1, 1, S): the last three keys are padding
    y_pad = sdpa(q, k, v, padding)
    np.testing.assert_allclose(y_pad, sdpa(q, k[..., :4, :], v[..., :4, :]), **F32_TOL)


def test_tiny_case_by_hand():
    # Two keys; the query matches the first with score 2 / sqrt(4) = 1 and the second with 0.
    q = np.array([[2.0, 0.0, 0.0, 0.0]], np.float32)
    k = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]], np.float32)
    v = np.array([[1.0], [0.0]], np.float32)
    w = np.exp(1.0) / (np.exp(1.0) + 1.0)
    np.testing.assert_allclose(weights(q, k), [[w, 1 - w]], rtol=1e-6)
    np.testing.assert_allclose(sdpa(q, k, v), [[w]], rtol=1e-6)


def test_scale_keeps_score_variance_near_one():
    rng = np.random.default_rng(4)
    D = 256
    q, k = rng.standard_normal((2, 4096, D))
    raw = np.sum(q * k, axis=-1)
    assert abs(float(raw.var()) / D - 1.0) < 0.1  # a dot product of unit-variance vectors: variance D
    assert abs(float((raw / np.sqrt(D)).var()) - 1.0) < 0.1


def test_fully_masked_rows_give_zeros_finite_gradients():
    q, k, v = _qkv(5, B=1, H=1, T=3, S=5)
    mask = np.ones((1, 1, 3, 5), bool)
    mask[0, 0, 1] = False  # query 1 may attend to nothing
    y = np.asarray(sdpa(q, k, v, mask))
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(y[0, 0, 1], np.zeros(11))
    np.testing.assert_allclose(y[0, 0, 0], np.asarray(sdpa(q, k, v))[0, 0, 0], **F32_TOL)
    grads = jax.jit(jax.grad(lambda q, k, v: sdpa(q, k, v, mask).sum(), argnums=(0, 1, 2)))(q, k, v)
    grads = [np.asarray(g) for g in grads]
    assert all(np.all(np.isfinite(g)) for g in grads)
    np.testing.assert_array_equal(grads[0][0, 0, 1], np.zeros(11))
    all_masked = np.zeros((1, 1, 3, 5), bool)
    assert np.all(np.asarray(sdpa(q.astype(jnp.bfloat16), k.astype(jnp.bfloat16),
                                  v.astype(jnp.bfloat16), all_masked)) == 0)


@pytest.mark.parametrize("scale", [1e4, 1e-6])
def test_huge_and_tiny_scores_stay_finite(scale):
    q, k, v = _qkv(6)
    y = sdpa(q * scale, k, v)
    assert np.all(np.isfinite(y))
    if scale < 1:  # tiny scores: uniform weights, the mean of the values
        np.testing.assert_allclose(y, np.broadcast_to(v.mean(axis=-2, keepdims=True), y.shape), rtol=1e-5, atol=1e-5)


def test_length_one_and_weights_are_distributions():
    q, k, v = _qkv(7, T=1, S=1)
    np.testing.assert_allclose(sdpa(q, k, v), v, rtol=1e-6)
    q, k, _ = _qkv(8)
    A = weights(q, k)
    assert A.shape == (2, 3, 5, 7) and A.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(A).sum(-1), np.ones((2, 3, 5)), rtol=1e-6)


def test_permuting_keys_and_values_together_changes_nothing():
    q, k, v = _qkv(9)
    perm = np.array([3, 0, 6, 1, 5, 2, 4])
    np.testing.assert_allclose(sdpa(q, k[..., perm, :], v[..., perm, :]),
                               sdpa(q, k, v), **F32_TOL)


def test_bias_matches_jax_nn_bias():
    q, k, v = _qkv(10)
    bias = np.random.default_rng(11).standard_normal((2, 3, 5, 7)).astype(np.float32)
    np.testing.assert_allclose(sdpa(q, k, v, bias=bias), _reference(q, k, v, bias=bias), **F32_TOL)


def test_jit_and_vmap_agree():
    q, k, v = _qkv(12)
    mask = _random_mask(13, (5, 7))
    y = scaled_dot_product_attention(q, k, v, mask)  # eager
    np.testing.assert_allclose(jax.jit(scaled_dot_product_attention)(q, k, v, mask), y, **F32_TOL)
    per_example = jax.jit(jax.vmap(scaled_dot_product_attention, in_axes=(0, 0, 0, None)))(q, k, v, mask)
    np.testing.assert_allclose(per_example, y, **F32_TOL)


@pytest.mark.parametrize(
    "q_shape, k_shape, v_shape, mask, match",
    [
        ((5,), (7, 11), (7, 3), None, r"q must have at least 2 axes \(..., T, D\), got shape \(5,\)"),
        ((5, 11), (7, 10), (7, 3), None, r"k must have shape"),
        ((2, 5, 11), (3, 7, 11), (3, 7, 3), None, r"k must have shape"),
        ((5, 11), (7, 11), (6, 3), None, r"v must have shape"),
        ((5, 11), (7, 11), (7, 3), np.ones((5, 6), bool), r"mask must broadcast to .* got shape \(5, 6\)"),
        ((5, 11), (7, 11), (7, 3), np.ones((2, 5, 7), bool), r"mask must broadcast"),
        ((5, 11), (7, 11), (7, 3), np.ones((5, 1), bool), r"mask must broadcast to .* last axis S = 7"),
    ],
)
def test_bad_shapes_raise_clear_errors(q_shape, k_shape, v_shape, mask, match):
    with pytest.raises(ValueError, match=match):
        scaled_dot_product_attention(np.ones(q_shape), np.ones(k_shape), np.ones(v_shape), mask)


@pytest.mark.parametrize("name", ["q", "k", "v"])
def test_integer_inputs_raise_type_error_instead_of_zeros(name):
    # int32 inputs used to give an all-zero output: the weights were cast to int32 (0) before A V.
    args = dict(zip("qkv", _qkv(14, B=1, H=1)))
    args[name] = np.arange(args[name].size, dtype=np.int32).reshape(args[name].shape)
    with pytest.raises(TypeError, match=rf"{name} must be a floating-point array, got dtype int32"):
        scaled_dot_product_attention(args["q"], args["k"], args["v"])


def test_non_boolean_mask_and_integer_bias_raise_type_errors():
    q, k, v = _qkv(15, B=1, H=1)
    with pytest.raises(TypeError, match="mask must be boolean"):
        scaled_dot_product_attention(q, k, v, np.ones((5, 7)))
    with pytest.raises(TypeError, match="bias must be a floating-point array"):
        scaled_dot_product_attention(q, k, v, bias=np.ones((5, 7), np.int32))
    with pytest.raises(ValueError, match=r"bias must broadcast to .* last axis S = 7"):
        scaled_dot_product_attention(q, k, v, bias=np.ones((5, 1), np.float32))


def test_lists_are_accepted():
    q, k, v = _qkv(16)  # the shapes of the eager call above: its operations are compiled already
    np.testing.assert_allclose(scaled_dot_product_attention(q.tolist(), k.tolist(), v.tolist()), sdpa(q, k, v),
                               **F32_TOL)


def test_the_numbers_of_the_precision_and_empty_row_paragraphs():
    # bfloat16 carries 8 significant bits, 7 of them stored: 1 + 1/256 rounds back to 1.
    assert jnp.finfo(jnp.bfloat16).nmant == 7
    one = jnp.bfloat16(1.0)
    assert one + jnp.bfloat16(1 / 256) == one and one + jnp.bfloat16(1 / 64) != one
    # An all-masked row filled with the most negative float becomes a uniform average by softmax.
    row = jax.jit(jax.nn.softmax)(np.full((4,), np.finfo(np.float32).min, np.float32))
    np.testing.assert_allclose(row, np.full(4, 0.25))
