import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.normalization.rms_norm import rms_norm

def _normal(seed, shape):
    """Standard normal test data from numpy: cheaper than compiling a JAX sampler for every shape."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)

_rms = rms_norm  # runs one compiled core per shape and eps, reused by the tests


# Both sides compute in float32 and round the output once: about one unit in the last place.
TOL = {jnp.float32: 1e-5, jnp.float16: 2e-3, jnp.bfloat16: 2e-2}


def _random(seed, shape, dtype):
    return (0.5 + 2.0 * _normal(seed, shape)).astype(dtype), 1.0 + 0.3 * _normal(seed + 100, (shape[-1],))


@jax.jit
def _flax(x, scale):
    layer = nn.RMSNorm(epsilon=1e-6, dtype=x.dtype)
    with jax.numpy_rank_promotion("allow"):
        return layer.apply({"params": {"scale": scale}}, x)


@pytest.mark.parametrize(
    "shape, dtype", [((3, 5, 7), jnp.float32), ((11,), jnp.bfloat16), ((2, 3, 13), jnp.float16)]
)
def test_matches_flax_rmsnorm(shape, dtype):
    x, scale = _random(len(shape), shape, dtype)
    y = rms_norm(x, scale)
    y_ref = _flax(x, scale)
    assert y.dtype == y_ref.dtype == dtype
    np.testing.assert_allclose(np.float32(y), np.float32(y_ref), rtol=TOL[dtype], atol=TOL[dtype])


def test_tiny_case_by_hand():
    y = _rms(np.float32([1.0, -1.0, 1.0, 5.0]), np.float32([1.0, 1.0, 2.0, 1.0]), eps=0.0)  # RMS = sqrt(28 / 4)
    np.testing.assert_allclose(y, np.array([1.0, -1.0, 2.0, 5.0]) / np.sqrt(7.0), rtol=1e-6)


def test_output_has_unit_root_mean_square_but_keeps_the_mean():
    x = 4.0 + _normal(1, (3, 7))
    y = np.asarray(_rms(x, np.ones(7, np.float32), eps=0.0))
    np.testing.assert_allclose(np.sqrt(np.mean(y * y, axis=-1)), 1.0, rtol=1e-5)
    assert np.all(y.mean(-1) > 0.9)  # not centred: the common offset survives


def test_invariant_to_positive_rescaling_but_not_to_shift():
    x, scale = _random(2, (5, 11), jnp.float32)
    a = np.float32([1e-3, 0.5, 3.0, 7.0, 1e4])[:, None]
    np.testing.assert_allclose(_rms(a * x, scale, eps=0.0), _rms(x, scale, eps=0.0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_rms(-x, scale), -np.asarray(_rms(x, scale)), rtol=1e-6)  # odd, not sign-invariant
    assert not np.allclose(_rms(x + 1.0, scale), _rms(x, scale), atol=1e-2)


def test_examples_are_independent_and_vmap_agrees():
    x, scale = _random(3, (7, 5), jnp.float32)
    y = _rms(x, scale)
    np.testing.assert_allclose(jax.vmap(rms_norm, in_axes=(0, None))(x, scale), y, rtol=1e-5, atol=1e-6)


def test_zero_and_tiny_inputs_stay_finite():
    scale = np.arange(1.0, 6.0, dtype=np.float32)
    np.testing.assert_array_equal(_rms(np.zeros((2, 5), np.float32), scale), 0.0)
    y = np.asarray(_rms(np.full((2, 5), 1e-30, np.float32), scale))
    assert np.all(np.isfinite(y)) and np.all(np.abs(y) < 1e-20)  # eps dominates a negligible input


def test_float16_squares_are_accumulated_in_float32():
    # |x| ~ 1000: x ** 2 ~ 1e6 overflows float16 (max 65504), so naive float16 statistics give inf.
    x32 = 1000.0 * (1.0 + 0.1 * _normal(4, (3, 64)))
    x = x32.astype(np.float16)
    scale = np.ones(64, np.float32)
    y = _rms(x, scale)
    y_ref = np.asarray(_rms(x.astype(np.float32), scale))
    err = float(np.max(np.abs(np.asarray(y).astype(np.float32) - y_ref)))
    assert y.dtype == jnp.float16 and err < 2e-3
    naive = _naive_float16(x)
    assert not np.allclose(np.float32(naive), y_ref, atol=0.1)  # every output collapses to 0


@jax.jit
def _naive_float16(x):
    """The statistics computed in float16, as one program."""
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + jnp.float16(1e-6))


@pytest.mark.parametrize(
    "x, scale, match",
    [
        (np.ones((2, 4), np.float32), np.ones(3, np.float32), r"scale must have shape \(4,\) .* got shape \(3,\)"),
        (np.ones((2, 4), np.float32), np.ones((1, 4), np.float32), r"scale must have shape \(4,\)"),
        (np.ones((), np.float32), np.ones(1, np.float32), r"x must have at least 1 axes \(\.\.\., D\)"),
    ],
)
def test_bad_shapes_raise_clear_errors(x, scale, match):
    with pytest.raises(ValueError, match=match):
        rms_norm(x, scale)


def test_integer_input_and_negative_eps_raise():
    with pytest.raises(TypeError, match=r"x must be a floating-point array, got dtype int32"):
        rms_norm(np.int32([1, 2, 3]), np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"eps must be non-negative"):
        rms_norm(np.ones(3, np.float32), np.ones(3, np.float32), eps=-1.0)
    np.testing.assert_allclose(rms_norm([3.0, 4.0], [1.0, 1.0], eps=0.0), np.array([3.0, 4.0]) / np.sqrt(12.5), rtol=1e-6)


def test_the_numbers_on_the_page():
    import inspect

    assert float(jnp.finfo(jnp.float16).max) == 65504
    assert np.isinf(float(jnp.float16(256.0) ** 2)) and np.isfinite(float(jnp.float16(255.875) ** 2))
    x = np.random.default_rng(0).standard_normal((3, 11)).astype(np.float32)
    y = np.asarray(rms_norm(x, np.ones(11, np.float32), eps=0.0))
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.sqrt(11), rtol=1e-5)  # sphere of radius sqrt(D)
    assert inspect.signature(rms_norm).parameters["eps"].default == 1e-6
