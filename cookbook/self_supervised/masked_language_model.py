r"""Masked language model
=====================

Learn a representation of text without labels by hiding some tokens of a sentence and predicting
them from both sides: BERT's pre-training objective, to reach for when a model must understand a
whole sentence rather than continue it.

Equation
--------

.. math::

   \mathcal{S} \subset \{1, \dots, T\},\ |\mathcal{S}| = \operatorname{round}(0.15\, T), \qquad
   \tilde{x}_t = \begin{cases}
     [\mathrm{MASK}] & t \in \mathcal{S},\ u_t < 0.8 \\
     r_t \sim \mathcal{U}\{0, \dots, V - 1\} & t \in \mathcal{S},\ 0.8 \le u_t < 0.9 \\
     x_t & \text{otherwise}
   \end{cases}

   z = f_\theta(\tilde{x}_1, \dots, \tilde{x}_T), \qquad
   \mathcal{L} = -\frac{1}{|\mathcal{S}|} \sum_{t \in \mathcal{S}}
   \log \operatorname{softmax}(z_t)_{x_t}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`, :math:`T`, :math:`V`
     - a sentence of token ids; its length; the size of the vocabulary (ids ``0 .. V - 1``)
     - ``tokens``; ``T``; ``vocab_size``
     - ``(T,)``
   * - :math:`\mathcal{S}`
     - the selected positions, a uniformly random subset of 15 % of them
     - ``selected``, true on them
     - ``(T,)``
   * - :math:`u_t`, :math:`r_t`
     - a uniform number that picks what replaces a selected token; a random token
     - ``u``, ``random_tokens``
     - ``(T,)``
   * - :math:`[\mathrm{MASK}]`
     - the mask token, an id of its own after the vocabulary
     - ``mask_id`` (:math:`= V`)
     - scalar
   * - :math:`\tilde{x}`
     - the corrupted sentence the model reads
     - ``inputs``
     - ``(T,)``
   * - :math:`f_\theta`, :math:`z`
     - the encoder (embeddings, learned positions, pre-norm transformer blocks without a causal
       mask, a linear head); its logits
     - ``apply``; ``logits``
     - ``(T, V)``
   * - :math:`\mathcal{L}`
     - the cross-entropy on the selected positions only
     - the value returned by ``masked_token_loss``
     - scalar

Explanation
-----------

A language model that predicts the next token (:doc:`/docs/chapters/transformers/gpt`) may look
only to the left; BERT :footcite:`devlin2019bert` wants a representation of each token that uses
the whole sentence, so it trains an encoder without a causal mask on a cloze test. It *selects*
15 % of the positions and asks for the original token at each; the loss ignores the others, whose
answers are in plain sight.

**The 80/10/10 rule.** A selected token is replaced by ``[MASK]`` 80 % of the time, by a random
token 10 % of the time, and left unchanged 10 % of the time. If selected tokens were always
``[MASK]``, the model would learn that only ``[MASK]`` positions need a good prediction, and
``[MASK]`` never occurs when the pre-trained encoder is used. The random and the unchanged tokens
make every position a possible question: the model cannot trust an ordinary token blindly (it may be
a random one), so it keeps a contextual representation of every position, and since the
unchanged ones are the right answer, the representation stays anchored to the token actually
there. Random replacements happen to 1.5 % of all tokens, too few to harm the model's
understanding of language.

**Bidirectional.** Every position attends to every other, so the prediction at a masked
position depends on tokens to its right as much as to its left: the property the tests check. The
price is that only 15 % of the positions teach anything in each sentence, where a left-to-right
model learns from all of them.

.. admonition:: Intuition

   The cloze test of reading comprehension :footcite:`taylor1953cloze`: a passage with words
   blanked out, which a reader fills in from what comes before and after the gap. A gap is only
   fillable by someone who understood the passage, and a few of the words left standing are
   deliberately wrong, so the reader must check them too rather than skim.

Inductive bias
--------------

The objective assumes that a token is predictable from its context on both sides, and that what
makes it predictable (syntax, agreement, meaning) is what a downstream task needs. The encoder
that learns it assumes nothing of order beyond the learned positions, and nothing of locality: on
the mirrored sentences of the tests, the token that answers a gap sits at the other end of the
sentence, which attention reaches as easily as a neighbour. It cannot generate text left to right
without further training, since it never learned to predict a token from its left alone.

Example
-------

A sentence of the mirrored grammar, the corrupted copy a model reads, and the loss of a small
encoder on the selected positions:

>>> import jax, numpy as np
>>> from cookbook.self_supervised.masked_language_model import (
...     apply, init, mask_tokens, masked_token_loss, mirror_sentences, mlm_loss)
>>> tokens = mirror_sentences(np.random.default_rng(0), 1, half=5, vocab_size=8)[0]
>>> tokens
array([2, 0, 0, 0, 4, 4, 0, 0, 0, 2])
>>> inputs, selected = mask_tokens(jax.random.key(1), tokens, vocab_size=8)
>>> int(selected.sum())  # round(0.15 * 10) = 2 positions selected
2
>>> bool((inputs[~selected] == tokens[~selected]).all())  # the others never change
True
>>> params = init(jax.random.key(2), vocab_size=8, max_len=10, d_model=32, num_heads=4, num_layers=2)
>>> logits = apply(params, inputs)
>>> logits.shape
(10, 8)
>>> round(float(masked_token_loss(logits, tokens, selected)), 4)  # log 8 at initialisation
2.0794
>>> round(float(mlm_loss(params, jax.random.key(1), tokens)), 4)
2.0794

Implementation notes
--------------------

BERT-Base has 12 blocks of width 768 and a vocabulary of 30 000 word pieces, and selects 15 %
of up to 512 tokens; its data script selects a fixed number per sentence, as here, and draws the
random token from the whole vocabulary. It also trains on next-sentence prediction, which later
work dropped :footcite:`liu2019roberta`. The blocks here are the pre-norm ones of
:doc:`/docs/chapters/transformers/transformer_block`, with no mask; the head starts at zero, so
the first loss is :math:`\log V`.

**It learns.** The test grammar mirrors a random first half, :math:`x_{T+1-t} = x_t`, the first
half drawn from a Zipf distribution over :math:`V = 8` tokens, :math:`T = 10`. Predicting the
commonest token is right 37 % of the time at the selected positions (1 / (1 + 1/2 + ... + 1/8));
an encoder of width 32 with 2 blocks trained for 150 Adam steps on batches of 64 predicts 92 % of
them in fresh sentences
(the test asks for at least 0.8), near the ceiling that the rule leaves (a gap whose mirror is
also selected can only be guessed). A gap in the first half is answered by its mirror, which
stands to its right: the trained encoder's prediction follows whatever token stands there.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks
from cookbook.transformers import transformer_block
from cookbook.transformers._boundary import check_params
from cookbook.self_supervised.masked_autoencoder import draw_weights  # init's weights in one random call

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "mask_tokens": ("vocab_size", "select_rate"),
    "apply": (),
    "masked_token_loss": (),
    "mlm_loss": ("select_rate",),
}
#: A sentence of any length T is a valid input (up to the model's max_len).
FREE_LENGTH = {"mask_tokens": ("tokens",), "apply": ("tokens",), "mlm_loss": ("tokens",)}

MASK_SHARE, RANDOM_SHARE = 0.8, 0.1  # of the selected tokens; the remaining 0.1 stay unchanged


def mirror_sentences(rng, num, *, half, vocab_size):
    """``num`` sentences (num, 2 half) of the mirrored grammar S -> a S a | (empty): a first half of
    ``half`` tokens drawn independently from a Zipf distribution (p(k) proportional to 1/(k+1))
    over ``vocab_size`` ids, then the same tokens in reverse order. ``rng`` is a NumPy Generator."""
    num, half, V = _checks.size(num, "num"), _checks.size(half, "half"), _checks.size(vocab_size, "vocab_size")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    p = 1.0 / np.arange(1, V + 1)
    first = rng.choice(V, size=(num, half), p=p / p.sum())
    return np.concatenate([first, first[:, ::-1]], axis=1)


def _tokens(tokens, name, high):
    tokens = _checks.int_array(tokens, name, ndim=1, what=" (T,)")
    if tokens.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one token, got shape {tuple(tokens.shape)}")
    return _checks.check_range(tokens, name, 0, high)


def _num_selected(T, select_rate):
    if isinstance(select_rate, bool) or not isinstance(select_rate, (int, float)) or not 0 < select_rate <= 1:
        raise ValueError(f"select_rate must be a number in (0, 1], got {select_rate!r}")
    return max(1, int(round(select_rate * T)))


def mask_tokens(key, tokens, *, vocab_size, select_rate=0.15):
    """Corrupt a sentence ``tokens`` (T,) of ids in ``0 .. vocab_size - 1`` by BERT's rule:
    ``(inputs, selected)``, the corrupted sentence (T,) and a boolean mask (T,) true on the
    round(select_rate T) (at least one) selected positions, of which each independently became the
    mask id ``vocab_size`` with probability 0.8, a uniformly random id with probability 0.1, or
    stayed itself."""
    V = _checks.size(vocab_size, "vocab_size")
    tokens = _tokens(tokens, "tokens", V)
    return _mask_tokens(key, tokens, V, _num_selected(tokens.shape[0], select_rate))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _mask_tokens(key, tokens, V, S):
    k_select, k_rule, k_random = jax.random.split(key, 3)
    T = tokens.shape[0]
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(k_select, (T,))))  # a random permutation's ranks
    selected = rank < S  # exactly S positions, every subset equally likely
    u = jax.random.uniform(k_rule, (T,))
    random_tokens = jax.random.randint(k_random, (T,), 0, V)
    mask_id = V
    replaced = jnp.where(u < MASK_SHARE, mask_id, jnp.where(u < MASK_SHARE + RANDOM_SHARE, random_tokens, tokens))
    return jnp.where(selected, replaced, tokens).astype(tokens.dtype), selected


def init(key, *, vocab_size, max_len, d_model, num_heads, num_layers):
    """Token embeddings for ``vocab_size`` ids and the mask id, learned positions for ``max_len``
    tokens, ``num_layers`` pre-norm blocks (perceptrons four times ``d_model`` wide) and a linear head
    to ``vocab_size`` logits, started at zero."""
    V, max_len = _checks.size(vocab_size, "vocab_size", minimum=2), _checks.size(max_len, "max_len")
    d_model, num_heads = _checks.size(d_model, "d_model"), _checks.size(num_heads, "num_heads")
    if d_model % num_heads:
        raise ValueError(f"num_heads must divide d_model, got d_model={d_model} and num_heads={num_heads}")
    return _init(key, V, max_len, d_model, num_heads, _checks.size(num_layers, "num_layers"))


def _init(key, V, max_len, D, H, L):
    shapes = jax.eval_shape(lambda: {  # the tree of init's arrays, traced, never computed
        "tok": jnp.zeros((V + 1, D)),  # row V is the mask token's
        "pos": {"P": jnp.zeros((max_len, D))},
        "stack": transformer_block._init_stack(jax.random.key(0), L, D, H, 4 * D),
        "head": {"W": jnp.zeros((D, V)), "b": jnp.zeros((V,))},
    })
    # tokens and positions at the same small scale, as init_learned draws positions; the head at zero
    return draw_weights(key, shapes, {"tok": 0.02, "pos/P": 0.02, "head/W": 0.0})


def _check_params(params):
    """``params`` shaped as :func:`init` makes them; returns (vocab_size, max_len)."""
    try:
        V, D = params["head"]["W"].shape[1], params["tok"].shape[1]
        max_len = params["pos"]["P"].shape[0]
        L, H = params["stack"]["blocks"]["attn"]["W_o"].shape[:2]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"params must be the dict that init returns, got one without the usual shapes ({error!r})")
    try:
        check_params(params, init, vocab_size=V, max_len=max_len, d_model=D, num_heads=H, num_layers=L)
    except (ValueError, TypeError) as error:
        if "params" in str(error):
            raise
        raise ValueError(f"params must be the dict that init returns; its shapes give no valid model ({error})") from None
    return V, max_len


def _sentence(params, tokens, name="tokens", high_offset=1):
    V, max_len = _check_params(params)
    tokens = _tokens(tokens, name, V + high_offset)
    if tokens.shape[0] > max_len:
        raise ValueError(f"{name} must have at most max_len={max_len} tokens, got shape {tuple(tokens.shape)}")
    return V, tokens


def apply(params, tokens):
    """Logits (T, V) over the vocabulary at every position of ``inputs``-like ``tokens`` (T,), ids in
    ``0 .. V`` (V is the mask id); every position attends to every other. One sentence; batch with
    :func:`jax.vmap`."""
    _, tokens = _sentence(params, tokens)
    return _apply(params, tokens)


@jax.jit
def _apply(params, tokens):
    T = tokens.shape[0]
    x = params["tok"][tokens] + params["pos"]["P"][:T]  # (T, d_model), both (T, d_model)
    h = transformer_block._apply_stack(params["stack"], x, None, "pre")  # no mask: both directions
    return h @ params["head"]["W"] + params["head"]["b"][None, :]  # (T, V)


def masked_token_loss(logits, targets, selected):
    """The mean cross-entropy of ``logits`` (T, V) against the original ``targets`` (T,) over the
    ``selected`` positions (T,) only; in float32 at least."""
    logits = _checks.float_array(logits, "logits", ndim=2, what=" (T, V)")
    targets = _checks.int_array(targets, "targets", ndim=1, what=" (T,)")
    _checks.same_shape(targets, "targets", logits.shape[:1], expected_from="one per row of logits")
    targets = _checks.check_range(targets, "targets (ids of the columns of logits)", 0, logits.shape[1])
    selected = _checks._as_array(selected, "selected")
    if selected.dtype != jnp.bool_:
        raise TypeError(f"selected must be a boolean array, got dtype {selected.dtype}")
    _checks.same_shape(selected, "selected", logits.shape[:1], expected_from="one per row of logits")
    return _masked_token_loss(logits, targets, selected)


@jax.jit
def _masked_token_loss(logits, targets, selected):
    log_p = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)  # max subtracted
    nll = -jnp.take_along_axis(log_p, targets[:, None], axis=1)[:, 0]  # (T,)
    return jnp.sum(jnp.where(selected, nll, 0.0)) / jnp.maximum(jnp.sum(selected), 1)


def mlm_loss(params, key, tokens, *, select_rate=0.15):
    """BERT's loss on one sentence ``tokens`` (T,): ``mask_tokens`` with ``key``, ``apply`` on the
    corrupted sentence, and ``masked_token_loss`` against the original tokens."""
    V, tokens = _sentence(params, tokens, high_offset=0)
    return _mlm_loss(params, key, tokens, _num_selected(tokens.shape[0], select_rate))


@functools.partial(jax.jit, static_argnums=3)
def _mlm_loss(params, key, tokens, S):
    V = params["head"]["W"].shape[1]
    inputs, selected = _mask_tokens(key, tokens, V, S)
    return _masked_token_loss(_apply(params, inputs), tokens, selected)
