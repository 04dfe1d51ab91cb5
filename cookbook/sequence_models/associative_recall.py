r"""Associative recall: the tasks that tell sequence mixers apart
=============================================================

Two synthetic tasks, selective copying and multi-query associative recall, that measure what a
sequence mixer can find again in its past, and a small model that trains any of this chapter's
mixers on them: the test to run before trusting a new mixer with language.

Equation
--------

.. math::

   \begin{aligned}
   \text{MQAR:}\quad x &= (k_1, v_1, k_2, v_2, \dots, k_P, v_P,\;
     k_{\pi(1)}, k_{\pi(2)}, \dots, k_{\pi(P)}), \qquad
     y_{2P + j} = v_{\pi(j)} \\
   \text{copying:}\quad x &= (\dots, d_1, \dots, d_M, \dots, m, \dots, m), \qquad
     y_{L + i} = d_i \\
   \text{model:}\quad z^{(0)}_t &= E_{x_t} + S_{x_{t-1}}, \qquad
     z^{(l)} = z^{(l-1)} + \operatorname{mixer}_l\big(\operatorname{rms}(z^{(l-1)})\big), \\
   p(y_t \mid x_{\le t}) &= \operatorname{softmax}\big(\operatorname{rms}(z^{(n)}_t)\, W\big)
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`, :math:`x_t`
     - the token sequence and its token at position :math:`t`
     - ``tokens``
     - ``(T,)``
   * - :math:`y`, :math:`y_t`
     - the targets; positions that ask nothing hold ``-1``
     - ``targets``
     - ``(T,)``
   * - :math:`k_j`, :math:`v_j`
     - the :math:`j`-th key (distinct keys) and its value
     - ``keys``, ``values``
     - ``(P,)``
   * - :math:`P`, :math:`\pi`
     - the number of pairs, and the random order in which the keys are asked again
     - ``n_pairs``, ``order``
     - scalar, ``(P,)``
   * - :math:`d_i`, :math:`M`
     - the data tokens to copy, in order, and their number
     - ``data``, ``n_data``
     - ``(M,)``, scalar
   * - :math:`m`, :math:`L`
     - the marker token (one per token to copy) and the length of the noisy context
     - ``marker``, ``length``
     - scalar
   * - :math:`i`, :math:`j`
     - indices of a data token and of a query
     - position in ``data`` and ``order``
     - scalars
   * - :math:`E`, :math:`S`
     - embedding of the token and of the token before it (a shift every mixer gets)
     - ``params["embed"]``, ``params["shift"]``
     - ``(V, D)``
   * - :math:`z^{(l)}`, :math:`l`, :math:`n`
     - the residual stream after block :math:`l`, and the number of blocks
     - ``z``, ``layers``
     - ``(T, D)``, scalars
   * - :math:`W`
     - the output head
     - ``params["head"]``
     - ``(D, V)``
   * - :math:`p`
     - the predicted distribution over the :math:`V` tokens
     - softmax of the logits that ``apply`` returns
     - ``(T, V)``

Explanation
-----------

Language modelling mixes many skills, so a new mixer's loss says little about why it is good or
bad. :footcite:t:`arora2024zoology` traced most of the gap between attention and the gated
convolutions and recurrences of this chapter to one skill, *associative recall*: after seeing
"Hakuna Matata ... Hakuna", predict "Matata". *Multi-query associative recall* (MQAR) asks it many
times in one sequence: :math:`P` key-value pairs, then the keys again in a random order, each to be
answered with its value (Zoology scatters the queries among noise; here they follow at once). *Selective copying* :footcite:`gu2023mamba` scatters :math:`M` data tokens
among noise and asks for them, in order, after the context; where they sit varies from sequence to
sequence, so no fixed filter lines them up (the :doc:`mamba` page measures this).

Both generators are written for one sequence, from one key, in JAX; ``sample`` batches either
with :func:`jax.vmap` over keys, so that any number of new sequences is one compiled call and no
data set is stored. Positions that ask nothing carry the target ``-1`` and are left out of the
loss and of the accuracy.

**A harness for every mixer.** ``init`` and ``apply`` build the same small network around any of
the chapter's mixers (``MIXERS``): embeddings, pre-norm residual blocks with the mixer alone in
them, an output head. The input adds the embedding :math:`S` of the previous token to every
position, a token shift that all mixers get alike (Zoology's models have a short convolution for
the same purpose): a value then carries its key, and recall needs a single lookup.

**State size against recall.** A recurrent mixer carries a state of fixed size from one token to
the next, and the answer to every query must pass through it; attention keeps every key and value,
a state that grows with :math:`T`. ``state_size`` counts the numbers that each mixer carries per
layer: :math:`2N` for the LRU, :math:`2DN` for S4D, :math:`EN` for Mamba, :math:`D^2/H` for
retention, :math:`D^2` for the delta rule, :math:`2TD` for attention's keys and values. Storing
:math:`P` unrelated associations needs a state that grows with :math:`P`
:footcite:`arora2024simple`: a vector state can hold a few, a matrix state
:math:`v k^\top` up to about its key width (more, and keys interfere), and only attention recalls
everything at any length, at a cost quadratic in it. A mixer may also fail at equal state size
because it cannot *choose* what to write: a time-invariant filter (LRU, S4D) adds every token into
its state alike.

**The comparison.** ``make bench`` trains every mixer in ``MIXERS`` at three widths under one
budget (the same task, steps, batch and learning rate; ``benchmarks/recall.py``, which
``.venv/bin/python -m benchmarks.recall`` runs alone) and writes the held-out accuracies into
``benchmarks/results.json``; the figure is drawn from that file when the book is built, so it
shows the last measurement. The budget is small (minutes on a laptop's CPU), so the figure ranks
what each mixer recalls after short training, not what it could reach with Zoology's longer runs.

.. plot::

   import json
   from pathlib import Path

   import cookbook

   path = Path(cookbook.__file__).resolve().parents[1] / "benchmarks" / "results.json"
   recall = json.loads(path.read_text()).get("recall") if path.exists() else None
   fig, ax = plt.subplots(figsize=(6.4, 3.6))
   if recall:
       for mixer in dict.fromkeys(row["mixer"] for row in recall["rows"]):
           rows = [row for row in recall["rows"] if row["mixer"] == mixer]
           ax.plot([r["state"] for r in rows], [r["accuracy"] for r in rows], "o-", lw=1, ms=3, label=mixer)
       task, budget = recall["task"], recall["budget"]
       ax.set(xscale="log", ylim=(0, 1.02), xlabel="state carried per layer (numbers)",
              ylabel="held-out query accuracy",
              title=f"MQAR: {task['n_pairs']} pairs, {task['T']} tokens, {budget['steps']} steps "
                    f"(make bench, {recall['date'][:10]})")
       ax.legend(fontsize=7, ncol=2, loc="upper left")
   else:
       ax.text(0.5, 0.5, "no measurement yet: run make bench", ha="center", va="center")
       ax.set_axis_off()
   fig.tight_layout()

.. admonition:: Intuition

   MQAR is a cloakroom: coats are handed in with tickets, then the tickets come back in another
   order. Attention keeps every coat on its own hook. A matrix state is a rack with as many hooks
   as the key has dimensions; a vector state is one pile of coats, from which only the last few
   can be pulled out whole.

Inductive bias
--------------

The tasks assume nothing about language: their tokens are random, so a mixer cannot win by
knowing which tokens go together, only by storing and retrieving. What a mixer's result says is
how many independent associations its state can hold and address by content. The harness's
token shift is the one prior it gives every mixer, so that the comparison measures recall rather
than the ability to pair a value with the token before it.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.sequence_models.associative_recall import apply, init, mqar, selective_copying
>>> tokens, targets = mqar(jax.random.key(0), n_pairs=3, n_keys=5, n_values=7)
>>> tokens.shape, targets.tolist()[:6]
((9,), [-1, -1, -1, -1, -1, -1])
>>> bool(jnp.all(jnp.sort(tokens[6:]) == jnp.sort(tokens[0:6:2])))  # the keys, asked again
True
>>> tokens, targets = selective_copying(jax.random.key(1), length=11, n_data=3, vocab=5)
>>> tokens.shape, tokens[11:].tolist()  # three markers at the end
((14,), [6, 6, 6])
>>> bool(jnp.all(tokens[tokens % 6 != 0] == targets[11:]))  # the data, in order
True
>>> params = init(jax.random.key(2), "delta_rule", vocab=13, D=8)
>>> apply(params, tokens, mixer="delta_rule").shape
(14, 13)
>>> from cookbook.sequence_models.associative_recall import state_size
>>> state_size("delta_rule", D=8, T=14), state_size("attention", D=8, T=14)  # D^2 against 2TD
(64, 224)
"""

