import jax
import jax.numpy as jnp
import jraph
import numpy as np
import pytest

from cookbook.graphs.message_passing import AGGREGATIONS, aggregate, apply, init, mlp

N, E, DV, DE, DU, H = 4, 8, 3, 2, 1, 5  # the sizes of the page's block: its apply is the tests' program
# One compiled function per entry point (compilation is most of the cost of these tests). apply and
# aggregate check their input and hand it to a compiled core: called directly, each compiles one
# program per shape (and aggregation).
apply_jit = apply


def numpy_params(seed, **sizes):
    """Parameters with the structure and shapes that ``init`` gives, drawn with NumPy (each jax.random
    draw of a new shape would compile a random-number kernel)."""
    shapes = jax.eval_shape(lambda: init(jax.random.key(0), **sizes))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape) / np.sqrt(s.shape[0]), s.dtype), shapes)


def random_graph(seed, n=N, e=E):
    """A directed multigraph with a repeated edge, a self-loop and a node that receives nothing."""
    rng = np.random.default_rng(seed)
    senders = rng.integers(0, n, e)
    receivers = rng.integers(0, n - 1, e)  # node n-1 receives nothing
    senders[:3], receivers[:3] = [2, 0, 0], [2, 1, 1]  # a self-loop, a repeated edge
    as32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # NumPy: sliced without eager programs
    return as32(n, DV), as32(e, DE), senders, receivers, as32(DU)


@pytest.fixture(scope="module")
def setup():
    params = numpy_params(0, node_size=DV, edge_size=DE, global_size=DU, hidden=H)
    return params, random_graph(1)


def test_init_gives_one_mlp_per_level_with_the_widths_of_the_equation():
    shapes = jax.tree.map(lambda s: s.shape, jax.eval_shape(
        lambda: init(jax.random.key(0), node_size=DV, edge_size=DE, global_size=DU, hidden=H)))
    assert [layer["W"] for layer in shapes["edge"]] == [(DE + 2 * DV + DU, H), (H, H)]
    assert [layer["W"] for layer in shapes["node"]] == [(H + DV + DU, H), (H, H)]
    assert [layer["W"] for layer in shapes["global"]] == [(2 * H + DU, H), (H, H)]


# ---- Against references ------------------------------------------------------------------------

def _mlp64(layers, x):
    for layer in layers[:-1]:
        x = np.maximum(x @ np.float64(layer["W"]) + np.float64(layer["b"]), 0.0)
    return x @ np.float64(layers[-1]["W"]) + np.float64(layers[-1]["b"])


def _rho64(vectors, aggregation):
    if not vectors:
        return np.zeros(H)
    stack = np.stack(vectors)
    return {"sum": stack.sum(0), "mean": stack.mean(0), "max": stack.max(0)}[aggregation]


def reference_block(params, nodes, edges, senders, receivers, globals_, aggregation):
    """The block as the equations say it, one edge and one node at a time, in NumPy float64."""
    v, e, u = (np.float64(a) for a in (nodes, edges, globals_))
    s, r = np.asarray(senders), np.asarray(receivers)
    new_e = np.stack([_mlp64(params["edge"], np.concatenate([e[k], v[r[k]], v[s[k]], u])) for k in range(len(s))])
    new_v = np.stack([
        _mlp64(params["node"], np.concatenate([_rho64([new_e[k] for k in range(len(r)) if r[k] == i], aggregation),
                                               v[i], u]))
        for i in range(len(v))])
    new_u = _mlp64(params["global"], np.concatenate([_rho64(list(new_e), aggregation),
                                                     _rho64(list(new_v), aggregation), u]))
    return new_v, new_e, new_u


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_block_matches_a_loop_over_edges_and_nodes_in_float64(setup, aggregation):
    params, graph = setup
    got = apply_jit(params, *graph, aggregation=aggregation)
    want = reference_block(params, *graph, aggregation)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_block_matches_jraph_graph_network(setup):
    params, (nodes, edges, senders, receivers, globals_) = setup
    cat = lambda *xs: jnp.concatenate(xs, axis=-1)
    # jraph passes (edges, sent, received, globals) to the edge update, (nodes, sent-edge aggregate,
    # received-edge aggregate, globals) to the node update and (node pool, edge pool, globals) to the
    # global update; the block above reads received before sent, and edges before nodes.
    network = jraph.GraphNetwork(
        update_edge_fn=lambda e, s, r, g: mlp(params["edge"], cat(e, r, s, g)),
        update_node_fn=lambda v, sent, received, g: mlp(params["node"], cat(received, v, g)),
        update_global_fn=lambda v_pool, e_pool, g: mlp(params["global"], cat(e_pool, v_pool, g)))
    graph = jraph.GraphsTuple(nodes=nodes, edges=edges, senders=senders, receivers=receivers,
                              globals=globals_[None], n_node=jnp.array([N]), n_edge=jnp.array([E]))
    with jax.numpy_rank_promotion("allow"):
        out = jax.jit(network)(graph)
    new_nodes, new_edges, new_globals = apply_jit(params, nodes, edges, senders, receivers, globals_,
                                                  aggregation="sum")
    np.testing.assert_allclose(new_nodes, out.nodes, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new_edges, out.edges, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new_globals, out.globals[0], rtol=1e-5, atol=1e-5)


