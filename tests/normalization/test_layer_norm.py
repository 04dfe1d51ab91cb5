import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.normalization.layer_norm import layer_norm

def _normal(seed, shape):
    """Standard normal test data from numpy: cheaper than compiling a JAX sampler for every shape. The
    tests prepare inputs and check outputs in NumPy too: each eager jnp operation compiles for its shape."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)

_ln = jax.jit(layer_norm)  # compiled once per shape, reused by the tests


# Both sides compute in float32 and round the output once: about one unit in the last place.
TOL = {jnp.float32: 1e-5, jnp.float16: 2e-3, jnp.bfloat16: 2e-2}


def _random(seed, shape, dtype):
    s, b = _normal(seed + 100, (2, shape[-1]))
    return (1.5 + 3.0 * _normal(seed, shape)).astype(dtype), 1.0 + 0.3 * s, 0.5 * b


@jax.jit
def _flax(x, scale, bias):
    layer = nn.LayerNorm(epsilon=1e-6, use_fast_variance=False, dtype=x.dtype)
    with jax.numpy_rank_promotion("allow"):
        return layer.apply({"params": {"scale": scale, "bias": bias}}, x)


@pytest.mark.parametrize(
    "shape, dtype", [((3, 5, 7), jnp.float32), ((11,), jnp.bfloat16), ((2, 3, 13), jnp.float16)]
)
def test_matches_flax_layernorm(shape, dtype):
    x, scale, bias = _random(len(shape), shape, dtype)
    y = _ln(x, scale, bias)
    y_ref = _flax(x, scale, bias)
    assert y.dtype == y_ref.dtype == dtype
    np.testing.assert_allclose(np.float32(y), np.float32(y_ref), rtol=TOL[dtype], atol=TOL[dtype])


def test_tiny_case_by_hand():
    # mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5
    y = _ln(np.array([1.0, 2.0, 3.0, 6.0], np.float32), np.array([1.0, 2.0, 1.0, 1.0], np.float32),
            np.array([0.0, 0.0, 1.0, 0.0], np.float32), eps=0.0)
    np.testing.assert_allclose(y, np.array([-2.0, -2.0, 0.0, 3.0]) / np.sqrt(3.5) + np.array([0, 0, 1, 0]), rtol=1e-6)


def test_output_has_mean_zero_and_variance_one_per_example():
    x = np.float32([[-100.0], [0.0], [3.0]]) + np.float32([[0.1], [1.0], [50.0]]) * _normal(1, (3, 7))
    y = np.asarray(_ln(x, np.ones(7, np.float32), np.zeros(7, np.float32), eps=0.0))
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.var(-1), 1.0, rtol=1e-4)


def test_invariant_to_positive_rescaling_and_shift_of_each_example():
    x, scale, bias = _random(2, (5, 11), jnp.float32)
    a = np.float32([0.01, 0.5, 3.0, 7.0, 1e4])[:, None]
    b = np.float32([-3.0, 0.0, 5.0, 1.0, 100.0])[:, None]
    np.testing.assert_allclose(_ln(a * x + b, scale, bias, eps=0.0), _ln(x, scale, bias, eps=0.0),
                               rtol=1e-4, atol=1e-4)


def test_examples_are_independent_and_vmap_agrees():
    x, scale, bias = _random(3, (7, 5), jnp.float32)
    y = np.asarray(_ln(x, scale, bias))
    vmapped = jax.jit(jax.vmap(layer_norm, in_axes=(0, None, None)))  # one program, not one per operation
    np.testing.assert_allclose(vmapped(x, scale, bias), y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_ln(x[2], scale, bias), y[2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("value", [0.0, 1e-30, -3e4])
def test_constant_and_extreme_inputs_stay_finite(value):
    x, scale, bias = _random(4, (3, 5), jnp.float32)
    y = _ln(np.full((3, 5), value, np.float32), scale, bias)
    np.testing.assert_allclose(y, np.broadcast_to(bias, (3, 5)), atol=1e-6)  # a constant maps to the bias
    y_big = _ln(1e15 * x, scale, bias)
    assert np.all(np.isfinite(y_big))
    np.testing.assert_allclose(y_big, _ln(x, scale, bias), rtol=1e-4, atol=1e-4)


def test_bfloat16_is_close_to_float32_and_better_than_naive_bfloat16():
    x32 = 300.0 + _normal(5, (3, 1024))
    x = x32.astype(jnp.bfloat16)
    ones, zeros = np.ones(1024, np.float32), np.zeros(1024, np.float32)
    y_ref = np.asarray(_ln(x.astype(np.float32), ones, zeros))  # float32 on the same (rounded) inputs
    err = float(np.max(np.abs(np.asarray(_ln(x, ones, zeros)).astype(np.float32) - y_ref)))
    assert err < 2e-2  # one bfloat16 rounding of outputs of size up to 4

    # Naive: one-pass statistics kept in bfloat16. x ** 2 ~ 9e4, where bfloat16 values are 512 apart.
    @jax.jit  # one program, not one per operation
    def naive(x):
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.maximum(jnp.mean(x * x, axis=-1, keepdims=True) - mean * mean, 0)
        return ((x - mean) * jax.lax.rsqrt(var + 1e-6)).astype(jnp.float32)

    naive_err = float(np.max(np.abs(np.asarray(naive(x)) - y_ref)))
    assert not np.isfinite(naive_err) or naive_err > 50 * err


@pytest.mark.parametrize(
    "x, scale, bias, match",
    [
        (np.ones((2, 4), np.float32), np.ones(5, np.float32), np.zeros(4, np.float32),
         r"scale must have shape \(4,\) .* got shape \(5,\)"),
        (np.ones((2, 4), np.float32), np.ones(4, np.float32), np.zeros((2, 4), np.float32),
         r"bias must have shape \(4,\) .* got shape \(2, 4\)"),
        (np.ones((), np.float32), np.ones(1, np.float32), np.zeros(1, np.float32),
         r"x must have at least 1 axes \(\.\.\., D\)"),
    ],
)
def test_bad_shapes_raise_clear_errors(x, scale, bias, match):
    with pytest.raises(ValueError, match=match):
        layer_norm(x, scale, bias)


def test_integer_input_raises_instead_of_rounding_the_output():
    # Before, int32 x was normalised in float32 and cast back to int32: [1, 2, 3, 6] came out [-1, 0, 0, 1].
    with pytest.raises(TypeError, match=r"x must be a floating-point array, got dtype int32"):
        layer_norm(np.array([1, 2, 3, 6], np.int32), np.ones(4, np.float32), np.zeros(4, np.float32))
    with pytest.raises(TypeError, match=r"scale must be a floating-point array"):
        layer_norm(np.ones(4, np.float32), np.ones(4, np.int32), np.zeros(4, np.float32))


def test_negative_eps_raises_instead_of_giving_nan():
    # Before, eps = -1 made rsqrt(var - 1) NaN for every example of variance below 1.
    with pytest.raises(ValueError, match=r"eps must be non-negative, got -1"):
        layer_norm(np.array([1.0, 2.0, 3.0, 6.0], np.float32), np.ones(4, np.float32), np.zeros(4, np.float32), eps=-1.0)


def test_lists_are_accepted():
    np.testing.assert_allclose(layer_norm([1.0, 2.0, 3.0, 6.0], [1.0] * 4, [0.0] * 4),
                               layer_norm(np.array([1.0, 2.0, 3.0, 6.0], np.float32), np.ones(4, np.float32),
                                          np.zeros(4, np.float32)))


def test_the_numbers_on_the_page():
    import inspect

    x = _normal(9, (5, 7))
    y = np.asarray(_ln(x, np.ones(7, np.float32), np.zeros(7, np.float32), eps=0.0))
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.sqrt(7), rtol=1e-5)  # a sphere of radius sqrt(D)
    np.testing.assert_allclose(y.sum(-1), 0.0, atol=1e-5)  # in the hyperplane orthogonal to the ones vector
    assert inspect.signature(layer_norm).parameters["eps"].default == 1e-6 == nn.LayerNorm().epsilon
