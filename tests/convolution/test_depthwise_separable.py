import jax
import numpy as np
import pytest

from cookbook.convolution.conv2d import conv2d
from cookbook.convolution.depthwise_separable import (
    costs,
    depthwise_conv2d,
    depthwise_conv2d_loops,
    init,
    pointwise_conv2d,
    separable_conv2d,
)

TOL = dict(rtol=1e-4, atol=1e-5)


def _x(seed, shape=(11, 7, 5)):
    """Standard normal test data from NumPy, as float32: a JAX sampler compiles a program per shape."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _params(seed, K, M, N):
    """Kernels in init's shapes and scales (He-normal), drawn by NumPy."""
    return {"depthwise": _x(seed, (K, K, M)) * np.float32(np.sqrt(2.0 / (K * K))),
            "pointwise": _x(seed + 1000, (M, N)) * np.float32(np.sqrt(2.0 / M))}


@pytest.mark.parametrize("stride, padding", [(1, "SAME"), (2, "VALID"), (2, 1)])
def test_depthwise_equals_grouped_lax_conv_and_per_channel_loops(stride, padding):
    x = _x(0)
    w = _x(1, (3, 3, 5))
    pads = padding if isinstance(padding, str) else [(padding, padding)] * 2
    ref = jax.lax.conv_general_dilated(x[None], w.reshape(3, 3, 1, 5), (stride, stride), pads,
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=5)[0]
    mine = depthwise_conv2d(x, w, stride=stride, padding=padding)
    np.testing.assert_allclose(mine, ref, **TOL)
    np.testing.assert_allclose(depthwise_conv2d_loops(x, w, stride=stride, padding=padding), ref, **TOL)


def test_separable_equals_a_full_conv_with_the_factorised_kernel():
    x = _x(2)
    params = _params(3, 3, 5, 7)
    full_kernel = np.einsum("hwc,co->hwco", params["depthwise"], params["pointwise"])  # (3, 3, 5, 7)
    np.testing.assert_allclose(separable_conv2d(x, params["depthwise"], params["pointwise"], stride=2),
                               conv2d(x, full_kernel, stride=2), **TOL)


def test_pointwise_is_a_1x1_convolution():
    z = _x(4)
    u = _x(5, (5, 3))
    np.testing.assert_allclose(pointwise_conv2d(z, u), conv2d(z, u[None, None]), **TOL)


@pytest.mark.parametrize("K, M, N, H, W", [(3, 32, 64, 16, 16), (5, 7, 11, 3, 5), (7, 3, 5, 11, 7)])
def test_costs_match_the_formulas_and_the_created_parameters(K, M, N, H, W):
    c = costs(H, W, kernel_size=K, in_channels=M, out_channels=N)
    # The shapes that init creates (jax.eval_shape: nothing drawn, nothing compiled).
    params = jax.eval_shape(lambda key: init(key, kernel_size=K, in_channels=M, out_channels=N), jax.random.key(6))
    assert c["separable_params"] == sum(p.size for p in jax.tree.leaves(params)) == K * K * M + M * N
    assert c["standard_params"] == K * K * M * N
    assert c["standard_mult_adds"] == H * W * K * K * M * N
    assert c["separable_mult_adds"] == H * W * (K * K * M + M * N)
    np.testing.assert_allclose(c["separable_mult_adds"] / c["standard_mult_adds"], 1 / N + 1 / K**2)


def test_mobilenet_scale_saving_is_eight_to_nine_fold():
    c = costs(14, 14, kernel_size=3, in_channels=512, out_channels=512)
    saving = c["standard_mult_adds"] / c["separable_mult_adds"]
    assert 8.5 < saving < 9.0
    # The page: about eight at N = 64 (the example), nine as N grows.
    c = costs(16, 16, kernel_size=3, in_channels=32, out_channels=64)
    assert round(c["standard_mult_adds"] / c["separable_mult_adds"]) == 8
    assert 1 / (1 / 10**6 + 1 / 9) == pytest.approx(9, rel=1e-5)


def test_jit_and_vmap_agree():
    xs = _x(7, (3, 7, 5, 4))
    params = _params(8, 3, 4, 6)
    f = lambda x: separable_conv2d(x, params["depthwise"], params["pointwise"])
    batched = np.asarray(jax.vmap(f)(xs))
    np.testing.assert_allclose(jax.jit(f)(xs[1]), batched[1], **TOL)


def test_bad_input_raises():
    with pytest.raises(ValueError, match=r"w_depthwise must have shape \(K, K, M\) with M = 5"):
        depthwise_conv2d(np.ones((7, 7, 5), np.float32), np.ones((3, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"x must have 3 axes \(H, W, M\): one image"):
        depthwise_conv2d(np.ones((2, 7, 7, 5), np.float32), np.ones((3, 3, 5), np.float32))
    with pytest.raises(ValueError, match=r"w_pointwise must have shape \(M, N\) with M = 5"):
        separable_conv2d(np.ones((7, 7, 5), np.float32), np.ones((3, 3, 5), np.float32), np.ones((4, 6), np.float32))


def test_integer_arrays_and_float_sizes_raise_and_lists_are_accepted():
    params = _params(40, 3, 5, 4)
    x = _x(41, (7, 7, 5))
    with pytest.raises(TypeError, match=r"x must be a floating-point array"):
        depthwise_conv2d(x.astype(np.int32), params["depthwise"])
    with pytest.raises(TypeError, match=r"w_depthwise must be a floating-point array"):
        depthwise_conv2d(x, params["depthwise"].astype(np.int32))
    with pytest.raises(TypeError, match=r"w_pointwise must be a floating-point array"):
        separable_conv2d(x, params["depthwise"], params["pointwise"].astype(np.int32))
    with pytest.raises(TypeError, match=r"stride must be an int"):
        depthwise_conv2d(x, params["depthwise"], stride=1.0)
    with pytest.raises(TypeError, match=r"out_channels must be an int"):
        costs(7, 7, kernel_size=3, in_channels=5, out_channels=4.0)
    y = separable_conv2d(np.asarray(x).tolist(), np.asarray(params["depthwise"]).tolist(),
                         np.asarray(params["pointwise"]).tolist())
    np.testing.assert_allclose(y, separable_conv2d(x, params["depthwise"], params["pointwise"]), rtol=1e-5, atol=1e-6)
