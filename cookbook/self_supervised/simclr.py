r"""SimCLR and the NT-Xent loss
===========================

Learn a representation without labels by making two random augmentations of the same image agree
and every other image in the batch disagree: the contrastive loss (InfoNCE, NT-Xent) behind
SimCLR, and the first defence against the collapse of every embedding onto one point.

Equation
--------

.. math::

   s_{ij} = \frac{z_i^\top z_j}{\lVert z_i \rVert\, \lVert z_j \rVert}, \qquad
   \ell_i = -\log \frac{\exp(s_{i\,p(i)} / \tau)}{\sum_{k \ne i} \exp(s_{ik} / \tau)}

   \mathcal{L} = \frac{1}{2B} \sum_{i=1}^{2B} \ell_i, \qquad
   p(i) = i \pm B \ \text{(the other view of the same image)}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`z_i`, :math:`z_j`
     - embedding :math:`i` of the :math:`2B` in the batch: rows of the first view, then of the second
     - row :math:`i` of ``z``, stacked from ``z1`` and ``z2``
     - ``(D,)``
   * - :math:`s_{ij}`, :math:`s_{ik}`
     - cosine similarity of embeddings :math:`i` and :math:`j` (or :math:`k`)
     - ``similarity``
     - ``(2B, 2B)``
   * - :math:`\tau`
     - temperature: how sharply the softmax separates the positive from the negatives
     - ``temperature``
     - scalar
   * - :math:`p(i)`
     - index of the positive of anchor :math:`i`, its other view
     - ``positive``
     - ``(2B,)``
   * - :math:`k`
     - any index other than the anchor's own: the positive and the :math:`2B - 2` negatives
     - the columns of ``logits`` left unmasked
     - scalar
   * - :math:`\ell_i`
     - loss of anchor :math:`i`: a cross-entropy whose correct class is its positive
     - ``losses``
     - ``(2B,)``
   * - :math:`\mathcal{L}`
     - the NT-Xent loss, the mean over the :math:`2B` anchors
     - the value returned by ``nt_xent``
     - scalar
   * - :math:`B`
     - number of images in the batch (each seen twice)
     - ``B``
     - scalar

Explanation
-----------

SimCLR :footcite:`chen2020simclr` draws two augmentations of each of :math:`B` images (here a
shift of a pixel, dropped pixels and noise, ``augment``), embeds all :math:`2B` of them with one
encoder, and asks each embedding to pick its twin out of the other :math:`2B - 1`. Each anchor's
loss is a softmax cross-entropy over cosine similarities, with its other view as the correct class
and the remaining :math:`2B - 2` embeddings as negatives; the InfoNCE bound of van den Oord et al.
:footcite:`oord2018cpc` reads the same loss as a lower bound on the mutual information between the
views. The anchor itself is left out of the denominator: its similarity to itself is always 1
and would teach nothing.

The loss is a softmax cross-entropy, so the code computes it as one: the logits
:math:`s_{ik}/\tau`, the diagonal masked with the smallest float (never :math:`-\infty`, which
would turn a gradient into NaN), and :math:`\ell_i = \operatorname{logsumexp}_k - s_{i\,p(i)}/\tau`,
which subtracts the row's maximum before any exponential. The embeddings are normalised first, in
float32 whatever their dtype, so the loss ignores their length.

**Collapse.** If the encoder maps every image to the same point, every similarity is 1 and every
anchor's softmax is uniform over :math:`2B - 1` candidates: the loss is :math:`\log(2B - 1)`
whatever the temperature (:math:`\log 7 \approx 1.946` for :math:`B = 4`). That is far from
the minimum, so the negatives push a collapsing encoder apart: the loss rewards *uniformity* on
the sphere as well as *alignment* of the two views :footcite:`wang2020hypersphere`. A loss without
negatives, such as pulling the views together alone, is minimised by the constant map; the later
pages of this chapter avoid it by other means.

**Temperature.** A small :math:`\tau` sharpens the softmax so that the hardest negatives (the most
similar ones) dominate the gradient; a large one spreads the gradient over all negatives equally.
As :math:`\tau \to 0` the loss goes to 0 when every positive is the nearest neighbour of its anchor
and grows without bound otherwise. SimCLR used :math:`\tau` between 0.1 and 0.5.

.. admonition:: Intuition

   A game of pairs with face-down cards: each card has exactly one partner (the same photograph,
   cropped and tinted differently), and a player is scored on finding it among all the others. To
   win, the player must notice what stays the same under cropping and tinting, which is the
   content of the picture; calling every card "a card" scores no better than chance.

Inductive bias
--------------

The augmentations are the prior: whatever they change (a shift, a few missing pixels, noise) the
representation learns to ignore, and whatever they keep it learns to encode. A digit shifted by one
pixel is still the same digit, so these views teach the encoder the digit and not its position. An
augmentation that changed the class (a rotation that turns a 6 into a 9) would teach the wrong
invariance. The negatives assume that two different images in the batch are different things;
duplicates or images of the same class are pushed apart too, and large batches make that
error small.

Example
-------

The loss of two aligned views is below the loss of collapsed embeddings, which is
:math:`\log(2B - 1)`; an augmentation keeps an image's shape:

>>> import jax, jax.numpy as jnp
>>> from cookbook.self_supervised.simclr import augment, nt_xent
>>> k_z, k_n, k_a = jax.random.split(jax.random.key(0), 3)
>>> z1 = jax.random.normal(k_z, (4, 3))
>>> z2 = z1 + 0.1 * jax.random.normal(k_n, (4, 3))
>>> round(float(nt_xent(z1, z2, 0.5)), 3) < round(float(jnp.log(7.0)), 3)
True
>>> collapsed = jnp.ones((4, 3))
>>> round(float(nt_xent(collapsed, collapsed, 0.5)), 3), round(float(jnp.log(7.0)), 3)
(1.946, 1.946)
>>> view = augment(k_a, jnp.ones((8, 8)), max_shift=1)
>>> view.shape
(8, 8)

The small encoder of the tests, an MLP from a flattened image to an embedding, written for one
image:

>>> from cookbook.self_supervised.simclr import encode, init
>>> params = init(jax.random.key(1), sizes=(64, 16, 8))
>>> encode(params, view).shape
(8,)

Implementation notes
--------------------

``optax.losses.ntxent(embeddings, labels, temperature)`` computes the same loss from the
:math:`2B` stacked embeddings and a label per row that names its group (here ``[0..B-1, 0..B-1]``);
the tests check that the two agree. SimCLR computes the loss on a projection head's output and
keeps the representation below the head for downstream tasks; the loss here does not care which.

**It learns.** On scikit-learn's digits, the tests train a 64-128-8 MLP (``init``, ``encode``) for
400 Adam steps on batches of 128 images, two views each (a shift of up to one pixel, 20 % of the
pixels dropped, noise of 0.1), at :math:`\tau = 0.1`, without a label. A 10-nearest-neighbour
classifier on the cosine of its 8-dimensional embeddings then reads 500 held-out digits with an
accuracy of at least 0.90, at least 0.10 above the same network at its random initialisation.
"""

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"nt_xent": (), "augment": ("max_shift",), "encode": ()}

