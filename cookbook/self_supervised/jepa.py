r"""JEPA: joint-embedding predictive architecture
=============================================

Learn a representation without labels and without augmentations by predicting, from the visible
part of an image, the *embeddings* that a slowly moving target encoder gives to hidden blocks of
it, never their pixels.

Equation
--------

.. math::

   s_x = f_\theta(x \odot m_{\mathcal{C}}), \qquad
   s_{y,i} = f_{\bar\theta}(x \odot m_{B_i}), \qquad
   \hat{s}_{y,i} = g_\phi\!\left(s_x, \, m_{B_i}\right)

   \mathcal{L} = \frac{1}{M} \sum_{i=1}^{M}
   \left\lVert \hat{s}_{y,i} - \operatorname{sg}\!\left(\bar{s}_{y,i}\right) \right\rVert_2^2,
   \qquad \bar\theta \leftarrow \lambda \bar\theta + (1 - \lambda)\, \theta

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`
     - an image, seen as a grid of :math:`P` patches
     - ``image``
     - ``(H, W)``
   * - :math:`m_{B_i}`, :math:`M`
     - the masks of the :math:`M` target blocks, rectangles of patches to be predicted
     - ``target_masks`` (row :math:`i` marks block :math:`B_i`), ``num_targets``
     - ``(M, P)``
   * - :math:`m_{\mathcal{C}}`
     - the context: a large block of patches with every target patch removed
     - ``context_mask``
     - ``(P,)``
   * - :math:`\odot`
     - keeping the patches of a mask and setting the others to zero
     - ``mask_image``
     - ``(H, W)``
   * - :math:`f_\theta`, :math:`f_{\bar\theta}`
     - context encoder and target encoder, of one architecture
     - any function of parameters; the tests use the MLP of :doc:`simclr`
     - function
   * - :math:`s_x`
     - the context encoder's embedding of the visible part
     - ``context``
     - ``(D,)``
   * - :math:`s_{y,i}`, :math:`\bar{s}_{y,i}`
     - the target encoder's embedding of block :math:`i`; the same normalised to zero mean and
       unit variance over its :math:`D` features
     - ``targets``; ``t``
     - ``(M, D)``
   * - :math:`g_\phi`
     - the predictor, told where the block lies (its mask) and nothing else about it
     - ``predict``
     - function
   * - :math:`\hat{s}_{y,i}`
     - the prediction of the embedding of block :math:`i`
     - ``predictions``
     - ``(M, D)``
   * - :math:`\operatorname{sg}`
     - stop-gradient: the targets are constants for the loss
     - ``jax.lax.stop_gradient``
     - as its input
   * - :math:`\mathcal{L}`
     - the loss, in embedding space
     - the value returned by ``jepa_loss``
     - scalar
   * - :math:`\theta`, :math:`\bar\theta`, :math:`\phi`, :math:`\lambda`
     - parameters of the context encoder (trained), of the target encoder (their moving average)
       and of the predictor (trained); the average's decay
     - ``predictor`` for :math:`\phi`; the decay of ``ema_update`` (from :doc:`byol`)
     - pytrees; scalar
   * - :math:`P`, :math:`D`, :math:`i`
     - patches per image, embedding width, index of a target block
     - ``P``, ``D``
     - scalars

Explanation
-----------

I-JEPA :footcite:`assran2023ijepa` hides a few rectangular blocks of an image, shows a context
encoder the rest, and asks a predictor to tell, for each hidden block, what a *target encoder*
makes of it. The predictor is told where the block lies and nothing else about it. The target
encoder is a moving average of the context encoder, as in :doc:`byol`, and its output passes
through a stop-gradient; the targets are normalised over their features (as the authors' code
does) before the squared distance. Compare the masked autoencoder :footcite:`he2022masked`,
which predicts the hidden *pixels*: a pixel target spends the network's capacity on detail that no
context can determine (the exact stroke, the noise), while an embedding target lets the encoder
decide what is predictable and drop the rest.

In the paper the encoders are vision transformers, the target encoder sees the whole image, and
the target of a block is its output at the block's patches. The small MLP of the tests returns
one embedding per input, so here the target of a block is the target encoder's embedding of the
image with only that block kept, and there is one prediction per block instead of one per patch.

**Collapse.** A constant encoder makes every target equal and perfectly predictable: the loss is
zero. What prevents it is the device of :doc:`byol`: the targets come from a lagging copy of the
encoder and carry no gradient, so the encoder cannot move the targets towards its predictions.
Let the context encoder be its own target, with the gradient flowing into the targets, and
training finds the nearly constant map (the tests' detector: the spread of the embeddings over
the images falls to nearly zero).

**Masks.** The blocks must be large enough that predicting them takes more than copying a
neighbouring pixel, and the context must be informative; on a :math:`4 \times 4` grid of
:math:`2 \times 2` patches, the tests hide two blocks of :math:`2 \times 2` patches and show the
rest of the image, a context of the paper's scale (85 to 100 % of the image, before the targets
are removed).

.. admonition:: Intuition

   A person who has seen most of a photograph can say what the covered parts show (a wheel, a
   window) without being able to draw them pixel by pixel. JEPA trains that ability: guess the
   gist of the hidden part, in the network's own words, from the part in view.

Inductive bias
--------------

JEPA uses no hand-made augmentation: it assumes only that parts of an image predict one another
through what they depict. That frees it from the invariances that the augmentations of
:doc:`simclr` impose, but the masks now carry the bias: their sizes decide whether the
representation learns shapes or local texture.

Example
-------

Masks for a :math:`4 \times 4` grid of patches: two target blocks of four patches, and a context
that avoids them; the loss is zero for predictions equal to the normalised targets, and its
gradient never reaches the targets:

>>> import jax, jax.numpy as jnp
>>> from cookbook.self_supervised.jepa import jepa_loss, mask_image, predict, sample_masks
>>> target_masks, context_mask = sample_masks(jax.random.key(8), (4, 4), num_targets=2,
...                                           target_size=(2, 2), context_size=(4, 4))
>>> target_masks.reshape(2, 4, 4).astype(int)
Array([[[1, 1, 0, 0],
        [1, 1, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0]],
<BLANKLINE>
       [[0, 0, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 1, 1],
        [0, 0, 1, 1]]], dtype=int32)
>>> context_mask.reshape(4, 4).astype(int)
Array([[0, 0, 1, 1],
       [0, 0, 1, 1],
       [1, 1, 0, 0],
       [1, 1, 0, 0]], dtype=int32)
>>> mask_image(jnp.arange(1.0, 17.0).reshape(4, 4), context_mask, 1)  # patches of one pixel
Array([[ 0.,  0.,  3.,  4.],
       [ 0.,  0.,  7.,  8.],
       [ 9., 10.,  0.,  0.],
       [13., 14.,  0.,  0.]], dtype=float32)
>>> float(mask_image(jnp.ones((8, 8)), context_mask, 2).sum())  # 8 patches of 2 x 2 pixels kept
32.0
>>> W = jax.random.normal(jax.random.key(1), (3 + 16, 3))  # a one-layer predictor, D = 3, P = 16
>>> predictions = predict([{"W": W, "b": jnp.zeros(3)}], jnp.array([1.0, -1.0, 0.5]), target_masks)
>>> predictions.shape
(2, 3)
>>> targets = jnp.array([[1.0, 2.0, 3.0], [0.0, 5.0, -5.0]])
>>> normalised = (targets - targets.mean(1, keepdims=True)) / targets.std(1, keepdims=True)
>>> round(float(jepa_loss(normalised, targets)), 4)
0.0
>>> jax.grad(jepa_loss, argnums=1)(predictions, targets)
Array([[0., 0., 0.],
       [0., 0., 0.]], dtype=float32)

Implementation notes
--------------------

**What the tests train.** On scikit-learn's digits (8 x 8 pixels, a :math:`4 \times 4` grid of
:math:`2 \times 2` patches), without labels or augmentations, the tests train the 64-128-8 MLP
of :doc:`simclr` as the encoder and a 24-64-8 MLP as the predictor (its input: the context's
embedding and the block's mask) for 400 Adam steps (learning rates 0.003 and 0.01) on batches of
64 images, fresh masks for each image at each step, with :math:`\lambda = 0.99`. A
10-nearest-neighbour classifier on the context encoder's embeddings of whole images reads 500
held-out digits with an accuracy at least 0.07 above the same network at its random
initialisation (0.79 against 0.69 here; 0.81 with other masks). The collapse detector is the
spread of the embeddings: the standard deviation over the images of each feature of the
unit-length embeddings, averaged over the features. It is above 0.2 after training (about 0.31)
and below 0.05 (about 0.015) for the same run with the context encoder as its own target and the
gradient flowing into the targets, whose k-NN accuracy falls below the untrained network's.

**Left out.** The paper's vision transformers, its four target blocks of 15 to 20 % of the image
with random aspect ratios, and a decay raised from 0.996 to 1 over training. The loss is computed
in float32 (float64 for float64 input).
"""

