r"""Mamba: selective state spaces
=============================

A state space layer whose step, input and readout depend on the current token, so that it can
choose what to write into its state and what to ignore: attention's ability to select by content,
at the linear cost and constant memory per token of a recurrence.

Equation
--------

.. math::

   \begin{aligned}
   \Delta_t &= \operatorname{softplus}\left(x_t W_\Delta + b_\Delta\right), \qquad
   B_t = x_t W_B, \qquad C_t = x_t W_C \\
   h_t &= \exp(\Delta_t A) \odot h_{t-1} + (\Delta_t \otimes B_t) \odot x_t \\
   y_t &= h_t C_t + D \odot x_t
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_t`
     - input of the scan at step :math:`t`, one entry per channel (in the block: after the input
       projection, the convolution and a SiLU)
     - ``u``
     - ``(E,)``
   * - :math:`t`
     - time step
     - row index
     - scalar
   * - :math:`\Delta_t`
     - step size per channel, chosen by the token: large writes and forgets, small skips
     - ``delta``
     - ``(E,)``
   * - :math:`W_\Delta`, :math:`b_\Delta`
     - step projection, of low rank :math:`R`: the first :math:`R` columns of ``W_x`` times
       ``W_dt``; and its bias
     - ``params["W_dt"]``, ``params["b_dt"]``
     - ``(R, E)``, ``(E,)``
   * - :math:`B_t`, :math:`C_t`
     - input and readout vectors of the state, chosen by the token
     - ``B``, ``C``
     - ``(N,)``
   * - :math:`W_B`, :math:`W_C`
     - their projections, stored side by side with the step's in ``W_x``
     - ``params["W_x"]``
     - ``(E, R + 2N)`` in all
   * - :math:`A`
     - diagonal state matrix, negative, one row of :math:`N` per channel
     - ``A``, ``-exp(params["A_log"])``
     - ``(E, N)``
   * - :math:`h_t`
     - state: :math:`N` numbers per channel
     - ``h``
     - ``(E, N)``
   * - :math:`y_t`, :math:`D`
     - output of the scan and skip weight
     - ``y``, ``D``
     - ``(E,)``
   * - :math:`\otimes`
     - outer product; :math:`\odot x_t` scales row :math:`e` by :math:`x_{t,e}`
     - ``delta[:, :, None] * B[:, None, :]``
     - ``(E, N)``

Explanation
-----------

The layers of :doc:`s4` are *time invariant*: :math:`\bar{A}`, :math:`\bar{B}` and :math:`C` are the
same at every step, which is what makes them a convolution. A convolution weighs a token by its
*position*, never by its *content*. :footcite:t:`gu2023mamba` give two tasks that expose this.
*Selective copying*: a few data tokens are scattered among noise tokens and must be reproduced, in
order, at the end. The gaps vary, so no fixed kernel lines the data up; the model must decide, token
by token, to write data and to skip noise. *Induction heads*: recall what followed an earlier
occurrence of the current token. Both need a state update that depends on the input.

**Selection.** Mamba's S6 layer computes :math:`\Delta_t`, :math:`B_t` and :math:`C_t` from the
token. The step is the gate: as :math:`\Delta_t \to 0`, :math:`\exp(\Delta_t A) \to 1` and the input
term vanishes, so the token is *skipped* and the state kept; a large :math:`\Delta_t` makes
:math:`\exp(\Delta_t A) \to 0` and *resets* the state to the current input. :math:`B_t` chooses
where in the state a token is written, :math:`C_t` what is read out. Each channel :math:`e` has its
own :math:`N`-dimensional state with a diagonal :math:`A`, discretised per step by zero-order hold
on :math:`A` and the simpler Euler rule :math:`\Delta_t B_t` on the input, as in the paper. The
recurrence is still linear in :math:`h`, so :doc:`linear_recurrence`'s associative scan applies
with :math:`a_t = \exp(\Delta_t A)` and :math:`b_t = (\Delta_t \otimes B_t) \odot x_t`;
``selective_scan`` does exactly that, ``selective_scan_sequential`` is the step-by-step reference.
That form discretises and reads out inside each step, so it holds one :math:`E \times N` state at a
time, where the associative scan writes out all :math:`T` of them (the tests compare the scratch
memory of the two compiled programs); the tests train with it. Its gradient needs the states
again on the way back: the step is wrapped in :func:`jax.checkpoint`, so the backward pass keeps
the :math:`T` states and forms :math:`a_t` and :math:`b_t` again from the inputs, instead of
storing them beside the states (the tests count what is kept).
What is lost is the convolution: the kernel now changes with every token, so training cannot use
an FFT, and the paper's kernel keeps the :math:`T \times E \times N` states in on-chip memory
instead of writing them out.

.. admonition:: Intuition

   A time-invariant layer is a tape recorder with a fixed fade: everything is recorded and fades
   at the same rate, whether it mattered or not. A selective layer is a note-taker who listens to
   each word and decides whether to write it down (large :math:`\Delta`), let it pass (small
   :math:`\Delta`), or start a fresh page.

**The Mamba block.** One block replaces attention and the MLP of a transformer layer: the input
(``(T, D)``) is projected to two streams of width :math:`E = 2D`; one passes a short causal
depthwise convolution (width 4), a SiLU and the selective scan, the other is a SiLU gate that
multiplies the scan's output; a last projection returns to width :math:`D`. :math:`A` is
initialised to :math:`-(1, 2, \dots, N)` in every channel (S4D-Real), :math:`\Delta` through the
softplus's bias to lie in :math:`[10^{-3}, 10^{-1}]`, and :math:`W_\Delta` is low rank,
:math:`R = \lceil D/16 \rceil`. Residual connections and an RMS normalisation before each block make
the network.

Inductive bias
--------------

Mamba keeps the recurrent prior (a fixed-size state read left to right, linear in the sequence) and
drops time invariance: it assumes that a token can decide, from its own content, how much of the
past to keep and whether to be remembered. That makes content-based filtering easy to learn. In the
tests, two-layer models of the same size train for 400 steps on selective copying (4 data tokens,
each one of 32 values, at random places among 24 positions): Mamba reaches at least 95 % token
accuracy (with the test's seed: its training depends on the initialisation, and another seed can
stop short of it), and the same model with a time-invariant S4D layer in place of the selective
scan stays below 60 %. Time-invariant layers get part of the way by counting: the first counts the
data tokens seen so far, the second routes each token into channels kept for its count, which
needs channels for every pair of count and value, more than the model has. A selective layer
needs no such bookkeeping: it writes the data, skips the noise, and its state holds the data in
order. The paper's gap (99.8 % against 57 % for S4 with the same gate) is measured on sequences of
4096 tokens. What selection gives up is exact recall of arbitrary earlier tokens: everything must
pass through :math:`E \times N` numbers, so retrieving one of many stored facts is harder than for
attention (:doc:`associative_recall` compares the chapter's mixers on it).

Example
-------

The associative and the sequential scans agree; a Mamba block maps ``(T, D)`` to ``(T, D)``:

>>> import jax, jax.numpy as jnp
>>> from cookbook.sequence_models.mamba import apply, init, selective_scan, selective_scan_sequential
>>> ks = jax.random.split(jax.random.key(0), 6)
>>> T, E, N = 7, 3, 5
>>> u = jax.random.normal(ks[0], (T, E))
>>> delta = jax.nn.softplus(jax.random.normal(ks[1], (T, E)))
>>> A = -jnp.exp(jax.random.normal(ks[2], (E, N)))
>>> B, C = jax.random.normal(ks[3], (T, N)), jax.random.normal(ks[4], (T, N))
>>> D = jnp.ones(E)
>>> y = selective_scan(u, delta, A, B, C, D)
>>> y.shape, bool(jnp.allclose(y, selective_scan_sequential(u, delta, A, B, C, D), atol=1e-5))
((7, 3), True)
>>> params = init(ks[5], 4, N=5)
>>> apply(params, jnp.ones((7, 4))).shape
(7, 4)
"""

