import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.efficiency.quantization import (dequantize, dequantize_zeropoint, quantize_absmax,
                                              quantize_zeropoint)

AXES = (None, (0, 2), -1)


def _absmax_reference(x, bits, axis):
    """NumPy float64 absmax: scale over `axis` with kept dims, q = round(x / scale)."""
    x = np.asarray(x, np.float64)
    scale = np.max(np.abs(x), axis=axis, keepdims=True) / (2 ** (bits - 1) - 1)
    return np.round(x / np.where(scale > 0, scale, 1)), scale


def _roundtrip(x, bits, axis, kind):
    """``(q, scale, xhat)``, as the recipe's functions return them (JAX arrays, or tracers under jit)."""
    if kind == "absmax":
        q, scale = quantize_absmax(x, bits=bits, axis=axis)
        return q, scale, dequantize(q, scale)
    q, scale, zero = quantize_zeropoint(x, bits=bits, axis=axis)
    return q, scale, dequantize_zeropoint(q, scale, zero)


BITS = (2, 4, 8)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).standard_normal((3, 5, 7)).astype(np.float32)


@jax.jit
def _all_roundtrips(x):
    """Every (kind, bits, axis) round trip of x in one compilation: {key: (q, scale, xhat)}."""
    return {f"{kind} {bits} {axis}": _roundtrip(x, bits, axis, kind)
            for kind in ("absmax", "zeropoint") for bits in BITS for axis in AXES}


@pytest.fixture(scope="module")
def roundtrips(x):
    return jax.tree.map(np.asarray, _all_roundtrips(x))


def test_absmax_against_float64_numpy(x, roundtrips):
    for bits in BITS:
        for axis in AXES:
            q, scale, _ = roundtrips[f"absmax {bits} {axis}"]
            q_ref, scale_ref = _absmax_reference(x, bits, axis)
            assert q.dtype == np.int8 and q.shape == x.shape and scale.shape == scale_ref.shape
            np.testing.assert_allclose(scale, scale_ref, rtol=1e-6)
            # q may differ from the float64 one only where x / scale sits on a half (float32 rounding).
            off = q != q_ref
            frac = np.abs(np.asarray(x, np.float64) / scale_ref % 1 - 0.5)
            assert np.all(frac[off] < 1e-4) and off.mean() < 0.01, (bits, axis)
            assert np.abs(q).max() == 2 ** (bits - 1) - 1  # the largest magnitude hits the end


def test_error_is_at_most_half_a_step_everywhere(x, roundtrips):
    for key, (q, scale, xhat) in roundtrips.items():
        assert np.all(np.abs(x - xhat) <= scale / 2 * (1 + 1e-5) + 1e-7), key
        if key.startswith("zeropoint"):
            bits = int(key.split()[1])
            assert q.dtype == np.uint8 and q.max() <= 2 ** bits - 1
            assert q.max() == 2 ** bits - 1 or q.min() == 0, key  # the grid's ends are used


def test_per_channel_beats_per_tensor_with_an_outlier_channel():
    W = np.random.default_rng(1).standard_normal((64, 11)).astype(np.float32)
    W[:, 3] *= 100
    others = np.arange(11) != 3

    def rms(axis, channels):
        q, scale = quantize_absmax(W, bits=8, axis=axis)
        return float(np.sqrt(np.mean((W - np.asarray(dequantize(q, scale)))[:, channels] ** 2)))

    assert rms(0, others) > 0 and rms(None, others) > 50 * rms(0, others)  # the page's "more than 50 times"
    np.testing.assert_allclose(rms(0, ~others), rms(None, ~others), rtol=1e-5)  # the outlier's own channel


def test_zero_point_beats_absmax_on_one_sided_data():
    h = np.maximum(np.random.default_rng(2).standard_normal((64, 11)), 0).astype(np.float32)
    err = {kind: float(np.mean((h - np.asarray(_roundtrip(h, 4, None, kind)[2])) ** 2))
           for kind in ("absmax", "zeropoint")}
    assert err["zeropoint"] < err["absmax"] / 3  # the page's "less than a third"
    q, _, zero = (np.asarray(a) for a in quantize_zeropoint(h, bits=4))  # read in NumPy
    assert int(q.min()) == 0 and int(q.max()) == 15 and int(zero.squeeze()) == 0