EPS = 1e-12  # floor of an embedding's norm: a zero vector normalises to zero, not NaN


# The public functions check their input in Python, then run one compiled program (called eagerly,
# each operation would otherwise compile on its own for every new shape). Traced inside a caller's
# jax.jit (the training run, the jit check), that program is one call in the caller's, which XLA
# inlines: the digits run trains to the same parameters as with the operations traced in place, bit
# for bit, and the jit check traces each function to the program its eager call ran.


def nt_xent(z1, z2, temperature):
    """The NT-Xent loss of two views ``z1``, ``z2`` (B, D): row ``b`` of each is an embedding of
    image ``b``. Cosine similarities divided by ``temperature``; each of the 2B embeddings has its
    other view as the positive and the other 2B - 2 as negatives; the mean over the 2B anchors.

    Computed in float32 (float64 under x64 for float64 input) and returned as a scalar.
    """
    z1 = _checks.float_array(z1, "z1", ndim=2, what=" (B, D)")
    z2 = _checks.float_array(z2, "z2", ndim=2, what=" (B, D)")
    _checks.same_shape(z2, "z2", z1.shape, expected_from="the shape of z1")
    temperature = _checks.positive(temperature, "temperature")
    return _nt_xent_compiled(z1, z2, temperature)


def _nt_xent(z1, z2, temperature):
    B = z1.shape[0]
    dtype = jnp.promote_types(jnp.result_type(z1, z2), jnp.float32)
    z = jnp.concatenate([z1, z2], axis=0).astype(dtype)  # (2B, D)
    z = z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, axis=1, keepdims=True), EPS**2))  # finite gradient at 0
    similarity = z @ z.T  # (2B, 2B)
    logits = similarity / temperature
    self_mask = jnp.eye(2 * B, dtype=bool)
    logits = jnp.where(self_mask, jnp.finfo(dtype).min, logits)  # the anchor is not its own candidate
    positive = jnp.concatenate([jnp.arange(B, 2 * B), jnp.arange(B)])  # (2B,): the other view
    positive_logits = jnp.take_along_axis(logits, positive[:, None], axis=1)[:, 0]
    losses = jax.nn.logsumexp(logits, axis=1) - positive_logits  # (2B,)
    return losses.mean()


