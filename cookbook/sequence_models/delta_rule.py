r"""The delta rule and gated DeltaNet
=================================

Read causal linear attention as a matrix of fast weights that every token writes to, and make each
write a correction (replace the value stored under a key) instead of an addition, with a gate that
fades the whole memory: a recurrent layer with a matrix state that recalls what it stored better
than linear attention does, trained in parallel over chunks of the sequence.

Equation
--------

.. math::

   S_t = \alpha_t\, S_{t-1} \left(I - \beta_t\, k_t k_t^\top\right) + \beta_t\, v_t k_t^\top,
   \qquad o_t = S_t\, q_t, \qquad S_0 = 0

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`S_t`
     - the state: fast weights mapping keys to values, after token :math:`t`
     - ``S``
     - ``(Dv, Dk)``
   * - :math:`q_t`, :math:`k_t`, :math:`v_t`
     - query, key (of unit length) and value of token :math:`t`
     - ``q[t]``, ``k[t]``, ``v[t]``
     - ``(Dk,)``, ``(Dk,)``, ``(Dv,)``
   * - :math:`o_t`
     - output of token :math:`t`
     - ``o[t]``
     - ``(Dv,)``
   * - :math:`\beta_t`
     - writing strength (learning rate of the delta rule), in :math:`(0, 1]`
     - ``beta[t]``
     - scalar
   * - :math:`\alpha_t`
     - gate, the fraction of the memory kept, in :math:`(0, 1]`; 1 without a gate
     - ``alpha[t]``
     - scalar
   * - :math:`I`
     - identity matrix
     - (not built: the product is expanded)
     - ``(Dk, Dk)``
   * - :math:`t`
     - position
     - ``t``
     - scalar

Explanation
-----------

**Linear attention is a fast-weight memory.** Causal linear attention without its normaliser,
:math:`S_t = S_{t-1} + v_t k_t^\top`, :math:`o_t = S_t q_t`, writes each token into a matrix by
adding an outer product and reads it with the query: the network computes, token by token, the
weights of a second, linear network, which is Schmidhuber's fast-weight programmer
:footcite:`schlag2021linear`. Adding is a poor way to store: a key written twice returns the sum of
its values, and once more than :math:`D_k` keys are stored they interfere.

**The delta rule** :footcite:`widrow1960adaptive,schlag2021linear` writes the difference instead.
The memory first reads what it holds under the key, :math:`S_{t-1} k_t`, and moves it toward the new
value: :math:`S_t = S_{t-1} + \beta_t (v_t - S_{t-1} k_t) k_t^\top`, which is the equation with
:math:`\alpha_t = 1`. It is one step of gradient descent, with learning rate :math:`\beta_t`, on
the loss :math:`\tfrac12 \lVert S k_t - v_t \rVert^2`. With a unit key and :math:`\beta_t = 1` the
old value is replaced exactly: :math:`S_t k_t = v_t`, whatever was stored there before. The factor
:math:`I - \beta_t k_t k_t^\top` has eigenvalue :math:`1 - \beta_t` along the key and 1 elsewhere:
it never amplifies what is stored, so the memory does not grow with the length of the sequence as
the sums of linear attention do.

**Gates.** :footcite:t:`yang2025gated` multiply the state by a gate :math:`\alpha_t` before the
update (Gated DeltaNet): the delta rule edits one association precisely, the gate clears the whole
memory quickly, when the context changes. Without the correction
(:math:`S_t = \alpha_t S_{t-1} + v_t k_t^\top`, ``delta=False`` in the code) the gate alone gives
gated linear attention; GLA :footcite:`yang2024gla` uses one gate per key channel, the code the
scalar gate of Mamba-2 and Gated DeltaNet.

.. admonition:: Intuition

   The state is a whiteboard of notes filed under keys. Linear attention writes each new note on
   top of the old one under the same key, until the board is a smudge; the gate fades the whole
   board a little every step; the delta rule wipes the old note under that key before writing the
   new one.

**Training in parallel: chunks and the WY representation.** The recurrence is sequential in
:math:`T`. :footcite:t:`yang2024parallelizing` split the sequence into chunks of :math:`C` tokens.
Within a chunk, write :math:`\gamma_t = \alpha_1 \cdots \alpha_t` and
:math:`u_t = \beta_t (v_t - \alpha_t S_{t-1} k_t)` (what token :math:`t` actually writes), so that
:math:`S_t = \alpha_t S_{t-1} + u_t k_t^\top`. Unrolled from the state :math:`S` at the start of the
chunk, the writes solve a unit lower-triangular system,

.. math::

   u_t + \beta_t \sum_{s < t} \tfrac{\gamma_t}{\gamma_s} (k_t^\top k_s)\, u_s
   = \beta_t v_t - \beta_t \gamma_t\, S k_t ,

so :math:`U = \tilde U - W S^\top` with :math:`\tilde U` and :math:`W` computed for all chunks at
once by forward substitution in :math:`C` steps (the UT transform :footcite:`joffrain2006accumulating`, which writes the
product of the factors :math:`I - \beta_t k_t k_t^\top` as :math:`I` minus a sum of rank-one terms,
the WY representation of Householder products :footcite:`bischof1987wy`). Then the outputs are a
masked attention inside the chunk plus a read of :math:`S`,
:math:`o_t = \gamma_t S q_t + \sum_{s \le t} \tfrac{\gamma_t}{\gamma_s} (k_s^\top q_t) u_s`, and the
state passes to the next chunk as
:math:`\gamma_C S + \sum_s \tfrac{\gamma_C}{\gamma_s} u_s k_s^\top`. Only :math:`T / C` steps are
sequential, and they are matrix products. ``delta_rule_chunkwise`` pads the last chunk with tokens
that write nothing (:math:`k = v = 0`, :math:`\beta = 0`, :math:`\alpha = 1`), so :math:`T` need not
be a multiple of :math:`C`; the ratios :math:`\gamma_t / \gamma_s` are computed as differences of
cumulated :math:`\log \alpha`, never as quotients of products that may underflow.

Inductive bias
--------------

The layer assumes that the past can be summarised as a key-value map of fixed size
:math:`D_v \times D_k`, edited one association at a time: good at recalling the latest value of a
key (associative recall, tracking variables), with a bias toward the recent through the gate. It
cannot store more than :math:`D_k` independent associations at once, and unlike attention it
cannot return to a token it has overwritten.

Example
-------

Storing 1 and then 2 under the same key: linear attention returns their sum, the delta rule the
latest value; then the chunked form equals the recurrence at :math:`T = 11`, chunks of 4:

>>> import jax, jax.numpy as jnp
>>> from cookbook.sequence_models.delta_rule import delta_rule_recurrent, delta_rule_chunkwise
>>> key = jnp.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
>>> v = jnp.array([[1.0], [2.0], [0.0]])
>>> write = jnp.array([1.0, 1.0, 0.0])  # the third token only reads
>>> delta_rule_recurrent(key, key, v, write, delta=False)[2], delta_rule_recurrent(key, key, v, write)[2]
(Array([3.], dtype=float32), Array([2.], dtype=float32))
>>> k_x, k_g = jax.random.split(jax.random.key(0))
>>> x, gates = jax.random.normal(k_x, (11, 8)), jax.random.uniform(k_g, (11, 2))
>>> q, k, v = x[:, :3], x[:, 3:6] / jnp.linalg.norm(x[:, 3:6], axis=1, keepdims=True), x[:, 6:]
>>> beta, alpha = gates[:, 0], 0.5 + 0.5 * gates[:, 1]  # writing strengths in (0, 1), gates in (0.5, 1)
>>> o = delta_rule_recurrent(q, k, v, beta, alpha)
>>> o.shape, bool(jnp.allclose(delta_rule_chunkwise(q, k, v, beta, alpha, chunk_size=4), o, atol=1e-5))
((11, 2), True)

Implementation notes
--------------------

**Costs.** The recurrence takes :math:`T` sequential steps of :math:`O(D_k D_v)` work each. The
chunked form does :math:`O(T C (D_k + D_v) + T C^2)` work inside the chunks, all in parallel, plus
:math:`T / C` sequential steps of matrix products of :math:`O(C D_k D_v)`; on an accelerator it is
the form to train with, and the recurrence is the form to generate with, one token at a time with a
state of fixed size. The benchmark suite times the two forms against the sequence length
(``benchmarks/cases_sequence_models_2.py``).

**Libraries.** The Triton kernels of the flash-linear-attention project, by the authors of the
papers, implement these chunked forms for GPUs (``chunk_delta_rule``, ``chunk_gated_delta_rule``,
``chunk_gla``), with the per-channel gates of GLA and a second level of chunking for precision. A
full DeltaNet layer adds what this page leaves out: projections of the input to :math:`q`,
:math:`k`, :math:`v`, :math:`\beta_t = \sigma(\cdot)` and :math:`\alpha_t`, L2 normalisation of the
queries and keys, short causal convolutions before them, and several heads (``jax.vmap`` over
the heads, as in the tests).
"""

