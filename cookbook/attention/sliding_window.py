r"""Sliding-window attention and attention sinks
=============================================

Let each token attend only to the last :math:`W` tokens, so that attention costs :math:`O(TW)`
instead of :math:`O(T^2)` and a decoder's cache stops growing; keep the first few tokens in view as
well ("attention sinks"), so that a model can stream text far longer than it was trained on.

Equation
--------

.. math::

   y_t = \sum_{s \in \mathcal{N}(t)} \operatorname{softmax}_{s \in \mathcal{N}(t)}
   \!\left(\frac{q_t \cdot k_s}{\sqrt{D}}\right) v_s, \qquad
   \mathcal{N}(t) = \{\, s : t - W < s \le t \,\} \;\cup\; \{\, s : s < n_\text{sink},\ s \le t \,\}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`q_t`, :math:`k_s`, :math:`v_s`
     - the query at position :math:`t`; the key and value at position :math:`s`
     - rows of ``q``, ``k``, ``v``
     - ``(T, D)``, ``(T, D)``, ``(T, Dv)``
   * - :math:`y_t`
     - the output at position :math:`t`
     - rows of the result
     - ``(T, Dv)``
   * - :math:`W`
     - the window: how many of the latest positions (the query's own included) it sees
     - ``window``
     - integer
   * - :math:`n_\text{sink}`
     - how many first positions every query keeps seeing
     - ``num_sinks``
     - integer
   * - :math:`\mathcal{N}(t)`
     - the positions that query :math:`t` attends to
     - ``sliding_window_mask``'s row :math:`t`
     - ``(T,)`` boolean
   * - :math:`D`
     - the size of a query and a key
     - ``D``
     - integer
   * - :math:`T`
     - the sequence length
     - ``T``
     - integer

Explanation
-----------

Most of what a token needs in text is nearby. A sliding window
:footcite:`beltagy2020longformer` restricts causal attention to the latest :math:`W` positions: the
score matrix becomes a band of width :math:`W` under the diagonal, and everything outside it is
never computed. The code cuts the sequence into blocks of :math:`W` queries; each block needs only the
keys of its own block and of the one before, so it builds :math:`T/W` score blocks of
:math:`W \times 2W` entries instead of a :math:`T \times T` matrix, and a decoder needs a cache of
:math:`W` keys and values, not :math:`T`.

Stacking restores reach. Information moves at most :math:`W - 1` positions per layer, so after
:math:`L` layers the output at :math:`t` depends on inputs back to :math:`t - L(W-1)`, as a stack of
convolutions would; models with a window of 4096 and 32 layers thus see over a hundred thousand
positions back, indirectly.

**Sinks.** A language model trained with full attention learns to park the softmax's unneeded
probability mass on the first tokens, whatever they say, because they are visible from every
position. Evicting them from a window changes every softmax's denominator and the model falls apart;
keeping the first four in the cache, beside the window, restores fluent generation over millions of
tokens :footcite:`xiao2024attentionsinks`. ``num_sinks`` adds those columns to the band. The rolling
cache of ``decode_step`` keeps the sinks and the last :math:`W` keys in a buffer of fixed size; the
tests check that decoding with it equals the masked full pass at every position.

.. admonition:: Intuition

   Reading a novel, you hold the last page or so in mind, plus the title and the opening line,
   which anchor everything. What happened three chapters ago still reaches you, but only through
   what the pages in between made of it, the way stacked windows pass information along.

Inductive bias
--------------

The window assumes locality: that the direct dependencies of a token lie within :math:`W`
positions, and that longer ones can be relayed through layers. A fact far outside every layer's
reach (a name defined :math:`L W` tokens earlier and never repeated) cannot be retrieved. Sinks
assume that the first positions serve as a fixed anchor for the softmax rather than as content.

Example
-------

A window of 3 with one sink: position 5 sees positions 0 (the sink), 3, 4 and 5. The blocked
computation equals full attention under that mask:

>>> import jax, jax.numpy as jnp
>>> from cookbook.attention.sliding_window import sliding_window_attention, sliding_window_mask
>>> sliding_window_mask(6, 3, num_sinks=1)[5].astype(int)
Array([1, 0, 0, 1, 1, 1], dtype=int32)
>>> from cookbook.attention.scaled_dot_product import scaled_dot_product_attention
>>> kq, kk, kv = jax.random.split(jax.random.key(0), 3)
>>> q, k, v = (jax.random.normal(key, (10, 4)) for key in (kq, kk, kv))
>>> y = sliding_window_attention(q, k, v, 3, num_sinks=1)
>>> bool(jnp.allclose(y, scaled_dot_product_attention(q, k, v, sliding_window_mask(10, 3, num_sinks=1)), atol=1e-6))
True

Decoding one token at a time with the rolling cache gives the same outputs from a cache of fixed
size (one sink and three window slots):

>>> from cookbook.attention.sliding_window import decode_step, init_cache
>>> cache = init_cache(3, 1, 4, 4)
>>> for t in range(10):
...     y_t, cache = decode_step(cache, q[t], k[t], v[t])
>>> bool(jnp.allclose(y_t, y[9], atol=1e-5)), cache.ring_k.shape
(True, (3, 4))
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "sliding_window_mask": ("T", "window", "num_sinks"),
    "sliding_window_attention": ("window", "num_sinks"),
    "init_cache": ("window", "num_sinks", "D", "Dv"),
    "decode_step": (),
}


def _check_sizes(window, num_sinks):
    _checks.size(window, "window", minimum=1)
    _checks.size(num_sinks, "num_sinks", minimum=0)


def sliding_window_mask(T, window, num_sinks=0):
    """The boolean (T, T) mask: query ``t`` may attend to key ``s`` when ``t - window < s <= t``, or
    when ``s < num_sinks`` and ``s <= t``."""
    _checks.size(T, "T", minimum=1)
    _check_sizes(window, num_sinks)
    return _mask(int(T), int(window), int(num_sinks))


# The public functions check their input in Python, then hand it as it comes to one compiled core
# like this one: a program per set of shapes and sizes, rather than a few eager operations that each
# compile for every new shape.
@partial(jax.jit, static_argnums=(0, 1, 2))
def _mask(T, window, num_sinks):
    t = jnp.arange(T)[:, None]
    s = jnp.arange(T)[None, :]
    return (s <= t) & ((s > t - window) | (s < num_sinks))


def sliding_window_attention(q, k, v, window, *, num_sinks=0):
    """Causal attention of q (T, D) over k (T, D), v (T, Dv) within the window (and the sinks),
    computed block by block in O(T · window) time and memory; returns (T, Dv) in v's dtype."""
    _check_sizes(window, num_sinks)
    q, k, v, _ = _checks.queries_keys_values(q, k, v)
    return _blocked_attention(q, k, v, window, num_sinks)


