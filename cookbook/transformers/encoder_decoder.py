r"""Encoder-decoder transformer
===========================

The original transformer: an encoder reads the whole source sentence with bidirectional
self-attention, and a decoder writes the target one token at a time, attending causally to what it
has written and through cross-attention to every source position; the model to reach for when one
sequence must be turned into another (translation, summarisation, speech to text).

Equation
--------

Each of the :math:`L` encoder layers (post-norm, as in :footcite:t:`vaswani2017attention`) updates
the source stream :math:`h`, which starts from the embedded source tokens :math:`x`:

.. math::

   h = \sqrt{d}\, E^{\text{src}}_{x} + P, \qquad
   h \leftarrow \operatorname{LN}\big(h + \operatorname{Attn}(h, h; M^{\text{pad}})\big), \qquad
   h \leftarrow \operatorname{LN}\big(h + \operatorname{FFN}(h)\big), \qquad m = h

Each of the :math:`L` decoder layers updates the target stream :math:`g`, which starts from the
target shifted right by one (teacher forcing), and reads the memory :math:`m` in its middle
sub-layer:

.. math::

   g = \sqrt{d}\, E^{\text{tgt}}_{\tilde{y}} + P, \qquad
   \tilde{y} = (\text{BOS}, y_1, \dots, y_{T-1})

   g \leftarrow \operatorname{LN}\big(g + \operatorname{Attn}(g, g; M^{\text{causal}})\big), \qquad
   g \leftarrow \operatorname{LN}\big(g + \operatorname{Attn}(g, m; M^{\text{pad}})\big), \qquad
   g \leftarrow \operatorname{LN}\big(g + \operatorname{FFN}(g)\big), \qquad
   z = g\, (E^{\text{tgt}})^\top

where every attention, from queries :math:`a` to keys and values :math:`c`, is, for each head
:math:`i` of :math:`H`,

.. math::

   A_i = \operatorname{softmax}\Big(\frac{(a W^{Q}_i + b^{Q}_i)(c W^{K}_i + b^{K}_i)^\top}{\sqrt{D}}
   + M\Big)\, (c W^{V}_i + b^{V}_i), \qquad
   \operatorname{Attn}(a, c; M) = [A_1, \dots, A_H]\, W^{O} + b^{O}

   M^{\text{pad}}_{tj} = \begin{cases} 0 & x_j \ne \text{PAD} \\ -\infty & x_j = \text{PAD} \end{cases},
   \qquad
   M^{\text{causal}}_{ts} = \begin{cases} 0 & s \le t \\ -\infty & s > t \end{cases}

(:doc:`/docs/chapters/attention/multi_head`), and the loss is the cross-entropy of the :math:`N`
real target tokens of a batch of :math:`B` sentence pairs, pair :math:`b` marked by a superscript:

.. math::

   \mathcal{L} = -\frac{1}{\max(N, 1)} \sum_{b=1}^{B} \sum_{t \,:\, y^{(b)}_t \ne \text{PAD}}
   \log \operatorname{softmax}\big(z^{(b)}_t\big)_{y^{(b)}_t}, \qquad
   N = \sum_{b=1}^{B} \big|\{t : y^{(b)}_t \ne \text{PAD}\}\big|

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`, :math:`x_j`
     - source tokens, ending with EOS and padded with PAD; the token at position :math:`j`
     - ``src``
     - ``(S,)`` integers
   * - :math:`y`, :math:`y_t`
     - target tokens, ending with EOS and padded with PAD; the token at position :math:`t`
     - ``tgt``
     - ``(T,)`` integers
   * - :math:`\tilde{y}`
     - the decoder's input: BOS, then the target shifted right by one
     - ``tgt_in = shift_right(tgt)``
     - ``(T,)`` integers
   * - :math:`j`, :math:`s`, :math:`t`, :math:`T`
     - a source position; a target position that :math:`t` reads; a target position; the target length
     - ``T = tgt_in.shape[0]``
     - scalar
   * - :math:`E^{\text{src}}`, :math:`E^{\text{tgt}}`
     - source and target embeddings; the target ones are also the output layer (tied)
     - ``params["src_embed"]``, ``params["tgt_embed"]``
     - ``(src_vocab, d_model)``, ``(tgt_vocab, d_model)``
   * - :math:`d`
     - width of the residual streams
     - ``d_model``
     - scalar
   * - :math:`P`
     - sinusoidal position encodings (:doc:`/docs/chapters/attention/positional_encoding`)
     - ``sinusoidal_encoding(S, d_model)``
     - ``(S, d_model)``, ``(T, d_model)``
   * - :math:`h`, :math:`m`
     - the encoder's stream; its output, the memory that the decoder reads
     - ``memory = encode(params, src)``
     - ``(S, d_model)``
   * - :math:`g`
     - the decoder's stream
     - ``h`` inside ``_scan_blocks``, called by ``decode``
     - ``(T, d_model)``
   * - :math:`z`, :math:`z_t`
     - logits of the next target token at every position; at position :math:`t`
     - ``decode(params, memory, tgt_in)``, ``apply(params, src, tgt_in)``
     - ``(T, tgt_vocab)``
   * - :math:`a`, :math:`c`
     - the stream that asks (queries); the stream that is read (keys and values)
     - arguments of ``multi_head.apply``
     - ``(T, d_model)``, ``(S, d_model)``
   * - :math:`W^{Q}_i`, :math:`W^{K}_i`, :math:`W^{V}_i`, :math:`b^{Q}_i`, :math:`b^{K}_i`, :math:`b^{V}_i`
     - query, key and value projections of head :math:`i` and their biases, separate in every sub-layer
     - entries W_q, W_k, W_v, b_q, b_k, b_v of ``block["attn"]`` and ``block["cross"]``
     - ``(d_model, H, D)``, ``(H, D)`` for all heads
   * - :math:`W^{O}`, :math:`b^{O}`
     - output projection of the concatenated heads, and its bias
     - entries W_o, b_o of the same dicts
     - ``(H, D, d_model)``, ``(d_model,)``
   * - :math:`A_i`, :math:`i`, :math:`H`
     - the output of head :math:`i`; a head; the number of heads
     - inside ``multi_head.apply``; ``num_heads``
     - ``(T, D)``; scalar
   * - :math:`D`
     - features per head
     - ``d_model // num_heads``
     - scalar
   * - :math:`M`
     - additive mask (row: query, column: key); :math:`-\infty` hides a PAD key or a later position
     - ``attention_masks(src_mask, T)``: ``encoder``, ``causal``, ``cross`` (booleans, ``True`` =
       may attend)
     - ``(S, S)``, ``(T, T)``, ``(T, S)``
   * - :math:`L`
     - number of layers of the encoder, and of the decoder
     - ``num_layers``
     - scalar
   * - :math:`N`, :math:`B`, :math:`b`
     - number of real (non-PAD) target tokens in the whole batch; number of sentence pairs; a pair
     - ``jnp.sum(real)`` in ``_loss``; ``src.shape[0]``
     - scalar
   * - :math:`\mathcal{L}`
     - mean cross-entropy of the real target tokens, under teacher forcing
     - ``loss(params, src, tgt)``
     - ``()``

:math:`\operatorname{LN}` is :doc:`/docs/chapters/normalization/layer_norm` and
:math:`\operatorname{FFN}` the position-wise perceptron of the :doc:`transformer_block`, whose
post-norm form, with a cross-attention sub-layer for the decoder, each layer here is.

Explanation
-----------

**Two stacks, three kinds of attention.** :footcite:t:`vaswani2017attention` introduced the
transformer as a translation model of exactly this shape. The *encoder* is a stack of
:doc:`transformer_block` layers without a causal mask: every source position reads every other
one, so its row :math:`m_j` describes :math:`x_j` in the context of the whole sentence. The
*decoder* has three sub-layers per block: causal self-attention over the target written so far (as
in :doc:`gpt`), then *cross-attention*, whose queries come from the decoder's stream and whose keys
and values come from the encoder's memory, then the perceptron. At each target position,
cross-attention asks which source words matter now and averages their memory rows.

.. admonition:: Intuition

   The model works like a human interpreter with a notepad. The encoder listens to the whole
   sentence first and writes one note per word, each note already coloured by the rest of the
   sentence. The decoder then speaks one word at a time, remembering what it has said so far and,
   before each word, glancing back over the notes to find the ones that matter now.

**Teacher forcing and the shift by one.** In training the decoder's input is the target itself,
shifted right by one: :math:`\tilde{y} = (\text{BOS}, y_1, \dots, y_{T-1})` (``shift_right``).
Under the causal mask, position :math:`t` reads BOS and :math:`y_1, \dots, y_{t-1}` and predicts
:math:`y_t`, so all :math:`T` predictions come from one pass, each from the true prefix
:footcite:`williams1989learning`. At test time the prefix is the model's own output:
``greedy_translate`` encodes the source once, then a :func:`jax.lax.scan` over positions runs the
decoder and appends its most probable next token (PAD after the first EOS). Each step runs the
decoder over all ``max_len`` slots of the output, unwritten ones included (the causal mask keeps
them from reaching position :math:`t`): :math:`O(\text{max\_len}^2)` attention work per token,
where the key-value cache of :doc:`gpt` would need :math:`O(t)`.

**Padding.** Sentences are padded with PAD to a common length, which must change nothing. In
the encoder and in cross-attention, PAD source positions are hidden *as keys*
(:math:`M^{\text{pad}}`, added as the most negative float), so no logit depends on what the padding
holds. The target needs no key mask: its padding comes
after the real tokens, which the causal mask already hides from them. The loss leaves out the PAD
targets and averages over the :math:`N` real tokens of the batch, so a sentence weighs as much
as its length. The figure draws the three masks (dark: the query may read the key).

.. plot::

   from cookbook.transformers.encoder_decoder import attention_masks
   src = np.array([5, 9, 4, 3, 2, 0, 0])  # four words, EOS, two PAD
   tgt_in = np.array([1, 10, 9, 4, 8])  # BOS, then the translation: reversed, w -> 13 - w
   special = {0: "PAD", 1: "BOS", 2: "EOS"}
   src_names = [special.get(int(t), f"w{t}") for t in src]
   tgt_names = [special.get(int(t), f"w{t}") for t in tgt_in]
   panels = (("encoder self-attention", src_names, src_names),
             ("decoder self-attention", tgt_names, tgt_names),
             ("cross-attention", tgt_names, src_names))
   fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
   for ax, mask, (title, queries, keys) in zip(axes, attention_masks(src != 0, 5), panels):
       ax.imshow(np.asarray(mask), cmap="Blues", vmin=0, vmax=1.3)
       ax.set_xticks(range(len(keys)), keys, rotation=90)
       ax.set_yticks(range(len(queries)), queries)
       ax.set_xlabel("key (read)")
       ax.set_title(title)
   axes[0].set_ylabel("query (reads)")
   fig.tight_layout()

Inductive bias
--------------

The model assumes that the output is a function of the *whole* input, available at once, and that
the alignment between output and input positions is best found by content and position look-ups,
learned from data. It assumes no monotonic alignment and no locality: a reversal is no harder to
express than a copy, but any alignment must be learned from many examples. The output is assumed
to factorise left to right, and both streams know only the positions they were trained on:
sentences longer than any seen in training tend to be translated poorly.

Example
-------

Make a batch of sentence pairs, run the untrained model on the first one and check its parts
against each other (after training it translates, as the tests show):

>>> import jax, jax.numpy as jnp
>>> from cookbook.transformers.encoder_decoder import (init, encode, decode, apply, shift_right, loss,
...     attention_masks, greedy_translate, cross_attention_weights, translation_task)
>>> k_init, k_data = jax.random.split(jax.random.key(0))
>>> src, tgt = translation_task(k_data, batch_size=4, max_words=6, vocab=11)
>>> src[0], tgt[0]  # 4 words, EOS = 2, PAD = 0; the target reversed, each word w -> 13 - w
(Array([3, 7, 5, 8, 2, 0, 0], dtype=int32), Array([ 5,  8,  6, 10,  2,  0,  0], dtype=int32))
>>> tgt_in = shift_right(tgt[0])  # BOS = 1, then the target without its last token
>>> tgt_in
Array([ 1,  5,  8,  6, 10,  2,  0], dtype=int32)
>>> encoder_mask, causal, cross = attention_masks(src[0] != 0, 7)
>>> cross[0]  # every target position may read the five real source tokens
Array([ True,  True,  True,  True,  True, False, False], dtype=bool)
>>> params = init(k_init, src_vocab=11, tgt_vocab=11, d_model=32, num_heads=4, num_layers=1, d_ff=64)
>>> memory = encode(params, src[0])
>>> memory.shape
(7, 32)
>>> logits = decode(params, memory, tgt_in, src[0] != 0)
>>> logits.shape
(7, 11)
>>> bool(jnp.allclose(logits, apply(params, src[0], tgt_in), atol=1e-5))
True
>>> round(float(loss(params, src, tgt)), 2)  # untrained: above log(11) = 2.4
3.47
>>> w = cross_attention_weights(params, src[0], tgt_in)
>>> w.shape, bool(jnp.allclose(w.sum(axis=-1), 1.0)), bool(jnp.all(w[..., src[0] == 0] == 0))
((1, 4, 7, 7), True, True)
>>> tokens, step_logits = greedy_translate(params, src[0], max_len=7)
>>> tokens.shape, step_logits.shape
((7,), (7, 11))

Implementation notes
--------------------

**Numerics and bad input.** Masked scores use ``jnp.finfo(float32).min``, never :math:`-\infty`,
so a row with nothing to attend to gives zeros instead of NaN; softmax and log-softmax run in
float32. Embeddings are drawn with standard deviation :math:`d^{-1/2}` and multiplied by
:math:`\sqrt{d}`, as in the paper, so that they start at the scale of the positional encodings.
Token ids are checked against the vocabulary, and source and target sentences for an EOS, when
their values are concrete; under :func:`jax.jit` an id out of range reads a clamped embedding row.

**Why this beat the recurrent encoder-decoder.** The recurrent :doc:`sequence-to-sequence model
</docs/chapters/recurrent/seq2seq>` :footcite:`sutskever2014sequence,cho2014learning` passes the
whole source to the decoder through the encoder's last state, whose size is fixed whatever the sentence's length.
:footcite:t:`bahdanau2015neural` let a recurrent decoder attend to every encoder state, which removed
that bottleneck; the transformer keeps the attention and drops the recurrence, so any target
position is one attention step from any source position and training runs in parallel over
positions. The price is memory and compute that grow with the product of the source and target
lengths, where the recurrent decoder needed one fixed-size state. With it
:footcite:t:`vaswani2017attention` beat the best recurrent and convolutional systems of the time on
English-to-German and English-to-French, at a fraction of their training cost.

**The translation task of the tests.** The "language pair" has 8 words (tokens 3 to 10 of a
vocabulary of 11, after PAD = 0, BOS = 1 and EOS = 2). A target sentence is the source read
backwards, each word :math:`w` replaced by its dictionary entry :math:`13 - w`, so neither copying
nor a word-by-word map solves it. Sentences have 1 to 6 words. A model with one layer in each
stack, ``d_model = 32`` and 4 heads, trained by :doc:`Adam </docs/chapters/optimization/adam>` for
1000 steps of 32 pairs drawn from a corpus of 8000, translates 125 of 128 held-out sentences
exactly and gets 99.1% of their words and end tokens right (the test asserts at least 90% of the
sentences and 97% of the tokens). Its cross-attention has
learned the alignment: averaged over heads, the :math:`n`-th target word of each of the first eight
held-out sentences puts more than half of its attention, on average, on the :math:`n`-th source
word from the end (measured: at least 72%), the anti-diagonal of
the reversal, found from the sentence pairs alone.

**What this recipe keeps from the paper, and what it drops.** It keeps the post-norm layers, the
sinusoidal positions, the :math:`\sqrt{d}` embedding scale, the tied output embeddings and the
masking. The paper's base model had 6 layers in each stack, :math:`d = 512`, 8 heads and
``d_ff = 2048``, shared one subword vocabulary between both languages, was regularised with
:doc:`/docs/chapters/regularization/dropout` and :doc:`/docs/chapters/regularization/label_smoothing`,
trained with a learning rate that warms up and then decays, and decoded by beam search. Later
encoder-decoders such as T5 :footcite:`raffel2020exploring` moved to pre-norm layers and relative
positions.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks
from cookbook.attention import multi_head
from cookbook.attention.positional_encoding import sinusoidal_encoding
from cookbook.attention.scaled_dot_product import attention_weights
from cookbook.normalization.layer_norm import layer_norm
from cookbook.optimization.adam import adam
from cookbook.optimization.sgd import apply_updates
from cookbook.transformers import transformer_block
from cookbook.transformers._boundary import check_params

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "attention_masks": ("T",),
    "encode": (),
    "decode": (),
    "apply": (),
    "cross_attention_weights": (),
    "shift_right": (),
    "loss": (),
    "greedy_translate": ("max_len",),
    "translation_task": ("batch_size", "max_words", "vocab"),
}

#: The special tokens, shared by both vocabularies: padding, beginning and end of sentence.
PAD, BOS, EOS = 0, 1, 2


def init(key, src_vocab, tgt_vocab, d_model, num_heads, num_layers, d_ff):
    """Source and target embeddings (the target ones tied to the output layer), and ``num_layers``
    encoder blocks and ``num_layers`` decoder blocks with cross-attention, stacked for a scan."""
    for name, value in (("src_vocab", src_vocab), ("tgt_vocab", tgt_vocab)):
        if _checks.size(value, name) <= EOS + 1:
            raise ValueError(f"{name} must exceed the 3 special tokens (PAD, BOS, EOS), got {name}={value}")
    if _checks.size(d_model, "d_model") % 2 or _checks.size(num_layers, "num_layers") < 1:
        raise ValueError(f"d_model must be even (sinusoidal positions) and num_layers at least 1, "
                         f"got d_model={d_model} and num_layers={num_layers}")
    k_src, k_tgt, k_enc, k_dec = jax.random.split(key, 4)

    def blocks(key, cross_attention):  # the layers' parameters stacked on a leading axis
        layers = [transformer_block.init(k, d_model, num_heads, d_ff, cross_attention)
                  for k in jax.random.split(key, num_layers)]
        return jax.tree.map(lambda *p: jnp.stack(p), *layers)

    std = d_model**-0.5  # times sqrt(d_model) on input: unit-variance embeddings, logits of order one
    return {
        "src_embed": std * jax.random.normal(k_src, (src_vocab, d_model)),
        "tgt_embed": std * jax.random.normal(k_tgt, (tgt_vocab, d_model)),
        "encoder": blocks(k_enc, cross_attention=False),
        "decoder": blocks(k_dec, cross_attention=True),
    }


def attention_masks(src_mask, T):
    """The model's three masks (``True`` = may attend) for a source mask ``src_mask`` (S,) and T
    target positions: the encoder's (S, S) and the cross-attention's (T, S), which hide the PAD
    source positions as keys, and the decoder's causal (T, T)."""
    src_mask = jnp.asarray(src_mask) if isinstance(src_mask, list) else src_mask
    if getattr(src_mask, "ndim", None) != 1 or src_mask.dtype != jnp.bool_:
        raise ValueError(f"src_mask must be a boolean array of shape (S,), got {src_mask!r:.80}")
    return _attention_masks(src_mask, _checks.size(T, "T"))


