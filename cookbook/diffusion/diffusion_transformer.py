r"""Diffusion transformer
=====================

A vision transformer as the noise-predicting network of a diffusion model, with the time step and
the class fed in through adaptive layer-norm scales, shifts and zero-initialised gates
(adaLN-Zero): the backbone of today's large image and video diffusion models.

Equation
--------

.. math::

   (\gamma_1, \beta_1, \alpha_1, \gamma_2, \beta_2, \alpha_2)
   = W_{\mathrm{ada}}\, \operatorname{SiLU}(c) + b_{\mathrm{ada}}, \qquad
   c = e(t) + E_y

   h = x + \alpha_1 \odot \operatorname{Attn}\big((1 + \gamma_1) \odot \operatorname{LN}(x) + \beta_1\big)

   x' = h + \alpha_2 \odot \operatorname{MLP}\big((1 + \gamma_2) \odot \operatorname{LN}(h) + \beta_2\big)

   W_{\mathrm{ada}} = 0,\ b_{\mathrm{ada}} = 0 \text{ at initialisation} \quad\Longrightarrow\quad x' = x

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`, :math:`x'`
     - the tokens entering and leaving a block: embedded patches of the noisy image plus fixed
       sine-cosine positions
     - ``x``; the result of ``dit_block``
     - ``(N, D)``
   * - :math:`h`
     - the tokens after the attention sub-layer
     - ``h``
     - ``(N, D)``
   * - :math:`c`
     - the conditioning vector, one per image
     - ``c``
     - ``(D,)``
   * - :math:`e(t)`
     - the embedding of the diffusion time: sines and cosines, then a two-layer perceptron
     - ``time_embedding``
     - ``(D,)``
   * - :math:`E_y`, :math:`y`
     - the learned embedding of the class; the class label
     - ``params["E_y"][label]``; ``label``
     - ``(D,)``; scalar
   * - :math:`\gamma`, :math:`\beta`, :math:`\alpha`
     - the scale, shift and gate of each sub-layer (:math:`\beta` is a shift here, not the noise
       variance of :doc:`ddpm`)
     - ``gamma1, beta1, alpha1, gamma2, beta2, alpha2``
     - ``(D,)`` each
   * - :math:`W_{\mathrm{ada}}`, :math:`b_{\mathrm{ada}}`
     - the regression from the condition to the six modulations, zero at initialisation
     - ``params["W_ada"]``, ``params["b_ada"]``
     - ``(D, 6D)``, ``(6D,)``
   * - :math:`\operatorname{LN}`
     - layer normalisation without its own scale and shift
     - ``layer_norm``
     - ``(N, D)``
   * - :math:`\operatorname{Attn}`, :math:`\operatorname{MLP}`
     - multi-head self-attention over the tokens; a GELU perceptron on each token
     - ``multi_head.apply``; ``_mlp``
     - ``(N, D)``
   * - :math:`t`
     - the diffusion time, :math:`(i + 1) / T` for the 0-based step :math:`i`
     - ``s``
     - scalar

Explanation
-----------

:footcite:t:`peebles2023scalable` replaced the U-Net of :doc:`ddpm` by a plain transformer. The
noisy image is cut into patches as in a vision transformer :footcite:`dosovitskiy2021image`, each
patch becomes a token of width :math:`D`, a stack of blocks mixes the tokens, and a last linear
layer turns each token back into a patch of predicted noise. The only question specific to
diffusion is how the network learns *when* it is (the noise level) and *what* it should draw (the
class). DiT answers with a global condition :math:`c`, the sum of a time embedding and a class
embedding, that does not enter the tokens at all: it sets, through one linear map per block, the
scale :math:`\gamma` and shift :math:`\beta` that follow each layer normalisation, the idea of
feature-wise modulation :footcite:`perez2018film`, and a gate :math:`\alpha` on each residual
branch.

The *Zero* is the initialisation: :math:`W_{\mathrm{ada}}` and :math:`b_{\mathrm{ada}}` start at
zero, so every gate is zero and every block is exactly the identity, whatever its attention and
perceptron weights; the last layer starts at zero too, so the untrained network predicts no noise
at all. With the gates shut, a block's attention and perceptron receive no gradient at first, only
its gates do, and the gates open as training finds a use for each branch. :footcite:t:`peebles2023scalable` compared
this with feeding :math:`c` as extra tokens or through cross-attention and found adaLN-Zero the
best and the cheapest. Zero-initialising the last scale of each residual branch is the trick of
:footcite:t:`goyal2017accurate` for residual networks, applied to a condition.

.. admonition:: Intuition

   A sound engineer at a mixing desk: every block is a channel whose fader (the gate) starts at
   zero, so the first thing heard is the dry signal, untouched. The condition is the cue sheet
   that tells her, for this noise level and this class, how far to raise each fader and how to
   set its equaliser (the scale and shift).

The loss is the noise prediction of :doc:`ddpm`, on images: draw a step, noise the image in
closed form with ``q_sample``, and regress the noise (``loss``). Trained for 200 Adam steps on
scikit-learn's digits (8 by 8 pixels, 16 patches of 2 by 2), a DiT of one block of width 32 brings
the loss from 1 (the mean square of the noise, which the untrained network leaves unexplained) to
below 0.2.

Inductive bias
--------------

Patches as tokens and global attention: beyond the patch, nothing local is built in (a U-Net's
convolutions are), so a transformer needs more data and compute, and in return its quality grows
steadily with its size, which :footcite:t:`peebles2023scalable` measured in gigaflops. The
condition modulates every token alike: it suits global information such as a noise level or a
class, not spatial or sequential conditions (a mask, a sentence), which need cross-attention.
Positions are fixed sines and cosines of the patch's row and column.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.diffusion.diffusion_transformer import block_init, dit, dit_block, init
>>> block = block_init(jax.random.key(0), 12, 3)  # width 12, three heads
>>> x = jax.random.normal(jax.random.key(1), (7, 12))  # 7 tokens
>>> c = jax.random.normal(jax.random.key(2), (12,))
>>> bool(jnp.all(dit_block(block, x, c) == x))  # adaLN-Zero: exactly the identity at init
True
>>> params = init(jax.random.key(3), image_size=8, patch_size=2, channels=1, d_model=32,
...               num_heads=2, num_layers=1, num_classes=10)  # the DiT trained on the digits
>>> image = jax.random.normal(jax.random.key(4), (8, 8, 1))
>>> eps = dit(params, image, jnp.float32(0.5), 2, patch_size=2)  # time 0.5, class 2
>>> eps.shape, float(jnp.abs(eps).max())  # the last layer starts at zero: no noise predicted
((8, 8, 1), 0.0)

Implementation notes
--------------------

**What is left out.** DiT also predicts the variance of each reverse step (a second output
channel trained with the variational bound) and drops the class one time in ten to learn an
unconditional model for classifier-free guidance (:doc:`guidance`); both leave the block as it is.
Its images are the latents of a pretrained autoencoder, 32 by 32 by 4 for 256-pixel images, with
patches of 2, 4 or 8; a smaller patch gives more tokens, more compute and a better model.

**Conventions.** One image ``(Hi, Wi, C)`` per call; batch with :func:`jax.vmap` (``loss`` does).
The blocks are stacked along a leading axis of ``params["blocks"]`` and applied with one
:func:`jax.lax.scan`, so the stack compiles once whatever its depth. The time enters as
:math:`t \in (0, 1]`, scaled by 1000 before its sines and cosines, as the integer steps of DiT.
The perceptron uses the tanh approximation of GELU as DiT does. A label outside the classes raises
an error when it is concrete; under :func:`jax.jit` it reads a row of NaN (``mode="fill"``).

**Libraries.** Hugging Face ``diffusers`` calls the model ``DiTTransformer2DModel`` and the
modulation ``AdaLayerNormZero``; the reference code of the paper names it ``modulate``.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from cookbook import _checks
from cookbook._memo import cached
from cookbook.attention import multi_head
from cookbook.diffusion.ddpm import _fit, _schedule, q_sample
from cookbook.normalization.layer_norm import layer_norm
from cookbook.optimization.adam import adam
from cookbook.transformers.vision_transformer import patchify
from cookbook._extras import needs_extra

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "dit_block": (),
    "dit": ("patch_size",),
}

_TIME_FEATURES = 32  # sines and cosines of the time before the time perceptron


# ---- One block ---------------------------------------------------------------------------------

def _dense(key, n_in, n_out):
    return {"W": jax.random.normal(key, (n_in, n_out)) / jnp.sqrt(n_in), "b": jnp.zeros((n_out,))}


def block_init(key, d_model, num_heads, mlp_ratio=4):
    """One DiT block: attention, a GELU perceptron ``D -> mlp_ratio D -> D``, and the adaLN-Zero
    regression ``W_ada`` (D, 6D), ``b_ada`` (6D,), both zero."""
    d_model, num_heads = _checks.size(d_model, "d_model"), _checks.size(num_heads, "num_heads")
    hidden = _checks.size(mlp_ratio, "mlp_ratio") * d_model
    if d_model % num_heads:
        raise ValueError(f"num_heads must divide d_model, got d_model={d_model} and num_heads={num_heads}")
    return _block_init(key, d_model, num_heads, hidden)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))  # one compiled program, also when called eagerly
def _block_init(key, d_model, num_heads, hidden):
    k_attn, k_in, k_out = jax.random.split(key, 3)
    return {
        "attn": multi_head.init(k_attn, d_model, num_heads),
        "mlp": [_dense(k_in, d_model, hidden), _dense(k_out, hidden, d_model)],
        "W_ada": jnp.zeros((d_model, 6 * d_model)),
        "b_ada": jnp.zeros((6 * d_model,)),
    }


def _check_block(params, name="params"):
    """The width D of a block's parameters, after checking their shapes against ``W_ada``."""
    try:
        W_ada, mlp = params["W_ada"], params["mlp"]
        hidden = mlp[0]["W"].shape[-1]
        params["attn"]["W_q"]
    except (KeyError, IndexError, TypeError, AttributeError) as error:
        raise ValueError(f"{name} must be the dict that block_init returns, got one without the usual "
                         f"entries ({error!r})") from None
    W_ada = _checks.float_array(W_ada, f'{name}["W_ada"]', ndim=2, what=" (D, 6D)")
    D = W_ada.shape[0]
    _checks.same_shape(W_ada, f'{name}["W_ada"]', (D, 6 * D))
    _checks.same_shape(_checks.float_array(params["b_ada"], f'{name}["b_ada"]'), f'{name}["b_ada"]', (6 * D,),
                       expected_from=f'the width D = {D} of {name}["W_ada"]')
    shape = lambda *dims: jax.ShapeDtypeStruct(dims, jnp.float32)  # shapes only: nothing to compute or compile
    mlp_like = [{"W": shape(D, hidden), "b": shape(hidden)}, {"W": shape(hidden, D), "b": shape(D)}]
    _checks.same_tree(params["mlp"], f'{name}["mlp"]', mlp_like, "two layers D -> hidden -> D")
    if multi_head._check_params(params["attn"])[0] != D:
        raise ValueError(f'{name}["attn"] must have width {D} as {name}["W_ada"], got '
                         f'{params["attn"]["W_q"].shape[0]}')
    return D


