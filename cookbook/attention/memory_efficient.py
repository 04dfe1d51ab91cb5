r"""Memory-efficient attention
==========================

Compute exactly the same attention as the direct form, but one block of keys at a time, carrying
a running maximum and a running sum of the softmax so that the :math:`T \times S` matrix of scores
is never stored: the algorithm behind FlashAttention, to reach for when sequences are long.

Equation
--------

For key blocks :math:`j = 1, \dots, J`, starting from :math:`m^{(0)} = -\infty`,
:math:`\ell^{(0)} = 0`, :math:`O^{(0)} = 0`:

.. math::

   Z^{(j)} = \frac{Q K^{(j)\top}}{\sqrt{D}} + M^{(j)}, \qquad
   m^{(j)} = \max\!\left(m^{(j-1)}, \operatorname{rowmax} Z^{(j)}\right)

   \ell^{(j)} = e^{m^{(j-1)} - m^{(j)}}\, \ell^{(j-1)} + \operatorname{rowsum} e^{Z^{(j)} - m^{(j)}},
   \qquad
   O^{(j)} = e^{m^{(j-1)} - m^{(j)}}\, O^{(j-1)} + e^{Z^{(j)} - m^{(j)}}\, V^{(j)}

   Y = O^{(J)} / \ell^{(J)}

(each row of :math:`O` is scaled by its own row's factor).

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`Q`
     - queries
     - ``q``
     - ``(T, D)``
   * - :math:`K^{(j)}`, :math:`V^{(j)}`
     - keys and values of block :math:`j`
     - ``k_block``, ``v_block``
     - ``(block_size, D)``, ``(block_size, Dv)``
   * - :math:`M^{(j)}`
     - the mask's columns for block :math:`j`: 0 where allowed, :math:`-\infty` (the most negative
       float) where not, and for padding keys
     - ``mask_block``
     - ``(T, block_size)``
   * - :math:`j`, :math:`J`
     - index of a key block; number of blocks, :math:`\lceil S / \text{block size} \rceil`
     - ``num_blocks``
     - scalar
   * - :math:`D`
     - features per query and key
     - ``D``
     - scalar
   * - :math:`Z^{(j)}`
     - scores of all queries against block :math:`j`, the only scores held at any time
     - ``scores``
     - ``(T, block_size)``
   * - :math:`m^{(j)}`
     - running maximum of each query's scores
     - ``m``
     - ``(T,)``
   * - :math:`\ell^{(j)}`
     - running sum of exponentials, relative to :math:`m^{(j)}`
     - ``l``
     - ``(T,)``
   * - :math:`O^{(j)}`
     - running unnormalised output, relative to :math:`m^{(j)}`
     - ``o``
     - ``(T, Dv)``
   * - :math:`Y`
     - output, equal to ``scaled_dot_product_attention(q, k, v, mask)``
     - ``memory_efficient_attention(q, k, v, mask)``
     - ``(T, Dv)``

Explanation
-----------

The direct form (:doc:`scaled_dot_product`) builds the whole :math:`T \times S` score
matrix, exponentiates it and multiplies it by the values. For a 32 000-token self-attention that
matrix alone is 4 GB in float32 per head, far more than the queries, keys and values that produced
it (:math:`O((T + S) D)` numbers). The scores are needed only to be reduced: each output row is a
sum over keys. The difficulty is the softmax, whose normaliser and whose safety shift (the row
maximum) depend on *all* the keys.

**The online softmax.** :footcite:t:`milakov2018online` showed that the maximum and the sum can be
computed in a single pass: keep a running maximum :math:`m` and a running sum :math:`\ell` of
:math:`e^{z - m}`; when a new block raises the maximum from :math:`m^{(j-1)}` to :math:`m^{(j)}`,
every term already in the sum was computed relative to the old maximum and is simply multiplied by
:math:`e^{m^{(j-1)} - m^{(j)}} \le 1`. The same correction applies to the running weighted sum
of values :math:`O`, because it is linear in those terms. After the last block,
:math:`O / \ell` is exactly :math:`\operatorname{softmax}(Z) V`: nothing is approximated, and the
order of blocks does not matter except for rounding. :footcite:t:`rabe2021self` used this to
compute attention in :math:`O(\sqrt{n})` memory on accelerators, and FlashAttention
(Dao et al. :footcite:`dao2022flashattention`) fused it into one GPU kernel that keeps each block
in fast on-chip memory, which makes it faster as well as smaller, because the cost of long
attention is mostly memory traffic.

**Memory.** Here the loop over key blocks is a :func:`jax.lax.scan`, so only one
:math:`T \times \text{block}` tile of scores exists at a time, plus the carried :math:`m`,
:math:`\ell` and :math:`O` (:math:`T(D_v + 2)` numbers). Memory grows as
:math:`O(T \cdot \text{block} + (T + S) D)`: linearly in :math:`S` for fixed :math:`T`, and linearly
in the sequence length for self-attention, instead of quadratically. The work is the same
:math:`O(TSD)` multiply-adds as the direct form. For training, the block function is wrapped in
:func:`jax.checkpoint`, so that the backward pass recomputes each tile rather than storing all of
them, as Rabe and Staats do; otherwise the gradient would store the full matrix after all. (The
tests check the growth of XLA's temporary buffers: linear for this form, quadratic for the direct
one.)

**Traps.** The running maximum starts at the most negative float rather than :math:`-\infty`, so
that :math:`m^{(j-1)} - m^{(j)}` is never :math:`-\infty - (-\infty)`. A masked score must
contribute exactly zero even while the maximum is still the most negative float itself (then
:math:`e^{z - m} = e^0 = 1`), so masked entries are zeroed explicitly after the exponential.
A query whose keys are all masked ends with :math:`\ell = 0` and gets a zero output, the same
choice as :doc:`scaled_dot_product`. When :math:`S` is not a multiple of the block size, the keys
are padded with zeros and the padding is masked out. All of the arithmetic is in float32.

Inductive bias
--------------

None beyond that of attention itself: this is the same function, computed in a different order.
What it changes is what is *affordable*: the assumption that every token may need every other one
can be kept for sequences long enough that the direct form would not fit in memory.

Example
-------

Seven queries, thirteen keys in blocks of four (the last block is padded); the result equals the
direct form:

>>> import jax, jax.numpy as jnp
>>> from cookbook.attention.memory_efficient import memory_efficient_attention
>>> from cookbook.attention.scaled_dot_product import scaled_dot_product_attention
>>> k_q, k_k, k_v = jax.random.split(jax.random.key(0), 3)
>>> q = jax.random.normal(k_q, (7, 8))
>>> k = jax.random.normal(k_k, (13, 8))
>>> v = jax.random.normal(k_v, (13, 3))
>>> y = memory_efficient_attention(q, k, v, block_size=4)
>>> y.shape
(7, 3)
>>> bool(jnp.allclose(y, scaled_dot_product_attention(q, k, v), atol=1e-5))
True
>>> causal = memory_efficient_attention(q, k[:7], v[:7], causal=True, block_size=4)
>>> direct = scaled_dot_product_attention(q, k[:7], v[:7], jnp.tril(jnp.ones((7, 7), bool)))
>>> bool(jnp.allclose(causal, direct, atol=1e-5))
True
"""

