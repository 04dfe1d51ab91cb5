import jax
import jax.numpy as jnp
import jraph
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from cookbook.graphs.gat import add_self_loops, apply, attention_logits, init, segment_softmax

N, D, F, HEADS = 7, 3, 5, 2
# The recipe's functions check their inputs and then run one compiled program per shape: the tests call
# them as they are, with NumPy inputs, and share those programs with the examples and the jit checks.
apply_jit, logits_jit, softmax_jit = apply, attention_logits, segment_softmax


def numpy_params(seed, dynamic, d=D, f=F, heads=HEADS):
    """Parameters shaped as ``init`` makes them, drawn with NumPy (no random kernel to compile), and
    kept as NumPy arrays: the tests slice and scale them in NumPy, where jnp would compile each step."""
    shapes = jax.eval_shape(lambda: init(jax.random.key(0), d, f, heads=heads, dynamic=dynamic))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)


@pytest.fixture(scope="module")
def graph():
    """A random directed graph with repeated edges and self-loops; node N-1 receives nothing."""
    rng = np.random.default_rng(0)
    senders, receivers = rng.integers(0, N, 13), rng.integers(0, N - 1, 13)
    senders[:2], receivers[:2] = [1, 1], [2, 2]
    x = rng.standard_normal((N, D)).astype(np.float32)
    return x, senders.astype(np.int32), receivers.astype(np.int32)


# ---- The segment softmax ----------------------------------------------------------------------

def test_segment_softmax_matches_jraph_and_a_loop():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((11, 3)) * 5
    segments = rng.integers(0, 4, 11)  # segment 4 is empty
    got = softmax_jit(logits.astype(np.float32), segments.astype(np.int32), num_segments=5)
    want = np.zeros_like(logits)
    for s in range(5):
        rows = segments == s
        if rows.any():
            z = np.exp(logits[rows] - logits[rows].max(0))
            want[rows] = z / z.sum(0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    with jax.numpy_rank_promotion("allow"):
        ref = jax.jit(jraph.segment_softmax, static_argnums=2)(logits.astype(np.float32), segments.astype(np.int32), 5)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)


def test_segment_softmax_survives_huge_and_masked_logits():
    # Huge logits do not overflow (the max is subtracted); a segment of -inf gets zeros, not NaN.
    logits = np.array([1e30, 1e30, -1e30, -np.inf, -np.inf], np.float32)
    w = softmax_jit(logits, np.array([0, 0, 1, 2, 2], np.int32), num_segments=4)
    np.testing.assert_array_equal(w, [0.5, 0.5, 1.0, 0.0, 0.0])


def test_segment_softmax_in_bfloat16_stays_close_to_float32():
    rng = np.random.default_rng(2)
    logits = (rng.standard_normal(11) * 3).astype(np.float32)
    segments = rng.integers(0, 3, 11).astype(np.int32)
    w16 = softmax_jit(logits.astype(jnp.bfloat16), segments, num_segments=3)
    assert w16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(w16), softmax_jit(logits, segments, num_segments=3), atol=1e-2)


def test_segment_softmax_gradients():
    rng = np.random.default_rng(3)
    segments = rng.integers(0, 3, 7).astype(np.int32)
    with jax.enable_x64(True):
        logits = rng.standard_normal(7)  # float64
        f = jax.jit(lambda z: jnp.sin(segment_softmax(z, segments, 3)))  # one program, not one per operation
        check_grads(f, (logits,), order=1, modes=("rev",))


# ---- The layers against references --------------------------------------------------------------

def _loop_reference(params, x, senders, receivers, dynamic):
    """Both layers one edge and one head at a time, in NumPy float64."""
    p = jax.tree.map(np.float64, params)
    x = np.float64(x)
    leaky = lambda z: np.where(z > 0, z, 0.2 * z)
    out = np.zeros((N, HEADS, F))
    for h in range(HEADS):
        for i in range(N):
            edges = [k for k in range(len(senders)) if receivers[k] == i]
            if not edges:
                continue
            if dynamic:
                values = [x[senders[k]] @ p["W_src"][:, h] for k in edges]
                e = [p["a"][h] @ leaky(x[i] @ p["W_dst"][:, h] + v) for k, v in zip(edges, values)]
            else:
                values = [x[senders[k]] @ p["W"][:, h] for k in edges]
                e = [leaky(p["a_dst"][h] @ (x[i] @ p["W"][:, h]) + p["a_src"][h] @ v) for v in values]
            alpha = np.exp(np.array(e) - max(e))
            alpha /= alpha.sum()
            out[i, h] = sum(a * v for a, v in zip(alpha, values))
    return out.reshape(N, HEADS * F)