def test_zero_point_represents_zero_exactly_and_matches_a_hand_case():
    x = np.array([-1.0, 0.0, 0.5, 2.0], np.float32)
    # Range [-1, 2] in 3 steps of 1; 0 is the integer 1.
    q, scale, zero = (np.asarray(a) for a in quantize_zeropoint(x, bits=2))
    np.testing.assert_allclose(scale, [1.0])
    assert int(zero[0]) == 1
    np.testing.assert_array_equal(q, [0, 1, 1, 3])  # 0.5 + 1 rounds to even, 2
    np.testing.assert_array_equal(dequantize_zeropoint(q, scale, zero), [-1.0, 0.0, 0.0, 2.0])


def test_absmax_hand_case_and_storage():
    q, scale = quantize_absmax(np.array([[-2.0, 1.0], [0.4, 0.0]], np.float32), bits=3)
    np.testing.assert_allclose(scale, [[2 / 3]])  # 3 bits: integers -3..3
    np.testing.assert_array_equal(q, [[-3, 2], [1, 0]])  # 1 / (2/3) = 1.5 rounds to even, 2
    x = np.ones((11, 7), np.float32)
    assert x.nbytes == 4 * quantize_absmax(x)[0].nbytes


def test_all_zero_slice_gives_scale_zero_and_exact_zeros():
    for kind in ("absmax", "zeropoint"):
        x = np.random.default_rng(3).standard_normal((3, 5)).astype(np.float32)
        x[1] = 0.0
        q, scale, xhat = (np.asarray(a) for a in _roundtrip(x, 8, 1, kind))  # read in NumPy
        assert float(scale[1, 0]) == 0.0 and np.all(np.isfinite(xhat))
        np.testing.assert_array_equal(xhat[1], 0.0)
        _, scale, xhat = (np.asarray(a) for a in _roundtrip(np.zeros((3, 5), np.float32), 4, None, kind))
        assert float(scale.squeeze()) == 0.0 and not np.any(xhat)


def test_bfloat16_input_keeps_the_bound_with_a_float32_scale(x):
    xb = x.astype(jnp.bfloat16)  # in NumPy (ml_dtypes), rounded as jnp.asarray rounds it
    q, scale = quantize_absmax(xb, bits=8, axis=0)
    assert scale.dtype == jnp.float32
    xf = xb.astype(np.float32)
    assert np.all(np.abs(xf - np.asarray(dequantize(q, scale))) <= np.asarray(scale) / 2 * (1 + 1e-5) + 1e-7)


def test_bad_input(x):
    with pytest.raises(TypeError, match="x"):
        quantize_absmax(np.arange(5))
    with pytest.raises(TypeError, match="bits"):
        quantize_absmax(x, bits=4.0)
    with pytest.raises(ValueError, match="bits"):
        quantize_absmax(x, bits=1)
    with pytest.raises(ValueError, match="bits"):
        quantize_zeropoint(x, bits=9)
    with pytest.raises(ValueError, match="axis"):
        quantize_absmax(x, axis=3)
    with pytest.raises(ValueError, match="axis"):
        quantize_absmax(x, axis=(0, -3))
    with pytest.raises(TypeError, match="axis"):
        quantize_absmax(x, axis=1.0)
    with pytest.raises(ValueError, match="x"):
        quantize_absmax(np.array([1.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="x"):
        quantize_zeropoint(np.array([1.0, np.inf], np.float32))
    q, scale = (np.asarray(a) for a in quantize_absmax(x, axis=0))  # sliced in NumPy below
    with pytest.raises(TypeError, match="q"):
        dequantize(np.asarray(q, np.float32), scale)
    with pytest.raises(ValueError, match="scale"):
        dequantize(q, scale[..., :3])
    with pytest.raises(ValueError, match="scale"):
        dequantize(q[0], scale)
