r"""Graph transformers
==================

Self-attention over all the nodes of a graph, told where each node sits by eigenvectors of the
graph Laplacian and how far apart two nodes are by a learned bias per distance: the model to reach
for when what matters is spread across a graph, farther than a few rounds of message passing reach.

Equation
--------

.. math::

   \begin{aligned}
   L &= I - D^{-1/2} A D^{-1/2} = U \Lambda U^\top, \qquad
   p_i = \left(s_1 U_{i,2},\, \dots,\, s_m U_{i,m+1}\right), \quad s \in \{-1, 1\}^m, \\
   h_i &= W_x x_i + W_p p_i, \qquad
   \alpha^{(c)}_{ij} = \operatorname*{softmax}_{j \,:\, M_{ij}}\left(
      \frac{q^{(c)}_i \cdot k^{(c)}_j}{\sqrt{d}} + \beta^{(c)}_{\phi(i, j)} \right), \\
   \hat{h}_i &= \operatorname{LN}\Big(h_i + \big(\hat{A} H W_{\text{loc}}\big)_i\Big)
      + \operatorname{LN}\Big(h_i + W_{\text{O}} \big\Vert_{c} \textstyle\sum_{j} \alpha^{(c)}_{ij} v^{(c)}_j\Big), \\
   h'_i &= \operatorname{LN}\left(\hat{h}_i + \operatorname{MLP}(\hat{h}_i)\right)
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`A`, :math:`D`, :math:`I`
     - adjacency matrix (symmetric, 0/1), its diagonal matrix of degrees, the identity
     - ``adjacency``; the degrees are its row sums, inside ``normalized_adjacency``
     - ``(N, N)``
   * - :math:`L`
     - normalised graph Laplacian
     - ``normalized_laplacian``
     - ``(N, N)``
   * - :math:`U`, :math:`\Lambda`
     - its eigenvectors (columns) and eigenvalues, in increasing order
     - ``eigenvectors``, ``eigenvalues``
     - ``(N, N)``, ``(N,)``
   * - :math:`p_i`, :math:`m`, :math:`s`
     - positional encoding of node :math:`i`: :math:`m` eigenvectors after the first, with signs
       :math:`s` (random during training)
     - row :math:`i` of ``pe`` from ``laplacian_pe``; ``k``; ``random_sign_flip``
     - ``(m,)``
   * - :math:`x_i`, :math:`h_i`, :math:`H`, :math:`h'_i`
     - input features of node :math:`i`; its state entering a layer (all nodes: :math:`H`); leaving it
     - ``x``, ``h``
     - ``(F,)``, ``(D_h,)``, ``(N, D_h)``
   * - :math:`W_x`, :math:`W_p`
     - embeddings of the features and of the positional encoding
     - ``params["embed"]["W_x"]``, ``params["embed"]["W_p"]``
     - ``(F, D_h)``, ``(m, D_h)``
   * - :math:`q^{(c)}_i`, :math:`k^{(c)}_j`, :math:`v^{(c)}_j`, :math:`d`
     - query, key, value of head :math:`c`, and their width
     - ``q``, ``k``, ``v`` in ``attention``; ``d``
     - ``(d,)``
   * - :math:`\beta^{(c)}`, :math:`\phi(i, j)`
     - learned bias of head :math:`c` per distance; shortest-path distance, capped
     - ``params["spd_bias"]``; ``shortest_path_distances``
     - ``(max_distance + 1,)``; int
   * - :math:`M_{ij}`
     - whether node :math:`i` may attend to node :math:`j` (all pairs, or neighbours and self)
     - ``mask``
     - ``(N, N)`` bool
   * - :math:`\alpha^{(c)}_{ij}`
     - attention weight of node :math:`i` on node :math:`j`, head :math:`c`
     - ``alpha``
     - ``(C, N, N)``
   * - :math:`\hat{A}`, :math:`W_{\text{loc}}`
     - GCN-normalised adjacency with self-loops; weight of the local message passing
     - ``normalized_adjacency``; ``W_local``
     - ``(N, N)``; ``(D_h, D_h)``
   * - :math:`W_{\text{O}}`
     - output projection of the concatenated heads
     - ``W_o``
     - ``(D_h, D_h)``
   * - :math:`\hat{h}_i`
     - sum of the local and the global branch
     - ``h_hat``
     - ``(D_h,)``
   * - :math:`i`, :math:`j`, :math:`c`
     - node indices; head index
     - rows of ``h``; the head axis
     - int

Explanation
-----------

A transformer layer (:doc:`/docs/chapters/attention/multi_head`) lets every token attend to every
other; on a graph, every node attends to every node, and one layer connects nodes that message
passing (:doc:`message_passing`) would need many rounds to join. Without more, attention ignores
the edges altogether: it is permutation equivariant, and a graph is only a set to it. Two
ingredients give the structure back.

**Positions from the Laplacian.** On a sequence, a position is a number; a graph has no first
node. The eigenvectors of the normalised Laplacian :math:`L` are the graph's analogue of sines
and cosines: on a connected graph the first, of eigenvalue 0, is proportional to the square
roots of the degrees and says nothing about position, and the next ones vary slowly along the
graph, so nearby nodes get nearby coordinates (Laplacian eigenmaps
:footcite:p:`belkin2003laplacian`). :footcite:t:`dwivedi2021generalization` give each node the
entries :math:`p_i` of the :math:`m` eigenvectors after the first. These encodings carry a
trap: if :math:`u` is an eigenvector, so is :math:`-u`, and a solver returns either. Each graph has
:math:`2^m` equally valid encodings, and a network that learned one sign misreads the other. The
remedy of :footcite:t:`dwivedi2023benchmarking` is to flip the signs at random during training,
so that the network learns not to rely on them; where eigenvalues repeat (a cycle, a grid), any
rotation of the eigenspace is valid too, and only sign- and basis-invariant networks
:footcite:p:`lim2023sign` remove the ambiguity completely.

The first two encodings of a 6 x 10 grid, and the negative of the first, as colours of its nodes:

.. plot::

   import jax.numpy as jnp
   from cookbook.graphs.graph_transformer import laplacian_pe
   rows, cols = 6, 10
   node = np.arange(rows * cols).reshape(rows, cols)
   A = np.zeros((rows * cols, rows * cols), np.float32)
   A[node[:, :-1].ravel(), node[:, 1:].ravel()] = 1.0  # edges along the rows
   A[node[:-1, :].ravel(), node[1:, :].ravel()] = 1.0  # edges along the columns
   pe = np.asarray(laplacian_pe(jnp.asarray(A + A.T), 2))
   fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.0))
   for ax, values, title in zip(axes, (pe[:, 0], pe[:, 1], -pe[:, 0]),
                                ("first encoding", "second encoding", "first, sign flipped")):
       ax.imshow(values.reshape(rows, cols), cmap="RdBu_r", vmin=-0.3, vmax=0.3)
       ax.set_title(title, fontsize=8)
       ax.set_xticks([])
       ax.set_yticks([])
   plt.tight_layout()

**Distances as biases.** Graphormer :footcite:p:`ying2021transformers` adds to each attention
score a learned scalar :math:`\beta_{\phi(i, j)}` indexed by the shortest-path distance between the
two nodes, one per head, so that a head can look near, far, or at a given distance (the paper
shares the biases across layers; here each layer has its own). Distances of ``max_distance`` or
more and unreachable nodes share the last entry. Masking the scores to the
neighbours and the node itself (:math:`M = A + I`) instead gives the sparse attention of
:footcite:t:`dwivedi2021generalization`: a softmax over each node's neighbours, which is message
passing with attention weights, as in :doc:`gat`.

**The GPS layer.** :footcite:t:`rampasek2022recipe` run a local message-passing branch (here a GCN
step, :doc:`gcn`) and the global attention side by side, each with a residual connection and
normalisation (batch normalisation in the paper, layer normalisation here, which needs no batch),
add them, and finish with an MLP. The local branch keeps the sparse structure cheap and exact; the
global branch carries information across the graph in one step.

.. admonition:: Intuition

   Message passing is a rumour passed from neighbour to neighbour; attention is a conference call
   in which everyone can hear everyone. The Laplacian positions are seat numbers read off the
   office floor plan, which some people read from the left and some from the right; the distance
   bias is knowing how many corridors separate you from each speaker.

Inductive bias
--------------

Global attention assumes that any two nodes may matter to each other, however far apart: it needs
no depth to relate distant nodes, and it pays :math:`O(N^2)` per layer for it, where message
passing pays per edge. It assumes less locality than message passing and so learns structure
from data that message passing has built in: without positions or distance biases it sees a
set. The tests show the gain: on a 16-node cycle with two marked nodes, one GPS layer with global
attention and distance biases learns the marked nodes' distance (at least 95 % of the 120 pairs;
all of them when measured), while the same layer restricted to neighbours cannot tell distances 3
to 8 apart and labels at most 40 % of the pairs. The Laplacian encoding is equivariant only up to
the signs (and bases) of its eigenvectors; random flips teach the network to tolerate them, but
nothing makes it exactly invariant to them.

Example
-------

The Laplacian encoding of a path of 5 nodes: the second eigenvector runs from one end to the
other (shown with its first entry made positive, since the solver may return either sign), and its
negative is an equally valid eigenvector:

>>> import jax, numpy as np
>>> from cookbook.graphs.graph_transformer import (apply, init, laplacian_pe, normalized_laplacian,
...     shortest_path_distances)
>>> A = np.eye(5, k=1) + np.eye(5, k=-1)  # the path 0 - 1 - 2 - 3 - 4
>>> pe = np.asarray(laplacian_pe(A, 2))
>>> np.round(pe[:, 0] * np.sign(pe[0, 0]), 4) + 0.0  # (+ 0.0 turns a -0 into 0)
array([ 0.5,  0.5,  0. , -0.5, -0.5], dtype=float32)
>>> L = np.asarray(normalized_laplacian(A))
>>> eigenvalue = pe[:, 0] @ L @ pe[:, 0]
>>> bool(np.allclose(L @ -pe[:, 0], eigenvalue * -pe[:, 0], atol=1e-5))
True
>>> shortest_path_distances(A, 3)
Array([[0, 1, 2, 3, 3],
       [1, 0, 1, 2, 3],
       [2, 1, 0, 1, 2],
       [3, 2, 1, 0, 1],
       [3, 3, 2, 1, 0]], dtype=int32)

During training, each step draws new signs:

>>> from cookbook.graphs.graph_transformer import random_sign_flip
>>> flipped = random_sign_flip(jax.random.key(1), pe)
>>> bool(np.allclose(np.abs(flipped), np.abs(pe)))
True

A graph transformer of two GPS layers on the path, with 3 input features; renumbering the nodes
(and their encodings) renumbers the output:

>>> params = init(jax.random.key(0), in_size=3, pe_size=2, d_model=8, heads=2, num_layers=2,
...               out_size=4, max_distance=3)
>>> x = np.linspace(-1.0, 1.0, 15).reshape(5, 3)
>>> y = apply(params, x, A, pe)
>>> y.shape
(5, 4)
>>> perm = np.array([3, 0, 4, 1, 2])
>>> y_perm = apply(params, x[perm], A[perm][:, perm], pe[perm])
>>> bool(np.allclose(y_perm, np.asarray(y)[perm], atol=1e-5))
True

Attention masked to the neighbours is local, global attention is not: changing node 4 changes what
node 0 receives only when node 0 may attend to everyone:

>>> from cookbook.graphs.graph_transformer import attention
>>> layer, distances = params["layers"][0]["attention"], shortest_path_distances(A, 3)
>>> h = np.linspace(-1.0, 1.0, 40).reshape(5, 8)
>>> h_changed = h.copy()
>>> h_changed[4] = 5.0
>>> neighbours, everyone = (A != 0) | np.eye(5, dtype=bool), np.ones((5, 5), dtype=bool)
>>> [bool(np.allclose(attention(layer, h, distances, mask)[0], attention(layer, h_changed, distances, mask)[0]))
...  for mask in (neighbours, everyone)]
[True, False]

Implementation notes
--------------------

``laplacian_pe`` calls ``jnp.linalg.eigh``, :math:`O(N^3)`, once per graph: in practice the
encodings are computed when the data set is prepared, for the smallest :math:`m` eigenvalues only
(Lanczos), and padded with zeros for graphs with fewer than :math:`m + 1` nodes (``laplacian_pe``
refuses them instead). Under :func:`jax.jit` the adjacency is not checked for symmetry, and
``jnp.linalg.eigh`` uses the symmetric part of the Laplacian of whatever it is given. The dense :math:`N \times N` attention suits graphs of up to a few thousand nodes; GPS
replaces it with linear attention (:doc:`/docs/chapters/attention/linear_attention`) or
sparse patterns for larger ones. Graphormer also adds a degree embedding to the input and an
encoding of the edges along shortest paths, and the tests' learning task leaves out the Laplacian
encoding on purpose: on one fixed cycle it would give each node an absolute position, from which
even message passing can compute distances.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks
from cookbook.graphs.gcn import normalized_adjacency
from cookbook.graphs.message_passing import mlp
from cookbook.normalization.layer_norm import layer_norm

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"laplacian_pe": ("k",), "random_sign_flip": (), "shortest_path_distances": ("max_distance",),
       "attention": (), "apply": ("global_attention",)}


def _square(adjacency):
    A = _checks.adjacency_array(adjacency, "adjacency")
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"adjacency must be square (N, N), got shape {tuple(A.shape)}")
    return A


# ---- Positions: Laplacian eigenvectors ----------------------------------------------------------

def normalized_laplacian(adjacency):
    """``I - D^-1/2 A D^-1/2`` of a dense (N, N) ``adjacency`` without self-loops (an isolated node
    gets a 1 on the diagonal and zeros elsewhere)."""
    return _laplacian(_square(adjacency))


@jax.jit
def _laplacian(A):
    return jnp.eye(A.shape[0], dtype=A.dtype) - normalized_adjacency(A, add_self_loops=False)


def laplacian_pe(adjacency, k):
    """The ``k`` eigenvectors of the normalised Laplacian after the first (smallest eigenvalues,
    increasing), as node encodings (N, k); each column's sign is whatever the solver returns."""
    A = _square(adjacency)
    k = _checks.size(k, "k")
    N = A.shape[0]
    if k > N - 1:
        raise ValueError(f"k must be at most N - 1 = {N - 1} (the eigenvectors after the first), got {k}")
    if _checks.is_concrete(A) and not np.array_equal(np.asarray(A), np.asarray(A).T):
        raise ValueError("adjacency must be symmetric (an undirected graph) for its Laplacian's eigenvectors")
    return _laplacian_pe(A, k)


