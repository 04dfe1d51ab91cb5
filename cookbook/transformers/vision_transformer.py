r"""Vision transformer
==================

Cut an image into square patches, embed each patch as a token, prepend a learned class token and
run a transformer encoder over the sequence: the vision transformer (ViT) of
:footcite:t:`dosovitskiy2021image`, to reach for on images when data (or pre-training) are plentiful.

Equation
--------

.. math::

   z_0 = [\, c;\; x_1 E + b_E;\; \dots;\; x_N E + b_E \,] + P, \qquad
   z = \operatorname{Blocks}(z_0), \qquad
   s = h_0 W + b, \qquad
   \hat{y} = \operatorname{argmax}(s)

where :math:`h_0` is the class token's row of :math:`z` and :math:`s` are the class logits.

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_1, \dots, x_N`
     - the image's patches, each flattened (``P`` pixels square, ``C`` channels)
     - ``patchify(image, patch_size)``
     - ``(N, P*P*C)``
   * - :math:`N`
     - number of patches, :math:`(\text{image size}/P)^2`
     - ``N``
     - scalar
   * - :math:`E`, :math:`b_E`
     - patch embedding (a linear map shared by all patches) and its bias
     - ``params["W_e"]``, ``params["b_e"]``
     - ``(P*P*C, d_model)``, ``(d_model,)``
   * - :math:`c`
     - the learned class token
     - ``params["cls"]``
     - ``(d_model,)``
   * - :math:`P`
     - learned position embeddings, one per token
     - ``params["pos"]``
     - ``(N + 1, d_model)``
   * - :math:`z_0`, :math:`z`
     - the token sequence before and after the pre-norm block stack
     - ``x``, ``h``
     - ``(N + 1, d_model)``
   * - :math:`h_0`
     - the output row of the class token
     - ``h[0]``
     - ``(d_model,)``
   * - :math:`W`, :math:`b`
     - the classification head
     - ``params["W_head"]``, ``params["b_head"]``
     - ``(d_model, K)``, ``(K,)``
   * - :math:`s`, :math:`\hat{y}`
     - class logits; the predicted class is their arg max
     - ``apply(params, image, patch_size)``
     - ``(K,)``

Explanation
-----------

**An image as a sentence of patches.** A transformer reads a sequence of vectors; an image becomes
one by cutting it into :math:`N` non-overlapping :math:`P \times P` patches, flattening each and
mapping it linearly to ``d_model`` features, the same map for every patch. (The linear map on
non-overlapping patches is a convolution with kernel size and stride :math:`P`.) A learned *class
token* is prepended: it belongs to no patch, attends to all of them in every block, and its final
state is the image's summary that a linear head classifies, as BERT's ``[CLS]`` token does for text.
Learned position embeddings tell the model where each patch was; nothing else does.

.. admonition:: Intuition

   The model reads an image the way one reads a mosaic held at arm's length: it sees the tiles,
   each described on its own, and a label on each tile saying where it sits; everything about how
   tiles relate (that neighbours continue a stroke, that a loop on top makes a 9) must be learned
   by comparing tiles. The class token is a blank tile whose only job is to gather a summary of all
   the others.

**Compared with a convolutional network.** :doc:`/docs/chapters/convolution/lenet` builds two
assumptions into its architecture: *locality* (a unit sees only a small neighbourhood) and
*translation equivariance* (the same filter slides everywhere), and it pools to grow its view
gradually. The vision transformer keeps only the second assumption, and only inside a patch: from
the first block on every patch can attend to every other, and the model must *learn* from data that
nearby patches matter more, through its position embeddings and attention weights.
:footcite:t:`dosovitskiy2021image` found that with little data this costs accuracy against
convolutional networks, and that with enough pre-training data the learned structure wins. On
scikit-learn's 8x8 digits, four 4x4 patches and a two-block model (``d_model`` 32) reach over 90%
held-out accuracy after 400 Adam steps (the example below and its test; 92% or 94%, depending on how
XLA compiles the float32 arithmetic), below what a small convolutional network reaches on the same
data, as the lack of a built-in locality prior predicts.

The figure shows the first block's attention of the class token over the 16 patches of a 2x2 cut,
one panel per head, at initialisation: every head already spreads its weight over the whole image
from the first layer, with nothing yet favouring neighbours; where it looks is decided by random
projections of the content and of the positions, not by any built-in notion of locality.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.attention.multi_head import project
   from cookbook.attention.scaled_dot_product import attention_weights
   from cookbook.normalization.layer_norm import layer_norm
   from cookbook.transformers.vision_transformer import init, patchify
   from sklearn.datasets import load_digits
   image = jnp.asarray(load_digits().images[0] / 16.0, jnp.float32)[:, :, None]
   params = init(jax.random.key(0), image_size=8, patch_size=2, channels=1, d_model=32, num_heads=4,
                 num_layers=1, d_ff=64, num_classes=10)
   x = jnp.concatenate([params["cls"][None], patchify(image, 2) @ params["W_e"]]) + params["pos"]
   block = jax.tree.map(lambda w: w[0], params["stack"]["blocks"])
   h = layer_norm(x, block["ln_attn"]["scale"], block["ln_attn"]["bias"])
   a = block["attn"]
   A = attention_weights(project(a["W_q"], a["b_q"], h), project(a["W_k"], a["b_k"], h))  # (H, 17, 17)
   fig, axes = plt.subplots(1, 5, figsize=(9, 2.2))
   axes[0].imshow(np.asarray(image[:, :, 0]), cmap="gray_r")
   axes[0].set_title("image")
   for head in range(4):
       axes[head + 1].imshow(np.asarray(A[head, 0, 1:]).reshape(4, 4), vmin=0, cmap="viridis")
       axes[head + 1].set_title(f"head {head}: cls reads")
   for ax in axes:
       ax.set_xticks([]); ax.set_yticks([])
   plt.tight_layout()

**Numerics.** Inputs are standardised pixels; the patch embedding is initialised with variance
:math:`1/(P^2 C)` so the tokens start at unit scale, and the class token and positions start small
(standard deviation 0.02) as in the paper. Everything else is the pre-norm
:doc:`transformer_block`.

**Bad input.** Shapes, dtypes and sizes are checked always. Labels are checked against the
classes, and ``accuracy``'s logits for NaN, when their values are concrete; under :func:`jax.jit`
a label out of range makes the loss NaN and counts as a wrong answer in ``accuracy``.

Inductive bias
--------------

Much weaker than a convolutional network's: the model assumes only that the content of a patch
means the same wherever it appears (one shared embedding) and that the image is a set of patches
with learned positions. It does not know that neighbouring patches are related, that objects may
appear at any scale, or that shifting an image by less than a patch preserves its class; it has to
learn these from data. It therefore needs more data (or pre-training, or augmentation) than a
convolutional network to reach the same accuracy, and in exchange it can relate distant parts of an
image from the first layer on.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.transformers.vision_transformer import (
...     init, patchify, apply, loss, accuracy, train)
>>> image = jnp.arange(64.0).reshape(8, 8, 1)
>>> patches = patchify(image, patch_size=4)
>>> patches.shape, patches[1, :4]  # the top-right patch, first row
((4, 16), Array([4., 5., 6., 7.], dtype=float32))

A two-block model on four 4x4 patches, first on that image and then trained for 400 Adam steps on
scikit-learn's digits, the run of the test (the same sizes and keys):

>>> params = init(jax.random.key(0), image_size=8, patch_size=4, channels=1, d_model=32, num_heads=4,
...               num_layers=2, d_ff=64, num_classes=10)
>>> apply(params, image / 64, patch_size=4).shape
(10,)
>>> from cookbook.foundations.training_loop import load_digits_split
>>> X_train, X_test, y_train, y_test = load_digits_split()  # standardised pixels, 1347 and 450 images
>>> X_train, X_test = X_train.reshape(-1, 8, 8, 1), X_test.reshape(-1, 8, 8, 1)
>>> trained, losses = train(jax.random.key(1), params, X_train, y_train, patch_size=4, steps=400,
...                         batch_size=64)
>>> bool(losses[-1] < losses[0]), bool(accuracy(trained, X_test, y_test, patch_size=4) >= 0.9)
(True, True)
>>> bool(loss(trained, X_test, y_test, patch_size=4) < loss(params, X_test, y_test, patch_size=4))
True
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.foundations.losses import cross_entropy
from cookbook.optimization.adam import adam
from cookbook.optimization.sgd import apply_updates
from cookbook.transformers import transformer_block
from cookbook.transformers._boundary import check_params

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "patchify": ("patch_size",),
    "apply": ("patch_size",),
    "loss": ("patch_size",),
    "accuracy": ("patch_size",),
    "train": ("patch_size", "steps", "batch_size", "learning_rate"),
}


def patchify(image, patch_size):
    """Cut ``image`` (Hi, Wi, C) into non-overlapping squares, row by row: shape (N, patch_size**2 C)."""
    image, patch_size = _check_image(image, patch_size)
    return _patchify(image, patch_size)


def _check_image(image, patch_size):
    image = _checks.float_array(image, "image")
    patch_size = _checks.size(patch_size, "patch_size")
    if image.ndim != 3 or image.shape[0] % patch_size or image.shape[1] % patch_size:
        raise ValueError(f"image must have shape (Hi, Wi, C) with Hi and Wi multiples of patch_size={patch_size}, "
                         f"got shape {image.shape}")
    return image, patch_size


# One compiled program per shape rather than three eager operations that each compile.
@functools.partial(jax.jit, static_argnums=1)
def _patchify(image, P):
    return _patches(image, P)


def _patches(image, P):
    Hi, Wi, C = image.shape
    x = image.reshape(Hi // P, P, Wi // P, P, C).transpose(0, 2, 1, 3, 4)  # (Hi/P, Wi/P, P, P, C)
    return x.reshape((Hi // P) * (Wi // P), P * P * C)


def init(key, *, image_size, patch_size, channels, d_model, num_heads, num_layers, d_ff, num_classes):
    """Patch embedding, class token, learned positions, a pre-norm block stack and a linear head."""
    if _checks.size(image_size, "image_size") % _checks.size(patch_size, "patch_size"):
        raise ValueError(f"patch_size must divide image_size, got image_size={image_size} and patch_size={patch_size}")
    return _init(key, image_size, patch_size, channels, d_model, num_heads, num_layers, d_ff, num_classes)


# One compiled program for every draw, rather than a compilation of each eager draw (the sizes are
# checked while tracing, as Python integers).
@functools.partial(jax.jit, static_argnums=tuple(range(1, 9)))
def _init(key, image_size, patch_size, channels, d_model, num_heads, num_layers, d_ff, num_classes):
    N = (image_size // patch_size) ** 2
    patch_dim = patch_size * patch_size * channels
    k_embed, k_cls, k_pos, k_blocks, k_head = jax.random.split(key, 5)
    return {
        "W_e": jax.random.normal(k_embed, (patch_dim, d_model)) / jnp.sqrt(patch_dim),
        "b_e": jnp.zeros((d_model,)),
        "cls": 0.02 * jax.random.normal(k_cls, (d_model,)),
        "pos": 0.02 * jax.random.normal(k_pos, (N + 1, d_model)),
        "stack": transformer_block.init_stack(k_blocks, num_layers, d_model, num_heads, d_ff),
        "W_head": jax.random.normal(k_head, (d_model, num_classes)) / jnp.sqrt(d_model),
        "b_head": jnp.zeros((num_classes,)),
    }


def apply(params, image, patch_size):
    """Class logits (K,) for one ``image`` (Hi, Wi, C)."""
    image, P = _check_image(image, patch_size)
    N, patch_dim = (image.shape[0] // P) * (image.shape[1] // P), P * P * image.shape[2]  # patchify's shape
    if N + 1 != params["pos"].shape[0] or patch_dim != params["W_e"].shape[0]:
        raise ValueError(f"image {image.shape} with patch_size={patch_size} gives {N} patches of "
                         f"{patch_dim} values; params expect {params['pos'].shape[0] - 1} of "
                         f"{params['W_e'].shape[0]}")
    _check_params(params, patch_size, image.shape)
    return _apply(params, image, patch_size)


# The checks run in Python; each computation below is one compiled program rather than dozens of
# eager operations that each compile on first use.
@functools.partial(jax.jit, static_argnums=2)
def _apply(params, image, patch_size):
    patches = _patches(image, patch_size)  # (N, P*P*C)
    tokens = patches @ params["W_e"] + params["b_e"][None, :]  # (N, d_model)
    x = jnp.concatenate([params["cls"][None, :], tokens], axis=0) + params["pos"]  # (N + 1, d_model)
    h = transformer_block._apply_stack(params["stack"], x, None, "pre")  # no mask: every patch sees all
    return h[0] @ params["W_head"] + params["b_head"]  # read out the class token


def _check_params(params, patch_size, image_shape):
    """``params`` shaped as :func:`init` makes them for square images of ``image_shape``."""
    try:
        d_model, K = params["b_e"].shape[0], params["b_head"].shape[0]
        L, H, _, _ = params["stack"]["blocks"]["attn"]["W_o"].shape
        d_ff = params["stack"]["blocks"]["mlp"][1]["W"].shape[-2]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"params must be the dict that init returns, got one without the usual shapes ({error!r})")
    return check_params(params, init, image_size=image_shape[0], patch_size=patch_size, channels=image_shape[2],
                        d_model=d_model, num_heads=H, num_layers=L, d_ff=d_ff, num_classes=K)


def _check_batch(params, images, labels, patch_size):
    images = _checks.float_array(images, "images", ndim=4, what=" (B, Hi, Wi, C)")
    _, Hi, Wi, C = images.shape
    P = _checks.size(patch_size, "patch_size")
    if (Hi // P) * (Wi // P) + 1 != params["pos"].shape[0] or P * P * C != params["W_e"].shape[0]:
        raise ValueError(f"images of shape {images.shape} with patch_size={P} give {(Hi // P) * (Wi // P)} patches "
                         f"of {P * P * C} values; params expect {params['pos'].shape[0] - 1} of "
                         f"{params['W_e'].shape[0]}")
    labels = _checks.int_array(labels, "labels", ndim=1, what=" (B,)")
    _checks.same_shape(labels, "labels", images.shape[:1], expected_from="one per image")
    return images, _checks.check_range(labels, "labels", 0, params["b_head"].shape[0])


def loss(params, images, labels, patch_size):
    """Mean cross-entropy over a batch of ``images`` (B, Hi, Wi, C) with integer ``labels`` (B,)."""
    images, labels = _check_batch(params, images, labels, patch_size)
    _check_params(params, patch_size, images.shape[1:])
    return _loss(params, images, labels, patch_size)


@functools.partial(jax.jit, static_argnums=3)
def _loss(params, images, labels, patch_size):
    logits = jax.vmap(_apply, in_axes=(None, 0, None))(params, images, patch_size)  # (B, K)
    return cross_entropy(logits, labels)


def accuracy(params, images, labels, patch_size):
    """Fraction of ``images`` whose largest logit is the label (a NaN logit raises when concrete)."""
    images, labels = _check_batch(params, images, labels, patch_size)
    _check_params(params, patch_size, images.shape[1:])
    logits = _checks.check_no_nan(_batch_logits(params, images, patch_size),
                    "the logits computed from params and images")
    return _fraction_right(logits, labels)


@functools.partial(jax.jit, static_argnums=2)
def _batch_logits(params, images, patch_size):
    return jax.vmap(_apply, in_axes=(None, 0, None))(params, images, patch_size)  # (B, K)


@jax.jit
def _fraction_right(logits, labels):
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def train(key, params, images, labels, *, patch_size, steps, batch_size, learning_rate=3e-3):
    """Adam on random mini-batches; returns the parameters and the loss of each step."""
    images = _checks.float_array(images, "images", ndim=4, what=" (B, Hi, Wi, C)")
    labels = _checks.int_array(labels, "labels", ndim=1, what=" (B,)")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"labels must have one entry per image, got {labels.shape[0]} labels for "
                         f"{images.shape[0]} images")
    images, labels = _check_batch(params, images, labels, patch_size)
    _check_params(params, patch_size, images.shape[1:])
    steps, batch_size = _checks.size(steps, "steps"), _checks.size(batch_size, "batch_size")
    if batch_size > images.shape[0]:
        raise ValueError(f"batch_size must be at most the {images.shape[0]} images, got batch_size={batch_size}")
    adam(_checks.positive(learning_rate, "learning_rate"))  # checks the rate, which the program below holds
    return _train(key, params, images, labels, patch_size, steps, batch_size, float(learning_rate))


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _train(key, params, images, labels, patch_size, steps, batch_size, learning_rate):
    opt = adam(learning_rate)

    def step(carry, k):
        params, state = carry
        idx = jax.random.choice(k, images.shape[0], (batch_size,), replace=False)
        value, grads = jax.value_and_grad(_loss)(params, images[idx], labels[idx], patch_size)
        updates, state = opt.update(grads, state)
        return (apply_updates(params, updates), state), value

    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, steps))
    return params, losses