from functools import partial

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.self_supervised.byol import ema_update  # noqa: F401  the target encoder's update, shared with BYOL

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"sample_masks": ("grid", "num_targets", "target_size", "context_size"), "mask_image": ("patch",),
       "predict": (), "jepa_loss": ()}

EPS = 1e-6  # added to each target's variance when the targets are normalised


def _normalise(x):
    """Zero mean and unit variance over the last axis (a layer norm without scale or bias)."""
    centred = x - x.mean(axis=-1, keepdims=True)
    return centred * jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + EPS)


def _pair(value, name):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (rows, columns) of ints, got {value!r}")
    return tuple(_checks.size(v, f"{name}[{i}]") for i, v in enumerate(value))


def _block(u, grid, size):
    """A block of ``size`` (rows, columns) of the ``grid`` as a mask (P,), its top-left corner
    placed by ``u`` (2,), uniform in [0, 1): scaled and floored, every place is equally likely."""
    (R, C), (h, w) = grid, size
    places = jnp.array([R - h + 1, C - w + 1])  # the rows and the columns where the block may start
    top, left = jnp.minimum(jnp.floor(u * places).astype(jnp.int32), places - 1)
    rows, cols = jnp.arange(R)[:, None], jnp.arange(C)[None, :]
    return ((rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)).reshape(-1)


