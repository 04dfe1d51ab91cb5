import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.convolution.pooling import avg_pool, global_avg_pool, max_pool, shift_unchanged_fraction

TOL = dict(rtol=1e-5, atol=1e-6)


def _x(seed=0, shape=(11, 7, 3)):
    """Random maps from NumPy (float32): jax.random would compile a sampler for every shape."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("window, stride, padding", [(2, None, "VALID"), (3, 2, "SAME"), ((3, 2), 1, "VALID")])
def test_matches_flax_pooling(window, stride, padding):
    x = _x()
    w = (window, window) if isinstance(window, int) else window
    s = w if stride is None else (stride, stride)
    np.testing.assert_allclose(max_pool(x, window, stride=stride, padding=padding),
                               nn.max_pool(x[None], w, s, padding)[0], **TOL)
    np.testing.assert_allclose(avg_pool(x, window, stride=stride, padding=padding),
                               nn.avg_pool(x[None], w, s, padding, count_include_pad=False)[0], **TOL)


def test_against_numpy_windows_by_hand():
    x = _x(1, (6, 9, 2))
    y = np.asarray(max_pool(x, 3))
    z = np.asarray(avg_pool(x, 3))
    assert y.shape == z.shape == (2, 3, 2)
    for i in range(2):
        for j in range(3):
            win = x[3 * i: 3 * i + 3, 3 * j: 3 * j + 3]
            np.testing.assert_allclose(y[i, j], win.max(axis=(0, 1)), **TOL)
            np.testing.assert_allclose(z[i, j], win.mean(axis=(0, 1)), **TOL)


def test_max_pool_pads_with_minus_infinity_and_avg_pool_excludes_padding():
    x = -1.0 - np.arange(25.0, dtype=np.float32).reshape(5, 5, 1)  # all negative
    y = max_pool(x, 3, stride=1, padding="SAME")
    assert np.asarray(y)[0, 0, 0] == -1.0  # a zero from padding would have won
    a = avg_pool(np.ones((5, 7, 2), np.float32), 3, stride=1, padding="SAME")
    np.testing.assert_allclose(a, 1.0, **TOL)  # no darkened border


def test_global_average_pool_is_exactly_invariant_to_circular_shifts():
    x = _x(2, (7, 5, 3))
    g = global_avg_pool(x)
    np.testing.assert_allclose(g, x.mean(axis=(0, 1)), **TOL)
    for shift in [(1, 0), (3, 4)]:
        np.testing.assert_allclose(global_avg_pool(np.roll(x, shift, axis=(0, 1))), g, rtol=1e-5, atol=1e-6)


def test_max_pool_invariance_fraction_follows_k_minus_1_over_k_plus_1():
    x = jax.random.normal(jax.random.key(3), (60, 60, 8))  # the draw these bounds were set on
    for k in (2, 3, 5):
        measured = float(shift_unchanged_fraction(x, k).mean())
        assert abs(measured - (k - 1) / (k + 1)) < 0.05, (k, measured)
    assert float(shift_unchanged_fraction(x, 1).mean()) < 0.01  # no pooling: no invariance


def test_max_pool_is_more_shift_invariant_than_a_convolution_map():
    x = _x(4, (30, 30, 4))
    unchanged_raw = float(np.mean(x == np.roll(x, 1, axis=1)))
    assert unchanged_raw < 0.01 < 0.3 < float(shift_unchanged_fraction(x, 2).mean())


def test_max_pool_gradient_flows_only_to_the_winner():
    x = np.array([[1.0, 5.0], [2.0, 3.0]], np.float32)[..., None]
    g = jax.grad(lambda x: max_pool(x, 2).sum())(x)
    np.testing.assert_array_equal(np.asarray(g)[..., 0], [[0.0, 1.0], [0.0, 0.0]])


def test_jit_vmap_and_bfloat16():
    xs = _x(5, (3, 11, 7, 5))
    f = jax.jit(max_pool, static_argnames=("window", "stride", "padding"))
    np.testing.assert_allclose(np.asarray(jax.vmap(lambda x: avg_pool(x, 3))(xs))[2], avg_pool(xs[2], 3), **TOL)
    np.testing.assert_allclose(f(xs[0], 2, padding="SAME"), max_pool(xs[0], 2, padding="SAME"), **TOL)
    a = avg_pool(xs[0].astype(jnp.bfloat16), 2)
    assert a.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(a).astype(np.float32), avg_pool(xs[0], 2), atol=0.02)


@pytest.mark.parametrize("fn", [max_pool, avg_pool])
def test_bad_input_raises(fn):
    with pytest.raises(ValueError, match=r"x must have 3 axes \(H, W, C\): one feature map.*got shape \(2, 5, 5, 3\)"):
        fn(np.ones((2, 5, 5, 3), np.float32), 2)
    with pytest.raises(ValueError, match="does not fit"):
        fn(np.ones((3, 3, 1), np.float32), 5)
    with pytest.raises(ValueError, match=r"x must have 3 axes"):
        global_avg_pool(np.ones((5, 5), np.float32))


def test_integer_maps_and_float_windows_raise_and_lists_are_accepted():
    x = _x(20, (6, 6, 3))
    for fn in (max_pool, avg_pool):
        with pytest.raises(TypeError, match=r"x must be a floating-point array"):
            fn(np.ones((6, 6, 3), np.int32), 2)
        with pytest.raises(TypeError, match=r"window must be an int"):
            fn(x, 2.0)
        np.testing.assert_allclose(fn(x.tolist(), 2), fn(x, 2), **TOL)
    with pytest.raises(TypeError, match=r"x must be a floating-point array"):
        global_avg_pool(np.ones((6, 6, 3), np.int32))
    with pytest.raises(TypeError, match=r"shift must be an int"):
        shift_unchanged_fraction(x, 2, shift=1.0)
    assert shift_unchanged_fraction(x, 2).shape == (3,)  # one fraction per channel


def test_pooling_with_stride_k_makes_the_map_k_times_smaller():
    x = _x(21, (12, 18, 2))
    for k in (2, 3, 6):
        assert max_pool(x, k).shape == (12 // k, 18 // k, 2)
