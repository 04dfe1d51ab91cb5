import warnings

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import optax
import pytest

from cookbook.graphs.gin import apply, init, wl_equivalent

wl_pairs = jax.vmap(wl_equivalent, in_axes=(0, 0, None))
# wl_equivalent and apply check their inputs and then run a compiled core: the tests call them as they
# are, with NumPy inputs, so that no test compiles an eager operation or a second program around the core.


def nx_hash(graph, iterations):
    with warnings.catch_warnings():  # networkx warns that its hashes changed in 3.5
        warnings.simplefilter("ignore", UserWarning)
        return nx.weisfeiler_lehman_graph_hash(graph, iterations=iterations)


def batch(graphs):
    """The disjoint union of networkx graphs as an edge list (both directions) and graph ids."""
    senders, receivers, ids, offset = [], [], [], 0
    for k, g in enumerate(graphs):
        edges = np.array(list(g.edges()), dtype=np.int32).reshape(-1, 2) + offset
        senders += [edges[:, 0], edges[:, 1]]
        receivers += [edges[:, 1], edges[:, 0]]
        ids.append(np.full(g.number_of_nodes(), k, np.int32))
        offset += g.number_of_nodes()
    return np.concatenate(senders), np.concatenate(receivers), np.concatenate(ids)


@pytest.fixture(scope="module")
def six_node_graphs():
    """All 156 graphs on 6 nodes (networkx's atlas: pairwise non-isomorphic) and every pair of them."""
    graphs = [g for g in nx.graph_atlas_g() if g.number_of_nodes() == 6]
    adjacency = np.stack([nx.to_numpy_array(g, dtype=np.float32) for g in graphs])
    i, j = np.triu_indices(len(graphs), 1)
    return graphs, adjacency, i, j


@pytest.fixture(scope="module")
def six_node_wl(six_node_graphs):
    """wl_equivalent on every pair of six-node graphs after 1, 2, 3 and 4 rounds: one program."""
    _, adjacency, i, j = six_node_graphs
    rounds = jax.jit(lambda A, B: {t: wl_pairs(A, B, t) for t in (1, 2, 3, 4)})(adjacency[i], adjacency[j])
    return {t: np.asarray(same) for t, same in rounds.items()}


# ---- Colour refinement against networkx ------------------------------------------------------------

@pytest.mark.parametrize("iterations", [2, 4])
def test_wl_equivalent_agrees_with_networkx_hash_on_every_pair_of_six_node_graphs(six_node_graphs, six_node_wl,
                                                                                   iterations):
    graphs, adjacency, i, j = six_node_graphs
    got = six_node_wl[iterations]
    hashes = [nx_hash(g, iterations) for g in graphs]
    want = np.array([hashes[a] == hashes[b] for a, b in zip(i, j)])
    np.testing.assert_array_equal(got, want)
    # Of the 12090 pairs of non-isomorphic graphs on 6 nodes, WL cannot separate 4.
    assert len(i) == 12090 and got.sum() == 4


def test_one_round_compares_degree_sequences(six_node_graphs, six_node_wl):
    # networkx's hash with iterations=1 compares nothing (its first round is the degrees, and it
    # hashes only later rounds); one round of refinement from one colour is the degree histogram.
    graphs, adjacency, i, j = six_node_graphs
    degrees = [tuple(sorted(d for _, d in g.degree())) for g in graphs]
    want = np.array([degrees[a] == degrees[b] for a, b in zip(i, j)])
    np.testing.assert_array_equal(six_node_wl[1], want)
    assert want.sum() == 90


def test_two_triangles_and_a_hexagon_are_never_separated_though_not_isomorphic():
    two_triangles = nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3))
    hexagon = nx.cycle_graph(6)
    A, B = (nx.to_numpy_array(g, dtype=np.float32) for g in (two_triangles, hexagon))
    assert not nx.is_isomorphic(two_triangles, hexagon)
    for iterations in (1, 5):
        assert bool(wl_equivalent(A, B, iterations))
    assert nx_hash(two_triangles, 5) == nx_hash(hexagon, 5)


def test_karate_club_renumbered_is_equivalent_and_rewired_is_not():
    G = nx.karate_club_graph()
    A = nx.to_numpy_array(G, weight=None, dtype=np.float32)
    perm = np.random.default_rng(0).permutation(34)
    assert bool(wl_equivalent(A, A[perm][:, perm], 3))
    rewired = G.copy()
    rewired.remove_edge(0, 1)
    rewired.add_edge(1, 9)  # node 1 keeps its degree, node 0 loses one and node 9 gains one
    B = nx.to_numpy_array(rewired, weight=None, dtype=np.float32)
    assert not bool(wl_equivalent(A, B, 3))
    assert nx_hash(G, 3) != nx_hash(rewired, 3)


