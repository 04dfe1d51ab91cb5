r"""Linear attention
================

Replace the softmax's exponential similarity by a dot product of positive feature maps, so that
the sum over keys can be computed once and shared by every query: attention whose cost grows
linearly with the sequence, and which runs as a recurrent network when it is causal.

Equation
--------

.. math::

   \phi(x) = \operatorname{elu}(x) + 1, \qquad
   y_t = \frac{\sum_{s} \phi(q_t)^\top \phi(k_s)\, v_s}{\sum_{s} \phi(q_t)^\top \phi(k_s)}
   = \frac{\phi(q_t)^\top \sum_{s} \phi(k_s)\, v_s^\top}{\phi(q_t)^\top \sum_{s} \phi(k_s)}

   \text{causal (sums over } s \le t\text{):} \quad
   U_t = U_{t-1} + \phi(k_t)\, v_t^\top, \qquad z_t = z_{t-1} + \phi(k_t), \qquad
   y_t = \frac{\phi(q_t)^\top U_t}{\phi(q_t)^\top z_t}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`\phi`
     - feature map, positive everywhere: :math:`x + 1` for :math:`x > 0`, :math:`e^x` otherwise
     - ``feature_map``
     - elementwise
   * - :math:`x`
     - the argument of the feature map, a query or a key
     - ``x``
     - ``(D,)``
   * - :math:`q_t`
     - query at position :math:`t`
     - row :math:`t` of ``q``
     - ``(D,)``
   * - :math:`k_s`, :math:`v_s`
     - key and value at position :math:`s`
     - row :math:`s` of ``k`` and of ``v``
     - ``(D,)``, ``(Dv,)``
   * - :math:`t`, :math:`s`
     - index of a query; index of a key
     - row indices of ``q`` and of ``k``; the step of ``scan`` in the causal form
     - scalar
   * - :math:`y_t`
     - output for query :math:`t`
     - row :math:`t` of ``y``; ``y_t`` in the causal form
     - ``(Dv,)``
   * - :math:`U_t`
     - recurrent state: the sum of :math:`\phi(k_s) v_s^\top` over the keys so far
     - ``U``
     - ``(D, Dv)``
   * - :math:`z_t`
     - normaliser state: the sum of :math:`\phi(k_s)` over the keys so far
     - ``z``
     - ``(D,)``

Explanation
-----------

Softmax attention weights key :math:`s` for query :math:`t` by
:math:`\exp(q_t^\top k_s / \sqrt{D})`, normalised over the keys. Any positive *similarity* would
make a weighted average. Katharopoulos et al. :footcite:`katharopoulos2020transformers` choose one that factorises,
:math:`\operatorname{sim}(q, k) = \phi(q)^\top \phi(k)`, a kernel with an explicit feature map.
Then the matrix product can be re-associated: :math:`(\phi(Q)\phi(K)^\top) V =
\phi(Q)(\phi(K)^\top V)`. The left side is the *parallel* (quadratic) form and builds a
:math:`T \times S` matrix; the right side first sums :math:`\phi(k_s) v_s^\top` over the keys into
one :math:`D \times D_v` matrix, shared by all queries.

**Costs.** The parallel form costs :math:`O(TSD)` time and :math:`O(TS)` memory, like softmax
attention; the re-associated form costs :math:`O((T + S) D D_v)` time and :math:`O(D D_v)` extra
memory: linear in the sequence. The multiply-adds are :math:`TS(D + D_v)` against
:math:`(T + S) D D_v`, so for self-attention with :math:`D = D_v` the linear form is cheaper once
the sequence is longer than the head width.

**The feature map.** :math:`\phi(x) = \operatorname{elu}(x) + 1` is positive everywhere, so every
weight is positive and the denominator cannot vanish or change sign, and for positive :math:`x` it
grows only linearly (not exponentially, as the softmax does), which makes the attention blurrier:
linear attention cannot concentrate as sharply on one key. Written literally as
``elu(x) + 1``, it would round to exactly 0 below about :math:`x = -17` in float32 (there
:math:`e^x - 1` is :math:`-1` to float precision), so the code computes :math:`e^x` directly for
negative :math:`x`. A small :math:`\varepsilon = 10^{-6}` is
added to the denominator, since :math:`e^x` underflows to 0 for very negative features; a query
whose keys are all masked then gets zeros, as in :doc:`scaled_dot_product`.

.. admonition:: Intuition

   Softmax attention is a reader who, for every question, goes back through every note taken so
   far. Linear attention keeps a running ledger instead: each new note is added into one fixed-size
   summary table the moment it arrives, and a question is answered by looking it up in the table.
   The table never grows, so answering costs the same at page ten as at page ten thousand; the
   price is that once notes are merged into the ledger, a single one can no longer be picked out
   sharply.

**Causal attention is a recurrent network.** With a causal mask the sums run over
:math:`s \le t`, so they can be accumulated: the state :math:`(U_t, z_t)` is updated by one
rank-one term per token, and the output for token :math:`t` reads it with :math:`\phi(q_t)`. That is
the recurrent form, a :func:`jax.lax.scan` that costs :math:`O(T D D_v)` in all and
:math:`O(D D_v)` per generated token whatever the length of the context, where softmax attention
must read a cache that grows with every token. In the paper's words, transformers with this
attention *are* RNNs. The causal parallel form (the quadratic matrix with a lower-triangular mask)
computes the same numbers and is the faster way to train on whole sequences; the tests check that
the two agree.

Inductive bias
--------------

The kernel similarity can only express what the feature map makes linear: the weight of a key is a
sum of products of features, without the exponential's ability to single one key out. The model is
biased towards smooth, spread-out attention, a summary of the past kept in a fixed-size state,
which is why linear attention does well on long, redundant signals and less well at exact recall
(copying one token from far back) than softmax attention.

Example
-------

The feature map, then the linear form equals the parallel form, and the recurrence equals the causal
parallel form:

>>> import jax, jax.numpy as jnp
>>> from cookbook.attention.linear_attention import (
...     causal_linear_attention, feature_map, kernel_attention, linear_attention)
>>> feature_map(jnp.array([-1.0, 0.0, 2.0]))  # e^-1, 1, 2 + 1
Array([0.3679, 1.    , 3.    ], dtype=float32)
>>> k_q, k_k, k_v = jax.random.split(jax.random.key(0), 3)
>>> q = jax.random.normal(k_q, (5, 4))
>>> k = jax.random.normal(k_k, (5, 4))
>>> v = jax.random.normal(k_v, (5, 3))
>>> y = linear_attention(q, k, v)
>>> y.shape, bool(jnp.allclose(y, kernel_attention(q, k, v), atol=1e-5))
((5, 3), True)
>>> causal = jnp.tril(jnp.ones((5, 5), bool))
>>> bool(jnp.allclose(causal_linear_attention(q, k, v), kernel_attention(q, k, v, causal), atol=1e-5))
True
"""

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"feature_map": (), "kernel_attention": (), "linear_attention": (), "causal_linear_attention": ()}