import functools
import math

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"delta_rule_recurrent": ("delta",), "delta_rule_chunkwise": ("chunk_size", "delta")}


def _inputs(q, k, v, beta, alpha, delta):
    """The arguments as arrays of the compute dtype, after checking their shapes."""
    if not isinstance(delta, bool):
        raise TypeError(f"delta must be a bool, got {delta!r}")
    q, k, v, T = _checks.queries_keys_values(q, k, v)
    beta = _checks.same_shape(_checks.float_array(beta, "beta"), "beta", (T,), expected_from="one per token of k")
    if alpha is None:
        alpha = jnp.ones((T,), beta.dtype)
    alpha = _checks.same_shape(_checks.float_array(alpha, "alpha"), "alpha", (T,), expected_from="one per token of k")
    dtype = jnp.promote_types(v.dtype, jnp.float32)  # float32, or float64 where x64 is on
    return v.dtype, *(a.astype(dtype) for a in (q, k, v, beta, alpha))


def delta_rule_recurrent(q, k, v, beta, alpha=None, *, delta=True):
    """The outputs (T, Dv) of the gated delta rule, token by token: a :func:`jax.lax.scan` over
    ``q``, ``k`` (T, Dk), ``v`` (T, Dv), ``beta`` and ``alpha`` (T,) carrying ``S`` (Dv, Dk).

    ``alpha=None`` is no gate (DeltaNet); ``delta=False`` drops the correction, which leaves gated
    linear attention (and with ``alpha=None`` and ``beta = 1``, fast weights / unnormalised causal
    linear attention). Computed in float32; the result has the dtype of ``v``.
    """
    out_dtype, q, k, v, beta, alpha = _inputs(q, k, v, beta, alpha, delta)
    return _recurrent(q, k, v, beta, alpha, delta).astype(out_dtype)  # (T, Dv)