import functools
import math

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.optimization.adam import adam
from cookbook.optimization.sgd import apply_updates
from cookbook.sequence_models import delta_rule, hyena, linear_recurrence, mamba, mamba2, retnet, rwkv, s4, xlstm

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"mqar": ("n_pairs", "n_keys", "n_values"), "selective_copying": ("length", "n_data", "vocab"),
       "apply": ("mixer",)}
#: A token sequence may have any length.
FREE_LENGTH = {"apply": ("tokens",)}

# ---- The tasks -----------------------------------------------------------------------------------


def mqar(key, *, n_pairs, n_keys, n_values):
    """One MQAR sequence of ``3 * n_pairs`` tokens and its targets.

    Keys are ``1 .. n_keys`` (``n_pairs`` distinct ones), values ``n_keys + 1 .. n_keys +
    n_values`` (repeats allowed); the vocabulary has ``1 + n_keys + n_values`` tokens. The pairs
    come first, ``k_1 v_1 ... k_P v_P``, then the keys in a random order; the target at each query
    is its value, and ``-1`` elsewhere.
    """
    n_pairs, n_keys = _checks.size(n_pairs, "n_pairs"), _checks.size(n_keys, "n_keys")
    n_values = _checks.size(n_values, "n_values")
    if n_pairs > n_keys:
        raise ValueError(f"n_pairs must not exceed n_keys (keys are distinct), got n_pairs={n_pairs}, n_keys={n_keys}")
    return _mqar(key, n_pairs, n_keys, n_values)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _mqar(key, n_pairs, n_keys, n_values):
    k_keys, k_values, k_order = jax.random.split(key, 3)
    keys = jax.random.permutation(k_keys, n_keys)[:n_pairs] + 1  # (P,), distinct
    values = jax.random.randint(k_values, (n_pairs,), 0, n_values) + n_keys + 1  # (P,)
    order = jax.random.permutation(k_order, n_pairs)  # (P,)
    pairs = jnp.stack([keys, values], axis=1).reshape(-1)  # (2P,): k_1 v_1 k_2 v_2 ...
    tokens = jnp.concatenate([pairs, keys[order]])  # (3P,)
    targets = jnp.concatenate([jnp.full((2 * n_pairs,), -1), values[order]])
    return tokens.astype(jnp.int32), targets.astype(jnp.int32)