EPS = 1e-6  # keeps the denominator positive when every feature underflows


def feature_map(x):
    """``elu(x) + 1``: positive, linear for x > 0, exponential below.

    Computed as ``x + 1`` or ``exp(x)`` directly: ``jax.nn.elu(x) + 1`` rounds to exactly 0 in
    float32 for x below about -17, where ``exp(x) - 1`` is -1 to float precision.
    """
    x = _checks.float_array(x, "x")
    return _feature_map_jit(x)


# Each public function checks its input in Python, then hands it as it comes to one compiled core, so
# that a repeated call with the same shapes (the examples', the tests', the jit and bad-input checks')
# reuses one program instead of compiling each small operation alone.
def _feature_map(x):
    return jnp.where(x > 0, x + 1.0, jnp.exp(jnp.where(x > 0, 0.0, x)))  # inner where: no overflow, no NaN grad


_feature_map_jit = jax.jit(_feature_map)


def _check(q, k, v):
    q = _checks.float_array(q, "q", ndim=2, what=" (T, D)")
    k = _checks.float_array(k, "k", ndim=2, what=" (S, D)")
    v = _checks.float_array(v, "v", ndim=2, what=" (S, Dv)")
    if q.shape[1] != k.shape[1]:
        raise ValueError(f"q and k must have shapes (T, D) and (S, D), got q {q.shape} and k {k.shape}")
    if v.shape[0] != k.shape[0]:
        raise ValueError(f"v must have shape (S, Dv) = ({k.shape[0]}, Dv) to match k {k.shape}, got v {v.shape}")
    return q, k, v