def _mlp(params, x):
    h = jax.nn.gelu(x @ params[0]["W"] + params[0]["b"][None, :], approximate=True)  # (N, hidden)
    return h @ params[1]["W"] + params[1]["b"][None, :]


def _norm(x, scale, shift):
    """``(1 + scale) * LN(x) + shift``: layer normalisation whose scale and shift the condition sets."""
    return layer_norm(x, 1.0 + scale, shift)


@jax.jit
def _block(params, x, c):
    gamma1, beta1, alpha1, gamma2, beta2, alpha2 = jnp.split(
        jax.nn.silu(c) @ params["W_ada"] + params["b_ada"], 6)  # six (D,) modulations
    h = x + alpha1[None, :] * multi_head.apply(params["attn"], _norm(x, gamma1, beta1))
    return h + alpha2[None, :] * _mlp(params["mlp"], _norm(h, gamma2, beta2))


def dit_block(params, x, c):
    """One DiT block with adaLN-Zero on the tokens ``x`` (N, D), conditioned on ``c`` (D,).

    Returns (N, D); with the parameters of ``block_init`` (zero ``W_ada`` and ``b_ada``) it
    returns ``x`` exactly.
    """
    D = _check_block(params)
    x = _checks.float_array(x, "x", ndim=2, what=" (N, D)")
    _checks.same_shape(x, "x", (x.shape[0], D), expected_from="(N, D) with D the width of params")
    c = _checks.float_array(c, "c", ndim=1, what=" (D,)")
    _checks.same_shape(c, "c", (D,), expected_from="the width of params")
    return _block(params, x, c)