@functools.partial(jax.jit, static_argnums=1)
def _laplacian_pe(A, k):
    eigenvalues, eigenvectors = jnp.linalg.eigh(_laplacian(A))  # increasing eigenvalues
    return eigenvectors[:, 1:k + 1]


def random_sign_flip(key, pe):
    """``pe`` (N, k) with each column multiplied by an independent random sign: an equally valid
    encoding of the same graph, drawn afresh at every training step."""
    pe = _checks.float_array(pe, "pe", ndim=2, what=" (N, k)")
    return _random_sign_flip(key, pe)


@jax.jit
def _random_sign_flip(key, pe):
    signs = jax.random.rademacher(key, (pe.shape[1],), dtype=pe.dtype)  # (k,) of +-1
    return pe * signs[None, :]


# ---- Distances ----------------------------------------------------------------------------------

def shortest_path_distances(adjacency, max_distance):
    """Hops from node ``i`` to node ``j`` along the edges of ``adjacency`` (N, N) (an edge where an
    entry is nonzero), capped at ``max_distance``, which also marks nodes that cannot be reached:
    int32 (N, N), by breadth-first search over all sources at once. A NaN entry is refused when
    concrete; under :func:`jax.jit` it counts as an edge."""
    A = _checks.check_no_nan(_square(adjacency), "adjacency")
    max_distance = _checks.size(max_distance, "max_distance")
    return _distances(A, max_distance)


