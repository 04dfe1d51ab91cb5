import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from cookbook.theory.ntk import apply, empirical_ntk, init, lazy_prediction, ntk_kernel, train

#: Monte Carlo tolerance: a measured mean lies within Z standard errors of the prediction.
Z = 4.0


def _tanh_net(params, x):
    """A network of another shape than the page's (a dict, a scalar leaf, tanh) for the reference test."""
    h = jnp.tanh(x @ params["W1"] + params["b1"][None, :])
    return h @ params["w2"] + params["c"]


def test_empirical_ntk_matches_the_kernel_derived_by_hand():
    # f(x) = tanh(x W1 + b1) . w2 + c, with h = tanh(x W1 + b1) and g = w2 * (1 - h^2):
    # df/dw2 = h, df/dc = 1, df/db1 = g, df/dW1 = x outer g, so
    # Theta(x, y) = h(x).h(y) + 1 + g(x).g(y) (1 + x.y), here in NumPy float64.
    rng = np.random.default_rng(0)  # NumPy data: no random-number kernel to compile
    params = {"W1": rng.normal(size=(7, 11)), "b1": rng.normal(size=11), "w2": rng.normal(size=11), "c": 0.3}
    params = {k: np.asarray(v, np.float32) for k, v in params.items()}  # cast in NumPy: no conversion to compile
    x1, x2 = rng.normal(size=(3, 7)).astype(np.float32), rng.normal(size=(5, 7)).astype(np.float32)
    P = {k: np.asarray(v, np.float64) for k, v in params.items()}

    def h_g(x):
        h = np.tanh(np.asarray(x, np.float64) @ P["W1"] + P["b1"])
        return h, P["w2"] * (1 - h**2)

    (h1, g1), (h2, g2) = h_g(x1), h_g(x2)
    expected = h1 @ h2.T + 1 + (g1 @ g2.T) * (1 + np.asarray(x1, np.float64) @ np.asarray(x2, np.float64).T)
    got = empirical_ntk(_tanh_net, params, x1, x2)
    assert got.shape == (3, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_a_linear_model_has_the_kernel_x1_x2_plus_one():
    params = {"w": np.array([0.5, -1.0, 2.0], np.float32), "c": np.float32(3.0)}
    x1, x2 = np.arange(6.0, dtype=np.float32).reshape(2, 3), np.arange(15.0, dtype=np.float32).reshape(5, 3) / 7
    got = empirical_ntk(lambda p, x: x @ p["w"] + p["c"], params, x1, x2)
    np.testing.assert_allclose(got, x1 @ x2.T + 1.0, rtol=1e-6)


def _ntk_reference(x1, x2, depth, sigma_w2, sigma_b2):
    """The recursion pair by pair in NumPy float64."""
    x1, x2 = np.asarray(x1, np.float64), np.asarray(x2, np.float64)
    D = x1.shape[1]
    out = np.zeros((len(x1), len(x2)))
    for i, x in enumerate(x1):
        for j, y in enumerate(x2):
            a, b, c = (sigma_b2 + sigma_w2 * p @ q / D for p, q in ((x, x), (x, y), (y, y)))
            theta = b
            for _ in range(depth):
                angle = math.acos(max(-1.0, min(1.0, b / math.sqrt(a * c))))
                e = math.sqrt(a * c) / (2 * math.pi) * (math.sin(angle) + (math.pi - angle) * math.cos(angle))
                b = sigma_b2 + sigma_w2 * e
                theta = b + sigma_w2 * (math.pi - angle) / (2 * math.pi) * theta
                a, c = sigma_b2 + sigma_w2 * a / 2, sigma_b2 + sigma_w2 * c / 2
            out[i, j] = theta
    return out


def test_ntk_kernel_matches_a_pairwise_recursion_in_float64():
    rng = np.random.default_rng(1)
    x1, x2 = rng.normal(size=(3, 7)).astype(np.float32), rng.normal(size=(5, 7)).astype(np.float32)
    for depth, sigma_w2, sigma_b2 in ((0, 1.3, 0.1), (1, 2.0, 0.0), (3, 1.7, 0.3)):
        np.testing.assert_allclose(ntk_kernel(x1, x2, depth=depth, sigma_w2=sigma_w2, sigma_b2=sigma_b2),
                                   _ntk_reference(x1, x2, depth, sigma_w2, sigma_b2), rtol=2e-5, atol=1e-6)


def test_the_mean_kernel_of_random_networks_is_the_analytic_kernel():
    # 40 networks of width 256 and two hidden layers, with biases; the empirical kernel fluctuates by
    # O(1/sqrt(n)) around a mean whose bias is O(1/n), below the standard error of 40 samples.
    x = np.random.default_rng(2).normal(size=(5, 3)).astype(np.float32)
    S, sigma_w2, sigma_b2 = 40, 1.8, 0.2

    @jax.jit
    def kernels(keys):
        one = lambda k: empirical_ntk(lambda p, v: apply(p, v, sigma_w2, sigma_b2), init(k, (3, 256, 256, 1)), x, x)
        return jax.vmap(one)(keys)  # (S, N, N)

    thetas = np.asarray(kernels(jax.random.split(jax.random.key(3), S)))  # checked in NumPy
    mean, se = thetas.mean(0), thetas.std(0) / math.sqrt(S)
    expected = ntk_kernel(x, x, depth=2, sigma_w2=sigma_w2, sigma_b2=sigma_b2)
    assert np.all(np.abs(mean - expected) < Z * se), np.abs(mean - expected) / se
    # Each kernel is symmetric and positive semi-definite.
    np.testing.assert_allclose(thetas, np.swapaxes(thetas, 1, 2), rtol=1e-5, atol=1e-5)
    assert float(np.linalg.eigvalsh(thetas).min()) > -1e-4


# ---- Lazy training ---------------------------------------------------------------------------------

LR, STEPS = 0.2, 300


@jax.jit  # one program instead of a dozen eager ones; the same values, bit for bit
def _circle_data():
    """Six training points on the circle, their targets sin(2 gamma), and 24 test points between them."""
    gamma = jnp.linspace(0.0, 2 * math.pi, 7)[:-1] + 0.3
    grid = jnp.linspace(0.0, 2 * math.pi, 25)[:-1] + 0.1
    x, x_test = (jnp.stack([jnp.cos(angle), jnp.sin(angle)], 1) for angle in (gamma, grid))
    return x, jnp.sin(2 * gamma), x_test


@jax.jit
def _lazy_run(params, x, y, x_test):
    """The trained network against the kernel prediction on the test points, the relative change of
    the weights and of the kernel over the run, and the final loss."""
    trained, losses = train(params, x, y, learning_rate=LR, steps=STEPS)
    theta0, theta_t = empirical_ntk(apply, params, x, x), empirical_ntk(apply, trained, x, x)
    lazy = lazy_prediction(empirical_ntk(apply, params, x_test, x), theta0, apply(params, x_test),
                           apply(params, x), y, learning_rate=LR, steps=STEPS)
    moved = ravel_pytree(trained)[0] - ravel_pytree(params)[0]
    return {"gap": jnp.max(jnp.abs(apply(trained, x_test) - lazy)),
            "weights": jnp.linalg.norm(moved) / jnp.linalg.norm(ravel_pytree(params)[0]),
            "kernel": jnp.linalg.norm(theta_t - theta0) / jnp.linalg.norm(theta0),
            "loss": losses[-1]}


@pytest.fixture(scope="module")
def lazy_runs():
    """Widths 32 and 2048, one hidden layer, six points on the circle, 24 test points between them."""
    x, y, x_test = _circle_data()
    return {n: {k: float(v) for k, v in _lazy_run(init(jax.random.key(n), (2, n, 1)), x, y, x_test).items()}
            for n in (32, 2048)}


def test_a_wide_network_trains_like_its_kernel_and_a_narrow_one_does_not(lazy_runs):
    wide, narrow = lazy_runs[2048], lazy_runs[32]
    # The targets sin(2 gamma) have scale 1: within 3 % at width 2048 (measured 0.022); the narrow net
    # strays more than five times as far (measured 0.36).
    assert wide["gap"] < 0.03
    assert narrow["gap"] > 5 * wide["gap"]
    assert wide["loss"] < 1e-3  # and it fits the training data


def test_weights_and_kernel_move_less_as_the_width_grows(lazy_runs):
    # Lazy training: relative weight change O(1/sqrt(n)); sqrt(2048 / 32) = 8 (measured 10.7).
    ratio = lazy_runs[32]["weights"] / lazy_runs[2048]["weights"]
    assert 4 < ratio < 16
    # The kernel moves by 0.7 % at width 2048 and by 19 % at width 32.
    assert lazy_runs[2048]["kernel"] < 0.02 and lazy_runs[32]["kernel"] > 10 * lazy_runs[2048]["kernel"]


def test_lazy_prediction_edge_cases():
    x = np.random.default_rng(4).normal(size=(5, 3)).astype(np.float32)
    theta = np.asarray(ntk_kernel(x, x, depth=1))
    f0, y = np.linspace(-1, 1, 5, dtype=np.float32), np.array([1.0, 0.0, -1.0, 2.0, 0.5], np.float32)
    # No steps: the initial outputs. Many steps: the training targets, exactly (kernel regression).
    np.testing.assert_allclose(lazy_prediction(theta, theta, f0, f0, y, learning_rate=0.1, steps=0), f0)
    np.testing.assert_allclose(lazy_prediction(theta, theta, f0, f0, y, learning_rate=0.1, steps=20000), y, atol=1e-4)
    # Against the recursion f_{t+1} = f_t - eta Theta (f_t - y), run step by step (in NumPy float64).
    f = np.float64(f0)
    for _ in range(7):
        f = f - 0.1 * np.float64(theta) @ (f - y)
    np.testing.assert_allclose(lazy_prediction(theta, theta, f0, f0, y, learning_rate=0.1, steps=7), f, rtol=1e-5, atol=1e-5)
    # A singular kernel (a repeated training input) stays finite: the null direction moves by eta t.
    twice = x[[0, 0, 1, 2, 3]]
    singular = ntk_kernel(twice, twice, depth=1)
    out = np.asarray(lazy_prediction(singular, singular, f0, f0, np.array([1.0, 1.0, 0.0, 2.0, 0.5], np.float32),
                                     learning_rate=0.1, steps=50))
    assert np.all(np.isfinite(out)) and float(out[0] - f0[0]) == pytest.approx(float(out[1] - f0[1]), abs=1e-4)


def test_bad_input_raises_clear_errors():
    x = np.ones((3, 2), np.float32)
    # init's shapes, drawn with NumPy (a sampler per shape would compile); init itself is checked below.
    rng = np.random.default_rng(5)
    params = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32),
                          jax.eval_shape(lambda: init(jax.random.key(5), (2, 5, 1))))
    with pytest.raises(ValueError, match=r"apply_fn must map x1 of shape \(3, 2\) to outputs of shape \(3,\)"):
        empirical_ntk(lambda p, v: apply(p, v)[:, None], params, x, x)
    with pytest.raises(TypeError, match=r"apply_fn must be a function"):
        empirical_ntk("apply", params, x, x)
    with pytest.raises(ValueError, match=r"x1 and x2 must have the same number of features D"):
        empirical_ntk(apply, params, x, np.ones((3, 4), np.float32))
    with pytest.raises(TypeError, match=r"params\[0\]\['W'\] must be a floating-point array"):
        empirical_ntk(apply, [{"W": np.ones((2, 5), np.int32), "b": np.ones(5, np.float32)}] + params[1:], x, x)
    with pytest.raises(ValueError, match=r"sizes must end with 1"):
        init(jax.random.key(0), (2, 5, 3))
    with pytest.raises(TypeError, match=r"sizes\[1\] must be an int"):
        init(jax.random.key(0), (2, 5.0, 1))
    with pytest.raises(ValueError, match=r"x must have shape \(3, 2\)"):
        apply(params, np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"y must have shape \(3,\)"):
        train(params, x, np.ones(4, np.float32), learning_rate=0.1, steps=2)
    with pytest.raises(ValueError, match=r"theta_test must have shape \(2, 3\)"):
        lazy_prediction(np.ones((2, 4), np.float32), np.eye(3, dtype=np.float32), np.ones(2, np.float32),
                        np.ones(3, np.float32), np.ones(3, np.float32), learning_rate=0.1, steps=2)
    with pytest.raises(TypeError, match=r"depth must be an int"):
        ntk_kernel(x, x, depth=1.5)