@pytest.mark.parametrize("dynamic", [False, True])
def test_layers_match_a_loop_over_nodes_and_heads_in_float64(graph, dynamic):
    x, senders, receivers = graph
    params = numpy_params(4, dynamic)
    got = np.asarray(apply_jit(params, x, senders, receivers))
    want = _loop_reference(params, x, np.asarray(senders), np.asarray(receivers), dynamic)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[N - 1], 0.0)  # the node that receives nothing


@pytest.mark.parametrize("dynamic", [False, True])
def test_one_head_matches_jraph_gat(graph, dynamic):
    x, senders, receivers = graph
    p = jax.tree.map(lambda a: a[..., 0, :] if a.ndim == 3 else a[0], numpy_params(5, dynamic))  # head 0
    leaky = lambda z: jax.nn.leaky_relu(z, 0.2)
    if dynamic:
        # jraph's messages are the query function's output; the values W_src x_j are linear in x_j, so
        # the projection moves after the sum, into the node update.
        layer = jraph.GAT(attention_query_fn=lambda n: n,
                          attention_logit_fn=lambda s, r, e: (leaky(r @ p["W_dst"] + s @ p["W_src"]) @ p["a"])[:, None],
                          node_update_fn=lambda n: n @ p["W_src"])
    else:
        layer = jraph.GAT(attention_query_fn=lambda n: n @ p["W"],
                          attention_logit_fn=lambda s, r, e: leaky(r @ p["a_dst"] + s @ p["a_src"])[:, None],
                          node_update_fn=lambda n: n)
    g = jraph.GraphsTuple(nodes=x, edges=None, senders=senders, receivers=receivers, globals=None,
                          n_node=jnp.array([N]), n_edge=jnp.array([len(senders)]))
    with jax.numpy_rank_promotion("allow"):
        want = jax.jit(layer)(g).nodes
    params = numpy_params(5, dynamic)
    np.testing.assert_allclose(apply_jit(params, x, senders, receivers)[:, :F], want, rtol=1e-5, atol=1e-5)


# ---- The symmetry -------------------------------------------------------------------------------

@pytest.mark.parametrize("dynamic", [False, True])
def test_renumbering_nodes_and_edges_permutes_the_outputs(graph, dynamic):
    x, senders, receivers = graph
    params = numpy_params(6, dynamic)
    rng = np.random.default_rng(7)
    node_perm, edge_perm = rng.permutation(N), rng.permutation(len(senders))  # new j is old perm[j]
    inverse = np.argsort(node_perm)
    out = np.asarray(apply_jit(params, x, senders, receivers))  # permuted in NumPy
    p_out = apply_jit(params, x[node_perm], inverse[senders[edge_perm]], inverse[receivers[edge_perm]])
    np.testing.assert_allclose(p_out, out[node_perm], rtol=1e-6, atol=1e-6)
    p_logits = logits_jit(params, x[node_perm], inverse[senders[edge_perm]], inverse[receivers[edge_perm]])
    np.testing.assert_allclose(p_logits, np.asarray(logits_jit(params, x, senders, receivers))[edge_perm],
                               rtol=1e-6, atol=1e-6)


# ---- Static and dynamic attention (Brody et al. 2022) ------------------------------------------------

K = 5  # keys 0..K-1 send to queries K..2K-1: every query sees the same K neighbours
KEY_SENDERS, QUERY_RECEIVERS = np.repeat(np.arange(K), K), np.tile(np.arange(K), K) + K


def _rankings(params, x):
    """For each query, the keys ordered by the score of head 0, shape (K, K)."""
    logits = np.asarray(logits_jit(params, x, KEY_SENDERS, QUERY_RECEIVERS))[:, 0].reshape(K, K)  # [key, query]
    return np.argsort(-logits, axis=0).T


def test_gat_ranks_the_neighbours_alike_for_every_receiver_and_gatv2_need_not():
    x = np.random.default_rng(8).standard_normal((2 * K, D)).astype(np.float32)
    gat = [_rankings(numpy_params(seed, False), x) for seed in range(10)]
    for ranking in gat:  # static: one order of the keys, whichever query asks
        assert (ranking == ranking[0]).all()
    gatv2 = [_rankings(numpy_params(seed, True), x) for seed in range(10)]
    # Random GATv2 layers: for 2 of these 10 the top key changes with the query (measured); a static
    # layer never does that.
    assert sum(not (r[:, 0] == r[0, 0]).all() for r in gatv2) == 2


