import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy import integrate

from cookbook.theory.nngp import nngp_kernel, relu_expectation, sample_outputs

# sample_outputs, nngp_kernel and relu_expectation check their input, then run one compiled core each:
# the tests call them as they are and compute their statistics in NumPy (no eager program per shape).
#: Monte Carlo tolerance: a measured mean must lie within Z standard errors of the prediction. With
#: 15 to 20 comparisons per test, a false alarm at 4 standard errors has probability about 1e-3.
Z = 4.0


def _covariance_reference(k_xx, k_xy, k_yy):
    """E[relu(u) relu(v)] by numerical integration of u v times the Gaussian density over u, v > 0,
    in float64 with SciPy."""
    det = k_xx * k_yy - k_xy**2
    inv = np.linalg.inv([[k_xx, k_xy], [k_xy, k_yy]])

    def integrand(v, u):
        q = inv[0, 0] * u * u + 2 * inv[0, 1] * u * v + inv[1, 1] * v * v
        return u * v * math.exp(-q / 2) / (2 * math.pi * math.sqrt(det))

    return integrate.dblquad(integrand, 0, np.inf, 0, np.inf, epsabs=1e-12, epsrel=1e-10)[0]


def _kernel_reference(x1, x2, depth, sigma_w2, sigma_b2):
    """The recursion pair by pair in NumPy float64, with the closed form written out again."""
    x1, x2 = np.asarray(x1, np.float64), np.asarray(x2, np.float64)
    D = x1.shape[1]
    out = np.zeros((len(x1), len(x2)))
    for i, x in enumerate(x1):
        for j, y in enumerate(x2):
            a, b, c = (sigma_b2 + sigma_w2 * p @ q / D for p, q in ((x, x), (x, y), (y, y)))
            for _ in range(depth):
                theta = math.acos(max(-1.0, min(1.0, b / math.sqrt(a * c))))
                e = math.sqrt(a * c) / (2 * math.pi) * (math.sin(theta) + (math.pi - theta) * math.cos(theta))
                a, b, c = sigma_b2 + sigma_w2 * a / 2, sigma_b2 + sigma_w2 * e, sigma_b2 + sigma_w2 * c / 2
            out[i, j] = b
    return out


@pytest.mark.parametrize("k_xx, k_xy, k_yy", [(1.0, 0.3, 2.0), (0.5, -0.4, 0.7), (3.0, 2.9, 3.0), (1.0, -0.99, 1.1)])
def test_relu_expectation_matches_numerical_integration(k_xx, k_xy, k_yy):
    got = float(relu_expectation(k_xx, k_xy, k_yy))
    np.testing.assert_allclose(got, _covariance_reference(k_xx, k_xy, k_yy), rtol=1e-5, atol=1e-7)


def test_relu_expectation_by_hand_at_the_extreme_angles():
    # theta = 0: E[relu(u)^2] = k/2; theta = pi/2: sqrt(k_xx k_yy)/(2 pi); theta = pi: 0; k = 0: 0.
    k = np.array([0.3, 2.0], np.float32)
    np.testing.assert_allclose(relu_expectation(k, k, k), [0.15, 1.0], rtol=1e-6)
    np.testing.assert_allclose(float(relu_expectation(2.0, 0.0, 8.0)), 4.0 / (2 * math.pi), rtol=1e-6)
    assert float(relu_expectation(2.0, -2.0, 2.0)) == pytest.approx(0.0, abs=1e-7)
    assert float(relu_expectation(0.0, 0.0, 5.0)) == 0.0
    assert float(relu_expectation(1, 0, 1)) == pytest.approx(1 / (2 * math.pi), rel=1e-6)  # Python ints