import functools
import math

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.sequence_models.linear_recurrence import linear_scan

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"selective_scan": (), "selective_scan_sequential": (), "apply": ("parallel",)}


def _check_scan(u, delta, A, B, C, D):
    u = _checks.float_array(u, "u", ndim=2, what=" (T, E)")
    T, E = u.shape
    delta = _checks.same_shape(_checks.float_array(delta, "delta"), "delta", (T, E), expected_from="u")
    A = _checks.float_array(A, "A", ndim=2, what=" (E, N)")
    N = A.shape[1]
    _checks.same_shape(A, "A", (E, N), expected_from="E from u")
    B = _checks.same_shape(_checks.float_array(B, "B"), "B", (T, N), expected_from="T from u, N from A")
    C = _checks.same_shape(_checks.float_array(C, "C"), "C", (T, N), expected_from="T from u, N from A")
    D = _checks.same_shape(_checks.float_array(D, "D"), "D", (E,), expected_from="E from u")
    return u, delta, A, B, C, D


def _discretise(u, delta, A, B):
    """``a_t = exp(delta_t A)`` and ``b_t = (delta_t outer B_t) * u_t``, each (T, E, N), in float32."""
    u, delta, A, B = (z.astype(jnp.float32) for z in (u, delta, A, B))
    a = jnp.exp(delta[:, :, None] * A[None, :, :])  # (T, E, N)
    b = delta[:, :, None] * B[:, None, :] * u[:, :, None]  # (T, E, N)
    return a, b