import jax
import jax.numpy as jnp

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"memory_efficient_attention": ("causal", "block_size")}


def memory_efficient_attention(q, k, v, mask=None, *, causal=False, block_size=128):
    """Exact attention for q (T, D), k (S, D), v (S, Dv), over key blocks of ``block_size``.

    ``mask`` (boolean, broadcastable to (T, S), ``True`` = may attend) and ``causal`` (query t sees
    keys s <= t, built block by block without a (T, S) array) may be combined. S need not be a
    multiple of ``block_size``: the keys are padded and the padding masked. Rows with nothing to
    attend to give zeros. One head; batch and heads with :func:`jax.vmap`.
    """
    if q.ndim != 2 or k.ndim != 2 or q.shape[1] != k.shape[1]:
        raise ValueError(f"q and k must have shapes (T, D) and (S, D), got q {q.shape} and k {k.shape}")
    if v.ndim != 2 or v.shape[0] != k.shape[0]:
        raise ValueError(f"v must have shape (S, Dv) = ({k.shape[0]}, Dv) to match k {k.shape}, got v {v.shape}")
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
    (T, D), (S, Dv) = q.shape, v.shape
    num_blocks = -(-S // block_size)  # ceil(S / block_size)
    pad = num_blocks * block_size - S
    valid = jnp.arange(num_blocks * block_size) < S  # padding keys are invalid
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.dtype != jnp.bool_:
            raise ValueError(f"mask must be boolean (True = may attend), got dtype {mask.dtype}")
        try:
            mask = jnp.broadcast_to(mask, (T, S))
        except ValueError:
            raise ValueError(f"mask must broadcast to (T, S) = {(T, S)}, got shape {mask.shape}") from None
        mask = jnp.pad(mask, ((0, 0), (0, pad)))  # (T, num_blocks * block)
        mask = mask.reshape(T, num_blocks, block_size).transpose(1, 0, 2)  # (num_blocks, T, block)
    f32 = jnp.float32
    q = q.astype(f32) / jnp.sqrt(f32(D))
    k_blocks = jnp.pad(k.astype(f32), ((0, pad), (0, 0))).reshape(num_blocks, block_size, D)
    v_blocks = jnp.pad(v.astype(f32), ((0, pad), (0, 0))).reshape(num_blocks, block_size, Dv)
    valid = valid.reshape(num_blocks, block_size)
    starts = jnp.arange(num_blocks) * block_size
    lowest = jnp.finfo(f32).min

    @jax.checkpoint  # the backward pass recomputes each tile instead of storing all of them
    def block(carry, xs):
        m, l, o = carry  # (T,), (T,), (T, Dv)
        k_block, v_block, valid_block, start, mask_block = xs
        allowed = jnp.broadcast_to(valid_block[None, :], (T, block_size))  # (T, block)
        if causal:
            key_positions = start + jnp.arange(block_size)
            allowed = allowed & (key_positions[None, :] <= jnp.arange(T)[:, None])
        if mask_block is not None:
            allowed = allowed & mask_block
        scores = jnp.where(allowed, q @ k_block.T, lowest)  # (T, block)
        m_new = jnp.maximum(m, scores.max(axis=1))  # (T,)
        correction = jnp.exp(m - m_new)  # (T,), at most 1
        p = jnp.where(allowed, jnp.exp(scores - m_new[:, None]), 0.0)  # (T, block)
        l = correction * l + p.sum(axis=1)
        o = correction[:, None] * o + p @ v_block  # (T, Dv)
        return (m_new, l, o), None

    init = (jnp.full((T,), lowest, f32), jnp.zeros((T,), f32), jnp.zeros((T, Dv), f32))
    (m, l, o), _ = jax.lax.scan(block, init, (k_blocks, v_blocks, valid, starts, mask))
    y = jnp.where(l[:, None] > 0, o / jnp.where(l > 0, l, 1.0)[:, None], 0.0)  # empty rows: zeros
    return y.astype(v.dtype)
