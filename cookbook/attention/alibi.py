r"""ALiBi: attention with linear biases
===================================

Instead of adding positions to the tokens, subtract from every attention score a penalty
proportional to the distance between query and key, with a different slope per head: a position
scheme with no parameters that lets a model trained on short sequences read longer ones.

Equation
--------

.. math::

   m_h = 2^{-8h/H} \quad (h = 1, \dots, H), \qquad
   B_{h,t,s} = -m_h \, \lvert p_t - s \rvert, \qquad p_t = S - T + t

   Y_h = \operatorname{softmax}\!\left(\frac{Q_h K_h^\top}{\sqrt{D}} + B_h + M\right) V_h

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`h`, :math:`H`
     - index of a head (from 1); number of heads
     - ``num_heads``
     - scalar
   * - :math:`m_h`
     - slope of head :math:`h`, a geometric sequence (the rule above is for :math:`H` a power of
       two; see below for other :math:`H`)
     - ``alibi_slopes(num_heads)[h - 1]``
     - ``(H,)``
   * - :math:`t`, :math:`s`
     - index of a query (from 0); index (and position) of a key
     - rows and columns of the result of ``alibi_bias``
     - scalar
   * - :math:`T`, :math:`S`
     - number of queries; number of keys
     - ``T``, ``S``
     - scalar
   * - :math:`p_t`
     - position of query :math:`t`: the queries are the last :math:`T` of the :math:`S` positions
     - ``query_positions``
     - scalar
   * - :math:`B_{h,t,s}`, :math:`B_h`
     - the linear bias added to the scores of head :math:`h`
     - ``alibi_bias(num_heads, T, S)``
     - ``(H, T, S)``
   * - :math:`Q_h`, :math:`K_h`, :math:`V_h`
     - queries, keys and values of head :math:`h`, with no position added
     - ``q[h]``, ``k[h]``, ``v[h]``
     - ``(T, D)``, ``(S, D)``, ``(S, Dv)``
   * - :math:`D`
     - features per head
     - ``q.shape[-1]``
     - scalar
   * - :math:`M`
     - causal mask, 0 where :math:`s \le p_t` and :math:`-\infty` after
     - ``causal=True``
     - ``(T, S)``
   * - :math:`Y_h`
     - output of head :math:`h`
     - ``alibi_attention(q, k, v)[h]``
     - ``(T, Dv)``

Explanation
-----------

Press et al. :footcite:`press2022train` noticed that transformers with sinusoidal, learned or rotary
positions degrade quickly when asked to read sequences longer than those they were trained on, and
proposed to drop position embeddings altogether. Attention with linear biases (ALiBi) adds to each
score a penalty that grows linearly with the distance from the query to the key: a key
:math:`k` positions back loses :math:`m_h k` from its score, so its weight is multiplied by
:math:`e^{-m_h k}`. Each head is a soft, exponentially decaying window over the recent past. The
bias depends only on the distance, so attention is translation invariant, and it is *defined for
every distance*: at test time a longer sequence just has a bigger bias matrix, whose top-left
corner is the training-length one. There is nothing to extrapolate but a line.

.. admonition:: Intuition

   Think of listening in a crowded hall: a voice grows fainter the farther away it is, so unless
   someone says something that really concerns you, you hear your neighbours best. ALiBi gives
   each head a different hearing range, from one that hears only the next seat to one that hears
   across the room, and the fading follows the same rule however large the hall.

**The slopes.** The heads get different slopes, so that some look only at the last few tokens and
others far back. For :math:`H` heads, a power of two, the slopes are the geometric sequence that
starts at :math:`2^{-8/H}` with that same ratio: :math:`\tfrac12, \tfrac14, \dots, \tfrac1{256}`
for 8 heads. For other head counts, the paper's rule takes the :math:`2^{\lfloor\log_2 H\rfloor}`
slopes of the nearest smaller power of two and fills the remaining heads with every other slope of
the next power of two (those that fall between the first ones): for 6 heads, the 4 slopes
:math:`2^{-2}, 2^{-4}, 2^{-6}, 2^{-8}` and then :math:`2^{-1}, 2^{-3}`. The slopes are fixed, not
learned; the paper found learned slopes did not help.

The figure draws the bias against the distance for the eight heads of an 8-head model.

.. plot::

   from cookbook.attention.alibi import alibi_slopes
   slopes = np.asarray(alibi_slopes(8))
   distance = np.arange(0, 33)
   plt.figure(figsize=(5, 3.4))
   for h, m in enumerate(slopes, start=1):
       plt.plot(distance, -m * distance, label=f"head {h}: m = 1/{int(round(1 / m))}")
   plt.xlabel("distance from query to key, p_t - s")
   plt.ylabel("bias added to the score")
   plt.title("ALiBi biases, 8 heads")
   plt.legend(fontsize=6, ncol=2)
   plt.tight_layout()

**In code.** ``alibi_bias`` returns the :math:`(H, T, S)` matrix and ``alibi_attention`` adds it to
the scores of :doc:`scaled_dot_product` together with a causal mask. The queries are
taken to be the last :math:`T` of the :math:`S` positions, which covers both self-attention
(:math:`T = S`) and decoding with a cache (:math:`T = 1`). Written with the absolute value, the bias
also serves a bidirectional encoder (``causal=False``), a common extension; the paper itself treats
causal language models, where only :math:`s \le p_t` is ever seen. The bias is built in float32,
like the scores it is added to.

Inductive bias
--------------

ALiBi builds in *recency*: all else being equal, a nearer token matters more, and exponentially
so. That is a strong prior for language, where most dependencies are local, and it is what lets the
model generalise across lengths: nothing it learned depends on absolute position. The price is that
a head cannot attend sharply to a token far away unless the content match overcomes the penalty,
so long-range retrieval is left to the heads with the smallest slopes.

Example
-------

The slopes of 8 heads, the bias of the first head, and causal attention on a sequence longer than
any "training" length, since the bias exists for every length:

>>> import jax, jax.numpy as jnp
>>> from cookbook.attention.alibi import alibi_attention, alibi_bias, alibi_slopes
>>> alibi_slopes(8) * 256
Array([128.,  64.,  32.,  16.,   8.,   4.,   2.,   1.], dtype=float32)
>>> alibi_bias(2, 3, 3)[0]  # head 1 of 2 has slope 2 ** (-8 / 2) = 1/16
Array([[ 0.    , -0.0625, -0.125 ],
       [-0.0625,  0.    , -0.0625],
       [-0.125 , -0.0625,  0.    ]], dtype=float32)
>>> k_q, k_k, k_v = jax.random.split(jax.random.key(0), 3)
>>> q = jax.random.normal(k_q, (4, 50, 8))  # (H, T, D)
>>> k = jax.random.normal(k_k, (4, 50, 8))
>>> v = jax.random.normal(k_v, (4, 50, 8))
>>> alibi_attention(q, k, v).shape
(4, 50, 8)
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks
from cookbook.attention.scaled_dot_product import scaled_dot_product_attention

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"alibi_slopes": ("num_heads",), "alibi_bias": ("num_heads", "T", "S"), "alibi_attention": ("causal",)}


def _power_of_two_slopes(n):
    start = 2.0 ** (-8.0 / n)
    return [start ** (h + 1) for h in range(n)]


def _slopes(num_heads):
    closest = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = _power_of_two_slopes(closest)
    slopes += _power_of_two_slopes(2 * closest)[0::2][: num_heads - closest]
    return np.array(slopes, np.float32)


def _bias(num_heads, T, S):
    # In NumPy: the slopes and the distances depend on the sizes alone, so there is nothing to compile
    # (eagerly in jnp each of these operations compiled for every new (H, T, S)).
    query_positions = np.arange(S - T, S)  # (T,)
    distance = np.abs(query_positions[:, None] - np.arange(S)[None, :]).astype(np.float32)  # (T, S)
    return np.float32(0.0) - _slopes(num_heads)[:, None, None] * distance[None, :, :]  # (H, T, S); 0 - x avoids -0.0


def _check_heads(num_heads):
    if isinstance(num_heads, int) and not isinstance(num_heads, bool) and num_heads < 1:
        raise ValueError(f"num_heads must be a positive integer, got num_heads={num_heads}")
    return _checks.size(num_heads, "num_heads")


def _check_lengths(T, S):
    T, S = _checks.size(T, "T"), _checks.size(S, "S")
    if T > S:
        raise ValueError(f"T and S must satisfy 1 <= T <= S (queries are the last T of S positions), got T={T}, S={S}")
    return T, S


def alibi_slopes(num_heads):
    """The head slopes of Press et al., shape (H,): geometric from ``2 ** (-8 / H)`` when H is a power
    of two; otherwise those of the power of two below, then every other slope of the one above."""
    num_heads = _check_heads(num_heads)
    return jax.device_put(_slopes(num_heads))  # float32, placed without compiling


def alibi_bias(num_heads, T, S):
    """The bias ``-m_h |p_t - s|`` of shape (H, T, S), the T queries being the last T of S positions."""
    T, S = _check_lengths(T, S)
    return jax.device_put(_bias(_check_heads(num_heads), T, S))


def alibi_attention(q, k, v, causal=True):
    """Attention with linear biases for q (H, T, D), k (H, S, D), v (H, S, Dv), causal by default.

    No position is added to q or k: the bias carries all the positional information.
    """
    q = _checks.float_array(q, "q", ndim=3, what=" (H, T, D)")
    k = _checks.float_array(k, "k", ndim=3, what=" (H, S, D)")
    if q.shape[0] != k.shape[0]:
        raise ValueError(f"q and k must have shapes (H, T, D) and (H, S, D), got q {q.shape} and k {k.shape}")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {causal!r}")
    H, T, _ = q.shape
    S = k.shape[1]
    _check_lengths(T, S)
    v = _checks.float_array(v, "v")  # its shape is checked by scaled_dot_product_attention, where it is traced
    return _alibi_attention(q, k, v, causal)


@functools.partial(jax.jit, static_argnums=3)  # one program after the checks, not one per operation
def _alibi_attention(q, k, v, causal):
    H, T, _ = q.shape
    S = k.shape[1]
    mask = None
    if causal:
        mask = jnp.arange(S)[None, :] <= jnp.arange(S - T, S)[:, None]  # (T, S): keys up to p_t
    return scaled_dot_product_attention(q, k, v, mask, bias=_bias(H, T, S))
