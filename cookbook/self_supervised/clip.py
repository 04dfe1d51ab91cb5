r"""CLIP and SigLIP: contrastive losses across two modalities
==========================================================

Train an image encoder and a text encoder together so that an image and its caption land close in
one shared space and mismatched pairs land apart: CLIP's symmetric softmax loss over the batch, and
SigLIP's sigmoid loss that judges each pair on its own.

Equation
--------

.. math::

   \hat{x}_i = \frac{x_i}{\lVert x_i \rVert}, \qquad
   \hat{y}_j = \frac{y_j}{\lVert y_j \rVert}, \qquad
   \ell_{ij} = \frac{\hat{x}_i^\top \hat{y}_j}{\tau}

   \mathcal{L}_{\text{CLIP}} = -\frac{1}{2B} \sum_{i=1}^{B} \left(
   \log \frac{\exp \ell_{ii}}{\sum_{j} \exp \ell_{ij}}
   + \log \frac{\exp \ell_{ii}}{\sum_{j} \exp \ell_{ji}} \right)

   \mathcal{L}_{\text{sig}} = -\frac{1}{B} \sum_{i=1}^{B} \sum_{j=1}^{B}
   \log \sigma\!\left(z_{ij} \left(t\, \hat{x}_i^\top \hat{y}_j + b\right)\right), \qquad
   z_{ij} = \begin{cases} 1 & i = j \\ -1 & i \ne j \end{cases}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_i`, :math:`\hat{x}_i`
     - embedding of image :math:`i`, and the same normalised to unit length
     - row :math:`i` of ``image_embeddings``, of ``x``
     - ``(D,)``
   * - :math:`y_j`, :math:`\hat{y}_j`
     - embedding of text :math:`j`, and the same normalised; text :math:`i` is image :math:`i`'s caption
     - row :math:`j` of ``text_embeddings``, of ``y``
     - ``(D,)``
   * - :math:`i`, :math:`j`
     - index of an image; index of a text
     - rows and columns of ``logits``
     - scalar
   * - :math:`\ell_{ij}`
     - CLIP's logit of the pair (image :math:`i`, text :math:`j`)
     - ``logits``
     - ``(B, B)``
   * - :math:`\tau`
     - CLIP's temperature: the logits are cosines divided by it
     - ``temperature`` of ``clip_loss``
     - scalar
   * - :math:`t`, :math:`b`
     - SigLIP's scale (multiplies the cosines) and bias
     - ``temperature`` and ``bias`` of ``sigmoid_loss``
     - scalars
   * - :math:`z_{ij}`
     - the pair's label: 1 for a matching pair, -1 for any other
     - ``labels``
     - ``(B, B)``
   * - :math:`\sigma`
     - the logistic sigmoid; :math:`\log \sigma` is computed as one function
     - ``jax.nn.log_sigmoid``
     - elementwise
   * - :math:`\mathcal{L}_{\text{CLIP}}`, :math:`\mathcal{L}_{\text{sig}}`
     - the two losses
     - the values returned by ``clip_loss`` and ``sigmoid_loss``
     - scalars
   * - :math:`B`
     - number of image-text pairs in the batch
     - ``B``
     - scalar

Explanation
-----------

CLIP :footcite:`radford2021clip` turns :math:`B` image-caption pairs into two classification
problems over the batch. Each image must pick its own caption among the :math:`B` texts (a softmax
over row :math:`i` of the :math:`B \times B` similarity matrix), and each caption must pick its
image among the :math:`B` images (a softmax over column :math:`i`); the loss is the mean of the two
cross-entropies, with the diagonal as the targets. It is the NT-Xent loss of :doc:`simclr` with the
two views coming from different encoders, and without comparisons inside a modality. The
embeddings are normalised inside both losses, so only their directions count, and the cross-entropy
is computed with ``logsumexp`` (the maximum subtracted first) in float32, so that a small
temperature, which makes the logits large, cannot overflow. CLIP learns :math:`\log(1/\tau)` and
caps :math:`1/\tau` at 100; here :math:`\tau` is an argument, and may be traced.

SigLIP :footcite:`zhai2023siglip` replaces the two softmaxes by :math:`B^2` independent binary
questions: is image :math:`i` the partner of text :math:`j`? Each pair's logit is a scaled cosine
plus a bias, and the loss is a logistic loss with label :math:`z_{ij}`. No normaliser runs over
the batch, so the loss of a pair does not depend on which other pairs share the batch, and a batch
split across devices needs no global softmax. Only :math:`B` of the :math:`B^2` pairs are positive,
so SigLIP starts the bias strongly negative (:math:`b = -10`, with :math:`t = 10`): at the start
the model predicts "no match" everywhere, which is right for almost every pair. The sum over
:math:`j` is divided by :math:`B`, not :math:`B^2`, as in the paper. Here :math:`t` is named
``temperature`` and multiplies the cosines, where CLIP's :math:`\tau` divides them.

.. admonition:: Intuition

   CLIP is a matching exercise in a class: every student gets a photograph, every caption is read
   out, and each student must pick the caption of their photograph from all of them, and each
   caption must find its photograph. SigLIP hands every student a stack of caption cards and asks
   for a yes or a no on each card separately: nobody needs to see the others' answers.

Both losses reach their chance level for collapsed embeddings: CLIP's is :math:`\log B` (every
logit equal), the tests check it, and SigLIP's negative terms then outweigh the positive ones
:math:`B - 1` to 1.

Inductive bias
--------------

A shared space of directions assumes that what an image shows and what its caption says can be
compared by a single cosine; the two encoders are free to differ, and only the pairing teaches them
a common language. The softmax treats every other caption in the batch as wrong, so near-duplicate
captions of different images are pushed apart, an error that shrinks with the batch and that the
sigmoid loss makes per pair instead of per batch.

Example
-------

Matching embeddings give a lower loss than shuffled ones; collapsed ones give :math:`\log B`:

>>> import jax, jax.numpy as jnp
>>> from cookbook.self_supervised.clip import clip_loss, sigmoid_loss
>>> k_x, k_n = jax.random.split(jax.random.key(0))
>>> images = jax.random.normal(k_x, (5, 3))
>>> texts = images + 0.1 * jax.random.normal(k_n, (5, 3))
>>> bool(clip_loss(images, texts, 0.1) < clip_loss(images, texts[::-1], 0.1))
True
>>> round(float(clip_loss(jnp.ones((5, 3)), jnp.ones((5, 3)), 0.1)), 4), round(float(jnp.log(5.0)), 4)
(1.6094, 1.6094)
>>> bool(sigmoid_loss(images, texts, 10.0, -10.0) < sigmoid_loss(images, texts[::-1], 10.0, -10.0))
True

Implementation notes
--------------------

The CLIP loss is two calls of ``optax.softmax_cross_entropy_with_integer_labels`` on the logits and
their transpose, and the sigmoid loss is ``optax.sigmoid_binary_cross_entropy`` summed over the
matrix and divided by :math:`B`; the tests compare against both. In SigLIP the scale and the bias are
learned parameters (the scale through its logarithm), which the gradients of ``sigmoid_loss``
with respect to ``temperature`` and ``bias`` allow.
"""

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"clip_loss": (), "sigmoid_loss": ()}

