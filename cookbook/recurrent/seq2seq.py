r"""Sequence to sequence
====================

An encoder recurrent network reads the input sequence into a vector and a decoder recurrent network
writes the output sequence from it, one token at a time: the model for mapping a sequence to
another of a different length or order, such as translation, trained with teacher forcing and
decoded greedily or by beam search.

Equation
--------

.. math::

   s_j = \operatorname{GRU}_{\text{enc}}\left(s_{j-1}, E_{x_j}\right), \quad j = 1, \dots, S,
   \qquad h_0 = s_S

.. math::

   h_t = \operatorname{GRU}_{\text{dec}}\left(h_{t-1}, F_{y_{t-1}}\right), \qquad
   p(y_t \mid y_{<t}, x) = \operatorname{softmax}\left(h_t W_o + b_o\right)_{y_t}

.. math::

   \mathcal{L} = -\frac{1}{T} \sum_{t=1}^{T} \log p(y_t \mid y_{<t}, x), \qquad
   \hat{y} \approx \operatorname*{arg\,max}_{y} \sum_{t=1}^{T} \log p(y_t \mid y_{<t}, x)

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`, :math:`x_j`
     - source tokens; the token at position :math:`j`
     - ``src``
     - ``(S,)`` integers
   * - :math:`y`, :math:`y_t`
     - target tokens; :math:`y_0` is the start token, number :math:`V`
     - ``tgt``; the start token is ``V``
     - ``(T,)`` integers
   * - :math:`\hat{y}`
     - the decoded output
     - ``greedy_decode(...)``, ``beam_search(...)[0][0]``
     - ``(T,)``
   * - :math:`E`, :math:`F`
     - source and target embedding tables (the target one has a row for the start token)
     - ``params["embed_src"]``, ``params["embed_tgt"]``
     - ``(V, E)``, ``(V + 1, E)``
   * - :math:`s_j`
     - encoder state
     - inside ``encode``
     - ``(H,)``
   * - :math:`h_t`, :math:`h_0`
     - decoder state; its initial value, the encoder's last state
     - ``h``; ``encode(params, src)``
     - ``(H,)``
   * - :math:`W_o`, :math:`b_o`
     - output projection to the vocabulary
     - ``params["W_o"]``, ``params["b_o"]``
     - ``(H, V)``, ``(V,)``
   * - :math:`\mathcal{L}`
     - cross-entropy of the targets under teacher forcing
     - ``loss(params, src, tgt)``
     - ``()``
   * - :math:`p`
     - the decoder's predicted distribution
     - ``jax.nn.log_softmax(logits)``
     - ``(V,)``
   * - :math:`S`, :math:`T`, :math:`j`, :math:`t`
     - source and target lengths; their positions
     - the lengths of ``src`` and ``tgt``; their indices
     - scalar

Explanation
-----------

:footcite:t:`sutskever2014sequence` and :footcite:t:`cho2014learning` showed that two recurrent
networks can learn to translate: the encoder reads the source and its last state :math:`h_0 = s_S`
is the only thing passed on, a fixed-size vector holding the whole input; the decoder is a
conditional language model that starts from it and predicts each target token from the tokens
before it. Here both are GRUs (:doc:`gru`), and the task is to *reverse* a sequence of digits,
which is trivial for a program but makes the network store every digit and its position in
:math:`h_0` (Sutskever et al. themselves reversed the *source* sentences, so that the first words to
translate were the last ones read).

.. admonition:: Intuition

   The encoder-decoder is an interpreter who may not speak while the speaker talks: she listens to
   the whole sentence, writes one index card of fixed size, and then delivers the translation from
   the card alone, word by word, each word chosen in the light of the ones she has already said.
   Everything hinges on what fits on the card, which is why long sentences suffer.

**Teacher forcing.** During training the decoder's input at step :math:`t` is the *true* previous
token :math:`y_{t-1}`, not its own prediction :footcite:`williams1989learning`. All steps can then
be computed in one scan over the known target, and the loss is a sum of ordinary cross-entropies.
At test time the true tokens are unknown and the decoder feeds back its own output, a mismatch
(exposure bias) that is small when the model is accurate.

**Decoding.** The most probable output sequence is the arg max of a sum over all :math:`V^T`
sequences, too many to enumerate. *Greedy decoding* takes the most probable token at each step and
feeds it back. *Beam search* keeps the :math:`K` best partial sequences (by total log-probability)
at every step, extends each by every token, and keeps the :math:`K` best of the :math:`KV`
extensions; with :math:`K = 1` it is greedy decoding, which the tests assert, and larger :math:`K`
never finds a worse-scoring sequence in practice. ``beam_search`` starts with a single live beam
(the others have score ``finfo.min``, so that :math:`K` copies of the same prefix are not kept) and
returns the beams best first. Both run in a :func:`jax.lax.scan` over the :math:`T` output steps;
the output length is fixed here, where a translation model would stop each beam at an
end-of-sequence token.

**Training.** ``train`` runs Adam :footcite:`kingma2015adam` on mini-batches, written inline (the
book's optimisers are in their own chapter), inside one scan, so that the whole loop compiles
once. With 5 digits from a vocabulary of 10 and 64 hidden units, 600 steps on batches of 64
(seconds on a laptop) reverse about 85% of held-out sequences entirely and 95% of their digits
(the test states the measured figures).

*Numerical traps.* The loss uses :func:`jax.nn.log_softmax`, which subtracts the maximum logit;
beam scores are sums of log-probabilities, never products of probabilities, which would underflow
for long outputs. Tokens must be integers in :math:`[0, V)`, checked when they are concrete; under
:func:`jax.jit` the check cannot run and an out-of-range token reads a clamped row of the
embedding table. Greedy and beam decoding refuse parameters that hold a NaN when concrete, since
an arg max over NaN logits would return token 0 as if it were an answer.

Inductive bias
--------------

Everything the decoder knows about the source passes through one vector of :math:`H` numbers, so
the model assumes the input can be compressed to a fixed size regardless of its length; accuracy
falls as sequences grow longer than those seen in training. Attention, which lets the decoder look
back at every encoder state, removes this bottleneck. Token by token generation assumes the output
distribution factorises left to right.

Example
-------

Build the model of the explanation (digits 0-9, 64 hidden units), train it for 600 steps, and
decode a sequence that is not among its 5000 training pairs:

>>> import jax, jax.numpy as jnp
>>> from cookbook.recurrent.seq2seq import (
...     init, loss, train, greedy_decode, beam_search, reversal_data)
>>> k_p, k_d, k_t = jax.random.split(jax.random.key(0), 3)
>>> params = init(k_p, vocab=10, embed=16, hidden=64)
>>> src, tgt = reversal_data(k_d, 5000, length=5, vocab=10)
>>> src[0], tgt[0]
(Array([2, 2, 6, 5, 1], dtype=int32), Array([1, 5, 6, 2, 2], dtype=int32))
>>> float(loss(params, src[0], tgt[0])) > 2.0  # near log(10) = 2.3 at the start
True
>>> trained, losses = train(params, k_t, src, tgt, steps=600, batch_size=64, learning_rate=0.01)
>>> bool(losses[-20:].mean() < 0.1 * losses[:20].mean())  # the loss fell more than tenfold
True
>>> greedy_decode(trained, jnp.array([3, 1, 4, 1, 5]), length=5)
Array([5, 1, 4, 1, 3], dtype=int32)
>>> tokens, scores = beam_search(trained, jnp.array([3, 1, 4, 1, 5]), length=5, beam_width=3)
>>> tokens.shape, bool(scores[0] >= scores[1] >= scores[2])
((3, 5), True)
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.recurrent import gru

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "loss": (),
    "greedy_decode": ("length",),
    "beam_search": ("length", "beam_width"),
    "train": ("steps", "batch_size"),
    "reversal_data": ("N", "length", "vocab"),
}
#: Arguments whose last axis is a sentence length, which any size may have.
FREE_LENGTH = {"loss": ("src", "tgt"), "greedy_decode": ("src",), "beam_search": ("src",), "train": ("src", "tgt")}


def init(key, *, vocab, embed, hidden):
    """Parameters of a GRU encoder-decoder over ``vocab`` tokens (the start token is number ``vocab``)."""
    vocab, embed, hidden = (_checks.size(v, n) for v, n in ((vocab, "vocab"), (embed, "embed"), (hidden, "hidden")))
    return _init(key, vocab, embed, hidden)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))  # one compiled program rather than a dozen eager ops
def _init(key, vocab, embed, hidden):
    k_es, k_et, k_enc, k_dec, k_o = jax.random.split(key, 5)
    return {
        "embed_src": jax.random.normal(k_es, (vocab, embed)),
        "embed_tgt": jax.random.normal(k_et, (vocab + 1, embed)),
        "encoder": gru.init(k_enc, embed, hidden),
        "decoder": gru.init(k_dec, embed, hidden),
        "W_o": jax.random.normal(k_o, (hidden, vocab)) / jnp.sqrt(hidden),
        "b_o": jnp.zeros((vocab,)),
    }


def _vocab(params):
    """The vocabulary size ``V``, after checking every parameter's shape against ``init``'s."""
    V, E = _checks.float_array(params["embed_src"], "params['embed_src']", ndim=2, what=" (V, E)").shape
    H = gru._sizes(params["decoder"])[1]
    for name, shape in (("embed_tgt", (V + 1, E)), ("W_o", (H, V)), ("b_o", (V,))):
        where = f"params['{name}']"
        _checks.same_shape(_checks.float_array(params[name], where), where, shape, expected_from="init")
    if gru._sizes(params["encoder"]) != (E, H) or gru._sizes(params["decoder"])[0] != E:
        raise ValueError(f"params['encoder'] and params['decoder'] must be GRUs from {E} inputs to {H} units")
    return V


def _check_tokens(name, tokens, vocab, ndim=1, what=" (S,)"):
    """Integer tokens of ``ndim`` axes, in [0, vocab) when concrete."""
    tokens = _checks.int_array(tokens, name, ndim=ndim, what=what)
    with jax.ensure_compile_time_eval():  # also checks concrete tokens closed over by a jitted function
        return _checks.check_range(tokens, name, 0, vocab)


def _check_no_nan(params):
    """Decoding makes discrete choices: refuse NaN parameters when they are concrete."""
    with jax.ensure_compile_time_eval():  # also checks concrete parameters closed over by a jitted function
        for path, leaf in jax.tree_util.tree_leaves_with_path(params):
            _checks.check_no_nan(leaf, "params" + jax.tree_util.keystr(path))


def encode(params, src):
    """The encoder's last state (H,): the vector from which the decoder starts."""
    src = _check_tokens("src", src, _vocab(params))
    return _encode_jit(params, src)