def kernel_attention(q, k, v, mask=None):
    """The parallel (quadratic) form for q (T, D), k (S, D), v (S, Dv): O(T S D) time, a (T, S) matrix.

    ``mask`` is boolean, (T, S) or (1, S) for a mask of the keys alone, ``True`` where a query may
    attend to a key.
    """
    q, k, v = _check(q, k, v)
    T, S = q.shape[0], k.shape[0]
    if mask is not None:
        mask = _checks._as_array(mask, "mask")
        if mask.dtype != jnp.bool_:
            raise TypeError(f"mask must be boolean (True = may attend), got dtype {mask.dtype}")
        if mask.shape not in ((T, S), (1, S)):
            raise ValueError(f"mask must have shape (T, S) = {(T, S)} or (1, S) = {(1, S)}, got shape {mask.shape}")
    return _kernel_attention(q, k, v, mask)


@jax.jit
def _kernel_attention(q, k, v, mask):
    T, S = q.shape[0], k.shape[0]
    phi_q, phi_k = _feature_map(q.astype(jnp.float32)), _feature_map(k.astype(jnp.float32))
    weights = phi_q @ phi_k.T  # (T, S), all positive
    if mask is not None:
        weights = jnp.where(jnp.broadcast_to(mask, (T, S)), weights, 0.0)
    y = weights @ v.astype(jnp.float32) / (weights.sum(axis=1, keepdims=True) + EPS)  # (T, Dv)
    return y.astype(v.dtype)


def linear_attention(q, k, v):
    """The non-causal linear form: the keys are summed once, O((T + S) D Dv) time."""
    q, k, v = _check(q, k, v)
    return _linear_attention(q, k, v)


@jax.jit
def _linear_attention(q, k, v):
    phi_q, phi_k = _feature_map(q.astype(jnp.float32)), _feature_map(k.astype(jnp.float32))
    U = phi_k.T @ v.astype(jnp.float32)  # (D, Dv): sum over s of phi(k_s) v_s^T
    z = phi_k.sum(axis=0)  # (D,)
    y = phi_q @ U / (phi_q @ z + EPS)[:, None]  # (T, Dv)
    return y.astype(v.dtype)


def causal_linear_attention(q, k, v):
    """The recurrent (causal) form for q (T, D), k (T, D), v (T, Dv), a :func:`jax.lax.scan` over
    positions carrying U (D, Dv) and z (D,): O(T D Dv) time, O(D Dv) state."""
    q, k, v = _check(q, k, v)
    if q.shape[0] != k.shape[0]:
        raise ValueError(f"causal attention needs as many queries as keys, got q {q.shape} and k {k.shape}")
    return _causal_linear_attention(q, k, v)


@jax.jit
def _causal_linear_attention(q, k, v):
    D, Dv = q.shape[1], v.shape[1]
    phi_q, phi_k = _feature_map(q.astype(jnp.float32)), _feature_map(k.astype(jnp.float32))

    def step(state, xs):
        U, z = state
        phi_q_t, phi_k_t, v_t = xs
        U = U + jnp.outer(phi_k_t, v_t)  # (D, Dv)
        z = z + phi_k_t  # (D,)
        y_t = phi_q_t @ U / (phi_q_t @ z + EPS)  # (Dv,)
        return (U, z), y_t

    init = (jnp.zeros((D, Dv), jnp.float32), jnp.zeros((D,), jnp.float32))
    _, y = jax.lax.scan(step, init, (phi_q, phi_k, v.astype(jnp.float32)))
    return y.astype(v.dtype)
