import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.transformers.mixture_of_experts import (
    apply,
    dense_reference,
    expert_capacity,
    init,
    load_balancing_loss,
    route,
)

D_MODEL, D_FF, M, T = 12, 20, 5, 11
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def params():
    return init(jax.random.key(0), D_MODEL, D_FF, M)


def _x(seed, T=T):
    return jax.random.normal(jax.random.key(seed), (T, D_MODEL))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_unlimited_capacity_equals_the_dense_reference(params, k):
    x = _x(1)
    y, aux = jax.jit(functools.partial(apply, k=k, capacity_factor=None))(params, x)
    np.testing.assert_allclose(y, dense_reference(params, x, k), **TOL)
    assert not aux["dropped"].any()


def test_dense_reference_by_hand(params):
    x = _x(2)
    probs, gates, experts = route(params, x, 2)
    rows = []
    for t in range(T):
        out = 0.0
        for j in range(2):
            e = int(experts[t, j])
            expert = jax.tree.map(lambda w, e=e: w[e], params["experts"])
            h = jnp.maximum(x[t] @ expert[0]["W"] + expert[0]["b"], 0.0)
            out = out + probs[t, e] * (h @ expert[1]["W"] + expert[1]["b"])
        rows.append(out)
    np.testing.assert_allclose(dense_reference(params, x, 2), jnp.stack(rows), **TOL)


def test_router_matches_softmax_and_top_k(params):
    x = _x(3)
    probs, gates, experts = route(params, x, 3)
    ref = jax.nn.softmax(x @ params["W_r"], axis=-1)
    np.testing.assert_allclose(probs, ref, **TOL)
    np.testing.assert_array_equal(experts, np.argsort(-np.asarray(ref), axis=-1, kind="stable")[:, :3])
    np.testing.assert_allclose(gates, np.take_along_axis(np.asarray(ref), np.asarray(experts), axis=-1), **TOL)


@pytest.mark.parametrize("k, factor", [(1, 1.0), (2, 1.0), (2, 0.5), (3, 1.25)])
def test_each_token_goes_to_k_experts_or_is_dropped_and_capacity_holds(params, k, factor):
    x = _x(4, T=23)
    y, aux = apply(params, x, k=k, capacity_factor=factor)
    C = expert_capacity(23, M, k, factor)
    assert int(aux["capacity"]) == C
    assert np.all(np.asarray(aux["load"]) <= C)
    np.testing.assert_array_equal(aux["wanted"].sum(), 23 * k)  # exactly k choices per token
    assert int(aux["load"].sum()) == 23 * k - int(aux["dropped"].sum())
    # A token's output is the gated sum of exactly its kept experts.
    probs, gates, experts = route(params, x, k)
    kept_gates = np.where(np.asarray(aux["dropped"]), 0.0, np.asarray(gates))
    T_ = 23
    G = np.zeros((T_, M))
    for t in range(T_):
        for j in range(k):
            G[t, int(experts[t, j])] = kept_gates[t, j]
    all_out = jax.vmap(lambda e: jax.vmap(lambda xt: jnp.maximum(xt @ e[0]["W"] + e[0]["b"], 0) @ e[1]["W"] + e[1]["b"])(x))(
        params["experts"])  # (M, T, d)
    np.testing.assert_allclose(y, np.einsum("tm,mtd->td", G, all_out), rtol=1e-4, atol=1e-5)


def test_tokens_over_capacity_get_zero_and_pass_through_the_residual(params):
    x = _x(5)
    biased = dict(params, W_r=jnp.zeros_like(params["W_r"]))  # uniform: ties go to expert 0 for all
    y, aux = apply(biased, x, k=1, capacity_factor=1.0)
    C = expert_capacity(T, M, 1, 1.0)  # ceil(11 / 5) = 3
    assert C == 3 and aux["load"].tolist() == [3, 0, 0, 0, 0]
    dropped = np.asarray(aux["dropped"][:, 0])
    np.testing.assert_array_equal(dropped, np.arange(T) >= 3)  # first come, first served
    np.testing.assert_array_equal(y[dropped], 0.0)
    np.testing.assert_allclose((x + y)[dropped], x[dropped])  # the residual carries them unchanged


def test_balance_loss_is_one_for_a_uniform_router_and_larger_when_collapsed():
    experts = jax.random.randint(jax.random.key(6), (T, 2), 0, M)
    uniform = jnp.full((T, M), 1.0 / M)
    np.testing.assert_allclose(load_balancing_loss(uniform, experts), 1.0, rtol=1e-6)
    np.testing.assert_allclose(load_balancing_loss(uniform, jnp.zeros((T, 1), jnp.int32)), 1.0, rtol=1e-6)
    collapsed = jnp.full((T, M), 1e-3).at[:, 0].set(1.0 - 4e-3)
    loss = float(load_balancing_loss(collapsed, jnp.zeros((T, 1), jnp.int32)))
    assert loss > 0.99 * M
    # Balanced routing with matching probabilities: each expert gets T/M tokens.
    balanced = jnp.arange(10)[:, None] % M
    np.testing.assert_allclose(load_balancing_loss(jax.nn.one_hot(balanced[:, 0], M) * 0.6 + 0.08, balanced), 1.0,
                               rtol=1e-5)


def test_balance_loss_gradient_flows_into_the_router_only_through_probabilities(params):
    x = _x(7)

    def f(W_r):
        _, aux = apply(dict(params, W_r=W_r), x, k=1, capacity_factor=None)
        return aux["balance_loss"]

    g = jax.grad(f)(params["W_r"])
    assert np.all(np.isfinite(g)) and float(jnp.abs(g).max()) > 0


def test_bfloat16_inputs_route_in_float32(params):
    x = _x(8).astype(jnp.bfloat16)
    bf = jax.tree.map(lambda w: w.astype(jnp.bfloat16), params)
    y, aux = apply(bf, x, k=2, capacity_factor=None)
    assert y.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(y, np.float32)))
    probs, _, _ = route(bf, x, 2)
    assert probs.dtype == jnp.float32


def test_bad_inputs_raise_clear_errors(params):
    with pytest.raises(ValueError, match=r"k must be between 1 and the number of experts 5, got k=6"):
        apply(params, _x(0), k=6)
    with pytest.raises(ValueError, match=r"x must have shape \(T, d_model\) = \(T, 12\), got shape \(11, 3\)"):
        apply(params, jnp.ones((11, 3)))
    with pytest.raises(ValueError, match=r"capacity_factor must be positive or None, got capacity_factor=0"):
        apply(params, _x(0), capacity_factor=0)
    with pytest.raises(ValueError, match=r"num_experts must be at least 1"):
        init(jax.random.key(0), D_MODEL, D_FF, 0)
