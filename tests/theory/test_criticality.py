import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from cookbook.theory.criticality import critical_initialization, kernel_map, signal_propagation, susceptibilities

#: Monte Carlo tolerance: a measured mean lies within Z standard errors of the prediction.
Z = 4.0
S, DEPTH, WIDTH = 200, 12, 64


def _gauss_reference(g, K):
    """<g(z)> over z ~ N(0, K) by adaptive quadrature in float64 (SciPy)."""
    return integrate.quad(lambda z: g(z) * math.exp(-z * z / (2 * K)) / math.sqrt(2 * math.pi * K), -np.inf, np.inf,
                          epsabs=1e-13, epsrel=1e-11)[0]


def test_critical_initialization():
    assert critical_initialization("relu") == (0, 2)
    assert critical_initialization("tanh") == (0, 1)
    with pytest.raises(ValueError, match=r"activation must be one of \['relu', 'tanh'\], got 'gelu'"):
        critical_initialization("gelu")


@pytest.mark.parametrize("K", [0.05, 0.8, 3.0, 30.0])
def test_tanh_averages_match_adaptive_quadrature(K):
    sech2 = lambda z: 1 - math.tanh(z) ** 2
    np.testing.assert_allclose(kernel_map(K, "tanh", C_b=0.1, C_W=1.3),
                               0.1 + 1.3 * _gauss_reference(lambda z: math.tanh(z) ** 2, K), rtol=1e-5)
    chi_par, chi_perp = susceptibilities(K, "tanh", C_W=1.3)
    np.testing.assert_allclose(chi_par, 1.3 / (2 * K**2) * _gauss_reference(lambda z: math.tanh(z) ** 2 * (z * z - K), K),
                               rtol=1e-5)
    np.testing.assert_allclose(chi_perp, 1.3 * _gauss_reference(lambda z: sech2(z) ** 2, K), rtol=1e-5)


def test_relu_in_closed_form_and_chi_parallel_is_the_derivative_of_the_map():
    K = np.array([0.1, 1.0, 7.0], np.float32)  # NumPy: no eager program per operation
    np.testing.assert_allclose(kernel_map(K, "relu", C_b=0.2, C_W=1.7), 0.2 + 1.7 * K / 2, rtol=1e-6)
    for chi in susceptibilities(K, "relu", C_W=1.7):
        np.testing.assert_allclose(chi, 0.85, rtol=1e-6)
    # chi_parallel = d K^(l+1) / d K^(l), checked with automatic differentiation of the map.
    map_derivative = jax.jit(jax.grad(lambda k: kernel_map(k, "tanh", C_b=0.1, C_W=1.3)))  # one program
    for K0 in (0.05, 0.8, 3.0):
        derivative = map_derivative(K0)
        np.testing.assert_allclose(susceptibilities(K0, "tanh", C_W=1.3)[0], derivative, rtol=1e-5)


def test_both_susceptibilities_are_one_at_the_critical_points():
    for K in (0.1, 1.0, 7.0):  # ReLU at (0, 2): every K is a fixed point
        np.testing.assert_allclose(susceptibilities(K, "relu", C_W=2.0), (1.0, 1.0), rtol=1e-6)
        assert float(kernel_map(K, "relu", C_b=0.0, C_W=2.0)) == pytest.approx(K, rel=1e-6)
    chi_par, chi_perp = susceptibilities(1e-4, "tanh", C_W=1.0)  # tanh at (0, 1): K* = 0
    assert float(chi_par) == pytest.approx(1.0, abs=1e-3) and float(chi_perp) == pytest.approx(1.0, abs=1e-3)
    assert float(kernel_map(0.0, "tanh", C_b=0.0, C_W=1.0)) == 0.0


def test_tanh_phases_at_the_fixed_point():
    # C_W = 1.6 > 1: a nonzero fixed point K* where chi_par < 1 (stable) and chi_perp > 1 (chaos);
    # C_W = 0.6 < 1: K* = 0 with chi_perp = 0.6 < 1 (order).
    K = jnp.array(1.0)
    for _ in range(200):
        K = kernel_map(K, "tanh", C_b=0.0, C_W=1.6)
    assert float(K) > 0.1 and float(kernel_map(K, "tanh", C_b=0.0, C_W=1.6)) == pytest.approx(float(K), rel=1e-5)
    chi_par, chi_perp = susceptibilities(K, "tanh", C_W=1.6)
    assert float(chi_par) < 1 < float(chi_perp)
    assert float(susceptibilities(1e-6, "tanh", C_W=0.6)[1]) == pytest.approx(0.6, rel=1e-4)