# One compiled program per shape, rather than four eager operations that each compile.
@functools.partial(jax.jit, static_argnums=1)
def _attention_masks(src_mask, T):
    S = src_mask.shape[0]
    encoder = jnp.broadcast_to(src_mask[None, :], (S, S))  # not causal: every query sees every real token
    causal = jnp.tril(jnp.ones((T, T), bool))  # target position t reads positions 0..t
    cross = jnp.broadcast_to(src_mask[None, :], (T, S))
    return encoder, causal, cross


# The public functions check their inputs (the token ids need concrete values) and call a compiled
# core, so that calls outside jax.jit compile once per shape instead of tracing a scan every time.


def _check_params(params):
    """``params`` shaped as :func:`init` makes them, for the sizes read from the embeddings and blocks."""
    try:
        (src_vocab, d_model), tgt_vocab = params["src_embed"].shape, params["tgt_embed"].shape[0]
        L, H, _, _ = params["decoder"]["attn"]["W_o"].shape
        d_ff = params["decoder"]["mlp"][0]["W"].shape[-1]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"params must be the dict that init returns, got one without the usual shapes ({error!r})")
    return check_params(params, init, src_vocab=src_vocab, tgt_vocab=tgt_vocab, d_model=d_model, num_heads=H,
                        num_layers=L, d_ff=d_ff)


