r"""Retention (RetNet)
==================

Causal linear attention with an exponential decay: one formula that trains in parallel like
attention, generates token by token at constant cost like a recurrent network, and runs chunk by
chunk on long sequences; the mixing layer of the Retentive Network.

Equation
--------

.. math::

   \begin{aligned}
   o_n &= \sum_{m \le n} \gamma^{\,n-m} \left(q_n \cdot k_m\right) v_m
        \quad\Longleftrightarrow\quad
   O = \left(Q K^\top \circ \mathcal{D}\right) V, \quad
   \mathcal{D}_{nm} = \begin{cases} \gamma^{\,n-m} & n \ge m \\ 0 & n < m \end{cases} \\
   S_n &= \gamma\, S_{n-1} + k_n^\top v_n, \qquad o_n = q_n S_n \\
   \gamma_h &= 1 - 2^{-5-h}, \qquad h = 0, \dots, H - 1
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`n`, :math:`m`
     - position of an output (a query) and of an input (a key and value)
     - row indices
     - scalars
   * - :math:`q_n`, :math:`k_m`, :math:`v_m`; :math:`Q`, :math:`K`, :math:`V`
     - query, key and value rows; the matrices that stack them
     - ``q``, ``k``, ``v``
     - ``(Dk,)``, ``(Dk,)``, ``(Dv,)``; ``(T, Dk)``, ``(T, Dk)``, ``(T, Dv)``
   * - :math:`o_n`, :math:`O`
     - output row; all rows
     - ``o``
     - ``(Dv,)``; ``(T, Dv)``
   * - :math:`\gamma`
     - decay per step, in :math:`(0, 1)`
     - ``gamma``
     - scalar
   * - :math:`\mathcal{D}`
     - the causal decay mask
     - ``decay``
     - ``(T, T)``
   * - :math:`S_n`
     - recurrent state: the decayed sum of :math:`k_m^\top v_m`
     - ``S``
     - ``(Dk, Dv)``
   * - :math:`\circ`
     - elementwise product
     - ``*``
     - ``(T, T)``
   * - :math:`h`, :math:`H`, :math:`\gamma_h`
     - a head, the number of heads, and the head's decay
     - ``h``, ``H``, ``multiscale_gammas(H)[h]``
     - scalars

Explanation
-----------

:footcite:t:`sun2023retentive` start from a linear recurrence with a matrix state,
:math:`S_n = \gamma S_{n-1} + k_n^\top v_n`, read by the query, :math:`o_n = q_n S_n`. Unrolled, the
state is :math:`S_n = \sum_{m \le n} \gamma^{n-m} k_m^\top v_m`, so
:math:`o_n = \sum_{m \le n} \gamma^{n-m} (q_n \cdot k_m) v_m`: causal linear attention
(:doc:`/docs/chapters/attention/linear_attention`) without feature map or normaliser, whose weights fade by
:math:`\gamma` per step of distance. The same numbers have three forms, and ``retention`` computes
any of them:

* **parallel**: the matrix :math:`Q K^\top`, masked by :math:`\mathcal{D}`, times :math:`V`;
  :math:`O(T^2)` work and memory, few large matrix products: for training.
* **recurrent**: the state :math:`S_n`, updated once a token; :math:`O(D_k D_v)` work and memory per
  token, whatever the length: for generation, where attention's cache would grow.
* **chunkwise**: chunks of :math:`B` tokens; inside a chunk the parallel form, across chunks the
  state, decayed by :math:`\gamma^B` per chunk. A token at position :math:`j` of its chunk reads the
  state that entered the chunk decayed by :math:`\gamma^{j+1}`, and contributes to the state the chunk
  leaves behind with weight :math:`\gamma^{B-1-j}`. Cost :math:`O(T B)`: for long sequences. A length
  that is not a multiple of :math:`B` is padded with zero keys and values at the end, which change no
  real output.

The tests check that the three agree. The decay powers are computed as
:math:`\exp((n - m)\log\gamma)` and set to exactly 0 above the diagonal, never as a power of a
negative exponent, which would overflow. ``retention`` applies no scaling or normalisation; in the
RetNet layer, the keys are scaled by :math:`D_k^{-1/2}`, each head's output is normalised (a group
normalisation, which makes the scale of the weights irrelevant), and a swish gate multiplies it, as
``multiscale_retention`` does. RetNet also rotates queries and keys by position (xPos, a relative of
:doc:`/docs/chapters/attention/rope`), which this page leaves out.

**Multi-scale decay.** Each head :math:`h` has its own fixed :math:`\gamma_h = 1 - 2^{-5-h}`: the
first head's weights halve after about 22 steps, and each further head remembers twice as long
(its time scale :math:`1/(1-\gamma_h)` is :math:`32, 64, 128, \dots` steps). A layer with several
heads thus looks at the past at several resolutions at once, with no learned decay.

.. admonition:: Intuition

   Retention is a rumour mill with a fixed fade: each new fact is whispered into a common memory,
   and every step everything in it is a little quieter. A listener (the query) picks out what
   resonates with it. Heads with different :math:`\gamma` are listeners with different attention
   spans, from gossip about the last sentence to the story of the whole chapter.

Inductive bias
--------------

Retention assumes that relevance fades with distance at a fixed rate, regardless of content: what
the query can recover from :math:`n - m` steps ago is scaled by :math:`\gamma^{n-m}`, so old tokens
are heard only if nothing closer competes. The multi-scale heads soften this by offering several
rates, but unlike :doc:`mamba` no token can decide to be remembered longer. In exchange, the
recurrence is a fixed linear map that can be computed in all three ways above, and generation needs
a state of :math:`D_k \times D_v` numbers per head instead of a growing cache.

Example
-------

The three forms agree, at a length that is not a multiple of the chunk:

>>> import jax, jax.numpy as jnp
>>> from cookbook.sequence_models.retnet import (
...     init, multiscale_gammas, multiscale_retention, retention)
>>> multiscale_gammas(4)  # 1 - 1/32, 1 - 1/64, 1 - 1/128, 1 - 1/256
Array([0.9688, 0.9844, 0.9922, 0.9961], dtype=float32)
>>> q = jnp.array([[1.0], [1.0]]); k = jnp.array([[1.0], [2.0]]); v = jnp.array([[1.0], [10.0]])
>>> retention(q, k, v, 0.5)  # o_1 = 0.5 * 1 * 1 + 2 * 10
Array([[ 1. ],
       [20.5]], dtype=float32)
>>> k_q, k_k, k_v, k_p, k_x = jax.random.split(jax.random.key(0), 5)
>>> q, k = jax.random.normal(k_q, (11, 4)), jax.random.normal(k_k, (11, 4))
>>> v = jax.random.normal(k_v, (11, 3))
>>> o = retention(q, k, v, 0.9)
>>> bool(jnp.allclose(o, retention(q, k, v, 0.9, form="recurrent"), atol=1e-5))
True
>>> bool(jnp.allclose(o, retention(q, k, v, 0.9, form="chunkwise", chunk_size=4), atol=1e-5))
True
>>> params = init(k_p, 8)
>>> multiscale_retention(params, jax.random.normal(k_x, (11, 8)), H=2).shape
(11, 8)
"""

