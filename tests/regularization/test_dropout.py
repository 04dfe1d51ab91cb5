import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.regularization.dropout import dropout

# Few distinct shapes on purpose: each new shape of a random draw costs a compilation.
N = 100_000  # samples for the statistical tests, shape (N,)
SMALL = (5, 7)
Z = 5.0  # tolerance in standard errors: a false failure has probability below 1e-6


ONES = np.ones(N, np.float32)


def _normal(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("rate", "deterministic", "broadcast_dims"))
def _flax_dropout(x, key, rate, deterministic=False, broadcast_dims=()):
    """Flax's Dropout with the key as its rng, as one compiled program."""
    return nn.Dropout(rate, broadcast_dims=broadcast_dims).apply({}, x, deterministic=deterministic, rng=key)


@functools.partial(jax.jit, static_argnames="rate")
def _flax_dropout_own_stream(x, key, rate):
    """Flax's Dropout drawing through make_rng from an rngs dict, as one compiled program."""
    return nn.Dropout(rate).apply({}, x, deterministic=False, rngs={"dropout": key})


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.7])
def test_expectation_is_kept_and_the_fraction_zeroed_matches_the_rate(rate):
    # On x = 1 each output is 0 or 1/(1-p): mean 1, variance p/(1-p); the zero indicator has variance p(1-p).
    y = np.asarray(dropout(jax.random.key(0), ONES, rate))
    assert abs(y.mean() - 1.0) < Z * np.sqrt(rate / (1 - rate) / N)
    assert abs((y == 0).mean() - rate) < Z * np.sqrt(rate * (1 - rate) / N)


def test_expectation_is_kept_for_random_input():
    # sum(y - x) has mean 0 and variance sum(x^2) p / (1 - p).
    x = _normal((N,), 1)
    y = np.asarray(dropout(jax.random.key(2), x, 0.4), np.float64)
    x = x.astype(np.float64)
    assert abs(np.sum(y - x)) < Z * np.sqrt(np.sum(x**2) * 0.4 / 0.6)


def test_kept_entries_are_scaled_by_one_over_keep_probability():
    x = _normal(SMALL, 3) + 3.0  # no zeros in the input
    y = np.asarray(dropout(jax.random.key(4), x, 0.25))
    kept = y != 0
    assert 0 < kept.sum() < kept.size
    np.testing.assert_allclose(y[kept], x[kept] / 0.75, rtol=1e-6)


def test_same_key_same_mask_different_keys_different_masks_and_one_draw_per_call():
    x = ONES
    key = jax.random.key(6)
    a = np.asarray(dropout(key, x, 0.5))
    np.testing.assert_array_equal(a, np.asarray(dropout(key, x, 0.5)))
    # The whole mask is one draw from the key: exactly jax.random.bernoulli(key, 1 - rate, x.shape).
    np.testing.assert_array_equal(a != 0, np.asarray(jax.random.bernoulli(key, 0.5, (N,))))
    # A key reused inside the function would repeat its mask in blocks; ours does not.
    blocks = (a != 0).reshape(100, 1000)
    assert len({row.tobytes() for row in blocks}) == 100
    k1, k2 = jax.random.split(key)
    m1, m2 = (np.asarray(dropout(k, x, 0.5)) != 0 for k in (k1, k2))
    assert np.mean(m1 != (a != 0)) > 0.4 and np.mean(m1 != m2) > 0.4  # independent masks differ in half the entries


def test_deterministic_and_rate_zero_are_the_identity():
    x = _normal(SMALL, 9)
    np.testing.assert_array_equal(dropout(jax.random.key(0), x, 0.5, deterministic=True), x)
    np.testing.assert_array_equal(dropout(None, x, 0.5, deterministic=True), x)
    np.testing.assert_array_equal(dropout(jax.random.key(0), x, 0.0), x)


def test_rate_one_gives_zeros_without_division_by_zero():
    x = _normal(SMALL, 10)
    np.testing.assert_array_equal(dropout(jax.random.key(0), x, 1.0), np.zeros(SMALL))
    g = jax.grad(lambda x: dropout(jax.random.key(0), x, 1.0).sum())(x)
    np.testing.assert_array_equal(g, np.zeros(SMALL))


@pytest.mark.parametrize("rate, deterministic", [(0.3, False), (1.0, False), (0.3, True)])
def test_matches_flax_dropout_bit_for_bit(rate, deterministic):
    # Same key, same recipe (jax.random.bernoulli on the keep probability): the same output.
    x = _normal(SMALL, 11)
    key = jax.random.key(12)
    ref = _flax_dropout(x, key, rate, deterministic)
    np.testing.assert_array_equal(dropout(key, x, rate, deterministic=deterministic), ref)


