import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.theory.universal_approximation import apply, error_bound, interpolant

#: A smooth function and its curvature bound on [-1.5, 1.5]: f'' = -9 sin(3x) + 0.6, |f''| <= 9.6,
#: reached at x = -pi/6.
SMOOTH, A, B, CURVATURE = (lambda x: jnp.sin(3 * x) + 0.3 * x**2), -1.5, 1.5, 9.6
GRID = np.linspace(A, B, 6001)
WIDTHS = (8, 16, 32, 64, 128)
# Inputs are made and outputs compared in NumPy (float32 where the network reads them): an eager jnp
# operation compiles for every new shape. f on a grid is one jitted program per function and grid.
_ON_GRID = {}


def _f_on(f, grid):
    key = (f, grid.shape, float(grid[0]), float(grid[-1]))
    if key not in _ON_GRID:
        _ON_GRID[key] = np.asarray(jax.jit(f)(grid.astype(np.float32)))
    return _ON_GRID[key]


def _max_error(f, params, grid=GRID):
    return float(np.max(np.abs(_f_on(f, grid) - np.asarray(apply(params, grid.astype(np.float32))))))


@pytest.mark.parametrize("width", [3, 5, 11])
def test_the_network_is_numpys_linear_interpolant(width):
    knots = np.linspace(A, B, width + 1)
    x = np.random.default_rng(width).uniform(A, B, 101)
    expected = np.interp(x, knots, np.sin(3 * knots) + 0.3 * knots**2)
    params = interpolant(SMOOTH, A, B, width)
    y = np.asarray(apply(params, np.append(x, [A, B]).astype(np.float32)))  # one call: the points, then a and b
    np.testing.assert_allclose(y[:-2], expected, rtol=1e-5, atol=2e-6)
    ends = np.float32([A, B])
    np.testing.assert_allclose(y[-2:], np.sin(np.float32(3) * ends) + np.float32(0.3) * ends**2, atol=2e-6)


def test_the_error_meets_the_bound_and_falls_as_one_over_width_squared():
    errors = np.array([_max_error(SMOOTH, interpolant(SMOOTH, A, B, m)) for m in WIDTHS])
    bounds = np.array([error_bound(A, B, m, curvature=CURVATURE) for m in WIDTHS])
    # Float32 rounding of the network (the m ReLU terms cancel, 1.5e-6 at m = 128, the page's notes)
    # and of f itself on the grid: the measured error exceeds the bound by 5e-6 at m = 128.
    assert np.all(errors <= bounds + 1e-5)
    assert np.all(errors[1:] >= 0.7 * bounds[1:])  # and nearly tight: the curvature peaks inside [a, b]
    slope = np.polyfit(np.log(WIDTHS), np.log(errors), 1)[0]
    assert slope == pytest.approx(-2.0, abs=0.1)


def test_a_kink_between_knots_costs_one_over_width():
    # |x - c| is Lipschitz but not smooth: on the piece holding the kink the chord misses it by up to
    # h / 2, so the error is O(1/m), not O(1/m^2). Widths chosen so that c falls inside a piece.
    f, c = (lambda x: jnp.abs(x - 0.31)), 0.31
    for m in (7, 13, 29, 61):
        h = 2.0 / m
        error = _max_error(f, interpolant(f, -1.0, 1.0, m), np.linspace(-1.0, 1.0, 20001))
        offset = (c + 1.0) % h  # where the kink sits in its piece
        expected = 2 * offset * (h - offset) / h  # the chord's height above the kink, h / 2 at most
        assert error <= h / 2 + 1e-5
        assert error == pytest.approx(expected, abs=2e-4)


def test_outside_the_interval_the_network_is_a_straight_line():
    params = interpolant(SMOOTH, A, B, 16)
    right = np.asarray(apply(params, np.linspace(B, B + 3.0, 7, dtype=np.float32)))
    np.testing.assert_allclose(np.diff(right, 2), 0.0, atol=1e-4)  # no more kinks past the last knot
    left = np.asarray(apply(params, np.linspace(A - 3.0, A, 7, dtype=np.float32)))
    np.testing.assert_allclose(np.diff(left, 2), 0.0, atol=1e-4)
    # Accurate inside, far off outside (f grows as 0.3 x^2, the line does not follow).
    far = float(right[5])  # the network at x = 4
    assert abs(far - (math.sin(12.0) + 0.3 * 4.0**2)) > 1.0 and _max_error(SMOOTH, params) < 0.05


def test_the_width_that_an_accuracy_needs():
    # m >= (b - a) sqrt(max|f''| / (8 eps)): for eps = 1e-3, m = 104 suffices and is nearly needed.
    eps = 1e-3
    m = math.ceil((B - A) * math.sqrt(CURVATURE / (8 * eps)))
    assert m == 104 and error_bound(A, B, m, curvature=CURVATURE) <= eps
    assert _max_error(SMOOTH, interpolant(SMOOTH, A, B, m)) <= eps
    assert _max_error(SMOOTH, interpolant(SMOOTH, A, B, m // 2)) > eps


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match=r"the interval must have a < b, got a = 1.0 and b = 0.0"):
        interpolant(jnp.sin, 1.0, 0.0, 4)
    with pytest.raises(ValueError, match=r"width must be at least 1"):
        interpolant(jnp.sin, 0.0, 1.0, 0)
    with pytest.raises(TypeError, match=r"f must be a function"):
        interpolant(3.0, 0.0, 1.0, 4)
    with pytest.raises(ValueError, match=r"f\(knots\) must have shape \(5,\)"):
        interpolant(lambda x: jnp.sum(x), 0.0, 1.0, 4)
    with pytest.raises(TypeError, match=r"a must be a real number"):
        interpolant(jnp.sin, "0", 1.0, 4)
    params = interpolant(jnp.sin, 0.0, 1.0, 4)
    with pytest.raises(TypeError, match=r"x must be a floating-point array"):
        apply(params, np.arange(3))
    with pytest.raises(ValueError, match=r"params\['c'\] must have shape \(4,\)"):
        apply(params | {"c": np.asarray(params["c"])[:3]}, np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"curvature must be non-negative"):
        error_bound(0.0, 1.0, 4, curvature=-1.0)


def test_float32_rounding_of_the_relu_sum_grows_with_width():
    # The page's notes: at m = 128 the float32 network differs from the same network evaluated in
    # float64 by about 1.5e-6 on [-1.5, 1.5], beside an approximation error of 7e-4.
    params = interpolant(SMOOTH, A, B, 128)
    t, c, d = (np.asarray(params[k], np.float64) for k in ("t", "c", "d"))
    exact = d + np.maximum(GRID[:, None] - t[None, :], 0.0) @ c
    rounding = np.max(np.abs(np.asarray(apply(params, GRID.astype(np.float32)), np.float64) - exact))
    assert 1e-6 < rounding < 3e-6  # measured 1.50e-6
    assert round(_max_error(SMOOTH, params), 4) == 0.0007
