r"""Mamba-2 and state space duality
===============================

When the state matrix of a selective state space is a scalar times the identity, the recurrence
equals a masked, attention-like product of the whole sequence, and a chunked form mixes the two:
matrix products inside chunks, a short recurrence between them. The algorithm behind Mamba-2, and
the reason it trains on the matrix units of an accelerator.

Equation
--------

.. math::

   \begin{aligned}
   h_t &= a_t\, h_{t-1} + B_t\, x_t^\top, \qquad y_t = h_t^\top C_t
   \qquad (a_t = e^{\Delta_t A} \in (0, 1],\ \text{per head}) \\
   Y &= \left(L \circ C B^\top\right) X, \qquad
   L_{ij} = \begin{cases}
     \exp\left(\sum_{k=j+1}^{i} \log a_k\right) & i \ge j \\ 0 & i < j \end{cases}
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`t`; :math:`i`, :math:`j`, :math:`k`
     - a time step; an output step, an input step, and a step in between
     - row and column indices
     - scalars
   * - :math:`x_t`, :math:`X`
     - input of one head at step :math:`t`; all steps stacked
     - one head of a row of ``x``; ``x``
     - ``(P,)``, ``(T, H, P)`` for all heads
   * - :math:`y_t`, :math:`Y`
     - output of one head; all steps stacked
     - ``y``
     - ``(P,)``, ``(T, H, P)``
   * - :math:`h_t`
     - state of one head: :math:`N` rows of the head's :math:`P` channels
     - ``h``
     - ``(N, P)``, ``(H, N, P)`` for all heads
   * - :math:`a_t`
     - decay of one head at step :math:`t`, passed as its logarithm
     - ``log_a``
     - ``(T, H)``
   * - :math:`\Delta_t`, :math:`A`
     - Mamba-2's step and the head's scalar state matrix, :math:`\log a_t = \Delta_t A`
     - computed by the caller
     - scalars
   * - :math:`B_t`, :math:`C_t`; :math:`B`, :math:`C`
     - input and readout vectors, shared by the heads; all steps stacked
     - ``B``, ``C``
     - ``(N,)``; ``(T, N)``
   * - :math:`L`
     - the 1-semiseparable decay mask: the total decay from step :math:`j` to step :math:`i`
     - ``L``
     - ``(H, T, T)``
   * - :math:`\circ`
     - elementwise product of matrices
     - ``*`` inside an ``einsum``
     - ``(T, T)``

Explanation
-----------

:doc:`mamba`'s state matrix is diagonal: each of the :math:`N` state entries of a channel decays
at its own rate. :footcite:t:`dao2024transformers` restrict it further, to a scalar times the
identity per head, :math:`A = \alpha I`, so that one number :math:`a_t = e^{\Delta_t \alpha}`
decays the whole state of a head at step :math:`t`. The loss of expressivity is small, and it buys
an exact equivalence, *state space duality*.

**Two forms.** Unroll the recurrence: :math:`h_i = \sum_{j \le i} (a_{j+1} \cdots a_i)\, B_j x_j^\top`,
so :math:`y_i = \sum_{j \le i} L_{ij}\, (C_i^\top B_j)\, x_j`. The product of decays is
:math:`L_{ij}`, and the whole map from :math:`X` to :math:`Y` is one matrix
:math:`L \circ C B^\top`: causal linear attention (:doc:`/docs/chapters/attention/linear_attention`) with queries
:math:`C`, keys :math:`B`, values :math:`X`, no normalisation, and a decay mask. Every such
:math:`L` is *1-semiseparable*: every block of it on or below the diagonal has rank 1 (it factors
as the decays to step :math:`i` over the decays to step :math:`j`), and the masked matrix has rank
at most :math:`N` there; structured matrices of this kind are exactly those with a linear-time
recurrence. The recurrence costs :math:`O(T N P)` per head but runs step after step; the quadratic
form costs :math:`O(T^2 (N + P))` but is a few large matrix products, which is what accelerators
are fast at. The code builds :math:`\log L` as sums over :math:`(j, i]` of :math:`\log a`
(``segsum``), not as differences of one running sum, which would lose precision in float32 once
the running sum is large.

**The chunked form** gets the best of both. Cut the sequence into chunks of :math:`Q` steps. Inside
a chunk, use the quadratic form. Each chunk also summarises its inputs as the state it would leave
behind from a zero start; a recurrence over the :math:`T/Q` chunks (an associative scan from
:doc:`linear_recurrence`) passes the true state from chunk to chunk; and each position adds the
contribution of the state that entered its chunk, decayed to it. Cost: :math:`O(T Q (N + P))` in
matrix products plus a scan of length :math:`T/Q`. A sequence whose length is not a multiple of
:math:`Q` is padded with :math:`\log a = 0` and :math:`x = 0`, which leave every real output
unchanged; the tests check :math:`T = 11` with chunks of 1, 4 and 16.

.. admonition:: Intuition

   A relay race: within each leg (a chunk) everything is computed at once, by whoever runs it; at the
   hand-over only the baton (the state) passes, and the next runner need not know how the earlier legs
   were run. Shrink the legs to one step and it is a recurrence; stretch one leg over the whole race
   and it is attention.

Inductive bias
--------------

Mamba-2 keeps the selective prior of :doc:`mamba`, a state written and forgotten by the tokens
themselves, with coarser forgetting: one decay per head and step instead of one per state entry and
channel. It compensates with larger states (:math:`N` of 64 to 256 instead of 16), which the chunked
form makes affordable, and with many heads, like multi-head attention. Seen from the attention side,
the model is attention whose weights are products of content (:math:`C_i^\top B_j`) and a decay that
only ever shrinks with distance: it can fade the past selectively but never bring back what it has
faded.

Example
-------

The recurrence, the quadratic form and the chunked form agree, at a length that is not a multiple of
the chunk:

>>> import jax, jax.numpy as jnp
>>> from cookbook.sequence_models.mamba2 import segsum, ssd_chunked, ssd_quadratic, ssd_recurrent
>>> jnp.exp(segsum(jnp.log(jnp.array([0.5, 0.5, 0.5]))))  # L of a constant decay 0.5
Array([[1.  , 0.  , 0.  ],
       [0.5 , 1.  , 0.  ],
       [0.25, 0.5 , 1.  ]], dtype=float32)
>>> k_x, k_a, k_b, k_c = jax.random.split(jax.random.key(0), 4)
>>> T, H, P, N = 11, 3, 5, 7
>>> x = jax.random.normal(k_x, (T, H, P))
>>> log_a = -jax.random.uniform(k_a, (T, H))
>>> B, C = jax.random.normal(k_b, (T, N)), jax.random.normal(k_c, (T, N))
>>> y = ssd_recurrent(x, log_a, B, C)
>>> y.shape
(11, 3, 5)
>>> bool(jnp.allclose(ssd_quadratic(x, log_a, B, C), y, atol=1e-4))
True
>>> bool(jnp.allclose(ssd_chunked(x, log_a, B, C, chunk_size=4), y, atol=1e-4))
True
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.sequence_models.linear_recurrence import linear_scan

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"segsum": (), "ssd_recurrent": (), "ssd_quadratic": (), "ssd_chunked": ("chunk_size",)}


def segsum(log_a):
    """``S[..., i, j] = sum_{k=j+1}^{i} log_a[..., k]`` for ``i >= j`` and ``-inf`` above the diagonal.

    Each entry is summed over its own segment (a cumulative sum of a masked copy), never as the
    difference of two running sums, which cancels badly in float32 when the running sum is large.
    """
    log_a = _checks.float_array(log_a, "log_a", min_ndim=1, what=" (..., T)")
    return _segsum_jit(log_a)


def _segsum(log_a):
    T = log_a.shape[-1]
    i = jnp.arange(T)[:, None]
    j = jnp.arange(T)[None, :]
    terms = jnp.where(i > j, log_a[..., :, None], 0.0)  # terms[..., k, j] = log_a[k] for k > j
    sums = jnp.cumsum(terms, axis=-2)  # sums[..., i, j] = sum of log_a[k] for j < k <= i
    return jnp.where(i >= j, sums, -jnp.inf)  # (..., T, T)


_segsum_jit = jax.jit(_segsum)  # called eagerly: one program per shape, not one per operation


def _check(x, log_a, B, C):
    x = _checks.float_array(x, "x", ndim=3, what=" (T, H, P)")
    T, H, _ = x.shape
    log_a = _checks.same_shape(_checks.float_array(log_a, "log_a"), "log_a", (T, H), expected_from="(T, H) from x")
    B = _checks.float_array(B, "B", ndim=2, what=" (T, N)")
    _checks.same_shape(B, "B", (T, B.shape[1]), expected_from="T from x")
    C = _checks.same_shape(_checks.float_array(C, "C"), "C", B.shape, expected_from="B")
    return x, log_a, B, C


def ssd_recurrent(x, log_a, B, C):
    """The recurrence, one step at a time: ``h_t = a_t h_{t-1} + B_t x_t^T``, ``y_t = h_t^T C_t``,
    for ``x`` (T, H, P), ``log_a`` (T, H), ``B``, ``C`` (T, N); returns ``y`` (T, H, P)."""
    return _recurrent(*_check(x, log_a, B, C))


@jax.jit
def _recurrent(x, log_a, B, C):
    H, P = x.shape[1:]
    N = B.shape[1]

    def step(h, inputs):
        x_t, log_a_t, B_t, C_t = inputs
        h = jnp.exp(log_a_t)[:, None, None] * h + B_t[None, :, None] * x_t[:, None, :]  # (H, N, P)
        return h, jnp.einsum("N,HNP->HP", C_t, h)

    f32 = (z.astype(jnp.float32) for z in (x, log_a, B, C))
    _, y = jax.lax.scan(step, jnp.zeros((H, N, P), jnp.float32), tuple(f32))
    return y.astype(x.dtype)  # (T, H, P)


def ssd_quadratic(x, log_a, B, C):
    """The masked, attention-like form ``Y = (L o C B^T) X`` per head: O(T^2) memory."""
    return _quadratic(*_check(x, log_a, B, C))


@jax.jit
def _quadratic(x, log_a, B, C):
    dtype = x.dtype
    x, log_a, B, C = (z.astype(jnp.float32) for z in (x, log_a, B, C))
    L = jnp.exp(_segsum(log_a.T))  # (H, T, T)
    scores = C @ B.T  # (T, T): C_i . B_j
    y = jnp.einsum("HIJ,IJ,JHP->IHP", L, scores, x)
    return y.astype(dtype)


def ssd_chunked(x, log_a, B, C, *, chunk_size):
    """The chunked form: quadratic inside chunks of ``chunk_size`` steps, a scan over the chunks.

    ``T`` need not be a multiple of ``chunk_size``: the tail is padded with ``log_a = 0`` and
    ``x = 0``, which change no output, and cut off again.
    """
    x, log_a, B, C = _check(x, log_a, B, C)
    return _chunked(x, log_a, B, C, _checks.size(chunk_size, "chunk_size"))


@functools.partial(jax.jit, static_argnames="Q")
def _chunked(x, log_a, B, C, Q):
    T, H, P = x.shape
    N, dtype = B.shape[1], x.dtype
    n_chunks = -(-T // Q)
    pad = n_chunks * Q - T
    x, log_a, B, C = (jnp.pad(z.astype(jnp.float32), [(0, pad)] + [(0, 0)] * (z.ndim - 1)) for z in (x, log_a, B, C))
    x = x.reshape(n_chunks, Q, H, P)
    B, C = B.reshape(n_chunks, Q, N), C.reshape(n_chunks, Q, N)
    log_a = log_a.reshape(n_chunks, Q, H).transpose(0, 2, 1)  # (chunks, H, Q)

    # 1. Inside each chunk: the quadratic form.
    L = jnp.exp(_segsum(log_a))  # (chunks, H, Q, Q)
    y_inside = jnp.einsum("cqn,csn,chqs,cshp->cqhp", C, B, L, x)
    # 2. The state each chunk leaves behind from a zero start: inputs decayed to the chunk's end.
    to_end = L[:, :, -1, :]  # (chunks, H, Q): decay from step s to the last step
    states = jnp.einsum("csn,chs,cshp->chnp", B, to_end, x)  # (chunks, H, N, P)
    # 3. Pass the true state from chunk to chunk: h_c = (decay over chunk c) h_{c-1} + states_c.
    chunk_decay = jnp.exp(jnp.sum(log_a, axis=-1))  # (chunks, H)
    h = linear_scan(jnp.broadcast_to(chunk_decay[:, :, None, None], states.shape), states)
    h_entering = jnp.concatenate([jnp.zeros_like(h[:1]), h[:-1]])  # the state entering each chunk
    # 4. Each position reads the entering state, decayed from the chunk's start to it.
    from_start = jnp.exp(jnp.cumsum(log_a, axis=-1))  # (chunks, H, Q)
    y_entering = jnp.einsum("cqn,chq,chnp->cqhp", C, from_start, h_entering)
    y = (y_inside + y_entering).reshape(n_chunks * Q, H, P)[:T]
    return y.astype(dtype)
