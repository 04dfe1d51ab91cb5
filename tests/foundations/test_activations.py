import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.foundations import activations as act

# (ours, reference) pairs; leaky ReLU and ELU at the parameters the closed-form derivatives use.
PAIRS = {
    "sigmoid": (act.sigmoid, jax.nn.sigmoid),
    "tanh": (act.tanh, jnp.tanh),
    "relu": (act.relu, jax.nn.relu),
    "leaky_relu": (functools.partial(act.leaky_relu, negative_slope=0.01),
                   functools.partial(jax.nn.leaky_relu, negative_slope=0.01)),
    "elu": (functools.partial(act.elu, alpha=1.0), functools.partial(jax.nn.elu, alpha=1.0)),
    "gelu": (functools.partial(act.gelu, approximate=False), functools.partial(jax.nn.gelu, approximate=False)),
    "gelu_tanh": (functools.partial(act.gelu, approximate=True), functools.partial(jax.nn.gelu, approximate=True)),
    "silu": (act.silu, jax.nn.silu),
    "softplus": (act.softplus, jax.nn.softplus),
}


@pytest.fixture(scope="module")
def x():
    # a wide grid that includes 0 exactly, both kinks, and +-100
    return jnp.concatenate([jnp.linspace(-100.0, 100.0, 2001), jnp.array([-1e-3, 1e-3, -30.0, 30.0])])


def _value_and_derivative(f):
    return lambda x: (f(x), jax.vmap(jax.grad(f))(x))


@jax.jit
def _evaluate_all(x):
    """Every pair's values and derivatives and every closed-form derivative, in one compilation
    (eager evaluation would compile every primitive separately, one jit per function once each)."""
    pairs = {name: (_value_and_derivative(ours)(x), _value_and_derivative(ref)(x)) for name, (ours, ref) in PAIRS.items()}
    return pairs, {name: d(x) for name, d in act.DERIVATIVES.items()}


@pytest.fixture(scope="module")
def evaluated_with_closed_forms(x):
    return _evaluate_all(x)


@pytest.fixture(scope="module")
def evaluated(evaluated_with_closed_forms):
    return evaluated_with_closed_forms[0]