def test_broadcast_dims_match_flax_and_share_the_mask():
    x = _normal((3, 5, 7, 11), 13)  # (B, H, W, C)
    key = jax.random.key(14)
    y = dropout(key, x, 0.5, broadcast_dims=(1, 2))
    ref = _flax_dropout(x, key, 0.5, broadcast_dims=(1, 2))
    np.testing.assert_array_equal(y, ref)
    dropped = np.asarray(y) == 0
    assert np.all(dropped == dropped[:, :1, :1, :])  # whole channels dropped
    assert 0 < dropped.mean() < 1


def test_same_statistics_as_flax_with_its_own_rng_stream():
    # Flax's make_rng derives its own key; masks differ, the statistics do not.
    ours = np.asarray(dropout(jax.random.key(15), ONES, 0.3))
    theirs = np.asarray(_flax_dropout_own_stream(ONES, jax.random.key(16), 0.3))
    assert np.any(ours != theirs)
    stderr_mean, stderr_frac = np.sqrt(0.3 / 0.7 / N), np.sqrt(0.3 * 0.7 / N)
    assert abs(ours.mean() - theirs.mean()) < Z * np.sqrt(2) * stderr_mean
    assert abs((ours == 0).mean() - (theirs == 0).mean()) < Z * np.sqrt(2) * stderr_frac


def test_gradient_is_the_mask_over_keep_probability():
    x = _normal(SMALL, 17)
    key = jax.random.key(18)
    g = jax.grad(lambda x: dropout(key, x, 0.3).sum())(x)
    keep = np.asarray(jax.random.bernoulli(key, 0.7, SMALL))
    np.testing.assert_allclose(g, keep / np.float32(0.7), rtol=1e-6)


def test_vmap_over_keys_agrees_with_eager():
    # (jit agreement on the examples' inputs is checked by tests/test_jit.py)
    x = _normal(SMALL, 19)
    keys = jax.random.split(jax.random.key(20), 5)
    batched = np.asarray(jax.vmap(lambda k, row: dropout(k, row, 0.4))(keys, x))
    for i in range(5):
        np.testing.assert_array_equal(batched[i], dropout(keys[i], x[i], 0.4))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_keeps_dtype_and_scaling(dtype):
    y = dropout(jax.random.key(21), np.ones(SMALL, dtype), 0.5)
    assert y.dtype == dtype
    assert set(np.unique(np.asarray(y, np.float32))) == {0.0, 2.0}


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_rate_outside_unit_interval_raises(rate):
    with pytest.raises(ValueError, match=r"rate must be a drop probability in \[0, 1\], got"):
        dropout(jax.random.key(0), np.ones(3, np.float32), rate)


def test_missing_key_raises_in_training_mode():
    with pytest.raises(ValueError, match="key must be a PRNG key"):
        dropout(None, np.ones(3, np.float32), 0.5)


def test_broadcast_dims_out_of_range_raise_instead_of_wrapping():
    # Fails on the old code, where axis 2 of a (2, 4) array silently became axis 0 (2 % 2).
    x = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"broadcast_dims must be axes of x, in \[-2, 2\), got \(2,\)"):
        dropout(jax.random.key(0), x, 0.5, broadcast_dims=(2,))
    with pytest.raises(ValueError, match=r"broadcast_dims must be at least -2, got -3"):
        dropout(jax.random.key(0), x, 0.5, broadcast_dims=(-3,))
    with pytest.raises(TypeError, match=r"broadcast_dims must be an int"):
        dropout(jax.random.key(0), x, 0.5, broadcast_dims=(0.5,))
    # -1 is the last axis, as in NumPy: the same mask as naming axis 1.
    np.testing.assert_array_equal(dropout(jax.random.key(0), x, 0.5, broadcast_dims=(-1,)),
                                  dropout(jax.random.key(0), x, 0.5, broadcast_dims=(1,)))


def test_integer_input_raises():
    # Fails on the old code: an int32 x was divided by the keep probability in int32, giving inf.
    with pytest.raises(TypeError, match=r"x must be a floating-point array, got dtype int32"):
        dropout(jax.random.key(0), np.arange(6, dtype=np.int32), 0.5)
    y = dropout(jax.random.key(0), [1.0, 2.0, 3.0], 0.5)  # a list of floats is accepted
    assert y.shape == (3,)
