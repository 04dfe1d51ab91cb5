r"""xLSTM: exponential gating and matrix memory
===========================================

The LSTM of 1997 rebuilt for language modelling at scale: an input gate that is an exponential, so
that a new input can outweigh everything stored, a normaliser that keeps the result bounded, and
(in the mLSTM) a matrix memory written with outer products like linear attention, which trains in
parallel over the sequence.

Equation
--------

.. math::

   \begin{aligned}
   i_t &= \exp(\tilde i_t), \qquad f_t = \sigma(\tilde f_t), \\
   \text{sLSTM:} \quad c_t &= f_t\, c_{t-1} + i_t\, z_t, \quad n_t = f_t\, n_{t-1} + i_t, \quad
     h_t = o_t \odot \frac{c_t}{n_t}, \\
   \text{mLSTM:} \quad C_t &= f_t\, C_{t-1} + i_t\, v_t k_t^\top, \quad n_t = f_t\, n_{t-1} + i_t\, k_t, \quad
     \tilde h_t = \frac{C_t\, q_t}{\max\left(\lvert n_t^\top q_t \rvert, 1\right)}, \\
   \text{stabiliser:} \quad m_t &= \max\left(\log f_t + m_{t-1},\ \tilde i_t\right), \quad
     i'_t = e^{\tilde i_t - m_t}, \quad f'_t = e^{\log f_t + m_{t-1} - m_t}
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`\tilde i_t`, :math:`\tilde f_t`
     - pre-activations of the input and forget gates
     - ``i_pre``, ``f_pre``
     - sLSTM ``(H,)``, mLSTM scalar
   * - :math:`i_t`, :math:`f_t`
     - input gate (an exponential: any positive number) and forget gate in :math:`(0, 1)`
     - ``i``, ``f``
     - as above
   * - :math:`\sigma`
     - logistic sigmoid; :math:`\log \sigma` is ``jax.nn.log_sigmoid``
     - ``jax.nn.sigmoid``
     - elementwise
   * - :math:`z_t`, :math:`o_t`
     - sLSTM: candidate :math:`\tanh(\tilde z_t)` and output gate :math:`\sigma(\tilde o_t)`, where
       the pre-activations of all four gates are :math:`x_t W + h_{t-1} R + b`
     - ``z``, ``o``, ``params["W"]``, ``params["R"]``, ``params["b"]``
     - ``(H,)``; ``(D, 4H)``, ``(H, 4H)``, ``(4H,)``
   * - :math:`c_t`, :math:`n_t`, :math:`h_t`
     - sLSTM: cell, normaliser, hidden state (the output)
     - ``c``, ``n``, ``h``
     - ``(H,)``
   * - :math:`C_t`, :math:`n_t`
     - mLSTM: matrix memory and normaliser vector
     - ``C``, ``n``
     - ``(Dv, Dk)``, ``(Dk,)``
   * - :math:`q_t`, :math:`k_t`, :math:`v_t`
     - mLSTM: query, key (divided by :math:`\sqrt{D_k}` inside), value
     - ``q[t]``, ``k[t]``, ``v[t]``
     - ``(Dk,)``, ``(Dk,)``, ``(Dv,)``
   * - :math:`\tilde h_t`
     - mLSTM: the read-out, before the output gate :math:`o_t` that a block multiplies it by
     - ``h``
     - ``(Dv,)``
   * - :math:`m_t`
     - stabiliser: the log of the scale by which :math:`c, n` (or :math:`C, n`) are stored
     - ``m``
     - like :math:`f_t`
   * - :math:`i'_t`, :math:`f'_t`
     - the gates used on the stored (scaled) states
     - ``i``, ``f`` (with ``stabilise=True``)
     - like :math:`f_t`
   * - :math:`t`
     - position
     - ``t``
     - scalar

Explanation
-----------

:footcite:t:`beck2024xlstm` ask how far the LSTM (:doc:`/docs/chapters/recurrent/lstm`) goes when
scaled like a transformer, and change two things. **Exponential gating**: a sigmoid input gate can
at most let a new input in at full weight, so after a long stream with the forget gate near 1 the
cell cannot revise its memory when something important comes. An exponential input gate can weight
the new input by :math:`e^{10}` against the old. **A normaliser** :math:`n_t` accumulates the
gates themselves, so that :math:`c_t / n_t` is a weighted *average* of the candidates (in
:math:`(-1, 1)`, however large the gates), not a sum that grows.

The **sLSTM** keeps a scalar cell per unit and the recurrent connections :math:`h_{t-1} R`, so it
must run token by token (the paper also allows an exponential forget gate there; the code uses
the sigmoid for both cells). The **mLSTM** drops them and stores a matrix: it writes the value
:math:`v_t` under the key :math:`k_t` and reads with the query :math:`q_t`, as linear attention
(:doc:`/docs/chapters/attention/linear_attention`) does, with gates; the normaliser bounds the read
by :math:`\lvert n_t^\top q_t \rvert`, or by 1 when that is small.

**The stabiliser.** :math:`e^{\tilde i}` overflows float32 once :math:`\tilde i > 88.7`, and
:math:`c_t / n_t` is then :math:`\infty / \infty`. Because every output is a ratio of two states
updated by the same gates, both can be stored divided by a common scale :math:`e^{m_t}`; choosing
:math:`m_t` as the largest log-weight of any input so far (the equation's last line) keeps every
exponent at most 0, and one of them equal to 0. The outputs are unchanged; only the floor 1 of the
mLSTM's denominator is rescaled with the states, to :math:`e^{-m_t}`. The tests check that the stabilised and
plain recurrences agree where the plain one is finite, and that the stabilised one stays finite and
correct (against float64) at :math:`\tilde i_t = 100`, where the plain one is NaN.

.. admonition:: Intuition

   A running vote where each new voter may carry any weight, even a million times that of all the
   earlier ones together: the outcome is the weighted average, and to count it you need not write
   the huge weights down, only how each compares with the largest seen so far.

**The mLSTM in parallel.** Unrolled, the memory is
:math:`C_t = \sum_{s \le t} \big(\prod_{j=s+1}^{t} f_j\big) i_s\, v_s k_s^\top`, so the read-out is
an attention with a gate matrix in place of the softmax:

.. math::

   \tilde D_{ts} = \sum_{j=s+1}^{t} \log \sigma(\tilde f_j) + \tilde i_s \ (s \le t), \qquad
   \tilde h_t = \frac{\sum_{s \le t} e^{\tilde D_{ts} - m_t}\, (q_t^\top k_s)\, v_s}
                     {\max\big(\lvert \sum_{s \le t} e^{\tilde D_{ts} - m_t}\, q_t^\top k_s \rvert,\ e^{-m_t}\big)},
   \quad m_t = \max_{s \le t} \tilde D_{ts}.

The sums of log forget gates are differences of one cumulative sum. ``mlstm_parallel`` builds this
:math:`T \times T` matrix (:math:`O(T^2 D)`, for training); ``mlstm_recurrent`` carries
:math:`(C, n, m)` (:math:`O(D_k D_v)` a token, for generation); the tests check that they agree.

Inductive bias
--------------

Like the LSTM, the xLSTM assumes the past can be kept in a state of fixed size that is updated by
gated, mostly additive steps; the exponential input gate adds the assumption that a single new
token may matter more than everything before it (a new topic, a correction). The mLSTM's matrix
memory gives it the associative recall of linear attention; the sLSTM's recurrent connections let
it track state (counting, parity) that purely parallel layers cannot
:footcite:`beck2024xlstm`, at the price of sequential training.

Example
-------

An sLSTM of 5 units on 7 steps: with an input gate of :math:`e^{100}` the plain recurrence is NaN,
the stabilised one is not, and its outputs stay in :math:`(-1, 1)`:

>>> import jax, numpy as np
>>> from cookbook.sequence_models.xlstm import init_slstm, slstm, mlstm_recurrent, mlstm_parallel
>>> x = np.random.default_rng(0).standard_normal((7, 11), np.float32)  # inputs for both examples
>>> params = init_slstm(jax.random.key(0), 3, 5)
>>> params["b"] = params["b"].at[5:10].set(100.0)  # input gates: e^100 overflows float32
>>> xs = x[:, :3]
>>> h = slstm(params, xs)
>>> bool(np.isnan(slstm(params, xs, stabilise=False)).any()), bool(np.all(np.abs(h) < 1))
(True, True)

The mLSTM's parallel and recurrent forms agree:

>>> q, k, v, i_pre, f_pre = x[:, :4], x[:, 4:8], x[:, 8:10], x[:, 10], 3.0 + x[:, 10]
>>> h = mlstm_parallel(q, k, v, i_pre, f_pre)
>>> h.shape, bool(np.allclose(mlstm_recurrent(q, k, v, i_pre, f_pre), h, atol=1e-5))
((7, 2), True)

Implementation notes
--------------------

In the paper's blocks the sLSTM has several heads, each with its own block of :math:`R` (the code
has one head: a full :math:`R`), and the mLSTM has several heads, each with its own scalar gates,
which ``jax.vmap`` over heads gives here. The mLSTM's gate pre-activations, queries, keys and values
are projections of the input (with a short causal convolution before the queries and keys), and its
read-out is multiplied by an output gate :math:`\sigma(x_t W_o)`. For long sequences neither form
on this page is what is used in training: the mLSTM is also computed chunk by chunk, as
:doc:`delta_rule` computes gated linear attention, with the parallel form inside a chunk and the
recurrence between chunks.
"""