def test_zero_rounds_and_different_sizes():
    # 6 nodes, as on the page and in the test of two triangles: the same compiled refinements.
    ring = nx.to_numpy_array(nx.cycle_graph(6), dtype=np.float32)
    path = nx.to_numpy_array(nx.path_graph(6), dtype=np.float32)
    assert bool(wl_equivalent(ring, path, 0)) and not bool(wl_equivalent(ring, path, 1))
    assert not bool(wl_equivalent(ring, nx.to_numpy_array(nx.cycle_graph(5), dtype=np.float32), 0))


# ---- GIN: the symmetry and the bound ------------------------------------------------------------------

def numpy_params(seed, sizes):
    """Layers shaped as ``init`` makes them, He-normal weights drawn with NumPy (no random kernels to
    compile), zero biases and eps."""
    shapes = jax.eval_shape(lambda: init(jax.random.key(0), sizes))
    rng = np.random.default_rng(seed)
    draw = lambda s: (rng.standard_normal(s.shape) * np.sqrt(2 / s.shape[0]) if len(s.shape) == 2
                      else np.zeros(s.shape)).astype(np.float32)  # NumPy arrays: jnp.asarray compiles per shape
    return jax.tree.map(draw, shapes)


@pytest.fixture(scope="module")
def params():
    return numpy_params(0, (1, 16, 16, 16))


@pytest.fixture(scope="module")
def embeddings(six_node_graphs, params):
    """One batch, embedded with each aggregation (one program each): the 156 six-node graphs (ones
    as features), then an 11-node random graph with random features and the same graph with its
    nodes and edges renumbered, then a 7-node graph and two disjoint copies of it (ones). The graphs
    of a batch are disjoint, so each one's embedding is what it would get alone."""
    graphs = six_node_graphs[0]
    g = nx.gnp_random_graph(11, 0.3, seed=1)
    x11 = np.random.default_rng(2).standard_normal((11, 1)).astype(np.float32)
    s11, r11, _ = batch([g])
    rng = np.random.default_rng(3)
    perm, edge_perm = rng.permutation(11), rng.permutation(len(s11))
    inverse = np.argsort(perm)
    g7 = nx.gnp_random_graph(7, 0.4, seed=4)
    senders, receivers, graph_ids = batch(list(graphs) + [g, g, g7, nx.disjoint_union(g7, g7)])
    n6 = 6 * len(graphs)
    # The renumbered copy (graph 157, nodes n6 + 11 to n6 + 21): its edges relabelled and reordered.
    copy = (senders >= n6 + 11) & (senders < n6 + 22)
    assert copy.sum() == len(s11)
    senders[copy], receivers[copy] = n6 + 11 + inverse[s11[edge_perm]], n6 + 11 + inverse[r11[edge_perm]]
    x = np.ones((len(graph_ids), 1), np.float32)
    x[n6:n6 + 11], x[n6 + 11:n6 + 22] = x11, x11[perm]
    return {aggregation: np.asarray(apply(params, x, senders, receivers, graph_ids, num_graphs=len(graphs) + 4,
                                          aggregation=aggregation))
            for aggregation in ("sum", "mean", "max")}


def test_renumbering_nodes_and_edges_leaves_the_embedding_unchanged(embeddings):
    for aggregation in ("sum", "mean"):
        h, h_perm = embeddings[aggregation][156:158]
        np.testing.assert_allclose(h_perm, h, rtol=1e-6, atol=1e-5)


