import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from cookbook.foundations.initialization import (
    TRUNCATED_STD,
    glorot_normal,
    glorot_uniform,
    he_normal,
    he_uniform,
    layer_variances,
    variance_scaling,
)

FAN_IN, FAN_OUT = 300, 700  # not square, so swapped fans would show; 210,000 draws per matrix

# (ours, the jax reference, its target variance, its distribution)
SCHEMES = [
    (glorot_uniform, jax.nn.initializers.glorot_uniform(), 2 / (FAN_IN + FAN_OUT), "uniform"),
    (glorot_normal, jax.nn.initializers.glorot_normal(), 2 / (FAN_IN + FAN_OUT), "truncated_normal"),
    (he_uniform, jax.nn.initializers.he_uniform(), 2 / FAN_IN, "uniform"),
    (he_normal, jax.nn.initializers.he_normal(), 2 / FAN_IN, "truncated_normal"),
]
IDS = [s[0].__name__ for s in SCHEMES]


@pytest.mark.parametrize("ours, reference, variance, distribution", SCHEMES, ids=IDS)
def test_variance_and_bounds_match_the_formula_and_jax(ours, reference, variance, distribution):
    k_ours, k_ref = jax.random.split(jax.random.key(0))
    W = np.asarray(ours(k_ours, FAN_IN, FAN_OUT), np.float64)
    R = np.asarray(reference(k_ref, (FAN_IN, FAN_OUT)), np.float64)  # jax, from another key
    same_key = np.asarray(reference(k_ours, (FAN_IN, FAN_OUT)), np.float64)
    np.testing.assert_allclose(W, same_key, rtol=1e-5, atol=1e-7)  # the same draws, to float32 rounding
    assert W.shape == (FAN_IN, FAN_OUT)
    # Standard error of a sample variance over 210,000 draws is below 0.4%: 2% is over 5 errors.
    np.testing.assert_allclose(W.var(), variance, rtol=0.02)
    np.testing.assert_allclose(R.var(), variance, rtol=0.02)
    assert abs(W.mean()) < 0.01 * np.sqrt(variance)
    bound = np.sqrt(3 * variance) if distribution == "uniform" else 2 * np.sqrt(variance) / TRUNCATED_STD
    for sample in (W, R):  # both fill their support right up to the same bound
        assert np.abs(sample).max() <= bound * (1 + 1e-6)
        assert np.abs(sample).max() >= 0.99 * bound
    # Same distribution as jax's: two-sample Kolmogorov-Smirnov distance, about 0.004 expected.
    assert scipy.stats.ks_2samp(W.ravel(), R.ravel()).statistic < 0.01


def test_truncated_normal_constant_and_shape():
    assert TRUNCATED_STD == pytest.approx(scipy.stats.truncnorm(-2, 2).std(), rel=1e-12)
    # scale 2: he_normal's program (the kurtosis does not depend on the scale)
    W = np.asarray(variance_scaling(jax.random.key(2), 300, 700, scale=2.0, mode="fan_in"), np.float64)
    np.testing.assert_allclose(scipy.stats.kurtosis(W.ravel(), fisher=False), 2.37, atol=0.05)  # lighter tails than 3
    plain = np.asarray(
        variance_scaling(jax.random.key(2), 300, 700, scale=1.0, mode="fan_in", distribution="normal"), np.float64
    )
    np.testing.assert_allclose(plain.var(), 1 / 300, rtol=0.02)
    beyond = np.mean(np.abs(plain) > 2 * np.sqrt(1 / 300))
    np.testing.assert_allclose(beyond, 2 * scipy.stats.norm.sf(2), atol=0.003)  # 4.6% beyond 2 std


# At the schemes' shape, with the scales of he_uniform (fan_in) and glorot_uniform (fan_avg): their
# programs serve two of the three modes. 210,000 draws fill the support to within 1e-4 of its bound.
@pytest.mark.parametrize("mode, scale, n", [("fan_in", 2.0, FAN_IN), ("fan_out", 1.0, FAN_OUT),
                                            ("fan_avg", 1.0, (FAN_IN + FAN_OUT) / 2)])
