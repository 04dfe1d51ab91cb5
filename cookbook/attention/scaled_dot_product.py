r"""Scaled dot-product attention
============================

Each query takes a weighted average of the values, weighted by how well it matches each key: the
core operation of every transformer, and the one to reach for whenever one set of positions must
read from another (or from itself).

Equation
--------

.. math::

   A = \operatorname{softmax}\!\left(\frac{Q K^\top}{\sqrt{D}} + M\right), \qquad Y = A V,
   \qquad
   M_{ts} = \begin{cases} 0 & \text{if query } t \text{ may attend to key } s, \\
   -\infty & \text{otherwise,} \end{cases}

where the softmax runs over the keys (each row of :math:`A` sums to one).

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`Q`
     - queries, one row per position that asks
     - ``q``
     - ``(..., T, D)``
   * - :math:`K`
     - keys, one row per position that can be read
     - ``k``
     - ``(..., S, D)``
   * - :math:`V`
     - values, the content read at each key position
     - ``v``
     - ``(..., S, Dv)``
   * - :math:`D`
     - features per query and key
     - ``D = q.shape[-1]``
     - scalar
   * - :math:`M`
     - additive mask: 0 where attention is allowed, :math:`-\infty` (in code the most negative
       float) where not
     - built from ``mask`` (``True`` = may attend)
     - ``(..., T, S)``
   * - :math:`t`, :math:`s`
     - index of a query; index of a key
     - row and column of the weights
     - scalar
   * - :math:`A`
     - attention weights; row :math:`t` is a probability distribution over the keys
     - ``attention_weights(q, k, mask)``
     - ``(..., T, S)``
   * - :math:`Y`
     - output, one weighted average of values per query
     - ``scaled_dot_product_attention(q, k, v, mask)``
     - ``(..., T, Dv)``

Explanation
-----------

**A soft dictionary look-up.** A Python dictionary returns the value stored under the one key that
equals the query. Attention relaxes both halves of that: a query matches every key to a degree,
measured by their dot product :math:`q_t \cdot k_s`, and it gets back not one value but the average
of all values, weighted by the softmax of those degrees of match. Because every step is
differentiable, the network learns what to ask (:math:`Q`), what to advertise (:math:`K`) and what to
hand over (:math:`V`) by gradient descent.

.. admonition:: Intuition

   Picture a question asked in a room of specialists. Each wears a badge describing what they
   know (the key) and holds a note with what they would say (the value). You compare your question
   with every badge, and instead of walking to the single best match you read all the notes at
   once, each weighted by how well its badge fits; the softmax makes a clearly better fit dominate
   while a tie splits your attention evenly.

The form used in transformers is due to :footcite:t:`vaswani2017attention`; the idea of a learned
soft alignment comes from :footcite:t:`bahdanau2015neural`.

**Why divide by** :math:`\sqrt{D}`. If the entries of a query and a key are independent with mean 0
and variance 1, their dot product is a sum of :math:`D` products each of variance 1, so it has
variance :math:`D` and a standard deviation of :math:`\sqrt{D}`. Without the scale, wide heads give
scores of size tens, the softmax saturates into a one-hot vector, and its gradient (which is
:math:`A(1 - A)` on the diagonal) vanishes. Dividing by :math:`\sqrt{D}` brings the scores back to
unit variance whatever the width :footcite:`vaswani2017attention`.

**Masks.** A boolean ``mask`` (``True`` means *may attend*) says which keys each query may see: a
lower-triangular mask makes attention *causal* (position :math:`t` reads only positions
:math:`s \le t`), and a mask of shape :math:`(1, S)` hides padding keys from every query. A mask
broadcasts over the leading axes and the queries, never over the keys, and a mask or an input of
the wrong dtype is refused rather than cast. The code adds the most negative
finite float, ``jnp.finfo(float32).min``, instead of :math:`-\infty`: after the maximum is
subtracted the masked scores underflow to an exact 0 in the exponential, and no ``inf - inf = nan``
can arise.

**A query that may attend to nothing.** When a whole row of the mask is ``False`` the softmax has
nothing to normalise: with :math:`-\infty` it is :math:`0/0`, with the most negative float it
silently becomes the uniform average of all values, keys the mask was meant to hide. This recipe
chooses instead to give such a query **zero weights and therefore a zero output**, and documents and
tests it: the row contributes nothing, and its gradient is zero rather than NaN.

**Precision.** The scores and the softmax are computed in float32 even for bfloat16 or float16
inputs: bfloat16 carries 8 significant bits (7 stored), so :math:`1 + 1/256` already rounds back
to 1, and a sum of exponentials over hundreds of keys would lose the small weights entirely. The weights are cast back to the dtype of the values for the final
product, which accumulates in float32, and the output is returned in the input dtype.

The figure shows the weights of one causal head on random queries and keys: the upper triangle is
zero, and each row sums to one.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.attention.scaled_dot_product import attention_weights
   k_q, k_k = jax.random.split(jax.random.key(0))
   T, D = 12, 8
   q = jax.random.normal(k_q, (T, D))
   k = jax.random.normal(k_k, (T, D))
   A = attention_weights(q, k, mask=jnp.tril(jnp.ones((T, T), bool)))
   plt.figure(figsize=(4.2, 3.6))
   plt.imshow(np.asarray(A), cmap="viridis")
   plt.colorbar(label="attention weight")
   plt.xlabel("key position s")
   plt.ylabel("query position t")
   plt.title("Causal attention weights")
   plt.tight_layout()

Inductive bias
--------------

Attention assumes nothing about which positions are related: any query can read any key, at a cost
that does not depend on their distance, and the same weights are applied to every position. What
makes a key relevant is decided by content alone, so the operation treats its keys as a *set*:
reordering the keys and values together leaves every output unchanged, and reordering the queries
reorders the outputs in the same way. Order must be supplied separately (see
:doc:`positional_encoding`, :doc:`rope` and :doc:`alibi`). The price of that generality is the
:math:`T \times S` matrix of scores, whose time and memory grow with the product of the lengths
(see :doc:`memory_efficient` and :doc:`linear_attention`).

Example
-------

Three queries read from four keys; the last query may see nothing and gets zeros:

>>> import jax, jax.numpy as jnp
>>> from cookbook.attention.scaled_dot_product import (
...     attention_weights, scaled_dot_product_attention)
>>> k_q, k_k, k_v = jax.random.split(jax.random.key(0), 3)
>>> q = jax.random.normal(k_q, (3, 8))
>>> k = jax.random.normal(k_k, (4, 8))
>>> v = jax.random.normal(k_v, (4, 2))
>>> mask = jnp.array([[True, True, True, True],
...                   [True, True, False, False],
...                   [False, False, False, False]])
>>> A = attention_weights(q, k, mask)
>>> A.sum(axis=-1).round(4)
Array([1., 1., 0.], dtype=float32)
>>> y = scaled_dot_product_attention(q, k, v, mask)
>>> y.shape, bool(jnp.all(y[2] == 0))
((3, 2), True)
>>> bool(jnp.allclose(y, A @ v, atol=1e-6))
True
"""

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"attention_weights": (), "scaled_dot_product_attention": ()}