def dictionary_lookup(seed, n):
    """Brody et al.'s task with K keys: key j holds its name j and a value; query i asks for a name.
    Features: [one-hot name, one-hot value, is-query]; the target of query i is the asked key's value."""
    rng = np.random.default_rng(seed)
    values = np.stack([rng.permutation(K) for _ in range(n)])
    asked = np.stack([rng.permutation(K) for _ in range(n)])
    eye = np.eye(K)
    keys = np.concatenate([np.broadcast_to(eye, (n, K, K)), eye[values], np.zeros((n, K, 1))], axis=2)
    queries = np.concatenate([eye[asked], np.zeros((n, K, K)), np.ones((n, K, 1))], axis=2)
    # placed on the device without compiling (jnp.asarray compiles a program per shape); jax arrays,
    # not NumPy, so that the training loop that closes over them does not embed them as constants
    x = jax.device_put(np.concatenate([keys, queries], axis=1).astype(np.float32))  # (n, 2K, 2K + 1)
    return x, jax.device_put(np.take_along_axis(values, asked, axis=1))  # (n, K)


def _train_lookup(dynamic, steps=200, batch=16, width=8):
    xs, ys = dictionary_lookup(10, steps * batch)
    test_x, test_y = dictionary_lookup(11, 200)
    rng = np.random.default_rng(12)
    params = {"layer": numpy_params(13, dynamic, d=2 * K + 1, f=width, heads=1),
              "readout": (rng.standard_normal((width, K)) / np.sqrt(width)).astype(np.float32)}
    for name in params["layer"]:  # in NumPy: an eager division would compile one program per shape
        layer = params["layer"][name]
        params["layer"][name] = layer / np.float32(np.sqrt(layer.shape[0]))

    def predict(p, x):
        h = apply(p["layer"], x, KEY_SENDERS, QUERY_RECEIVERS)  # (2K, width)
        return h[K:] @ p["readout"]  # (K, K): logits of the value, for each query

    def loss(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(jax.vmap(predict, (None, 0))(p, x), y).mean()

    opt = optax.adam(0.03)

    @jax.jit
    def train(p):
        def step(state, data):
            p, s = state
            updates, s = opt.update(jax.grad(loss)(p, *data), s, p)
            return (optax.apply_updates(p, updates), s), None

        batches = (xs.reshape(steps, batch, 2 * K, -1), ys.reshape(steps, batch, K))
        (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), batches)
        return jnp.mean(jax.vmap(predict, (None, 0))(p, test_x).argmax(-1) == test_y)

    return float(train(params))


def test_gatv2_learns_the_dictionary_lookup_and_gat_cannot():
    gat, gatv2 = _train_lookup(False), _train_lookup(True)
    # Measured on 200 held-out lookups (200 Adam steps of 16 lookups, one head of width 8): GAT 0.221,
    # near chance (1/5); GATv2 1.0, every query answered.
    assert gatv2 == 1.0
    assert gat <= 0.3


# ---- Bad input and self-loops -------------------------------------------------------------------

def test_add_self_loops_appends_one_edge_per_node():
    s, r = add_self_loops(np.array([0, 2], np.int32), np.array([1, 1], np.int32), 3)
    np.testing.assert_array_equal(s, [0, 2, 0, 1, 2])
    np.testing.assert_array_equal(r, [1, 1, 0, 1, 2])


def test_bad_input_raises_clear_errors(graph):
    x, senders, receivers = graph
    params = numpy_params(14, True)
    wrong_receiver = receivers.copy()
    wrong_receiver[0] = -1
    with pytest.raises(ValueError, match=r"x must have shape \(7, 3\) \(D from params\['W_src'\]\)"):
        apply(params, x[:, :2], senders, receivers)
    with pytest.raises(ValueError, match=r"params\['a'\] must have shape \(2, 5\)"):
        apply({**params, "a": params["a"][:, :3]}, x, senders, receivers)
    with pytest.raises(ValueError, match=r"params must be the dict that init returns"):
        apply({**params, "a_src": params["a"]}, x, senders, receivers)
    with pytest.raises(ValueError, match=r"receivers must lie in \[0, 7\)"):
        apply(params, x, senders, wrong_receiver)
    with pytest.raises(ValueError, match=r"segments must have shape \(3,\)"):
        segment_softmax(np.ones(3, np.float32), np.array([0, 1], np.int32), 2)
    with pytest.raises(TypeError, match=r"dynamic must be True \(GATv2\) or False \(GAT\)"):
        init(jax.random.key(0), 3, 5, dynamic="v2")
