r"""Beam search
===========

Decode by keeping the :math:`K` most probable partial sequences at every step instead of one: a
search between greedy decoding (:math:`K = 1`) and trying every sequence, with a length penalty so
that short outputs are not favoured merely for having fewer probabilities multiplied together.

Equation
--------

.. math::

   s(y_{1:t}) = \sum_{i=1}^{t} \log p(y_i \mid x, y_{<i}), \qquad
   B_t = \operatorname*{top-}K_{\;(b, v)\, \in\, B_{t-1} \times \mathcal{V}} \; s(b) + \log p(v \mid x, b)

   \hat y = \arg\max_{y \in B_{N}} \frac{s(y)}{\operatorname{lp}(|y|)}, \qquad
   \operatorname{lp}(n) = \left(\frac{5 + n}{6}\right)^{\alpha}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`
     - the prompt
     - ``prompt``
     - ``(P,)`` int
   * - :math:`y_{1:t}`, :math:`y_i`
     - a continuation of :math:`t` tokens; its :math:`i`-th token
     - a row of ``tokens``
     - ``(N,)`` int
   * - :math:`p(y_i \mid x, y_{<i})`
     - the model's next-token distribution
     - ``log_softmax`` of ``logits_fn``'s output
     - ``(V,)``
   * - :math:`s`
     - a sequence's total log-probability
     - ``scores``
     - ``(K,)``
   * - :math:`B_t`, :math:`K`
     - the beam after :math:`t` steps; its width
     - ``tokens`` and ``scores``; ``beam_width``
     - ``(K, N)``, ``(K,)``; integer
   * - :math:`\mathcal{V}`, :math:`v`
     - the vocabulary; a candidate next token
     - ``V``; the column of ``candidates``
     - integer; integer
   * - :math:`b`
     - a sequence in the beam
     - a row of ``tokens``
     - ``(N,)``
   * - :math:`N`, :math:`i`, :math:`t`
     - the number of new tokens; a token's index; the step
     - ``num_new``; positions in ``tokens``; ``step``
     - integers
   * - :math:`|y|`, :math:`n`, :math:`\operatorname{lp}`, :math:`\alpha`
     - a sequence's length up to and including its end token; a length; the length penalty; its strength
     - ``lengths``; ``length_penalty``; ``alpha``
     - ``(K,)``; function; scalar
   * - :math:`\hat y`
     - the returned continuation
     - the first row of the result
     - ``(N,)``

Explanation
-----------

The most probable sequence is not found by taking the most probable token at each step: a
token that is slightly less likely now can lead to a much more likely continuation. Searching all
:math:`V^N` sequences is out of the question, so beam search keeps a shortlist. At every step each of
the :math:`K` sequences in the beam is extended by every token, the :math:`K V` extensions are scored
by their total log-probability, and the best :math:`K` survive. The work is :math:`K` forward passes
per step; :math:`K = 1` is greedy decoding, and a beam wide enough to hold every prefix is exhaustive
search. Both limits are tested.

A sequence that has produced the end token is finished: it stays in the beam with its score frozen
and competes with the live ones. Since every token adds a negative log-probability, the raw score
favours stopping early; Google's translation system divides by the length penalty
:math:`\operatorname{lp}` :footcite:`wu2016gnmt`, which at :math:`\alpha = 0` is 1 (no penalty) and at
:math:`\alpha = 1` is nearly the length itself. Here the penalty is applied when the finished and
live sequences are ranked at the end.

Beam search finds sequences of high probability, which is what translation and summarisation
reward. For open-ended generation, the most probable text is often dull and repetitive, and
sampling (:doc:`sampling`) reads better :footcite:`holtzman2020curious`.

.. admonition:: Intuition

   A chess player does not commit to the move that looks best right now, nor can they calculate
   every line to the end: they keep a handful of promising lines in mind, extend each by a move,
   and drop all but the best handful again.

Inductive bias
--------------

Beam search assumes that the best sequences have prefixes that score well (a good sequence is not
hidden behind an unlikely first token) and that probability is the right target. Its answer can
get worse as the beam widens when the model assigns too much mass to short or degenerate
sequences, which is what the length penalty tempers.

Example
-------

A bigram model over four tokens in which the greedy first step is a trap: the token 1 is likely
next, but everything after it is unlikely; the token 2 is slightly less likely but leads to a sure
continuation.

>>> import jax.numpy as jnp
>>> from cookbook.transformers.beam_search import beam_search
>>> table = jnp.log(jnp.array([[0.1, 0.5, 0.4, 0.0],
...                            [0.25, 0.25, 0.25, 0.25],
...                            [0.0, 0.0, 0.0, 1.0],
...                            [0.0, 0.0, 0.0, 1.0]]) + 1e-9)
>>> logits_fn = lambda tokens: table[tokens]  # (T, V): the row of each position's token
>>> prompt = jnp.array([0])
>>> greedy_tokens, _ = beam_search(logits_fn, prompt, beam_width=1, num_new=2)
>>> beam_tokens, beam_scores = beam_search(logits_fn, prompt, beam_width=2, num_new=2)
>>> greedy_tokens[0], beam_tokens[0], round(float(jnp.exp(beam_scores[0])), 3)
(Array([1, 0], dtype=int32), Array([2, 3], dtype=int32), 0.4)
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments
#: (``logits_fn`` is a function and is static too).
JIT = {}


def length_penalty(lengths, alpha):
    """GNMT's :math:`((5 + n)/6)^\\alpha`."""
    return ((5.0 + lengths) / 6.0) ** alpha


