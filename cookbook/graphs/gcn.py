r"""Graph convolutional networks and GraphSAGE
==========================================

A graph convolution replaces each node's features by a degree-weighted average over itself and its
neighbours and then applies one weight matrix shared by all nodes: the simplest graph network, and
the one to try first for labelling the nodes of one graph from a few known labels.

Equation
--------

.. math::

   \begin{aligned}
   \tilde{A} &= A + I, \qquad \tilde{d}_i = \textstyle\sum_j \tilde{A}_{ij}, \qquad
   \hat{A} = \tilde{D}^{-1/2} \tilde{A} \tilde{D}^{-1/2}, \\
   H^{(l+1)} &= \sigma\left(\hat{A} H^{(l)} W^{(l)} + b^{(l)}\right)
   \quad \text{(GCN)}, \\
   h_v^{(l+1)} &= \sigma\left(\left[\, h_v^{(l)} \,\Vert\, \operatorname{mean}_{u \in \mathcal{N}(v)}
   h_u^{(l)} \right] W^{(l)} + b^{(l)}\right) \quad \text{(GraphSAGE)}, \\
   E(H) &= \operatorname{tr}\left(H^\top (I - \hat{A}) H\right)
   = \tfrac12 \textstyle\sum_{i,j} \tilde{A}_{ij}
   \left\lVert h_i / \sqrt{\tilde{d}_i} - h_j / \sqrt{\tilde{d}_j} \right\rVert^2
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`A`, :math:`A_{ij}`
     - adjacency matrix: 1 where nodes :math:`i` and :math:`j` are joined
     - ``adjacency``
     - ``(N, N)``
   * - :math:`I`
     - identity matrix: a self-loop at every node
     - ``jnp.eye``
     - ``(N, N)``
   * - :math:`\tilde{A}`, :math:`\tilde{d}_i`, :math:`\tilde{D}`
     - adjacency with self-loops, its row sums (degrees) and their diagonal matrix
     - ``A``, ``degree``
     - ``(N, N)``, ``(N,)``
   * - :math:`\hat{A}`
     - symmetrically normalised adjacency
     - ``normalized_adjacency``, ``A_hat``
     - ``(N, N)``
   * - :math:`H^{(l)}`, :math:`h_v^{(l)}`, :math:`h_i`
     - node features after layer :math:`l`, all nodes or the row of one (:math:`H^{(0)}` = input)
     - ``x``, ``h``
     - ``(N, D_l)``, ``(D_l,)``
   * - :math:`W^{(l)}`, :math:`b^{(l)}`
     - weights and bias of layer :math:`l` (GraphSAGE: :math:`W` stacks the self and neighbour halves)
     - ``params[l]["W"]``, ``params[l]["b"]``
     - ``(D_l, D_{l+1})``, ``(2 D_l, D_{l+1})``
   * - :math:`\sigma`
     - ReLU between layers; none after the last (its output is logits)
     - ``jax.nn.relu``
     - elementwise
   * - :math:`\mathcal{N}(v)`, :math:`u`, :math:`v`, :math:`i`, :math:`j`
     - the neighbours of node :math:`v`; node indices
     - ``senders`` of the edges whose ``receivers`` is :math:`v`
     - set
   * - :math:`l`
     - layer index
     - position in ``params``
     - scalar
   * - :math:`E`
     - Dirichlet energy: how much features differ across edges
     - the sum of ``dirichlet_energy``, which gives it per feature column
     - scalar

Explanation
-----------

:footcite:t:`kipf2017semi` derive the layer from spectral filters on graphs, cut down to one
hop: each node takes a weighted average of its own features and its neighbours', then all nodes
apply the same linear map. The weights of the average come from :math:`\hat{A}`. The self-loop
(:math:`A + I`) keeps a node's own features in its average. The symmetric normalisation divides the
contribution of node :math:`j` to node :math:`i` by :math:`\sqrt{\tilde{d}_i \tilde{d}_j}`, so a
hub neither drowns its neighbours nor blows up its own features, and the eigenvalues of
:math:`\hat{A}` lie in :math:`(-1, 1]`, so repeated layers do not explode. In message-passing terms
(:doc:`message_passing`) node :math:`j` sends :math:`h_j W / \sqrt{\tilde{d}_i \tilde{d}_j}` and
node :math:`i` sums; here the graph is held as a dense :math:`N \times N` matrix, which for a
small graph is one matrix product. A node without neighbours and without a self-loop has degree
0; ``normalized_adjacency`` gives it an all-zero row rather than dividing by zero.

GraphSAGE :footcite:p:`hamilton2017inductive` keeps the node's own features apart from its
neighbours' mean by concatenating the two, so a node can weigh itself differently from its
surroundings, and works on an edge list. The paper samples a fixed number of neighbours per node to
bound the cost on huge graphs and normalises each hidden layer's output to unit length; the code
uses every neighbour and keeps the normalisation.

.. admonition:: Intuition

   A graph convolution is forming an opinion by asking your friends: you listen to everybody you
   know, weighting each friend less when they have many friends of their own, and add your own view.
   Ask again and again, and everyone in a connected circle ends up with the same opinion.

**Over-smoothing.** That last sentence is the trap of deep GCNs. Each multiplication by
:math:`\hat{A}` averages neighbours, and the Dirichlet energy :math:`E(H)`, the sum over edges of
squared differences, can only fall: writing :math:`H` in the eigenvectors of :math:`\hat{A}`, one
multiplication scales the component of eigenvalue :math:`\mu` by :math:`\mu`, and
:math:`\mu^2 \le 1`. After many layers all nodes of a connected graph carry features proportional
to :math:`\sqrt{\tilde{d}_i}` and can no longer be told apart
:footcite:p:`li2018deeper,oono2020graph`. On the karate club, 32 multiplications by :math:`\hat{A}`
leave less than :math:`10^{-3}` of the energy relative to the features' size; a randomly
initialised 32-layer GCN with ReLU ends about as smooth (the tests measure both). Two or three
layers are typical.

Inductive bias
--------------

A GCN assumes *homophily*: joined nodes tend to share labels, so averaging over neighbours removes
noise rather than signal. With one labelled member per faction, two layers label the karate club
almost perfectly, because the club :footcite:p:`zachary1977information` split along its
friendships: the tests label 30 of the other 32 members (94 %), and the two missed, members 2
and 8, have friends in both factions. On graphs where neighbours tend to differ (heterophily), the averaging erases the
signal. The same weights serve every node, so a GCN needs few parameters, but the normalisation ties
it to the graph it was built for, while GraphSAGE's mean and separate self-weight run on graphs
never seen in training: the paper's *inductive* setting.

Example
-------

A path 0-1-2: the middle node has degree 3 with its self-loop, the ends 2:

>>> import jax, jax.numpy as jnp
>>> from cookbook.graphs.gcn import apply, dirichlet_energy, init, normalized_adjacency, sage_apply, sage_init
>>> A = jnp.array([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
>>> normalized_adjacency(A)
Array([[0.5   , 0.4082, 0.    ],
       [0.4082, 0.3333, 0.4082],
       [0.    , 0.4082, 0.5   ]], dtype=float32)

Each multiplication by the normalised adjacency lowers the Dirichlet energy:

>>> x = jnp.array([[1.0], [0.0], [-1.0]])
>>> A_hat = normalized_adjacency(A)
>>> [round(float(dirichlet_energy(h, A).sum()), 4) for h in (x, A_hat @ x, A_hat @ A_hat @ x)]
[1.0, 0.25, 0.0625]

A two-layer GCN and GraphSAGE on 3 nodes with 5 features each (the edge list of the same path):

>>> params = init(jax.random.key(0), (5, 7, 2))
>>> feats = jnp.linspace(-1.0, 1.0, 15).reshape(3, 5)
>>> apply(params, feats, A).shape
(3, 2)
>>> senders, receivers = jnp.array([0, 1, 1, 2]), jnp.array([1, 0, 2, 1])
>>> sage_apply(sage_init(jax.random.key(1), (5, 7, 2)), feats, senders, receivers).shape
(3, 2)

Implementation notes
--------------------

jraph's ``GraphConvolution`` computes the same layer on an edge list (``add_self_edges=True``,
``symmetric_normalization=True``), and the tests check that the two agree. For a large sparse
graph, the dense :math:`\hat{A}` costs :math:`O(N^2)` memory; the edge-list form of
:doc:`message_passing` costs :math:`O(E)`. Remedies for over-smoothing include residual
connections, normalisation layers between propagations, and decoupling propagation from depth.
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.graphs.message_passing import aggregate, check_edges, check_mlp, mlp_init

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"normalized_adjacency": ("add_self_loops",), "dirichlet_energy": (), "apply": (), "sage_apply": ()}


def _square(adjacency, name="adjacency"):
    adjacency = _checks.adjacency_array(adjacency, name)
    if adjacency.shape[0] != adjacency.shape[1]:
        raise ValueError(f"{name} must be square (N, N), got shape {tuple(adjacency.shape)}")
    return adjacency


def normalized_adjacency(adjacency, add_self_loops=True):
    """``D^-1/2 A D^-1/2`` of a dense (N, N) ``adjacency``, with ``A + I`` when ``add_self_loops``;
    the degrees are row sums, and a node of degree 0 gets a zero row and column."""
    if not isinstance(add_self_loops, bool):
        raise TypeError(f"add_self_loops must be True or False, got {add_self_loops!r}")
    return _normalized_adjacency(_square(adjacency), add_self_loops)


# Each public function checks its input, then runs one compiled core like this one: called eagerly,
# it would otherwise dispatch (and compile, for every new shape) its operations one by one.
@functools.partial(jax.jit, static_argnums=1)
def _normalized_adjacency(A, add_self_loops):
    if add_self_loops:
        A = A + jnp.eye(A.shape[0], dtype=A.dtype)
    degree = A.sum(axis=1)  # (N,)
    scale = jnp.where(degree > 0, jax.lax.rsqrt(jnp.where(degree > 0, degree, 1)), 0)
    return scale[:, None] * A * scale[None, :]


def dirichlet_energy(x, adjacency):
    """The Dirichlet energy of each feature column of ``x`` (N, D), shape (D,); their sum is
    ``tr(x^T (I - A_hat) x)``, half the sum over edges (self-loops added) of squared differences of
    degree-scaled features."""
    A = _square(adjacency)
    x = _checks.float_array(x, "x", ndim=2, what=" (N, D)")
    _checks.same_shape(x, "x", (A.shape[0], x.shape[1]), expected_from="one row per node of adjacency")
    return _dirichlet_energy(x, A)


@jax.jit
def _dirichlet_energy(x, A):
    return jnp.sum(x * (x - _normalized_adjacency(A, True) @ x), axis=0)


def init(key, sizes):
    """GCN parameters: a list of ``{"W", "b"}`` layers for the widths ``sizes = (in, hidden..., out)``."""
    return mlp_init(key, sizes)


def _check_input(params, x, name="params"):
    D, _ = check_mlp(params, name)
    x = _checks.float_array(x, "x", ndim=2, what=" (N, D)")
    return _checks.same_shape(x, "x", (x.shape[0], D), expected_from=f"D = {D} from {name}[0]['W']")


def apply(params, x, adjacency):
    """A GCN on node features ``x`` (N, sizes[0]) and a dense ``adjacency`` (N, N): logits (N, sizes[-1])."""
    x = _check_input(params, x)
    A = _square(adjacency)
    _checks.same_shape(A, "adjacency", (x.shape[0],) * 2, expected_from="N from x")
    return _apply(params, x, A)


@jax.jit
def _apply(params, x, A):
    A_hat = _normalized_adjacency(A, True)
    h = x
    for l, layer in enumerate(params):
        h = A_hat @ (h @ layer["W"]) + layer["b"][None, :]  # (N, D_{l+1})
        if l < len(params) - 1:
            h = jax.nn.relu(h)
    return h


def sage_init(key, sizes):
    """GraphSAGE parameters: per layer ``{"W", "b"}`` with ``W`` (2 in, out), the rows for the node
    itself stacked above the rows for its neighbours' mean."""
    if not isinstance(sizes, (tuple, list)) or len(sizes) < 2:
        raise ValueError(f"sizes must be a tuple (in, ..., out) of at least two widths, got {sizes!r}")
    sizes = [_checks.size(n, f"sizes[{l}]") for l, n in enumerate(sizes)]
    keys = jax.random.split(key, len(sizes) - 1)
    return [mlp_init(k, (2 * n_in, n_out))[0] for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:])]