def _check_tokens(name, tokens, vocab, length, *, ndim=1, eos=False):
    """Integer token ids of shape ``length``; when concrete, below ``vocab`` and (with ``eos``) each
    sentence holding an EOS. Under jit an id out of range would read a clamped embedding row."""
    tokens = _checks.int_array(tokens, name, ndim=ndim, what=f" {length}")
    if tokens.shape[-1] < 1:
        raise ValueError(f"{name} must have shape {length} with at least one token, got shape {tokens.shape}")
    _checks.check_range(tokens, name, 0, vocab)
    # NumPy: a concrete check compiles nothing (jnp here compiled three programs for every shape).
    if eos and _checks.is_concrete(tokens) and not np.all(np.any(np.asarray(tokens) == EOS, axis=-1)):
        raise ValueError(f"{name} must end every sentence with EOS = {EOS}, got one without it "
                             f"(shape {tokens.shape})")
    return tokens


def _check_src_mask(src_mask, S):
    if src_mask.shape != (S,) or src_mask.dtype != jnp.bool_:
        raise ValueError(f"src_mask must be boolean of shape (S,) = ({S},), got shape {src_mask.shape} "
                         f"and dtype {src_mask.dtype}")


def _given_src_mask(src_mask, S):
    """``None`` (the core then takes ``src != PAD``), or the checked mask (S,) as it came: an array goes
    to the compiled core unconverted (a NumPy array needs no program of its own to be read there)."""
    if src_mask is None:
        return None
    if not (hasattr(src_mask, "shape") and hasattr(src_mask, "dtype")):
        src_mask = jnp.asarray(src_mask)
    _check_src_mask(src_mask, S)
    return src_mask


