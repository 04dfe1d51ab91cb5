import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.foundations.mlp import apply as mlp_apply
from cookbook.uncertainty._data import gap_data
from cookbook.uncertainty.mc_dropout import apply, fit, init, predict

RATE, NOISE = 0.2, 0.01
passes = jax.jit(lambda params, x, key, rate, n: jax.vmap(lambda k: apply(params, x, k, rate=rate))(
    jax.random.split(key, n)), static_argnames=("rate", "n"))  # n passes with the keys of jax.random.split(key, n)
predict_many = jax.jit(lambda params, xs, key: jax.vmap(
    lambda x, k: predict(params, x, k, rate=RATE, num_samples=200, noise=NOISE))(xs, jax.random.split(key, len(xs))))


@pytest.fixture(scope="module")
def trained():
    x, y = gap_data()
    params, losses = fit(init(jax.random.key(2), (1, 64, 64, 1)), x, y, jax.random.key(3), rate=RATE, steps=600,
                         learning_rate=0.01)
    return x, y, params, losses


def _layers(sizes, seed):
    """Layers in init's shapes and scales (He, then 1 / fan-in for the output), biases zero, drawn in
    NumPy: init's eager sampler would compile for each shape."""
    rng = np.random.default_rng(seed)
    gains = [2.0] * (len(sizes) - 2) + [1.0]
    return [{"W": (rng.standard_normal((a, b)) * np.sqrt(g / a)).astype(np.float32), "b": np.zeros(b, np.float32)}
            for a, b, g in zip(sizes[:-1], sizes[1:], gains)]


# ---- The passes ----------------------------------------------------------------------------------

def test_without_a_key_it_is_the_plain_network():
    params = _layers((3, 11, 1), seed=0)
    x = np.float32([0.3, -1.0, 2.0])
    np.testing.assert_allclose(jax.jit(apply, static_argnames="rate")(params, x, None, rate=0.5),
                               jax.jit(mlp_apply)(params, x), rtol=1e-6)


def test_with_one_hidden_layer_the_mean_over_masks_is_the_plain_network():
    # The output is linear in the mask, and the inverted scaling makes each kept unit count 1 on average.
    params = _layers((3, 11, 1), seed=1)
    params = jax.tree.map(lambda p: np.asarray(p) + np.float32(0.2), params)
    x = np.float32([0.3, -1.0, 2.0])
    samples = np.asarray(passes(params, x, jax.random.key(2), 0.5, 4000))[:, 0]
    plain = float(np.asarray(jax.jit(mlp_apply)(params, x))[0])
    assert abs(float(samples.mean()) - plain) < 4 * float(samples.std()) / np.sqrt(4000)
    assert float(samples.std()) > 0.05 * abs(plain)  # the passes do differ


def test_predict_is_the_mean_and_variance_of_the_passes_plus_noise():
    # The page's network shape, rate and number of passes: predict runs the page's compiled program.
    params = _layers((1, 16, 16, 1), seed=3)
    x = np.float32([0.3])
    key = jax.random.key(4)
    mean, variance = predict(params, x, key, rate=0.1, num_samples=100, noise=0.3)
    samples = np.asarray(passes(params, x, key, 0.1, 100), np.float64)[:, 0]
    assert samples.std() > 0.01  # the passes differ
    np.testing.assert_allclose(mean, samples.mean(), rtol=1e-5)
    np.testing.assert_allclose(variance, samples.var() + 0.3, rtol=1e-5)
    _, variance = predict(params, x, key, rate=0.0, num_samples=100, noise=0.3)
    np.testing.assert_allclose(variance, 0.3, rtol=1e-5)  # no dropout: every pass is the same


# ---- It learns: sure on the data, unsure in the gap --------------------------------------------------

def test_predictive_variance_is_at_least_three_times_larger_in_the_gap(trained):
    x, y, params, losses = trained
    losses = np.asarray(losses)
    assert losses[-1] < 0.2 * losses[0]
    gap = np.linspace(-0.5, 0.5, 11, dtype=np.float32)[:, None]
    mean, var = map(np.asarray, predict_many(params, np.concatenate([x, gap]), jax.random.key(5)))  # one compile for both
    mean_on, var_on, var_gap = mean[: len(x)], var[: len(x)], var[len(x):]
    assert float(np.sqrt(np.mean((mean_on - np.asarray(y)) ** 2))) < 0.15  # fits the data (noise 0.1)
    ratio = float(var_gap.mean() / var_on.mean())
    assert ratio > 3, ratio  # measured: 5


# ---- Bad input ------------------------------------------------------------------------------------

def numpy_layers(*sizes):  # an MLP's layers drawn in NumPy: no sampler to compile
    rng = np.random.default_rng(7)
    return [{"W": rng.standard_normal((a, b)).astype(np.float32), "b": np.zeros(b, np.float32)}
            for a, b in zip(sizes[:-1], sizes[1:])]


def test_clear_errors_on_bad_input():
    params = numpy_layers(2, 5, 1)
    key = jax.random.key(8)
    with pytest.raises(ValueError, match="rate"):
        apply(params, np.ones(2, np.float32), key, rate=1.0)
    with pytest.raises(ValueError, match="x"):
        apply(params, np.ones(3, np.float32), key, rate=0.1)
    with pytest.raises(TypeError, match="num_samples"):
        predict(params, np.ones(2, np.float32), key, rate=0.1, num_samples=2.5, noise=0.1)
    with pytest.raises(ValueError, match="num_samples"):
        predict(params, np.ones(2, np.float32), key, rate=0.1, num_samples=1, noise=0.1)
    with pytest.raises(ValueError, match="params"):
        predict(numpy_layers(2, 5, 3), np.ones(2, np.float32), key, rate=0.1, num_samples=3, noise=0.1)
    with pytest.raises(ValueError, match="y"):
        fit(params, np.ones((4, 2), np.float32), np.ones(5, np.float32), key, rate=0.1, steps=2)
    with pytest.raises(ValueError, match="params"):
        apply([{"W": np.ones((2, 5), np.float32), "b": np.ones(5, np.float32)},
               {"W": np.ones((4, 1), np.float32), "b": np.ones(1, np.float32)}], np.ones(2, np.float32), key, rate=0.1)


def test_the_step_size_and_weight_decay_are_numbers_the_loop_is_compiled_for():
    # fit's core is compiled for each learning rate and weight decay: a 0-d array gives the same run
    # as the Python number, and a traced value is refused by name rather than by JAX's hashing error.
    # The page's run (its shapes, its defaults), so that the Python numbers reuse its program.
    X = np.linspace(-1, 1, 11, dtype=np.float32)[:, None]
    params = init(jax.random.key(0), (1, 16, 16, 1))
    runs = [fit(params, X, 2 * X[:, 0], jax.random.key(3), rate=0.1, steps=300, learning_rate=lr, weight_decay=wd)
            for lr, wd in ((0.005, 1e-4), (jnp.array(0.005), np.float32(1e-4)))]
    for a, b in zip(*(jax.tree.leaves(run) for run in runs)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="learning_rate must be a concrete number"):
        jax.jit(lambda lr: fit(params, X, X[:, 0], jax.random.key(1), rate=0.1, steps=3, learning_rate=lr))(0.01)