def test_modes_divide_by_the_right_fan(mode, scale, n):
    W = variance_scaling(jax.random.key(3), FAN_IN, FAN_OUT, scale=scale, mode=mode, distribution="uniform")
    bound = np.sqrt(3.0 * scale / n)  # uniform: the support shows the variance exactly
    assert W.shape == (FAN_IN, FAN_OUT)
    largest = np.abs(np.asarray(W)).max()
    assert largest <= bound and largest > 0.9999 * bound


def test_low_precision_dtype():
    W = he_normal(jax.random.key(4), 256, 128, dtype=jnp.bfloat16)
    assert W.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.var(np.asarray(W, np.float32)), 2 / 256, rtol=0.05)


H, B, L = 256, 256, 20


@jax.jit
def _deep_variances(key):
    """Pre-activation variance per layer of a 20-layer width-256 network, for each scheme."""
    k_x, k_w = jax.random.split(key)
    x = jax.random.normal(k_x, (B, H))  # unit-variance inputs
    keys = jax.random.split(k_w, L)  # shared by the schemes on purpose: the same draws at other scales
    stack = lambda init: jax.vmap(lambda k: init(k, H, H))(keys)
    small = lambda k, i, o: variance_scaling(k, i, o, scale=0.25, mode="fan_in", distribution="normal")
    large = lambda k, i, o: variance_scaling(k, i, o, scale=4.0, mode="fan_in", distribution="normal")
    return {
        "he_relu": layer_variances(stack(he_normal), x, "relu"),
        "glorot_tanh": layer_variances(stack(glorot_uniform), x, "tanh"),
        "glorot_linear": layer_variances(stack(glorot_normal), x, "linear"),
        "glorot_relu": layer_variances(stack(glorot_normal), x, "relu"),
        "small_relu": layer_variances(stack(small), x, "relu"),
        "large_relu": layer_variances(stack(large), x, "relu"),
        "small_tanh": layer_variances(stack(small), x, "tanh"),
    }


@pytest.fixture(scope="module")
def deep():
    return {name: np.asarray(v, np.float64) for name, v in _deep_variances(jax.random.key(5)).items()}


def test_right_scheme_keeps_the_variance_through_20_layers(deep):
    for name in ("he_relu", "glorot_linear"):
        v = deep[name]
        assert v.shape == (L,)
        ratio = v / v[0]
        assert np.all((ratio > 1 / 3) & (ratio < 3)), (name, ratio)  # finite width: a slow random walk
    np.testing.assert_allclose(deep["he_relu"][0], 2.0, rtol=0.05)  # first layer: 2 Var[x]


def test_tanh_with_glorot_decays_only_like_one_over_2l(deep):
    v = deep["glorot_tanh"]
    layers = np.arange(1, L + 1)
    np.testing.assert_allclose((2 * layers * v)[9:], 1.0, rtol=0.25)  # q_l ~ 1 / (2 l), a power law
    assert v[-1] > 1e-2


def test_wrong_scale_collapses_or_explodes(deep):
    assert deep["small_relu"][-1] < 1e-15  # (0.25 / 2)^19 of the first layer
    assert deep["small_tanh"][-1] < 1e-10  # 0.25^19
    assert deep["large_relu"][-1] > 1e5  # 2^19
    np.testing.assert_allclose(deep["glorot_relu"][-1] / deep["glorot_relu"][0], 2.0**-19, rtol=2.0)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: glorot_uniform(jax.random.key(0), 0, 3), r"fan_in must be at least 1, got 0"),
        (lambda: variance_scaling(jax.random.key(0), 3, 5, scale=-1.0, mode="fan_in"), r"scale must be positive"),
        (lambda: variance_scaling(jax.random.key(0), 3, 5, scale=1.0, mode="avg"), r"mode must be one of"),
        (
            lambda: variance_scaling(jax.random.key(0), 3, 5, scale=1.0, mode="fan_in", distribution="cauchy"),
            r"distribution must be one of",
        ),
        (lambda: layer_variances(np.ones((2, 3, 5), np.float32), np.ones((4, 3), np.float32)), r"weights must have shape \(L, H, H\)"),
        (lambda: layer_variances(np.ones((2, 3, 3), np.float32), np.ones((4, 5), np.float32)), r"x must have shape \(B, H\) = \(B, 3\)"),
        (lambda: layer_variances(np.ones((2, 3, 3), np.float32), np.ones((4, 3), np.float32), "gelu"), r"activation must be one of"),
    ],
)
def test_bad_input_raises_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: he_normal(jax.random.key(0), 3, 2.5), r"fan_out must be an int of at least 1, got float 2.5"),
        (lambda: layer_variances(np.ones((2, 3, 3), np.int32), np.ones((4, 3), np.float32)), r"weights must be a floating-point"),
        (lambda: layer_variances(np.ones((2, 3, 3), np.float32), np.ones((4, 3), np.int32)), r"x must be a floating-point"),
    ],
)
def test_wrong_types_raise_type_errors(call, match):
    with pytest.raises(TypeError, match=match):
        call()