def selective_copying(key, *, length, n_data, vocab):
    """One selective-copying sequence of ``length + n_data`` tokens and its targets.

    ``n_data`` data tokens, drawn from ``1 .. vocab``, sit at random positions of a context of
    ``length`` noise tokens ``0``; then come ``n_data`` markers ``vocab + 1``, whose targets are
    the data tokens in order (``-1`` elsewhere). The vocabulary has ``vocab + 2`` tokens.
    """
    length, n_data, vocab = _checks.size(length, "length"), _checks.size(n_data, "n_data"), _checks.size(vocab, "vocab")
    if n_data > length:
        raise ValueError(f"n_data must not exceed length, got n_data={n_data}, length={length}")
    return _selective_copying(key, length, n_data, vocab)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _selective_copying(key, length, n_data, vocab):
    k_where, k_data = jax.random.split(key)
    where = jnp.sort(jax.random.permutation(k_where, length)[:n_data])  # (M,) distinct positions, in order
    data = jax.random.randint(k_data, (n_data,), 1, vocab + 1)  # (M,)
    marker = vocab + 1
    tokens = jnp.zeros((length + n_data,), jnp.int32).at[where].set(data).at[length:].set(marker)
    targets = jnp.full((length + n_data,), -1).at[length:].set(data)
    return tokens, targets.astype(jnp.int32)


