import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.foundations.mlp import apply, fit, init, loss


# Data and most parameters come from numpy: every new shape drawn with jax.random costs a compilation.
def _normal(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _params(sizes, seed=0):
    return [{"W": _normal(n_in, n_out, seed=seed + l) / np.sqrt(n_in), "b": _normal(n_out, seed=seed + l + 50)}
            for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]))]


@pytest.mark.parametrize("sizes", [(3, 5), (3, 5, 7), (1, 32, 32, 1), (32, 32, 32, 1)])
def test_shapes_for_several_sizes(sizes):
    params = init(jax.random.key(0), sizes)
    assert len(params) == len(sizes) - 1
    for layer, n_in, n_out in zip(params, sizes[:-1], sizes[1:]):
        assert layer["W"].shape == (n_in, n_out) and layer["b"].shape == (n_out,)
        assert np.all(np.asarray(layer["b"]) == 0)
    assert apply(params, np.ones(sizes[0], np.float32)).shape == (sizes[-1],)


def test_initial_weight_scale_is_he_for_relu_and_lecun_for_tanh():
    sizes = (32, 32, 32, 1)  # the shapes of the other tests: no new compilations
    relu, tanh = (init(jax.random.key(1), sizes, activation=a) for a in ("relu", "tanh"))
    for layer in (0, 1):  # 1024 weights a layer: the sample variance is within 4.4% (one sigma)
        np.testing.assert_allclose(np.var(np.asarray(relu[layer]["W"])), 2.0 / 32, rtol=0.1)
        np.testing.assert_allclose(np.var(np.asarray(tanh[layer]["W"])), 1.0 / 32, rtol=0.1)
        np.testing.assert_allclose(relu[layer]["W"], np.sqrt(2.0) * np.asarray(tanh[layer]["W"]), rtol=1e-6)
    np.testing.assert_array_equal(relu[2]["W"], tanh[2]["W"])  # the linear output layer: gain 1 for both


class _FlaxMLP(nn.Module):
    sizes: tuple
    activation: str

    @nn.compact
    def __call__(self, x):
        phi = {"relu": nn.relu, "tanh": nn.tanh}[self.activation]
        for n in self.sizes[1:-1]:
            x = phi(nn.Dense(n)(x))
        return nn.Dense(self.sizes[-1])(x)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_matches_flax_dense_stack_with_copied_parameters(activation):
    sizes = (5, 7, 11, 3)
    params = _params(sizes, seed=2)
    flax_params = {"params": {f"Dense_{i}": {"kernel": p["W"], "bias": p["b"]} for i, p in enumerate(params)}}
    X = _normal(13, 5, seed=3)
    both = jax.jit(lambda params, flax_params, X: (  # one program, not one per flax operation
        jax.vmap(apply, in_axes=(None, 0, None))(params, X, activation),
        _FlaxMLP(sizes, activation).apply(flax_params, X)))
    ours, ref = both(params, flax_params, X)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_matches_numpy_forward_pass():
    params = _params((3, 5, 7), seed=4)
    x = np.array([0.3, -1.2, 2.0], np.float64)
    W0, b0, W1, b1 = (np.asarray(params[i][k], np.float64) for i in (0, 1) for k in ("W", "b"))
    expected = np.maximum(x @ W0 + b0, 0.0) @ W1 + b1
    np.testing.assert_allclose(apply(params, x.astype(np.float32)), expected, rtol=1e-5, atol=1e-6)