def test_aggregate_matches_jraph_segment_operations():
    rng = np.random.default_rng(2)
    messages = rng.standard_normal((E, 3)).astype(np.float32)
    receivers = rng.integers(0, 4, E).astype(np.int32)  # node 4 receives nothing
    refs = {"sum": jraph.segment_sum, "mean": jraph.segment_mean, "max": jraph.segment_max_or_constant}
    with jax.numpy_rank_promotion("allow"):
        want = jax.jit(lambda m, r: {k: ref(m, r, 5) for k, ref in refs.items()})(messages, receivers)
    for aggregation in refs:
        np.testing.assert_allclose(aggregate(messages, receivers, 5, aggregation), want[aggregation],
                                   rtol=1e-6, atol=1e-6)


# ---- The symmetry -------------------------------------------------------------------------------

@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_renumbering_nodes_and_edges_permutes_the_outputs(setup, aggregation):
    params, (nodes, edges, senders, receivers, globals_) = setup
    rng = np.random.default_rng(4)
    node_perm, edge_perm = rng.permutation(N), rng.permutation(E)  # new node j is old node node_perm[j]
    inverse = np.argsort(node_perm)
    new_nodes, new_edges, new_globals = apply_jit(params, nodes, edges, senders, receivers, globals_,
                                                  aggregation=aggregation)
    p_nodes, p_edges, p_globals = apply_jit(
        params, nodes[node_perm], edges[edge_perm], inverse[senders[edge_perm]], inverse[receivers[edge_perm]],
        globals_, aggregation=aggregation)
    # Equal up to the order of float32 additions in the segment sums.
    new_nodes, new_edges = np.asarray(new_nodes), np.asarray(new_edges)
    np.testing.assert_allclose(p_nodes, new_nodes[node_perm], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(p_edges, new_edges[edge_perm], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(p_globals, new_globals, rtol=1e-6, atol=1e-6)
    assert not np.allclose(p_nodes, new_nodes, atol=1e-3)  # the permutation did move something


def test_one_block_is_local_to_one_hop(setup):
    # A path 0-1-2-3 (both directions) and two self-loops at 3: changing node 0 changes the outputs
    # of nodes 0 and 1 only.
    params, (nodes, _, _, _, globals_) = setup
    path = np.arange(N - 1)
    senders = np.concatenate([path, path + 1, [N - 1, N - 1]])
    receivers = np.concatenate([path + 1, path, [N - 1, N - 1]])
    edges = np.ones((E, DE), np.float32)
    changed_nodes = nodes.copy()
    changed_nodes[0] += 1.0
    before = np.asarray(apply_jit(params, nodes, edges, senders, receivers, globals_, aggregation="sum")[0])
    after = np.asarray(apply_jit(params, changed_nodes, edges, senders, receivers, globals_, aggregation="sum")[0])
    changed = np.any(np.abs(after - before) > 0, axis=1)
    np.testing.assert_array_equal(changed, [True, True, False, False])


# ---- What each aggregation can count --------------------------------------------------------------

def test_mean_and_max_cannot_count_what_the_sum_counts():
    a, b = 1.0, 3.0
    # One node per multiset of scalar messages.
    multisets = [[a], [a, a], [a, b], [a, a, b], [a, a, b, b]]
    messages = np.array([[x] for m in multisets for x in m], np.float32)
    receivers = np.array([i for i, m in enumerate(multisets) for _ in m], np.int32)
    seen = {agg: np.asarray(aggregate(messages, receivers, 5, agg))[:, 0] for agg in AGGREGATIONS}
    sums, means, maxes = seen["sum"], seen["mean"], seen["max"]
    # One neighbour of kind a against two: only the sum tells them apart.
    assert sums[0] != sums[1] and means[0] == means[1] and maxes[0] == maxes[1]
    # {a, b} against {a, a, b}: the max cannot tell, the mean can (the proportions differ).
    assert maxes[2] == maxes[3] and means[2] != means[3]
    # {a, b} against {a, a, b, b}: the mean cannot tell either (same proportions), the sum can.
    assert means[2] == means[4] and sums[2] != sums[4]


def test_the_sum_of_one_hot_messages_is_the_multiset_itself():
    kinds = np.array([0, 2, 2, 1, 2, 0])
    receivers = np.array([0, 0, 0, 1, 1, 1])
    counts = aggregate(np.eye(3, dtype=np.float32)[kinds], receivers, 2, "sum")  # one-hot rows
    np.testing.assert_array_equal(counts, [[1, 0, 2], [1, 1, 1]])


def test_a_node_without_messages_gets_zeros_and_finite_gradients():
    messages = np.array([[-2.0, 5.0], [-4.0, 1.0]], np.float32)
    receivers = np.array([0, 0])

    def total(m, aggregation):
        out = aggregate(m, receivers, 3, aggregation)
        return out.sum(), out

    # the three aggregations' gradients in one compiled program
    runs = jax.jit(lambda m: {a: jax.grad(total, has_aux=True)(m, a) for a in AGGREGATIONS})(messages)
    for aggregation in AGGREGATIONS:
        grad, out = runs[aggregation]
        out = np.asarray(out)
        np.testing.assert_array_equal(out[1:], 0.0)
        assert np.all(np.isfinite(grad))
        if aggregation == "max":
            np.testing.assert_array_equal(out[0], [-2.0, 5.0])


def test_vmap_over_node_features_matches_one_graph_at_a_time(setup):
    params, (nodes, edges, senders, receivers, globals_) = setup
    batch = np.stack([nodes, 2.0 * nodes, -nodes])
    out = jax.vmap(apply_jit, in_axes=(None, 0, None, None, None, None))(params, batch, edges, senders, receivers,
                                                                         globals_)
    one = apply_jit(params, 2.0 * nodes, edges, senders, receivers, globals_, aggregation="sum")
    np.testing.assert_allclose(np.asarray(out[0])[1], one[0], rtol=1e-5, atol=1e-6)


# ---- Bad input ------------------------------------------------------------------------------------

def test_bad_edge_lists_raise_clear_errors(setup):
    params, (nodes, edges, senders, receivers, globals_) = setup
    with pytest.raises(ValueError, match=r"senders must lie in \[0, 4\), got values from 0 to 4"):
        apply(params, nodes, edges, np.where(np.arange(E) == 3, N, senders), receivers, globals_)
    with pytest.raises(TypeError, match=r"receivers must be an integer array"):
        apply(params, nodes, edges, senders, receivers.astype(np.float32), globals_)
    with pytest.raises(ValueError, match=r"senders must have shape \(8,\)"):
        apply(params, nodes, edges, senders[:5], receivers, globals_)
    with pytest.raises(ValueError, match=r"receivers must have shape \(3,\)"):
        aggregate(np.ones((3, 2), np.float32), np.array([0, 1]), 2)
    with pytest.raises(ValueError, match=r"aggregation must be one of"):
        aggregate(np.ones((3, 2), np.float32), np.array([0, 1, 1]), 2, "median")
    with pytest.raises(TypeError, match=r"num_nodes must be an int"):
        aggregate(np.ones((3, 2), np.float32), np.array([0, 1, 1]), 2.0)


def test_an_index_out_of_range_under_jit_shows_nan(setup):
    params, (nodes, edges, senders, receivers, globals_) = setup
    # Under jax.jit the index is a tracer: the range cannot be checked, and the fill value shows.
    new_nodes, new_edges, _ = jax.jit(apply, static_argnames="aggregation")(
        params, nodes, edges, np.where(np.arange(E) == 3, N + 4, senders), receivers, globals_, aggregation="sum")
    new_nodes, new_edges = np.asarray(new_nodes), np.asarray(new_edges)
    assert np.isnan(new_edges[3]).all() and np.isnan(new_nodes[int(receivers[3])]).all()


def test_bad_features_and_parameters_raise_clear_errors(setup):
    params, (nodes, edges, senders, receivers, globals_) = setup
    with pytest.raises(ValueError, match=r"nodes must have shape \(4, 3\) \(Dv from params\)"):
        apply(params, nodes[:, :2], edges, senders, receivers, globals_)
    with pytest.raises(ValueError, match=r"globals_ must have shape \(1,\)"):
        apply(params, nodes, edges, senders, receivers, np.zeros(2, np.float32))
    with pytest.raises(TypeError, match=r"edges must be a floating-point array"):
        apply(params, nodes, edges.astype(np.int32), senders, receivers, globals_)
    other = numpy_params(6, node_size=DV, edge_size=DE, global_size=DU, hidden=H + 1)
    with pytest.raises(ValueError, match=r"do not fit together"):
        apply({**params, "global": other["global"]}, nodes, edges, senders, receivers, globals_)
    with pytest.raises(ValueError, match=r"hidden must be at least 1"):
        init(jax.random.key(7), node_size=DV, edge_size=DE, global_size=DU, hidden=0)