import functools
import math

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"retention": ("form", "chunk_size"), "multiscale_gammas": ("H",),
       "multiscale_retention": ("H", "form", "chunk_size")}

FORMS = ("parallel", "recurrent", "chunkwise")


def _check_form(form, chunk_size):
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if form == "chunkwise":
        if chunk_size is None:
            raise ValueError("chunk_size is required for form='chunkwise'")
        return _checks.size(chunk_size, "chunk_size")
    if chunk_size is not None:
        raise ValueError(f"chunk_size is only used by form='chunkwise', got chunk_size={chunk_size!r} "
                         f"with form={form!r}")
    return None


def _check_gamma(gamma):
    """``gamma`` must lie in (0, 1); when traced (under jit) its value cannot be checked."""
    if isinstance(gamma, bool):
        raise TypeError(f"gamma must be a real number in (0, 1), got {gamma!r}")
    gamma = _checks.float_array(gamma, "gamma", ndim=0, what=" (a scalar)") if not isinstance(gamma, float) else gamma
    if _checks.is_concrete(gamma) and not 0.0 < float(gamma) < 1.0:
        raise ValueError(f"gamma must lie in (0, 1), got {float(gamma)}")
    return gamma


def retention(q, k, v, gamma, *, form="parallel", chunk_size=None):
    """``o_n = sum_{m <= n} gamma^(n - m) (q_n . k_m) v_m`` for ``q``, ``k`` (T, Dk), ``v`` (T, Dv),
    with no scaling or normalisation, in the ``form`` "parallel", "recurrent" or "chunkwise" (which
    needs ``chunk_size``). Under :func:`jax.jit` a traced ``gamma`` is not checked: a value of 1 or
    more makes the state grow without bound."""
    chunk_size = _check_form(form, chunk_size)
    q = _checks.float_array(q, "q", ndim=2, what=" (T, Dk)")
    T, Dk = q.shape
    k = _checks.same_shape(_checks.float_array(k, "k"), "k", (T, Dk), expected_from="q")
    v = _checks.float_array(v, "v", ndim=2, what=" (T, Dv)")
    _checks.same_shape(v, "v", (T, v.shape[1]), expected_from="T from q")
    gamma = _check_gamma(gamma)
    if form == "parallel":
        return _parallel(q, k, v, gamma)
    if form == "recurrent":
        return _recurrent(q, k, v, gamma)
    return _chunkwise(q, k, v, gamma, chunk_size)


