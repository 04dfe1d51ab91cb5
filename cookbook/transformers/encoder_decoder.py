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

where every attention, from queries :math:`a` to keys and values :math:`c`, is

.. math::

   \operatorname{Attn}(a, c; M) = \operatorname{softmax}\Big(\frac{(a W^{Q})(c W^{K})^\top}{\sqrt{D}}
   + M\Big)\, c W^{V}, \qquad
   M^{\text{pad}}_{tj} = \begin{cases} 0 & x_j \ne \text{PAD} \\ -\infty & x_j = \text{PAD} \end{cases},
   \qquad
   M^{\text{causal}}_{ts} = \begin{cases} 0 & s \le t \\ -\infty & s > t \end{cases}

(per head, the heads concatenated and projected, :doc:`/docs/chapters/attention/multi_head`), and
the loss is the cross-entropy of the :math:`N` real target tokens:

.. math::

   \mathcal{L} = -\frac{1}{N} \sum_{t \,:\, y_t \ne \text{PAD}} \log \operatorname{softmax}(z_t)_{y_t}

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
     - a source position; a target position read by :math:`t`; a target position; the target length
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
   * - :math:`W^{Q}`, :math:`W^{K}`, :math:`W^{V}`
     - query, key and value projections of one head, separate in every sub-layer
     - ``block["attn"]``, ``block["cross"]``: ``"W_q"``, ``"W_k"``, ``"W_v"``
     - ``(d_model, H, D)`` for all heads
   * - :math:`D`
     - features per head, ``d_model // num_heads``
     - ``D``
     - scalar
   * - :math:`M`
     - additive mask, row = query, column = key: :math:`-\infty` hides a PAD source key or a later
       target position
     - ``attention_masks(src_mask, T)``: ``encoder``, ``causal``, ``cross`` (booleans, ``True`` =
       may attend)
     - ``(S, S)``, ``(T, T)``, ``(T, S)``
   * - :math:`L`
     - number of layers of the encoder, and of the decoder
     - ``num_layers``
     - scalar
   * - :math:`N`
     - number of real (non-PAD) target tokens in the batch
     - ``jnp.sum(tgt != PAD)``
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
transformer as a translation model with exactly this shape, and with it beat the best recurrent and
convolutional translation systems of the time on English-to-German and English-to-French, at a
fraction of their training cost; the decoder-only and encoder-only models that followed are its two
halves. The *encoder* is a stack of :doc:`transformer_block` layers without a causal mask: every
source position reads every other one, before and after it, so its output row :math:`m_j` describes
the token :math:`x_j` in the context of the whole sentence. The *decoder* is a stack of blocks with
three sub-layers: causal self-attention over the target written so far (as in :doc:`gpt`), then
*cross-attention*, whose queries come from the decoder's stream and whose keys and values come from
the encoder's memory, then the perceptron. Cross-attention is where the two languages meet: at each
target position the decoder asks "which source words matter now?" and takes a weighted average of
their memory rows. The memory is computed once per sentence and read by every decoder layer at every
step.

**Why this beats the recurrent encoder-decoder.** The recurrent :doc:`sequence-to-sequence model
</docs/chapters/recurrent/seq2seq>` :footcite:`sutskever2014sequence,cho2014learning` passes the whole source to the decoder through one vector, the encoder's last state, whose size is
fixed whatever the sentence's length: long sentences must be squeezed through it, and the first
source words have travelled through every recurrent step before the decoder sees them.
:footcite:t:`bahdanau2015neural` let a recurrent decoder attend to every encoder state, which
removed that bottleneck; the transformer keeps the attention and drops the recurrence. Any target
position is then one attention step away from any source position, whatever their distance, and
every position of the encoder, and of the decoder during training, is computed in parallel instead
of one after the other. The price is memory and compute that grow with the product of the source and
target lengths, where the recurrent decoder needed one fixed-size state.