@functools.partial(jax.jit, static_argnums=1)
def _distances(A, max_distance):
    N = A.shape[0]
    edges = (A != 0).astype(jnp.float32)
    reached = jnp.eye(N, dtype=bool)
    frontier = reached
    distances = jnp.where(reached, 0, max_distance)
    for hops in range(1, max_distance):  # the frontier of each source grows by one hop a round
        frontier = ((frontier.astype(jnp.float32) @ edges) > 0) & ~reached
        distances = jnp.where(frontier, hops, distances)
        reached = reached | frontier
    return distances.astype(jnp.int32)


# ---- Attention with structural biases ------------------------------------------------------------

def _check_attention_params(params, name="params"):
    if not isinstance(params, dict) or set(params) != {"W_q", "W_k", "W_v", "W_o", "spd_bias"}:
        raise ValueError(f"{name} must be a dict with 'W_q', 'W_k', 'W_v', 'W_o' and 'spd_bias', as init makes "
                         f"for each layer's ['attention']")
    D = _checks.float_array(params["W_q"], f"{name}['W_q']", ndim=2, what=" (D, D)").shape[0]
    for key in ("W_q", "W_k", "W_v", "W_o"):
        W = _checks.float_array(params[key], f"{name}['{key}']", ndim=2, what=" (D, D)")
        _checks.same_shape(W, f"{name}['{key}']", (D, D), expected_from=f"D = {D} from {name}['W_q']")
    bias = _checks.float_array(params["spd_bias"], f"{name}['spd_bias']", ndim=2, what=" (heads, max_distance + 1)")
    heads = bias.shape[0]
    if D % heads:
        raise ValueError(f"{name}['spd_bias'] must have a number of heads (rows) that divides D = {D}, got {heads}")
    return D, heads, bias.shape[1] - 1