def test_at_criticality_tanh_fades_as_a_power_law():
    # K^(l) ~ 1 / (2 l) at C_W = 1: after 1000 layers 2 l K is within 2 % of 1 (its log corrections
    # are O(log l / l)), where an exponential decay would leave nothing.
    K = np.float32(1.0)
    for _ in range(1000):
        K = kernel_map(K, "tanh", C_b=0.0, C_W=1.0)  # the compiled core of the other tests' calls
    assert 2 * 1000 * float(K) == pytest.approx(1.0, abs=0.02)


def _predicted(activation, C_W, x, dx):
    """K^(l) and G^(l) for l = 1..DEPTH from the recursions: G^(l+1) = chi_perp(K^(l)) G^(l)."""
    D = x.shape[0]
    K, G, out = C_W * float(x @ x) / D, C_W * float(dx @ dx) / D, []
    for _ in range(DEPTH):
        out.append((K, G))
        G *= float(susceptibilities(K, activation, C_W=C_W)[1])
        K = float(kernel_map(K, activation, C_b=0.0, C_W=C_W))
    return np.array(out).T


@pytest.fixture(scope="module")
def runs():
    """One compiled sampler per activation (C_W is traced), 200 networks of width 64 and 12 layers."""
    x = np.ones(8, np.float32)
    dx = np.array([1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0], np.float32)  # dx perpendicular to x

    def sampler(activation):
        one = lambda k, c: signal_propagation(k, x, dx, activation, depth=DEPTH, width=WIDTH, C_b=0.0, C_W=c)
        # the S keys are split inside the compiled sampler (eagerly, the split compiled a program of its own)
        run = jax.jit(lambda key, c: jax.vmap(one, in_axes=(0, None))(jax.random.split(key, S), c))
        return lambda C_W: [np.asarray(a) for a in run(jax.random.key(1), C_W)]

    return x, dx, {"relu": sampler("relu"), "tanh": sampler("tanh")}


@pytest.mark.parametrize("activation, C_W", [("relu", 2.0), ("relu", 1.7), ("tanh", 0.6), ("tanh", 1.0), ("tanh", 1.6)])
def test_sampled_networks_follow_the_recursions(runs, activation, C_W):
    # The recursions hold at infinite width. At layer l of a network of width n they are off by a
    # finite-width correction O(l/n) relative (Roberts and Yaida ch. 4; for tanh at C_W = 1 the
    # measured K is 10 % low at layer 12 of width 64, many standard errors), so the tolerance is
    # Z = 4 standard errors of the 200 networks plus l/n of the prediction (1.6 % at layer 1, 19 % at
    # layer 12); off criticality the ReLU's G changes by (C_W / 2)^11 = 0.17 at C_W = 1.7.
    x, dx, sample = runs
    K, G = sample[activation](C_W)
    K_pred, G_pred = _predicted(activation, C_W, x, dx)
    finite_width = np.arange(1, DEPTH + 1) / WIDTH
    for measured, predicted in ((K, K_pred), (G, G_pred)):
        mean, se = measured.mean(0), measured.std(0) / math.sqrt(S)
        assert np.all(np.abs(mean - predicted) < Z * se + finite_width * predicted), (mean - predicted) / predicted
    if activation == "relu":  # exponential growth or decay of G except at C_W = 2
        assert G_pred[-1] / G_pred[0] == pytest.approx((C_W / 2) ** (DEPTH - 1), rel=1e-5)


def test_a_network_of_one_layer_and_an_input_without_change():
    K, G = signal_propagation(jax.random.key(2), jnp.ones(3), jnp.zeros(3), "tanh", depth=1, width=5, C_b=0.0, C_W=1.0)
    assert K.shape == (1,) and G.shape == (1,) and float(G[0]) == 0.0


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match=r"activation must be one of"):
        kernel_map(1.0, "sigmoid", C_b=0.0, C_W=1.0)
    with pytest.raises(ValueError, match=r"K is a variance and must be non-negative"):
        susceptibilities(-1.0, "tanh", C_W=1.0)
    with pytest.raises(TypeError, match=r"K must be a floating-point array"):
        kernel_map(jnp.array([1, 2]), "tanh", C_b=0.0, C_W=1.0)
    with pytest.raises(ValueError, match=r"C_W must be positive"):
        kernel_map(1.0, "tanh", C_b=0.0, C_W=0.0)
    with pytest.raises(ValueError, match=r"dx must have shape \(3,\)"):
        signal_propagation(jax.random.key(0), jnp.ones(3), jnp.ones(4), "relu", depth=2, width=5, C_b=0.0, C_W=2.0)
    with pytest.raises(ValueError, match=r"depth must be at least 1"):
        signal_propagation(jax.random.key(0), jnp.ones(3), jnp.ones(3), "relu", depth=0, width=5, C_b=0.0, C_W=2.0)
    with pytest.raises(TypeError, match=r"width must be an int"):
        signal_propagation(jax.random.key(0), jnp.ones(3), jnp.ones(3), "relu", depth=2, width=5.0, C_b=0.0, C_W=2.0)