# ---- The whole network -------------------------------------------------------------------------

def time_embedding(s, num_features=_TIME_FEATURES):
    """Sines and cosines (num_features,) of ``1000 s`` at frequencies from 1 down to 1/10000."""
    half = num_features // 2
    frequencies = jnp.exp(-math.log(10000.0) * jnp.arange(half) / half)
    angles = 1000.0 * s * frequencies
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)])


def positions(grid, d_model):
    """Fixed 2D sine-cosine positions (grid * grid, d_model): half the width for the patch's row,
    half for its column (``d_model`` a multiple of 4)."""
    rows, cols = jnp.meshgrid(jnp.arange(grid), jnp.arange(grid), indexing="ij")
    quarter = d_model // 4
    frequencies = jnp.exp(-math.log(10000.0) * jnp.arange(quarter) / quarter)

    def embed(p):
        angles = p.reshape(-1)[:, None] * frequencies[None, :]  # (N, D/4)
        return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=1)  # (N, D/2)

    return jnp.concatenate([embed(rows), embed(cols)], axis=1)  # (N, D)


def init(key, *, image_size, patch_size, channels, d_model, num_heads, num_layers, num_classes):
    """A DiT for square images: patch embedding, time and class embeddings, ``num_layers`` blocks
    stacked along a leading axis, and a last adaLN layer and linear map, both zero."""
    image_size, patch_size = _checks.size(image_size, "image_size"), _checks.size(patch_size, "patch_size")
    if image_size % patch_size:
        raise ValueError(f"patch_size must divide image_size, got image_size={image_size} and patch_size={patch_size}")
    channels, d_model = _checks.size(channels, "channels"), _checks.size(d_model, "d_model")
    num_layers, num_classes = _checks.size(num_layers, "num_layers"), _checks.size(num_classes, "num_classes")
    if d_model % 4:
        raise ValueError(f"d_model must be a multiple of 4 (the 2D positions), got d_model={d_model}")
    num_heads = _checks.size(num_heads, "num_heads")
    if d_model % num_heads:
        raise ValueError(f"num_heads must divide d_model, got d_model={d_model} and num_heads={num_heads}")
    return _init(key, patch_size * patch_size * channels, d_model, num_heads, num_layers, num_classes)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _init(key, patch_dim, d_model, num_heads, num_layers, num_classes):
    k_patch, k_t1, k_t2, k_y, k_blocks = jax.random.split(key, 5)
    blocks = jax.vmap(lambda k: _block_init(k, d_model, num_heads, 4 * d_model))(jax.random.split(k_blocks, num_layers))
    return {
        "W_patch": jax.random.normal(k_patch, (patch_dim, d_model)) / jnp.sqrt(patch_dim),
        "b_patch": jnp.zeros((d_model,)),
        "time_mlp": [_dense(k_t1, _TIME_FEATURES, d_model), _dense(k_t2, d_model, d_model)],
        "E_y": jax.random.normal(k_y, (num_classes, d_model)),
        "blocks": blocks,
        "W_final_ada": jnp.zeros((d_model, 2 * d_model)),
        "b_final_ada": jnp.zeros((2 * d_model,)),
        "W_out": jnp.zeros((d_model, patch_dim)),
        "b_out": jnp.zeros((patch_dim,)),
    }