def _embed(table, tokens):
    d_model = table.shape[1]
    return jnp.sqrt(jnp.float32(d_model)) * table[tokens] + sinusoidal_encoding(tokens.shape[0], d_model)


def _scan_blocks(blocks, x, mask, context=None, context_mask=None):
    """Post-norm blocks applied in turn to ``x``, scanned over the stacked layers."""

    def layer(h, block):
        return transformer_block.apply(block, h, mask, norm="post", context=context,
                                       context_mask=context_mask), None

    return jax.lax.scan(layer, x, blocks)[0]


@jax.jit
def _encode(params, src, src_mask):
    src_mask = src != PAD if src_mask is None else src_mask
    mask, _, _ = attention_masks(src_mask, 1)  # (S, S)
    return _scan_blocks(params["encoder"], _embed(params["src_embed"], src), mask)


def encode(params, src, src_mask=None):
    """The memory (S, d_model): every source position after the bidirectional encoder.

    ``src_mask`` (S,), ``True`` for real tokens, defaults to ``src != PAD``; padded positions are
    hidden as keys, so the rows of the real tokens do not depend on them.
    """
    _check_params(params)
    src = _check_tokens("src", src, params["src_embed"].shape[0], "(S,)", eos=True)
    # The mask goes to the core as it came (None too): under jax.jit, encode is one call of _encode.
    return _encode(params, src, _given_src_mask(src_mask, src.shape[0]))