def _readout(h, u, C, D):
    y = jnp.einsum("TEN,TN->TE", h, C.astype(jnp.float32)) + u.astype(jnp.float32) * D[None, :]
    return y.astype(u.dtype)  # (T, E)


def selective_scan(u, delta, A, B, C, D):
    """The selective scan for ``u``, ``delta`` (T, E), ``A`` (E, N), ``B``, ``C`` (T, N), ``D`` (E,):
    ``h_t = exp(delta_t A) h_{t-1} + (delta_t outer B_t) u_t``, ``y_t = h_t C_t + D u_t``, from
    ``h_{-1} = 0``, with an associative scan. ``delta`` is used as given (no softplus here)."""
    u, delta, A, B, C, D = _check_scan(u, delta, A, B, C, D)
    return _selective_scan(u, delta, A, B, C, D)


@jax.jit
def _selective_scan(u, delta, A, B, C, D):
    a, b = _discretise(u, delta, A, B)
    h = linear_scan(a, b)  # (T, E, N)
    return _readout(h, u, C, D)


def selective_scan_sequential(u, delta, A, B, C, D):
    """The same, one step at a time with :func:`jax.lax.scan`: the reference form. Each step forms
    its own ``a_t`` and ``b_t`` and reads out ``y_t``, so one (E, N) state is held at a time; its
    gradient keeps the T states and forms ``a_t`` and ``b_t`` again."""
    u, delta, A, B, C, D = _check_scan(u, delta, A, B, C, D)
    return _selective_scan_sequential(u, delta, A, B, C, D)


@jax.jit
def _selective_scan_sequential(u, delta, A, B, C, D):
    u32, delta, A, B, C = (z.astype(jnp.float32) for z in (u, delta, A, B, C))

    @jax.checkpoint  # under jax.grad, a_t and b_t are formed again in the backward pass, not stored
    def step(h, inputs):  # a_t, b_t and the readout inside the step: no (T, E, N) array is formed
        u_t, delta_t, B_t, C_t = inputs
        h = jnp.exp(delta_t[:, None] * A) * h + delta_t[:, None] * B_t[None, :] * u_t[:, None]  # (E, N)
        return h, h @ C_t

    _, y = jax.lax.scan(step, jnp.zeros(A.shape, jnp.float32), (u32, delta, B, C))
    return (y + u32 * D[None, :]).astype(u.dtype)  # (T, E)


# ---- The Mamba block -----------------------------------------------------------------------------

def init(key, D, *, N=16, expand=2, conv_width=4, rank=None, step_min=1e-3, step_max=1e-1):
    """Parameters of a Mamba block of width ``D``: inner width ``E = expand * D``, ``N`` states per
    channel, a causal depthwise convolution of ``conv_width``, a step projection of rank ``rank``
    (``ceil(D / 16)`` by default)."""
    D, N = _checks.size(D, "D"), _checks.size(N, "N")
    expand, conv_width = _checks.size(expand, "expand"), _checks.size(conv_width, "conv_width")
    rank = math.ceil(D / 16) if rank is None else _checks.size(rank, "rank")
    _checks.positive(step_min, "step_min")
    if not step_min < step_max:
        raise ValueError(f"step_max must exceed step_min, got step_min={step_min}, step_max={step_max}")
    return _init(key, D, N, expand * D, conv_width, rank, math.log(step_min), math.log(step_max))