def attention(params, h, distances, mask):
    """Multi-head attention of every node over the nodes ``mask`` (N, N) allows, with the bias
    ``params["spd_bias"][c, distances[i, j]]`` added to the score of head ``c``: (N, D).

    ``distances`` (N, N) must lie in [0, max_distance] (checked when concrete; under :func:`jax.jit`
    an entry out of range gives a NaN bias, which shows). A row of ``mask`` that allows nothing gives
    zeros.
    """
    D, heads, max_distance = _check_attention_params(params)
    h = _checks.float_array(h, "h", ndim=2, what=" (N, D)")
    N = h.shape[0]
    _checks.same_shape(h, "h", (N, D), expected_from="D from params")
    distances = _checks.int_array(distances, "distances", ndim=2, what=" (N, N)")
    _checks.same_shape(distances, "distances", (N, N), expected_from="N from h")
    _checks.check_range(distances, "distances", 0, max_distance + 1)
    mask = _checks._as_array(mask, "mask")
    if mask.dtype != jnp.bool_:
        raise TypeError(f"mask must be boolean (True where node i may attend to node j), got dtype {mask.dtype}")
    _checks.same_shape(mask, "mask", (N, N), expected_from="N from h")
    return _attention(params, h, distances, mask)


@jax.jit
def _attention(params, h, distances, mask):
    N, D = h.shape
    heads = params["spd_bias"].shape[0]
    d = D // heads
    q, k, v = ((h @ params[key]).reshape(N, heads, d) for key in ("W_q", "W_k", "W_v"))  # (N, C, d)
    scores = jnp.einsum("icd,jcd->cij", q, k) / np.sqrt(d)  # (C, N, N)
    bias = params["spd_bias"].at[:, distances].get(mode="fill", fill_value=jnp.nan)  # (C, N, N)
    scores = jnp.where(mask[None], scores + bias, jnp.finfo(scores.dtype).min)
    alpha = jax.nn.softmax(scores, axis=-1) * mask[None]  # a row that allows nothing: zeros
    out = jnp.einsum("cij,jcd->icd", alpha, v).reshape(N, D)  # heads side by side
    return out @ params["W_o"]


