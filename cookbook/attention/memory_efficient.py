r"""Memory-efficient attention
==========================

Compute exactly the same attention as the direct form, but one block of keys at a time, carrying
a running maximum and a running sum of the softmax so that the :math:`T \times S` matrix of scores
is never stored, in the forward pass or in the backward pass: the algorithm behind FlashAttention,
to reach for when sequences are long.

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

   Y = O^{(J)} / \ell^{(J)}, \qquad L = m^{(J)} + \log \ell^{(J)}

(each row of :math:`O` is scaled by its own row's factor). The backward pass, given the gradient
:math:`\mathrm{d}Y` of the loss with respect to :math:`Y`, keeps only :math:`Y` and :math:`L` from
the forward pass and recomputes the weights of each block:

.. math::

   \delta = \operatorname{rowsum}(\mathrm{d}Y \circ Y), \qquad
   P^{(j)} = e^{Z^{(j)} - L}, \qquad
   \mathrm{d}Z^{(j)} = P^{(j)} \circ \left(\mathrm{d}Y\, V^{(j)\top} - \delta\right)

   \mathrm{d}V^{(j)} = P^{(j)\top}\, \mathrm{d}Y, \qquad
   \mathrm{d}K^{(j)} = \frac{\mathrm{d}Z^{(j)\top} Q}{\sqrt{D}}, \qquad
   \mathrm{d}Q = \sum_{j=1}^{J} \frac{\mathrm{d}Z^{(j)} K^{(j)}}{\sqrt{D}}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`Q`
     - queries (in the code already divided by :math:`\sqrt{D}`)
     - ``q``
     - ``(T, D)``
   * - :math:`K^{(j)}`, :math:`V^{(j)}`
     - keys and values of block :math:`j`
     - ``k_block``, ``v_block``
     - ``(block_size, D)``, ``(block_size, Dv)``
   * - :math:`M^{(j)}`
     - the mask's columns for block :math:`j`: 0 where allowed, :math:`-\infty` (the most negative
       float) where not, and for padding keys
     - ``allowed`` (from ``mask_block``, ``causal`` and the padding)
     - ``(T, block_size)``
   * - :math:`j`, :math:`J`
     - index of a key block; number of blocks, :math:`\lceil S / \text{block size} \rceil`
     - the step of ``scan``; ``num_blocks``
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
     - ``y``, returned by ``memory_efficient_attention``
     - ``(T, Dv)``
   * - :math:`L`
     - log-sum-exp of each query's scores, kept for the backward pass
     - ``lse``
     - ``(T,)``
   * - :math:`\mathrm{d}Y`, :math:`\mathrm{d}Q`, :math:`\mathrm{d}K^{(j)}`, :math:`\mathrm{d}V^{(j)}`
     - gradients of the loss with respect to the output, the queries, and block :math:`j` of the
       keys and values
     - ``dy``, ``dq``, ``dk_block``, ``dv_block``
     - ``(T, Dv)``, ``(T, D)``, ``(block_size, D)``, ``(block_size, Dv)``
   * - :math:`\delta`
     - :math:`\sum_s P_{ts}\, \mathrm{d}P_{ts}` for each query, computed as
       :math:`\mathrm{d}Y_t \cdot Y_t`
     - ``delta``
     - ``(T,)``
   * - :math:`P^{(j)}`
     - attention weights of block :math:`j`, recomputed (0 where masked)
     - ``p``
     - ``(T, block_size)``
   * - :math:`\mathrm{d}Z^{(j)}`
     - gradient of the loss with respect to the scores of block :math:`j`
     - ``dz``
     - ``(T, block_size)``

Explanation
-----------

The direct form (:doc:`scaled_dot_product`) builds the whole :math:`T \times S` score
matrix, exponentiates it and multiplies it by the values. For a 32 000-token self-attention that
matrix alone is 4.1 GB in float32 per head, far more than the queries, keys and values that
produced it (:math:`O((T + S) D)` numbers). The scores are needed only to be reduced: each output
row is a sum over keys. The difficulty is the softmax, whose normaliser and whose safety shift (the
row maximum) depend on *all* the keys.

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

.. admonition:: Intuition

   Think of counting votes in a contest where each ballot is worth :math:`e^{\text{score}}`, and
   you write every tally in units of the best ballot seen so far, so that the numbers stay
   small. Ballots arrive a box at a time. When a box brings a new best, you do not recount
   earlier boxes: you rescale the tally you already hold by how much the unit changed, and carry
   on. At the end the tally, divided by its total, is the same as if every ballot had been laid on
   one table at once.

**The backward pass.** Automatic differentiation of the loop above would keep every block's
carry for the backward pass, which is again :math:`O(TS)`. Instead the recipe gives the function
its own gradient (:func:`jax.custom_vjp`), the backward pass of FlashAttention-2
:footcite:`dao2023flashattention2`. It keeps only the output :math:`Y` and one number per query,
the log-sum-exp :math:`L`, from which the weights of any block are recomputed exactly as
:math:`P = e^{Z - L}`. The gradient of a softmax row is
:math:`\mathrm{d}Z_{ts} = P_{ts}(\mathrm{d}P_{ts} - \sum_{s'} P_{ts'} \mathrm{d}P_{ts'})`, whose
inner sum looks like it needs the whole row; but with :math:`\mathrm{d}P = \mathrm{d}Y V^\top` it
equals :math:`\mathrm{d}Y_t \cdot Y_t`, computed once before the loop (:math:`\delta`). Each block
then yields its own :math:`\mathrm{d}K^{(j)}` and :math:`\mathrm{d}V^{(j)}` and adds to
:math:`\mathrm{d}Q`.

**Memory.** The loops over key blocks are :func:`jax.lax.scan`, so only one
:math:`T \times \text{block}` tile of scores exists at a time. The forward pass holds the carried
:math:`m`, :math:`\ell` and :math:`O`; the backward pass holds :math:`Q, K, V, Y, L`, the running
:math:`\mathrm{d}Q` and the blocks of :math:`\mathrm{d}K` and :math:`\mathrm{d}V`. Both grow as
:math:`O(T \cdot \text{block} + (T + S) D)`: linearly in the sequence length for self-attention,
instead of quadratically. The work is the same :math:`O(TSD)` as the direct form, plus one more
product per tile in the backward pass for the recomputed scores.

**Traps.** The running maximum starts at the most negative float rather than :math:`-\infty`, so
that :math:`m^{(j-1)} - m^{(j)}` is never :math:`-\infty - (-\infty)`. A masked score must
contribute exactly zero even while the maximum is still the most negative float itself (then
:math:`e^{z - m} = e^0 = 1`), so masked entries are zeroed explicitly after the exponential, in
both passes. A query whose keys are all masked ends with :math:`\ell = 0` and gets a zero output
and zero gradients, the same choice as :doc:`scaled_dot_product`; a NaN in the inputs stays a NaN
in the output. When :math:`S` is not a multiple of the block size, the keys are padded with zeros
and the padding is masked out. All of the arithmetic is in float32.

Inductive bias
--------------

None beyond that of attention itself: this is the same function, computed in a different order.
What it changes is what is *affordable*: the assumption that every token may need every other one
can be kept for sequences long enough that the direct form would not fit in memory.

Example
-------

Seven queries, thirteen keys in blocks of four (the last block is padded); the result and its
gradient equal those of the direct form:

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
>>> direct = jax.jit(scaled_dot_product_attention)  # the direct form, compiled
>>> bool(jnp.allclose(y, direct(q, k, v), atol=1e-5))
True
>>> causal = memory_efficient_attention(q, k[:7], v[:7], causal=True, block_size=4)
>>> bool(jnp.allclose(causal, direct(q, k[:7], v[:7], jnp.tril(jnp.ones((7, 7), bool))), atol=1e-5))
True
>>> loss = lambda attend: lambda k: jnp.sum(attend(q, k, v) ** 2)
>>> g = jax.grad(loss(lambda q, k, v: memory_efficient_attention(q, k, v, block_size=4)))(k)
>>> bool(jnp.allclose(g, jax.grad(loss(direct))(k), atol=1e-5))
True

Implementation notes
--------------------

XLA's own account of the compiled program (``memory_analysis().temp_size_in_bytes``) for causal
self-attention with :math:`D = 64` and blocks of 64 keys, in MB, printed by
``python -m benchmarks.attention_memory`` and asserted loosely in the tests:

.. list-table::
   :header-rows: 1

   * - :math:`S = T`
     - 512
     - 1024
     - 2048
     - 4096
   * - direct, forward
     - 2.1
     - 8.4
     - 33.6
     - 134.2
   * - memory-efficient, forward
     - 0.42
     - 0.82
     - 1.62
     - 3.21
   * - direct, gradient
     - 3.1
     - 12.6
     - 50.3
     - 268.5
   * - memory-efficient, gradient
     - 0.56
     - 1.09
     - 2.15
     - 4.26

The memory-efficient columns double with :math:`S` (a fitted exponent of about 1.0, forward and
backward); the direct ones quadruple. Before the recipe had its own backward pass, differentiating
through the loop (even with :func:`jax.checkpoint` around each block) stored the carry of every
block, and the gradient's temporary memory grew about 3.7 times per doubling.

This JAX version shows the algorithm but not the speed: a real FlashAttention kernel keeps the
tile in on-chip memory and fuses all of it, which :func:`jax.nn.dot_product_attention` does with
``implementation="cudnn"`` on NVIDIA GPUs. Only reverse-mode derivatives are defined
(:func:`jax.grad`, :func:`jax.vjp`); :func:`jax.jvp` is not, as for any :func:`jax.custom_vjp`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"memory_efficient_attention": ("causal", "block_size")}


def memory_efficient_attention(q, k, v, mask=None, *, causal=False, block_size=128):
    """Exact attention for q (T, D), k (S, D), v (S, Dv), over key blocks of ``block_size``.

    ``mask`` (boolean, shape (T, S), or (1, S) for a mask of the keys alone, ``True`` = may attend)
    and ``causal`` (query t sees keys s <= t, built block by block without a (T, S) array) may be
    combined. S need not be a multiple of ``block_size``: the keys are padded and the padding
    masked. Rows with nothing to attend to give zeros. The gradient is the FlashAttention-2
    backward pass (reverse mode only). One head; batch and heads with :func:`jax.vmap`.
    """
    q = _checks.float_array(q, "q", ndim=2, what=" (T, D)")
    k = _checks.float_array(k, "k", ndim=2, what=" (S, D)")
    v = _checks.float_array(v, "v", ndim=2, what=" (S, Dv)")
    (T, D), (S, Dv) = q.shape, v.shape
    _checks.same_shape(k, "k", (S, D), expected_from="(S, D), with D from q and S from v")
    block_size = _checks.size(block_size, "block_size")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {causal!r}")
    if mask is not None:
        if not isinstance(mask, (jax.Array, np.ndarray)):
            mask = jnp.asarray(mask)  # a NumPy mask goes to the core as it is: no program to convert it
        if mask.dtype != jnp.bool_:
            raise TypeError(f"mask must be boolean (True = may attend), got dtype {mask.dtype}")
        if mask.shape not in ((T, S), (1, S)):
            raise ValueError(f"mask must have shape (T, S) = {(T, S)} or (1, S) = {(1, S)}, got shape {mask.shape}")
    return _blocked(q, k, v, mask, causal, block_size)


# The checks run in Python, the rest is one compiled program per set of shapes: called eagerly, the
# scan would trace and compile again on every call (its step is a new closure each time).
@functools.partial(jax.jit, static_argnames=("causal", "block_size"))
def _blocked(q, k, v, mask, causal, block_size):
    """Pad and block the checked inputs, then attend; the result in v's dtype."""
    (T, D), (S, _) = q.shape, v.shape
    num_blocks = -(-S // block_size)  # ceil(S / block_size)
    pad = num_blocks * block_size - S
    if mask is not None:
        mask = jnp.pad(jnp.broadcast_to(mask, (T, S)), ((0, 0), (0, pad)))  # (T, num_blocks * block)
        mask = mask.reshape(T, num_blocks, block_size).transpose(1, 0, 2)  # (num_blocks, T, block)

    def blocks(x):  # (S, F) -> (num_blocks, block, F), padded with zeros
        return jnp.pad(x.astype(jnp.float32), ((0, pad), (0, 0))).reshape(num_blocks, block_size, -1)

    q = q.astype(jnp.float32) / jnp.sqrt(jnp.float32(D))  # the scale, differentiated by JAX itself
    return _attention(q, blocks(k), blocks(v), mask, causal, S).astype(v.dtype)


def _allowed(start, mask_block, T, block_size, S, causal):
    """Which scores of a (T, block) tile may count: real keys, causal order, the user's mask."""
    key_positions = start + jnp.arange(block_size)  # (block,)
    allowed = jnp.broadcast_to(key_positions[None, :] < S, (T, block_size))  # padding keys: False
    if causal:
        allowed = allowed & (key_positions[None, :] <= jnp.arange(T)[:, None])
    if mask_block is not None:
        allowed = allowed & mask_block
    return allowed


def _forward(q, k_blocks, v_blocks, mask_blocks, causal, S):
    """The online softmax over key blocks: the output Y and each query's log-sum-exp L."""
    T, (num_blocks, block_size, Dv) = q.shape[0], v_blocks.shape
    lowest = jnp.finfo(jnp.float32).min
    starts = jnp.arange(num_blocks) * block_size

    def block(carry, xs):
        m, l, o = carry  # (T,), (T,), (T, Dv)
        k_block, v_block, start, mask_block = xs
        allowed = _allowed(start, mask_block, T, block_size, S, causal)  # (T, block)
        scores = jnp.where(allowed, q @ k_block.T, lowest)  # (T, block)
        m_new = jnp.maximum(m, scores.max(axis=1))  # (T,)
        correction = jnp.exp(m - m_new)  # (T,), at most 1
        p = jnp.where(allowed, jnp.exp(scores - m_new[:, None]), 0.0)  # (T, block)
        l = correction * l + p.sum(axis=1)
        o = correction[:, None] * o + p @ v_block  # (T, Dv)
        return (m_new, l, o), None

    init = (jnp.full((T,), lowest), jnp.zeros((T,)), jnp.zeros((T, Dv)))
    (m, l, o), _ = jax.lax.scan(block, init, (k_blocks, v_blocks, starts, mask_blocks))
    empty = l == 0  # a query with nothing to attend to; a NaN in the inputs is not empty and stays NaN
    y = jnp.where(empty[:, None], 0.0, o / jnp.where(empty, 1.0, l)[:, None])  # (T, Dv)
    lse = jnp.where(empty, 0.0, m + jnp.log(jnp.where(empty, 1.0, l)))  # (T,)
    return y, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _attention(q, k_blocks, v_blocks, mask_blocks, causal, S):
    return _forward(q, k_blocks, v_blocks, mask_blocks, causal, S)[0]


def _attention_forward(q, k_blocks, v_blocks, mask_blocks, causal, S):
    y, lse = _forward(q, k_blocks, v_blocks, mask_blocks, causal, S)
    return y, (q, k_blocks, v_blocks, mask_blocks, y, lse)  # O((T + S) D) numbers kept, no tile


def _attention_backward(causal, S, residuals, dy):
    """FlashAttention-2's backward pass: recompute each tile of weights from L, never store one."""
    q, k_blocks, v_blocks, mask_blocks, y, lse = residuals
    T, (num_blocks, block_size, _) = q.shape[0], k_blocks.shape
    delta = jnp.sum(dy * y, axis=1)  # (T,): rowsum(dY * Y), the softmax's correction term
    starts = jnp.arange(num_blocks) * block_size

    def block(dq, xs):
        k_block, v_block, start, mask_block = xs
        allowed = _allowed(start, mask_block, T, block_size, S, causal)  # (T, block)
        p = jnp.where(allowed, jnp.exp(q @ k_block.T - lse[:, None]), 0.0)  # (T, block): the weights
        dv_block = p.T @ dy  # (block, Dv)
        dz = p * (dy @ v_block.T - delta[:, None])  # (T, block): gradient of the scores
        dk_block = dz.T @ q  # (block, D)
        return dq + dz @ k_block, (dk_block, dv_block)  # dq: (T, D)

    dq, (dk_blocks, dv_blocks) = jax.lax.scan(
        block, jnp.zeros_like(q), (k_blocks, v_blocks, starts, mask_blocks))
    return dq, dk_blocks, dv_blocks, None  # the boolean mask has no gradient


_attention.defvjp(_attention_forward, _attention_backward)