def test_relu_expectation_agrees_with_gaussian_samples():
    rho = np.array([-0.8, -0.2, 0.0, 0.5, 0.95], np.float32)
    k_xx, k_yy = np.array([1.0, 2.0, 0.5, 1.5, 3.0], np.float32), np.array([0.7, 1.0, 2.0, 1.5, 0.2], np.float32)
    k_xy = rho * np.sqrt(k_xx * k_yy)
    S = 100_000

    @jax.jit
    def moments(key):
        e1, e2 = jax.random.normal(key, (2, S, 5))
        u = jnp.sqrt(k_xx)[None] * e1
        v = jnp.sqrt(k_yy)[None] * (rho[None] * e1 + jnp.sqrt(1 - rho**2)[None] * e2)
        products = jax.nn.relu(u) * jax.nn.relu(v)  # (S, 5)
        return products.mean(0), products.std(0) / math.sqrt(S)

    mean, se = (np.asarray(v) for v in moments(jax.random.key(0)))
    assert np.all(np.abs(mean - np.asarray(relu_expectation(k_xx, k_xy, k_yy))) < Z * se)


def test_gradients_pass_check_grads_and_are_finite_at_the_extreme_angles():
    with jax.enable_x64(True):
        args = tuple(jnp.array(v, jnp.float64) for v in ([1.0, 0.5, 2.0], [0.3, -0.2, 1.1], [2.0, 1.5, 0.9]))
        check_grads(lambda a, b, c: relu_expectation(a, b, c).sum(), args, order=1, modes=("rev",))
    # d/dk_xy = (pi - theta) / (2 pi): 1/2 at theta = 0 and 0 at theta = pi, where arccos has no
    # finite derivative.
    d = jax.grad(relu_expectation, argnums=1)
    assert float(d(1.0, 1.0, 1.0)) == pytest.approx(0.5, rel=1e-6)
    assert float(d(1.0, -1.0, 1.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(d(1.0, 0.0, 1.0)) == pytest.approx(0.25, rel=1e-6)


def test_kernel_matches_a_pairwise_recursion_in_float64():
    rng = np.random.default_rng(1)  # NumPy data: no random-number kernel to compile
    x1, x2 = rng.normal(size=(3, 7)).astype(np.float32), rng.normal(size=(5, 7)).astype(np.float32)
    for depth, sigma_w2, sigma_b2 in ((0, 1.3, 0.1), (1, 2.0, 0.0), (4, 1.7, 0.3)):
        got = nngp_kernel(x1, x2, depth=depth, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
        assert got.shape == (3, 5)
        np.testing.assert_allclose(got, _kernel_reference(x1, x2, depth, sigma_w2, sigma_b2), rtol=2e-5, atol=1e-6)


@pytest.fixture(scope="module")
def inputs():
    return np.random.default_rng(2).normal(size=(5, 3)).astype(np.float32)


def _moments(f):
    """The products f_i f_j of the sampled outputs f (S, N): their mean and its standard error, in NumPy."""
    f = np.asarray(f, np.float64)
    products = f[:, :, None] * f[:, None, :]  # (S, N, N)
    return products.mean(0), products.std(0) / math.sqrt(len(f))


@pytest.mark.parametrize("sigma_w2, sigma_b2", [(2.0, 0.0), (1.6, 0.3)])
def test_the_kernel_is_the_covariance_of_random_networks(inputs, sigma_w2, sigma_b2):
    # 4000 networks of width 64 and 2 hidden layers; the finite-width bias, O(L/n), is below one
    # standard error here (about 2 % of the kernel).
    S = 4000
    f = np.asarray(sample_outputs(jax.random.key(3), inputs, depth=2, width=64, samples=S, sigma_w2=sigma_w2,
                                  sigma_b2=sigma_b2))
    mean, se = _moments(f)
    K = np.asarray(nngp_kernel(inputs, inputs, depth=2, sigma_w2=sigma_w2, sigma_b2=sigma_b2))
    assert np.all(np.abs(mean - K) < Z * se), np.abs(mean - K) / se
    assert abs(float(f.mean())) < Z * float(f.std()) / math.sqrt(S)  # mean zero


def test_the_diagonal_is_exact_even_at_width_three(inputs):
    # For the ReLU, K(x, x) maps linearly to sigma_b^2 + sigma_w^2 K / 2, so its mean over networks
    # follows the recursion at any width; 20000 networks of width 3 and depth 2.
    S = 20000
    f = np.asarray(sample_outputs(jax.random.key(4), inputs, depth=2, width=3, samples=S, sigma_w2=1.6, sigma_b2=0.3),
                   np.float64)
    mean, se = (f**2).mean(0), (f**2).std(0) / math.sqrt(S)
    K = np.asarray(nngp_kernel(inputs, inputs, depth=2, sigma_w2=1.6, sigma_b2=0.3))
    assert np.all(np.abs(mean - np.diag(K)) < Z * se)
    # Width 3 is far from Gaussian: the outputs' excess kurtosis is large, where a Gaussian has 0.
    kurtosis = (f**4).mean(0) / (f**2).mean(0) ** 2 - 3
    assert np.all(kurtosis > 1.0)


def test_he_initialisation_keeps_the_variance_and_depth_raises_the_correlation():
    x = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 2.0]], np.float32)
    rho = []
    for depth in range(8):
        K = np.asarray(nngp_kernel(x, x, depth=depth))  # sigma_w^2 = 2, sigma_b^2 = 0
        np.testing.assert_allclose(np.diag(K), 2 * np.sum(x**2, 1) / 3, rtol=1e-6)
        rho.append(float(K[0, 1] / np.sqrt(K[0, 0] * K[1, 1])))
    assert rho[0] == pytest.approx(0.6, rel=1e-6)
    # The correlation rises with every layer, slowly (1 - rho falls like 1/depth^2): 0.6 -> 0.871.
    assert all(b > a for a, b in zip(rho, rho[1:])) and rho[-1] == pytest.approx(0.871, abs=1e-3)