EPS = 1e-12  # floor of an embedding's squared norm, as EPS**2: a zero vector normalises to zero, not NaN


def _check_pair(image_embeddings, text_embeddings):
    x = _checks.float_array(image_embeddings, "image_embeddings", ndim=2, what=" (B, D)")
    y = _checks.float_array(text_embeddings, "text_embeddings", ndim=2, what=" (B, D)")
    _checks.same_shape(y, "text_embeddings", x.shape, expected_from="the shape of image_embeddings")
    return x, y


def _normalised_pair(x, y):
    dtype = jnp.promote_types(jnp.result_type(x, y), jnp.float32)

    def normalise(v):
        v = v.astype(dtype)
        return v * jax.lax.rsqrt(jnp.maximum(jnp.sum(v * v, axis=1, keepdims=True), EPS**2))

    return normalise(x), normalise(y)


def _real(value, name):
    if isinstance(value, bool) or not (isinstance(value, (int, float)) or jnp.ndim(value) == 0):
        raise TypeError(f"{name} must be a real number or a scalar array, got {type(value).__name__} "
                        f"of shape {jnp.shape(value)}")
    return value


def clip_loss(image_embeddings, text_embeddings, temperature):
    """CLIP's symmetric contrastive loss of B image and B text embeddings (B, D), row ``i`` of each
    a matching pair: normalised inside, logits ``x @ y.T / temperature``, the mean of the
    image-to-text and text-to-image cross-entropies with the diagonal as targets. A scalar."""
    x, y = _check_pair(image_embeddings, text_embeddings)
    temperature = _checks.positive(_real(temperature, "temperature"), "temperature")
    return _clip_loss(x, y, temperature)


# The public functions check their input in Python, then hand it as it comes to one compiled core
# (temperature and bias traced): repeated calls of the same shapes reuse one program instead of
# dispatching a dozen operations one by one.
@jax.jit
def _clip_loss(x, y, temperature):
    x, y = _normalised_pair(x, y)
    logits = x @ y.T / temperature  # (B, B): row i image i, column j text j
    image_to_text = jax.nn.logsumexp(logits, axis=1) - jnp.diagonal(logits)  # (B,)
    text_to_image = jax.nn.logsumexp(logits, axis=0) - jnp.diagonal(logits)  # (B,)
    return 0.5 * (image_to_text.mean() + text_to_image.mean())


def sigmoid_loss(image_embeddings, text_embeddings, temperature, bias):
    """SigLIP's pairwise sigmoid loss of B image and B text embeddings (B, D): normalised inside,
    logits ``temperature * x @ y.T + bias``, labels 1 on the diagonal and -1 elsewhere,
    ``-sum(log_sigmoid(labels * logits)) / B``. A scalar."""
    x, y = _check_pair(image_embeddings, text_embeddings)
    temperature = _checks.positive(_real(temperature, "temperature"), "temperature")
    bias = _real(bias, "bias")
    return _sigmoid_loss(x, y, temperature, bias)


@jax.jit
def _sigmoid_loss(x, y, temperature, bias):
    x, y = _normalised_pair(x, y)
    B = x.shape[0]
    logits = temperature * (x @ y.T) + bias  # (B, B)
    labels = 2.0 * jnp.eye(B, dtype=logits.dtype) - 1.0  # (B, B): 1 on matching pairs, -1 elsewhere
    return -jnp.sum(jax.nn.log_sigmoid(labels * logits)) / B
