r"""GPT
===

A decoder-only transformer that reads a sequence and predicts, at every position, the next token
from the ones before it: the generative pre-trained transformer of :footcite:t:`radford2018improving`
and :footcite:t:`radford2019language`, the model to reach for whenever text (or any token stream)
must be generated.

Equation
--------

.. math::

   x_t = E_{w_t} + P_t, \qquad
   h = \operatorname{Blocks}_{\text{causal}}(x), \qquad
   z_t = \operatorname{LN}(h_t)\, E^\top

   p(w_{t+1} \mid w_1, \dots, w_t) = \operatorname{softmax}(z_t)_{w_{t+1}}

   \mathcal{L} = -\frac{1}{B n} \sum_{b=1}^{B} \sum_{t=T-n}^{T-1}
   \log p\big(w^{(b)}_{t+1} \mid w^{(b)}_1, \dots, w^{(b)}_t\big)

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`w_t`
     - the token at position :math:`t`, an integer below the vocabulary size ``V``
     - ``tokens[t]``
     - ``()``
   * - :math:`t`, :math:`T`
     - a position (from 1); the length of the sequence
     - ``T = tokens.shape[0]``
     - scalar
   * - :math:`b`, :math:`B`, :math:`w^{(b)}`
     - a sequence of the batch; the batch size; the tokens of sequence :math:`b`
     - row :math:`b` of ``tokens`` in ``sequence_loss``
     - ``(T,)``
   * - :math:`n`
     - how many final tokens of each sequence the loss counts (the sorted digits)
     - ``n``
     - scalar
   * - :math:`E`
     - token embeddings, one row per token of the vocabulary, also the output layer (tied)
     - ``params["tok"]``
     - ``(V, d_model)``
   * - :math:`P_t`
     - learned embedding of position :math:`t`
     - ``params["pos"]["P"][t]``
     - ``(d_model,)``
   * - :math:`x_t`
     - input of the blocks at position :math:`t`
     - ``x[t]``
     - ``(d_model,)``
   * - :math:`h`, :math:`h_t`
     - output of the pre-norm block stack under a causal mask; its row :math:`t`
     - ``h``
     - ``(T, d_model)``
   * - :math:`z_t`
     - logits of the next token after position :math:`t`
     - ``apply(params, tokens)[t]``
     - ``(V,)``
   * - :math:`p`
     - the model's probability of the next token given the prefix
     - the softmax of the logits
     - ``(V,)``
   * - :math:`\mathcal{L}`
     - mean negative log-likelihood of the last :math:`n` tokens of each sequence, over the batch
     - ``sequence_loss(params, tokens, n)``
     - ``()``

Explanation
-----------

**One model, one task: predict the next token.** The probability of a whole sequence factorises
by the chain rule into a product of next-token probabilities, so a model that predicts each token
from its prefix is a complete generative model of sequences. A transformer computes all :math:`T`
of those predictions in one pass: the :doc:`transformer_block` stack runs under a *causal* mask
(query :math:`t` may attend to keys :math:`s \le t`), so the output at position :math:`t` depends
on :math:`w_1, \dots, w_t` only and can be trained to predict :math:`w_{t+1}` without seeing it.
Training is therefore parallel over positions, and cross-entropy on the shifted sequence is the
whole objective. The model reads the first :math:`T - 1` tokens (the last one has no successor to
predict) and the loss averages over the batch and over the last :math:`n` predictions only, the
part of a sequence that the task below makes predictable; a language model on text uses
:math:`n = T - 1`. GPT :footcite:`radford2018improving` pre-trained such a decoder on raw text and
fine-tuned it; GPT-2 :footcite:`radford2019language` moved the layer norm to the input of each
sub-layer (the pre-norm block used here), added the final layer norm, and showed that a large
enough model performs tasks from the prompt alone.

.. admonition:: Intuition

   A GPT is the autocomplete of a phone keyboard taken to its limit: it only ever guesses the next
   word from the words before it, and it writes a whole message by accepting its own guess and
   guessing again. The key-value cache is a stenographer's notes: what each earlier word
   contributes is written down once and re-read at every new word, never worked out again.

**Embeddings.** Attention cannot see order, so a learned vector per position is added to each token
embedding (:doc:`/docs/chapters/attention/positional_encoding`). The output layer reuses the token
embedding matrix (*weight tying*): the logit of token :math:`v` is the dot product of the final
state with :math:`v`'s own embedding, which halves the embedding parameters and ties what a token
means as input to what predicts it as output :footcite:`press2017using,inan2017tying`.

**Generation and the key-value cache.** To generate, the model predicts a token, appends it and
predicts again. Recomputing the whole prefix at every step costs :math:`O(T^2)` per token, but
under a causal mask nothing about the earlier positions changes when a token is appended: their
keys and values are the same. ``decode_step`` therefore computes the query, key and value of the
*new* position only, writes its key and value into a cache of shape ``(L, H, max_len, D)`` at its
position, and attends over the cache with a mask that hides the slots not written yet. The logits
are exactly those of the full forward pass (the tests check every step); the cost per token drops
to one row of attention per layer, at the price of memory for the cache that grows with the
context (which :doc:`/docs/chapters/attention/grouped_query` attention shrinks).
``generate`` feeds the prompt through the same step and then its own greedy predictions back;
:doc:`sampling` replaces the greedy choice.

**Bad input.** Token ids must lie below the vocabulary size and a decoding position inside the
cache; both are checked, with a ``ValueError``, when their values are concrete. Under
:func:`jax.jit` they are traced and cannot be checked: an id out of range then reads a clamped
row of the embedding (a negative one wraps around), and a position past the cache overwrites its
last slot, in silence, so code that jits these functions must keep them in range itself.

**A tiny language: sorting.** Each sequence is :math:`n` random digits, a separator and the same
digits sorted. The first half is unpredictable, so the loss counts only the :math:`n` sorted
tokens. A two-layer model with ``d_model = 32`` learns it in a few hundred Adam steps
(:doc:`/docs/chapters/optimization/adam`): after 300 steps of 32 sequences the test reaches at
least 95% token accuracy (measured 98.9%) when generating greedily with the cache for prompts it
has not been trained on (the 9600 training sequences are under 1% of the :math:`10^6` possible
prompts). The figure shows its loss.

.. plot::

   from cookbook.transformers.gpt import sorting_run
   _, losses = sorting_run()  # the tests check this very run (shared when the book is built)
   plt.figure(figsize=(5, 3.2))
   plt.semilogy(np.asarray(losses))
   plt.xlabel("Adam step")
   plt.ylabel("cross-entropy of the sorted tokens")
   plt.title("A 2-layer GPT learns to sort 6 digits")
   plt.tight_layout()

**Numerics.** Masked scores use the most negative float and the softmax runs in float32
(:doc:`/docs/chapters/attention/scaled_dot_product`); the cross-entropy is computed from
log-softmax, never from probabilities. Small initial embeddings (standard deviation 0.02) keep the
initial logits near zero, so the first loss is close to :math:`\log V`.

Inductive bias
--------------

The causal decoder assumes that a sequence is best modelled left to right, each token a function of
its prefix, and nothing else: no grammar, no locality (any earlier token is one attention step
away), and positions learned only up to the longest length seen in training (the model cannot run
past ``max_len``). Because every task must be phrased as continuing a sequence, the same
architecture serves translation, arithmetic and sorting alike, but it must learn from data every
regularity that a task-specific model would have built in.

Example
-------

Train the page's model (the run of the figure and of the tests, ``sorting_run``), check that the
loss went down, decode with the cache, and let the trained model sort six digits:

>>> import jax, jax.numpy as jnp
>>> from cookbook.transformers.gpt import (
...     init, apply, init_cache, decode_step, generate, sorting_task, sequence_loss, train)
>>> params = init(jax.random.key(0), vocab_size=11, max_len=13, d_model=32, num_heads=4, num_layers=2,
...               d_ff=64)
>>> batch = sorting_task(jax.random.key(2), batch_size=3, n=6)
>>> batch[0]  # six digits, the separator 10, the digits sorted
Array([ 9,  2,  3,  3,  7,  6, 10,  2,  3,  3,  6,  7,  9], dtype=int32)
>>> apply(params, batch[0]).shape
(13, 11)
>>> float(sequence_loss(params, batch, n=6)) > 2.0  # about log(11) = 2.4 at the start
True
>>> trained, losses = train(jax.random.key(1), params, steps=300, batch_size=32, n=6)
>>> round(float(losses[0]), 2), round(float(losses[-1]), 3)
(2.4, 0.021)
>>> logits, cache = decode_step(params, init_cache(params, max_len=7), batch[0, 0], 0)
>>> bool(jnp.allclose(logits, apply(params, batch[0, :1])[0], atol=1e-5))
True
>>> tokens, step_logits = generate(trained, batch[0, :7], num_new=6)  # prompt: the digits, the separator
>>> tokens[7:], step_logits.shape
(Array([2, 3, 3, 6, 7, 9], dtype=int32), (12, 11))
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook._memo import cached
from cookbook.attention.multi_head import project
from cookbook.attention.positional_encoding import init_learned, learned_encoding
from cookbook.attention.scaled_dot_product import scaled_dot_product_attention
from cookbook.foundations.losses import cross_entropy
from cookbook.normalization.layer_norm import layer_norm
from cookbook.optimization.adam import adam
from cookbook.optimization.sgd import apply_updates
from cookbook.transformers import transformer_block
from cookbook.transformers._boundary import check_params

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "apply": (),
    "init_cache": ("max_len",),
    "decode_step": (),
    "generate": ("num_new",),
    "sorting_task": ("batch_size", "n", "vocab_size"),
    "sequence_loss": ("n",),
    "train": ("steps", "batch_size", "n", "learning_rate"),
}


def init(key, vocab_size, max_len, d_model, num_heads, num_layers, d_ff):
    """Token embeddings (tied to the output layer), learned positions and a pre-norm block stack."""
    if _checks.size(vocab_size, "vocab_size") < 2:
        raise ValueError(f"vocab_size must be at least 2, got vocab_size={vocab_size}")
    k_tok, k_pos, k_blocks = jax.random.split(key, 3)
    return {
        "tok": 0.02 * jax.random.normal(k_tok, (vocab_size, d_model)),
        "pos": init_learned(k_pos, _checks.size(max_len, "max_len"), d_model),
        "stack": transformer_block.init_stack(k_blocks, num_layers, d_model, num_heads, d_ff),
    }


def _check_params(params):
    """``params`` shaped as :func:`init` makes them, for the sizes read from its embeddings and blocks."""
    try:
        (V, d_model), max_len = params["tok"].shape, params["pos"]["P"].shape[0]
        L, H, _, _ = params["stack"]["blocks"]["attn"]["W_o"].shape
        d_ff = params["stack"]["blocks"]["mlp"][0]["W"].shape[-1]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"params must be the dict that init returns, got one without the usual shapes ({error!r})")
    return check_params(params, init, vocab_size=V, max_len=max_len, d_model=d_model, num_heads=H,
                        num_layers=L, d_ff=d_ff)


def _check_tokens(tokens, name, V, ndim=1, what=" (T,)"):
    """Integer token ids; when concrete, each below the vocabulary size (under jit an id out of range
    would read a clamped row of the embedding in silence)."""
    tokens = _checks.int_array(tokens, name, ndim=ndim, what=what)
    return _checks.check_range(tokens, name, 0, V)


def _logits(params, h):
    ln = params["stack"]["ln_final"]
    return layer_norm(h, ln["scale"], ln["bias"]) @ params["tok"].T  # tied: (..., V)


def apply(params, tokens):
    """Next-token logits (T, V) for integer ``tokens`` (T,): position t sees tokens 0..t only."""
    _check_params(params)
    V, max_len = params["tok"].shape[0], params["pos"]["P"].shape[0]
    tokens = _check_tokens(tokens, "tokens", V)
    if not 1 <= tokens.shape[0] <= max_len:
        raise ValueError(f"tokens must have shape (T,) with 1 <= T <= max_len={max_len}, got shape {tokens.shape}")
    return _apply(params, tokens)


# The checks run in Python; each computation below is one compiled program rather than dozens of
# eager operations that each compile on first use.
@jax.jit
def _apply(params, tokens):
    T = tokens.shape[0]
    x = params["tok"][tokens] + learned_encoding(params["pos"], T)  # (T, d_model)
    causal = jnp.tril(jnp.ones((T, T), bool))
    h = jax.lax.scan(lambda h, block: (transformer_block.apply(block, h, causal, norm="pre"), None), x,
                     params["stack"]["blocks"])[0]  # (T, d_model), the pre-norm stack of blocks
    return _logits(params, h)


def init_cache(params, max_len):
    """An empty key-value cache for ``max_len`` positions: keys and values of shape (L, H, max_len, D)."""
    _check_params(params)
    W_k = params["stack"]["blocks"]["attn"]["W_k"]  # (L, d_model, H, D)
    L, _, H, D = W_k.shape
    if not 1 <= _checks.size(max_len, "max_len") <= params["pos"]["P"].shape[0]:
        raise ValueError(f"max_len must be between 1 and the model's {params['pos']['P'].shape[0]} positions, "
                         f"got max_len={max_len}")
    return {"k": jnp.zeros((L, H, max_len, D)), "v": jnp.zeros((L, H, max_len, D))}


def decode_step(params, cache, token, position):
    """Feed one ``token`` at ``position``: returns its next-token logits (V,) and the updated cache.

    Only the new position's queries, keys and values are computed; the keys and values of the earlier
    positions are read from the cache, and the new ones are written into it at ``position``.
    """
    _check_params(params)
    if not isinstance(cache, dict) or set(cache) != {"k", "v"}:
        raise ValueError(f"cache must be the dict of 'k' and 'v' that init_cache returns, got {type(cache).__name__}")
    L, _, H, D = params["stack"]["blocks"]["attn"]["W_k"].shape
    S = jnp.shape(cache["k"])[2] if jnp.ndim(cache["k"]) == 4 else 0
    cache = {name: _checks.same_shape(_checks.float_array(cache[name], f"cache['{name}']"), f"cache['{name}']",
                                      (L, H, S, D), expected_from="(L, H, max_len, D) of init_cache")
             for name in ("k", "v")}
    token = _check_tokens(token, "token", params["tok"].shape[0], ndim=0, what=" (a scalar)")
    position = _checks.check_range(_checks.int_array(position, "position", ndim=0, what=" (a scalar)"), "position", 0, S)
    return _decode_step(params, cache, token, position)


@jax.jit
def _decode_step(params, cache, token, position):
    S = cache["k"].shape[2]
    x = (params["tok"][token] + params["pos"]["P"][position])[None, :]  # (1, d_model)
    visible = (jnp.arange(S) <= position)[None, :]  # (1, S): the positions written so far

    def layer(x, inputs):
        block, k_cache, v_cache = inputs
        a = block["attn"]
        h = layer_norm(x, block["ln_attn"]["scale"], block["ln_attn"]["bias"])
        q = project(a["W_q"], a["b_q"], h)  # (H, 1, D)
        k_cache = jax.lax.dynamic_update_slice(k_cache, project(a["W_k"], a["b_k"], h), (0, position, 0))
        v_cache = jax.lax.dynamic_update_slice(v_cache, project(a["W_v"], a["b_v"], h), (0, position, 0))
        y = scaled_dot_product_attention(q, k_cache, v_cache, visible)  # (H, 1, D)
        x = x + jnp.einsum("HTD,HDM->TM", y, a["W_o"]) + a["b_o"][None, :]
        h = layer_norm(x, block["ln_mlp"]["scale"], block["ln_mlp"]["bias"])
        x = x + transformer_block._feed_forward(block["mlp"], h)
        return x, (k_cache, v_cache)

    x, (k, v) = jax.lax.scan(layer, x, (params["stack"]["blocks"], cache["k"], cache["v"]))
    return _logits(params, x)[0], {"k": k, "v": v}


def generate(params, prompt, num_new):
    """Greedy continuation of ``prompt`` (P,) by ``num_new`` tokens with a key-value cache.

    Returns all ``P + num_new`` tokens and the logits computed at each of the first
    ``P + num_new - 1`` positions, which predict the token after it. The prompt is fed one token at a
    time through the same cached step (teacher forcing), then each prediction is fed back.
    """
    _check_params(params)
    prompt = _check_tokens(prompt, "prompt", params["tok"].shape[0], what=" (P,)")
    num_new = _checks.size(num_new, "num_new")
    P = prompt.shape[0]
    total = P + num_new
    if P < 1 or total > params["pos"]["P"].shape[0]:
        raise ValueError(f"prompt must have shape (P,) with P >= 1 and P + num_new <= max_len="
                         f"{params['pos']['P'].shape[0]}, got prompt {prompt.shape} and num_new={num_new}")
    return _generate(params, prompt, num_new)


@functools.partial(jax.jit, static_argnums=2)
def _generate(params, prompt, num_new):
    P = prompt.shape[0]
    total = P + num_new
    L, _, H, D = params["stack"]["blocks"]["attn"]["W_k"].shape
    padded = jnp.zeros((total,), prompt.dtype).at[:P].set(prompt)

    def step(carry, t):
        cache, token = carry
        logits, cache = _decode_step(params, cache, token, t)
        nxt = jnp.where(t + 1 < P, padded[t + 1], jnp.argmax(logits).astype(prompt.dtype))
        return (cache, nxt), (nxt, logits)

    cache = {"k": jnp.zeros((L, H, total, D)), "v": jnp.zeros((L, H, total, D))}  # init_cache(params, total)
    _, (tokens, logits) = jax.lax.scan(step, (cache, prompt[0]), jnp.arange(total - 1))
    return jnp.concatenate([prompt[:1], tokens]), logits


def sorting_task(key, batch_size, n, vocab_size=10):
    """A batch of sorting sequences ``a_1 .. a_n, SEP, sort(a)``: shape (batch_size, 2n + 1).

    Digits are ``0 .. vocab_size - 1`` and the separator is the token ``vocab_size``.
    """
    batch_size, n = _checks.size(batch_size, "batch_size"), _checks.size(n, "n")
    vocab_size = _checks.size(vocab_size, "vocab_size")
    return _sorting_task(key, batch_size, n, vocab_size)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _sorting_task(key, batch_size, n, vocab_size):
    digits = jax.random.randint(key, (batch_size, n), 0, vocab_size)
    sep = jnp.full((batch_size, 1), vocab_size, digits.dtype)
    return jnp.concatenate([digits, sep, jnp.sort(digits, axis=1)], axis=1)


def sequence_loss(params, tokens, n):
    """Mean cross-entropy of the predictions of the last ``n`` tokens of each sequence, tokens (B, T).

    The mean runs over the ``B * n`` predicted tokens: the batch and the last ``n`` positions.
    """
    _check_params(params)
    tokens = _check_tokens(tokens, "tokens", params["tok"].shape[0], ndim=2, what=" (B, T)")
    if not 1 <= _checks.size(n, "n") < tokens.shape[1]:
        raise ValueError(f"n must be between 1 and T - 1 = {tokens.shape[1] - 1} for tokens of shape "
                         f"{tokens.shape}, got n={n}")
    return _sequence_loss(params, tokens, n)


@functools.partial(jax.jit, static_argnums=2)
def _sequence_loss(params, tokens, n):
    logits = jax.vmap(_apply, in_axes=(None, 0))(params, tokens[:, :-1])  # (B, T - 1, V)
    return cross_entropy(logits[:, -n:], tokens[:, -n:])


def train(key, params, *, steps, batch_size, n, learning_rate=3e-3):
    """Adam on fresh batches of :func:`sorting_task`; returns the parameters and the loss of each step."""
    _check_params(params)
    steps, batch_size, n = _checks.size(steps, "steps"), _checks.size(batch_size, "batch_size"), _checks.size(n, "n")
    if 2 * n > params["pos"]["P"].shape[0]:
        raise ValueError(f"n must be at most max_len / 2 = {params['pos']['P'].shape[0] // 2} (the model reads "
                         f"2 n of the 2 n + 1 tokens), got n={n}")
    adam(_checks.positive(learning_rate, "learning_rate"))  # checks the rate, which the program below holds
    return _train(key, params, steps, batch_size, n, float(learning_rate))


@cached  # the page's figure and the tests share this run when the book is built (cookbook/_memo.py)
def sorting_run():
    """The run of the figure and of the tests: the two-layer model (``d_model = 32``, 4 heads,
    ``d_ff = 64``) initialised from ``jax.random.key(0)`` and trained for 300 Adam steps on batches of
    32 sequences of 6 digits drawn from ``jax.random.key(1)``. Returns the trained parameters and the
    loss of each step."""
    params = init(jax.random.key(0), vocab_size=11, max_len=13, d_model=32, num_heads=4, num_layers=2, d_ff=64)
    return train(jax.random.key(1), params, steps=300, batch_size=32, n=6)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _train(key, params, steps, batch_size, n, learning_rate):
    vocab_size = params["tok"].shape[0] - 1
    opt = adam(learning_rate)

    def step(carry, k):
        params, state = carry
        batch = _sorting_task(k, batch_size, n, vocab_size)
        value, grads = jax.value_and_grad(_sequence_loss)(params, batch, n)
        updates, state = opt.update(grads, state)
        return (apply_updates(params, updates), state), value

    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, steps))
    return params, losses