@jax.jit
def _decode(params, memory, tgt_in, src_mask):
    _, causal, cross = attention_masks(src_mask, tgt_in.shape[0])  # (T, T), (T, S)
    h = _scan_blocks(params["decoder"], _embed(params["tgt_embed"], tgt_in), causal, memory, cross)
    return h @ params["tgt_embed"].T  # output layer tied to the target embeddings: (T, tgt_vocab)


def _check_decoder_inputs(params, memory, tgt_in, src_mask):
    _check_params(params)
    tgt_in = _check_tokens("tgt_in", tgt_in, params["tgt_embed"].shape[0], "(T,)")
    d_model = params["tgt_embed"].shape[1]
    memory = _checks.float_array(memory, "memory", ndim=2, what=f" (S, d_model) = (S, {d_model})")
    _checks.same_shape(memory, "memory", (memory.shape[0], d_model), expected_from="(S, d_model)")
    src_mask = jnp.ones((memory.shape[0],), bool) if src_mask is None else jnp.asarray(src_mask)
    _check_src_mask(src_mask, memory.shape[0])
    return memory, tgt_in, src_mask


def decode(params, memory, tgt_in, src_mask=None):
    """Logits (T, tgt_vocab) of the next target token at every position of ``tgt_in`` (T,).

    Self-attention is causal (position t reads ``tgt_in[:t + 1]``); cross-attention reads the
    ``memory`` (S, d_model) rows where ``src_mask`` (S,) is ``True`` (all of them by default).
    """
    memory, tgt_in, src_mask = _check_decoder_inputs(params, memory, tgt_in, src_mask)
    return _decode(params, memory, tgt_in, src_mask)