def _check_params(params, image_shape, patch_size):
    """``params`` shaped as ``init`` makes them for images of ``image_shape``."""
    try:
        (d_model, K), layers = params["E_y"].shape[::-1], params["blocks"]["W_ada"].shape[0]
        H = params["blocks"]["attn"]["W_q"].shape[2]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"params must be the dict that init returns, got one without the usual shapes ({error!r})") from None
    try:
        like = jax.eval_shape(lambda: _init(jax.random.key(0), patch_size * patch_size * image_shape[2], d_model, H,
                                            layers, K))
        _checks.same_tree(params, "params", like, "init's")
    except (ValueError, TypeError) as error:
        raise type(error)(f"params must be what init makes for an image of shape {tuple(image_shape)} with "
                          f"patch_size={patch_size} and the sizes that params['E_y'] and params['blocks'] "
                          f"give (d_model={d_model}, num_heads={H}, num_layers={layers}, num_classes={K}): "
                          f"{error}") from None
    return K


def _check_image(image, patch_size, name="image", ndim=3):
    image = _checks.float_array(image, name, ndim=ndim, what=" (Hi, Wi, C)" if ndim == 3 else " (B, Hi, Wi, C)")
    patch_size = _checks.size(patch_size, "patch_size")
    Hi, Wi = image.shape[-3:-1]
    if Hi != Wi or Hi % patch_size:
        raise ValueError(f"{name} must be square with a side that patch_size={patch_size} divides, "
                         f"got shape {tuple(image.shape)}")
    return image, patch_size


