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
# Inputs, weights and references are NumPy: an eager jnp operation or a jax.random draw compiles a
# program for every shape, which is most of what a test of this size costs.


@pytest.fixture(scope="module")
def params():
    """Random weights in init's shapes (read with jax.eval_shape), drawn in NumPy: the router and
    the weights at init's scales (variance 1 / d_model, He for the hidden layer, 1 / d_ff for the
    output), the biases nonzero so that a lost bias shows."""
    shapes = jax.eval_shape(lambda: init(jax.random.key(0), D_MODEL, D_FF, M))
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if name.endswith("['b']"):
            std = 0.1
        else:
            std = {"['W_r']": 1.0 / np.sqrt(D_MODEL), "['experts'][0]['W']": np.sqrt(2.0 / D_MODEL),
                   "['experts'][1]['W']": 1.0 / np.sqrt(D_FF)}[name]
        return (std * rng.standard_normal(leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def _x(seed, T=T):
    return np.random.default_rng(seed).standard_normal((T, D_MODEL)).astype(np.float32)


def _softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _one_hot(indices, n):
    return (np.asarray(indices)[..., None] == np.arange(n)).astype(np.float32)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_unlimited_capacity_equals_the_dense_reference(params, k):
    x = _x(1)
    y, aux = jax.jit(functools.partial(apply, k=k, capacity_factor=None))(params, x)
    np.testing.assert_allclose(y, dense_reference(params, x, k), **TOL)
    assert not np.asarray(aux["dropped"]).any()


def test_dense_reference_by_hand(params):
    x = _x(2)
    probs, gates, experts = map(np.asarray, route(params, x, 2))
    experts_np = jax.tree.map(np.asarray, params["experts"])  # the sum below in NumPy: nothing to compile
    rows = []
    for t in range(T):
        out = 0.0
        for j in range(2):
            e = int(experts[t, j])
            expert = jax.tree.map(lambda w, e=e: w[e], experts_np)
            h = np.maximum(x[t] @ expert[0]["W"] + expert[0]["b"], 0.0)
            out = out + probs[t, e] * (h @ expert[1]["W"] + expert[1]["b"])
        rows.append(out)
    np.testing.assert_allclose(dense_reference(params, x, 2), np.stack(rows), **TOL)


def test_router_matches_softmax_and_top_k(params):
    x = _x(3)
    probs, gates, experts = route(params, x, 3)
    ref = _softmax(x @ params["W_r"])
    np.testing.assert_allclose(probs, ref, **TOL)
    np.testing.assert_array_equal(experts, np.argsort(-ref, axis=-1, kind="stable")[:, :3])
    np.testing.assert_allclose(gates, np.take_along_axis(ref, np.asarray(experts), axis=-1), **TOL)


@pytest.mark.parametrize("k, factor", [(1, 1.0), (2, 1.0), (2, 0.5), (3, 1.25)])
def test_each_token_goes_to_k_experts_or_is_dropped_and_capacity_holds(params, k, factor):
    x = _x(4, T=23)
    y, aux = apply(params, x, k=k, capacity_factor=factor)
    aux = jax.tree.map(np.asarray, aux)
    C = expert_capacity(23, M, k, factor)
    assert int(aux["capacity"]) == C
    assert np.all(aux["load"] <= C)
    np.testing.assert_array_equal(aux["wanted"].sum(), 23 * k)  # exactly k choices per token
    assert int(aux["load"].sum()) == 23 * k - int(aux["dropped"].sum())
    # A token's output is the gated sum of exactly its kept experts: the routing of the router
    # test (softmax, then the k largest, largest first), in NumPy.
    probs = _softmax(x @ params["W_r"])
    experts = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    gates = np.take_along_axis(probs, experts, axis=-1)
    kept_gates = np.where(aux["dropped"], 0.0, gates)
    T_ = 23
    G = np.zeros((T_, M))
    for t in range(T_):
        for j in range(k):
            G[t, int(experts[t, j])] = kept_gates[t, j]
    (W1, b1), (W2, b2) = ((np.asarray(layer["W"]), np.asarray(layer["b"])) for layer in params["experts"])
    hidden = np.maximum(np.einsum("td,mdf->mtf", x, W1) + b1[:, None], 0)  # every expert on every token
    all_out = np.einsum("mtf,mfd->mtd", hidden, W2) + b2[:, None]  # (M, T, d)
    np.testing.assert_allclose(y, np.einsum("tm,mtd->td", G, all_out), rtol=1e-4, atol=1e-5)


def test_tokens_over_capacity_get_zero_and_pass_through_the_residual(params):
    x = _x(5)
    biased = dict(params, W_r=np.zeros_like(params["W_r"]))  # uniform: ties go to expert 0 for all
    y, aux = apply(biased, x, k=1, capacity_factor=1.0)
    y, aux = np.asarray(y), jax.tree.map(np.asarray, aux)
    C = expert_capacity(T, M, 1, 1.0)  # ceil(11 / 5) = 3
    assert C == 3 and aux["load"].tolist() == [3, 0, 0, 0, 0]
    dropped = aux["dropped"][:, 0]
    np.testing.assert_array_equal(dropped, np.arange(T) >= 3)  # first come, first served
    np.testing.assert_array_equal(y[dropped], 0.0)
    np.testing.assert_allclose((x + y)[dropped], x[dropped])  # the residual carries them unchanged


# The balance-loss tests route batches of T_B = 10 tokens (a multiple of M, for the balanced cases):
# the loss compiles once per k for that shape.
T_B = 10


def test_balance_loss_is_one_for_a_uniform_router_and_larger_when_collapsed():
    uniform = np.full((T_B, M), 1.0 / M, np.float32)  # ties: every token goes to experts 0 .. k - 1, loss still 1
    np.testing.assert_allclose(load_balancing_loss(uniform, 2), 1.0, rtol=1e-6)
    np.testing.assert_allclose(load_balancing_loss(uniform, 1), 1.0, rtol=1e-6)
    collapsed = np.full((T_B, M), 1e-3, np.float32)
    collapsed[:, 0] = 1.0 - 4e-3
    loss = float(load_balancing_loss(collapsed, 1))
    assert loss > 0.99 * M
    # Balanced routing with matching probabilities: each expert gets T/M tokens.
    balanced = np.arange(T_B) % M
    np.testing.assert_allclose(load_balancing_loss(_one_hot(balanced, M) * 0.6 + 0.08, 1), 1.0, rtol=1e-5)


def test_balance_loss_gradient_flows_into_the_router_only_through_probabilities(params):
    x = _x(7)

    def f(W_r):
        _, aux = apply(dict(params, W_r=W_r), x, k=1, capacity_factor=None)
        return aux["balance_loss"]

    g = np.asarray(jax.jit(jax.grad(f))(params["W_r"]))  # one program for the gradient
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0


def test_bfloat16_inputs_route_in_float32(params):
    x = _x(8).astype(jnp.bfloat16)
    bf = jax.tree.map(lambda w: np.asarray(w).astype(jnp.bfloat16), params)
    y, aux = apply(bf, x, k=2, capacity_factor=None)
    assert y.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(y, np.float32)))
    probs, _, _ = route(bf, x, 2)
    assert probs.dtype == jnp.float32