def apply(params, src, tgt_in, src_mask=None):
    """Teacher-forced logits (T, tgt_vocab): encode ``src`` (S,), decode the given ``tgt_in`` (T,)."""
    _check_params(params)
    tgt_in = _check_tokens("tgt_in", tgt_in, params["tgt_embed"].shape[0], "(T,)")  # before the encoder runs
    src = _check_tokens("src", src, params["src_embed"].shape[0], "(S,)", eos=True)
    src_mask = src != PAD if src_mask is None else jnp.asarray(src_mask)
    return decode(params, encode(params, src, src_mask), tgt_in, src_mask)


@jax.jit
def _cross_attention(params, src, tgt_in, src_mask):
    src_mask = src != PAD if src_mask is None else src_mask
    return _cross_weights(params, _encode(params, src, src_mask), tgt_in, src_mask)


@jax.jit
def _cross_weights(params, memory, tgt_in, src_mask):
    _, causal, cross = attention_masks(src_mask, tgt_in.shape[0])

    def layer(h, block):  # the post-norm decoder block, keeping its cross-attention weights
        ln, c = block["ln_attn"], block["cross"]
        a = layer_norm(h + multi_head.apply(block["attn"], h, mask=causal), ln["scale"], ln["bias"])
        q = multi_head.project(c["W_q"], c["b_q"], a)  # (H, T, D): the queries of the cross-attention
        k = multi_head.project(c["W_k"], c["b_k"], memory)  # (H, S, D)
        h = transformer_block.apply(block, h, causal, norm="post", context=memory, context_mask=cross)
        return h, attention_weights(q, k, cross)  # (H, T, S)

    return jax.lax.scan(layer, _embed(params["tgt_embed"], tgt_in), params["decoder"])[1]  # (L, H, T, S)