def test_the_example_number_is_the_float64_recursion():
    # The page: inputs at 60 degrees, two hidden layers, K = 0.684.
    x = np.array([[1.0, 0.0], [0.5, 0.75**0.5]], np.float32)
    assert float(np.asarray(nngp_kernel(x, x, depth=2))[0, 1]) == pytest.approx(_kernel_reference(x, x, 2, 2.0, 0.0)[0, 1], rel=1e-6)


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match=r"k_xx, k_xy and k_yy must have one shape"):
        relu_expectation(np.ones(3, np.float32), np.ones(2, np.float32), np.ones(3, np.float32))
    with pytest.raises(TypeError, match=r"k_xy must be a floating-point array"):
        relu_expectation(np.ones(3, np.float32), np.zeros(3, np.int32), np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"k_xx and k_yy are variances"):
        relu_expectation(-1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"\|k_xy\| <= sqrt\(k_xx k_yy\)"):
        relu_expectation(1.0, 1.5, 1.0)
    x = np.ones((3, 5), np.float32)
    with pytest.raises(ValueError, match=r"x1 and x2 must have the same number of features D"):
        nngp_kernel(x, np.ones((3, 4), np.float32), depth=1)
    with pytest.raises(ValueError, match=r"x2 must have 2 axes \(N2, D\)"):
        nngp_kernel(x, np.ones(5, np.float32), depth=1)
    with pytest.raises(TypeError, match=r"depth must be an int"):
        nngp_kernel(x, x, depth=2.0)
    with pytest.raises(ValueError, match=r"sigma_w2 must be positive"):
        nngp_kernel(x, x, depth=1, sigma_w2=0.0)
    with pytest.raises(ValueError, match=r"width must be at least 1"):
        sample_outputs(jax.random.key(0), x, depth=1, width=0, samples=3)
    with pytest.raises(TypeError, match=r"x must be a floating-point array"):
        sample_outputs(jax.random.key(0), np.ones((3, 5), np.int32), depth=1, width=2, samples=3)


def test_the_page_example_is_within_about_one_standard_error():
    # The page: 5000 networks of width 32 (key 1) agree with the kernel to within about one standard
    # error, which is 0.02 to 0.03 for these entries (measured 0.020 off the diagonal, 0.026 and 0.024 on it).
    x = np.array([[1.0, 0.0], [0.5, 0.75**0.5]], np.float32)
    mean, se = _moments(sample_outputs(jax.random.key(1), x, depth=2, width=32, samples=5000))  # the page's program
    assert np.all((se > 0.019) & (se < 0.03))
    deviation = np.abs(mean - np.asarray(nngp_kernel(x, x, depth=2)))
    assert np.all(deviation < 1.5 * se), deviation / se