def test_bad_inputs_raise_clear_errors(params):
    with pytest.raises(ValueError, match=r"k must be between 1 and the number of experts 5, got k=6"):
        apply(params, _x(0), k=6)
    with pytest.raises(ValueError, match=r"x must have shape \(11, 12\) \(\(T, d_model\)\), got shape \(11, 3\)"):
        apply(params, np.ones((11, 3), np.float32))
    with pytest.raises(ValueError, match=r"capacity_factor must be positive, got 0"):
        apply(params, _x(0), capacity_factor=0)
    with pytest.raises(TypeError, match=r"k must be an int of at least 1, got float 1.5"):
        apply(params, _x(0), k=1.5)
    with pytest.raises(TypeError, match=r"x must be a floating-point array, got dtype int32"):
        route(params, np.ones((11, D_MODEL), np.int32), 1)
    with pytest.raises(ValueError, match=r"params\['W_r'\] must have the shape"):
        route(dict(params, W_r=np.asarray(params["W_r"])[:, :3]), _x(0), 1)
    with pytest.raises(ValueError, match=r"k must be between 1 and the number of experts M = 5 \(probs.shape\[1\]\)"):
        load_balancing_loss(np.full((2, M), 1.0 / M, np.float32), 6)
    with pytest.raises(ValueError, match=r"num_experts must be at least 1"):
        init(jax.random.key(0), D_MODEL, D_FF, 0)


