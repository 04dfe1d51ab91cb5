r"""word2vec: skip-gram with negative sampling
==========================================

Learn a vector for every word from raw text alone, by training each word to tell the words that
appear near it from words drawn at random: the skip-gram objective with negative sampling, whose
vectors turn relations between words into directions ("king - man + woman = queen").

Equation
--------

.. math::

   \ell(w, c) = -\log \sigma\!\left(u_w^\top v_c\right)
   - \sum_{k=1}^{K} \log \sigma\!\left(-u_w^\top v_{n_k}\right), \qquad
   n_k \sim P_n, \quad P_n(x) = \frac{f(x)^{\alpha}}{\sum_{x'} f(x')^{\alpha}}

   \mathcal{L} = \frac{1}{B} \sum_{(w, c)} \ell(w, c), \qquad
   d^\star = \operatorname*{arg\,max}_{d \notin \{a, b, c\}}
   \cos\!\left(u_d,\ u_b - u_a + u_c\right)

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`w`, :math:`c`
     - a centre word and a context word seen within ``window`` positions of it
     - ``centers``, ``contexts`` from ``skip_gram_pairs``
     - ``(B,)`` token ids
   * - :math:`u_w`
     - the input ("word") vector of :math:`w`: the embedding that is kept
     - ``center_vectors``; rows of ``embeddings``
     - ``(B, D)``
   * - :math:`v_c`, :math:`v_{n_k}`
     - the output ("context") vectors of the context word and of the negatives
     - ``context_vectors``, ``negative_vectors``
     - ``(B, D)``, ``(B, K, D)``
   * - :math:`K`
     - number of negatives drawn per pair
     - ``K``
     - scalar
   * - :math:`\sigma`
     - the logistic sigmoid (its logarithm is ``jax.nn.log_sigmoid``)
     - ``jax.nn.log_sigmoid``
     - function
   * - :math:`P_n`, :math:`f`, :math:`\alpha`
     - the noise distribution: word frequencies raised to a power (3/4 in the paper)
     - ``noise_distribution``, ``counts``, ``power``
     - ``(V,)``, ``(V,)``, scalar
   * - :math:`x`, :math:`x'`
     - any word of the vocabulary
     - an index into ``counts``
     - token id
   * - :math:`\ell`, :math:`\mathcal{L}`
     - the loss of one pair; the mean over the :math:`B` pairs of a batch
     - ``losses``; the value returned by ``sgns_loss``
     - ``(B,)``; scalar
   * - :math:`a, b, c, d^\star`
     - an analogy "a is to b as c is to d": three given words and the answer
     - the arguments ``a``, ``b``, ``c`` and the value returned by ``analogy``
     - token ids
   * - :math:`B`, :math:`D`, :math:`V`
     - pairs in a batch, vector width, vocabulary size
     - ``B``, ``D``, the rows of ``embeddings``
     - scalars

Explanation
-----------

Skip-gram :footcite:`mikolov2013distributed` gives every word two vectors, :math:`u` when it is the
centre and :math:`v` when it is context, and scores a pair by the dot product :math:`u_w^\top v_c`.
Predicting the context word with a softmax over the whole vocabulary would cost :math:`V` dot
products per pair; *negative sampling* replaces it with :math:`K + 1` logistic regressions: the
observed pair should score high, and :math:`K` pairs of :math:`w` with words drawn from
:math:`P_n` should score low. The noise distribution is the unigram frequency raised to
:math:`3/4`, which draws rare words more often than their frequency. The loss is written with
``log_sigmoid``, which stays finite for scores of any size.

Levy and Goldberg :footcite:`levy2014neural` showed that at its optimum the objective sets
:math:`u_w^\top v_c = \operatorname{PMI}(w, c) - \log K`: the vectors factorise the matrix of
pointwise mutual information between words and their contexts. That is where the analogies come
from: if "queen" differs from "king" in its contexts the way "woman" differs from "man", the two
differences of vectors are nearly equal, and :math:`u_b - u_a + u_c` lands next to
:math:`u_{d}`. The answer is the nearest word by cosine, excluding the three query words, which
are often nearer still.

.. admonition:: Intuition

   "You shall know a word by the company it keeps" :footcite:`firth1957synopsis`. Two words that keep the same
   company get the same vector; and a word whose company is "royal" plus "female" gets a vector
   that is, nearly, the sum of the directions for royal and for female, which is why the
   arithmetic of analogies works.

Inductive bias
--------------

The objective sees only which words occur within a window of each other, not their order, so it
learns topical and syntactic similarity together and cannot tell "dog bites man" from "man bites
dog". Each word gets one vector whatever its sense. And the analogy arithmetic works only for
relations that the co-occurrence statistics express as a consistent difference; it is an
approximate property of the embedding, not something the objective asks for.

Example
-------

The pairs of a sentence within a window of one, the noise distribution of three words, and the
loss of one pair with two negatives:

>>> import numpy as np
>>> from cookbook.self_supervised.word2vec import noise_distribution, sgns_loss, skip_gram_pairs
>>> centers, contexts, valid = skip_gram_pairs(np.array([7, 8, 9]), window=1)
>>> [(w, c) for w, c, ok in zip(centers.tolist(), contexts.tolist(), valid.tolist()) if ok]
[(7, 8), (8, 7), (8, 9), (9, 8)]
>>> noise_distribution(np.array([1.0, 16.0, 81.0]), power=0.75).round(3)  # 1 : 8 : 27
Array([0.028, 0.222, 0.75 ], dtype=float32)
>>> u = np.array([[1.0, 0.0]], np.float32)
>>> v = np.array([[2.0, 0.0]], np.float32)
>>> n = np.array([[[-2.0, 0.0], [0.0, 1.0]]], np.float32)
>>> round(float(sgns_loss(u, v, n)), 4)  # -log s(2) - log s(2) - log s(0)
0.947

An analogy on four vectors at the corners of a parallelogram, with a distractor:

>>> from cookbook.self_supervised.word2vec import analogy
>>> e = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1], [1, 1, 1]], np.float32)
>>> int(analogy(e, 0, 1, 2))  # 0 is to 1 as 2 is to 3
3

Implementation notes
--------------------

The paper also subsamples frequent words and trains by plain SGD with a decaying rate over one or
a few passes; the tests use Adam. ``jax.nn.log_sigmoid`` is the stable :math:`\log\sigma`.
Embedding lookups are gathers (``params["in"][tokens]``), and their gradients scatter-add into
the rows of the vocabulary.

**It learns.** The tests generate a corpus with planted structure: 12 words, one for each pair of
4 "kinds" and 3 "attributes", each appearing in sentences with two topic words of its kind and
two style words of its attribute, 1500 sentences of five words. After 300 Adam steps on batches of
256 pairs with 5 negatives each (16-dimensional vectors), ``analogy`` answers all 72 analogies
"word(i, j) is to word(i, j') as word(i', j) is to word(i', j')" correctly (the test asks for
at least 65), against 2 at the random initialisation (the test asks for at most 10).
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"sgns_loss": (), "skip_gram_pairs": ("window",), "noise_distribution": (), "analogy": ()}

EPS = 1e-12  # floor of a vector's norm in ``analogy``


def sgns_loss(center_vectors, context_vectors, negative_vectors):
    """The skip-gram negative-sampling loss, the mean over B pairs of
    ``-log s(u.v) - sum_k log s(-u.n_k)``: ``center_vectors`` (B, D) are the centre words' input
    vectors, ``context_vectors`` (B, D) the context words' output vectors and
    ``negative_vectors`` (B, K, D) the output vectors of K noise words per pair."""
    u = _checks.float_array(center_vectors, "center_vectors", ndim=2, what=" (B, D)")
    v = _checks.float_array(context_vectors, "context_vectors", ndim=2, what=" (B, D)")
    n = _checks.float_array(negative_vectors, "negative_vectors", ndim=3, what=" (B, K, D)")
    _checks.same_shape(v, "context_vectors", u.shape, expected_from="the shape of center_vectors")
    B, D = u.shape
    K = n.shape[1]
    _checks.same_shape(n, "negative_vectors", (B, K, D), expected_from="B and D of center_vectors")
    return _sgns_loss(u, v, n)


# One compiled program per shape, rather than a dozen eager operations that each compile.
@jax.jit
def _sgns_loss(u, v, n):
    dtype = jnp.promote_types(jnp.result_type(u, v, n), jnp.float32)
    u, v, n = u.astype(dtype), v.astype(dtype), n.astype(dtype)
    positive = jax.nn.log_sigmoid(jnp.sum(u * v, axis=1))  # (B,)
    negative = jnp.sum(jax.nn.log_sigmoid(-jnp.einsum("BD,BKD->BK", u, n)), axis=1)  # (B,)
    losses = -(positive + negative)
    return losses.mean()


def skip_gram_pairs(tokens, *, window):
    """Every (centre, context) pair of a sequence of token ids ``tokens`` (T,) within ``window``
    positions: ``(centers, contexts, valid)``, each (T * 2 window,), ordered by centre and then by
    offset (-window..-1, 1..window); ``valid`` is False where the context falls off either end."""
    tokens = _checks.int_array(tokens, "tokens", ndim=1, what=" (T,)")
    return _skip_gram_pairs(tokens, _checks.size(window, "window"))


@functools.partial(jax.jit, static_argnums=1)
def _skip_gram_pairs(tokens, window):
    T = tokens.shape[0]
    offsets = jnp.concatenate([jnp.arange(-window, 0), jnp.arange(1, window + 1)])  # (2 window,)
    positions = jnp.arange(T)[:, None] + offsets[None, :]  # (T, 2 window)
    valid = (positions >= 0) & (positions < T)
    contexts = tokens[jnp.clip(positions, 0, T - 1)]
    centers = jnp.broadcast_to(tokens[:, None], positions.shape)
    return centers.reshape(-1), contexts.reshape(-1), valid.reshape(-1)


def noise_distribution(counts, power=0.75):
    """The negative-sampling distribution (V,): word ``counts`` (V,) raised to ``power`` and
    normalised to sum to 1."""
    counts = _checks.float_array(counts, "counts", ndim=1, what=" (V,)")
    return _noise_distribution(counts, _checks.positive(power, "power", allow_zero=True))


@jax.jit
def _noise_distribution(counts, power):
    weights = jnp.power(counts.astype(jnp.promote_types(counts.dtype, jnp.float32)), power)
    return weights / weights.sum()


def analogy(embeddings, a, b, c):
    """The answer to "``a`` is to ``b`` as ``c`` is to ?": the row of ``embeddings`` (V, D), other
    than ``a``, ``b`` and ``c`` (token ids), nearest by cosine to ``u_b - u_a + u_c``."""
    embeddings = _checks.float_array(embeddings, "embeddings", ndim=2, what=" (V, D)")
    V = embeddings.shape[0]
    for name, x in (("a", a), ("b", b), ("c", c)):
        x = _checks.int_array(x, name, ndim=0, what=" (a token id)")
        _checks.check_range(x, name, 0, V)
    return _analogy(embeddings, a, b, c)


@jax.jit
def _analogy(embeddings, a, b, c):
    e = embeddings.astype(jnp.promote_types(embeddings.dtype, jnp.float32))
    e = e * jax.lax.rsqrt(jnp.maximum(jnp.sum(e * e, axis=1, keepdims=True), EPS**2))
    query = e[b] - e[a] + e[c]  # (D,)
    scores = e @ query  # (V,), the cosine up to the query's norm
    scores = scores.at[jnp.stack([jnp.asarray(a), jnp.asarray(b), jnp.asarray(c)])].set(-jnp.inf)
    return jnp.argmax(scores)