def _check_qk(q, k):
    q = _checks.float_array(q, "q", min_ndim=2, what=" (..., T, D)")
    k = _checks.float_array(k, "k", min_ndim=2, what=" (..., S, D)")
    if q.shape[:-2] != k.shape[:-2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"k must have shape (..., S, D) = {q.shape[:-2] + ('S', q.shape[-1])} to match q {q.shape}, "
            f"got k {k.shape}"
        )
    return q, k


def _full(x, name, shape):
    """``x`` broadcast to the scores' ``shape`` (..., T, S): leading axes and T may broadcast, the key
    axis may not (a mask or bias of one column would say the same thing of every key)."""
    if x.ndim > len(shape) or x.shape[-1] != shape[-1] or any(
            a not in (1, b) for a, b in zip(x.shape[::-1], shape[::-1])):
        raise ValueError(f"{name} must broadcast to (..., T, S) = {shape} with its last axis S = {shape[-1]}, "
                         f"got shape {x.shape}")
    return jnp.broadcast_to(x, shape)


def attention_weights(q, k, mask=None, *, bias=None):
    """Softmax attention weights (..., T, S) in float32; rows with nothing to attend to are all zero.

    ``mask`` is boolean, ``True`` where a query may attend to a key. ``bias`` (optional, float) is
    added to the scaled scores before the mask, as relative-position schemes such as ALiBi do. Both
    broadcast to (..., T, S) over the leading axes and T, never over the key axis S.
    """
    q, k = _check_qk(q, k)
    D = q.shape[-1]
    scores = jnp.einsum("...td,...sd->...ts", q, k, preferred_element_type=jnp.float32)  # (..., T, S)
    scores = scores.astype(jnp.float32) / jnp.sqrt(jnp.float32(D))
    if bias is not None:
        bias = _checks.float_array(bias, "bias")
        scores = scores + _full(bias.astype(jnp.float32), "bias", scores.shape)
    if mask is None:
        return jax.nn.softmax(scores, axis=-1)
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(f"mask must be boolean (True = may attend), got dtype {mask.dtype}")
    mask = _full(mask, "mask", scores.shape)
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1)  # subtracts the row maximum internally
    return jnp.where(jnp.any(mask, axis=-1, keepdims=True), weights, 0.0)  # empty rows: zeros


def scaled_dot_product_attention(q, k, v, mask=None, *, bias=None):
    """``softmax(q k^T / sqrt(D) + bias, masked) v`` for q (..., T, D), k (..., S, D), v (..., S, Dv).

    ``mask`` is boolean, ``True`` where a query may attend to a key; it and ``bias`` broadcast to
    (..., T, S) over the leading axes and T, never over the key axis. A query whose mask row is all
    ``False`` gets a zero output. The inputs must be floating-point; the softmax runs in float32; the
    output has the dtype of ``v``.
    """
    q, k = _check_qk(q, k)
    v = _checks.float_array(v, "v", min_ndim=2, what=" (..., S, Dv)")
    if v.ndim != k.ndim or v.shape[:-1] != k.shape[:-1]:
        raise ValueError(f"v must have shape (..., S, Dv) with (..., S) = {k.shape[:-1]} like k, got v {v.shape}")
    weights = attention_weights(q, k, mask, bias=bias).astype(v.dtype)  # (..., T, S)
    y = jnp.einsum("...ts,...sd->...td", weights, v, preferred_element_type=jnp.float32)  # (..., T, Dv)
    return y.astype(v.dtype)