def test_balance_loss_can_fall_below_one_and_its_two_expert_floor_is_seven_eighths():
    # The page's example: three tokens split 0.5 / 0.5 and sent to expert 0, one sent to expert 1.
    probs = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.01, 0.99]], np.float32)
    np.testing.assert_allclose(load_balancing_loss(probs, 1), 0.8775, rtol=1e-6)  # ties go to expert 0
    extreme = probs.copy()
    extreme[3] = [0.0, 1.0]
    np.testing.assert_allclose(load_balancing_loss(extreme, 1), 7 / 8, rtol=1e-6)
    # No top-1 routing over two experts scores below 7/8 (random search over 20000 batches, drawn
    # near the extreme cases 0, 1/2 and 1 as well as uniformly).
    rng = np.random.default_rng(0)
    near = rng.choice([0.0, 0.5, 0.5, 1.0], size=(10000, 8)) + 0.05 * rng.standard_normal((10000, 8))
    p0 = np.concatenate([np.clip(near, 0, 1), rng.uniform(size=(10000, 8))])
    probs = np.stack([p0, 1 - p0], axis=-1)  # (batch, T, 2)
    f = (probs.argmax(-1)[..., None] == np.arange(2)).mean(axis=1)  # (batch, 2): top-1 routing
    losses = 2 * np.sum(f * probs.mean(axis=1), axis=-1)
    assert losses.min() >= 7 / 8 - 1e-9 and losses.min() < 0.95, losses.min()


def test_balance_loss_of_a_confident_router_is_at_least_one_and_one_when_balanced():
    rng = np.random.default_rng(1)
    for _ in range(5):
        experts = rng.integers(0, M, size=(T_B, 1))
        probs = _one_hot(experts[:, 0], M)  # one-hot: P_e = f_e
        f = np.bincount(experts[:, 0], minlength=M) / T_B
        loss = float(load_balancing_loss(probs, 1))
        np.testing.assert_allclose(loss, M * np.sum(f**2), rtol=1e-6)
        assert loss >= 1.0
    balanced = np.arange(T_B) % M
    np.testing.assert_allclose(load_balancing_loss(_one_hot(balanced, M), 1), 1.0, rtol=1e-6)


def test_gates_are_router_probabilities_not_renormalised_over_the_top_k(params):
    probs, gates, experts = map(np.asarray, route(params, _x(3), 2))
    np.testing.assert_allclose(gates, np.take_along_axis(probs, experts, axis=-1), **TOL)
    assert np.all(gates.sum(axis=-1) < 1.0)  # Shazeer et al. and GShard would make these sums 1
    assert expert_capacity(10, 2, 2, 2.0) == 10  # min(T, ceil(2 * 10 * 2 / 2) = 20)


def test_one_hot_dispatch_memory_is_quadratic_in_the_tokens():
    # The page: (T, M, C) tensors of about alpha k T^2 entries, and slots (T, k, M, C) k times more.
    p = init(jax.random.key(0), 16, 32, 4)
    x = jax.random.normal(jax.random.key(1), (64, 16))
    jaxpr = jax.make_jaxpr(functools.partial(apply, k=2, capacity_factor=1.25))(p, x)

    def sizes_in(jaxpr):  # the sizes of every intermediate array, inside the jitted parts too
        for e in jaxpr.eqns:
            yield from (v.aval.size for v in e.outvars)
            for value in e.params.values():
                inner = getattr(value, "jaxpr", value)  # a ClosedJaxpr holds its Jaxpr
                if hasattr(inner, "eqns"):
                    yield from sizes_in(inner)

    sizes = list(sizes_in(jaxpr.jaxpr))
    assert len(sizes) > 20  # the layer's operations, not only the call of its compiled program
    C = expert_capacity(64, 4, 2, 1.25)
    assert C == 40 and 64 * 4 * C == 1.25 * 2 * 64**2 == 10240
    assert max(sizes) == 64 * 2 * 4 * C == 20480
    assert 64 * 4 * C in sizes


def test_the_figure_numbers():
    k_p, k_x = jax.random.split(jax.random.key(0))
    p = init(k_p, d_model=16, d_ff=32, num_experts=4)
    x = jax.random.normal(k_x, (64, 16))
    W_r = np.array(p["W_r"])
    W_r[:, 0] *= 4.0
    biased = dict(p, W_r=W_r)
    f = jax.jit(functools.partial(apply, k=1, capacity_factor=1.25))
    _, aux = f(p, x)
    aux = jax.tree.map(np.asarray, aux)
    assert int(aux["capacity"]) == 20 and int(aux["wanted"][3]) - int(aux["load"][3]) == 2
    assert round(float(aux["balance_loss"]), 2) == 1.02
    _, aux = f(biased, x)
    aux = jax.tree.map(np.asarray, aux)
    assert int(aux["wanted"][0]) == 27 and int(aux["load"][0]) == 20
    assert round(float(aux["balance_loss"]), 2) == 1.13