def _decay(T, log_gamma):
    """The (T, T) mask ``gamma^(n - m)`` for ``n >= m``, exactly 0 above the diagonal."""
    n = jnp.arange(T)[:, None]
    m = jnp.arange(T)[None, :]
    distance = jnp.where(n >= m, n - m, 0)  # no negative powers, which would overflow
    return jnp.where(n >= m, jnp.exp(distance * log_gamma), 0.0)


@jax.jit
def _parallel(q, k, v, gamma):
    dtype = v.dtype
    q, k, v = (z.astype(jnp.float32) for z in (q, k, v))
    decay = _decay(q.shape[0], jnp.log(jnp.asarray(gamma, jnp.float32)))
    o = (q @ k.T * decay) @ v  # (T, Dv)
    return o.astype(dtype)


@jax.jit
def _recurrent(q, k, v, gamma):
    dtype = v.dtype
    q, k, v = (z.astype(jnp.float32) for z in (q, k, v))
    gamma = jnp.asarray(gamma, jnp.float32)

    def step(S, qkv):
        q_n, k_n, v_n = qkv
        S = gamma * S + jnp.outer(k_n, v_n)  # (Dk, Dv)
        return S, q_n @ S

    _, o = jax.lax.scan(step, jnp.zeros((q.shape[1], v.shape[1]), jnp.float32), (q, k, v))
    return o.astype(dtype)  # (T, Dv)


