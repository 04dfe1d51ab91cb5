r"""Absolute positional encoding
============================

Add to each token a vector that says where it stands, either a fixed pattern of sines and cosines
or a learned table: the way to give attention, which by itself cannot tell one order of the tokens
from another, a sense of sequence.

Equation
--------

.. math::

   P_{p,\,2i} = \sin\!\left(\frac{p}{b^{2i/d}}\right), \qquad
   P_{p,\,2i+1} = \cos\!\left(\frac{p}{b^{2i/d}}\right), \qquad
   \tilde{X} = X + P_{0:T}

For learned positions, :math:`P` is instead a trained parameter matrix with one row per position up
to a maximum length :math:`L`.

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`X`
     - token embeddings, one row per position (the caller's; not an argument here)
     - (the caller's embeddings)
     - ``(T, d_model)``
   * - :math:`P`
     - positional encodings, one row per position
     - ``sinusoidal_encoding(T, d_model)``, or ``learned_encoding(params, T)``
     - ``(T, d_model)``
   * - :math:`P_{0:T}`
     - the first :math:`T` rows of :math:`P`
     - ``sinusoidal_encoding(T, d_model)``; the first ``T`` rows of ``params["P"]``
     - ``(T, d_model)``
   * - :math:`p`
     - position (0 for the first token)
     - ``positions``
     - scalar
   * - :math:`i`
     - index of a sine-cosine pair of features, :math:`0 \le i < d/2`
     - the index along ``frequencies``
     - scalar
   * - :math:`d`
     - model width
     - ``d_model``
     - scalar
   * - :math:`b`
     - base of the wavelengths, 10000 in the original
     - ``base``
     - scalar
   * - :math:`T`, :math:`L`
     - sequence length; longest sequence a learned table covers
     - ``T``, ``max_len``
     - scalar
   * - :math:`\tilde{X}`
     - embeddings with positions added, the input of the first attention layer
     - (the caller's sum of embeddings and encodings)
     - ``(T, d_model)``

Explanation
-----------

**Why attention needs this.** Self-attention computes every output from the set of its inputs:
each query is compared with every key by content alone, and the weighted average does not care
in which row a key stands. Formally, if the rows of :math:`X` are permuted by a permutation matrix
:math:`\Pi`, every query, key and value row is permuted the same way, the score matrix becomes
:math:`\Pi S \Pi^\top`, the softmax (row by row) commutes with that, and the output is
:math:`\Pi Z`: self-attention is *permutation equivariant*. "dog bites man" and "man bites dog"
produce the same three outputs, shuffled. The tests of this page check it, and check that adding
positions breaks it. The fix of :footcite:t:`vaswani2017attention` is to make the inputs
themselves carry their position, by adding a vector that depends on it.

**Sinusoids.** Each pair of features :math:`(2i, 2i+1)` is a point going round a circle as the
position grows, at angular frequency :math:`b^{-2i/d}`: the first pair turns once every
:math:`2\pi` positions, the last once every :math:`2\pi b^{(d-2)/d}` (96% of :math:`2\pi b` at :math:`d = 512`). Fast pairs tell neighbours
apart, slow ones tell the beginning of a long text from its end. Because a
shift by :math:`k` positions rotates every pair by a fixed angle, :math:`P_{p+k}` is a linear
function of :math:`P_p` (the same for every :math:`p`), which the authors hoped would let the model
attend by relative offset; and because the formula is defined for any :math:`p`, it produces
encodings for sequences longer than any seen in training, although models do not necessarily use
them well there (see :doc:`alibi`).

.. admonition:: Intuition

   Read a car's odometer: the last digit changes with every kilometre, the next one every ten,
   the first one rarely, and together the digits name every distance uniquely. The sinusoidal
   encoding is such a counter with its digits smoothed into waves, one wave per feature pair, each
   slower than the one before; smooth digits have the advantage that nearby positions get nearby
   codes.

**Learned positions.** The simpler alternative is a table of :math:`L` trainable vectors, one per
position, as in the convolutional sequence models of :footcite:t:`gehring2017convolutional` and in
BERT and GPT. It can learn whatever pattern helps, and in practice does about as well as sinusoids
:footcite:`vaswani2017attention`, but it knows nothing about positions beyond :math:`L`, and rows
for rarely seen late positions are trained on little data. The table is initialised small (standard
deviation 0.02) so that the positions do not drown the token embeddings at the start.

.. plot::

   from cookbook.attention.positional_encoding import sinusoidal_encoding
   P = sinusoidal_encoding(64, 64)
   plt.figure(figsize=(5, 3.6))
   plt.imshow(np.asarray(P), cmap="RdBu", aspect="auto", vmin=-1, vmax=1)
   plt.colorbar(label="value")
   plt.xlabel("feature (pairs: sin, cos; slower to the right)")
   plt.ylabel("position p")
   plt.title("Sinusoidal positional encoding")
   plt.tight_layout()

**Traps.** The angles :math:`p\,b^{-2i/d}` are computed in float32 (large positions lose precision
in bfloat16 long before the sine is taken); the encoding is returned in float32, for the caller
to cast to the embeddings' dtype when adding it. The encoding is added, not concatenated, so it shares the width of the embeddings; this
is why embeddings are often scaled by :math:`\sqrt{d}` in the original transformer before the sum.

Inductive bias
--------------

Absolute encodings tell the model *where* each token is, and leave it to learn from data that
what usually matters is how far apart two tokens are. Sinusoids add a prior of smoothness (nearby
positions get similar vectors) and of periodicity at many scales; a learned table adds no prior and
needs data for every position it is to know. Neither makes attention translation invariant: the same
phrase at positions 3 and 300 looks different to the model, which is what the relative schemes
(:doc:`rope`, :doc:`alibi`) change.

Example
-------

The first position is :math:`(\sin 0, \cos 0, \dots) = (0, 1, 0, 1, \dots)`; with positions added,
self-attention is no longer blind to order:

>>> import jax, jax.numpy as jnp
>>> from cookbook.attention.positional_encoding import (
...     init_learned, learned_encoding, sinusoidal_encoding)
>>> P = sinusoidal_encoding(5, 8)
>>> P.shape
(5, 8)
>>> P[0]
Array([0., 1., 0., 1., 0., 1., 0., 1.], dtype=float32)
>>> P[1, :2].round(4)  # sin 1, cos 1
Array([0.8415, 0.5403], dtype=float32)
>>> params = init_learned(jax.random.key(0), max_len=16, d_model=8)
>>> learned_encoding(params, 5).shape
(5, 8)
>>> from cookbook.attention.multi_head import init, apply
>>> k_attn, k_x = jax.random.split(jax.random.key(1))
>>> mha = init(k_attn, d_model=8, num_heads=2)
>>> x = jax.random.normal(k_x, (5, 8))
>>> reverse = jnp.array([4, 3, 2, 1, 0])
>>> bool(jnp.allclose(apply(mha, x[reverse]), apply(mha, x)[reverse], atol=1e-5))
True
>>> bool(jnp.allclose(apply(mha, x[reverse] + P), apply(mha, x + P)[reverse], atol=1e-5))
False
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "sinusoidal_encoding": ("T", "d_model", "base"),
    "init_learned": ("max_len", "d_model"),
    "learned_encoding": ("T",),
}


def sinusoidal_encoding(T, d_model, base=10000.0):
    """The sinusoidal encodings of positions 0 .. T-1, shape (T, d_model), features interleaved
    as (sin, cos) pairs with wavelengths growing geometrically from 2 pi to
    2 pi ``base ** ((d_model - 2) / d_model)`` (nearly 2 pi ``base`` when d_model is large)."""
    d_model = _checks.size(d_model, "d_model")
    if d_model % 2:
        raise ValueError(f"d_model must be even for sine-cosine pairs, got d_model={d_model}")
    T, base = _checks.size(T, "T"), _checks.positive(base, "base")
    return _sinusoidal_encoding(T, d_model, base)


# sinusoidal_encoding checks its arguments, then runs this compiled core: one program per set of
# sizes, instead of a dozen eager operations each compiled for its shape (the table is the same, bit
# for bit).
@functools.partial(jax.jit, static_argnums=(0, 1))
def _sinusoidal_encoding(T, d_model, base):
    positions = jnp.arange(T, dtype=jnp.float32)  # (T,)
    frequencies = base ** (-jnp.arange(0, d_model, 2, dtype=jnp.float32) / d_model)  # (d_model / 2,)
    angles = positions[:, None] * frequencies[None, :]  # (T, d_model / 2)
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(T, d_model)


def init_learned(key, max_len, d_model):
    """A learned table of ``max_len`` positional embeddings, drawn with standard deviation 0.02."""
    max_len, d_model = _checks.size(max_len, "max_len"), _checks.size(d_model, "d_model")
    # Eager on purpose: compiled, XLA folds the 0.02 into the draw and the table moves by an ulp,
    # which moves every model trained from it (GPT's page figures among them).
    return {"P": 0.02 * jax.random.normal(key, (max_len, d_model))}


def learned_encoding(params, T):
    """The learned encodings of positions 0 .. T-1, shape (T, d_model)."""
    P = _checks.float_array(params["P"], 'params["P"]', ndim=2, what=" (max_len, d_model)")
    T, max_len = _checks.size(T, "T"), P.shape[0]
    if T > max_len:
        raise ValueError(f"T must be between 1 and max_len={max_len} of the learned table, got T={T}")
    return P[:T]