def unpatchify(patches, image_size, patch_size, channels):
    """The inverse of ``patchify``: patches (N, P*P*C), row by row, back to an image (Hi, Wi, C)."""
    g, P = image_size // patch_size, patch_size
    x = patches.reshape(g, g, P, P, channels).transpose(0, 2, 1, 3, 4)  # (g, P, g, P, C)
    return x.reshape(image_size, image_size, channels)


@functools.partial(jax.jit, static_argnums=4)
def _dit(params, image, s, label, patch_size):
    Hi, _, C = image.shape
    tokens = patchify(image, patch_size) @ params["W_patch"] + params["b_patch"][None, :]  # (N, D)
    D = tokens.shape[1]
    x = tokens + positions(Hi // patch_size, D)
    t1, t2 = params["time_mlp"]
    e_t = jax.nn.silu(time_embedding(s) @ t1["W"] + t1["b"]) @ t2["W"] + t2["b"]
    e_y = jnp.take(params["E_y"], label, axis=0, mode="fill", fill_value=jnp.nan)
    c = e_t + e_y  # (D,)
    x, _ = jax.lax.scan(lambda x, block: (_block(block, x, c), None), x, params["blocks"])
    shift, scale = jnp.split(jax.nn.silu(c) @ params["W_final_ada"] + params["b_final_ada"], 2)
    out = _norm(x, scale, shift) @ params["W_out"] + params["b_out"][None, :]  # (N, P*P*C)
    return unpatchify(out, Hi, patch_size, C)


def dit(params, image, s, label, patch_size):
    """The predicted noise (Hi, Wi, C) for one noisy ``image`` (Hi, Wi, C) at time ``s`` in (0, 1]
    (a scalar) and class ``label`` (an int scalar)."""
    image, patch_size = _check_image(image, patch_size)
    K = _check_params(params, image.shape, patch_size)
    s = _checks.float_array(s, "s", ndim=0, what=" (a scalar time)")
    label = _checks.check_range(_checks.int_array(label, "label", ndim=0, what=" (a scalar class)"), "label", 0, K)
    return _dit(params, image, s, label, patch_size)


@functools.partial(jax.jit, static_argnums=5)
def _loss(params, images, labels, key, alpha_bar, patch_size):
    k_t, k_noise = jax.random.split(key)
    T = alpha_bar.shape[0]
    t = jax.random.randint(k_t, (images.shape[0],), 0, T)
    noise = jax.random.normal(k_noise, images.shape, images.dtype)
    xt = q_sample(images, t, noise, alpha_bar)
    eps = jax.vmap(_dit, in_axes=(None, 0, 0, 0, None))(params, xt, (t + 1.0) / T, labels, patch_size)
    return jnp.mean((eps - noise) ** 2)


def _check_batch(params, images, labels, patch_size, name="images"):
    images, patch_size = _check_image(images, patch_size, name, ndim=4)
    K = _check_params(params, images.shape[1:], patch_size)
    labels = _checks.int_array(labels, "labels", ndim=1, what=" (B,)")
    _checks.same_shape(labels, "labels", images.shape[:1], expected_from=f"one per row of {name}")
    return images, _checks.check_range(labels, "labels", 0, K), patch_size


def loss(params, images, labels, key, alpha_bar, patch_size):
    """The noise-prediction loss of :doc:`ddpm` on ``images`` (B, Hi, Wi, C) of classes ``labels``
    (B,): one random step and noise per image, the squared error averaged over every value."""
    images, labels, patch_size = _check_batch(params, images, labels, patch_size)
    alpha_bar = _schedule(alpha_bar, "alpha_bar")
    return _loss(params, images, labels, key, alpha_bar, patch_size)


@cached
def train(params, images, labels, key, *, alpha_bar, patch_size, steps, batch_size=64, learning_rate=3e-3):
    """``steps`` Adam steps on ``loss`` over batches of ``batch_size`` images drawn with
    replacement, the step size decayed along a cosine (the training loop of :doc:`ddpm`).

    Returns the trained parameters and the loss of each step, shape (steps,).
    """
    images, labels, patch_size = _check_batch(params, images, labels, patch_size)
    alpha_bar = _schedule(alpha_bar, "alpha_bar")
    steps, batch_size = _checks.size(steps, "steps"), _checks.size(batch_size, "batch_size")
    adam(_checks.positive(learning_rate, "learning_rate"))  # its checks of the step size
    return _train(params, images, labels, key, alpha_bar, patch_size=patch_size, steps=steps, batch_size=batch_size,
                  learning_rate=_checks.static_number(learning_rate, "learning_rate"))


# One compiled program for the whole run: called eagerly, the flattening, the loop's set-up and the
# unflattening would each compile on their own, and the scan again at every call.
@functools.partial(jax.jit, static_argnames=("patch_size", "steps", "batch_size", "learning_rate"))
def _train(params, images, labels, key, alpha_bar, *, patch_size, steps, batch_size, learning_rate):
    # Adam on one flat vector: the same updates as leaf by leaf, and a smaller program to compile.
    flat, unravel = ravel_pytree(params)

    def batch_loss(v, rows, k):  # rows: indices into the data set, so images and labels travel together
        return _loss(unravel(v), images[rows], labels[rows], k, alpha_bar, patch_size)

    flat, losses = _fit(flat, jnp.arange(images.shape[0]), key, steps, batch_size, adam(learning_rate), batch_loss)
    return unravel(flat), losses


def digits(split="train"):
    """scikit-learn's 8 by 8 digits as images (B, 8, 8, 1) scaled to [-1, 1] and labels (B,): the
    first 1500 for ``"train"``, the other 297 for ``"test"``."""
    with needs_extra("data"):  # scikit-learn: pip install 'deep-learning-cookbook[data]'
        from sklearn.datasets import load_digits

    if split not in ("train", "test"):
        raise ValueError(f'split must be "train" or "test", got {split!r}')
    data = load_digits()
    rows = slice(0, 1500) if split == "train" else slice(1500, None)
    images = (data.images[rows] / 8.0 - 1.0)[..., None].astype(np.float32)
    return jax.device_put(images), jax.device_put(data.target[rows].astype(np.int32))  # placed, not compiled
