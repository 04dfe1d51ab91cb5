r"""Mixup and CutMix
================

Train on blends of pairs of examples, either averaged pixel by pixel (mixup) or with a rectangle of
one image pasted into the other (CutMix), with the labels blended in the same proportion; reach for
them when an image classifier overfits or is over-confident and no more data can be had.

Equation
--------

.. math::

   \lambda \sim \operatorname{Beta}(\alpha, \alpha), \qquad
   \tilde{x}_b = \lambda\, x_b + (1 - \lambda)\, x_{\pi(b)}, \qquad
   \tilde{y}_b = \lambda\, y_b + (1 - \lambda)\, y_{\pi(b)}

   \tilde{x}_b = M \odot x_b + (1 - M) \odot x_{\pi(b)}, \qquad
   \hat{\lambda} = \frac{1}{H W} \sum_{h, w} M_{h w}, \qquad
   \tilde{y}_b = \hat{\lambda}\, y_b + (1 - \hat{\lambda})\, y_{\pi(b)}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_b`, :math:`\tilde{x}_b`
     - image :math:`b` of the batch, channels last; the blended image
     - ``x`` along its batch axis; the returned ``x``
     - ``(H, W, C)`` each, ``(B, H, W, C)`` for the batch
   * - :math:`y_b`, :math:`\tilde{y}_b`
     - one-hot label of image :math:`b`; the blended label
     - ``y`` along its batch axis; the returned ``y``
     - ``(K,)`` each, ``(B, K)`` for the batch
   * - :math:`b`
     - index of an example in the batch
     - (batch axis)
     - scalar
   * - :math:`\pi`
     - a random permutation of the batch: the partner of each example
     - ``perm``
     - ``(B,)``
   * - :math:`\lambda`
     - mixing coefficient, one per batch
     - ``lam``
     - ``()``
   * - :math:`\alpha`
     - concentration of the Beta distribution
     - ``alpha``
     - scalar :math:`> 0`
   * - :math:`M`, :math:`M_{hw}`
     - CutMix mask: 1 where the pixel is the image's own, 0 inside the pasted box
     - ``keep``
     - ``(H, W)``
   * - :math:`\hat{\lambda}`
     - the fraction of pixels actually kept: the label weight of CutMix
     - ``keep.mean()``
     - ``()``
   * - :math:`H`, :math:`W`, :math:`h`, :math:`w`
     - image height and width; a pixel's row and column
     - ``H, W``
     - scalar

Explanation
-----------

**Mixup** :footcite:`zhang2018mixup` replaces each training pair by a convex combination of it and
a partner chosen at random from the same batch, with one coefficient :math:`\lambda` for the images
and the labels. The network is then trained to answer "60 % cat, 40 % dog" for a 60/40 blend, which
asks it to behave *linearly between training examples*: its predictions change smoothly along the
segments joining them instead of jumping at a decision boundary placed arbitrarily close to one of
them. The authors frame it as *vicinal risk minimisation*: instead of minimising the loss on the
training points alone (empirical risk), minimise it on a neighbourhood of every point, here the
segments to the other points. Because cross-entropy is linear in its target, the loss on the mixed
label equals :math:`\lambda` times the loss against :math:`y_b` plus :math:`1 - \lambda` times the
loss against :math:`y_{\pi(b)}`, which is how many implementations write it.

**The mixing coefficient.** :math:`\lambda` is drawn from :math:`\operatorname{Beta}(\alpha,\alpha)`,
which is symmetric about 1/2. Small :math:`\alpha` (0.1 to 0.4 for ImageNet) puts most of the mass
near 0 and 1, so most blends are mild and the training distribution stays close to the data; at
:math:`\alpha = 1` it is uniform; large :math:`\alpha` concentrates it at 1/2, the strongest blending.
*Numerical trap:* float32 numbers near 1 are :math:`6 \times 10^{-8}` apart, so with small
:math:`\alpha` a few draws round to exactly 1 (about 2 % at :math:`\alpha = 0.2`), which leaves that
batch unmixed; this is harmless, but it means the samples are not exactly Beta-distributed near 1.

**CutMix** :footcite:`yun2019cutmix` cuts a rectangle out of each image and fills it with the same
rectangle of the partner. The rectangle has the aspect of the image and the side lengths
:math:`H\sqrt{1-\lambda}` and :math:`W\sqrt{1-\lambda}`, so that it covers about a fraction
:math:`1-\lambda` of the image; its centre is uniform over the image, and it is clipped at the
border. After clipping the pasted area can be smaller than intended, so the label weight is the
fraction :math:`\hat{\lambda}` of pixels that really are the image's own, not the :math:`\lambda`
that was drawn. Unlike mixup's ghostly double exposures, every CutMix pixel is a real pixel of one
real image; the network must recognise an object from part of it (as with cutout, which fills the
hole with zeros) and must also find the second object in its patch.

**The batch is the idea.** Both recipes pair examples *within* a batch by a random permutation,
so they take the whole batch ``(B, H, W, C)``, draw one :math:`\lambda` (and one box) per batch, as
the original implementations do, and need only one forward pass. An example whose partner is itself
(a fixed point of the permutation) is left unchanged. A given ``perm`` with an index outside the
batch, or a NaN ``lam`` for a box, is an error when the values are concrete; under :func:`jax.jit`
they cannot be checked, and JAX's indexing then clamps an index to the last example. The key is split at once into the keys for
:math:`\lambda`, for the permutation and for the box.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.regularization.mixup import cutmix_mask, mix_pairs, paste_box
   H = W = 48
   r, c = jnp.meshgrid(jnp.arange(H), jnp.arange(W), indexing="ij")
   stripes = jnp.stack([(c // 6) % 2 * 0.9, 0.3 + 0 * r, 0.2 + 0 * r], axis=-1)  # red stripes
   disc = ((r - 24) ** 2 + (c - 24) ** 2 < 200) * 0.8
   blob = jnp.stack([0.1 + 0 * r, 0.3 + disc, 0.9 - disc], axis=-1)  # a green disc on blue
   x, y = jnp.stack([stripes, blob]), jnp.eye(2)
   perm = jnp.array([1, 0])
   x_mix, y_mix = mix_pairs(x, y, jnp.array(0.6), perm)
   x_cut, y_cut = paste_box(x, y, cutmix_mask(jax.random.key(3), jnp.array(0.6), H, W), perm)
   panels = [(x[0], "image 0"), (x[1], "image 1"),
             (x_mix[0], f"mixup: labels {y_mix[0, 0]:.2f} / {y_mix[0, 1]:.2f}"),
             (x_cut[0], f"CutMix: labels {y_cut[0, 0]:.2f} / {y_cut[0, 1]:.2f}")]
   fig, axes = plt.subplots(1, 4, figsize=(9, 2.7))
   for ax, (img, title) in zip(axes, panels):
       ax.imshow(jnp.clip(img, 0, 1))
       ax.set_title(title, fontsize=8)
       ax.axis("off")
   fig.tight_layout()

.. admonition:: Intuition

   Mixup is a double exposure: two photographs printed on one sheet, with a caption that says how
   much of each went in. A learner shown only clean photos may draw the border between cat and
   dog anywhere in the empty space between them; shown the blends with honest captions, it learns
   to fade from one answer to the other along the way. CutMix is a collage instead, a patch of
   one photo glued onto another, captioned by area.

Inductive bias
--------------

Mixup assumes that the label changes linearly along the straight line between two inputs, which is
false pixel for pixel (a 50/50 blend of a cat and a dog is neither) but works as a smoothness prior:
it favours simple, linear behaviour away from the training points and so calibrates confidence
there. CutMix assumes instead that an object's label is carried by its parts, in proportion to
their area: a picture that is 30 % dog is 30 % "dog". Neither suits tasks where a small part decides
the label (a small lesion, one digit of a number) or where blends are not valid inputs at all
(text tokens, graphs), where mixing is done on embeddings instead.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.regularization.mixup import cutmix, mix_pairs, mixup, sample_mixing
>>> x = jnp.stack([jnp.zeros((4, 4, 1)), jnp.ones((4, 4, 1))])  # (B, H, W, C): a black and a white image
>>> y = jnp.eye(2)
>>> x_mix, y_mix = mix_pairs(x, y, jnp.array(0.75), jnp.array([1, 0]))
>>> float(x_mix[0].mean()), y_mix[0]  # 75 % black, 25 % white, in pixels and in labels
(0.25, Array([0.75, 0.25], dtype=float32))
>>> lam, perm = sample_mixing(jax.random.key(0), 2, 0.4)
>>> bool(0.0 <= lam <= 1.0), perm.shape
(True, (2,))
>>> x_mix, y_mix = mixup(jax.random.key(0), x, y, 0.4)
>>> y_mix.sum(axis=1)  # still distributions
Array([1., 1.], dtype=float32)
>>> x_cut, y_cut = cutmix(jax.random.key(1), x, y, 1.0)
>>> x_cut[0, :, :, 0]  # a white box pasted into the black image
Array([[0., 0., 0., 0.],
       [0., 1., 1., 0.],
       [0., 1., 1., 0.],
       [0., 0., 0., 0.]], dtype=float32)
>>> y_cut  # label weights are the pixel fractions, 12/16 and 4/16
Array([[0.75, 0.25],
       [0.25, 0.75]], dtype=float32)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "sample_mixing": ("batch_size",),
    "mix_pairs": (),
    "mixup": (),
    "cutmix_mask": ("height", "width"),
    "paste_box": (),
    "cutmix": (),
}


def _check_batch(x, y, perm=None):
    x = _checks.float_array(x, "x", ndim=4, what=" (B, H, W, C)")
    y = _checks.float_array(y, "y", ndim=2, what=" (B, K)")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y must be one-hot labels (B, K) with B = {x.shape[0]} like x, got shape {y.shape}")
    if perm is None:
        return x, y
    perm = _checks.same_shape(_checks.int_array(perm, "perm"), "perm", (x.shape[0],), expected_from="(B,)")
    return x, y, _checks.check_range(perm, "perm", 0, x.shape[0])


def _check_alpha(alpha):
    if not isinstance(alpha, jax.core.Tracer) and not np.all(np.asarray(alpha) > 0):
        raise ValueError(f"alpha must be > 0 (the Beta distribution's concentration), got {alpha}")


def sample_mixing(key, batch_size, alpha):
    """Draw the mixing coefficient ``lam ~ Beta(alpha, alpha)`` and a random pairing ``perm`` of the batch."""
    _check_alpha(alpha)
    batch_size = _checks.size(batch_size, "batch_size")
    lam, k_perm = _mixing_coefficient(key, alpha)
    return lam, _permutation(k_perm, batch_size)


# The public functions check their input in Python, then run compiled cores (sizes static): the
# page's examples, the tests and the bad-input checks share one program per shape instead of
# dispatching each operation eagerly. The Beta draw, whose sampler is slow to compile, is a program
# of its own that every batch size shares.
@jax.jit
def _mixing_coefficient(key, alpha):
    k_lam, k_perm = jax.random.split(key)
    return jax.random.beta(k_lam, alpha, alpha), k_perm


_permutation = jax.jit(jax.random.permutation, static_argnums=1)


def mix_pairs(x, y, lam, perm):
    """Mixup with a given ``lam`` and pairing: ``lam * x + (1 - lam) * x[perm]``, and the same for ``y``."""
    x, y, perm = _check_batch(x, y, perm)
    lam = _checks.float_array(lam, "lam", ndim=0, what=" (a scalar)")
    return _mix_pairs(x, y, lam, perm)


def _mix_pairs_fn(x, y, lam, perm):
    x_lam, y_lam = jnp.asarray(lam, x.dtype), jnp.asarray(lam, y.dtype)
    return x_lam * x + (1 - x_lam) * x[perm], y_lam * y + (1 - y_lam) * y[perm]


_mix_pairs = jax.jit(_mix_pairs_fn)


def mixup(key, x, y, alpha):
    """Mixup of a batch ``x`` (B, H, W, C) with one-hot ``y`` (B, K): one ``lam ~ Beta(alpha, alpha)`` per batch."""
    x, y = _check_batch(x, y)
    lam, perm = sample_mixing(key, x.shape[0], alpha)
    return mix_pairs(x, y, lam, perm)


def cutmix_mask(key, lam, height, width):
    """CutMix keep mask (H, W): False inside a box of sides ``H sqrt(1 - lam)``, ``W sqrt(1 - lam)``.

    The box's centre is uniform over the image and the box is clipped at the border, so it may cover
    less than ``1 - lam`` of the image; the label weight is computed from the mask, not from ``lam``.
    """
    lam = _checks.check_no_nan(_checks.float_array(lam, "lam", ndim=0, what=" (a scalar)"), "lam")
    height, width = _checks.size(height, "height"), _checks.size(width, "width")
    return _cutmix_mask(key, lam, height, width)


def _cutmix_mask_fn(key, lam, height, width):
    k_row, k_col = jax.random.split(key)
    side = jnp.sqrt(1.0 - lam)
    cut_h = jnp.floor(height * side).astype(jnp.int32)
    cut_w = jnp.floor(width * side).astype(jnp.int32)
    centre_row = jax.random.randint(k_row, (), 0, height)
    centre_col = jax.random.randint(k_col, (), 0, width)
    top, left = centre_row - cut_h // 2, centre_col - cut_w // 2
    rows, cols = jnp.arange(height), jnp.arange(width)
    in_rows = (rows >= top) & (rows < top + cut_h)  # (H,); clipping at the border is implicit
    in_cols = (cols >= left) & (cols < left + cut_w)  # (W,)
    return ~(in_rows[:, None] & in_cols[None, :])  # (H, W)


_cutmix_mask = jax.jit(_cutmix_mask_fn, static_argnums=(2, 3))


def paste_box(x, y, keep, perm):
    """CutMix with a given mask and pairing: pixels of ``x[perm]`` where ``keep`` is False.

    The labels are weighted by the fraction of pixels kept from each image.
    """
    x, y, perm = _check_batch(x, y, perm)
    keep = jnp.asarray(keep)
    if keep.dtype != jnp.bool_:
        raise TypeError(f"keep must be a boolean mask (H, W), got dtype {keep.dtype}")
    if keep.shape != x.shape[1:3]:
        raise ValueError(f"keep must have shape (H, W) = {x.shape[1:3]}, got shape {keep.shape}")
    return _paste_box(x, y, keep, perm)


def _paste_box_fn(x, y, keep, perm):
    x_mixed = jnp.where(keep[None, :, :, None], x, x[perm])  # (B, H, W, C)
    lam_hat = jnp.mean(keep, dtype=jnp.float32).astype(y.dtype)  # the actual kept area
    return x_mixed, lam_hat * y + (1 - lam_hat) * y[perm]


_paste_box = jax.jit(_paste_box_fn)


def cutmix(key, x, y, alpha):
    """CutMix of a batch ``x`` (B, H, W, C) with one-hot ``y`` (B, K): one box and one pairing per batch."""
    x, y = _check_batch(x, y)
    B, H, W, _ = x.shape
    k_mix, k_box = _split(key)
    lam, perm = sample_mixing(k_mix, B, alpha)
    return paste_box(x, y, cutmix_mask(k_box, lam, H, W), perm)


_split = jax.jit(jax.random.split)
