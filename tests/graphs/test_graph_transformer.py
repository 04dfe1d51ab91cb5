import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import optax
import pytest
from scipy.sparse.csgraph import shortest_path

from cookbook.graphs.gat import segment_softmax
from cookbook.graphs.graph_transformer import (apply, attention, init, laplacian_pe, normalized_laplacian,
                                               random_sign_flip, shortest_path_distances)

N, F, M, D, HEADS, OUT, MAX_DISTANCE = 11, 3, 5, 8, 2, 7, 4


def numpy_params(seed, **kwargs):
    """Parameters shaped as ``init`` makes them, every leaf drawn with NumPy (biases, distance
    biases and layer-norm parameters too, so that each is exercised), without a random kernel."""
    shapes = jax.eval_shape(lambda: init(jax.random.key(0), **kwargs))
    rng = np.random.default_rng(seed)
    # Cast in NumPy: jnp.asarray(float64, jnp.float32) would compile a conversion for every leaf's shape.
    return jax.tree.map(lambda s: jnp.asarray((rng.standard_normal(s.shape) / np.sqrt(s.shape[0])).astype(np.float32)),
                        shapes)


def init_like(seed, **kwargs):
    """``init``'s parameters drawn with NumPy: weights normal with variance 1 / fan-in, layer-norm
    scales 1, every other leaf 0."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(jax.eval_shape(lambda: init(jax.random.key(0), **kwargs)))
    rng = np.random.default_rng(seed)
    leaves = [rng.standard_normal(s.shape) / np.sqrt(s.shape[0]) if str(path[-1].key).startswith("W")
              else np.full(s.shape, 1.0 if str(path[-1].key) == "scale" else 0.0) for path, s in flat]
    return jax.tree.unflatten(treedef, [jnp.asarray(leaf.astype(np.float32)) for leaf in leaves])


@pytest.fixture(scope="module")
def setup():
    # A connected random graph whose Laplacian has distinct eigenvalues (so eigenvectors are unique up to sign).
    graph = nx.connected_watts_strogatz_graph(N, 4, 0.5, seed=3)
    # NumPy arrays: the recipe's functions take them as they are, and the tests index them without compiling.
    A = nx.to_numpy_array(graph).astype(np.float32)
    x = np.random.default_rng(1).standard_normal((N, F)).astype(np.float32)
    params = numpy_params(2, in_size=F, pe_size=M, d_model=D, heads=HEADS, num_layers=2, out_size=OUT,
                          max_distance=MAX_DISTANCE)
    return A, x, params


# ---- Against references ----------------------------------------------------------------------------

def test_eigenvectors_match_numpy_eigh_up_to_sign(setup):
    A, _, _ = setup
    A64 = np.float64(A)
    d = A64.sum(1)
    L64 = np.eye(N) - A64 / np.sqrt(np.outer(d, d))
    np.testing.assert_allclose(normalized_laplacian(A), L64, atol=1e-6)
    values, vectors = np.linalg.eigh(L64)
    # The first eigenvector (eigenvalue 0) is proportional to the square roots of the degrees: no position.
    first = vectors[:, 0] * np.sign(vectors[0, 0])
    np.testing.assert_allclose(first, np.sqrt(d) / np.linalg.norm(np.sqrt(d)), atol=1e-10)
    assert abs(values[0]) < 1e-12
    assert np.min(np.diff(values[:M + 2])) > 1e-2  # distinct: each eigenvector is unique up to its sign
    pe = np.asarray(laplacian_pe(A, M))
    want = vectors[:, 1:M + 1]
    signs = np.sign(np.sum(pe * want, axis=0))
    np.testing.assert_allclose(pe * signs, want, atol=1e-4)
    np.testing.assert_allclose(np.sum(pe * (np.float64(normalized_laplacian(A)) @ pe), axis=0), values[1:M + 1],
                               atol=1e-5)


def test_shortest_path_distances_match_scipy(setup):
    A, _, _ = setup
    want = shortest_path(np.asarray(A), unweighted=True)
    np.testing.assert_array_equal(shortest_path_distances(A, MAX_DISTANCE), np.minimum(want, MAX_DISTANCE))
    # Two components and an isolated node: the nodes not reached are in the last bucket (5 nodes and a cap
    # of 3, the page's program).
    two = np.zeros((5, 5), np.float32)
    two[[0, 1, 2, 3], [1, 0, 3, 2]] = 1
    np.testing.assert_array_equal(np.asarray(shortest_path_distances(two, 3))[0], [0, 1, 3, 3, 3])


def test_attention_masked_to_neighbours_is_message_passing(setup):
    # Attention whose mask is A + I equals messages along the edges (self-loops added), each receiver
    # normalising its incoming scores with a segment softmax, and a segment sum of the weighted values.
    A, x, params = setup
    p = params["layers"][0]["attention"]
    h = np.random.default_rng(5).standard_normal((N, D)).astype(np.float32)
    distances = shortest_path_distances(A, MAX_DISTANCE)
    mask = (A != 0) | np.eye(N, dtype=bool)
    got = attention(p, h, distances, mask)

    receivers, senders = np.nonzero(np.asarray(mask))  # edge j -> i for every allowed (i, j)
    d = D // HEADS
    q, k, v = ((np.float64(h) @ np.float64(p[key])).reshape(N, HEADS, d) for key in ("W_q", "W_k", "W_v"))
    bias = np.float64(p["spd_bias"])[:, np.asarray(distances)[receivers, senders]].T  # (E, heads)
    logits = np.sum(q[receivers] * k[senders], axis=-1) / np.sqrt(d) + bias
    weights = np.asarray(segment_softmax(logits.astype(np.float32), receivers, N))  # (E, heads)
    messages = (weights[:, :, None] * v[senders]).reshape(-1, D)
    want = np.zeros((N, D))
    np.add.at(want, receivers, messages)  # the segment sum at each receiver
    np.testing.assert_allclose(got, want @ np.float64(p["W_o"]), rtol=1e-5, atol=1e-5)


# ---- The symmetry --------------------------------------------------------------------------------

def test_permutation_equivariance_with_permuted_encodings(setup):
    A, x, params = setup
    pe = np.asarray(laplacian_pe(A, M))
    perm = np.random.default_rng(6).permutation(N)
    A_perm = A[perm][:, perm]
    for global_attention in (True, False):
        y = apply(params, x, A, pe, global_attention=global_attention)
        y_perm = apply(params, x[perm], A_perm, pe[perm], global_attention=global_attention)
        np.testing.assert_allclose(y_perm, y[perm], rtol=1e-5, atol=1e-5)
    # The encodings of the renumbered graph are the renumbered encodings, up to the sign of each column.
    pe_perm = np.asarray(laplacian_pe(A_perm, M))
    signs = np.sign(np.sum(pe_perm * pe[perm], axis=0))
    np.testing.assert_allclose(pe_perm * signs, pe[perm], atol=1e-4)


def test_sign_flips_are_valid_encodings_the_network_is_not_invariant_to(setup):
    A, x, params = setup
    pe = np.asarray(laplacian_pe(A, M))
    flipped = np.asarray(random_sign_flip(jax.random.key(0), pe))
    signs = (flipped / pe)[0]
    assert set(np.round(signs)) <= {-1.0, 1.0}
    np.testing.assert_allclose(flipped, pe * signs[None, :], rtol=1e-6)
    L = np.asarray(normalized_laplacian(A))
    eigenvalues = np.sum(pe * (L @ pe), axis=0)
    # Both signs are eigenvectors with the same eigenvalue: equally valid encodings of the same graph.
    np.testing.assert_allclose(L @ flipped, flipped * eigenvalues[None, :], atol=1e-5)
    # ... which the network reads differently (hence random flips during training).
    one_flipped = pe.copy()
    one_flipped[:, 0] *= -1.0
    assert not np.allclose(apply(params, x, A, one_flipped), apply(params, x, A, pe), atol=1e-3)


# ---- Edge cases and gradients ----------------------------------------------------------------------

def test_a_node_that_may_attend_to_nothing_gets_zeros_and_gradients_are_finite(setup):
    A, x, params = setup
    p = params["layers"][0]["attention"]
    h = np.random.default_rng(7).standard_normal((N, D)).astype(np.float32)
    mask = np.ones((N, N), bool)
    mask[0] = False
    distances = shortest_path_distances(A, MAX_DISTANCE)
    np.testing.assert_array_equal(np.asarray(attention(p, h, distances, mask))[0], np.zeros(D))
    grads = jax.jit(jax.grad(lambda p, h: jnp.sum(attention(p, h, distances, mask) ** 2), argnums=(0, 1)))(p, h)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    assert np.abs(np.asarray(grads[0]["spd_bias"])).sum() > 0  # the distance biases get gradients


# ---- It learns: the distance between two marked nodes on a cycle ---------------------------------------

CYCLE, STEPS, LAYERS = 16, 100, 1


@pytest.fixture(scope="module")
def distance_accuracies():
    """Two models with the same parameters' shapes and one GPS layer each, trained on every pair of
    marked nodes of a 16-node cycle to classify their distance (1 to 8): one attends globally with
    distance biases, one only to its neighbours. By the cycle's symmetry, every pair at the same
    distance is the same input to a permutation-equivariant model, so the 120 pairs are the test too.

    No Laplacian encoding (zeros): on one fixed cycle it would give every node an absolute position,
    from which message passing too could compute distances."""
    A = nx.to_numpy_array(nx.cycle_graph(CYCLE)).astype(np.float32)
    i, j = np.triu_indices(CYCLE, 1)
    labels = jnp.asarray(np.minimum(j - i, CYCLE - (j - i)) - 1)  # distance 1..8 as class 0..7
    marks = np.zeros((len(i), CYCLE, 1), np.float32)
    marks[np.arange(len(i)), i, 0] = marks[np.arange(len(i)), j, 0] = 1.0
    marks = jnp.asarray(marks)
    pe = np.zeros((CYCLE, 1), np.float32)
    sizes = dict(in_size=1, pe_size=1, d_model=16, heads=2, num_layers=LAYERS, out_size=8, max_distance=8)
    params = {True: init_like(8, **sizes), False: init_like(8, **sizes)}
    opt = optax.adam(0.03)

    def logits(p, global_attention):
        return jax.vmap(lambda x: jnp.mean(apply(p, x, A, pe, global_attention=global_attention), axis=0))(marks)

    def loss(params):
        return sum(optax.softmax_cross_entropy_with_integer_labels(logits(params[g], g), labels).mean()
                   for g in (True, False))

    @jax.jit
    def train(params):
        def step(state, _):
            params, opt_state = state
            updates, opt_state = opt.update(jax.grad(loss)(params), opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=STEPS)
        return {g: logits(params[g], g) for g in (True, False)}

    out = train(params)
    return ({g: float(np.mean(np.argmax(np.asarray(out[g]), -1) == np.asarray(labels))) for g in out},
            np.asarray(out[False])[np.asarray(labels) >= 2])


def test_global_attention_learns_distances_that_message_passing_cannot(distance_accuracies):
    accuracies, far_logits = distance_accuracies
    # Measured (100 Adam steps at 0.03 on all 120 pairs, one GPS layer): global attention 1.0, neighbours 0.4
    # (48 of 120, the bound below).
    assert accuracies[True] >= 0.95
    # One round of message passing sees both marks only when they are at most 2 apart: the 88 pairs at
    # distances 3 to 8 give the same logits, up to rounding, so at best the 16 pairs of one distance
    # among them are labelled right: 32 + 16 = 48 of 120.
    np.testing.assert_allclose(far_logits, np.broadcast_to(far_logits[:1], far_logits.shape), atol=1e-4)
    assert accuracies[False] <= (32 + 16) / 120 + 0.01


# ---- Bad input -----------------------------------------------------------------------------------

def test_bad_input_raises_clear_errors(setup):
    A, x, params = setup
    pe = np.asarray(laplacian_pe(A, M))
    asymmetric, with_nan = A.copy(), A.copy()
    asymmetric[0, 5] = 1.0 - A[0, 5]
    with_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"adjacency must be symmetric"):
        laplacian_pe(asymmetric, M)
    with pytest.raises(ValueError, match=r"k must be at most N - 1 = 10"):
        laplacian_pe(A, N)
    with pytest.raises(ValueError, match=r"pe must have shape \(11, 5\)"):
        apply(params, x, A, pe[:, :3])
    with pytest.raises(ValueError, match=r"adjacency must have shape \(11, 11\)"):
        apply(params, x, A[:7, :7], pe)
    with pytest.raises(ValueError, match=r"distances must lie in \[0, 5\)"):
        attention(params["layers"][0]["attention"], np.zeros((N, D), np.float32), np.full((N, N), 5, np.int32),
                  np.ones((N, N), bool))
    with pytest.raises(TypeError, match=r"mask must be boolean"):
        attention(params["layers"][0]["attention"], np.zeros((N, D), np.float32), np.zeros((N, N), np.int32),
                  np.ones((N, N), np.float32))
    with pytest.raises(ValueError, match=r"d_model must be a multiple of heads"):
        init(jax.random.key(0), in_size=F, pe_size=M, d_model=9, heads=2, num_layers=1, out_size=OUT, max_distance=3)
    with pytest.raises(TypeError, match=r"global_attention must be True or False"):
        apply(params, x, A, pe, global_attention=1)
    with pytest.raises(ValueError, match=r"adjacency holds NaN"):
        shortest_path_distances(with_nan, MAX_DISTANCE)