def _encode(params, src):
    return gru.apply(params["encoder"], params["embed_src"][src])[-1]


_encode_jit = jax.jit(_encode)  # for encode, called eagerly; the other cores trace _encode itself


def decoder_step(params, h, token):
    """One decoder step: the new state (H,) and the logits (V,) of the next token, given the previous one."""
    h = gru.cell(params["decoder"], h, params["embed_tgt"][token])
    return h, h @ params["W_o"] + params["b_o"]


def loss(params, src, tgt):
    """Mean cross-entropy of ``tgt`` (T,) given ``src`` (S,), with teacher forcing."""
    V = _vocab(params)
    src = _check_tokens("src", src, V)
    tgt = _check_tokens("tgt", tgt, V, what=" (T,)")
    return _loss(params, src, tgt)


@jax.jit  # the checks above run in Python; the computation is one compiled program
def _loss(params, src, tgt):
    V = params["W_o"].shape[1]
    prev = jnp.concatenate([jnp.array([V], tgt.dtype), tgt[:-1]])  # (T,): start token, then y_1..y_{T-1}

    def step(h, token):
        return decoder_step(params, h, token)

    _, logits = jax.lax.scan(step, _encode(params, src), prev)  # (T, V)
    log_p = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_p, tgt[:, None], axis=1))


