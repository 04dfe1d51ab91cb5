r"""Multi-head latent attention
===========================

Cache one small latent vector per token instead of every head's key and value, and rebuild the keys
and values from it: multi-head attention whose generation cache is as small as grouped-query
attention's with two or three groups, with a separate small key that carries the rotary positions.

Equation
--------

.. math::

   c_s = W^{DKV} h_s, \qquad k^R_s = \operatorname{RoPE}_s(W^{KR} h_s), \qquad
   c^Q_t = W^{DQ} h_t

   q_{t,i} = \big[\, W^{UQ}_i c^Q_t ;\ \operatorname{RoPE}_t(W^{QR}_i c^Q_t) \,\big], \qquad
   k_{s,i} = \big[\, W^{UK}_i c_s ;\ k^R_s \,\big], \qquad
   v_{s,i} = W^{UV}_i c_s

   o_{t,i} = \sum_{s \le t} \operatorname{softmax}_s\!\left(
   \frac{q_{t,i} \cdot k_{s,i}}{\sqrt{d_h + d_R}}\right) v_{s,i}, \qquad
   u_t = \sum_i W^O_i\, o_{t,i}

   \text{absorbed:}\quad q_{t,i} \cdot k_{s,i}
   = \big( W^{UK\top}_i W^{UQ}_i c^Q_t \big) \cdot c_s + q^R_{t,i} \cdot k^R_s, \qquad
   W^O_i o_{t,i} = W^O_i W^{UV}_i \sum_{s} a_{t,s,i}\, c_s

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`h_t`, :math:`u_t`
     - the input and output at position :math:`t`
     - rows of ``x``; rows of the result
     - ``(T, d_model)``
   * - :math:`c_s`
     - the key-value latent of position :math:`s`: what is cached
     - ``c_kv``
     - ``(T, latent_dim)``
   * - :math:`k^R_s`
     - the rotary key, shared by all heads, also cached
     - ``k_rope``
     - ``(T, rope_dim)``
   * - :math:`c^Q_t`
     - the query latent
     - ``c_q``
     - ``(T, query_latent_dim)``
   * - :math:`q^R_{t,i}`
     - head :math:`i`'s rotary query
     - ``q_rope``
     - ``(H, T, rope_dim)``
   * - :math:`W^{DKV}, W^{KR}, W^{DQ}`
     - down-projections of the input
     - ``params["W_dkv"]``, ``params["W_kr"]``, ``params["W_dq"]``
     - ``(d_model, ·)``
   * - :math:`W^{UQ}_i, W^{QR}_i, W^{UK}_i, W^{UV}_i`
     - head :math:`i`'s up-projections of the latents
     - ``params["W_uq"]``, ``params["W_qr"]``, ``params["W_uk"]``, ``params["W_uv"]``
     - ``(·, H, ·)``
   * - :math:`W^O_i`
     - head :math:`i`'s output projection
     - ``params["W_o"]``
     - ``(H, head_dim, d_model)``
   * - :math:`q_{t,i}, k_{s,i}, v_{s,i}`, :math:`o_{t,i}`
     - head :math:`i`'s query, key, value and output
     - ``q``, ``k``, ``v``; ``o``
     - ``(H, T, ·)``
   * - :math:`a_{t,s,i}`
     - head :math:`i`'s attention weights
     - ``weights``
     - ``(H, T, S)``
   * - :math:`d_h`, :math:`d_R`
     - the sizes of a head's content part and of the rotary part
     - ``head_dim``, ``rope_dim``
     - integers
   * - :math:`\operatorname{RoPE}_t`
     - rotary position encoding at position :math:`t` (see :doc:`rope`)
     - ``apply_rope``
     - like its input

Explanation
-----------

When a transformer generates text, it keeps every past token's keys and values for every head and
layer. That cache, not the weights, is what limits how many sequences fit on an accelerator. Grouped
queries (:doc:`grouped_query`) shrink it by sharing keys and values among heads, at some cost in
quality. Multi-head latent attention :footcite:`deepseek2024v2` instead compresses them: each token
stores one latent :math:`c_s` of size :math:`d_c`, far smaller than the :math:`2 H d_h` numbers of all
heads' keys and values, and every head reads its own key and value out of it through its own
up-projection. The heads stay different; only their inputs are shared.

**Absorption.** Rebuilding the keys for every past token at every step would cost more than it saves.
But a score :math:`(W^{UQ}_i c^Q_t)^\top (W^{UK}_i c_s)` is linear in :math:`c_s`, so the key's
up-projection can be moved to the query side, once per query; the scores are then taken directly
against the cached latents. The same holds for the values: the weighted sum of :math:`W^{UV}_i c_s`
is :math:`W^{UV}_i` times the weighted sum of the latents, and :math:`W^{UV}_i` merges into the output
projection. The two forms are the same numbers, which the tests check; at inference each head
works in the :math:`d_c`-dimensional latent space, and the cache is never expanded.

**Why a separate rotary key.** Rotary positions put a rotation that depends on :math:`t - s` between
query and key, and a rotation in between blocks the absorption (it would depend on the pair of
positions). So the positions ride on a small extra part of the key, :math:`k^R_s` of size
:math:`d_R`, shared by all heads and cached as it is. With DeepSeek-V2's sizes (128 heads of 128,
:math:`d_c = 512`, :math:`d_R = 64`) a token costs 576 cached numbers per layer instead of 32 768:
57 times fewer, as few as grouped-query attention with 2.25 groups.

.. admonition:: Intuition

   A library does not keep a copy of every book for each reader's interests: it keeps one compact
   catalogue card per book, and each reader (a head) has a personal lens that turns the card into
   what that reader cares about. And rather than re-printing every card through the lens, the
   reader folds the lens into the question asked of the catalogue.

Inductive bias
--------------

MLA assumes that all heads' keys and values of a token live in a low-dimensional subspace of size
:math:`d_c`: a low-rank structure shared across heads, while each head keeps its own view of it.
Positions enter through a narrow rotary channel shared by the heads, so a head's positional
preferences are less free than in multi-head attention with rotary keys per head.

Example
-------

The naive and absorbed forms agree, decoding from the latent cache gives the full pass, and the
cache's size compares as the page says:

>>> import jax, jax.numpy as jnp
>>> from cookbook.attention import multi_head_latent as mla
>>> params = mla.init(jax.random.key(0), d_model=11, num_heads=3, head_dim=5, latent_dim=7,
...                   query_latent_dim=9, rope_dim=4)
>>> x = jax.random.normal(jax.random.key(1), (7, 11))
>>> y = mla.apply(params, x)
>>> y.shape, bool(jnp.allclose(mla.apply_absorbed(params, x), y, atol=1e-5))
((7, 11), True)
>>> cache = mla.init_cache(params, max_len=7)
>>> for t in range(7):
...     y_t, cache = mla.decode_step(params, cache, x[t])
>>> bool(jnp.allclose(y_t, y[6], atol=1e-5))
True
>>> mla.cache_floats(1, latent_dim=512, rope_dim=64), 2 * 128 * 128
(576, 32768)
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.attention.rope import apply_rope

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "init": ("d_model", "num_heads", "head_dim", "latent_dim", "query_latent_dim", "rope_dim"),
    "apply": (),
    "apply_absorbed": (),
    "init_cache": ("max_len",),
    "decode_step": (),
    "cache_floats": ("S", "latent_dim", "rope_dim"),
}


def init(key, d_model, num_heads, head_dim, latent_dim, query_latent_dim, rope_dim):
    """Weights drawn with variance 1/fan-in; ``rope_dim`` must be even (RoPE rotates pairs)."""
    sizes = dict(d_model=d_model, num_heads=num_heads, head_dim=head_dim, latent_dim=latent_dim,
                 query_latent_dim=query_latent_dim, rope_dim=rope_dim)
    for name, value in sizes.items():
        _checks.size(value, name, minimum=1)
    if rope_dim % 2:
        raise ValueError(f"rope_dim must be even (RoPE rotates pairs of features), got {rope_dim}")
    return _init(key, *(int(value) for value in sizes.values()))


# The sizes are checked above; the draws run as one compiled program per set of sizes (rather than a
# split, a draw and a division per matrix, each compiled on its own), which the jit check of init
# traces without compiling it again.
@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5, 6))
def _init(key, d_model, num_heads, head_dim, latent_dim, query_latent_dim, rope_dim):
    H = num_heads
    shapes = {
        "W_dq": (d_model, query_latent_dim), "W_uq": (query_latent_dim, H, head_dim),
        "W_qr": (query_latent_dim, H, rope_dim), "W_dkv": (d_model, latent_dim),
        "W_uk": (latent_dim, H, head_dim), "W_uv": (latent_dim, H, head_dim),
        "W_kr": (d_model, rope_dim), "W_o": (H, head_dim, d_model),
    }
    keys = jax.random.split(key, len(shapes))
    fan_in = lambda name, shape: shape[0] * (shape[1] if name == "W_o" else 1)
    return {name: jax.random.normal(k, shape) / math.sqrt(fan_in(name, shape))
            for k, (name, shape) in zip(keys, shapes.items())}


def _sizes(params):
    """(d_model, H, head_dim, latent_dim, query_latent_dim, rope_dim) read from ``params``, checked."""
    names = ("W_dq", "W_uq", "W_qr", "W_dkv", "W_uk", "W_uv", "W_kr", "W_o")
    if not isinstance(params, dict) or set(params) != set(names):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params must be the dict of init with keys {sorted(names)}, got {got}")
    for name in names:
        _checks.float_array(params[name], f'params["{name}"]')
    d_model, d_cq = params["W_dq"].shape
    _, H, d_h = params["W_uq"].shape
    d_c, d_r = params["W_dkv"].shape[1], params["W_kr"].shape[1]
    expected = {"W_uq": (d_cq, H, d_h), "W_qr": (d_cq, H, d_r), "W_dkv": (d_model, d_c), "W_uk": (d_c, H, d_h),
                "W_uv": (d_c, H, d_h), "W_kr": (d_model, d_r), "W_o": (H, d_h, d_model)}
    for name, shape in expected.items():
        _checks.same_shape(params[name], f'params["{name}"]', shape, expected_from="the sizes of the other weights")
    return d_model, H, d_h, d_c, d_cq, d_r


def _check_x(params, x):
    d_model = _sizes(params)[0]
    x = _checks.float_array(x, "x", ndim=2, what=" (T, d_model)")
    _checks.same_shape(x, "x", (x.shape[0], d_model), expected_from="d_model from params")
    return x


def latents(params, x, positions):
    """What a token leaves in the cache: ``c_kv`` (T, latent_dim) and ``k_rope`` (T, rope_dim)."""
    c_kv = x @ params["W_dkv"]
    k_rope = apply_rope(x @ params["W_kr"], positions)
    return c_kv, k_rope


def queries(params, x, positions):
    """The content queries (H, T, head_dim) and the rotary queries (H, T, rope_dim)."""
    c_q = x @ params["W_dq"]
    q_content = jnp.einsum("tc,chd->htd", c_q, params["W_uq"])
    q_rope = apply_rope(jnp.einsum("tc,chr->htr", c_q, params["W_qr"]), positions)
    return q_content, q_rope


def apply(params, x):
    """Causal multi-head latent attention over ``x`` (T, d_model), keys and values expanded per head."""
    x = _check_x(params, x)
    return _naive(params, x)


@jax.jit
def _naive(params, x):
    T = x.shape[0]
    H, head_dim = params["W_uk"].shape[1:]
    rope_dim = params["W_kr"].shape[1]
    positions = jnp.arange(T)
    c_kv, k_rope = latents(params, x, positions)
    q_content, q_rope = queries(params, x, positions)
    q = jnp.concatenate([q_content, q_rope], axis=-1)  # (H, T, head_dim + rope_dim)
    k = jnp.concatenate([jnp.einsum("sc,chd->hsd", c_kv, params["W_uk"]),
                         jnp.broadcast_to(k_rope, (H, T, rope_dim))], axis=-1)
    v = jnp.einsum("sc,chd->hsd", c_kv, params["W_uv"])  # (H, S, head_dim)
    scores = jnp.einsum("htd,hsd->hts", q, k) / math.sqrt(head_dim + rope_dim)
    causal = jnp.tril(jnp.ones((T, T), bool))
    weights = jax.nn.softmax(jnp.where(causal, scores, jnp.finfo(scores.dtype).min), axis=-1)
    o = jnp.einsum("hts,hsd->htd", weights, v)
    return jnp.einsum("htd,hdm->tm", o, params["W_o"])


def _absorbed_scores_and_output(params, q_content, q_rope, c_kv, k_rope, allowed):
    """Scores against the latents and the output through the merged value-output projection."""
    head_dim, rope_dim = params["W_uk"].shape[2], params["W_kr"].shape[1]
    q_latent = jnp.einsum("htd,chd->htc", q_content, params["W_uk"])  # W_UKᵀ moved to the query side
    scores = (jnp.einsum("htc,sc->hts", q_latent, c_kv) + jnp.einsum("htr,sr->hts", q_rope, k_rope))
    scores = scores / math.sqrt(head_dim + rope_dim)
    weights = jax.nn.softmax(jnp.where(allowed, scores, jnp.finfo(scores.dtype).min), axis=-1)
    o_latent = jnp.einsum("hts,sc->htc", weights, c_kv)  # the weighted sum of latents, per head
    W_ov = jnp.einsum("chd,hdm->hcm", params["W_uv"], params["W_o"])  # W_O W_UV, merged once
    return jnp.einsum("htc,hcm->tm", o_latent, W_ov)


def apply_absorbed(params, x):
    """The same as ``apply``, computed against the latents: no per-head key or value is formed."""
    x = _check_x(params, x)
    return _absorbed(params, x)


@jax.jit
def _absorbed(params, x):
    T = x.shape[0]
    positions = jnp.arange(T)
    c_kv, k_rope = latents(params, x, positions)
    q_content, q_rope = queries(params, x, positions)
    return _absorbed_scores_and_output(params, q_content, q_rope, c_kv, k_rope, jnp.tril(jnp.ones((T, T), bool)))


class Cache(NamedTuple):
    """The latent cache of one layer: ``c_kv`` (max_len, latent_dim), ``k_rope`` (max_len, rope_dim)
    and how many positions are filled."""

    c_kv: jax.Array
    k_rope: jax.Array
    length: jax.Array


def init_cache(params, max_len):
    """An empty cache with room for ``max_len`` tokens."""
    _, _, _, d_c, _, d_r = _sizes(params)
    _checks.size(max_len, "max_len", minimum=1)
    return _init_cache(int(max_len), d_c, d_r)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _init_cache(max_len, d_c, d_r):
    return Cache(jnp.zeros((max_len, d_c)), jnp.zeros((max_len, d_r)), jnp.zeros((), jnp.int32))


def decode_step(params, cache, x_t):
    """Add the token ``x_t`` (d_model,) at position ``cache.length`` and attend from it with the
    absorbed form; returns (u_t (d_model,), new cache). A full cache raises when concrete (under jit
    the write is dropped by JAX's out-of-bounds rule and the result is wrong: check the length)."""
    d_model, _, _, d_c, _, d_r = _sizes(params)
    if not isinstance(cache, Cache):
        raise TypeError(f"cache must be a Cache from init_cache, got {type(cache).__name__}")
    max_len = cache.c_kv.shape[0]
    _checks.same_shape(_checks.float_array(cache.c_kv, "cache.c_kv"), "cache.c_kv", (max_len, d_c), expected_from="latent_dim of params")
    _checks.same_shape(_checks.float_array(cache.k_rope, "cache.k_rope"), "cache.k_rope", (max_len, d_r), expected_from="max_len and rope_dim")
    _checks.same_shape(_checks.int_array(cache.length, "cache.length"), "cache.length", ())
    _checks.check_range(cache.length, "cache.length (the cache is full)", 0, max_len)
    x_t = _checks.float_array(x_t, "x_t", ndim=1, what=" (d_model,)")
    _checks.same_shape(x_t, "x_t", (d_model,), expected_from="d_model from params")
    return _decode(params, cache, x_t)


@jax.jit
def _decode(params, cache, x_t):
    position = cache.length[None]
    c_new, k_new = latents(params, x_t[None, :], position)
    c_kv = jax.lax.dynamic_update_slice_in_dim(cache.c_kv, c_new, cache.length, axis=0)
    k_rope = jax.lax.dynamic_update_slice_in_dim(cache.k_rope, k_new, cache.length, axis=0)
    q_content, q_rope = queries(params, x_t[None, :], position)
    allowed = (jnp.arange(c_kv.shape[0]) <= cache.length)[None, None, :]
    u = _absorbed_scores_and_output(params, q_content, q_rope, c_kv, k_rope, allowed)
    return u[0], Cache(c_kv, k_rope, cache.length + 1)


def cache_floats(S, latent_dim, rope_dim):
    """Numbers cached per layer for ``S`` tokens: ``S * (latent_dim + rope_dim)`` (multiply by the
    bytes of the dtype for bytes). Multi-head attention caches ``2 * S * H * head_dim``."""
    _checks.size(S, "S", minimum=0)
    _checks.size(latent_dim, "latent_dim", minimum=1)
    _checks.size(rope_dim, "rope_dim", minimum=0)
    return S * (latent_dim + rope_dim)