**Teacher forcing and the shift by one.** During training the whole target is known, so the
decoder's input is the target itself, shifted right by one: :math:`\tilde{y} = (\text{BOS}, y_1,
\dots, y_{T-1})` (``shift_right``). Under the causal mask, position :math:`t` reads BOS and
:math:`y_1, \dots, y_{t-1}` and predicts :math:`y_t`, which it never sees, so all :math:`T`
predictions come from one pass, each made from the true prefix rather than from the model's own
guesses :footcite:`williams1989learning`. At test time the prefix is the model's own output:
``greedy_translate`` encodes the source once, then a :func:`jax.lax.scan` over positions runs the
decoder on the tokens written so far and appends its most probable next token, padding everything
after the first EOS. Each step recomputes the decoder over the whole prefix (:math:`O(T^2)` work
per token), which keeps the code short; the key-value cache of :doc:`gpt` would make each step
:math:`O(T)`, and the keys and values of the memory could likewise be projected once. The tests
check that every step's logits are those of the teacher-forced ``apply`` on the translation's own
tokens, which is what makes the two modes the same model.

**Padding.** Sentences in a batch have different lengths, so they are padded with PAD to a common
one, and PAD must change nothing. In the encoder and in cross-attention, PAD source positions are
hidden *as keys* (:math:`M^{\text{pad}}`, added as the most negative float before the softmax):
no real position reads them, so the memory rows of the real tokens, and every logit, are the same
whatever the padding holds (the tests change it and check). The memory rows *at* PAD positions are
computed but read by nobody. The target needs no key mask: its padding comes after the real
tokens, which the causal mask already hides from them. The loss leaves out the PAD targets and
averages over the :math:`N` real tokens of the batch, so that a sentence's weight is its length
and padding cannot dilute the gradient.

**Padding, in pictures.** The figure draws the three masks of the model for a source of four
words, EOS and two PAD, and a target of five positions (dark: the query may read the key). The
encoder's is full but for the PAD columns, the decoder's own is causal, and the cross-attention's
lets every target position read every real source position.

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

**A small translation task.** The "language pair" has 8 words (tokens 3 to 10 of a vocabulary of
11, after PAD = 0, BOS = 1 and EOS = 2). A target sentence is the source read backwards, each word
:math:`w` replaced by its dictionary entry :math:`13 - w`, so neither copying nor a word-by-word
map solves it: the :math:`n`-th word of the translation must be read from the :math:`n`-th source
word before EOS, wherever that EOS is. Sentences have 1 to 6 words. A model with one layer in each
stack, ``d_model = 32`` and 4 heads, trained by :doc:`Adam </docs/chapters/optimization/adam>` for
1000 steps of 32 pairs drawn from a corpus of 8000, translates exactly 123 of 128 held-out
sentences (96.1%; none of them is in the corpus) and gets 98.8% of their tokens right (the test
asserts at least 90% and 97%); its five mistakes are on the longest sentences. Its cross-attention has learned
the alignment: averaged over heads, the :math:`n`-th target word puts 76% of its attention, on
average, on the :math:`n`-th source word from the end (at least 66% in every held-out sentence,
where uniform attention would give at most 50%), the anti-diagonal of the reversal, found from the
sentence pairs alone.

*Numerical traps.* Masked scores use ``jnp.finfo(float32).min``, never :math:`-\infty` itself, so a
row with nothing to attend to gives zeros instead of NaN
(:doc:`/docs/chapters/attention/scaled_dot_product`); the softmax and the log-softmax of the loss
run in float32, and the loss divides by :math:`\max(N, 1)`. Embeddings are drawn with standard
deviation :math:`d^{-1/2}` and multiplied by :math:`\sqrt{d}`, as in the paper: the inputs then have
the scale of the positional encodings, and the tied output layer starts with logits of order one.

**What this recipe keeps from the paper, and what it drops.** It keeps the post-norm layers, the
sinusoidal positions, the :math:`\sqrt{d}` embedding scale, the tied output embeddings and the
masking. The paper's models were far larger (6 layers in each stack, :math:`d = 512`, 8 heads,
``d_ff = 2048`` for the base model) and shared one subword vocabulary (and so one embedding matrix)
between both languages; they were regularised with :doc:`/docs/chapters/regularization/dropout`
and :doc:`/docs/chapters/regularization/label_smoothing`, trained with a learning rate that warms
up and then decays, and decoded by beam search (:doc:`/docs/chapters/recurrent/seq2seq` shows beam
search for the recurrent model). The tiny task here needs none of that. Later encoder-decoders such
as T5 :footcite:`raffel2020exploring` moved to pre-norm layers and relative positions, the changes
discussed in :doc:`transformer_block` and the attention chapter.

Inductive bias
--------------

The model assumes that the output is a function of the *whole* input, available at once, and that
the correspondence between output and input positions (the alignment) is best found by content and
position look-ups, learned from data. It assumes no monotonic alignment and no locality, which is
why a reversal is no harder for it to express than a copy, and why it needs many examples to learn
any alignment at all. The output is assumed to factorise left to right, and both streams know only the
positions they were trained on: sentences longer than any seen in training tend to be translated
poorly, even though sinusoidal encodings are defined for every position.

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
"""

import jax
import jax.numpy as jnp

from cookbook.attention import multi_head
from cookbook.attention.positional_encoding import sinusoidal_encoding
from cookbook.attention.scaled_dot_product import attention_weights
from cookbook.normalization.layer_norm import layer_norm
from cookbook.optimization.adam import adam
from cookbook.optimization.sgd import apply_updates
from cookbook.transformers import transformer_block

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
        if value <= EOS + 1:
            raise ValueError(f"{name} must exceed the 3 special tokens (PAD, BOS, EOS), got {name}={value}")
    if d_model % 2 or num_layers < 1:
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
    S = src_mask.shape[0]
    encoder = jnp.broadcast_to(src_mask[None, :], (S, S))  # not causal: every query sees every real token
    causal = jnp.tril(jnp.ones((T, T), bool))  # target position t reads positions 0..t
    cross = jnp.broadcast_to(src_mask[None, :], (T, S))
    return encoder, causal, cross


# The public functions check their inputs (the token ids need concrete values) and call a compiled
# core, so that calls outside jax.jit compile once per shape instead of tracing a scan every time.


def _check_tokens(name, tokens, vocab, length):
    if tokens.ndim != 1 or tokens.shape[0] < 1 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"{name} must have shape ({length},) with {length} >= 1 of integer tokens, got shape "
                         f"{tokens.shape} and dtype {tokens.dtype}")
    if not isinstance(tokens, jax.core.Tracer):
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= vocab:
            raise ValueError(f"{name} must hold token ids in [0, {vocab}), got values in [{low}, {high}]")


def _check_src_mask(src_mask, S):
    if src_mask.shape != (S,) or src_mask.dtype != jnp.bool_:
        raise ValueError(f"src_mask must be boolean of shape (S,) = ({S},), got shape {src_mask.shape} "
                         f"and dtype {src_mask.dtype}")


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
    mask, _, _ = attention_masks(src_mask, 1)  # (S, S)
    return _scan_blocks(params["encoder"], _embed(params["src_embed"], src), mask)


def encode(params, src, src_mask=None):
    """The memory (S, d_model): every source position after the bidirectional encoder.

    ``src_mask`` (S,), ``True`` for real tokens, defaults to ``src != PAD``; padded positions are
    hidden as keys, so the rows of the real tokens do not depend on them.
    """
    _check_tokens("src", src, params["src_embed"].shape[0], "S")
    src_mask = src != PAD if src_mask is None else src_mask
    _check_src_mask(src_mask, src.shape[0])
    return _encode(params, src, src_mask)


@jax.jit
def _decode(params, memory, tgt_in, src_mask):
    _, causal, cross = attention_masks(src_mask, tgt_in.shape[0])  # (T, T), (T, S)
    h = _scan_blocks(params["decoder"], _embed(params["tgt_embed"], tgt_in), causal, memory, cross)
    return h @ params["tgt_embed"].T  # output layer tied to the target embeddings: (T, tgt_vocab)


def _check_decoder_inputs(params, memory, tgt_in, src_mask):
    _check_tokens("tgt_in", tgt_in, params["tgt_embed"].shape[0], "T")
    d_model = params["tgt_embed"].shape[1]
    if memory.ndim != 2 or memory.shape[1] != d_model:
        raise ValueError(f"memory must have shape (S, d_model) = (S, {d_model}), got shape {memory.shape}")
    src_mask = jnp.ones((memory.shape[0],), bool) if src_mask is None else src_mask
    _check_src_mask(src_mask, memory.shape[0])
    return src_mask


def decode(params, memory, tgt_in, src_mask=None):
    """Logits (T, tgt_vocab) of the next target token at every position of ``tgt_in`` (T,).

    Self-attention is causal (position t reads ``tgt_in[:t + 1]``); cross-attention reads the
    ``memory`` (S, d_model) rows where ``src_mask`` (S,) is ``True`` (all of them by default).
    """
    src_mask = _check_decoder_inputs(params, memory, tgt_in, src_mask)
    return _decode(params, memory, tgt_in, src_mask)


def apply(params, src, tgt_in, src_mask=None):
    """Teacher-forced logits (T, tgt_vocab): encode ``src`` (S,), decode the given ``tgt_in`` (T,)."""
    _check_tokens("tgt_in", tgt_in, params["tgt_embed"].shape[0], "T")  # before the encoder runs
    src_mask = src != PAD if src_mask is None else src_mask
    return decode(params, encode(params, src, src_mask), tgt_in, src_mask)


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
    src_mask = src != PAD if src_mask is None else src_mask
    memory = encode(params, src, src_mask)
    src_mask = _check_decoder_inputs(params, memory, tgt_in, src_mask)
    return _cross_weights(params, memory, tgt_in, src_mask)


def shift_right(tgt, bos=BOS):
    """The decoder's input for target ``tgt`` (T,): ``bos`` then ``tgt`` without its last token."""
    return jnp.concatenate([jnp.full((1,), bos, tgt.dtype), tgt[:-1]])


@jax.jit
def loss(params, src, tgt):
    """Mean cross-entropy of the real target tokens of a batch ``src`` (B, S), ``tgt`` (B, T).

    PAD targets are left out; the mean is over the real tokens of the whole batch.
    """
    if src.ndim != 2 or tgt.ndim != 2 or src.shape[0] != tgt.shape[0]:
        raise ValueError(f"src and tgt must have shapes (B, S) and (B, T), got {src.shape} and {tgt.shape}")
    tgt_in = jax.vmap(shift_right)(tgt)  # (B, T): teacher forcing
    logits = jax.vmap(apply, in_axes=(None, 0, 0))(params, src, tgt_in)  # (B, T, V)
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(log_p, tgt[..., None].astype(jnp.int32), axis=-1)[..., 0]  # (B, T)
    real = tgt != PAD
    return jnp.sum(jnp.where(real, nll, 0.0)) / jnp.maximum(jnp.sum(real), 1)


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
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got max_len={max_len}")
    src_mask = src != PAD if src_mask is None else src_mask
    memory = encode(params, src, src_mask)
    start = jnp.full((max_len,), PAD, src.dtype).at[0].set(bos)  # BOS, then slots for the output
    return _greedy_steps(params, memory, src_mask, start, eos)


def translation_task(key, batch_size, max_words, vocab):
    """A batch of sentence pairs of 1 to ``max_words`` words: ``src`` and ``tgt``, each
    (batch_size, max_words + 1), ending with EOS and padded with PAD.

    The target is the source reversed, each word ``w`` (``3 <= w < vocab``) translated to
    ``vocab + 2 - w``: the dictionary read backwards.
    """
    if vocab <= EOS + 1 or max_words < 1:
        raise ValueError(f"vocab must exceed 3 and max_words be at least 1, got vocab={vocab}, max_words={max_words}")
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
    if src.ndim != 2 or tgt.ndim != 2 or src.shape[0] != tgt.shape[0]:
        raise ValueError(f"src and tgt must have shapes (N, S) and (N, T), got {src.shape} and {tgt.shape}")
    opt = adam(learning_rate)

    def step(carry, k):
        params, state = carry
        batch = jax.random.randint(k, (batch_size,), 0, src.shape[0])  # drawn with replacement
        value, grads = jax.value_and_grad(loss)(params, src[batch], tgt[batch])
        updates, state = opt.update(grads, state)
        return (apply_updates(params, updates), state), value

    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, steps))
    return params, losses