def greedy_decode(params, src, *, length):
    """The ``length`` tokens obtained by feeding back the most probable token at each step."""
    V, length = _vocab(params), _checks.size(length, "length")
    _check_no_nan(params)
    return _greedy_decode(params, _check_tokens("src", src, V), length)


@functools.partial(jax.jit, static_argnums=2)
def _greedy_decode(params, src, length):
    V = params["W_o"].shape[1]

    def step(carry, _):
        h, prev = carry
        h, logits = decoder_step(params, h, prev)
        token = jnp.argmax(logits).astype(jnp.int32)
        return (h, token), token

    _, tokens = jax.lax.scan(step, (_encode(params, src), jnp.int32(V)), length=length)
    return tokens


def beam_search(params, src, *, length, beam_width):
    """The ``beam_width`` best sequences found by beam search, best first, and their log-probabilities.

    Returns tokens of shape (K, length) and total log-probabilities of shape (K,).
    """
    V, length, K = _vocab(params), _checks.size(length, "length"), _checks.size(beam_width, "beam_width")
    _check_no_nan(params)
    if not 1 <= K <= V:
        raise ValueError(f"beam_width must be between 1 and the vocabulary size {V}, got {K}")
    return _beam_search(params, _check_tokens("src", src, V), length, K)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _beam_search(params, src, length, K):
    V = params["W_o"].shape[1]
    h0 = jnp.broadcast_to(_encode(params, src), (K, params["W_o"].shape[0]))  # (K, H)
    minus_inf = jnp.finfo(h0.dtype).min
    scores = jnp.full((K,), minus_inf, h0.dtype).at[0].set(0.0)  # one live beam at the start
    tokens = jnp.zeros((K, length), jnp.int32)

    def step(carry, t):
        h, prev, scores, tokens = carry
        h, logits = jax.vmap(decoder_step, in_axes=(None, 0, 0))(params, h, prev)  # (K, H), (K, V)
        total = scores[:, None] + jax.nn.log_softmax(logits)  # (K, V)
        scores, flat = jax.lax.top_k(total.reshape(K * V), K)  # best K of the K * V extensions
        beam, token = flat // V, (flat % V).astype(jnp.int32)
        tokens = tokens[beam].at[:, t].set(token)
        return (h[beam], token, scores, tokens), None

    init_carry = (h0, jnp.full((K,), V, jnp.int32), scores, tokens)
    (_, _, scores, tokens), _ = jax.lax.scan(step, init_carry, jnp.arange(length))
    return tokens, scores