@pytest.mark.parametrize("name", list(PAIRS))
def test_matches_jax_nn_values_and_gradients(name, evaluated):
    (y_ours, g_ours), (y_ref, g_ref) = evaluated[name]
    np.testing.assert_allclose(y_ours, y_ref, rtol=2e-6, atol=2e-6, err_msg=name)
    assert np.all(np.isfinite(g_ours)), name
    # atol 1e-5: for x < -4 the tanh form of GELU computes 1 + tanh(...) near -1 + 1, in both codes
    np.testing.assert_allclose(g_ours, g_ref, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("name", list(act.DERIVATIVES))
def test_gradient_matches_closed_form_derivative(name, evaluated_with_closed_forms):
    evaluated, closed_forms = evaluated_with_closed_forms
    _, g_ours = evaluated[name][0]
    np.testing.assert_allclose(g_ours, closed_forms[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_huge_inputs_are_finite_and_exact():
    # beyond 1e12 the cube in the tanh form of GELU overflows, so +-1e30 only for the others
    x = jnp.array([-1e30, -1e4, -100.0, 100.0, 1e4, 1e30])
    everything = jax.jit(lambda x: {name: _value_and_derivative(ours)(x if name != "gelu_tanh" else x[1:-1])
                                    for name, (ours, _) in PAIRS.items()})  # one compilation
    for name, (y, g) in everything(x).items():
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(g)), name
    np.testing.assert_array_equal(act.sigmoid(x), [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(act.softplus(x), [0, 0, 0, 100.0, 1e4, 1e30], rtol=1e-7, atol=1e-30)
    # the naive forms fail exactly here
    assert not np.isfinite(jnp.log1p(jnp.exp(jnp.float32(100.0))))
    assert np.isnan(jax.grad(lambda v: 1.0 / (1.0 + jnp.exp(-v)))(jnp.float32(-100.0)))


def test_values_by_hand():
    np.testing.assert_allclose(act.sigmoid(jnp.array(0.0)), 0.5)
    np.testing.assert_allclose(act.softplus(jnp.array(0.0)), np.log(2.0), rtol=1e-7)
    np.testing.assert_allclose(act.relu(jnp.array([-2.0, 3.0])), [0.0, 3.0])
    np.testing.assert_allclose(act.leaky_relu(jnp.array([-2.0, 3.0]), negative_slope=0.2), [-0.4, 3.0], rtol=1e-7)
    np.testing.assert_allclose(act.elu(jnp.array([-1.0]), alpha=2.0), [2.0 * (np.exp(-1.0) - 1.0)], rtol=1e-6)
    np.testing.assert_allclose(act.gelu(jnp.array([1.0])), [0.8413447], rtol=1e-6)  # Phi(1)


def test_identities_claimed_on_the_page(x, evaluated):
    small = jnp.linspace(-20.0, 20.0, 401)

    @jax.jit
    def gaps(v):
        a = 3.7  # positive homogeneity of the rectifiers
        return jnp.stack([
            jnp.max(jnp.abs(act.tanh(v) - (2.0 * act.sigmoid(2.0 * v) - 1.0))),
            jnp.max(jnp.abs(act.relu(a * v) - a * act.relu(v))),
            jnp.max(jnp.abs(act.leaky_relu(a * v) - a * act.leaky_relu(v))),
            # the tanh approximation of GELU is close to the exact one
            jnp.max(jnp.abs(act.gelu(v, approximate=True) - act.gelu(v, approximate=False))),
        ])

    np.testing.assert_array_less(gaps(small), [1e-6, 1e-4, 1e-4, 5e-4])
    # the sigmoid's derivative never exceeds 1/4; tanh's never exceeds 1
    assert float(jnp.max(evaluated["sigmoid"][0][1])) == pytest.approx(0.25)
    assert float(jnp.max(evaluated["tanh"][0][1])) == pytest.approx(1.0)


def test_derivatives_at_the_kink():
    names = ("relu", "leaky_relu", "elu", "softplus", "tanh", "sigmoid")
    at_zero = jax.jit(lambda v: {name: jax.grad(getattr(act, name))(v) for name in names})(jnp.array(0.0))
    assert {name: float(g) for name, g in at_zero.items()} == {
        "relu": 0.0, "leaky_relu": 1.0, "elu": 1.0, "softplus": 0.5, "tanh": 1.0, "sigmoid": 0.25}


def test_dead_relu_gets_no_gradient():
    # a unit whose input is negative for every example: no gradient reaches its weights
    X = jnp.asarray(np.abs(np.random.default_rng(1).standard_normal((11, 3))), jnp.float32)  # positive inputs
    w, b = jnp.ones(3), jnp.array(-100.0)
    unit_grads = lambda f: jax.grad(lambda w, b: jnp.sum(f(X @ w + b)), argnums=(0, 1))(w, b)
    grads, leaky = jax.jit(lambda: (unit_grads(act.relu), unit_grads(act.leaky_relu)))()  # one compilation
    assert float(jnp.abs(grads[0]).sum() + jnp.abs(grads[1])) == 0.0
    assert float(jnp.abs(leaky[1])) > 0.0  # the leaky unit still learns


def test_shapes_preserved_and_jit_vmap_agree():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 5, 7)), jnp.float32)
    everything = lambda v: {name: ours(v) for name, (ours, _) in PAIRS.items()}
    eager, jitted, mapped = everything(x), jax.jit(everything)(x), jax.jit(jax.vmap(everything))(x)
    for name, y in eager.items():
        assert y.shape == x.shape and y.dtype == x.dtype, name
        np.testing.assert_allclose(jitted[name], y, rtol=1e-6, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(mapped[name], y, rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "silu", "softplus"])
def test_integer_input_raises_and_lists_are_accepted(name):
    f = getattr(act, name)
    with pytest.raises(TypeError, match=r"x must be a floating-point array, got dtype int32"):
        f(jnp.array([-1, 0, 2]))  # before, relu returned integers and the others rounded or failed
    np.testing.assert_allclose(f([-1.0, 0.0, 2.0]), f(jnp.array([-1.0, 0.0, 2.0])), rtol=1e-6)


def test_the_numbers_on_the_page():
    x = jnp.linspace(-6.0, 6.0, 1201)
    derivative = lambda f: jax.vmap(jax.grad(f))(x)

    @jax.jit  # one compilation for all the numbers below
    def numbers(x):
        return {"d_sigmoid": derivative(act.sigmoid), "d_tanh": derivative(act.tanh), "tanh": act.tanh(x),
                "tanh_from_sigmoid": 2 * act.sigmoid(2 * x) - 1, "d_gelu": derivative(act.gelu),
                "d_silu": derivative(act.silu), "gelu": act.gelu(x), "silu": act.silu(x),
                "gelu_tanh": act.gelu(x, approximate=True)}

    n = numbers(x)
    assert float(n["d_sigmoid"].max()) == pytest.approx(0.25, abs=1e-6)  # sigma' is at most 1/4
    assert float(n["d_tanh"].max()) == pytest.approx(1.0, abs=1e-6)  # tanh' is at most 1
    np.testing.assert_allclose(n["tanh"], n["tanh_from_sigmoid"], atol=1e-6)  # tanh(x) = 2 sigma(2x) - 1
    # float32 exp overflows just above log(max float32) = 88.72: the thresholds the page quotes
    with np.errstate(over="ignore"):
        assert np.isinf(np.exp(np.float32(88.73))) and np.isfinite(np.exp(np.float32(88.72)))
    # GELU's and SiLU's derivatives overshoot 1 slightly, and both functions dip below zero
    for f in ("gelu", "silu"):
        assert 1.0 < float(n[f"d_{f}"].max()) < 1.15
        assert -0.3 < float(n[f].min()) < 0.0
    assert float(n["gelu_tanh"][0]) == pytest.approx(float(n["gelu"][0]), abs=1e-3)


def test_nan_propagates_like_jax_nn():
    # relu used to map NaN to 0 (NaN > 0 is False), hiding a NaN upstream; jax.nn.relu keeps it.
    x = jnp.array([jnp.nan, -jnp.inf, -1.0, 0.0, 2.0])
    for name in ("relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus", "silu", "gelu"):
        assert np.isnan(float(getattr(act, name)(x)[0])), name
    np.testing.assert_array_equal(act.relu(x)[1:], jax.nn.relu(x)[1:])
    assert float(jax.grad(act.relu)(0.0)) == 0.0  # still slope 0 at the kink