def test_wrong_scale_per_layer_factors_the_page_states(deep):
    # std 0.5 / sqrt(n) with ReLU: the variance falls by 0.25 / 2 = 1/8 per layer, the standard
    # deviation by sqrt(8) = 2.8 (the old page said the signal shrank by 8); std 2 / sqrt(n): x2.
    per_layer = lambda v: (v[-1] / v[0]) ** (1 / (L - 1))  # geometric mean of the layer-to-layer ratio
    np.testing.assert_allclose(per_layer(deep["small_relu"]), 1 / 8, rtol=0.1)
    np.testing.assert_allclose(per_layer(np.sqrt(deep["small_relu"])), 1 / 2.8, rtol=0.1)
    np.testing.assert_allclose(per_layer(deep["large_relu"]), 2.0, rtol=0.1)
    np.testing.assert_allclose(per_layer(deep["glorot_relu"]), 0.5, rtol=0.1)  # Glorot with ReLU halves it
    assert 0.5 < 8.0**20 / 1e18 < 2 and 0.5 < 2.0**-20 / 1e-6 < 2  # 8^20 ~ 10^18, 2^-20 ~ 10^-6
    assert round(np.sqrt(8), 1) == 2.8


def test_truncation_without_rescaling_loses_23_percent_of_the_variance():
    assert round(TRUNCATED_STD, 4) == 0.8796 and round(TRUNCATED_STD**2, 3) == 0.774
    # the bounds and dtype as jax.nn.initializers passes them: the reference's compiled draw
    raw = np.asarray(jax.random.truncated_normal(jax.random.key(7), -2, 2, (300, 700), jnp.float32), np.float64)
    np.testing.assert_allclose(1 - raw.var(), 0.23, atol=0.01)


def test_the_page_states_the_measured_factor_for_the_variance(deep):
    import re

    import cookbook.foundations.initialization as page

    text = " ".join(page.__doc__.split())
    stated = re.search(r"divide the \*variance\* of a ReLU signal by (\d+) per layer", text)
    assert stated, "the page must say that the variance (not the signal) shrinks by a factor per layer"
    measured = (deep["small_relu"][-1] / deep["small_relu"][0]) ** (-1 / (L - 1))
    np.testing.assert_allclose(measured, int(stated.group(1)), rtol=0.1)


def test_a_traced_scale_runs_and_agrees_with_a_number():
    # A number picks the core compiled for it; a scale traced by an outer jax.jit goes to a core that
    # takes it as an argument, and draws the same weights, in the requested dtype.
    @jax.jit
    def draws(key, scale):
        return (variance_scaling(key, FAN_IN, FAN_OUT, scale=scale, mode="fan_avg", distribution="uniform"),
                variance_scaling(key, FAN_IN, FAN_OUT, scale=scale, mode="fan_in", dtype=jnp.bfloat16))

    key = jax.random.key(6)
    one, low = draws(key, np.float32(1.0))
    np.testing.assert_allclose(one, glorot_uniform(key, FAN_IN, FAN_OUT), rtol=1e-6)  # scale 1, fan_avg, uniform
    two = np.asarray(draws(key, np.float32(2.0))[0])
    np.testing.assert_allclose(two, np.sqrt(2.0) * np.asarray(one), rtol=1e-5)  # the scale is not ignored
    assert low.dtype == jnp.bfloat16
