r"""Graph attention: GAT and GATv2
==============================

Graph attention weights each neighbour's message by a softmax over the node's neighbours of a
learned score, instead of by fixed degree weights: the layer to reach for when some neighbours
matter more than others, and in its second version, when which neighbour matters depends on the
node that asks.

Equation
--------

For an edge from sender :math:`j` to receiver :math:`i`, in each head:

.. math::

   \begin{aligned}
   \text{GAT:}\quad e_{ij} &= \operatorname{LeakyReLU}\left(a_{\text{dst}}^\top W h_i
      + a_{\text{src}}^\top W h_j\right), \\
   \text{GATv2:}\quad e_{ij} &= a^\top \operatorname{LeakyReLU}\left(W_{\text{dst}} h_i
      + W_{\text{src}} h_j\right), \\
   \alpha_{ij} &= \frac{\exp(e_{ij} - m_i)}{\sum_{k \in \mathcal{N}(i)} \exp(e_{ik} - m_i)},
   \qquad m_i = \max_{k \in \mathcal{N}(i)} e_{ik}, \\
   h'_i &= \sum_{j \in \mathcal{N}(i)} \alpha_{ij}\, W_{\text{src}} h_j
   \qquad (\text{GAT: } W_{\text{src}} = W)
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`h_i`, :math:`h_j`, :math:`h'_i`
     - features of the receiver, of a sender; the receiver's output
     - rows of ``x``; rows of the result of ``apply``
     - ``(D,)``; ``(heads F,)``
   * - :math:`W`, :math:`W_{\text{src}}`, :math:`W_{\text{dst}}`
     - projections of senders and receivers, one per head (GAT shares one)
     - ``params["W"]``; ``params["W_src"]``, ``params["W_dst"]``
     - ``(D, heads, F)``
   * - :math:`a_{\text{src}}`, :math:`a_{\text{dst}}`, :math:`a`
     - attention vectors: GAT's halves for sender and receiver; GATv2's one vector
     - ``params["a_src"]``, ``params["a_dst"]``; ``params["a"]``
     - ``(heads, F)``
   * - :math:`e_{ij}`
     - attention score (logit) of the edge from :math:`j` to :math:`i`
     - ``attention_logits``, ``logits``
     - ``(E, heads)``
   * - :math:`m_i`
     - the largest score among node :math:`i`'s incoming edges
     - ``top``
     - ``(N, heads)``
   * - :math:`\alpha_{ij}`
     - attention weight: a softmax over :math:`i`'s incoming edges
     - ``segment_softmax``, ``alpha``
     - ``(E, heads)``
   * - :math:`\mathcal{N}(i)`, :math:`k`
     - the senders of the edges whose receiver is :math:`i`, and one of them
     - ``senders`` where ``receivers`` is :math:`i`
     - set

Explanation
-----------

:footcite:t:`velickovic2018graph` bring attention (:doc:`/docs/chapters/attention/scaled_dot_product`)
to graphs: each node attends to its neighbours only, the graph acting as the attention mask. A
score is computed on every edge, turned into weights by a softmax over the edges that arrive at
the same node, and the messages are averaged with these weights. Over an edge list the softmax is
a *segment softmax*: a segment max of the scores (one per receiver) is subtracted before ``exp``,
so that no score overflows, and the exponentials are divided by their segment sum. A node that
receives no edge has nothing to normalise and gets zeros; a receiver whose scores are all
:math:`-\infty` gets zero weights rather than :math:`0/0`. The paper includes each node among its own
neighbours; ``add_self_loops`` appends those edges. Several heads run side by side and are
concatenated; the nonlinearity between layers is left to the caller.

.. admonition:: Intuition

   GAT's attention is a bestseller list: every reader is shown the same books in the same order,
   and a reader can only make the list steeper or flatter. GATv2's is a recommendation that
   depends on who asks: the ranking itself changes with the reader.

**Static and dynamic attention.** :footcite:t:`brody2022attentive` noticed that in GAT the
receiver's term :math:`a_{\text{dst}}^\top W h_i` is one number added to every score of node
:math:`i`, and the LeakyReLU is increasing, so the order of the neighbours by score is the order of
:math:`a_{\text{src}}^\top W h_j`, the same for every receiver. GAT's attention is *static*: whenever
several nodes see the same set of neighbours, they all rank them alike and the same neighbour wins
everywhere. GATv2 moves the nonlinearity between the two matrix products, so the score is a genuine
two-layer network of the pair :math:`(h_i, h_j)`, and the ranking can depend on the receiver:
*dynamic* attention. The tests
train both on the paper's dictionary lookup, where each of 5 queries must find the one of 5 keys
whose name it asks for: GATv2 answers every query; GAT stays near chance.

Inductive bias
--------------

Graph attention keeps the assumptions of message passing (shared functions, neighbourhoods
without order) and drops the assumption that a node's neighbours count in proportion to the graph's
structure: the weights are learned from the features, so a layer can ignore an irrelevant
neighbour. The price is a softmax: weights sum to one, so like the mean (:doc:`message_passing`) the
layer sees proportions, not how many neighbours a node has. GAT further assumes that one global
ranking of neighbours suits every node, which is wrong whenever the right neighbour depends on the
node that asks.

Example
-------

The segment softmax: edges 0 and 1 arrive at node 0, edge 2 at node 1, nothing at node 2:

>>> import jax, jax.numpy as jnp
>>> from cookbook.graphs.gat import add_self_loops, apply, attention_logits, init, segment_softmax
>>> segment_softmax(jnp.array([1000.0, 1000.0, -5.0]), jnp.array([0, 0, 1]), 3)
Array([0.5, 0.5, 1. ], dtype=float32)

A two-head GATv2 layer on a path 0-1-2 with self-loops:

>>> senders, receivers = add_self_loops(jnp.array([0, 1, 1, 2]), jnp.array([1, 0, 2, 1]), 3)
>>> senders, receivers
(Array([0, 1, 1, 2, 0, 1, 2], dtype=int32), Array([1, 0, 2, 1, 0, 1, 2], dtype=int32))
>>> params = init(jax.random.key(0), 4, 5, heads=2, dynamic=True)
>>> x = jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)
>>> attention_logits(params, x, senders, receivers).shape, apply(params, x, senders, receivers).shape
((7, 2), (3, 10))

Implementation notes
--------------------

jraph's ``GAT`` takes the query, logit and update functions as arguments and normalises with its
own ``segment_softmax``; the tests check both against this page. PyTorch Geometric calls the two
layers ``GATConv`` and ``GATv2Conv``. The paper's output layer averages its heads instead of
concatenating them, and both papers apply dropout to the attention weights during training.
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.graphs.message_passing import check_edges

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"segment_softmax": ("num_segments",), "add_self_loops": ("num_nodes",), "attention_logits": (),
       "apply": ()}

NEGATIVE_SLOPE = 0.2  # of the LeakyReLU, as in both papers


def segment_softmax(logits, segments, num_segments):
    """Softmax of ``logits`` (E, ...) over the entries that share a segment id in ``segments`` (E,).

    The segment max is subtracted before ``exp``; a segment whose logits are all ``-inf`` gets zero
    weights. Computed in at least float32 and returned in the dtype of ``logits``.
    """
    num_segments = _checks.size(num_segments, "num_segments")
    logits = _checks.float_array(logits, "logits", min_ndim=1, what=" (E, ...)")
    segments = _checks.int_array(segments, "segments", ndim=1, what=" (E,)")
    _checks.same_shape(segments, "segments", logits.shape[:1], expected_from="one per row of logits")
    _checks.check_range(segments, "segments", 0, num_segments)
    return _segment_softmax(logits, segments, num_segments)


@functools.partial(jax.jit, static_argnums=2)  # one program after the checks, not a dozen eager ones
def _segment_softmax(logits, segments, num_segments):
    z = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    top = jax.ops.segment_max(z, segments, num_segments)  # -inf for an empty segment
    top = jnp.where(jnp.isneginf(top), 0.0, top)
    w = jnp.exp(z - top.at[segments].get(mode="fill", fill_value=jnp.nan))
    total = jax.ops.segment_sum(w, segments, num_segments).at[segments].get(mode="fill", fill_value=jnp.nan)
    return (w / jnp.where(total > 0, total, 1.0)).astype(logits.dtype)


def add_self_loops(senders, receivers, num_nodes):
    """The edge list with one edge from every node to itself appended."""
    num_nodes = _checks.size(num_nodes, "num_nodes")
    senders, receivers = check_edges(senders, receivers, num_nodes)
    return _add_self_loops(senders, receivers, num_nodes)


@functools.partial(jax.jit, static_argnums=2)
def _add_self_loops(senders, receivers, num_nodes):
    loops = jnp.arange(num_nodes, dtype=senders.dtype)
    return jnp.concatenate([senders, loops]), jnp.concatenate([receivers, loops.astype(receivers.dtype)])


def init(key, in_size, out_size, heads=1, dynamic=False):
    """A GAT layer (``dynamic=False``) or a GATv2 layer (``dynamic=True``) from ``in_size`` features to
    ``heads`` heads of ``out_size``; Glorot-normal weights."""
    D, F, H = (_checks.size(n, name) for n, name in ((in_size, "in_size"), (out_size, "out_size"), (heads, "heads")))
    if not isinstance(dynamic, bool):
        raise TypeError(f"dynamic must be True (GATv2) or False (GAT), got {dynamic!r}")
    k_w, k_v, k_a = jax.random.split(key, 3)
    W = jax.random.normal(k_w, (D, H, F)) * jnp.sqrt(2.0 / (D + F))
    if not dynamic:
        a = jax.random.normal(k_a, (2, H, F)) * jnp.sqrt(1.0 / F)
        return {"W": W, "a_src": a[0], "a_dst": a[1]}
    return {"W_src": W, "W_dst": jax.random.normal(k_v, (D, H, F)) * jnp.sqrt(2.0 / (D + F)),
            "a": jax.random.normal(k_a, (H, F)) * jnp.sqrt(1.0 / F)}


def _check(params, x, senders, receivers):
    """``(x, senders, receivers, dynamic)`` after checking them against each other."""
    if not isinstance(params, dict) or set(params) not in ({"W", "a_src", "a_dst"}, {"W_src", "W_dst", "a"}):
        raise ValueError("params must be the dict that init returns: keys W, a_src, a_dst (GAT) or "
                         f"W_src, W_dst, a (GATv2), got {sorted(params) if isinstance(params, dict) else params!r}")
    dynamic = "a" in params
    W_name = "W_src" if dynamic else "W"
    W = _checks.float_array(params[W_name], f"params['{W_name}']", ndim=3, what=" (D, heads, F)")
    D, H, F = W.shape
    for name, shape in (("W_dst", (D, H, F)), ("a", (H, F))) if dynamic else (("a_src", (H, F)), ("a_dst", (H, F))):
        where = f"params['{name}']"
        _checks.same_shape(_checks.float_array(params[name], where), where, shape, expected_from=f"{W_name} {W.shape}")
    x = _checks.float_array(x, "x", ndim=2, what=" (N, D)")
    _checks.same_shape(x, "x", (x.shape[0], D), expected_from=f"D from params['{W_name}']")
    senders, receivers = check_edges(senders, receivers, x.shape[0])
    return x, senders, receivers, dynamic


def _logits_and_values(params, x, senders, receivers, dynamic):
    gather = lambda z, index: z.at[index].get(mode="fill", fill_value=jnp.nan)
    if dynamic:
        values = jnp.einsum("ND,DHF->NHF", x, params["W_src"])  # (N, heads, F)
        queries = jnp.einsum("ND,DHF->NHF", x, params["W_dst"])
        pair = jax.nn.leaky_relu(gather(queries, receivers) + gather(values, senders), NEGATIVE_SLOPE)  # (E, heads, F)
        logits = jnp.einsum("EHF,HF->EH", pair, params["a"])
    else:
        values = jnp.einsum("ND,DHF->NHF", x, params["W"])
        score_dst = jnp.einsum("NHF,HF->NH", values, params["a_dst"])  # (N, heads)
        score_src = jnp.einsum("NHF,HF->NH", values, params["a_src"])
        logits = jax.nn.leaky_relu(gather(score_dst, receivers) + gather(score_src, senders), NEGATIVE_SLOPE)
    return logits, values


def attention_logits(params, x, senders, receivers):
    """The score ``e`` of every edge and head, (E, heads), for node features ``x`` (N, D)."""
    x, senders, receivers, dynamic = _check(params, x, senders, receivers)
    return _attention_logits(params, x, senders, receivers)


@jax.jit
def _attention_logits(params, x, senders, receivers):
    return _logits_and_values(params, x, senders, receivers, "a" in params)[0]


def apply(params, x, senders, receivers):
    """The layer's output (N, heads F): each node's attention-weighted sum of its senders' values,
    heads concatenated; zeros for a node that receives no edge."""
    x, senders, receivers, dynamic = _check(params, x, senders, receivers)
    return _apply(params, x, senders, receivers)


@jax.jit  # one program after the checks: run eagerly, each of its operations would compile alone
def _apply(params, x, senders, receivers):
    N = x.shape[0]
    logits, values = _logits_and_values(params, x, senders, receivers, "a" in params)
    alpha = segment_softmax(logits, receivers, N)  # (E, heads)
    messages = alpha[:, :, None] * values.at[senders].get(mode="fill", fill_value=jnp.nan)  # (E, heads, F)
    out = jax.ops.segment_sum(messages, receivers, N)  # (N, heads, F)
    return out.reshape(N, -1)