def sample_masks(key, grid, *, num_targets=2, target_size=(2, 2), context_size=(4, 4)):
    """I-JEPA's masks on a ``grid`` (rows, columns) of P patches: ``target_masks`` (M, P), M =
    ``num_targets`` blocks of ``target_size`` at random places (they may overlap), and
    ``context_mask`` (P,), a block of ``context_size`` at a random place less every target patch.
    Sizes are static; the context is never empty, since its area must exceed the targets'."""
    R, C = _pair(grid, "grid")
    num_targets = _checks.size(num_targets, "num_targets")
    h, w = _pair(target_size, "target_size")
    ch, cw = _pair(context_size, "context_size")
    if h > R or w > C or ch > R or cw > C:
        raise ValueError(f"target_size {target_size} and context_size {context_size} must fit in the grid {grid}")
    if ch * cw <= num_targets * h * w:
        raise ValueError(f"context_size {context_size} must cover more patches than the num_targets = "
                         f"{num_targets} blocks of target_size {target_size} together ({num_targets * h * w}), "
                         f"so that the context is never empty")
    return _sample_masks(key, (R, C), num_targets, (h, w), (ch, cw))


@partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _sample_masks(key, grid, num_targets, target_size, context_size):
    u = jax.random.uniform(key, (num_targets + 1, 2))  # one draw for every block: the targets', the context's
    target_masks = jax.vmap(lambda u: _block(u, grid, target_size))(u[:-1])  # (M, P)
    context_mask = _block(u[-1], grid, context_size) & ~jnp.any(target_masks, axis=0)  # (P,)
    return target_masks, context_mask


