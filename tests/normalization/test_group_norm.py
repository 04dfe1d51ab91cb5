import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.normalization.group_norm import group_norm
from cookbook.normalization.layer_norm import layer_norm

def _normal(seed, shape):
    """Standard normal test data from NumPy, as float32: a JAX sampler, or a conversion by jnp, would
    compile a program for every shape."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)

# group_norm checks its input, then runs one compiled core per shape and number of groups: the tests
# call it as it is (a jax.jit around it would compile a second program per shape).
_gn = group_norm


# Both sides compute in float32 and round the output once: about one unit in the last place.
TOL = {jnp.float32: 1e-5, jnp.float16: 2e-3, jnp.bfloat16: 2e-2}


def _random(seed, shape, dtype=jnp.float32):
    s, b = _normal(seed + 100, (2, shape[-1]))
    return (1.0 + 2.0 * _normal(seed, shape)).astype(dtype), 1.0 + 0.3 * s, 0.5 * b


def _ours(x, scale, bias, G, eps=1e-5):
    """Our one-example recipe mapped over a batch."""
    return jax.vmap(group_norm, in_axes=(0, None, None, None, None))(x, scale, bias, G, eps)


_ours_jit = jax.jit(_ours, static_argnums=3)


@jax.jit
def _flax_instance(x, scale, bias):
    layer = nn.InstanceNorm(epsilon=1e-5, use_fast_variance=False, dtype=x.dtype)
    with jax.numpy_rank_promotion("allow"):
        return layer.apply({"params": {"scale": scale, "bias": bias}}, x)


def _flax_group(x, scale, bias, G):
    layer = nn.GroupNorm(num_groups=G, epsilon=1e-5, use_fast_variance=False, dtype=x.dtype)
    with jax.numpy_rank_promotion("allow"):
        return layer.apply({"params": {"scale": scale, "bias": bias}}, x)


_flax_group_jit = jax.jit(_flax_group, static_argnums=3)


@pytest.mark.parametrize(
    "shape, G, dtype",
    [((3, 5, 7, 6), 3, jnp.float32), ((2, 4, 4, 8), 2, jnp.bfloat16), ((5, 12), 4, jnp.float16)],
)
def test_matches_flax_groupnorm_on_a_batch(shape, G, dtype):
    # flax pools every axis but the leading (batch) one: exactly our one-example recipe under vmap.
    x, scale, bias = _random(G, shape, dtype)
    y, y_ref = _ours_jit(x, scale, bias, G), _flax_group_jit(x, scale, bias, G)
    assert y.dtype == y_ref.dtype == dtype
    np.testing.assert_allclose(np.float32(y), np.float32(y_ref), rtol=TOL[dtype], atol=TOL[dtype])


def test_one_channel_per_group_is_instance_norm():
    x, scale, bias = _random(1, (3, 5, 7, 4))
    np.testing.assert_allclose(_ours_jit(x, scale, bias, 4), _flax_instance(x, scale, bias), rtol=1e-5, atol=1e-5)


@jax.jit
def _flax_layer(x, scale, bias):
    layer = nn.LayerNorm(epsilon=1e-5, reduction_axes=(1, 2, 3), use_fast_variance=False)
    with jax.numpy_rank_promotion("allow"):
        return layer.apply({"params": {"scale": scale, "bias": bias}}, x)


def test_one_group_is_layer_norm():
    x, scale, bias = _random(2, (3, 5, 7, 4))
    # On a feature map: flax's LayerNorm over (H, W, C).
    y_ref = _flax_layer(x, scale, bias)
    np.testing.assert_allclose(_ours_jit(x, scale, bias, 1), y_ref, rtol=1e-5, atol=1e-5)
    # On a vector: exactly the layer_norm recipe.
    v = x[0, 0, 0]
    np.testing.assert_allclose(_gn(v, scale, bias, 1), layer_norm(v, scale, bias, eps=1e-5), rtol=1e-6)


def test_tiny_case_by_hand():
    # Two groups of two channels on a 1 x 2 image: group 0 holds {0, 2, 1, 3}, group 1 holds {10, 10, 10, 14}.
    x = np.array([[[0.0, 2.0, 10.0, 10.0], [1.0, 3.0, 10.0, 14.0]]], np.float32)  # (H=1, W=2, C=4)
    y = np.asarray(_gn(x, np.ones(4, np.float32), np.zeros(4, np.float32), 2, eps=0.0))
    g0 = (np.array([[0.0, 2.0], [1.0, 3.0]]) - 1.5) / np.sqrt(1.25)
    g1 = (np.array([[10.0, 10.0], [10.0, 14.0]]) - 11.0) / np.sqrt(3.0)
    np.testing.assert_allclose(y[0], np.concatenate([g0, g1], axis=1), rtol=1e-6)


def test_each_group_has_mean_zero_and_variance_one():
    x, _, _ = _random(3, (5, 7, 6))
    x = x * np.arange(1.0, 7.0, dtype=np.float32)[None, None, :] + np.arange(6.0, dtype=np.float32)[None, None, :] * 10
    y = np.asarray(_gn(x, np.ones(6, np.float32), np.zeros(6, np.float32), 3, eps=0.0)).reshape(5, 7, 3, 2)
    np.testing.assert_allclose(y.mean(axis=(0, 1, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 1, 3)), 1.0, rtol=1e-4)


def test_invariant_to_positive_rescaling_of_each_group():
    x, scale, bias = _random(4, (3, 5, 6))
    a = np.array([0.01, 0.01, 7.0, 7.0, 1e3, 1e3], np.float32)[None, None, :]  # one factor per group of 2
    b = np.array([5.0, 5.0, -1.0, -1.0, 0.0, 0.0], np.float32)[None, None, :]
    np.testing.assert_allclose(_gn(a * x + b, scale, bias, 3, eps=0.0), _gn(x, scale, bias, 3, eps=0.0),
                               rtol=1e-4, atol=1e-4)


def test_examples_do_not_interact():
    x, scale, bias = _random(5, (4, 3, 3, 6))
    y = np.asarray(_ours_jit(x, scale, bias, 2))
    np.testing.assert_allclose(_gn(x[1], scale, bias, 2), y[1], rtol=1e-5, atol=1e-6)


def test_constant_input_and_instance_norm_of_a_vector_give_the_bias():
    _, scale, bias = _random(6, (6,))
    np.testing.assert_allclose(_gn(np.full((3, 3, 6), 42.0, np.float32), scale, bias, 2), np.broadcast_to(bias, (3, 3, 6)),
                               atol=1e-5)
    v = _normal(7, (6,))
    np.testing.assert_allclose(_gn(v, scale, bias, 6), bias, atol=1e-6)  # one value per statistic


def test_bfloat16_is_close_to_float32_on_the_same_inputs():
    x32 = 50.0 + _normal(8, (16, 16, 8))
    x = x32.astype(jnp.bfloat16)
    ones, zeros = np.ones(8, np.float32), np.zeros(8, np.float32)
    err = np.max(np.abs(np.asarray(_gn(x, ones, zeros, 4), np.float32) - np.asarray(_gn(x.astype(np.float32), ones, zeros, 4))))
    assert float(err) < 2e-2  # one bfloat16 rounding of outputs of size up to 4


@pytest.mark.parametrize(
    "x, scale, G, match",
    [
        (np.ones((2, 2, 6), np.float32), np.ones(6, np.float32), 4, r"num_groups must be a positive int that divides .* C=6 .* got 4"),
        (np.ones((2, 2, 6), np.float32), np.ones(6, np.float32), 0, r"num_groups must be a positive int .* got 0"),
        (np.ones((2, 2, 6), np.float32), np.ones(5, np.float32), 3, r"scale must have shape \(6,\) .* got shape \(5,\)"),
        (np.ones((), np.float32), np.ones(1, np.float32), 1, r"x must have at least 1 axes \(\.\.\., C\)"),
    ],
)
def test_bad_shapes_raise_clear_errors(x, scale, G, match):
    with pytest.raises(ValueError, match=match):
        group_norm(x, scale, np.zeros(x.shape[-1] if x.ndim else 1, np.float32), G)


def test_integer_input_and_negative_eps_raise():
    with pytest.raises(TypeError, match=r"x must be a floating-point array, got dtype int32"):
        group_norm(np.ones((3, 4), np.int32), np.ones(4, np.float32), np.zeros(4, np.float32), 2)
    with pytest.raises(TypeError, match=r"bias must be a floating-point array"):
        group_norm(np.ones((3, 4), np.float32), np.ones(4, np.float32), np.zeros(4, np.int32), 2)
    with pytest.raises(ValueError, match=r"eps must be non-negative"):
        group_norm(np.ones((3, 4), np.float32), np.ones(4, np.float32), np.zeros(4, np.float32), 2, eps=-1.0)


def test_the_default_epsilons_on_the_page():
    import inspect

    assert inspect.signature(group_norm).parameters["eps"].default == 1e-5  # the paper's and PyTorch's
    assert nn.GroupNorm().epsilon == 1e-6  # flax's
