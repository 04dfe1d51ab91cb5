r"""RWKV time mixing
================

RWKV replaces attention by a weighted average of the past whose weights decay exponentially with
distance, one decay rate per channel: a transformer-like layer that trains in parallel and runs as
a recurrent network with a state of constant size, for language models that must generate long
texts cheaply.

Equation
--------

.. math::

   \begin{aligned}
   r_t &= \left(\mu_r \odot x_t + (1 - \mu_r) \odot x_{t-1}\right) W_r, \quad
   k_t = \left(\mu_k \odot x_t + (1 - \mu_k) \odot x_{t-1}\right) W_k, \quad
   v_t = \left(\mu_v \odot x_t + (1 - \mu_v) \odot x_{t-1}\right) W_v, \\
   \operatorname{wkv}_t &= \frac{\sum_{i=1}^{t-1} e^{-(t-1-i) w + k_i} \odot v_i + e^{u + k_t} \odot v_t}
                                {\sum_{i=1}^{t-1} e^{-(t-1-i) w + k_i} + e^{u + k_t}}, \qquad
   o_t = \left(\sigma(r_t) \odot \operatorname{wkv}_t\right) W_o
   \end{aligned}

.. math::

   \text{channel mixing:} \quad
   o'_t = \sigma(r'_t) \odot \left(\max(k'_t, 0)^2 \, W'_v\right), \qquad
   r'_t, k'_t \text{ as } r_t, k_t \text{ with their own } \mu', W'_r \in \mathbb{R}^{D \times D},
   W'_k \in \mathbb{R}^{D \times F}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_t`
     - input at position :math:`t`; :math:`x_0 = 0` before the first token
     - ``x[t]``, ``x_prev``
     - ``(D,)``
   * - :math:`t`, :math:`i`
     - current position; an earlier position
     - ``t``, ``i``
     - scalar
   * - :math:`\mu_r`, :math:`\mu_k`, :math:`\mu_v`
     - token-shift weights: how much of the current token (rather than the previous one) each
       projection sees
     - ``params["mu_r"]``, ``params["mu_k"]``, ``params["mu_v"]``, ``mu``
     - ``(D,)``
   * - :math:`W_r`, :math:`W_k`, :math:`W_v`, :math:`W_o`
     - projections to receptance, key, value, and the output projection
     - ``params["W_r"]`` and so on
     - ``(D, D)``
   * - :math:`r_t`, :math:`k_t`, :math:`v_t`
     - receptance (a gate on what is read), key (a log-weight), value
     - ``r``, ``k``, ``v``
     - ``(D,)``
   * - :math:`w`
     - per-channel decay rate, positive: the exponential of ``log_w``
     - ``w``, ``params["log_w"]``
     - ``(D,)``
   * - :math:`u`
     - per-channel bonus given to the current token
     - ``u``, ``params["u"]``
     - ``(D,)``
   * - :math:`\operatorname{wkv}_t`
     - weighted average of the values so far, per channel
     - output of ``wkv``
     - ``(D,)``
   * - :math:`\sigma`
     - logistic sigmoid
     - ``jax.nn.sigmoid``
     - elementwise
   * - :math:`o_t`, :math:`o'_t`
     - outputs of the time mixing and of the channel mixing
     - output of ``time_mixing``, ``channel_mixing``
     - ``(D,)``
   * - :math:`r'_t`, :math:`k'_t`, :math:`W'_v`
     - the channel mixing's receptance, hidden layer and output projection
     - ``r``, ``k``, ``params["W_v"]``
     - ``(D,)``, ``(F,)``, ``(F, D)``
   * - :math:`D`, :math:`F`
     - width of the layer; hidden width of the channel mixing
     - ``D``, ``F``
     - scalar

Explanation
-----------

Attention weights every earlier token by a score that depends on the query. RWKV
:footcite:`peng2023rwkv` (receptance, weight, key, value) keeps the key but drops the query: token
:math:`i` gets the weight :math:`e^{k_i}` discounted by :math:`e^{-w}` for every step it lies in
the past, separately in every channel, and :math:`\operatorname{wkv}_t` is the weighted average of
the values. It is a softmax over positions whose logits are :math:`k_i - (t-1-i)w`. The current
token's logit gets a bonus :math:`u` instead of a discount, since it is not yet part of the
memory. The receptance :math:`\sigma(r_t)` gates how much of that average each channel lets
through, like the output gate of an LSTM.

Because the weight of token :math:`i` shrinks by the same factor :math:`e^{-w}` at every step, the
numerator and the denominator are running sums, :math:`a_t = e^{-w} a_{t-1} + e^{k_t} v_t` and
:math:`b_t = e^{-w} b_{t-1} + e^{k_t}`: RWKV is a recurrent network whose state is the two sums
and the previous input, a few numbers a channel, :math:`O(D)` per layer whatever the length of the
text, while attention's cache grows with every token. For training, the same outputs come from the whole sequence at once.

**The trap: exponentials overflow.** :math:`e^{k}` is infinite in float32 once :math:`k > 88.7`,
and an implementation that factors :math:`e^{-(t-1-i)w} = e^{-(t-1)w} e^{iw}` to share the sums
across positions overflows once :math:`w \cdot t > 88.7`. The paper's stable form keeps the largest
exponent seen so far, :math:`p`, outside the sums and stores :math:`a, b` divided by :math:`e^{p}`,
exactly as the online softmax of :doc:`/docs/chapters/attention/memory_efficient` does. Reading at step :math:`t` and then writing token :math:`t`:

.. math::

   \begin{aligned}
   q &= \max(p_{t-1}, u + k_t), &
   \operatorname{wkv}_t &= \frac{e^{p_{t-1} - q} a_{t-1} + e^{u + k_t - q} v_t}
                                {e^{p_{t-1} - q} b_{t-1} + e^{u + k_t - q}}, \\
   p_t &= \max(p_{t-1} - w, k_t), &
   a_t &= e^{p_{t-1} - w - p_t} a_{t-1} + e^{k_t - p_t} v_t, \quad
   b_t = e^{p_{t-1} - w - p_t} b_{t-1} + e^{k_t - p_t}.
   \end{aligned}

Every exponent is at most 0, so nothing overflows, and one term of each denominator is
:math:`e^0 = 1`, so the denominator is at least 1 and never vanishes. ``wkv`` computes this
recurrence with :func:`jax.lax.scan` (:math:`O(TD)`); ``wkv_direct`` computes the definition as
the softmax it is, over a :math:`T \times T` matrix per channel (:math:`O(T^2 D)`), and the tests
check that the two agree where :math:`k` reaches 300 and :math:`w \cdot t` 400.

.. admonition:: Intuition

   Every channel is a leaky bucket with its own hole: new tokens are poured in, in amounts
   :math:`e^{k}`, and the bucket leaks a fixed fraction each step. What the layer reads is the mix
   of what is in the bucket now. A channel with a small hole remembers the whole paragraph; one
   with a large hole remembers only the last word.

**Token shift.** Before the projections every input is mixed with the previous one, a causal
convolution of width 2. It lets a single layer see bigrams, and lets a key be built from one token
and a value from the next, the step that induction heads need :footcite:`olsson2022context`.

**Channel mixing** is the layer's feed-forward part: a squared-ReLU perceptron, also on
token-shifted input, gated by its own receptance. A block applies the time mixing and then the
channel mixing, each inside a residual connection with a layer norm (:doc:`/docs/chapters/normalization/layer_norm`).

**Later versions.** RWKV-5 ("Eagle") and RWKV-6 ("Finch") :footcite:`peng2024eagle` turn the
state of each head into a matrix, the sum of decayed outer products :math:`k_i^\top v_i` read by
the receptance, which makes the layer a form of linear attention with decay
(:doc:`/docs/chapters/attention/linear_attention`), and make the decay :math:`w_t` and the token
shift depend on the input, so that the model can choose what to forget. RWKV-7
:footcite:`peng2025rwkv7` updates that matrix state with a generalised :doc:`delta_rule`.

Inductive bias
--------------

RWKV assumes that the relevance of a token falls off with its distance at a rate set per channel,
not by its content: a channel cannot decide to keep one early token and drop the ones after it.
Recent context dominates, and exact recall of one token far back (copying, lookup) is hard, which
is the weakness that data-dependent decay and matrix-valued states address.

Example
-------

Token shift mixes each input with the one before; the recurrence equals the direct form, even where
the keys are so large that :math:`e^{k}` is infinite:

>>> import jax, jax.numpy as jnp
>>> from cookbook.sequence_models.rwkv import token_shift, wkv, wkv_direct, init, time_mixing, channel_mixing
>>> token_shift(jnp.array([[1.0], [2.0], [4.0]]), jnp.array([0.25]))  # 0.25 x_t + 0.75 x_{t-1}
Array([[0.25],
       [1.25],
       [2.5 ]], dtype=float32)
>>> k_kv, k_p = jax.random.split(jax.random.key(0))
>>> k, v = jax.random.normal(k_kv, (2, 7, 3))  # keys and values of 7 tokens in 3 channels
>>> w, u = jnp.array([0.1, 1.0, 5.0]), jnp.array([0.5, 0.5, 0.5])
>>> bool(jnp.allclose(wkv(w, u, k, v), wkv_direct(w, u, k, v), atol=1e-5))
True
>>> bool(jnp.isinf(jnp.exp(k + 200.0)).any()), bool(jnp.allclose(wkv(w, u, k + 200.0, v), wkv(w, u, k, v), atol=1e-5))
(True, True)

A layer of width 3 with a channel mixing of width 8:

>>> params = init(k_p, 3, 8)
>>> x = jnp.concatenate([k, v[:2]])  # 9 tokens of width 3
>>> time_mixing(params["time"], x).shape, channel_mixing(params["channel"], x).shape
((9, 3), (9, 3))
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"token_shift": (), "wkv": (), "wkv_direct": (), "time_mixing": (), "channel_mixing": ()}


def _sequence(x, name):
    return _checks.float_array(x, name, ndim=2, what=" (T, D)")


def _channels(a, name, D, of):
    a = _checks.float_array(a, name, ndim=1, what=" (D,)")
    return _checks.same_shape(a, name, (D,), expected_from=f"one entry per channel of {of}")


def token_shift(x, mu, x_prev=None):
    """``mu * x[t] + (1 - mu) * x[t - 1]`` for ``x`` (T, D) and ``mu`` (D,); ``x[-1]`` is
    ``x_prev`` (D,), zeros by default (the start of a text), or the last token of the previous
    chunk when a long text is processed in pieces."""
    x = _sequence(x, "x")
    T, D = x.shape
    mu = _channels(mu, "mu", D, f"x, shape {x.shape}")
    x_prev = None if x_prev is None else _channels(x_prev, "x_prev", D, f"x, shape {x.shape}")
    return _token_shift(x, mu, x_prev)


@jax.jit  # one program, where each operation called eagerly compiled its own
def _token_shift(x, mu, x_prev):
    x_prev = jnp.zeros((x.shape[1],), x.dtype) if x_prev is None else x_prev
    shifted = jnp.concatenate([x_prev[None].astype(x.dtype), x[:-1]], axis=0)  # (T, D): x[t - 1]
    return mu[None] * x + (1 - mu[None]) * shifted


def _wkv_inputs(w, u, k, v):
    k, v = _sequence(k, "k"), _sequence(v, "v")
    _checks.same_shape(v, "v", k.shape, expected_from="the shape of k")
    D = k.shape[1]
    return _channels(w, "w", D, f"k, shape {k.shape}"), _channels(u, "u", D, f"k, shape {k.shape}"), k, v


def wkv(w, u, k, v):
    """The WKV operator for keys and values (T, D), decays ``w`` and bonuses ``u`` (D,): the
    paper's numerically stable recurrence, a :func:`jax.lax.scan` carrying ``(a, b, p)`` per
    channel, in float32 (float64 for float64 inputs); the result has the dtype of ``v``."""
    w, u, k, v = _wkv_inputs(w, u, k, v)
    return _wkv(w, u, k, v).astype(v.dtype)  # (T, D)


@jax.jit  # one compiled program also when called eagerly
def _wkv(w, u, k, v):
    D = k.shape[1]
    dtype = jnp.promote_types(v.dtype, jnp.float32)  # float32, or float64 where x64 is on
    w, u, k, v = (a.astype(dtype) for a in (w, u, k, v))

    def step(state, kv):
        a, b, p = state  # numerator and denominator divided by e^p; p the largest exponent so far
        k_t, v_t = kv
        q = jnp.maximum(p, u + k_t)  # read: the old sums against the current token with its bonus
        e_old, e_new = jnp.exp(p - q), jnp.exp(u + k_t - q)
        out = (e_old * a + e_new * v_t) / (e_old * b + e_new)  # the denominator is at least 1
        p_t = jnp.maximum(p - w, k_t)  # write: decay the old sums, add the current token
        e_old, e_new = jnp.exp(p - w - p_t), jnp.exp(k_t - p_t)
        return (e_old * a + e_new * v_t, e_old * b + e_new, p_t), out

    zeros = jnp.zeros((D,), dtype)
    init = (zeros, zeros, jnp.full((D,), -jnp.inf, dtype))  # empty sums: e^p = 0
    _, out = jax.lax.scan(step, init, (k, v))
    return out


def wkv_direct(w, u, k, v):
    """The WKV operator from its definition: for every output ``t`` a softmax over the positions
    ``i <= t`` of the logits ``k[i] - (t - 1 - i) w`` (``u + k[t]`` for ``i = t``), per channel.
    O(T^2 D) time and memory; the reference that ``wkv`` is tested against."""
    w, u, k, v = _wkv_inputs(w, u, k, v)
    return _wkv_direct(w, u, k, v).astype(v.dtype)


@jax.jit
def _wkv_direct(w, u, k, v):
    T = k.shape[0]
    dtype = jnp.promote_types(v.dtype, jnp.float32)
    k, w, u, v = k.astype(dtype)[None], w.astype(dtype)[None, None], u.astype(dtype)[None, None], v.astype(dtype)
    t = jnp.arange(T)[:, None, None]
    i = jnp.arange(T)[None, :, None]
    logits = jnp.where(i == t, u + k, k - (t - 1 - i) * w)  # (T, T, D): output t, input i
    weights = jax.nn.softmax(jnp.where(i <= t, logits, -jnp.inf), axis=1)  # causal, per channel
    return jnp.einsum("tid,id->td", weights, v)


def init(key, D, F, *, dtype=jnp.float32):
    """Parameters of a time mixing and a channel mixing of width ``D``, hidden width ``F``.

    The decay rates ``w = exp(log_w)`` are spread from ``e^-5`` (a memory of about 150 tokens) to
    ``e`` (under one token) across the channels, the bonus ``u`` is 0.5, the token-shift weights
    are spread in (0, 1]; the matrices are Gaussian with variance ``1 / fan_in``.
    """
    D, F = _checks.size(D, "D"), _checks.size(F, "F")
    return _init(key, D, F, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))  # one compiled program, not one per array
def _init(key, D, F, dtype):
    shapes = {"W_r": (D, D), "W_k": (D, D), "W_v": (D, D), "W_o": (D, D),
              "c_r": (D, D), "c_k": (D, F), "c_v": (F, D)}
    sizes = [math.prod(shape) for shape in shapes.values()]
    z = jax.random.normal(key, (sum(sizes),), dtype)  # one draw, cut into the matrices (one RNG to compile)
    pieces = jnp.split(z, list(itertools.accumulate(sizes))[:-1])
    W = {name: piece.reshape(shape) / math.sqrt(shape[0]) for (name, shape), piece in zip(shapes.items(), pieces)}
    ramp = (jnp.arange(D, dtype=dtype) + 1) / D  # (D,), in (0, 1]
    time = {
        "mu_r": ramp, "mu_k": ramp, "mu_v": 0.5 * ramp + 0.5,
        "W_r": W["W_r"], "W_k": W["W_k"], "W_v": W["W_v"], "W_o": W["W_o"],
        "log_w": jnp.linspace(-5.0, 1.0, D, dtype=dtype), "u": jnp.full((D,), 0.5, dtype),
    }
    channel = {"mu_r": ramp, "mu_k": ramp, "W_r": W["c_r"], "W_k": W["c_k"], "W_v": W["c_v"]}
    return {"time": time, "channel": channel}


def _params(params, shapes, source):
    for name, shape in shapes.items():
        where = f"params['{name}']"
        _checks.same_shape(_checks.float_array(params[name], where), where, shape, expected_from=source)


def time_mixing(params, x):
    """RWKV-4's time mixing of ``x`` (T, D) with ``params = init(...)["time"]``: token shift,
    projections, WKV, receptance gate, output projection."""
    x = _sequence(x, "x")
    D = x.shape[1]
    _params(params, {"mu_r": (D,), "mu_k": (D,), "mu_v": (D,), "W_r": (D, D), "W_k": (D, D),
                     "W_v": (D, D), "W_o": (D, D), "log_w": (D,), "u": (D,)}, f"D = {D} from x of shape {x.shape}")
    return _time_mixing(params, x)


@jax.jit
def _time_mixing(params, x):
    r = token_shift(x, params["mu_r"]) @ params["W_r"]  # (T, D)
    k = token_shift(x, params["mu_k"]) @ params["W_k"]
    v = token_shift(x, params["mu_v"]) @ params["W_v"]
    w = jnp.exp(params["log_w"])
    return (jax.nn.sigmoid(r) * wkv(w, params["u"], k, v)) @ params["W_o"]  # (T, D)


def channel_mixing(params, x):
    """RWKV-4's channel mixing of ``x`` (T, D) with ``params = init(...)["channel"]``: a
    squared-ReLU perceptron of hidden width F on token-shifted input, gated by a receptance."""
    x = _sequence(x, "x")
    D = x.shape[1]
    W_k = _checks.float_array(params["W_k"], "params['W_k']", ndim=2, what=" (D, F)")
    F = W_k.shape[1]
    _params(params, {"mu_r": (D,), "mu_k": (D,), "W_r": (D, D), "W_k": (D, F), "W_v": (F, D)},
            f"D = {D} from x of shape {x.shape}, F = {F} from params['W_k']")
    return _channel_mixing(params, x)


@jax.jit
def _channel_mixing(params, x):
    r = token_shift(x, params["mu_r"]) @ params["W_r"]  # (T, D)
    k = token_shift(x, params["mu_k"]) @ params["W_k"]  # (T, F)
    return jax.nn.sigmoid(r) * (jnp.square(jax.nn.relu(k)) @ params["W_v"])