@functools.partial(jax.jit, static_argnames=("D", "N", "E", "K", "R"))
def _init(key, D, N, E, K, R, log_min, log_max):
    k_in, k_conv, k_x, k_dt, k_step, k_out = jax.random.split(key, 6)
    step = jnp.exp(jax.random.uniform(k_step, (E,), minval=log_min, maxval=log_max))
    return {
        "W_in": jax.random.normal(k_in, (D, 2 * E)) / math.sqrt(D),
        "conv_w": jax.random.normal(k_conv, (K, E)) / math.sqrt(K),
        "conv_b": jnp.zeros((E,)),
        "W_x": jax.random.normal(k_x, (E, R + 2 * N)) / math.sqrt(E),
        "W_dt": jax.random.normal(k_dt, (R, E)) / math.sqrt(R),
        "b_dt": step + jnp.log(-jnp.expm1(-step)),  # softplus(b_dt) = step
        "A_log": jnp.log(jnp.broadcast_to(jnp.arange(1, N + 1, dtype=jnp.float32), (E, N))),
        "D": jnp.ones((E,)),
        "W_out": jax.random.normal(k_out, (E, D)) / math.sqrt(E),
    }


def _sizes(params):
    """``(D, E, N, K, R)`` of a block, after checking that ``params`` has the shapes ``init`` gives it."""
    D, E2 = _checks.float_array(params["W_in"], "params['W_in']", ndim=2, what=" (D, 2E)").shape
    E = E2 // 2
    K = _checks.float_array(params["conv_w"], "params['conv_w']", ndim=2, what=" (K, E)").shape[0]
    R = _checks.float_array(params["W_dt"], "params['W_dt']", ndim=2, what=" (R, E)").shape[0]
    N = (_checks.float_array(params["W_x"], "params['W_x']", ndim=2, what=" (E, R + 2N)").shape[1] - R) // 2
    shapes = {"W_in": (D, 2 * E), "conv_w": (K, E), "conv_b": (E,), "W_x": (E, R + 2 * N), "W_dt": (R, E),
              "b_dt": (E,), "A_log": (E, N), "D": (E,), "W_out": (E, D)}
    for name, shape in shapes.items():
        where = f"params['{name}']"
        _checks.same_shape(_checks.float_array(params[name], where), where, shape, expected_from="init(key, D, ...)")
    return D, E, N, K, R


def causal_depthwise_conv(x, w, b):
    """``y_t = sum_j w_j * x_{t - K + 1 + j} + b`` per channel, for ``x`` (T, E) and ``w`` (K, E)."""
    T, K = x.shape[0], w.shape[0]
    padded = jnp.concatenate([jnp.zeros((K - 1, x.shape[1]), x.dtype), x], axis=0)  # (T + K - 1, E)
    return sum(padded[j:j + T] * w[j][None, :] for j in range(K)) + b[None, :]


def apply(params, x, *, parallel=True):
    """The block's output (T, D) for ``x`` (T, D). ``parallel=False`` runs the scan step by step."""
    D, *_ = _sizes(params)
    x = _checks.float_array(x, "x", ndim=2, what=" (T, D)")
    _checks.same_shape(x, "x", (x.shape[0], D), expected_from=f"(T, D) with D = {D} from params")
    if not isinstance(parallel, bool):
        raise TypeError(f"parallel must be a bool, got {parallel!r}")
    return _apply(params, x, parallel)


@functools.partial(jax.jit, static_argnames="parallel")
def _apply(params, x, parallel):
    R = params["W_dt"].shape[0]
    N = params["A_log"].shape[1]
    x_in, z = jnp.split(x @ params["W_in"], 2, axis=-1)  # (T, E) each
    u = jax.nn.silu(causal_depthwise_conv(x_in, params["conv_w"], params["conv_b"]))  # (T, E)
    dt_low, B, C = jnp.split(u @ params["W_x"], [R, R + N], axis=-1)  # (T, R), (T, N), (T, N)
    delta = jax.nn.softplus(dt_low @ params["W_dt"] + params["b_dt"][None, :])  # (T, E)
    A = -jnp.exp(params["A_log"])  # (E, N)
    scan = _selective_scan if parallel else _selective_scan_sequential
    y = scan(u, delta, A, B, C, params["D"])  # (T, E)
    return ((y * jax.nn.silu(z)) @ params["W_out"]).astype(x.dtype)  # (T, D)
