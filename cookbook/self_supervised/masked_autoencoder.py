r"""Masked autoencoder
==================

Learn a representation of images without labels by hiding most of an image's patches, encoding
only the few that remain, and reconstructing the hidden ones with a light decoder: the loss counts
only the patches the encoder did not see.

Equation
--------

.. math::

   \pi = \operatorname{argsort}(u), \quad u \sim \mathcal{U}(0, 1)^N, \qquad
   \mathcal{V} = \{\pi_1, \dots, \pi_K\}, \quad K = N - M

   h = f_\theta\big([\, x_i E + e_i \,]_{i \in \mathcal{V}}\big), \qquad
   \hat{x} = g_\phi\big(\operatorname{unshuffle}_\pi[\, h W + b;\; m, \dots, m \,] + d\big)

   \mathcal{L} = \frac{1}{M P} \sum_{i \notin \mathcal{V}}
   \lVert \hat{x}_i - \tilde{x}_i \rVert^2, \qquad
   \tilde{x}_i = x_i \ \text{or}\ \frac{x_i - \operatorname{mean}(x_i)}{\sqrt{\operatorname{var}(x_i) + \epsilon}}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_i`, :math:`N`, :math:`P`
     - patch :math:`i` of the image, flattened; the number of patches; the values in a patch
     - rows of ``patches``; ``N``; ``P``
     - ``(N, P)``
   * - :math:`u`, :math:`\pi`
     - uniform noise, one number per patch; the random permutation that sorts it
     - ``noise``, ``shuffle``
     - ``(N,)``
   * - :math:`M`, :math:`K`
     - the number of masked patches, ``round(mask_ratio * N)``, and of visible ones
     - ``M``, ``K``
     - scalars
   * - :math:`\mathcal{V}`
     - the visible patches, the first :math:`K` of the permutation
     - ``visible``; ``masked`` is true off it
     - ``(K,)``; ``(N,)``
   * - :math:`E`, :math:`e_i`
     - the patch embedding; the encoder's learned position embedding of patch :math:`i`
     - ``params["embed"]``; ``params["pos"]``
     - ``(P, D)``; ``(N, D)``
   * - :math:`f_\theta`, :math:`h`
     - the encoder (a pre-norm transformer stack) and its output for the visible patches only
     - ``params["encoder"]``; ``encoded``
     - ``(K, D)``
   * - :math:`W`, :math:`b`
     - the projection from the encoder's width to the decoder's
     - ``params["to_decoder"]``
     - ``(D, D')``, ``(D',)``
   * - :math:`m`
     - the learned mask token, one copy for each masked patch
     - ``params["mask_token"]``
     - ``(D',)``
   * - :math:`\operatorname{unshuffle}_\pi`
     - puts row :math:`j` of the shuffled sequence back at patch :math:`\pi_j`
     - ``restore``, the inverse permutation
     - ``(N,)``
   * - :math:`d`, :math:`g_\phi`
     - the decoder's position embeddings; the decoder (a smaller stack and a linear head)
     - ``params["decoder_pos"]``; ``params["decoder"]``, ``params["head"]``
     - ``(N, D')``
   * - :math:`\hat{x}`, :math:`\tilde{x}`
     - the reconstruction of every patch; the target, raw or normalised per patch
     - ``predictions``; ``target``
     - ``(N, P)``
   * - :math:`\epsilon`
     - added to a patch's variance in the normalised target
     - ``EPS``
     - scalar
   * - :math:`\mathcal{L}`
     - the mean squared error over the masked patches only
     - the value returned by ``masked_patch_loss``
     - scalar

Explanation
-----------

The masked autoencoder :footcite:`he2022masked` cuts an image into :math:`N` patches, as the
:doc:`/docs/chapters/transformers/vision_transformer` does, hides a random three quarters of them,
and asks a network to paint them back. Three choices make it work.

**A high masking ratio.** Neighbouring patches of an image are so alike that hiding a few is
solved by interpolation; hiding 75 % leaves too little to interpolate from, so the network must
infer the object. The random subset is drawn by sorting :math:`N` uniform numbers: the first
:math:`K` indices of the sorted order are kept (every subset of size :math:`K` is equally likely),
the count is fixed, so shapes stay static under :func:`jax.jit`, and the inverse permutation
``restore`` puts any sequence in that order back in patch order.

**An encoder that sees only the visible patches.** Each visible patch is embedded, given its
position, and only those :math:`K` tokens pass through the encoder: no mask token ever enters
it, it processes a quarter of the tokens at 75 % masking (its attention a sixteenth of the
pairs), and its output does not change when a hidden patch changes. The encoder is the part kept after pre-training.

**A light decoder with mask tokens.** The encoder's outputs are projected to the decoder's
width (smaller in the paper), one shared learned mask token stands in for each hidden patch, the
sequence is unshuffled, the decoder's own position embeddings say which patch each token is, and
a shallower transformer and a linear head predict the pixels of every patch.

**The loss** is the mean squared error over the hidden patches only: the visible ones could be
copied, and scoring them would reward copying. Its gradient with respect to the visible targets
is exactly zero. With ``normalize=True`` the target of each patch is its pixels standardised by
the patch's own mean and variance, which the paper found gives better features: the network is
asked for the shape of the light inside a patch, not its brightness.

.. admonition:: Intuition

   A jigsaw puzzle with three pieces in four missing: to draw the missing pieces it is not
   enough to continue the edges of the pieces you hold, you have to recognise what the picture
   shows. BERT's masked words (:doc:`masked_language_model`) are the same exercise for text,
   with a far lower ratio (15 %), since a word carries much more meaning than a patch.

Inductive bias
--------------

The objective assumes that the parts of an image predict one another, and that predicting pixels
teaches what matters. It spends capacity on every pixel detail, noise and texture included,
that a classifier would ignore, which is why its features are usually fine-tuned rather than read
by a linear probe, and what joint-embedding methods change by predicting embeddings rather than
pixels. No augmentation is needed beyond the masking itself. The transformer knows nothing of
two-dimensional space except through the learned position embeddings.

Example
-------

An image of 8 x 8 pixels (a digit's size) in 16 patches of 2 x 2, twelve of them hidden; a loss
that ignores the visible patches, and the loss on one image of the model that the tests train:

>>> import jax, numpy as np
>>> from cookbook.self_supervised.masked_autoencoder import (
...     init, decode, encode, mae_loss, masked_patch_loss, random_masking, unpatchify)
>>> from cookbook.transformers.vision_transformer import patchify
>>> image = np.arange(64, dtype=np.float32).reshape(8, 8, 1)
>>> patches = patchify(image, 2)
>>> patches[0]
Array([0., 1., 8., 9.], dtype=float32)
>>> bool((unpatchify(patches, (8, 8, 1), 2) == image).all())
True
>>> visible, restore, masked = random_masking(jax.random.key(0), 16, mask_ratio=0.75)
>>> visible.shape, int(masked.sum())
((4,), 12)
>>> wrong_where_seen = patches.at[visible].add(100.0)
>>> float(masked_patch_loss(wrong_where_seen, patches, masked))
0.0
>>> params = init(jax.random.key(1), num_patches=16, patch_dim=4, d_model=32, num_layers=2,
...               num_heads=4, decoder_d_model=32, decoder_layers=1)
>>> encoded = encode(params, patches, visible)
>>> encoded.shape
(4, 32)
>>> decode(params, encoded, restore).shape
(16, 4)
>>> float(mae_loss(params, jax.random.key(0), patches, mask_ratio=0.75)) > 0
True

Implementation notes
--------------------

The paper's encoder is a ViT-Large on 16 x 16 pixel patches of 224 x 224 images with fixed
two-dimensional sine-cosine position embeddings and a class token; its decoder has 8 blocks of
width 512. Here the positions are learned, started at unit scale like the sine-cosine ones (at
the usual 0.02 the mask tokens are nearly alike and training was several times slower), there is
no class token, and the perceptrons of both stacks are four times their width. The blocks are the
pre-norm ones of :doc:`/docs/chapters/transformers/transformer_block`. At evaluation the encoder is
given every patch (``visible = arange(N)``).

**It learns.** On scikit-learn's digits, 8 x 8 pixels in 16 patches of 2 x 2, with 12 of the 16
hidden, an encoder of width 32 (2 blocks) and a decoder of width 32 (1 block) trained for 600
Adam steps on batches of 64 reconstruct the hidden patches of 500 held-out digits with a mean
squared error at most 0.85 times that of the best guess which ignores the visible patches (each
patch's mean over the training digits); the test measured 0.78 (0.059 against 0.075). Four
patches of 2 x 2 leave much of a digit undetermined, so no predictor comes near zero.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks
from cookbook.transformers import transformer_block
from cookbook.transformers._boundary import check_params

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "unpatchify": ("image_shape", "patch_size"),
    "random_masking": ("num_patches", "mask_ratio"),
    "encode": (),
    "decode": (),
    "masked_patch_loss": ("normalize",),
    "mae_loss": ("mask_ratio", "normalize"),
}

EPS = 1e-6  # added to a patch's variance in the normalised target (the paper's value)


def unpatchify(patches, image_shape, patch_size):
    """The image (Hi, Wi, C) whose patches, cut row by row as ``patchify`` cuts them, are ``patches``
    (N, patch_size**2 C): the inverse of ``patchify``."""
    patches = _checks.float_array(patches, "patches", ndim=2, what=" (N, P)")
    patch_size = _checks.size(patch_size, "patch_size")
    if not isinstance(image_shape, tuple) or len(image_shape) != 3:
        raise TypeError(f"image_shape must be a tuple (Hi, Wi, C), got {image_shape!r}")
    Hi, Wi, C = (_checks.size(s, "image_shape") for s in image_shape)
    if Hi % patch_size or Wi % patch_size:
        raise ValueError(f"image_shape {image_shape} must divide into patches of patch_size={patch_size}")
    _checks.same_shape(patches, "patches", ((Hi // patch_size) * (Wi // patch_size), patch_size * patch_size * C),
                       expected_from=f"image_shape={image_shape}, patch_size={patch_size}")
    return _unpatchify(patches, (Hi, Wi, C), patch_size)


@functools.partial(jax.jit, static_argnums=(1, 2))  # one compiled program, not one per operation
def _unpatchify(patches, image_shape, p):
    Hi, Wi, C = image_shape
    x = patches.reshape(Hi // p, Wi // p, p, p, C).transpose(0, 2, 1, 3, 4)  # (Hi/p, p, Wi/p, p, C)
    return x.reshape(Hi, Wi, C)


def _counts(num_patches, mask_ratio):
    N = _checks.size(num_patches, "num_patches", minimum=2)
    if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)) or not 0 < mask_ratio < 1:
        raise ValueError(f"mask_ratio must be a number strictly between 0 and 1, got {mask_ratio!r}")
    M = int(round(mask_ratio * N))
    if not 1 <= M <= N - 1:
        raise ValueError(f"mask_ratio={mask_ratio} of num_patches={N} masks {M} patches; "
                         "at least one must be masked and one visible")
    return N, M


def random_masking(key, num_patches, *, mask_ratio=0.75):
    """A uniformly random split of ``num_patches`` patches into K visible and M = round(mask_ratio N)
    masked: ``(visible, restore, masked)``, the indices (K,) of the visible patches in shuffled order,
    the inverse permutation (N,) that unshuffles, and a boolean mask (N,) true on the masked patches."""
    N, M = _counts(num_patches, mask_ratio)
    return _random_masking(key, N, N - M)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _random_masking(key, N, K):
    noise = jax.random.uniform(key, (N,))
    shuffle = jnp.argsort(noise)  # a uniform random permutation of the patches
    restore = jnp.argsort(shuffle)  # its inverse: shuffled[restore] is in patch order
    return shuffle[:K], restore, restore >= K  # patch i is masked when its rank is K or more


def init(key, *, num_patches, patch_dim, d_model, num_layers, num_heads, decoder_d_model, decoder_layers):
    """The encoder (patch embedding, positions, ``num_layers`` pre-norm blocks of width ``d_model``)
    and the decoder (projection, mask token, positions, ``decoder_layers`` blocks of width
    ``decoder_d_model``, a linear head to ``patch_dim`` values); ``num_heads`` in both."""
    sizes = dict(num_patches=_checks.size(num_patches, "num_patches", minimum=2),
                 patch_dim=_checks.size(patch_dim, "patch_dim"), d_model=_checks.size(d_model, "d_model"),
                 num_layers=_checks.size(num_layers, "num_layers"), num_heads=_checks.size(num_heads, "num_heads"),
                 decoder_d_model=_checks.size(decoder_d_model, "decoder_d_model"),
                 decoder_layers=_checks.size(decoder_layers, "decoder_layers"))
    for name in ("d_model", "decoder_d_model"):
        if sizes[name] % sizes["num_heads"]:
            raise ValueError(f"num_heads must divide {name}, got {name}={sizes[name]} and num_heads={num_heads}")
    return _init(key, *sizes.values())


def _init(key, N, P, D, L, H, D_dec, L_dec):
    shapes = jax.eval_shape(lambda: {  # the tree of init's arrays, traced, never computed
        "embed": {"W": jnp.zeros((P, D)), "b": jnp.zeros((D,))},
        "pos": jnp.zeros((N, D)),
        "encoder": transformer_block._init_stack(jax.random.key(0), L, D, H, 4 * D),
        "to_decoder": {"W": jnp.zeros((D, D_dec)), "b": jnp.zeros((D_dec,))},
        "mask_token": jnp.zeros((D_dec,)),
        "decoder_pos": jnp.zeros((N, D_dec)),
        "decoder": transformer_block._init_stack(jax.random.key(0), L_dec, D_dec, H, 4 * D_dec),
        "head": {"W": jnp.zeros((D_dec, P)), "b": jnp.zeros((P,))},
    })
    # positions as loud as the patches (the mask tokens differ only by them); the head starts at zero
    return draw_weights(key, shapes, {"pos": 1.0, "decoder_pos": 1.0, "mask_token": 0.02, "head/W": 0.0})


def draw_weights(key, shapes, scales=None):
    """Arrays of the tree ``shapes`` (of ``jax.ShapeDtypeStruct``) drawn in one random call: a
    layer norm's ``scale`` one, biases zero, weights normal with variance 1 / fan-in (2 / fan-in for
    the first layer of a block's perceptron, which a ReLU follows), as the transformer block's
    ``init`` draws them; ``scales`` maps a path (``"pos"``, ``"head/W"``) to a standard deviation of
    its own. The draw is one compiled program, whatever the number of arrays."""
    scales = scales or {}
    flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    sizes = [math.prod(leaf.shape) for _, leaf in flat]
    normals = jax.random.normal(key, (sum(sizes),))
    xp = jnp if isinstance(normals, jax.core.Tracer) else np  # traced under jit or eval_shape
    normals = normals if xp is jnp else np.asarray(normals)  # else sliced in NumPy: no compiling
    leaves, start = [], 0
    for (path, leaf), n in zip(flat, sizes):
        names = [str(getattr(k, "key", getattr(k, "idx", ""))) for k in path]
        z = normals[start:start + n].reshape(leaf.shape)
        start += n
        shape = leaf.shape
        if "/".join(names) in scales:
            std = scales["/".join(names)]
        elif names[-1] == "scale":
            z, std = xp.ones(shape, np.float32), 1.0
        elif names[-1] == "bias" or names[-1].startswith("b"):
            std = 0.0
        elif names[-1] in ("W_q", "W_k", "W_v"):  # (L, d_model, H, Dh)
            std = 1.0 / math.sqrt(shape[-3])
        elif names[-1] == "W_o":  # (L, H, Dh, d_model)
            std = 1.0 / math.sqrt(shape[-3] * shape[-2])
        else:  # (..., fan_in, fan_out)
            std = math.sqrt((2.0 if names[-3:-1] == ["mlp", "0"] else 1.0) / shape[-2])
        leaf = z * np.float32(std)  # float32, as jax.random draws
        # placed as jnp.asarray would place it, without compiling a program for each leaf's shape
        leaves.append(leaf if xp is jnp else jax.device_put(leaf))
    return jax.tree.unflatten(treedef, leaves)


def _check_params(params):
    """``params`` shaped as :func:`init` makes them, for the sizes read from the tree; returns (N, P)."""
    try:
        P, D = params["embed"]["W"].shape
        N, D_dec = params["decoder_pos"].shape
        L, H = params["encoder"]["blocks"]["attn"]["W_o"].shape[:2]
        L_dec = params["decoder"]["blocks"]["attn"]["W_o"].shape[0]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"params must be the dict that init returns, got one without the usual shapes ({error!r})")
    try:
        check_params(params, init, num_patches=N, patch_dim=P, d_model=D, num_layers=L, num_heads=H,
                     decoder_d_model=D_dec, decoder_layers=L_dec)
    except (ValueError, TypeError) as error:
        if "params" in str(error):
            raise
        raise ValueError(f"params must be the dict that init returns; its shapes give no valid model ({error})") from None
    return N, P


def _check_patches(patches, N, P, name="patches"):
    patches = _checks.float_array(patches, name, ndim=2, what=" (N, P)")
    return _checks.same_shape(patches, name, (N, P), expected_from="(num_patches, patch_dim) of params")


def _check_indices(x, name, N, length=None):
    x = _checks.int_array(x, name, ndim=1, what=" (K,)" if length is None else f" ({length},)")
    if length is not None:
        _checks.same_shape(x, name, (length,), expected_from="one per patch")
    if not 1 <= x.shape[0] <= N:
        raise ValueError(f"{name} must hold between 1 and {N} patch indices, got shape {tuple(x.shape)}")
    return _checks.check_range(x, name, 0, N)


def encode(params, patches, visible):
    """The encoder's output (K, D) for the visible patches only: ``patches[visible]`` (K of the
    ``patches`` (N, P)) embedded, given their positions, through the encoder's blocks. The other
    patches are never read. One image; batch with :func:`jax.vmap`."""
    N, P = _check_params(params)
    patches = _check_patches(patches, N, P)
    visible = _check_indices(visible, "visible", N)
    return _encode(params, patches, visible)


@jax.jit
def _encode(params, patches, visible):
    tokens = patches[visible] @ params["embed"]["W"] + params["embed"]["b"][None, :] + params["pos"][visible]  # (K, D)
    return transformer_block._apply_stack(params["encoder"], tokens, None, "pre")  # (K, D), no mask


def decode(params, encoded, restore):
    """Predictions (N, P) of every patch from the encoder's output ``encoded`` (K, D) for the visible
    patches, in the shuffled order of ``random_masking``, and its inverse permutation ``restore`` (N,):
    mask tokens fill the N - K hidden places, ``restore`` puts the sequence back in patch order."""
    N, _ = _check_params(params)
    D = params["embed"]["W"].shape[1]
    encoded = _checks.float_array(encoded, "encoded", ndim=2, what=f" (K, D) with D = {D}")
    _checks.same_shape(encoded, "encoded", (encoded.shape[0], D), expected_from="(K, d_model)")
    restore = _check_indices(restore, "restore", N, length=N)
    if not 1 <= encoded.shape[0] < N:
        raise ValueError(f"encoded must hold between 1 and {N - 1} visible patches, got shape {tuple(encoded.shape)}")
    return _decode(params, encoded, restore)


@jax.jit
def _decode(params, encoded, restore):
    N, K = restore.shape[0], encoded.shape[0]
    y = encoded @ params["to_decoder"]["W"] + params["to_decoder"]["b"][None, :]  # (K, D')
    mask_tokens = jnp.broadcast_to(params["mask_token"], (N - K, y.shape[1]))  # (M, D')
    x = jnp.concatenate([y, mask_tokens])[restore] + params["decoder_pos"]  # (N, D'), in patch order
    h = transformer_block._apply_stack(params["decoder"], x, None, "pre")  # (N, D')
    return h @ params["head"]["W"] + params["head"]["b"][None, :]  # (N, P)


def masked_patch_loss(predictions, patches, masked, *, normalize=False):
    """The mean squared error of ``predictions`` (N, P) against ``patches`` (N, P), over the masked
    patches only (``masked`` (N,) boolean): the mean over their M P values. ``normalize=True``
    standardises each target patch by its own mean and variance first. In float32 at least."""
    predictions = _checks.float_array(predictions, "predictions", ndim=2, what=" (N, P)")
    patches = _checks.float_array(patches, "patches", ndim=2, what=" (N, P)")
    _checks.same_shape(patches, "patches", predictions.shape, expected_from="the shape of predictions")
    masked = _checks._as_array(masked, "masked")
    if masked.dtype != jnp.bool_:
        raise TypeError(f"masked must be a boolean array, got dtype {masked.dtype}")
    _checks.same_shape(masked, "masked", predictions.shape[:1], expected_from="one entry per patch")
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be True or False, got {normalize!r}")
    return _masked_patch_loss(predictions, patches, masked, normalize)


@functools.partial(jax.jit, static_argnums=3)
def _masked_patch_loss(predictions, patches, masked, normalize):
    dtype = jnp.promote_types(jnp.result_type(predictions, patches), jnp.float32)
    target = patches.astype(dtype)
    if normalize:
        mean = target.mean(axis=1, keepdims=True)  # (N, 1), each patch's own statistics
        target = (target - mean) / jnp.sqrt(target.var(axis=1, keepdims=True) + EPS)
    error = jnp.mean((predictions.astype(dtype) - target) ** 2, axis=1)  # (N,), per patch
    return jnp.sum(jnp.where(masked, error, 0.0)) / jnp.maximum(jnp.sum(masked), 1)


def mae_loss(params, key, patches, *, mask_ratio=0.75, normalize=False):
    """The masked autoencoder's loss on one image's ``patches`` (N, P): a random mask drawn from
    ``key``, the encoder on the visible patches, the decoder, and ``masked_patch_loss``."""
    N, P = _check_params(params)
    patches = _check_patches(patches, N, P)
    _, M = _counts(N, mask_ratio)
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be True or False, got {normalize!r}")
    return _mae_loss(params, key, patches, N - M, normalize)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _mae_loss(params, key, patches, K, normalize):
    visible, restore, masked = _random_masking(key, patches.shape[0], K)
    predictions = _decode(params, _encode(params, patches, visible), restore)
    return _masked_patch_loss(predictions, patches, masked, normalize)