@functools.partial(jax.jit, static_argnums=5)  # one compiled program also when called eagerly
def _recurrent(q, k, v, beta, alpha, delta):
    Dk, Dv = k.shape[1], v.shape[1]

    def step(S, xs):
        q_t, k_t, v_t, beta_t, alpha_t = xs
        S = alpha_t * S  # (Dv, Dk)
        if delta:
            v_t = v_t - S @ k_t  # the correction: what the key should give minus what it gives
        S = S + beta_t * jnp.outer(v_t, k_t)  # = alpha S (I - beta k k^T) + beta v k^T
        return S, S @ q_t

    _, o = jax.lax.scan(step, jnp.zeros((Dv, Dk), q.dtype), (q, k, v, beta, alpha))
    return o


def delta_rule_chunkwise(q, k, v, beta, alpha=None, *, chunk_size=64, delta=True):
    """The same outputs as ``delta_rule_recurrent``, computed chunk by chunk: inside each chunk of
    ``chunk_size`` tokens a triangular solve (the UT transform) and masked products, all chunks at
    once; between chunks a :func:`jax.lax.scan` over ``T / chunk_size`` steps carrying ``S``.

    The triangular systems are solved by forward substitution, a loop of ``chunk_size`` steps;
    :func:`jax.scipy.linalg.solve_triangular` gives the same numbers, but XLA's triangular solve was
    much slower on CPU than this loop when the recipe was written.
    """
    C = _checks.size(chunk_size, "chunk_size")
    out_dtype, q, k, v, beta, alpha = _inputs(q, k, v, beta, alpha, delta)
    return _chunkwise(q, k, v, beta, alpha, C, delta).astype(out_dtype)  # (T, Dv)