# ---- The mixers ----------------------------------------------------------------------------------
# Each is (init(key, D, T) -> params, apply(params, x (T, D)) -> (T, D), state(D, T) -> numbers
# carried per layer). Sizes that the recipes leave free are fixed here: N = 4 complex modes for S4D
# and 4 states per channel for Mamba, N = 8 for Mamba-2 with 2 heads, 2 heads for retention.

def _dense(key, shape):
    return jax.random.normal(key, shape) / math.sqrt(shape[0])


def _attention_init(key, D, T):
    k_q, k_k, k_v, k_o = jax.random.split(key, 4)
    return {name: _dense(k, (D, D)) for name, k in (("W_Q", k_q), ("W_K", k_k), ("W_V", k_v), ("W_O", k_o))}


def _attention(p, x):
    T, D = x.shape
    q, k, v = x @ p["W_Q"], x @ p["W_K"], x @ p["W_V"]  # (T, D) each
    scores = q @ k.T / math.sqrt(D)  # (T, T)
    scores = jnp.where(jnp.tril(jnp.ones((T, T), bool)), scores, jnp.finfo(scores.dtype).min)
    return jax.nn.softmax(scores, axis=-1) @ v @ p["W_O"]


def _qkv_init(key, D, T, extra):
    """Query, key, value and output projections, and ``extra`` vectors (D,) for scalar gates."""
    keys = jax.random.split(key, 4 + len(extra))
    p = {name: _dense(k, (D, D)) for name, k in zip(("W_Q", "W_K", "W_V", "W_O"), keys)}
    p.update({name: _dense(k, (D,)) for name, k in zip(extra, keys[4:])})
    return p


def _unit(z):
    return z / jnp.sqrt(jnp.sum(z * z, axis=-1, keepdims=True) + 1e-6)


def _delta(p, x):
    q, k, v = _unit(x @ p["W_Q"]), _unit(x @ p["W_K"]), x @ p["W_V"]
    beta = jax.nn.sigmoid(x @ p["w_beta"])  # (T,): how much of the correction is written
    return delta_rule.delta_rule_recurrent(q, k, v, beta) @ p["W_O"]


def _mlstm(p, x):
    q, k, v = x @ p["W_Q"], x @ p["W_K"] / math.sqrt(x.shape[1]), x @ p["W_V"]
    return xlstm.mlstm_parallel(q, k, v, x @ p["w_i"], x @ p["w_f"] + 3.0) @ p["W_O"]  # forget gates start open


def _mamba2_init(key, D, T, H=2, N=8):
    k_x, k_b, k_c, k_a, k_o = jax.random.split(key, 5)
    return {"W_x": _dense(k_x, (D, D)), "W_B": _dense(k_b, (D, N)), "W_C": _dense(k_c, (D, N)),
            "W_a": _dense(k_a, (D, H)), "b_a": jnp.full((H,), -4.6), "W_O": _dense(k_o, (D, D))}