def test_jit_and_vmap_agree():
    params = _params((7, 11, 3), seed=5)
    X = _normal(5, 7, seed=6)
    batched = np.asarray(jax.vmap(apply, in_axes=(None, 0, None))(params, X, "tanh"))
    jitted = jax.jit(apply, static_argnames="activation")
    for i in range(5):
        np.testing.assert_allclose(batched[i], apply(params, X[i], "tanh"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jitted(params, X[2], activation="tanh"), batched[2], rtol=1e-5, atol=1e-6)


def test_without_a_nonlinearity_the_network_would_be_linear():
    # A ReLU network is piecewise linear but not linear: f(a + b) != f(a) + f(b) - f(0) in general.
    params = [{"W": p["W"], "b": np.zeros_like(p["b"])} for p in _params((2, 16, 1), seed=7)]
    f = lambda v: np.asarray(apply(params, v, activation="relu"))  # one compiled program for every input
    a, b = np.array([1.0, -2.0], np.float32), np.array([-0.5, 3.0], np.float32)
    assert abs(float((f(a + b) - f(a) - f(b) + f(np.zeros(2, np.float32)))[0])) > 1e-3
    # and positively homogeneous when biases are zero: f(3 v) = 3 f(v)
    np.testing.assert_allclose(f(3.0 * a), 3.0 * f(a), rtol=1e-5)


@pytest.fixture(scope="module")
def sine():
    x = jnp.linspace(-3.0, 3.0, 64)[:, None]
    return x, jnp.sin(x)


@pytest.mark.parametrize("activation, learning_rate, target", [("tanh", 0.03, 1e-3), ("relu", 0.02, 1e-3)])
def test_fit_sine_reaches_stated_mse(sine, activation, learning_rate, target):
    x, y = sine
    params = init(jax.random.key(0), (1, 32, 32, 1), activation=activation)
    trained, losses = fit(params, x, y, learning_rate=learning_rate, steps=1000, activation=activation)
    assert losses.shape == (1000,)
    assert float(np.asarray(losses)[0]) > 1.0
    # measured: tanh 3.9e-4, relu 3.4e-4 after 1000 steps
    assert float(loss(trained, x, y, activation=activation)) < target
    # 64 points between -2.9 and 2.9, none of them a training point: the training data's shape, so the
    # loss is the program just compiled for it
    x_test = np.linspace(-2.9, 2.9, 64, dtype=np.float32)[:, None]
    assert not np.isin(x_test, np.asarray(x)).any()
    assert float(loss(trained, x_test, np.sin(x_test), activation=activation)) < 2 * target


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda p: apply(p, _ones(4)), r"x must have shape \(3,\) \(to match params\[0\]\['W'\]\), got shape \(4,\)"),
        (lambda p: apply(p, _ones(2, 3)), r"x must have shape \(3,\).*got shape \(2, 3\)"),
        (lambda p: apply(p, _ones(3), activation="sigmoid"), r"activation must be one of \['relu', 'tanh'\]"),
        (lambda p: loss(p, _ones(4, 3), _ones(5, 7)), r"Y must have shape \(4, 7\)"),
        (lambda p: loss(p, _ones(4, 2), _ones(4, 7)), r"X must have shape \(4, 3\)"),
        (lambda p: apply([p[0], p[0]], _ones(3)), r"params\[1\]\['W'\] must have shape \(5, 5\) \(to chain\)"),
        (lambda p: init(jax.random.key(0), (3,)), r"sizes must be at least \(in, out\)"),
        (lambda p: init(jax.random.key(0), (3, 0, 2)), r"sizes\[1\] must be at least 1, got 0"),
    ],
)
def test_bad_inputs_raise_value_error(call, match):
    params = _params((3, 5, 7), seed=8)
    with pytest.raises(ValueError, match=match):
        call(params)


@pytest.mark.parametrize("call, name", [
    (lambda p: apply(p, np.arange(3, dtype=np.int32)), "x"),
    (lambda p: loss(p, _ones(4, 3), np.ones((4, 7), np.int32)), "Y"),
    (lambda p: fit([dict(p[0], W=np.ones((3, 5), np.int32)), p[1]], _ones(4, 3), _ones(4, 7),
                   learning_rate=0.1, steps=2), r"params\[0\]\['W'\]"),
    (lambda p: init(jax.random.key(0), (3, 2.5, 2)), r"sizes\[1\]"),
])
def test_wrong_types_raise_type_errors(call, name):
    with pytest.raises(TypeError, match=rf"{name} must be"):
        call(_params((3, 5, 7), seed=8))


def _ones(*shape):  # in NumPy: a jnp.ones would compile a program for each shape
    return np.ones(shape, np.float32)


def test_fit_takes_a_momentum_traced_by_an_outer_jit():
    # A number momentum is a constant of fit's compiled core; a traced one goes to a second core that
    # takes it as an argument (traced here, not compiled: its values are those of the same loop).
    params = _params((3, 5, 7), seed=8)
    run = lambda momentum: fit(params, _ones(4, 3), _ones(4, 7), learning_rate=0.1, steps=2, momentum=momentum)
    traced = jax.eval_shape(run, 0.5)
    assert jax.tree.map(lambda a: a.shape, traced) == jax.tree.map(np.shape, (params, np.zeros(2)))
    with pytest.raises(TypeError, match="momentum must be a real number"):
        run("heavy")