def _bool_mask(mask, name, ndim, what):
    mask = _checks._as_array(mask, name)
    if mask.dtype != jnp.bool_:
        raise TypeError(f"{name} must be a boolean mask, got dtype {mask.dtype}")
    if mask.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} axes {what}, got shape {tuple(mask.shape)}")
    return mask


def mask_image(image, mask, patch):
    """The image (H, W) with every ``patch`` x ``patch`` patch outside ``mask`` set to zero;
    ``mask`` (P,) marks the patches row by row, P = (H / patch) (W / patch)."""
    image = _checks.float_array(image, "image", ndim=2, what=" (H, W)")
    patch = _checks.size(patch, "patch")
    H, W = image.shape
    if H % patch or W % patch:
        raise ValueError(f"image of shape {(H, W)} does not split into patches of {patch} x {patch}")
    mask = _bool_mask(mask, "mask", 1, "(P,)")
    _checks.same_shape(mask, "mask", ((H // patch) * (W // patch),),
                       expected_from=f"one entry per {patch} x {patch} patch of the image")
    return _mask_image(image, mask, patch)


@partial(jax.jit, static_argnums=2)
def _mask_image(image, mask, patch):
    H, W = image.shape
    keep = jnp.repeat(jnp.repeat(mask.reshape(H // patch, W // patch), patch, axis=0), patch, axis=1)  # (H, W)
    return jnp.where(keep, image, jnp.zeros((), image.dtype))


@jax.jit
def _predict(predictor, context, target_masks):
    M = target_masks.shape[0]
    h = jnp.concatenate([jnp.broadcast_to(context, (M,) + context.shape), target_masks.astype(context.dtype)],
                        axis=1)  # (M, D + P): what the context shows, and where the block lies
    for i, layer in enumerate(predictor):
        h = h @ layer["W"] + layer["b"][None, :]
        if i < len(predictor) - 1:
            h = jax.nn.relu(h)
    return h  # (M, D)


def predict(predictor, context, target_masks):
    """The predictor's guesses (M, D) of the target embeddings of the M blocks of ``target_masks``
    (M, P): a ReLU MLP ``predictor`` (a list of ``{"W", "b"}`` layers, as the :doc:`simclr` page's
    ``init`` makes them, of input width D + P) applied to the context's embedding ``context`` (D,)
    joined to each block's mask."""
    context = _checks.float_array(context, "context", ndim=1, what=" (D,)")
    target_masks = _bool_mask(target_masks, "target_masks", 2, "(M, P)")
    inputs, outputs = _checks.layers(predictor, "predictor")
    D, P = context.shape[0], target_masks.shape[1]
    if inputs != D + P:
        raise ValueError(f"predictor's first layer must take D + P = {D} + {P} inputs (context of shape "
                         f"{tuple(context.shape)}, target_masks of shape {tuple(target_masks.shape)}), got {inputs}")
    return _predict(predictor, context, target_masks)


@jax.jit
def _loss(predictions, targets):
    dtype = jnp.promote_types(jnp.result_type(predictions, targets), jnp.float32)
    t = _normalise(jax.lax.stop_gradient(targets).astype(dtype))  # (M, D)
    return jnp.mean(jnp.sum((predictions.astype(dtype) - t) ** 2, axis=-1))


def jepa_loss(predictions, targets):
    """The squared distance between the ``predictions`` (M, D) and the target encoder's embeddings
    ``targets`` (M, D) of the M blocks, each target normalised over its D features and with a
    stop-gradient, averaged over the blocks. A scalar, in float32 (float64 for float64 input); batch
    it with :func:`jax.vmap`."""
    predictions = _checks.float_array(predictions, "predictions", ndim=2, what=" (M, D)")
    targets = _checks.float_array(targets, "targets", ndim=2, what=" (M, D)")
    _checks.same_shape(targets, "targets", predictions.shape, expected_from="the shape of predictions")
    return _loss(predictions, targets)