def _mamba2(p, x):
    T, D = x.shape
    H = p["W_a"].shape[1]
    # (T, H): the decay per head, chosen by the token; softplus(-4.6) = 0.01 keeps about 100 tokens at first
    log_a = -jax.nn.softplus(x @ p["W_a"] + p["b_a"][None, :])
    y = mamba2.ssd_quadratic((x @ p["W_x"]).reshape(T, H, D // H), log_a, x @ p["W_B"], x @ p["W_C"])
    return y.reshape(T, D) @ p["W_O"]


#: The mixers the harness takes: name -> (init, apply, numbers of state carried per layer (D, T)).
MIXERS = {
    "attention": (_attention_init, _attention, lambda D, T: 2 * T * D),
    "lru": (lambda key, D, T: linear_recurrence.init(key, D, D), linear_recurrence.apply, lambda D, T: 2 * D),
    "s4d": (lambda key, D, T: s4.init(key, D, 4), s4.apply, lambda D, T: 2 * D * 4),
    "mamba": (lambda key, D, T: mamba.init(key, D, N=4), mamba.apply, lambda D, T: 2 * D * 4),
    "mamba2": (_mamba2_init, _mamba2, lambda D, T: 8 * D),
    "retnet": (lambda key, D, T: retnet.init(key, D), lambda p, x: retnet.multiscale_retention(p, x, H=2),
               lambda D, T: D * D // 2),
    "rwkv": (lambda key, D, T: rwkv.init(key, D, D)["time"], rwkv.time_mixing, lambda D, T: 2 * D),
    "delta_rule": (lambda key, D, T: _qkv_init(key, D, T, ("w_beta",)), _delta, lambda D, T: D * D),
    "mlstm": (lambda key, D, T: _qkv_init(key, D, T, ("w_i", "w_f")), _mlstm, lambda D, T: D * D + D),
    "hyena": (lambda key, D, T: hyena.init(key, D, max_len=T), hyena.hyena, lambda D, T: T * D),
}


def _mixer(mixer):
    if mixer not in MIXERS:
        raise ValueError(f"mixer must be one of {sorted(MIXERS)}, got {mixer!r}")
    return MIXERS[mixer]


def state_size(mixer, *, D, T):
    """The numbers that ``mixer`` carries from one token to the next in one layer of width ``D``,
    on sequences of ``T`` tokens (for attention, its keys and values; for Hyena, its inputs)."""
    _mixer(mixer)
    return MIXERS[mixer][2](_checks.size(D, "D"), _checks.size(T, "T"))


# ---- The model -----------------------------------------------------------------------------------

def init(key, mixer, *, vocab, D, layers=2, max_len=64):
    """Parameters of the harness around ``mixer``: embeddings of ``vocab`` tokens in width ``D``,
    ``layers`` residual blocks, a head; ``max_len`` is the longest sequence (Hyena's filters need it)."""
    _mixer(mixer)
    vocab, D = _checks.size(vocab, "vocab"), _checks.size(D, "D", minimum=2)
    layers, max_len = _checks.size(layers, "layers"), _checks.size(max_len, "max_len")
    if D % 2:
        raise ValueError(f"D must be even (two heads share it in retention and Mamba-2), got D={D}")
    return _init(key, mixer, vocab, D, layers, max_len)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))  # one compiled program, not one per array
def _init(key, mixer, vocab, D, layers, max_len):
    init_mixer = MIXERS[mixer][0]
    k_embed, k_shift, k_head, *k_layers = jax.random.split(key, 3 + layers)
    return {
        "embed": jax.random.normal(k_embed, (vocab, D)),
        "shift": jax.random.normal(k_shift, (vocab, D)),
        "layers": [init_mixer(k, D, max_len) for k in k_layers],
        "norms": jnp.ones((layers + 1, D)),
        "head": _dense(k_head, (D, vocab)),
    }


def _rms(z, g):
    return z * jax.lax.rsqrt(jnp.mean(z * z, axis=-1, keepdims=True) + 1e-6) * g[None, :]


def apply(params, tokens, *, mixer):
    """Logits (T, V) for ``tokens`` (T,) of the harness around ``mixer``."""
    mix = _mixer(mixer)[1]
    embed = _checks.float_array(params["embed"], "params['embed']", ndim=2, what=" (V, D)")
    V, D = embed.shape
    for name, shape in (("shift", (V, D)), ("head", (D, V))):
        where = f"params['{name}']"
        _checks.same_shape(_checks.float_array(params[name], where), where, shape, expected_from="params['embed']")
    norms = _checks.float_array(params["norms"], "params['norms']", ndim=2, what=" (layers + 1, D)")
    _checks.same_shape(norms, "params['norms']", (len(params["layers"]) + 1, D), expected_from="params['layers']")
    tokens = _checks.int_array(tokens, "tokens", ndim=1, what=" (T,)")
    _checks.check_range(tokens, "tokens", 0, V)
    return _apply(params, tokens, mixer)


@functools.partial(jax.jit, static_argnums=2)  # one program after the checks, not one per operation
def _apply(params, tokens, mixer):
    mix, norms = _mixer(mixer)[1], params["norms"]
    previous = jnp.concatenate([jnp.zeros((1,), tokens.dtype), tokens[:-1]])  # token 0 before the first
    z = params["embed"][tokens] + params["shift"][previous]  # (T, D)
    for p, g in zip(params["layers"], norms):
        z = z + mix(p, _rms(z, g))
    return _rms(z, norms[-1]) @ params["head"]  # (T, V)


def loss_and_accuracy(params, tokens, targets, *, mixer):
    """Mean cross-entropy and token accuracy over the positions whose target is not ``-1``, for a
    batch of ``tokens`` and ``targets`` (B, T)."""
    logits = jax.vmap(lambda t: apply(params, t, mixer=mixer))(tokens)  # (B, T, V)
    asked = targets >= 0
    safe = jnp.where(asked, targets, 0)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), safe[..., None], axis=-1)[..., 0]
    right = jnp.argmax(logits, axis=-1) == safe
    n = jnp.maximum(jnp.sum(asked), 1)
    return jnp.sum(nll * asked) / n, jnp.sum(right * asked) / n


