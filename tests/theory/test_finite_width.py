import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.theory.finite_width import excess_kurtosis, kurtosis_recursion, preactivation_moments

#: Monte Carlo tolerance: a measured kurtosis lies within Z standard errors (delta method over networks).
Z = 4.0


@pytest.fixture(scope="module")
def measured():
    """The page's figure: 2000 networks of width 32 and 1000 of width 64, 10 layers, l / n <= 0.3."""
    x = jnp.ones(4)
    return {width: excess_kurtosis(preactivation_moments(jax.random.key(0), x, depth=10, width=width, samples=samples))
            for width, samples in ((32, 2000), (64, 1000))}


@pytest.mark.parametrize("width", [32, 64])
def test_sampled_kurtosis_follows_the_exact_recursion(measured, width):
    kurtosis, se = (np.asarray(a) for a in measured[width])
    predicted = np.asarray(kurtosis_recursion(depth=10, width=width))
    assert np.all(np.abs(kurtosis - predicted) < Z * se), (kurtosis - predicted) / se
    assert kurtosis[-1] > 2.5  # far from Gaussian after 10 layers (7.9 and 3.8), over 4 standard errors from 0
    assert np.all(np.abs(kurtosis[-1]) > Z * se[-1])


def test_depth_over_width_is_what_matters(measured):
    # (l - 1) / n = 1/8 at layer 5 of width 32 and at layer 9 of width 64: the predictions differ by 5 %
    # (2.36 and 2.48), and the measurements agree within their errors.
    k32, se32 = (np.asarray(a) for a in measured[32])
    k64, se64 = (np.asarray(a) for a in measured[64])
    p32, p64 = float(kurtosis_recursion(depth=5, width=32)[-1]), float(kurtosis_recursion(depth=9, width=64)[-1])
    assert (round(p32, 2), round(p64, 2)) == (2.36, 2.48)
    assert abs(k32[4] - k64[8]) < Z * np.hypot(se32[4], se64[8])


def test_the_recursion_and_its_limits():
    k = np.asarray(kurtosis_recursion(depth=7, width=11), np.float64)
    # kappa^(1) = 0 and kappa^(l+1) = (1 + 5/n) kappa^(l) + 15/n, step by step.
    expected = [0.0]
    for _ in range(6):
        expected.append((1 + 5 / 11) * expected[-1] + 15 / 11)
    np.testing.assert_allclose(k, expected, rtol=1e-5, atol=1e-6)
    # Leading order 15 (l - 1) / n when l / n is small; zero at infinite width.
    wide = np.asarray(kurtosis_recursion(depth=4, width=100_000))
    np.testing.assert_allclose(wide, 15 * np.arange(4) / 100_000, rtol=1e-3, atol=1e-7)
    assert float(kurtosis_recursion(depth=1, width=3)[0]) == 0.0


def test_the_kurtosis_does_not_depend_on_C_W(measured):
    # The fixture's draws (key 0, width 32) at C_W = 1.3 instead of 2: z scales by sqrt(C_W / 2) per
    # layer, so the kurtosis is unchanged (and the compiled sampler is reused: C_W is traced).
    moments = preactivation_moments(jax.random.key(0), jnp.ones(4), depth=10, width=32, samples=2000, C_W=1.3)
    np.testing.assert_allclose(excess_kurtosis(moments)[0], measured[32][0], rtol=1e-3, atol=1e-4)


def test_excess_kurtosis_by_hand():
    # Two networks with (mean z^2, mean z^4) = (1, 3) and (1, 5): E z^4 / (E z^2)^2 - 3 = 1.
    moments = jnp.array([[[1.0, 3.0]], [[1.0, 5.0]]])
    kurtosis, se = excess_kurtosis(moments)
    assert float(kurtosis[0]) == pytest.approx(1.0)
    assert float(se[0]) == pytest.approx(1.0, rel=1e-5)  # sd of (3, 5) = sqrt(2), over sqrt(2)


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match=r"moments must have shape \(S, L, 2\) with S >= 2"):
        excess_kurtosis(jnp.ones((5, 3, 3)))
    with pytest.raises(TypeError, match=r"width must be an int"):
        kurtosis_recursion(depth=3, width=2.5)
    with pytest.raises(ValueError, match=r"x must have 1 axes"):
        preactivation_moments(jax.random.key(0), jnp.ones((2, 3)), depth=2, width=3, samples=2)
    with pytest.raises(ValueError, match=r"C_W must be positive"):
        preactivation_moments(jax.random.key(0), jnp.ones(3), depth=2, width=3, samples=2, C_W=-1.0)
