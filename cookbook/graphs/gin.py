r"""Graph isomorphism networks and the Weisfeiler–Lehman test
=========================================================

Message passing can tell two graphs apart no better than the Weisfeiler–Lehman colour refinement,
and a graph isomorphism network (GIN), which sums its neighbours and passes the sum through an MLP,
is as good as that test: the network to reach for when a graph's *structure* must be classified,
and the test that says what no message-passing network can see.

Equation
--------

.. math::

   \begin{aligned}
   c_v^{(t+1)} &= \operatorname{relabel}\left(c_v^{(t)},\;
      \{\!\{\, c_u^{(t)} : u \in \mathcal{N}(v) \,\}\!\}\right), \qquad c_v^{(0)} = 1, \\
   h_v^{(k)} &= \operatorname{MLP}^{(k)}\left((1 + \epsilon^{(k)})\, h_v^{(k-1)}
      + \textstyle\sum_{u \in \mathcal{N}(v)} h_u^{(k-1)}\right), \\
   h_G &= \Big\Vert_{k=1}^{K} \textstyle\sum_{v \in G} h_v^{(k)}
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`c_v^{(t)}`
     - colour of node :math:`v` after :math:`t` rounds of refinement (an integer)
     - ``colours``
     - ``(N_1 + N_2,)``
   * - :math:`\{\!\{\cdot\}\!\}`
     - a multiset: the neighbours' colours with their counts, in no order
     - ``counts``, one row per node
     - ``(N_1 + N_2, N_1 + N_2)``
   * - :math:`\operatorname{relabel}`
     - gives one new integer to each distinct pair (own colour, multiset), the same in both graphs
     - ``new``
     - ``(N_1 + N_2,)``
   * - :math:`\mathcal{N}(v)`, :math:`u`
     - the neighbours of node :math:`v`, and one of them
     - ``adjacency`` rows; ``senders`` of the edges whose ``receivers`` is :math:`v`
     - set
   * - :math:`h_v^{(k)}`
     - features of node :math:`v` after layer :math:`k` (:math:`h_v^{(0)}` the input)
     - ``h``, a row of ``x`` for :math:`k = 0`
     - ``(D_k,)``
   * - :math:`\epsilon^{(k)}`
     - learned weight of the node's own features, 0 at initialisation
     - ``params[k - 1]["eps"]``
     - scalar
   * - :math:`\operatorname{MLP}^{(k)}`
     - two-layer perceptron of layer :math:`k`
     - ``params[k - 1]["mlp"]``
     - :math:`D_{k-1} \to D_k \to D_k`
   * - :math:`h_G`, :math:`G`, :math:`K`
     - the graph's embedding: each layer's sum over the graph's nodes, concatenated over the
       :math:`K` layers
     - a row of the result of ``apply``; ``graph_ids``; ``len(params)``
     - ``(D_1 + ... + D_K,)``
   * - :math:`t`, :math:`k`, :math:`v`
     - refinement round; layer; node index
     - ``iterations`` rounds; position in ``params``; row index
     - scalar

Explanation
-----------

**The test.** Colour refinement, the 1-dimensional Weisfeiler–Lehman (WL) test, starts with one
colour for every node. In each round a node's new colour is its old colour together with the
*multiset* of its neighbours' colours, and identical pairs get identical new colours. After
:math:`t` rounds a node's colour summarises the tree of walks of length :math:`t` from it. If two
graphs end with different colour counts they are certainly not isomorphic; if the counts agree, the
test cannot tell them apart. ``wl_equivalent`` runs the refinement on both graphs at once, so that
a colour means the same thing in both, and compares the counts. It fails on the simplest
regular pair: two triangles and a hexagon. Every node of either graph has two neighbours of its own
colour, so no round ever splits a colour, though one graph is connected and the other is not.

**The bound.** :footcite:t:`xu2019powerful` and :footcite:t:`morris2019weisfeiler` proved that a
message-passing network's node features after :math:`k` layers are a function of the WL colours
after :math:`k` rounds: two nodes with the same colour get the same features, whatever the weights.
So no message-passing network separates graphs that WL does not. A network reaches the bound when
its update is *injective* on multisets, as the relabelling is. Sum aggregation followed by an MLP
can be (:doc:`message_passing` showed what the mean and the max lose), and :math:`1 + \epsilon`
keeps the node's own features apart from its neighbours' sum. The readout sums too: a graph and
two disjoint copies of it have equal means but different sums.

.. admonition:: Intuition

   Colour refinement is how you might check two seating plans for the same party without names:
   first everyone is a guest, then a guest with two neighbours, then a guest with two neighbours
   who each have three, and so on. If at some round the counts of each kind of guest differ, the
   plans differ. Two tables of three and one table of six pass every round, because every guest
   sees the same thing from their seat.

Inductive bias
--------------

GIN assumes that the graph's structure itself carries the label and gives every structure WL can
see its own embedding, so it fits structural tasks that mean or max aggregation cannot express: on
regular graphs with featureless nodes, a mean-aggregation network gives every graph the same
output, and the tests show GIN telling degree 2 from degree 3 where that network is at chance.
What WL cannot see (cycles' lengths in regular graphs, connectivity in the triangles and
hexagon), no GIN learns, however large; for that, features that break the symmetry (random or
positional features) or higher-order tests are needed. Expressive power is not generalisation:
an injective sum also separates graphs that differ only in size.

Example
-------

Two triangles and a hexagon are the same to colour refinement; a path is not:

>>> import jax, numpy as np, scipy
>>> from cookbook.graphs.gin import apply, init, wl_equivalent
>>> ring = lambda n: np.roll(np.eye(n), 1, axis=1) + np.roll(np.eye(n), -1, axis=1)
>>> two_triangles = scipy.linalg.block_diag(ring(3), ring(3))
>>> hexagon = ring(6)
>>> path = np.eye(6, k=1) + np.eye(6, k=-1)  # the hexagon without its edge from 5 to 0
>>> bool(wl_equivalent(two_triangles, hexagon, 3)), bool(wl_equivalent(hexagon, path, 3))
(True, False)

A GIN of two layers gives them the same embedding, whatever its weights:

>>> params = init(jax.random.key(0), (1, 5, 3))
>>> senders, receivers = np.nonzero(two_triangles)
>>> h_two = apply(params, np.ones((6, 1)), senders, receivers)
>>> senders, receivers = np.nonzero(hexagon)
>>> h_hex = apply(params, np.ones((6, 1)), senders, receivers)
>>> h_two.shape, bool(np.allclose(h_two, h_hex, atol=1e-5))
((1, 8), True)

Implementation notes
--------------------

``wl_equivalent`` needs no hashing: a node's signature is its colour and the counts of its
neighbours' colours, two signatures are compared through a Gram matrix of integer counts, and a
node's new colour is the index of the first node with its signature, so the refinement compiles
under :func:`jax.jit` (``iterations`` static) at a cost of :math:`O(N^3)` a round for :math:`N`
nodes in both graphs. networkx's ``weisfeiler_lehman_graph_hash`` hashes the same refinement, as in the graph kernels of
:footcite:t:`shervashidze2011weisfeiler`
(since version 3.5, ``iterations`` counts rounds from one colour); the tests check that the two
agree on every pair of graphs with 6 nodes. Stronger tests, :math:`k`-WL on tuples of nodes,
bound the higher-order networks of :footcite:t:`morris2019weisfeiler`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks
from cookbook.graphs.message_passing import aggregate, check_aggregation, check_edges, check_mlp, mlp, mlp_init

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"wl_equivalent": ("iterations",), "apply": ("num_graphs", "aggregation")}


def _adjacency(adjacency, name):
    """A square 0/1 matrix, symmetric and free of other values when concrete (checked in NumPy)."""
    A = _checks._as_array(adjacency, name)
    if not (jnp.issubdtype(A.dtype, jnp.number) or A.dtype == jnp.bool_):
        raise TypeError(f"{name} must be a numeric or boolean array, got dtype {A.dtype}")
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"{name} must be a square (N, N) matrix, got shape {tuple(A.shape)}")
    if _checks.is_concrete(A) and A.size:
        values = np.asarray(A)
        if not np.all((values == 0) | (values == 1)):
            raise ValueError(f"{name} must hold only 0 and 1 (NaN included in what is refused)")
        if not np.all(values == values.T):
            raise ValueError(f"{name} must be symmetric: colour refinement here is for undirected graphs")
        return values != 0  # booleans whatever the dtype given: one compiled refinement per size
    return A


def wl_equivalent(adjacency_1, adjacency_2, iterations):
    """True when ``iterations`` rounds of colour refinement (1-WL), from one colour for every node,
    cannot tell the undirected graphs of the dense 0/1 matrices ``adjacency_1`` (N_1, N_1) and
    ``adjacency_2`` (N_2, N_2) apart: both end with the same count of every colour.

    Under :func:`jax.jit` the values cannot be checked: any nonzero entry (NaN included) is an edge.
    """
    iterations = _checks.size(iterations, "iterations", minimum=0)
    A1, A2 = _adjacency(adjacency_1, "adjacency_1"), _adjacency(adjacency_2, "adjacency_2")
    N1, N2 = A1.shape[0], A2.shape[0]
    if N1 != N2:
        return jnp.array(False)  # a different number of nodes is a different count of colour 0
    return _wl_equivalent(A1, A2, iterations)


@functools.partial(jax.jit, static_argnums=2)
def _wl_equivalent(A1, A2, iterations):
    N1, N2 = A1.shape[0], A2.shape[0]
    M = N1 + N2
    A1, A2 = (A1 != 0).astype(jnp.int32), (A2 != 0).astype(jnp.int32)
    A = jax.scipy.linalg.block_diag(A1, A2)  # (M, M): both graphs refined together

    def refine(_, colours):
        one_hot = jax.nn.one_hot(colours, M, dtype=jnp.int32)  # (M, M)
        counts = A @ one_hot  # (M, M): row v counts the colours of v's neighbours
        gram = counts @ counts.T  # (M, M); squared distance of rows v, w: g_vv + g_ww - 2 g_vw
        norms = jnp.diagonal(gram)
        same = (norms[:, None] + norms[None, :] - 2 * gram == 0) & (colours[:, None] == colours[None, :])
        new = jnp.argmax(same, axis=1).astype(jnp.int32)  # the first node with the same signature
        return new

    colours = jax.lax.fori_loop(0, iterations, refine, jnp.zeros(M, jnp.int32))
    histogram_1 = jnp.bincount(colours[:N1], length=M)
    histogram_2 = jnp.bincount(colours[N1:], length=M)
    return jnp.all(histogram_1 == histogram_2)


def init(key, sizes):
    """GIN layers for widths ``sizes = (in, D_1, ..., D_K)``: each ``{"eps": 0, "mlp": in -> D_k -> D_k}``."""
    if not isinstance(sizes, (tuple, list)) or len(sizes) < 2:
        raise ValueError(f"sizes must be a tuple (in, D_1, ..., D_K) of at least two widths, got {sizes!r}")
    sizes = [_checks.size(n, f"sizes[{l}]") for l, n in enumerate(sizes)]
    keys = jax.random.split(key, len(sizes) - 1)
    return [{"eps": jnp.zeros(()), "mlp": mlp_init(k, (n_in, n_out, n_out))}
            for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:])]


def apply(params, x, senders, receivers, graph_ids=None, num_graphs=1, aggregation="sum"):
    """Graph embeddings (num_graphs, D_1 + ... + D_K) of node features ``x`` (N, in) on an edge list.

    ``graph_ids`` (N,) says which graph each node belongs to (a batch is one graph of disjoint
    pieces; all nodes belong to graph 0 when it is None). ``aggregation`` is used both over the
    neighbours and in the readout: ``"sum"`` is GIN; ``"mean"`` and ``"max"`` are the weaker networks
    the page compares it with.
    """
    aggregation = check_aggregation(aggregation)
    num_graphs = _checks.size(num_graphs, "num_graphs")
    if not isinstance(params, (list, tuple)) or not params:
        raise TypeError(f"params must be the non-empty list of layers that init returns, got {type(params).__name__}")
    x = _checks.float_array(x, "x", ndim=2, what=" (N, in)")
    N = x.shape[0]
    senders, receivers = check_edges(senders, receivers, N)
    if graph_ids is not None:  # None: all nodes in graph 0 (made inside the compiled core)
        graph_ids = _checks.int_array(graph_ids, "graph_ids", ndim=1, what=" (N,)")
        _checks.same_shape(graph_ids, "graph_ids", (N,), expected_from="one graph id per row of x")
        _checks.check_range(graph_ids, "graph_ids", 0, num_graphs)
    width = x.shape[1]
    for k, layer in enumerate(params):
        _checks.float_array(layer["eps"], f"params[{k}]['eps']", ndim=0, what=" (a scalar)")
        d_in, _ = check_mlp(layer["mlp"], f"params[{k}]['mlp']")
        if d_in != width:
            raise ValueError(f"params[{k}]['mlp'] must read {width} features (from x or the layer before), got {d_in}")
        width = layer["mlp"][-1]["W"].shape[1]
    return _apply(params, x, senders, receivers, graph_ids, num_graphs, aggregation)


@functools.partial(jax.jit, static_argnums=(5, 6))
def _apply(params, x, senders, receivers, graph_ids, num_graphs, aggregation):
    N = x.shape[0]
    if graph_ids is None:
        graph_ids = jnp.zeros(N, jnp.int32)
    h, pooled = x, []
    for layer in params:
        neighbours = aggregate(h.at[senders].get(mode="fill", fill_value=jnp.nan), receivers, N, aggregation)
        h = mlp(layer["mlp"], (1 + layer["eps"]) * h + neighbours)  # (N, D_k)
        pooled.append(aggregate(h, graph_ids, num_graphs, aggregation))  # (num_graphs, D_k)
    return jnp.concatenate(pooled, axis=1)
