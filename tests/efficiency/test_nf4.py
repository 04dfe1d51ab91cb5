import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from cookbook.efficiency.nf4 import NF4_LEVELS, dequantize_nf4, normal_float_levels, quantize_nf4
from cookbook.efficiency.quantization import dequantize, quantize_absmax

# The NF4 table published in Appendix E of Dettmers et al. (2023), QLoRA, to the 4 decimals used here.
PUBLISHED = [-1.0, -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0.0,
             0.0796, 0.1609, 0.2461, 0.3379, 0.4407, 0.5626, 0.7230, 1.0]


def test_levels_match_the_published_table_and_have_an_exact_zero():
    assert isinstance(NF4_LEVELS, np.ndarray) and NF4_LEVELS.shape == (16,) and not NF4_LEVELS.flags.writeable
    np.testing.assert_allclose(NF4_LEVELS, PUBLISHED, atol=6e-5)
    assert NF4_LEVELS[0] == -1.0 and NF4_LEVELS[7] == 0.0 and NF4_LEVELS[15] == 1.0
    assert all(a < b for a, b in zip(NF4_LEVELS, NF4_LEVELS[1:]))
    assert sum(v < 0 for v in NF4_LEVELS) == 7 and sum(v > 0 for v in NF4_LEVELS) == 8


def test_levels_rebuilt_with_scipy_from_the_papers_construction():
    # 2^(k-1) + 1 = 9 quantiles for the positive half, 2^(k-1) = 8 for the negative, one shared 0
    # dropped, normalised into [-1, 1]; the outermost probability pulled in to delta.
    delta = 1 - (1 / 30 + 1 / 32) / 2
    positive = norm.ppf(np.linspace(delta, 0.5, 9))
    negative = -norm.ppf(np.linspace(delta, 0.5, 8))[:-1]
    expected = np.sort(np.concatenate([positive, negative])) / positive[0]
    np.testing.assert_allclose(NF4_LEVELS, expected, rtol=0, atol=1e-12)
    assert np.array_equal(normal_float_levels(), NF4_LEVELS)


@pytest.fixture(scope="module")
def weights():
    return np.random.default_rng(0).standard_normal((5, 192)).astype(np.float32)


def test_codes_are_the_nearest_level_against_numpy(weights):
    codes, absmax = quantize_nf4(weights, block_size=64)  # its compiled core (the jit check traces it)
    blocks = weights.astype(np.float64).reshape(5, 3, 64)
    m = np.abs(blocks).max(-1, keepdims=True)
    np.testing.assert_allclose(absmax, m, rtol=1e-7)
    distance = np.abs((blocks / m)[..., None] - np.asarray(NF4_LEVELS))
    np.testing.assert_array_equal(np.asarray(codes).reshape(5, 3, 64), distance.argmin(-1))
    w_hat = np.asarray(dequantize_nf4(codes, absmax))
    # Each block's absmax is read back exactly, and no error exceeds half the widest gap (at the ends).
    np.testing.assert_allclose(np.abs(w_hat.reshape(5, 3, 64)).max(-1, keepdims=True), m, rtol=1e-6)
    half_gap = np.max(np.diff(NF4_LEVELS)) / 2
    assert np.all(np.abs(weights - w_hat).reshape(5, 3, 64) <= m * half_gap * (1 + 1e-6))


def test_nf4_beats_uniform_4_bit_absmax_on_gaussian_weights():
    w = np.random.default_rng(1).standard_normal((32, 256)).astype(np.float32)
    err_nf4 = np.mean((w - np.asarray(dequantize_nf4(*quantize_nf4(w, block_size=64)))) ** 2)
    blocks = w.reshape(32, 4, 64)
    err_uniform = np.mean((blocks - np.asarray(dequantize(*quantize_absmax(blocks, bits=4, axis=-1)))) ** 2)
    assert err_nf4 < 0.8 * err_uniform  # the page's "more than a fifth below"


def test_all_zero_block_reads_back_as_zeros_and_block_size_one():
    w = np.ones((2, 8), np.float32)
    w[1, :4] = 0.0
    codes, absmax = quantize_nf4(w, block_size=4)
    assert float(absmax[1, 0, 0]) == 0.0 and np.all(np.asarray(codes)[1, :4] == 7)
    np.testing.assert_array_equal(dequantize_nf4(codes, absmax), w)
    codes, absmax = quantize_nf4(np.array([-0.5, 2.0], np.float32), block_size=1)  # every weight its own scale
    np.testing.assert_array_equal(codes, [0, 15])


def test_bfloat16_weights_use_a_float32_scale():
    w = jnp.asarray(np.linspace(-1, 1, 64), jnp.bfloat16)
    codes, absmax = quantize_nf4(w)
    assert absmax.dtype == jnp.float32 and codes.shape == (64,)
    np.testing.assert_allclose(np.asarray(dequantize_nf4(codes, absmax))[[0, -1]], [-1.0, 1.0])


def test_bad_input(weights):
    with pytest.raises(ValueError, match="block_size"):
        quantize_nf4(weights, block_size=5)
    with pytest.raises(TypeError, match="block_size"):
        quantize_nf4(weights, block_size=64.0)
    with pytest.raises(TypeError, match="w"):
        quantize_nf4(np.arange(64))
    with pytest.raises(ValueError, match="w"):
        quantize_nf4(np.full(64, np.nan, np.float32))
    codes, absmax = quantize_nf4(weights, block_size=64)
    with pytest.raises(ValueError, match="codes"):
        dequantize_nf4(np.asarray(codes, np.int32) + 1, absmax)  # a code of 16
    with pytest.raises(ValueError, match="absmax"):
        dequantize_nf4(codes, absmax[:3])
    with pytest.raises(TypeError, match="codes"):
        dequantize_nf4(np.asarray(codes, np.float32), absmax)