def _check_sage(params):
    """The input width D of GraphSAGE layers whose ``W`` are (2 D_l, D_{l+1}) and chain."""
    if not isinstance(params, (list, tuple)) or not params:
        raise TypeError(f"params must be a non-empty list of {{'W', 'b'}} layers, got {type(params).__name__}")
    width = None
    for l, layer in enumerate(params):
        W = _checks.float_array(layer["W"], f"params[{l}]['W']", ndim=2, what=" (2 D_l, D_l+1)")
        if width is None:
            width = W.shape[0] // 2
        _checks.same_shape(W, f"params[{l}]['W']", (2 * width, W.shape[1]),
                           expected_from="rows for the node itself, then for its neighbours' mean")
        b = _checks.float_array(layer["b"], f"params[{l}]['b']")
        _checks.same_shape(b, f"params[{l}]['b']", W.shape[1:])
        width = W.shape[1]
    return params[0]["W"].shape[0] // 2


def sage_apply(params, x, senders, receivers):
    """GraphSAGE (mean aggregator) on node features ``x`` (N, sizes[0]) and an edge list: (N, sizes[-1]).

    Hidden layers end with ReLU and a division by the row's length; the last layer is linear.
    """
    D = _check_sage(params)
    x = _checks.float_array(x, "x", ndim=2, what=" (N, D)")
    _checks.same_shape(x, "x", (x.shape[0], D), expected_from="D from params[0]['W'], half its rows")
    N = x.shape[0]
    senders, receivers = check_edges(senders, receivers, N)
    return _sage_apply(params, x, senders, receivers)


@jax.jit
def _sage_apply(params, x, senders, receivers):
    N = x.shape[0]
    h = x
    for l, layer in enumerate(params):
        sent = h.at[senders].get(mode="fill", fill_value=jnp.nan)  # (E, D_l)
        neighbours = aggregate(sent, receivers, N, "mean")  # (N, D_l)
        h = jnp.concatenate([h, neighbours], axis=1) @ layer["W"] + layer["b"][None, :]
        if l < len(params) - 1:
            h = jax.nn.relu(h)
            h = h / jnp.maximum(jnp.linalg.norm(h, axis=1, keepdims=True), 1e-12)
    return h
