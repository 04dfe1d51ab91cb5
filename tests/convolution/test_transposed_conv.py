import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.convolution.conv2d import conv2d
from cookbook.convolution.transposed_conv import (
    conv_transpose,
    conv_transpose_scatter,
    output_size,
    overlap_count,
)

TOL = dict(rtol=1e-4, atol=1e-5)
CASES = [(3, 2, 0), (3, 2, 1), (4, 2, 1), (5, 3, 2), (2, 1, 0)]  # (kernel, stride, padding)


def _yw(seed, k, H_in=3, W_in=5, C_in=2, C_out=3):
    """Inputs drawn with NumPy: jax.random.normal would compile a sampler for every shape."""
    rng = np.random.default_rng(seed)
    y = rng.standard_normal((H_in, W_in, C_out)).astype(np.float32)
    return y, rng.standard_normal((k, k, C_in, C_out)).astype(np.float32)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))  # both references in one program per case
def _references(y, w, H, W, s, p):
    out, vjp = jax.vjp(lambda x: conv2d(x, w, stride=s, padding=p), jnp.zeros((H, W, w.shape[2])))
    k = w.shape[0]
    lax = jax.lax.conv_transpose(
        y[None], w, (s, s), [(k - 1 - p, k - 1 - p)] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=True)[0]
    return out.shape, vjp(y)[0], lax


@pytest.mark.parametrize("k, s, p", CASES)
def test_equals_vjp_of_conv2d_lax_conv_transpose_and_the_scatter_loops(k, s, p):
    y, w = _yw(k * 10 + s, k)
    H, W = output_size(3, k, stride=s, padding=p), output_size(5, k, stride=s, padding=p)
    out_shape, grad_x, lax = _references(y, w, H, W, s, p)
    assert out_shape == y.shape  # the forward convolution maps (H, W) back to (3, 5)
    mine = conv_transpose(y, w, stride=s, padding=p)
    assert mine.shape == (H, W, 2)
    np.testing.assert_allclose(mine, grad_x, **TOL)
    np.testing.assert_allclose(conv_transpose_scatter(y, w, stride=s, padding=p), grad_x, **TOL)
    np.testing.assert_allclose(lax, mine, **TOL)


def test_adjoint_identity_inner_products():
    y, w = _yw(1, 3)
    x = np.random.default_rng(2).standard_normal((output_size(3, 3, stride=2), output_size(5, 3, stride=2), 2))
    x = x.astype(np.float32)
    lhs = np.vdot(np.asarray(conv2d(x, w, stride=2, padding="VALID"), np.float64), y)  # sums in NumPy
    rhs = np.vdot(x, np.asarray(conv_transpose(y, w, stride=2), np.float64))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-4)


def test_overlap_is_uneven_iff_kernel_not_divisible_by_stride():
    for k, s in [(3, 2), (5, 2), (4, 3)]:
        interior = overlap_count(7, k, stride=s)[k:-k, k:-k]
        assert float(interior.max()) > float(interior.min()), (k, s)
    for k, s in [(4, 2), (6, 3), (2, 2), (3, 1)]:
        interior = overlap_count(7, k, stride=s)[k:-k, k:-k]
        np.testing.assert_array_equal(interior, (k // s) ** 2)


def test_checkerboard_counts_by_hand():
    c = overlap_count(4, 3, stride=2)
    assert c.shape == (9, 9)
    np.testing.assert_array_equal(c[2:7, 2:7], [[4, 2, 4, 2, 4], [2, 1, 2, 1, 2], [4, 2, 4, 2, 4],
                                               [2, 1, 2, 1, 2], [4, 2, 4, 2, 4]])


def test_jit_and_vmap_agree():
    y, w = _yw(3, 4)
    ys = np.stack([y, -y, 2 * y])
    batched = jax.vmap(lambda v: conv_transpose(v, w, stride=2, padding=1))(ys)
    np.testing.assert_allclose(batched[2], conv_transpose(ys[2], w, stride=2, padding=1), **TOL)
    jitted = jax.jit(conv_transpose, static_argnames=("stride", "padding"))
    np.testing.assert_allclose(jitted(y, w, stride=2, padding=1), batched[0], **TOL)


@pytest.mark.parametrize(
    "y_shape, w_shape, kw, match",
    [
        ((3, 5, 4), (3, 3, 2, 3), {}, r"y has 4 channels .* C_out = 3"),
        ((2, 3, 5, 3), (3, 3, 2, 3), {}, r"y must have 3 axes \(H', W', C_out\): one map"),
        ((3, 5, 3), (3, 3, 3), {}, r"w must have 4 axes"),
        ((3, 5, 3), (3, 3, 2, 3), {"stride": 0}, r"stride must be at least 1"),
        ((3, 5, 3), (3, 3, 2, 3), {"padding": -1}, r"padding must be"),
    ],
)
def test_bad_input_raises(y_shape, w_shape, kw, match):
    with pytest.raises(ValueError, match=match):
        conv_transpose(np.ones(y_shape, np.float32), np.ones(w_shape, np.float32), **kw)


def test_integer_arrays_and_float_sizes_raise_and_lists_are_accepted():
    y, w = _yw(30, 3)
    with pytest.raises(TypeError, match=r"y must be a floating-point array"):
        conv_transpose(y.astype(np.int32), w, stride=2)
    with pytest.raises(TypeError, match=r"w must be a floating-point array"):
        conv_transpose(y, w.astype(np.int32), stride=2)
    with pytest.raises(TypeError, match=r"stride must be an int"):
        conv_transpose(y, w, stride=2.0)
    with pytest.raises(TypeError, match=r"kernel_size must be an int"):
        overlap_count(3, 3.5, stride=2)
    np.testing.assert_allclose(conv_transpose(y.tolist(), w.tolist(), stride=2),
                               conv_transpose(y, w, stride=2), **TOL)


def test_three_by_three_stride_two_stripes_rows_two_four_and_counts_one_two_four():
    c = np.asarray(overlap_count(3, 3, stride=2))
    np.testing.assert_array_equal(c[:, 0], [1, 1, 2, 1, 2, 1, 1])  # rows 2 and 4 (from 0) get two stamps
    assert set(np.unique(c).tolist()) == {1.0, 2.0, 4.0}