def beam_search(logits_fn, prompt, *, beam_width, num_new, eos_id=None, alpha=0.0):
    """Continue ``prompt`` (P,) by ``num_new`` tokens with a beam of ``beam_width`` sequences.

    ``logits_fn(tokens)`` maps a sequence (L,) to next-token logits (L, V) for every position, as a
    causal language model does (``gpt.apply`` with its parameters bound); positions after the current
    one hold 0 and must not affect earlier logits. With ``eos_id``, a sequence that emits it is
    finished and padded with ``eos_id``. Returns ``(tokens (K, num_new), scores (K,))`` sorted best
    first by score / length penalty; ``scores`` are the raw total log-probabilities.

    The search compiles once per ``logits_fn`` object (it is a static argument, hashed by identity):
    keep one bound function, such as ``functools.partial(gpt.apply, params)``, to reuse the program.
    """
    if not callable(logits_fn):
        raise TypeError(f"logits_fn must be a function of a token sequence, got {type(logits_fn).__name__}")
    prompt = _checks.int_array(prompt, "prompt", ndim=1, what=" (P,)")
    _checks.size(beam_width, "beam_width", minimum=1)
    _checks.size(num_new, "num_new", minimum=1)
    if prompt.shape[0] < 1:
        raise ValueError("prompt must hold at least one token, got shape (0,)")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
        raise ValueError(f"alpha must be a non-negative number, got {alpha!r}")
    P, K, N = prompt.shape[0], beam_width, num_new
    # The shape of logits_fn's output, read by tracing it (abstractly: nothing is computed or compiled).
    probe = jax.eval_shape(lambda tokens: jnp.asarray(logits_fn(tokens)),
                           jax.ShapeDtypeStruct((P + N,), prompt.dtype))
    if probe.ndim != 2 or probe.shape[0] != P + N:
        raise ValueError(f"logits_fn must return (L, V) logits for a sequence of L = {P + N} tokens, got shape {probe.shape}")
    V = probe.shape[1]
    if eos_id is not None:
        _checks.size(eos_id, "eos_id", minimum=0)
        if eos_id >= V:
            raise ValueError(f"eos_id must be a token in [0, {V}), got {eos_id}")
    _checks.check_range(prompt, "prompt", 0, V)
    return _beam_search(logits_fn, prompt, K, N, V, eos_id, float(alpha))


# The checks run in Python; the search below is one compiled program per logits_fn, shape, beam width
# and eos_id, rather than a compiled scan among dozens of eager operations that each compile on first
# use. logits_fn is a static argument: a function is hashed by its identity.
@functools.partial(jax.jit, static_argnums=(0, 2, 3, 4, 5))  # alpha is traced: one program for all
def _beam_search(logits_fn, prompt, K, N, V, eos_id, alpha):
    P = prompt.shape[0]
    # Every beam starts as the prompt; only the first is live, so the first step does not pick the
    # same extension K times.
    tokens = jnp.zeros((K, N), jnp.int32)
    scores = jnp.where(jnp.arange(K) == 0, 0.0, -jnp.inf)
    finished = jnp.zeros(K, bool)
    lengths = jnp.zeros(K, jnp.int32)

    def step(carry, step):
        tokens, scores, finished, lengths = carry
        sequences = jnp.concatenate([jnp.broadcast_to(prompt, (K, P)), tokens], axis=1)  # (K, P + N)
        logits = jax.vmap(logits_fn)(sequences)[:, P - 1 + step]  # (K, V): the next token's logits
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        # A finished sequence has one extension, eos (or 0 without eos), at no cost; the rest are cut.
        pad = 0 if eos_id is None else eos_id
        frozen = jnp.where(jnp.arange(V) == pad, 0.0, -jnp.inf)
        candidates = scores[:, None] + jnp.where(finished[:, None], frozen[None, :], log_probs)  # (K, V)
        top_scores, flat = jax.lax.top_k(candidates.reshape(-1), K)
        parent, token = flat // V, (flat % V).astype(jnp.int32)
        tokens = tokens[parent].at[:, step].set(token)
        was_finished = finished[parent]
        lengths = jnp.where(was_finished, lengths[parent], lengths[parent] + 1)
        finished = was_finished | ((token == eos_id) if eos_id is not None else False)
        return (tokens, top_scores, finished, lengths), None

    (tokens, scores, finished, lengths), _ = jax.lax.scan(step, (tokens, scores, finished, lengths), jnp.arange(N))
    ranking = scores / length_penalty(lengths.astype(jnp.float32), alpha)
    order = jnp.argsort(-ranking, stable=True)
    return tokens[order], scores[order]
