r"""Grouped-query attention
=======================

Multi-head attention in which groups of query heads share one key head and one value head: it
shrinks the keys and values that a model must keep for every generated token, and so is the choice
for fast autoregressive decoding, with multi-query attention (one shared head) as its extreme.

Equation
--------

.. math::

   g(h) = \left\lfloor \frac{h}{H/G} \right\rfloor, \qquad
   Y_h = \operatorname{softmax}\!\left(\frac{Q_h K_{g(h)}^\top}{\sqrt{D}} + M\right) V_{g(h)},
   \qquad Z = \sum_{h=0}^{H-1} Y_h W^{O}_h + b^{O}

   \text{cached floats per example and layer} = 2 \, S \, G \, D

where :math:`Q_h = X W^{Q}_h + b^{Q}_h` as in :doc:`multi_head`, but keys and values are projected
only once per group: :math:`K_j = C W^{K}_j + b^{K}_j` and :math:`V_j = C W^{V}_j + b^{V}_j` for
:math:`j = 0, \dots, G-1`.

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`X`, :math:`C`
     - the sequence that asks; the sequence that is read (:math:`X` itself in self-attention)
     - ``x``, ``context``
     - ``(T, d_model)``, ``(S, d_model)``
   * - :math:`h`, :math:`H`
     - index of a query head; number of query heads
     - ``num_heads``
     - scalar
   * - :math:`G`
     - number of key-value groups (heads of keys and values); :math:`G = H` is multi-head,
       :math:`G = 1` multi-query attention
     - ``num_groups``
     - scalar
   * - :math:`j`
     - index of a key-value group
     - index along the first axis of ``k`` and ``v``
     - scalar
   * - :math:`g(h)`
     - the group whose keys and values head :math:`h` reads
     - :math:`\lfloor h / (H/G) \rfloor`, from the reshape of ``q`` into groups
     - scalar
   * - :math:`D`
     - features per head
     - ``D``
     - scalar
   * - :math:`W^{Q}_h`, :math:`b^{Q}_h`
     - query projection of head :math:`h` and its bias
     - ``params["W_q"]``, ``params["b_q"]``, at index :math:`h` of the head axis
     - ``(d_model, D)``, ``(D,)``
   * - :math:`W^{K}_j`, :math:`b^{K}_j`, :math:`W^{V}_j`, :math:`b^{V}_j`
     - key and value projections of group :math:`j` and their biases
     - ``params["W_k"]``, ``params["b_k"]``, ``params["W_v"]``, ``params["b_v"]``, at index
       :math:`j` of the group axis
     - ``(d_model, D)``, ``(D,)``
   * - :math:`Q_h`
     - queries of head :math:`h`
     - ``q``, reshaped to ``(G, H // G, T, D)``
     - ``(T, D)``
   * - :math:`K_j`, :math:`V_j`, :math:`K_{g(h)}`, :math:`V_{g(h)}`
     - keys and values of group :math:`j`, and of the group of head :math:`h`: what the cache stores
     - ``k``, ``v``, at index :math:`j` of their first axis
     - ``(S, D)``
   * - :math:`M`
     - additive mask, 0 where allowed, :math:`-\infty` where not
     - from ``mask`` (``True`` = may attend)
     - ``(T, S)`` or ``(H, T, S)``
   * - :math:`Y_h`
     - output of head :math:`h`
     - ``y``
     - ``(T, D)``
   * - :math:`W^{O}_h`, :math:`b^{O}`
     - output projection of head :math:`h`; output bias
     - ``params["W_o"]`` at index :math:`h` of its first axis; ``params["b_o"]``
     - ``(D, d_model)``, ``(d_model,)``
   * - :math:`Z`
     - the layer's output
     - ``apply(params, x, context, mask)``
     - ``(T, d_model)``
   * - :math:`S`
     - number of key positions kept in the cache
     - ``S``
     - scalar

Explanation
-----------

**Where the memory goes.** A decoder generates one token at a time, and each new token attends to
all earlier ones. Recomputing their keys and values at every step would cost a full forward pass
per token, so they are kept in a *key-value cache*: for each layer, :math:`S` positions times
:math:`H` heads times :math:`D` features, twice (keys and values). At large batch sizes and long
contexts this cache is larger than the weights, and reading it from memory at every step, not the
arithmetic, sets the speed of decoding.

**Multi-query attention.** Shazeer :footcite:`shazeer2019fast` observed that the queries need many heads
but the keys and values may not: his *multi-query attention* keeps :math:`H` query heads and a
single key head and value head shared by all of them, dividing the cache, and the memory traffic of
decoding, by :math:`H`. The price is some quality, since every head must now find what it needs in
the same keys and values.

**Grouped-query attention.** Ainslie et al. :footcite:`ainslie2023gqa` interpolate: the :math:`H` query heads
are split into :math:`G` contiguous groups of :math:`H/G`, and the heads of a group share one key
head and one value head. The cache holds :math:`2SGD` floats instead of :math:`2SHD`; :math:`G = H`
gives back multi-head attention exactly and :math:`G = 1` is multi-query attention. A few groups
(8 for a model with 64 query heads, say) recover nearly all of the quality of multi-head attention
at close to the speed of multi-query attention. They also show how to *uptrain* an existing
multi-head checkpoint: the key and value projections of the heads in each group are averaged into
one (``from_multi_head`` below), and the model is trained briefly to adapt.

.. admonition:: Intuition

   Think of a reading room where every student brings their own questions but copies of the
   reference books are scarce. With one copy per student (multi-head) the shelves overflow; with
   one copy for the whole room (multi-query) everyone queues for the same pages. Grouped-query
   attention puts one copy on each table: the students at a table ask different questions of the
   same book, and the room holds as many copies as tables.

**In code** the query heads are arranged as ``(G, H // G, T, D)``, and each group's keys and
values are broadcast over its heads, so the same :doc:`scaled_dot_product` function computes every
head; the cache itself, returned by ``keys_values``, stays at ``(G, S, D)``.

Inductive bias
--------------

Sharing keys and values assumes that the heads of a group want to read the same information about
each position and differ only in which positions they ask for: one representation of "what is
here" serves several questions. Multi-head attention makes no such assumption and multi-query
attention makes it for all heads at once; the number of groups sets how strongly the model is
pushed to share.

Example
-------

Twelve query heads in three groups keep a quarter of the key-value cache of multi-head attention:

>>> import jax, jax.numpy as jnp
>>> from cookbook.attention.grouped_query import (
...     apply, from_multi_head, init, keys_values, kv_cache_floats)
>>> k_params, k_x = jax.random.split(jax.random.key(0))
>>> params = init(k_params, d_model=48, num_heads=12, num_groups=3)
>>> params["W_q"].shape, params["W_k"].shape
((48, 12, 4), (48, 3, 4))
>>> x = jax.random.normal(k_x, (7, 48))
>>> apply(params, x, mask=jnp.tril(jnp.ones((7, 7), bool))).shape
(7, 48)
>>> k, v = keys_values(params, x)  # what a decoder caches
>>> k.shape, k.size + v.size, kv_cache_floats(7, 3, 4)
((3, 7, 4), 168, 168)
>>> kv_cache_floats(7, 3, 4) / kv_cache_floats(7, 12, 4)  # versus multi-head attention
0.25

A multi-head checkpoint becomes a grouped-query one by averaging the key and value heads of each
group, before a short uptraining:

>>> mha_params = init(k_params, d_model=48, num_heads=12, num_groups=12)  # G = H: multi-head
>>> gqa_params = from_multi_head(mha_params, num_groups=3)
>>> gqa_params["W_k"].shape, apply(gqa_params, x).shape
((48, 3, 4), (7, 48))
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.attention.multi_head import _check_params, _check_sequence, project
from cookbook.attention.scaled_dot_product import scaled_dot_product_attention

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "init": ("d_model", "num_heads", "num_groups"),
    "apply": (),
    "keys_values": (),
    "from_multi_head": ("num_groups",),
}


def _check_heads(num_heads, num_groups):
    num_groups = _checks.size(num_groups, "num_groups")
    if num_heads % num_groups:
        raise ValueError(f"num_groups must divide num_heads, got num_heads={num_heads} and num_groups={num_groups}")
    return num_groups


def init(key, d_model, num_heads, num_groups):
    """Parameters with ``num_heads`` query heads sharing ``num_groups`` key and value heads."""
    d_model, num_heads = _checks.size(d_model, "d_model"), _checks.size(num_heads, "num_heads")
    if d_model % num_heads:
        raise ValueError(f"num_heads must divide d_model, got d_model={d_model} and num_heads={num_heads}")
    return _init(key, d_model, num_heads, _check_heads(num_heads, num_groups))


# Each public function checks its input in Python, then hands it as it comes to one compiled core
# like this one: a program per set of shapes, rather than a dozen eager operations that each compile.
@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _init(key, d_model, num_heads, num_groups):
    H, G, D = num_heads, num_groups, d_model // num_heads
    k_q, k_k, k_v, k_o = jax.random.split(key, 4)
    in_std, out_std = 1.0 / jnp.sqrt(d_model), 1.0 / jnp.sqrt(H * D)
    return {
        "W_q": in_std * jax.random.normal(k_q, (d_model, H, D)),
        "b_q": jnp.zeros((H, D)),
        "W_k": in_std * jax.random.normal(k_k, (d_model, G, D)),
        "b_k": jnp.zeros((G, D)),
        "W_v": in_std * jax.random.normal(k_v, (d_model, G, D)),
        "b_v": jnp.zeros((G, D)),
        "W_o": out_std * jax.random.normal(k_o, (H, D, d_model)),
        "b_o": jnp.zeros((d_model,)),
    }


def kv_cache_floats(S, num_groups, D):
    """Floats cached per example and layer for ``S`` positions: keys and values, ``2 * S * G * D``."""
    S, num_groups, D = _checks.size(S, "S", minimum=0), _checks.size(num_groups, "num_groups"), _checks.size(D, "D")
    return 2 * S * num_groups * D


def keys_values(params, context):
    """The keys and values of ``context`` (S, d_model), each (G, S, D): the key-value cache."""
    d_model, H, G, _ = _check_params(params, grouped=True)
    _check_heads(H, G)
    return _keys_values(params, _check_sequence(context, "context", "S", d_model))


@jax.jit
def _keys_values(params, context):
    return project(params["W_k"], params["b_k"], context), project(params["W_v"], params["b_v"], context)


def apply(params, x, context=None, mask=None):
    """Grouped-query attention of ``x`` (T, d_model) to ``context`` (S, d_model), or to itself.

    ``mask`` is boolean, (T, S) or (H, T, S) (a size-1 leading or T axis broadcasts; the key axis
    never does), ``True`` where a query may attend to a key. Returns (T, d_model). One example;
    batch with :func:`jax.vmap`.
    """
    d_model, H, G, D = _check_params(params, grouped=True)
    _check_heads(H, G)
    x = _check_sequence(x, "x", "T", d_model)
    if context is not None:
        context = _check_sequence(context, "context", "S", d_model)
    T, S = x.shape[0], (x if context is None else context).shape[0]
    if mask is not None:
        mask = mask if hasattr(mask, "shape") else jnp.asarray(mask)
        if mask.ndim > 3 or mask.shape[-1] != S or mask.ndim == 3 and mask.shape[0] not in (1, H):
            raise ValueError(f"mask must broadcast to (H, T, S) = {(H, T, S)} with its last axis S = {S}, "
                             f"got shape {tuple(mask.shape)}")
    return _apply(params, x, context, mask)


@jax.jit
def _apply(params, x, context, mask):
    H, D = params["W_q"].shape[1:]
    G = params["W_k"].shape[1]
    k, v = _keys_values(params, x if context is None else context)  # (G, S, D) each
    T, S = x.shape[0], k.shape[1]
    q = project(params["W_q"], params["b_q"], x).reshape(G, H // G, T, D)  # head h -> group h // (H // G)
    k = jnp.broadcast_to(k[:, None], (G, H // G, S, D))  # shared by the heads of a group
    v = jnp.broadcast_to(v[:, None], (G, H // G, S, D))
    if mask is not None and mask.ndim == 3:
        mask = jnp.broadcast_to(mask, (H, *mask.shape[1:])).reshape(G, H // G, *mask.shape[1:])
    y = scaled_dot_product_attention(q, k, v, mask).reshape(H, T, D)  # (H, T, D)
    return jnp.einsum("HTD,HDM->TM", y, params["W_o"]) + params["b_o"][None, :]  # (T, d_model)


def from_multi_head(params, num_groups):
    """Grouped-query parameters from multi-head ones, by averaging the key and value heads of each
    group (the uptraining recipe of Ainslie et al.)."""
    _, H, _, _ = _check_params(params)  # multi-head: as many key-value heads as query heads
    return _from_multi_head(params, _check_heads(H, num_groups))


@functools.partial(jax.jit, static_argnums=1)
def _from_multi_head(params, G):
    d_model, H, D = params["W_q"].shape
    pool_W = lambda W: W.reshape(d_model, G, H // G, D).mean(axis=2)  # (d_model, G, D)
    pool_b = lambda b: b.reshape(G, H // G, D).mean(axis=1)  # (G, D)
    return {**params, "W_k": pool_W(params["W_k"]), "b_k": pool_b(params["b_k"]),
            "W_v": pool_W(params["W_v"]), "b_v": pool_b(params["b_v"])}