import functools
import math

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"slstm": ("stabilise",), "mlstm_recurrent": ("stabilise",), "mlstm_parallel": ()}


def _flag(value, name):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def _gates(i_tilde, f_tilde, m, stabilise):
    """The input and forget gates, divided by the new scale ``e^m``, and the new ``m``."""
    log_f = jax.nn.log_sigmoid(f_tilde)
    if not stabilise:
        return jnp.exp(i_tilde), jnp.exp(log_f), m
    m_new = jnp.maximum(log_f + m, i_tilde)
    return jnp.exp(i_tilde - m_new), jnp.exp(log_f + m - m_new), m_new


def init_slstm(key, D, H, *, dtype=jnp.float32):
    """sLSTM parameters for ``D`` inputs and ``H`` units, gates ordered z, i, f, o: ``W`` LeCun
    normal, ``R`` Gaussian with variance ``1/H``, forget-gate biases spread from 3 to 6 (a memory
    of about 20 to 400 steps), the other biases 0."""
    D, H = _checks.size(D, "D"), _checks.size(H, "H")
    return _init_slstm(key, D, H, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _init_slstm(key, D, H, dtype):
    z = jax.random.normal(key, ((D + H) * 4 * H,), dtype)  # one draw for both matrices
    W, R = z[: D * 4 * H].reshape(D, 4 * H), z[D * 4 * H :].reshape(H, 4 * H)
    b = jnp.zeros((4, H), dtype).at[2].set(jnp.linspace(3.0, 6.0, H, dtype=dtype)).reshape(4 * H)
    return {"W": W / math.sqrt(D), "R": R / math.sqrt(H), "b": b}


def slstm(params, xs, *, stabilise=True):
    """The hidden states (T, H) of an sLSTM layer over ``xs`` (T, D), from zero states; a
    :func:`jax.lax.scan` carrying ``(c, n, m, h)``, computed in float32 (float64 for float64
    input). ``stabilise=False`` is the plain recurrence, which overflows for large input gates."""
    stabilise = _flag(stabilise, "stabilise")
    W = _checks.float_array(params["W"], "params['W']", ndim=2, what=" (D, 4H)")
    D, H = W.shape[0], W.shape[1] // 4
    checked = {}  # the weights as they came (as arrays): under jax.jit, the core's call only forwards them
    for name, shape in (("W", (D, 4 * H)), ("R", (H, 4 * H)), ("b", (4 * H,))):
        where = f"params['{name}']"
        checked[name] = _checks.same_shape(_checks.float_array(params[name], where), where, shape,
                                           expected_from="init_slstm(key, D, H)")
    xs = _checks.float_array(xs, "xs", ndim=2, what=" (T, D)")
    if xs.shape[1] != D:
        raise ValueError(f"xs must have shape (T, D) with D = {D} as params['W'], got shape {xs.shape}")
    return _slstm(checked, xs, stabilise)


@functools.partial(jax.jit, static_argnums=2)  # one compiled program also when called eagerly
def _slstm(params, xs, stabilise):
    W, R, b = params["W"], params["R"], params["b"]
    out_dtype = xs.dtype
    dtype = jnp.promote_types(xs.dtype, jnp.float32)
    W, R, b, xs = (a.astype(dtype) for a in (W, R, b, xs))
    H = R.shape[0]
    pre_x = xs @ W + b[None]  # (T, 4H): the input's share of every gate, for all steps at once

    def step(carry, pre_x_t):
        c, n, m, h = carry
        z_tilde, i_pre, f_pre, o_tilde = jnp.split(pre_x_t + h @ R, 4)
        i, f, m = _gates(i_pre, f_pre, m, stabilise)
        z, o = jnp.tanh(z_tilde), jax.nn.sigmoid(o_tilde)
        c = f * c + i * z
        n = f * n + i  # at least 1 when stabilised: one of its terms is e^0
        h = o * c / n
        return (c, n, m, h), h

    zeros = jnp.zeros((H,), xs.dtype)
    m0 = jnp.full((H,), -jnp.inf if stabilise else 0.0, xs.dtype)  # nothing stored yet: scale e^-inf
    _, hs = jax.lax.scan(step, (zeros, zeros, m0, zeros), pre_x)
    return hs.astype(out_dtype)  # (T, H)


def _mlstm_inputs(q, k, v, i_pre, f_pre):
    q, k, v, T = _checks.queries_keys_values(q, k, v)
    i_pre = _checks.same_shape(_checks.float_array(i_pre, "i_pre"), "i_pre", (T,), expected_from="one per token of k")
    f_pre = _checks.same_shape(_checks.float_array(f_pre, "f_pre"), "f_pre", (T,), expected_from="one per token of k")
    return q, k, v, i_pre, f_pre


def _compute_dtype(q, k, v, i_pre, f_pre):
    """Inside a core: the inputs in float32 (float64 for float64 values), the keys divided by
    sqrt(Dk), and the dtype of the result (that of ``v``)."""
    dtype = jnp.promote_types(v.dtype, jnp.float32)
    k = k.astype(dtype) / math.sqrt(k.shape[1])
    return v.dtype, q.astype(dtype), k, v.astype(dtype), i_pre.astype(dtype), f_pre.astype(dtype)


def mlstm_recurrent(q, k, v, i_pre, f_pre, *, stabilise=True):
    """The mLSTM read-outs (T, Dv) token by token, for ``q``, ``k`` (T, Dk), ``v`` (T, Dv) and gate
    pre-activations ``i_pre``, ``f_pre`` (T,): a :func:`jax.lax.scan` carrying ``(C, n, m)``.
    ``stabilise=False`` is the plain recurrence, which overflows for large input gates."""
    stabilise = _flag(stabilise, "stabilise")
    return _mlstm_recurrent(*_mlstm_inputs(q, k, v, i_pre, f_pre), stabilise)


@functools.partial(jax.jit, static_argnums=5)
def _mlstm_recurrent(q, k, v, i_pre, f_pre, stabilise):
    out_dtype, q, k, v, i_pre, f_pre = _compute_dtype(q, k, v, i_pre, f_pre)
    Dk, Dv = k.shape[1], v.shape[1]

    def step(carry, xs):
        C, n, m = carry
        q_t, k_t, v_t, i_t, f_t = xs
        i, f, m = _gates(i_t, f_t, m, stabilise)
        C = f * C + i * jnp.outer(v_t, k_t)  # (Dv, Dk)
        n = f * n + i * k_t  # (Dk,)
        floor = jnp.exp(-m) if stabilise else 1.0  # the 1 of the equation, on the scale e^-m
        h = C @ q_t / jnp.maximum(jnp.abs(n @ q_t), floor)
        return (C, n, m), h

    m0 = jnp.asarray(-jnp.inf if stabilise else 0.0, q.dtype)
    init = (jnp.zeros((Dv, Dk), q.dtype), jnp.zeros((Dk,), q.dtype), m0)
    _, h = jax.lax.scan(step, init, (q, k, v, i_pre, f_pre))
    return h.astype(out_dtype)  # (T, Dv)


def mlstm_parallel(q, k, v, i_pre, f_pre):
    """The same read-outs as ``mlstm_recurrent``, for the whole sequence at once: a (T, T) matrix
    of stabilised gate weights times the scores ``q k^T``, O(T^2 D)."""
    return _mlstm_parallel(*_mlstm_inputs(q, k, v, i_pre, f_pre))


@jax.jit
def _mlstm_parallel(q, k, v, i_pre, f_pre):
    out_dtype, q, k, v, i_pre, f_pre = _compute_dtype(q, k, v, i_pre, f_pre)
    T = k.shape[0]
    L = jnp.cumsum(jax.nn.log_sigmoid(f_pre))  # (T,): sum of log forget gates up to t
    t, s = jnp.arange(T)[:, None], jnp.arange(T)[None, :]
    D_tilde = jnp.where(s <= t, L[:, None] - L[None, :] + i_pre[None, :], -jnp.inf)  # (T, T)
    m = jnp.max(D_tilde, axis=1)  # (T,): finite, since s = t is always allowed
    weights = jnp.exp(D_tilde - m[:, None]) * (q @ k.T)  # (T, T)
    denominator = jnp.maximum(jnp.abs(weights.sum(axis=1)), jnp.exp(-m))  # (T,)
    return (weights @ v / denominator[:, None]).astype(out_dtype)  # (T, Dv)