_nt_xent_compiled = jax.jit(_nt_xent)


def augment(key, image, *, max_shift=1, noise=0.1, drop=0.1):
    """A random view of one image (H, W): shifted by up to ``max_shift`` pixels in each direction
    (zeros shift in), each pixel dropped to zero with probability ``drop``, Gaussian noise of
    standard deviation ``noise`` added. Batch it with :func:`jax.vmap` over keys and images.
    """
    image = _checks.float_array(image, "image", ndim=2, what=" (H, W)")
    max_shift = _checks.size(max_shift, "max_shift", minimum=0)
    noise = _checks.positive(noise, "noise", allow_zero=True)
    drop = _checks.positive(drop, "drop", allow_zero=True)
    if isinstance(drop, (int, float)) and drop >= 1:
        raise ValueError(f"drop must be a probability below 1, got {drop}")
    if _checks.is_concrete((noise, drop)):  # numbers (the defaults): static, so the core takes key and image as they come
        return _augment_static(key, image, max_shift, float(noise), float(drop))
    return _augment_compiled(key, image, max_shift, noise, drop)


def _augment(key, image, max_shift, noise, drop):
    H, W = image.shape
    k_shift, k_drop, k_noise = jax.random.split(key, 3)
    padded = jnp.pad(image, max_shift)  # (H + 2 max_shift, W + 2 max_shift)
    start = jax.random.randint(k_shift, (2,), 0, 2 * max_shift + 1)
    view = jax.lax.dynamic_slice(padded, (start[0], start[1]), (H, W))
    keep = jax.random.bernoulli(k_drop, 1.0 - drop, (H, W))
    view = jnp.where(keep, view, 0.0)
    return (view + noise * jax.random.normal(k_noise, (H, W), view.dtype)).astype(image.dtype)


_augment_compiled = jax.jit(_augment, static_argnums=2)  # max_shift
_augment_static = jax.jit(_augment, static_argnums=(2, 3, 4))  # max_shift, noise, drop


def init(key, *, sizes):
    """He-normal weights and zero biases of an MLP with layer widths ``sizes`` (input first)."""
    if not isinstance(sizes, (tuple, list)) or len(sizes) < 2:
        raise TypeError(f"sizes must be a tuple of at least two layer widths, got {sizes!r}")
    sizes = tuple(_checks.size(n, f"sizes[{i}]") for i, n in enumerate(sizes))
    return _init_compiled(key, sizes)


def _init(key, sizes):
    keys = jax.random.split(key, len(sizes) - 1)
    # the barrier keeps XLA from folding the scale into the draw's own constants: the weights are
    # the draws times the scale, bit for bit as an eager init gives them
    return [{"W": jax.lax.optimization_barrier(jax.random.normal(k, (n_in, n_out))) * jnp.sqrt(2.0 / n_in),
             "b": jnp.zeros(n_out)}
            for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:])]


_init_compiled = jax.jit(_init, static_argnums=1)  # sizes


def encode(params, image):
    """The embedding (D,) of one image (H, W) by the MLP ``params``: ReLU between layers, none after
    the last. Batch it with :func:`jax.vmap`."""
    image = _checks.float_array(image, "image", ndim=2, what=" (H, W)")
    width = image.shape[0] * image.shape[1]  # the flattened image's
    checked = []
    for i, layer in enumerate(params):
        W = _checks.float_array(layer["W"], f"params[{i}]['W']", ndim=2, what=" (inputs, outputs)")
        b = _checks.float_array(layer["b"], f"params[{i}]['b']", ndim=1, what=" (outputs,)")
        if W.shape[0] != width and i == 0:
            raise ValueError(f"image of shape {image.shape} flattens to {width} pixels, but params[0]['W'] "
                             f"takes {W.shape[0]} inputs (shape {W.shape})")
        if W.shape[0] != width:
            raise ValueError(f"params[{i}]['W'] must have {width} rows (the width before it), got shape {W.shape}")
        _checks.same_shape(b, f"params[{i}]['b']", (W.shape[1],), expected_from="the columns of W")
        checked.append({"W": W, "b": b})
        width = W.shape[1]
    return _encode_compiled(checked, image)


def _encode(params, image):
    h = image.reshape(-1)  # (H W,)
    for i, layer in enumerate(params):
        h = h @ layer["W"] + layer["b"]
        if i < len(params) - 1:
            h = jax.nn.relu(h)
    return h


_encode_compiled = jax.jit(_encode)