# ---- The GPS layer and the model -----------------------------------------------------------------

def _layer(params, h, A_hat, distances, mask):
    local = layer_norm(h + A_hat @ (h @ params["W_local"]), **params["ln_local"])
    global_ = layer_norm(h + _attention(params["attention"], h, distances, mask), **params["ln_attention"])
    h_hat = local + global_
    return layer_norm(h_hat + mlp(params["mlp"], h_hat), **params["ln_out"])


@functools.lru_cache(maxsize=32)
def _shapes(in_size, pe_size, d_model, heads, num_layers, out_size, max_distance):
    """The parameter tree as ``init`` builds it, with shapes in place of arrays."""
    D = d_model
    norm = {"scale": (D,), "bias": (D,)}
    layer = {"W_local": (D, D),
             "attention": {"W_q": (D, D), "W_k": (D, D), "W_v": (D, D), "W_o": (D, D),
                           "spd_bias": (heads, max_distance + 1)},
             "mlp": [{"W": (D, 2 * D), "b": (2 * D,)}, {"W": (2 * D, D), "b": (D,)}],
             "ln_local": norm, "ln_attention": norm, "ln_out": norm}
    return {"embed": {"W_x": (in_size, D), "W_p": (pe_size, D), "b": (D,)},
            "layers": [layer] * num_layers, "out": {"W": (D, out_size), "b": (out_size,)}}


