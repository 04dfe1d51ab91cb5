import jax
import numpy as np
import pytest

from cookbook.attention.alibi import alibi_attention, alibi_bias, alibi_slopes

# alibi_attention checks its input and runs one compiled program per shape: the tests call it as it is.
attend = alibi_attention


def _qkv(seed, H=4, T=7, S=7, D=8):
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(s).astype(np.float32) for s in [(H, T, D), (H, S, D), (H, S, D)])


@pytest.mark.parametrize("H", [1, 2, 4, 8, 16])
def test_power_of_two_slopes_are_the_geometric_sequence(H):
    expected = 2.0 ** (-8.0 * np.arange(1, H + 1) / H)
    np.testing.assert_allclose(alibi_slopes(H), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "H, expected_log2",
    [
        (6, [-2, -4, -6, -8, -1, -3]),  # slopes of 4 heads, then every other slope of 8 heads
        (3, [-4, -8, -2]),
        (12, [-1, -2, -3, -4, -5, -6, -7, -8, -0.5, -1.5, -2.5, -3.5]),
    ],
)
def test_non_power_of_two_slopes_follow_the_paper(H, expected_log2):
    np.testing.assert_allclose(np.log2(np.asarray(alibi_slopes(H))), expected_log2, rtol=1e-6)
    assert len(set(np.asarray(alibi_slopes(H)).tolist())) == H  # every head has its own slope


def test_bias_by_hand_and_properties():
    B = np.asarray(alibi_bias(4, 5, 5))
    slopes = np.asarray(alibi_slopes(4))
    assert B.shape == (4, 5, 5)
    np.testing.assert_allclose(B[1, 4, 1], -slopes[1] * 3)
    np.testing.assert_array_equal(np.diagonal(B, axis1=1, axis2=2), 0.0)  # no penalty for oneself
    np.testing.assert_allclose(B, np.swapaxes(B, 1, 2))  # depends on |distance| only
    np.testing.assert_allclose(B[:, 1:, 1:], B[:, :-1, :-1])  # translation invariant (Toeplitz)


def test_bias_is_defined_for_any_length_and_extends_the_short_one():
    short, long = alibi_bias(8, 11, 11), np.asarray(alibi_bias(8, 300, 300))  # sliced in NumPy
    np.testing.assert_array_equal(long[:, :11, :11], short)
    # Decoding one query against a cache: it is the last row of the square bias.
    np.testing.assert_array_equal(alibi_bias(8, 1, 300), long[:, -1:, :])
    assert np.all(np.isfinite(long))


def test_matches_jax_nn_with_the_same_bias_and_causal_mask():
    q, k, v = _qkv(1, T=5, S=7)
    y = attend(q, k, v)
    mask = np.arange(7)[None, :] <= np.arange(2, 7)[:, None]
    ref = jax.jit(jax.nn.dot_product_attention)(  # one program, not one per operation
        q[None].swapaxes(1, 2), k[None].swapaxes(1, 2), v[None].swapaxes(1, 2),
        bias=np.asarray(alibi_bias(4, 5, 7))[None], mask=np.broadcast_to(mask, (1, 4, 5, 7)))
    np.testing.assert_allclose(y, np.asarray(ref)[0].swapaxes(0, 1), rtol=1e-5, atol=1e-5)


def test_causal_outputs_do_not_change_when_the_sequence_grows():
    q, k, v = _qkv(2, T=11, S=11)
    long = np.asarray(attend(q, k, v))
    short = attend(q[:, :7], k[:, :7], v[:, :7])
    np.testing.assert_allclose(long[:, :7], short, rtol=1e-5, atol=1e-5)


def test_steep_slopes_attend_to_the_recent_past():
    # With identical keys, only the bias decides: weights decay as exp(-m * distance).
    H, S = 8, 11
    q, k, v = np.zeros((H, 1, 4)), np.zeros((H, S, 4)), np.broadcast_to(np.arange(S, dtype=np.float32)[None, :, None], (H, S, 4))
    y = np.asarray(attend(q, k, v))[:, 0, 0]  # the mean position attended to, per head
    assert np.all(np.diff(np.asarray(y)) < 0)  # shallower slopes look further back
    m = 0.5
    w = np.exp(-m * (S - 1 - np.arange(S)))
    np.testing.assert_allclose(y[0], (w * np.arange(S)).sum() / w.sum(), rtol=1e-5)


def test_bidirectional_and_length_one():
    q, k, v = _qkv(3, T=1, S=1)
    np.testing.assert_allclose(attend(q, k, v), v, rtol=1e-6)
    q, k, v = _qkv(4, T=5, S=5)
    assert not np.allclose(attend(q, k, v, causal=False), attend(q, k, v))


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"num_heads must be a positive integer, got num_heads=0"):
        alibi_slopes(0)
    with pytest.raises(ValueError, match=r"T and S must satisfy 1 <= T <= S .* got T=5, S=3"):
        alibi_bias(2, 5, 3)
    with pytest.raises(ValueError, match=r"q must have 3 axes \(H, T, D\), got shape \(5, 8\)"):
        alibi_attention(np.ones((5, 8)), np.ones((5, 8)), np.ones((5, 8)))
    with pytest.raises(ValueError, match=r"q and k must have shapes \(H, T, D\) and \(H, S, D\)"):
        alibi_attention(np.ones((2, 5, 8)), np.ones((3, 5, 8)), np.ones((3, 5, 8)))
    with pytest.raises(ValueError, match=r"T and S must satisfy 1 <= T <= S"):
        alibi_attention(np.ones((2, 5, 8)), np.ones((2, 3, 8)), np.ones((2, 3, 8)))
    q, k, v = _qkv(20)
    for name in "qkv":
        args = {"q": q, "k": k, "v": v}
        args[name] = args[name].astype(np.int32)
        with pytest.raises(TypeError, match=f"{name} must be a floating-point array"):
            alibi_attention(**args)
    with pytest.raises(TypeError, match=r"num_heads must be an int"):
        alibi_slopes(4.5)
    with pytest.raises(TypeError, match=r"causal must be a bool"):
        alibi_attention(q, k, v, causal=1)


def test_eight_heads_slopes_from_one_half_to_1_over_256():
    np.testing.assert_array_equal(np.asarray(alibi_slopes(8)), 2.0 ** -np.arange(1, 9))