def cross_attention_weights(params, src, tgt_in, src_mask=None):
    """The cross-attention weights of every decoder layer and head, shape (L, H, T, S).

    Row t shows how much target position t reads each source position: PAD columns are zero and
    every row sums to one.
    """
    _check_params(params)
    src = _check_tokens("src", src, params["src_embed"].shape[0], "(S,)", eos=True)
    tgt_in = _check_tokens("tgt_in", tgt_in, params["tgt_embed"].shape[0], "(T,)")
    # One compiled core, encoder included, taking the inputs as they come: under jax.jit, this function
    # is one call of it (the jit check compiles nothing more).
    return _cross_attention(params, src, tgt_in, _given_src_mask(src_mask, src.shape[0]))


def shift_right(tgt, bos=BOS):
    """The decoder's input for target ``tgt`` (T,): ``bos`` then ``tgt`` without its last token."""
    tgt = _checks.int_array(tgt, "tgt", ndim=1, what=" (T,)")
    return _shift_right(tgt, bos)


@jax.jit
def _shift_right(tgt, bos):
    return jnp.concatenate([jnp.full((1,), bos, tgt.dtype), tgt[:-1]])


@jax.jit
def _loss(params, src, tgt):
    tgt_in = jax.vmap(shift_right)(tgt)  # (B, T): teacher forcing
    logits = jax.vmap(apply, in_axes=(None, 0, 0))(params, src, tgt_in)  # (B, T, V)
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(log_p, tgt[..., None].astype(jnp.int32), axis=-1)[..., 0]  # (B, T)
    real = tgt != PAD
    return jnp.sum(jnp.where(real, nll, 0.0)) / jnp.maximum(jnp.sum(real), 1)


def _check_pairs(params, src, tgt, batch="B"):
    _check_params(params)
    src = _check_tokens("src", src, params["src_embed"].shape[0], f"({batch}, S)", ndim=2, eos=True)
    tgt = _check_tokens("tgt", tgt, params["tgt_embed"].shape[0], f"({batch}, T)", ndim=2, eos=True)
    if src.shape[0] != tgt.shape[0]:
        raise ValueError(f"src and tgt must have shapes ({batch}, S) and ({batch}, T), got {src.shape} and {tgt.shape}")
    return src, tgt


def loss(params, src, tgt):
    """Mean cross-entropy of the real target tokens of a batch ``src`` (B, S), ``tgt`` (B, T).

    PAD targets are left out; the mean is over the real tokens of the whole batch.
    """
    src, tgt = _check_pairs(params, src, tgt)
    return _loss(params, src, tgt)