def test_sum_reads_out_two_copies_as_twice_one_and_mean_as_the_same(embeddings):
    h_sum, h_mean = embeddings["sum"][158:], embeddings["mean"][158:]
    np.testing.assert_allclose(h_sum[1], 2 * h_sum[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h_mean[1], h_mean[0], rtol=1e-6, atol=1e-6)
    assert not np.allclose(h_sum[1], h_sum[0], atol=1e-3)


def test_no_network_separates_what_wl_does_not_and_sum_separates_almost_all_it_does(six_node_graphs, six_node_wl,
                                                                                     embeddings):
    graphs, adjacency, i, j = six_node_graphs
    wl_same = six_node_wl[3]  # 3 layers see 3 rounds
    separated = {}
    for aggregation in ("sum", "mean", "max"):
        h = np.float64(embeddings[aggregation][:len(graphs)])
        distance = np.linalg.norm(h[i] - h[j], axis=1) / (1e-9 + np.linalg.norm(h[i], axis=1))
        assert distance[wl_same].max() < 1e-6  # the bound: WL-equivalent graphs get one embedding
        separated[aggregation] = int((distance[~wl_same] > 1e-4).sum())
    # Measured (random 3-layer networks of width 16, NumPy seed 0, zero biases): of the 12086 pairs that
    # WL separates, sum 12070 (the other 16 differ by about 1e-7 relative: injective in principle,
    # nearly collapsed in float32), mean 4434, max 4181 (the mean and the max lose them exactly).
    assert (~wl_same).sum() == 12086
    assert separated["sum"] > 12000
    assert separated["mean"] == 4434 and separated["max"] == 4181


# ---- It learns: the degree of regular graphs -------------------------------------------------------------

def regular_graphs(seed):
    """Balanced: 2-regular graphs (cycles, pairs of cycles) and random 3-regular graphs, of 6 to 14 nodes."""
    two = [nx.cycle_graph(n) for n in range(6, 14)] + [
        nx.disjoint_union(nx.cycle_graph(n), nx.cycle_graph(n + seed + 3)) for n in range(3, 7)]
    three = [nx.random_regular_graph(3, n, seed=seed + n) for n in (6, 8, 10, 12, 14, 6, 8, 10, 12, 14, 8, 12)]
    return two + three, np.array([0] * len(two) + [1] * len(three))


def test_gin_tells_the_degree_of_regular_graphs_and_a_mean_network_cannot():
    train, train_y = regular_graphs(0)
    test, test_y = regular_graphs(100)
    train_batch, test_batch = batch(train), batch(test)
    n_train = sum(g.number_of_nodes() for g in train)
    n_test = sum(g.number_of_nodes() for g in test)
    opt = optax.adam(0.01)

    params = {"gin": numpy_params(1, (1, 8, 8)), "W": np.zeros((16, 2), np.float32)}

    def logits(p, graph, n, num_graphs, aggregation="sum"):
        senders, receivers, graph_ids = graph
        return apply(p["gin"], jnp.ones((n, 1)), senders, receivers, graph_ids, num_graphs, aggregation) @ p["W"]

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(logits(p, train_batch, n_train, len(train)),
                                                               train_y).mean()

    @jax.jit
    def fit(p):
        def step(state, _):
            p, s = state
            updates, s = opt.update(jax.grad(loss)(p), s, p)
            return (optax.apply_updates(p, updates), s), None

        (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), None, length=100)
        # The same trained weights with mean aggregation, and untrained weights with it.
        means = [logits(q, test_batch, n_test, len(test), "mean") for q in (p, {**params, "W": p["W"]})]
        return logits(p, test_batch, n_test, len(test)), means

    gin_logits, mean_logits = fit(params)
    assert float(np.mean(np.asarray(gin_logits).argmax(1) == test_y)) == 1.0  # measured: all 24 held-out graphs
    # Every node of a regular graph sees the same mean of identical neighbours, layer after layer: with
    # any weights, the mean network gives every graph the same output, and can do no better than chance.
    for out in mean_logits:
        out = np.asarray(out)
        np.testing.assert_allclose(out, np.broadcast_to(out[0], out.shape), atol=1e-5)
    assert float(np.mean(test_y)) == 0.5


# ---- Bad input --------------------------------------------------------------------------------------

def test_bad_input_raises_clear_errors(params):
    A = nx.to_numpy_array(nx.cycle_graph(5), dtype=np.float32)
    with pytest.raises(ValueError, match=r"adjacency_1 must be symmetric"):
        wl_equivalent(np.triu(A), A, 2)
    with pytest.raises(ValueError, match=r"adjacency_2 must hold only 0 and 1"):
        wl_equivalent(A, 2 * A, 2)
    with pytest.raises(ValueError, match=r"adjacency_2 must be a square \(N, N\) matrix, got shape \(5, 4\)"):
        wl_equivalent(A, A[:, :4], 2)
    with pytest.raises(TypeError, match=r"iterations must be an int"):
        wl_equivalent(A, A, 2.0)
    senders, receivers, _ = batch([nx.cycle_graph(5)])
    with pytest.raises(ValueError, match=r"params\[0\]\['mlp'\] must read 2 features"):
        apply(params, np.ones((5, 2), np.float32), senders, receivers)
    with pytest.raises(ValueError, match=r"graph_ids must lie in \[0, 1\)"):
        apply(params, np.ones((5, 1), np.float32), senders, receivers, np.arange(5, dtype=np.int32))
    with pytest.raises(ValueError, match=r"graph_ids must have shape \(5,\)"):
        apply(params, np.ones((5, 1), np.float32), senders, receivers, np.zeros(4, np.int32))
