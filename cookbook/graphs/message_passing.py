r"""Message passing and graph networks
==================================

Every edge computes a message from the two nodes it joins, every node sums the messages it receives
and updates itself, and the graph as a whole is summarised from its nodes and edges: the framework
in which almost every graph neural network is written, and the one to reach for when data comes as
entities and the relations between them.

Equation
--------

One block of a graph network, for edges :math:`k` from sender :math:`s_k` to receiver :math:`r_k`:

.. math::

   \begin{aligned}
   e'_k &= \phi^{e}\left(e_k,\, v_{r_k},\, v_{s_k},\, u\right), &
   \bar{e}_i &= \rho\left(\{\, e'_k : r_k = i \,\}\right), \\
   v'_i &= \phi^{v}\left(\bar{e}_i,\, v_i,\, u\right), &
   u' &= \phi^{u}\left(\rho(\{e'_k\}),\, \rho(\{v'_i\}),\, u\right)
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`v_i`, :math:`v'_i`
     - features of node :math:`i`, before and after the block
     - row :math:`i` of ``nodes`` and of ``new_nodes``
     - ``(Dv,)``, ``(H,)``
   * - :math:`e_k`, :math:`e'_k`
     - features of edge :math:`k`, before and after
     - row :math:`k` of ``edges`` and of ``new_edges``
     - ``(De,)``, ``(H,)``
   * - :math:`s_k`, :math:`r_k`
     - the sender and the receiver of edge :math:`k` (node indices)
     - entry :math:`k` of ``senders`` and of ``receivers``
     - scalar
   * - :math:`u`, :math:`u'`
     - features of the whole graph, before and after
     - ``globals_``, ``new_globals``
     - ``(Du,)``, ``(H,)``
   * - :math:`\phi^{e}`, :math:`\phi^{v}`, :math:`\phi^{u}`
     - the edge, node and global update: small MLPs shared by every edge, node and graph
     - ``params["edge"]``, ``params["node"]``, ``params["global"]``, applied by ``mlp``
     - functions
   * - :math:`\rho`
     - aggregation of a set of vectors: their sum, mean or elementwise max
     - ``aggregate`` with ``aggregation``
     - ``(H,)``
   * - :math:`\bar{e}_i`
     - the aggregate of the messages node :math:`i` receives
     - row :math:`i` of ``incoming``
     - ``(H,)``
   * - :math:`i`, :math:`k`
     - index of a node; index of an edge
     - row indices of ``nodes`` and of ``edges``
     - scalar

Explanation
-----------

A graph is stored as an *edge list*: node features ``nodes`` (N, Dv), edge features ``edges``
(E, De), and two integer arrays ``senders`` and ``receivers`` of length E that say which nodes each
edge joins. An undirected edge is two directed ones. The block of
:footcite:t:`battaglia2018relational` updates the three levels in turn. Each edge computes its new
features, its *message*, from its own features and those of the two nodes it joins. Each node
collects the messages addressed to it with an aggregation :math:`\rho` and updates itself from the
result. The graph's global features are updated from the aggregates of all edges and all nodes.
The message-passing neural network of :footcite:t:`gilmer2017neural` is the same block without the
global level: :math:`\phi^e` is its message function and :math:`\phi^v` its update. Stacking
:math:`L` blocks lets information travel :math:`L` edges.

The gather :math:`v_{s_k}` is an indexing ``nodes[senders]``; the aggregation "over the edges whose
receiver is :math:`i`" is a *segment sum*, ``jax.ops.segment_sum(messages, receivers, N)``, which
adds row :math:`k` of the messages into row :math:`r_k` of the output in one pass over the edges. The
cost is linear in the number of edges, not quadratic in the nodes as a dense adjacency matrix would be.

.. admonition:: Intuition

   Message passing is gossip in a village. In each round everyone hears what their neighbours say,
   pools it, and updates their own view; after :math:`L` rounds a villager's view reflects everyone
   within :math:`L` handshakes. The global update is the notice on the town hall, written from what
   everybody said and read by everybody in the next round.

**The symmetry.** Nothing in the block depends on how the nodes or edges are numbered. Renumber the
nodes by a permutation (and rewrite ``senders`` and ``receivers`` accordingly) and the output
nodes are renumbered by the same permutation; reorder the edges and the output edges are reordered;
the global output does not change. This is *permutation equivariance*, and it holds because every
node and edge uses the same functions and :math:`\rho` ignores the order of its arguments.

**What each aggregation cannot count.** The mean sees only the *proportions* of a multiset of
messages: a node with one neighbour of kind :math:`a` and a node with two are the same to it. The
max sees only *which* values occur: :math:`\{a, b\}` and :math:`\{a, a, b\}` look alike, though
the mean tells these apart. The sum of features that are distinct enough keeps the multiset
itself, which is why :footcite:t:`xu2019powerful` prefer it; its price is outputs that grow with the
degree. A node that receives nothing gets zeros from all three (the max of no messages would be
:math:`-\infty`; the code returns 0, and the mean divides by at least one).

*Bad input.* ``senders`` and ``receivers`` must be integer arrays of shape (E,) with values in
:math:`[0, N)`, checked when they are concrete. Under :func:`jax.jit` an index out of range gathers
NaN features (``mode="fill"``), so the edge's message and its receiver show NaN rather than another
node's data; ``aggregate`` alone drops a message whose receiver is out of range.

Inductive bias
--------------

A graph network assumes that the data is made of entities whose interactions follow the same rules
everywhere: one edge function and one node function serve the whole graph, as one convolution
kernel serves a whole image, so the parameters do not grow with the graph and a network trained
on small graphs runs on large ones. It assumes that the numbering of the entities carries no
information, and it cannot learn anything that depends on it. It also assumes locality: one block
changes a node only through its neighbours (the global level is the one shortcut, read in the next
block), and two nodes whose neighbourhoods look alike round after round get the same output, the
limit that :doc:`gin` makes exact.

Example
-------

What each aggregation sees of the messages: node 0 receives one message 1, node 1 receives two,
node 2 none:

>>> import jax, jax.numpy as jnp
>>> from cookbook.graphs.message_passing import aggregate, apply, init
>>> messages, receivers = jnp.array([[1.0], [1.0], [1.0]]), jnp.array([0, 1, 1])
>>> for aggregation in ("sum", "mean", "max"):
...     print(aggregation, aggregate(messages, receivers, 3, aggregation)[:, 0])
sum [1. 2. 0.]
mean [1. 1. 0.]
max [1. 1. 0.]

A block on a triangle with a tail (0-1-2-0 and 2-3, each edge both ways):

>>> senders = jnp.array([0, 1, 1, 2, 2, 0, 2, 3])
>>> receivers = jnp.array([1, 0, 2, 1, 0, 2, 3, 2])
>>> params = init(jax.random.key(0), node_size=3, edge_size=2, global_size=1, hidden=5)
>>> nodes = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)
>>> edges, globals_ = jnp.ones((8, 2)), jnp.zeros((1,))
>>> new_nodes, new_edges, new_globals = apply(params, nodes, edges, senders, receivers, globals_)
>>> new_nodes.shape, new_edges.shape, new_globals.shape
((4, 5), (8, 5), (5,))

Renumbering the nodes renumbers the output nodes and leaves the global output unchanged:

>>> perm = jnp.array([2, 0, 3, 1])  # new node j is old node perm[j]
>>> inverse = jnp.argsort(perm)
>>> out = apply(params, nodes[perm], edges, inverse[senders], inverse[receivers], globals_)
>>> bool(jnp.allclose(out[0], new_nodes[perm], atol=1e-6)), bool(jnp.allclose(out[2], new_globals, atol=1e-6))
(True, True)

Implementation notes
--------------------

jraph holds the same graph in its ``GraphsTuple`` (``nodes``, ``edges``, ``senders``,
``receivers``, ``globals``, and counts ``n_node``, ``n_edge`` for a batch of graphs) and implements
this block as ``jraph.GraphNetwork``; a batch of graphs is one large graph made of disjoint
pieces, padded to fixed sizes so that :func:`jax.jit` compiles once. PyTorch Geometric stores the
same edge list as a (2, E) ``edge_index`` and calls the aggregation a *scatter*. Segment operations
are scatters into memory, which on accelerators are slower than dense matrix products; for small
dense graphs, an adjacency matrix and a matrix product (:doc:`gcn`) can be faster.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"aggregate": ("num_nodes", "aggregation"), "apply": ("aggregation",)}

AGGREGATIONS = ("sum", "mean", "max")


def check_aggregation(aggregation):
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    return aggregation


def check_edges(senders, receivers, num_nodes, num_edges=None):
    """``senders`` and ``receivers`` as integer arrays of shape (E,), in ``[0, num_nodes)`` when
    concrete; ``num_edges``, when given, is the E they must have (the rows of the edge features)."""
    senders = _checks.int_array(senders, "senders", ndim=1, what=" (E,)")
    receivers = _checks.int_array(receivers, "receivers", ndim=1, what=" (E,)")
    if num_edges is None and senders.shape != receivers.shape:
        raise ValueError(f"senders and receivers must have the same shape (E,), got senders {senders.shape} "
                         f"and receivers {receivers.shape}")
    E = senders.shape[0] if num_edges is None else num_edges
    for name, index in (("senders", senders), ("receivers", receivers)):
        _checks.same_shape(index, name, (E,), expected_from="one node index per edge, E")
        _checks.check_range(index, name, 0, num_nodes)
    return senders, receivers


def aggregate(messages, receivers, num_nodes, aggregation="sum"):
    """Row ``i`` of the result is the sum, mean or max of the ``messages`` (E, D) whose receiver is
    ``i``; zeros for a node that receives none. Shape (num_nodes, D)."""
    aggregation = check_aggregation(aggregation)
    num_nodes = _checks.size(num_nodes, "num_nodes")
    messages = _checks.float_array(messages, "messages", ndim=2, what=" (E, D)")
    receivers = _checks.int_array(receivers, "receivers", ndim=1, what=" (E,)")
    _checks.same_shape(receivers, "receivers", messages.shape[:1], expected_from="one per row of messages")
    _checks.check_range(receivers, "receivers", 0, num_nodes)
    return _aggregate(messages, receivers, num_nodes, aggregation)


@functools.partial(jax.jit, static_argnums=(2, 3))  # one program, where eagerly each step compiled its own
def _aggregate(messages, receivers, num_nodes, aggregation):
    total = jax.ops.segment_sum(messages, receivers, num_nodes)  # (N, D)
    if aggregation == "sum":
        return total
    counts = jax.ops.segment_sum(jnp.ones(receivers.shape, messages.dtype), receivers, num_nodes)[:, None]
    if aggregation == "mean":
        return total / jnp.maximum(counts, 1)
    top = jax.ops.segment_max(messages, receivers, num_nodes)  # -inf where nothing arrives
    return jnp.where(counts > 0, top, 0)


def mlp_init(key, sizes):
    """A list of ``{"W", "b"}`` layers for the widths ``sizes = (in, hidden..., out)``: He-normal
    weights, zero biases."""
    if not isinstance(sizes, (tuple, list)) or len(sizes) < 2:
        raise ValueError(f"sizes must be a tuple (in, ..., out) of at least two widths, got {sizes!r}")
    sizes = [_checks.size(n, f"sizes[{l}]") for l, n in enumerate(sizes)]
    shapes = tuple(zip(sizes[:-1], sizes[1:]))
    # One draw cut into the layers: one random-number kernel to compile rather than one per layer.
    # The draw is eager (compiled, a draw times its scale can move in the last bit, and the trained
    # figures of GCN, GIN and deep sets start from it); cutting, reshaping and scaling are one
    # compiled program instead of a dozen eager operations, with the same results bit for bit.
    z = jax.random.normal(key, (sum(n_in * n_out for n_in, n_out in shapes),))
    return _cut_and_scale(z, shapes)


@functools.partial(jax.jit, static_argnums=1)
def _cut_and_scale(z, shapes):
    ends = np.cumsum([n_in * n_out for n_in, n_out in shapes])[:-1].tolist()
    return [{"W": w.reshape(n_in, n_out) * jnp.sqrt(2.0 / n_in), "b": jnp.zeros((n_out,))}
            for w, (n_in, n_out) in zip(jnp.split(z, ends), shapes)]


def check_mlp(layers, name):
    """``(in, out)`` widths of a list of ``{"W", "b"}`` float layers that chain; a clear error naming
    ``name`` otherwise."""
    if not isinstance(layers, (list, tuple)) or not layers:
        raise TypeError(f"{name} must be a non-empty list of {{'W', 'b'}} layers, got {type(layers).__name__}")
    width = None
    for l, layer in enumerate(layers):
        W = _checks.float_array(layer["W"], f"{name}[{l}]['W']", ndim=2, what=" (in, out)")
        if width is not None:
            _checks.same_shape(W, f"{name}[{l}]['W']", (width, W.shape[1]), expected_from="to chain")
        b = _checks.float_array(layer["b"], f"{name}[{l}]['b']")
        _checks.same_shape(b, f"{name}[{l}]['b']", W.shape[1:])
        width = W.shape[1]
    return layers[0]["W"].shape[0], width


def mlp(layers, x):
    """The MLP on every row of ``x`` (M, in): ReLU between layers, a linear output. Shape (M, out)."""
    for layer in layers[:-1]:
        x = jax.nn.relu(x @ layer["W"] + layer["b"][None, :])
    return x @ layers[-1]["W"] + layers[-1]["b"][None, :]


def init(key, node_size, edge_size, global_size, hidden):
    """Parameters of one block: an MLP (in, hidden, hidden) for each of the three updates."""
    Dv, De, Du, H = (_checks.size(n, name) for n, name in (
        (node_size, "node_size"), (edge_size, "edge_size"), (global_size, "global_size"), (hidden, "hidden")))
    k_e, k_v, k_u = jax.random.split(key, 3)
    return {"edge": mlp_init(k_e, (De + 2 * Dv + Du, H, H)),
            "node": mlp_init(k_v, (H + Dv + Du, H, H)),
            "global": mlp_init(k_u, (2 * H + Du, H, H))}


def _sizes(params):
    """``(Dv, De, Du, H)`` read from the input widths of the three MLPs, checked to agree."""
    if not isinstance(params, dict) or set(params) != {"edge", "node", "global"}:
        raise ValueError(f"params must be the dict of 'edge', 'node' and 'global' MLPs that init returns, "
                         f"got {type(params).__name__} {sorted(params) if isinstance(params, dict) else ''}")
    (edge_in, H), (node_in, H_v), (global_in, H_u) = (
        check_mlp(params[level], f"params['{level}']") for level in ("edge", "node", "global"))
    Du = global_in - 2 * H
    Dv = node_in - H - Du
    De = edge_in - 2 * Dv - Du
    if min(Du, Dv, De) < 1 or H_v != H or H_u != H:
        raise ValueError("params must come from init(key, node_size, edge_size, global_size, hidden): the "
                         f"MLP widths {edge_in}->{H}, {node_in}->{H_v}, {global_in}->{H_u} do not fit together")
    return Dv, De, Du, H


def apply(params, nodes, edges, senders, receivers, globals_, aggregation="sum"):
    """One graph-network block: ``(new_nodes (N, H), new_edges (E, H), new_globals (H,))`` from
    ``nodes`` (N, Dv), ``edges`` (E, De), ``senders`` and ``receivers`` (E,), ``globals_`` (Du,)."""
    aggregation = check_aggregation(aggregation)
    Dv, De, Du, H = _sizes(params)
    nodes = _checks.float_array(nodes, "nodes", ndim=2, what=" (N, Dv)")
    edges = _checks.float_array(edges, "edges", ndim=2, what=" (E, De)")
    globals_ = _checks.float_array(globals_, "globals_", ndim=1, what=" (Du,)")
    N, E = nodes.shape[0], edges.shape[0]
    _checks.same_shape(nodes, "nodes", (N, Dv), expected_from="Dv from params")
    _checks.same_shape(edges, "edges", (E, De), expected_from="De from params")
    _checks.same_shape(globals_, "globals_", (Du,), expected_from="Du from params")
    senders, receivers = check_edges(senders, receivers, N, E)
    params = {level: [{name: _checks.float_array(layer[name], f"params['{level}'][{l}]['{name}']") for name in ("W", "b")}
                      for l, layer in enumerate(params[level])] for level in ("edge", "node", "global")}
    return _apply(params, nodes, edges, senders, receivers, globals_, aggregation)


@functools.partial(jax.jit, static_argnums=6)  # one compiled program per shape, also when called eagerly
def _apply(params, nodes, edges, senders, receivers, globals_, aggregation):
    (N, Dv), (E, De), Du = nodes.shape, edges.shape, globals_.shape[0]
    # Edge update: each edge reads its receiver, its sender and the graph.
    received = nodes.at[receivers].get(mode="fill", fill_value=jnp.nan)  # (E, Dv)
    sent = nodes.at[senders].get(mode="fill", fill_value=jnp.nan)  # (E, Dv)
    new_edges = mlp(params["edge"], jnp.concatenate(
        [edges, received, sent, jnp.broadcast_to(globals_, (E, Du))], axis=1))  # (E, H)
    # Node update: each node aggregates the messages it receives.
    incoming = aggregate(new_edges, receivers, N, aggregation)  # (N, H)
    new_nodes = mlp(params["node"], jnp.concatenate(
        [incoming, nodes, jnp.broadcast_to(globals_, (N, Du))], axis=1))  # (N, H)
    # Global update: the graph aggregates all edges and all nodes.
    edge_pool = aggregate(new_edges, jnp.zeros(E, jnp.int32), 1, aggregation)  # (1, H)
    node_pool = aggregate(new_nodes, jnp.zeros(N, jnp.int32), 1, aggregation)  # (1, H)
    new_globals = mlp(params["global"], jnp.concatenate([edge_pool, node_pool, globals_[None, :]], axis=1))[0]
    return new_nodes, new_edges, new_globals