@jax.jit
def _greedy_steps(params, memory, src_mask, start, eos):
    def step(carry, t):
        tokens_in, done = carry
        logits = _decode(params, memory, tokens_in, src_mask)[t]  # (V,): later positions are not read
        token = jnp.where(done, PAD, jnp.argmax(logits)).astype(tokens_in.dtype)
        tokens_in = tokens_in.at[t + 1].set(token, mode="drop")  # the next step's input
        return (tokens_in, done | (token == eos)), (token, logits)

    return jax.lax.scan(step, (start, jnp.bool_(False)), jnp.arange(start.shape[0]))[1]


def greedy_translate(params, src, max_len, bos=BOS, eos=EOS, src_mask=None):
    """Greedy translation of ``src`` (S,) into ``max_len`` tokens, PAD after the first ``eos``.

    The source is encoded once; a :func:`jax.lax.scan` over positions runs the decoder on the
    tokens written so far and writes its most probable next token. Returns the tokens (max_len,)
    and the logits (max_len, tgt_vocab) of each step.
    """
    max_len = _checks.size(max_len, "max_len")
    _check_params(params)
    src = _check_tokens("src", src, params["src_embed"].shape[0], "(S,)", eos=True)
    src_mask = _given_src_mask(src_mask, src.shape[0])
    # One compiled core, encoder included, built for the token ids bos and eos when they are integers
    # (under jax.jit, this function is then one call of it); a traced bos or eos goes to a core that
    # takes them as arguments.
    if all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in (bos, eos)):
        return _greedy_translate(params, src, src_mask, max_len, int(bos), int(eos))
    return _greedy_translate_traced(params, src, src_mask, max_len, bos, eos)


def _greedy(params, src, src_mask, max_len, bos, eos):
    src_mask = src != PAD if src_mask is None else src_mask
    memory = _encode(params, src, src_mask)
    start = jnp.full((max_len,), PAD, src.dtype).at[0].set(bos)  # BOS, then slots for the output
    return _greedy_steps(params, memory, src_mask, start, eos)


_greedy_translate = jax.jit(_greedy, static_argnums=(3, 4, 5))
_greedy_translate_traced = jax.jit(_greedy, static_argnums=3)


def translation_task(key, batch_size, max_words, vocab):
    """A batch of sentence pairs of 1 to ``max_words`` words: ``src`` and ``tgt``, each
    (batch_size, max_words + 1), ending with EOS and padded with PAD.

    The target is the source reversed, each word ``w`` (``3 <= w < vocab``) translated to
    ``vocab + 2 - w``: the dictionary read backwards.
    """
    batch_size = _checks.size(batch_size, "batch_size")
    if _checks.size(vocab, "vocab") <= EOS + 1 or _checks.size(max_words, "max_words") < 1:
        raise ValueError(f"vocab must exceed 3 and max_words be at least 1, got vocab={vocab}, max_words={max_words}")
    return _translation_task(key, batch_size, _checks.size(max_words, "max_words"), _checks.size(vocab, "vocab"))


# One compiled program for the draws and the layout, rather than a dozen eager operations.
@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _translation_task(key, batch_size, max_words, vocab):
    k_len, k_words = jax.random.split(key)
    lengths = jax.random.randint(k_len, (batch_size, 1), 1, max_words + 1)  # (B, 1)
    words = jax.random.randint(k_words, (batch_size, max_words + 1), EOS + 1, vocab)
    pos = jnp.arange(max_words + 1)[None, :]  # (1, max_words + 1)
    reversed_words = jnp.take_along_axis(words, jnp.clip(lengths - 1 - pos, 0, max_words), axis=1)

    def layout(w):
        return jnp.where(pos < lengths, w, jnp.where(pos == lengths, EOS, PAD))

    return layout(words), layout(vocab + EOS - reversed_words)


def train(key, params, src, tgt, *, steps, batch_size, learning_rate=5e-3):
    """Adam on mini-batches drawn from the corpus ``src`` (N, S), ``tgt`` (N, T).

    Returns the parameters and the loss of each step, shape (steps,).
    """
    src, tgt = _check_pairs(params, src, tgt, batch="N")
    steps, batch_size = _checks.size(steps, "steps"), _checks.size(batch_size, "batch_size")
    opt = adam(_checks.positive(learning_rate, "learning_rate"))

    def step(carry, k):
        params, state = carry
        batch = jax.random.randint(k, (batch_size,), 0, src.shape[0])  # drawn with replacement
        value, grads = jax.value_and_grad(_loss)(params, src[batch], tgt[batch])
        updates, state = opt.update(grads, state)
        return (apply_updates(params, updates), state), value

    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, steps))
    return params, losses