@partial(jax.jit, static_argnames=("W", "num_sinks"))
def _blocked_attention(q, k, v, W, num_sinks):
    T, D = q.shape
    blocks = -(-T // W)
    pad = blocks * W - T
    # Queries in blocks of W; block b needs keys of blocks b - 1 and b (one zero block in front).
    q_blocks = jnp.pad(q, ((0, pad), (0, 0))).reshape(blocks, W, D)
    k_pad = jnp.pad(k, ((W, pad), (0, 0)))
    v_pad = jnp.pad(v, ((W, pad), (0, 0)))
    starts = jnp.arange(blocks) * W
    k_win = jax.vmap(lambda s: jax.lax.dynamic_slice_in_dim(k_pad, s, 2 * W))(starts)  # (blocks, 2W, D)
    v_win = jax.vmap(lambda s: jax.lax.dynamic_slice_in_dim(v_pad, s, 2 * W))(starts)  # (blocks, 2W, Dv)
    t = starts[:, None, None] + jnp.arange(W)[None, :, None]  # query positions (blocks, W, 1)
    s = starts[:, None, None] - W + jnp.arange(2 * W)[None, None, :]  # key positions (blocks, 1, 2W)
    band = (s >= 0) & (s <= t) & (s > t - W) & (s >= num_sinks)  # sinks are added separately below
    scores = jnp.einsum("bwd,bsd->bws", q_blocks, k_win, preferred_element_type=jnp.float32) / jnp.sqrt(jnp.float32(D))
    values = v_win
    if num_sinks:
        n = min(num_sinks, T)
        sink_scores = jnp.einsum("bwd,sd->bws", q_blocks, k[:n], preferred_element_type=jnp.float32) / jnp.sqrt(jnp.float32(D))
        scores = jnp.concatenate([sink_scores, scores], axis=-1)  # (blocks, W, n + 2W)
        band = jnp.concatenate([jnp.broadcast_to(jnp.arange(n)[None, None, :] <= t, (blocks, W, n)), band], axis=-1)
        values = jnp.concatenate([jnp.broadcast_to(v[:n], (blocks, n, v.shape[-1])), v_win], axis=1)
    scores = jnp.where(band, scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    y = jnp.einsum("bws,bsd->bwd", weights, values, preferred_element_type=jnp.float32)
    return y.reshape(blocks * W, -1)[:T].astype(v.dtype)


class Cache(NamedTuple):
    """A fixed-size cache: ``num_sinks`` first keys and values, a ring of the last ``window``, and the
    number of tokens seen so far."""

    sink_k: jax.Array
    sink_v: jax.Array
    ring_k: jax.Array
    ring_v: jax.Array
    count: jax.Array


def init_cache(window, num_sinks, D, Dv, dtype=jnp.float32):
    """An empty cache for keys of size ``D`` and values of size ``Dv``."""
    _check_sizes(window, num_sinks)
    _checks.size(D, "D", minimum=1)
    _checks.size(Dv, "Dv", minimum=1)
    return _init_cache(int(window), int(num_sinks), int(D), int(Dv), jnp.dtype(dtype))


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _init_cache(window, num_sinks, D, Dv, dtype):
    zeros = lambda n, d: jnp.zeros((n, d), dtype)
    return Cache(zeros(num_sinks, D), zeros(num_sinks, Dv), zeros(window, D), zeros(window, Dv), jnp.zeros((), jnp.int32))


def decode_step(cache, q, k, v):
    """Attend the new token's query ``q`` (D,) to the cache after adding its key ``k`` (D,) and value
    ``v`` (Dv,); returns (y (Dv,), new cache). Memory stays ``num_sinks + window`` whatever the length."""
    if not isinstance(cache, Cache):
        raise TypeError(f"cache must be a Cache from init_cache, got {type(cache).__name__}")
    ring_k = _checks.float_array(cache.ring_k, "cache.ring_k", ndim=2, what=" (window, D)")
    ring_v = _checks.float_array(cache.ring_v, "cache.ring_v", ndim=2, what=" (window, Dv)")
    (W, D), Dv = ring_k.shape, ring_v.shape[1]
    n = _checks.float_array(cache.sink_k, "cache.sink_k", ndim=2, what=" (num_sinks, D)").shape[0]
    _checks.same_shape(ring_v, "cache.ring_v", (W, Dv), expected_from="window from cache.ring_k")
    _checks.same_shape(cache.sink_k, "cache.sink_k", (n, D), expected_from="D from cache.ring_k")
    _checks.same_shape(_checks.float_array(cache.sink_v, "cache.sink_v"), "cache.sink_v", (n, Dv),
                       expected_from="num_sinks and Dv of the cache")
    _checks.same_shape(_checks.int_array(cache.count, "cache.count"), "cache.count", ())
    q = _checks.float_array(q, "q", ndim=1, what=" (D,)")
    k = _checks.float_array(k, "k", ndim=1, what=" (D,)")
    v = _checks.float_array(v, "v", ndim=1, what=" (Dv,)")
    _checks.same_shape(q, "q", cache.ring_k.shape[1:], expected_from="D of the cache")
    _checks.same_shape(k, "k", cache.ring_k.shape[1:], expected_from="D of the cache")
    _checks.same_shape(v, "v", cache.ring_v.shape[1:], expected_from="Dv of the cache")
    return _decode(cache, q, k, v)


@jax.jit
def _decode(cache, q, k, v):
    n, W = cache.sink_k.shape[0], cache.ring_k.shape[0]
    t = cache.count
    # The first num_sinks tokens go to the sinks; every token also enters the ring at t mod W.
    is_sink = jnp.arange(n) == t
    sink_k = jnp.where(is_sink[:, None], k[None, :], cache.sink_k)
    sink_v = jnp.where(is_sink[:, None], v[None, :], cache.sink_v)
    ring_k = cache.ring_k.at[t % W].set(k)
    ring_v = cache.ring_v.at[t % W].set(v)
    ring_pos = t - (t - jnp.arange(W)) % W  # the position held by each ring slot (negative: empty)
    # The ring holds the window, sinks included; a sink slot counts only once it has left the window.
    keep = jnp.concatenate([jnp.arange(n) <= t - W, ring_pos >= 0])
    keys = jnp.concatenate([sink_k, ring_k])
    values = jnp.concatenate([sink_v, ring_v])
    scores = keys @ q / jnp.sqrt(jnp.float32(q.shape[0]))
    weights = jax.nn.softmax(jnp.where(keep, scores.astype(jnp.float32), jnp.finfo(jnp.float32).min))
    y = (weights.astype(values.dtype) @ values).astype(v.dtype)
    return y, Cache(sink_k, sink_v, ring_k, ring_v, t + 1)