def init(key, *, in_size, pe_size, d_model, heads, num_layers, out_size, max_distance):
    """Parameters of the input embedding, ``num_layers`` GPS layers and a linear read-out per node.

    Weight matrices are normal with variance 1 / fan-in (one draw cut into pieces); biases and the
    distance biases start at 0, layer-norm scales at 1."""
    sizes = [_checks.size(v, n) for v, n in ((in_size, "in_size"), (pe_size, "pe_size"), (d_model, "d_model"),
                                             (heads, "heads"), (num_layers, "num_layers"), (out_size, "out_size"),
                                             (max_distance, "max_distance"))]
    if sizes[2] % sizes[3]:
        raise ValueError(f"d_model must be a multiple of heads, got d_model={sizes[2]} and heads={sizes[3]}")
    return _init(key, tuple(sizes))


@functools.partial(jax.jit, static_argnums=1)  # one compiled program per configuration
def _init(key, sizes):
    flat, treedef = jax.tree_util.tree_flatten_with_path(_shapes(*sizes), is_leaf=lambda s: isinstance(s, tuple))
    names = [str(path[-1].key) for path, _ in flat]  # the dict key of each leaf: W_q, b, scale, ...
    counts = [int(np.prod(shape)) if name.startswith("W") else 0 for name, (_, shape) in zip(names, flat)]
    draws = jnp.split(jax.random.normal(key, (sum(counts),)), np.cumsum(counts)[:-1].tolist())
    out = []
    for name, (_, shape), draw in zip(names, flat, draws):
        if name.startswith("W"):  # a weight matrix
            out.append(draw.reshape(shape) / np.sqrt(shape[0]))
        else:  # biases, distance biases and layer-norm shifts at 0, layer-norm scales at 1
            out.append(jnp.full(shape, 1.0 if name == "scale" else 0.0))
    return jax.tree.unflatten(treedef, out)


def _check_params(params):
    try:
        W_x, W_o = params["embed"]["W_x"], params["layers"][0]["attention"]
        sizes = (jnp.shape(W_x)[0], jnp.shape(params["embed"]["W_p"])[0], jnp.shape(W_x)[1],
                 jnp.shape(W_o["spd_bias"])[0], len(params["layers"]), jnp.shape(params["out"]["W"])[1],
                 jnp.shape(W_o["spd_bias"])[1] - 1)
    except (KeyError, IndexError, TypeError):
        raise ValueError("params must be the tree that init(key, in_size=..., ...) returns") from None
    like = jax.tree.map(lambda s: np.empty(s, np.float32), _shapes(*sizes), is_leaf=lambda s: isinstance(s, tuple))
    _checks.same_tree(params, "params", like, "the parameters init makes")
    return sizes


def apply(params, x, adjacency, pe, global_attention=True):
    """Node outputs (N, out_size) of the graph transformer on node features ``x`` (N, F), a dense
    ``adjacency`` (N, N) and positional encodings ``pe`` (N, m). With ``global_attention=False``
    every node attends only to its neighbours and itself: a message-passing network."""
    if not isinstance(global_attention, bool):
        raise TypeError(f"global_attention must be True or False, got {global_attention!r}")
    F, m, D, heads, num_layers, out_size, max_distance = _check_params(params)
    x = _checks.float_array(x, "x", ndim=2, what=" (N, F)")
    N = x.shape[0]
    _checks.same_shape(x, "x", (N, F), expected_from="F from params")
    A = _square(adjacency)
    _checks.same_shape(A, "adjacency", (N, N), expected_from="N from x")
    pe = _checks.float_array(pe, "pe", ndim=2, what=" (N, m)")
    _checks.same_shape(pe, "pe", (N, m), expected_from="N from x, m from params")
    return _apply(params, x, A, pe, global_attention, max_distance)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _apply(params, x, A, pe, global_attention, max_distance):
    N = x.shape[0]
    distances = _distances(A, max_distance)  # (N, N)
    mask = jnp.ones((N, N), bool) if global_attention else (A != 0) | jnp.eye(N, dtype=bool)
    A_hat = normalized_adjacency(A)  # with self-loops, for the local branch
    embed = params["embed"]
    h = x @ embed["W_x"] + pe @ embed["W_p"] + embed["b"][None, :]  # (N, D)
    for layer in params["layers"]:
        h = _layer(layer, h, A_hat, distances, mask)
    return h @ params["out"]["W"] + params["out"]["b"][None, :]