def sample(task, key, n):
    """``n`` sequences of ``task`` (a generator with its sizes bound, ``key -> (tokens, targets)``)
    at once: ``tokens`` and ``targets`` (n, T), from ``n`` keys split from ``key``."""
    return _sample(task, key, _checks.size(n, "n"))


@functools.partial(jax.jit, static_argnums=(0, 2))
def _sample(task, key, n):
    return jax.vmap(task)(jax.random.split(key, n))


def train(key, mixer, task, *, vocab, D, steps, batch=32, learning_rate=3e-3, layers=2, held_out=256):
    """Train the harness around ``mixer`` on ``task`` (as for ``sample``) over ``vocab`` tokens, for
    ``steps`` Adam steps of ``batch`` new sequences each; returns the parameters and the token
    accuracy on ``held_out`` other sequences. The data are drawn at once, the steps are one
    compiled :func:`jax.lax.scan`, and the updates are the book's own Adam."""
    _mixer(mixer)
    steps, batch, held_out = _checks.size(steps, "steps"), _checks.size(batch, "batch"), _checks.size(held_out, "held_out")
    _checks.positive(learning_rate, "learning_rate")
    k_init, k_data, k_test = jax.random.split(key, 3)
    tokens, targets = sample(task, k_data, steps * batch)  # (steps * batch, T) each
    T = tokens.shape[1]
    params = init(k_init, mixer, vocab=vocab, D=D, layers=layers, max_len=T)
    batches = (tokens.reshape(steps, batch, T), targets.reshape(steps, batch, T))
    return _train(params, batches, sample(task, k_test, held_out), mixer, learning_rate)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _train(params, batches, held_out, mixer, learning_rate):
    opt = adam(learning_rate)
    loss = functools.partial(loss_and_accuracy, mixer=mixer)

    def step(state, batch):
        p, s = state
        grads, _ = jax.grad(loss, has_aux=True)(p, *batch)
        updates, s = opt.update(grads, s, p)
        return (apply_updates(p, updates), s), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), batches)
    return params, loss(params, *held_out)[1]