@functools.partial(jax.jit, static_argnames="chunk_size")
def _chunkwise(q, k, v, gamma, chunk_size):
    dtype = v.dtype
    T, Dk = q.shape
    Dv = v.shape[1]
    Bc = chunk_size
    n_chunks = -(-T // Bc)
    pad = [(0, n_chunks * Bc - T), (0, 0)]
    q, k, v = (jnp.pad(z.astype(jnp.float32), pad).reshape(n_chunks, Bc, -1) for z in (q, k, v))
    log_gamma = jnp.log(jnp.asarray(gamma, jnp.float32))
    j = jnp.arange(Bc)
    decay = _decay(Bc, log_gamma)  # (Bc, Bc), inside a chunk
    reads = jnp.exp((j + 1) * log_gamma)[:, None]  # gamma^(j + 1): the entering state, decayed to j
    writes = jnp.exp((Bc - 1 - j) * log_gamma)[:, None]  # gamma^(B - 1 - j): token j to the chunk's end
    chunk_decay = jnp.exp(Bc * log_gamma)

    def step(S, chunk):
        q_c, k_c, v_c = chunk  # (Bc, Dk), (Bc, Dk), (Bc, Dv)
        o_c = (q_c @ k_c.T * decay) @ v_c + reads * (q_c @ S)  # (Bc, Dv)
        S = chunk_decay * S + k_c.T @ (writes * v_c)  # (Dk, Dv)
        return S, o_c

    _, o = jax.lax.scan(step, jnp.zeros((Dk, Dv), jnp.float32), (q, k, v))
    return o.reshape(n_chunks * Bc, Dv)[:T].astype(dtype)


# ---- Multi-scale retention --------------------------------------------------------------------------

def multiscale_gammas(H):
    """The fixed decays of ``H`` heads, ``gamma_h = 1 - 2^(-5 - h)``."""
    return _gammas(_checks.size(H, "H"))


@functools.partial(jax.jit, static_argnums=0)  # one program, not an eager one per operation
def _gammas(H):
    h = jnp.arange(H, dtype=jnp.float32)
    return 1.0 - 2.0 ** (-5.0 - h)


def init(key, D):
    """Parameters of a multi-scale retention layer of width ``D``: five (D, D) projections."""
    return _init(key, _checks.size(D, "D"))


@functools.partial(jax.jit, static_argnums=1)
def _init(key, D):
    k_q, k_k, k_v, k_g, k_o = jax.random.split(key, 5)
    return {name: jax.random.normal(k_w, (D, D)) / math.sqrt(D)
            for name, k_w in (("W_Q", k_q), ("W_K", k_k), ("W_V", k_v), ("W_G", k_g), ("W_O", k_o))}


def multiscale_retention(params, x, *, H, form="parallel", chunk_size=None):
    """RetNet's layer on ``x`` (T, D) with ``H`` heads: retention with the decays
    ``multiscale_gammas(H)``, keys scaled by ``(D / H)^(-1/2)``, each head's output normalised over its
    features, a swish gate, and an output projection."""
    H, chunk_size = _checks.size(H, "H"), _check_form(form, chunk_size)
    W_Q = _checks.float_array(params["W_Q"], "params['W_Q']", ndim=2, what=" (D, D)")
    D = W_Q.shape[0]
    for name in ("W_Q", "W_K", "W_V", "W_G", "W_O"):
        where = f"params['{name}']"
        _checks.same_shape(_checks.float_array(params[name], where), where, (D, D), expected_from="init(key, D)")
    if D % H:
        raise ValueError(f"H must divide D = {D}, got H={H}")
    x = _checks.float_array(x, "x", ndim=2, what=" (T, D)")
    _checks.same_shape(x, "x", (x.shape[0], D), expected_from=f"(T, D) with D = {D} from params")
    return _multiscale(params, x, H, form, chunk_size)


@functools.partial(jax.jit, static_argnames=("H", "form", "chunk_size"))
def _multiscale(params, x, H, form, chunk_size, eps=1e-6):
    T, D = x.shape
    d = D // H
    q, k, v = (x @ params[w] for w in ("W_Q", "W_K", "W_V"))  # (T, D) each
    heads = lambda z: z.reshape(T, H, d).transpose(1, 0, 2)  # (H, T, d)
    if form == "chunkwise":
        one_head = functools.partial(_chunkwise, chunk_size=chunk_size)
    else:
        one_head = _parallel if form == "parallel" else _recurrent
    o = jax.vmap(one_head)(heads(q), heads(k) / math.sqrt(d), heads(v), _gammas(H))  # (H, T, d)
    o = (o - o.mean(axis=-1, keepdims=True)) * jax.lax.rsqrt(o.var(axis=-1, keepdims=True) + eps)
    o = o.transpose(1, 0, 2).reshape(T, D)  # each head normalised, then side by side
    return ((jax.nn.silu(x @ params["W_G"]) * o) @ params["W_O"]).astype(x.dtype)  # (T, D)