def reversal_data(key, N, *, length, vocab):
    """``N`` random digit sequences (N, length) and their reversals."""
    N, length, vocab = _checks.size(N, "N"), _checks.size(length, "length"), _checks.size(vocab, "vocab")
    return _reversal_data(key, N, length, vocab)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _reversal_data(key, N, length, vocab):
    src = jax.random.randint(key, (N, length), 0, vocab, dtype=jnp.int32)
    return src, src[:, ::-1]


def _adam_update(grads, state, params, *, learning_rate, b1=0.9, b2=0.999, eps=1e-8):
    """One Adam step: the new parameters and the new state ``(m, v, count)``."""
    m, v, count = state
    count = count + 1
    m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
    v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g**2, v, grads)
    m_scale, v_scale = 1 / (1 - b1**count), 1 / (1 - b2**count)  # bias correction
    params = jax.tree.map(lambda p, m, v: p - learning_rate * m * m_scale / (jnp.sqrt(v * v_scale) + eps),
                          params, m, v)
    return params, (m, v, count)


def train(params, key, src, tgt, *, steps, batch_size, learning_rate):
    """Adam on random mini-batches of the pairs ``src`` (N, S), ``tgt`` (N, T).

    Returns the trained parameters and the loss of each step's mini-batch, shape (steps,).
    """
    V = _vocab(params)
    src = _check_tokens("src", src, V, ndim=2, what=" (N, S)")
    tgt = _check_tokens("tgt", tgt, V, ndim=2, what=" (N, T)")
    if src.shape[0] != tgt.shape[0]:
        raise ValueError(f"src and tgt must have shapes (N, S) and (N, T), got {src.shape} and {tgt.shape}")
    steps, batch_size = _checks.size(steps, "steps"), _checks.size(batch_size, "batch_size")
    learning_rate = _checks.positive(learning_rate, "learning_rate")
    return _train(params, key, src, tgt, steps, batch_size, learning_rate)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _train(params, key, src, tgt, steps, batch_size, learning_rate):
    batch_loss = lambda p, s, t: jnp.mean(jax.vmap(_loss, in_axes=(None, 0, 0))(p, s, t))
    zeros = jax.tree.map(jnp.zeros_like, params)

    def step(state, k):
        params, adam_state = state
        idx = jax.random.randint(k, (batch_size,), 0, src.shape[0])
        value, grads = jax.value_and_grad(batch_loss)(params, src[idx], tgt[idx])
        params, adam_state = _adam_update(grads, adam_state, params, learning_rate=learning_rate)
        return (params, adam_state), value

    init_state = (params, (zeros, zeros, jnp.zeros((), jnp.float32)))
    (params, _), losses = jax.lax.scan(step, init_state, jax.random.split(key, steps))
    return params, losses