def _forward_substitution(A, B):
    """``X`` with ``(I + A) X = B``, for strictly lower-triangular ``A`` (N, C, C) and ``B``
    (N, C, R): row ``t`` of ``X`` is row ``t`` of ``B`` minus ``A[t]`` times the rows above it."""
    def row(t, X):
        return X.at[:, t].set(B[:, t] - jnp.einsum("ns,nsr->nr", A[:, t], X))  # rows >= t of X are still 0

    return jax.lax.fori_loop(0, A.shape[1], row, jnp.zeros_like(B))


@functools.partial(jax.jit, static_argnums=(5, 6))
def _chunkwise(q, k, v, beta, alpha, C, delta):
    T, Dk, Dv = k.shape[0], k.shape[1], v.shape[1]
    N = math.ceil(T / C)

    def chunks(a):  # (T, ...) -> (N, C, ...), padded with tokens that neither write nor decay
        a = jnp.pad(a, [(0, N * C - T)] + [(0, 0)] * (a.ndim - 1))
        return a.reshape(N, C, *a.shape[1:])

    q, k, v, beta = chunks(q), chunks(k), chunks(v), chunks(beta)
    g = jnp.cumsum(chunks(jnp.log(alpha)), axis=1)  # (N, C): log gamma_t inside its chunk
    t, s = jnp.arange(C)[None, :, None], jnp.arange(C)[None, None, :]  # positions inside a chunk
    ratio = jnp.exp(jnp.where(s <= t, g[:, :, None] - g[:, None, :], -jnp.inf))  # (N, C, C): gamma_t / gamma_s
    if delta:
        A = jnp.where(s < t, ratio * jnp.einsum("ntd,nsd->nts", k, k), 0.0) * beta[:, :, None]  # (N, C, C)
        rhs = jnp.concatenate([beta[..., None] * v, (beta * jnp.exp(g))[..., None] * k], axis=-1)
        solved = _forward_substitution(A, rhs)  # the UT transform: (I + A)^-1 applied to both
        U_tilde, W = solved[..., :Dv], solved[..., Dv:]  # (N, C, Dv), (N, C, Dk)
    else:
        U_tilde, W = beta[..., None] * v, jnp.zeros_like(k)  # the writes do not depend on S
    scores = ratio * jnp.einsum("ntd,nsd->nts", q, k)  # (N, C, C): masked, decayed attention

    def step(S, xs):
        q_c, k_c, U_tilde_c, W_c, scores_c, g_c = xs
        U = U_tilde_c - W_c @ S.T  # (C, Dv): what each token of the chunk writes
        o = jnp.exp(g_c)[:, None] * (q_c @ S.T) + scores_c @ U  # (C, Dv)
        S = jnp.exp(g_c[-1]) * S + U.T @ (jnp.exp(g_c[-1] - g_c)[:, None] * k_c)  # (Dv, Dk)
        return S, o

    _, o = jax.lax.scan(step, jnp.zeros((Dv, Dk), q.dtype), (q, k, U_tilde, W, scores, g))
    return o.reshape(N * C, Dv)[:T]
