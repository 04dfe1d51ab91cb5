import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.normalization.batch_norm import BatchNormState, batch_norm, init

def _normal(seed, shape):
    """Standard normal test data from numpy: cheaper than compiling a JAX sampler for every shape."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# Tolerances against a float32 reference, by input dtype: both sides compute in float32 and round
# the output once, so they may differ by about one unit in the last place of the output dtype.
TOL = {jnp.float32: 1e-5, jnp.float16: 2e-3, jnp.bfloat16: 2e-2}


def _random_layer(seed, shape, dtype):
    C = shape[-1]
    x = jnp.asarray((3.0 + 2.0 * _normal(seed, shape)).astype(dtype))  # built in NumPy: no eager programs
    s, b, m, v = _normal(seed + 100, (4, C))
    params = {"scale": jnp.asarray(1.0 + 0.3 * s), "bias": jnp.asarray(0.5 * b)}
    state = BatchNormState(mean=jnp.asarray(m), var=jnp.asarray(np.exp(v)))
    return params, state, x


_bn = jax.jit(batch_norm, static_argnames="training")


def _flax(params, state, x, *, training, momentum, eps):
    layer = nn.BatchNorm(use_running_average=not training, momentum=momentum, epsilon=eps,
                         use_fast_variance=False, dtype=x.dtype)
    variables = {"params": params, "batch_stats": {"mean": state.mean, "var": state.var}}
    with jax.numpy_rank_promotion("allow"):
        y, updates = layer.apply(variables, x, mutable=["batch_stats"])
    return y, updates["batch_stats"]


@pytest.mark.parametrize(
    "shape, dtype", [((11, 5), jnp.float32), ((3, 5, 7, 4), jnp.bfloat16), ((2, 3, 7), jnp.float16)]
)
def test_matches_flax_batchnorm(shape, dtype):
    params, state, x = _random_layer(len(shape), shape, dtype)
    for training in (True, False):
        kw = dict(training=training, momentum=0.8, eps=1e-3)
        y, new_state = _bn(params, state, x, **kw)
        y_ref, stats_ref = jax.jit(_flax, static_argnames="training")(params, state, x, **kw)
        assert y.dtype == x.dtype == y_ref.dtype
        tol = TOL[dtype]
        np.testing.assert_allclose(np.float32(y), np.float32(y_ref), rtol=tol, atol=tol)
        # Running statistics: same update as flax, i.e. the *biased* batch variance, in float32.
        assert new_state.mean.dtype == new_state.var.dtype == jnp.float32
        np.testing.assert_allclose(new_state.mean, stats_ref["mean"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(new_state.var, stats_ref["var"], rtol=1e-5, atol=1e-6)


def test_gradients_match_flax():
    params, state, x = _random_layer(7, (7, 5), jnp.float32)
    w = _normal(8, (7, 5))

    def ours(p, x):
        return jnp.sum(w * batch_norm(p, state, x, training=True)[0])

    def theirs(p, x):
        return jnp.sum(w * _flax(p, state, x, training=True, momentum=0.9, eps=1e-5)[0])

    for g, g_ref in zip(jax.tree.leaves(jax.jit(jax.grad(ours, (0, 1)))(params, x)),
                        jax.tree.leaves(jax.jit(jax.grad(theirs, (0, 1)))(params, x))):
        np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-5)


def test_tiny_case_by_hand_uses_the_biased_variance():
    params, state = init(1)
    x = jnp.array([[1.0], [3.0]])  # mean 2, biased variance 1 (the unbiased estimate would be 2)
    y, new_state = batch_norm(params, state, x, training=True, momentum=0.0, eps=0.0)
    np.testing.assert_allclose(y, [[-1.0], [1.0]], atol=1e-6)
    np.testing.assert_allclose(new_state.mean, [2.0], atol=1e-6)
    np.testing.assert_allclose(new_state.var, [1.0], atol=1e-6)


def test_running_averages_follow_the_momentum_rule():
    params, state, x = _random_layer(1, (13, 3), jnp.float32)
    _, new = batch_norm(params, state, x, training=True, momentum=0.7)
    mean, var = np.asarray(x).mean(0), np.asarray(x).var(0)
    old_mean, old_var = np.asarray(state.mean), np.asarray(state.var)
    np.testing.assert_allclose(new.mean, 0.7 * old_mean + 0.3 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new.var, 0.7 * old_var + 0.3 * var, rtol=1e-5, atol=1e-6)


def test_training_output_has_the_stated_mean_and_variance():
    x = jnp.asarray(np.array([[-50.0, 0.0, 50.0]]) + np.array([[0.1, 1.0, 10.0]]) * np.asarray(_normal(2, (13, 3))))
    params, state = init(3)
    y, _ = _bn(params, state, x, training=True, eps=0.0)
    y = np.asarray(y)
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.var(0), 1.0, rtol=1e-4)
    params = {"scale": np.array([2.0, -0.5, 3.0], np.float32), "bias": np.array([1.0, 2.0, -3.0], np.float32)}
    y, _ = _bn(params, state, x, training=True, eps=0.0)
    y = np.asarray(y)
    np.testing.assert_allclose(y.mean(0), params["bias"], atol=1e-4)  # float32 at |x| = 50
    np.testing.assert_allclose(y.std(0), np.abs(params["scale"]), rtol=1e-4)


def test_evaluation_is_a_fixed_affine_map_per_feature():
    params, state, x = _random_layer(3, (5, 3, 3, 4), jnp.float32)
    x, x2 = np.asarray(x), np.asarray(_normal(4, x.shape))

    def f(x):
        y, new_state = _bn(params, state, jnp.asarray(x, jnp.float32), training=False)
        np.testing.assert_array_equal(new_state.var, state.var)  # evaluation never updates the state
        return np.asarray(y)

    c = f(np.zeros_like(x))
    a = f(np.ones_like(x)) - c
    np.testing.assert_allclose(a[0, 0, 0], np.asarray(params["scale"]) / np.sqrt(np.asarray(state.var) + 1e-5),
                               rtol=1e-5)
    np.testing.assert_allclose(f(x), a * x + c, rtol=1e-5, atol=1e-5)
    # An affine map preserves affine combinations, and the output of one example ignores the others.
    np.testing.assert_allclose(f(0.3 * x + 0.7 * x2), 0.3 * f(x) + 0.7 * f(x2), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(f(np.concatenate([x[:1], x2[1:]])), np.concatenate([f(x)[:1], f(x2)[1:]]), rtol=1e-6)


def test_training_output_of_one_example_depends_on_the_batch():
    params, state, x = _random_layer(5, (13, 3), jnp.float32)
    x = np.asarray(x)
    x_other = np.concatenate([x[:4], 2.0 * x[4:]])  # the same first four examples, other neighbours
    y, _ = _bn(params, state, x, training=True)
    y_other, _ = _bn(params, state, x_other, training=True)
    assert not np.allclose(np.asarray(y)[:4], np.asarray(y_other)[:4], atol=1e-3)


def test_invariant_to_positive_rescaling_and_shift_per_feature():
    params, state, x = _random_layer(6, (5, 3, 3, 4), jnp.float32)
    a = np.array([0.1, 3.0, 7.0, 11.0])
    b = np.array([-2.0, 0.0, 5.0, 100.0])
    y, _ = _bn(params, state, x, training=True, eps=0.0)
    y_scaled, _ = _bn(params, state, jnp.asarray(a * np.asarray(x) + b, jnp.float32), training=True, eps=0.0)
    np.testing.assert_allclose(y_scaled, y, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(13, 3), (1, 3)])
def test_constant_input_or_a_batch_of_one_gives_the_bias(shape):
    # A constant feature, or a batch of one (constant along the batch axis), has zero variance.
    params, state, x = _random_layer(9, shape, jnp.float32)
    x = np.full(shape, 1e4, np.float32) if shape[0] > 1 else x
    y, new_state = _bn(params, state, x, training=True)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(new_state.var))
    np.testing.assert_allclose(y, np.broadcast_to(params["bias"], shape), atol=1e-6)


def test_bfloat16_statistics_are_accumulated_in_float32():
    # Many values far from zero: the regime where low-precision statistics fail.
    x32 = 100.0 + _normal(10, (4096, 3))
    x = jnp.asarray(x32.astype(jnp.bfloat16))
    params, state = init(3)
    y, _ = _bn(params, state, x, training=True)
    y_ref, _ = _bn(params, state, np.asarray(x).astype(np.float32), training=True)  # same inputs, float32
    y_ref = np.asarray(y_ref)
    err = float(np.max(np.abs(np.asarray(y).astype(np.float32) - y_ref)))
    assert err < 2e-2  # about one bfloat16 rounding of outputs of size up to 4

    # The naive alternative keeps the statistics in bfloat16 with the one-pass formula: x ** 2 is
    # about 1e4, where bfloat16 values are 64 apart, so E[x^2] - E[x]^2 loses the variance (~1).
    @jax.jit  # one program rather than a dozen eager ones
    def naive(x):
        mean = jnp.mean(x, axis=0)
        var = jnp.maximum(jnp.mean(x * x, axis=0) - mean * mean, 0)
        return ((x - mean[None, :]) * jax.lax.rsqrt(var + 1e-5)[None, :]).astype(jnp.float32)

    naive_err = float(np.max(np.abs(np.asarray(naive(x)) - y_ref)))
    assert not np.isfinite(naive_err) or naive_err > 50 * err


def test_init_and_jit():
    params, state = init(5)
    assert params["scale"].shape == params["bias"].shape == state.mean.shape == state.var.shape == (5,)
    x = _normal(11, (7, 5))
    step = jax.jit(batch_norm, static_argnames="training")
    for training in (True, False):
        y, s = batch_norm(params, state, x, training=training)
        y_jit, s_jit = step(params, state, x, training=training)
        np.testing.assert_allclose(y_jit, y, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s_jit.var, s.var, rtol=1e-5)


@pytest.mark.parametrize(
    "params, state, x, match",
    [
        ({"scale": np.ones(4, np.float32), "bias": np.zeros(3, np.float32)}, None, np.ones((5, 3), np.float32),
         r"params\['scale'\] must have shape \(3,\) .* got shape \(4,\)"),
        ({"scale": np.ones(3, np.float32), "bias": np.zeros((1, 3), np.float32)}, None, np.ones((5, 3), np.float32),
         r"params\['bias'\] must have shape \(3,\)"),
        (None, BatchNormState(np.zeros(3, np.float32), np.ones(7, np.float32)), np.ones((5, 3), np.float32),
         r"state.var must have shape \(3,\)"),
        (None, None, np.ones(3, np.float32), r"x must have at least 2 axes \(B, \.\.\., C\) .* got shape \(3,\)"),
    ],
)
def test_bad_shapes_raise_clear_errors(params, state, x, match):
    default_params, default_state = init(3)
    with pytest.raises(ValueError, match=match):
        batch_norm(params or default_params, state or default_state, x, training=True)


def test_bad_arguments_raise_clear_errors():
    params, state = init(3)
    with pytest.raises(ValueError, match=r"momentum must lie in \[0, 1\], got 1.5"):
        batch_norm(params, state, np.ones((2, 3), np.float32), training=True, momentum=1.5)
    with pytest.raises(ValueError, match=r"num_features must be a positive int, got 0"):
        init(0)
    # training picks the program (a static argument of the compiled core): a bool, a NumPy bool or a
    # concrete 0-d boolean array, which all give the same result; anything else is refused by name.
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y, _ = batch_norm(params, state, x, training=True)
    for flag in (np.bool_(True), np.array(True), jnp.array(True)):
        np.testing.assert_array_equal(batch_norm(params, state, x, training=flag)[0], y)
    for flag in (1, "yes", np.array([True])):
        with pytest.raises(TypeError, match=r"training must be a bool, got"):
            batch_norm(params, state, x, training=flag)
    with pytest.raises(TypeError, match=r"training must be a concrete bool"):
        jax.jit(lambda t: batch_norm(params, state, x, training=t))(True)


def test_integer_input_and_negative_eps_raise():
    params, state = init(3)
    with pytest.raises(TypeError, match=r"x must be a floating-point array, got dtype int32"):
        batch_norm(params, state, np.ones((5, 3), np.int32), training=True)
    with pytest.raises(ValueError, match=r"eps must be non-negative"):
        batch_norm(params, state, np.ones((5, 3), np.float32), training=True, eps=-1.0)
    y, _ = batch_norm(params, state, [[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], training=True)  # a list is accepted
    np.testing.assert_allclose(np.asarray(y)[:, 0], [-1.0, 1.0], atol=1e-5)


def test_the_numbers_on_the_page():
    # rho = 0.9 averages "roughly the last 10 batches", 0.99 the last 100: the window 1 / (1 - rho),
    # over which the running mean of a constant climbs from 0 to 1 - rho^(1 / (1 - rho)), about 0.65
    params, state = init(1)
    x = np.ones((4, 1), np.float32)
    for _ in range(10):
        _, state = batch_norm(params, state, x, training=True, momentum=0.9)
    np.testing.assert_allclose(state.mean, 1 - 0.9**10, rtol=1e-5)
    assert round(1 - 0.9**10, 2) == 0.65 and round(1 - 0.99**100, 2) == 0.63
    assert jnp.finfo(jnp.bfloat16).nmant + 1 == 8  # bfloat16 keeps 8 significant bits
