r"""Residual networks
=================

Add each block's input to its output, so that a block learns only a correction to the identity:
the change that lets convolutional networks be trained with tens or hundreds of layers, and the
default backbone whenever a network must be deep.

Equation
--------

.. math::

   y_{l+1} = y_l + \mathcal{F}_l(y_l), \qquad
   \mathcal{F}_l(y) = W_{l,2} \star \phi\big(\operatorname{BN}(W_{l,1} \star \phi(\operatorname{BN}(y)))\big)

.. math::

   \frac{\partial y_L}{\partial y_l} = \prod_{k=l}^{L-1}
   \left(I + \frac{\partial \mathcal{F}_k}{\partial y_k}\right)
   \quad\text{against}\quad
   \prod_{k=l}^{L-1} \frac{\partial \mathcal{F}_k}{\partial y_k} \text{ without the identity}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`y_l`, :math:`y`
     - the input of block :math:`l` (a batch of feature maps)
     - ``x`` in ``block``, ``h`` in ``apply``
     - ``(B, H, W, C)``
   * - :math:`\mathcal{F}_l`, :math:`\mathcal{F}_k`
     - the residual branch of block :math:`l` (or :math:`k`)
     - the body of ``block``
     - ``(B, H, W, C) -> (B, H, W, C)``
   * - :math:`W_{l,1}`, :math:`W_{l,2}`
     - the two 3 by 3 kernels of the branch (:math:`\star` is :doc:`conv2d`)
     - ``params["conv1"]``, ``params["conv2"]``
     - ``(3, 3, C, C)``
   * - :math:`\phi`
     - ReLU
     - ``jax.nn.relu``
     - elementwise
   * - :math:`L`, :math:`l`, :math:`k`
     - number of blocks; indices of blocks
     - ``depth``
     - scalars
   * - :math:`I`
     - the identity matrix: the Jacobian of the skip connection
     - (implicit in ``x + ...``)
     - ``(BHWC, BHWC)``

Explanation
-----------

Stacking more layers should never hurt a network: the extra layers could learn the identity and
change nothing. In practice, :footcite:t:`he2016deep` found that plain networks of 56 layers
trained *worse* (higher training error) than networks of 20, and proposed to make the identity the
default: a block computes :math:`y + \mathcal{F}(y)`, so that a branch with zero weights leaves its
input unchanged, and learning has only to find the correction. Each branch here is two 3 by 3
convolutions with batch normalisation and ReLU *before* each convolution (the "pre-activation" order
of :footcite:t:`he2016identity`), which leaves nothing at all on the identity path between blocks.
When a block halves the resolution or changes the number of channels, its shortcut becomes a 1 by 1
convolution with the same stride (a projection). A small network (``init``, ``apply``) is a stem
convolution, blocks in stages of growing width, a global average pool and a linear classifier.

**Why it helps gradients.** The Jacobian of the whole stack is a product of the blocks' Jacobians
(the second equation). Without the skip, it is a product of :math:`L` matrices whose sizes multiply
geometrically: a little above or below one per layer becomes exploding or vanishing gradients after
thirty. With the skip, each factor is :math:`I` plus a correction, and expanding the product gives
the identity plus sums over every subset of branches, so the gradient of the loss reaches every
block directly, whatever the depth. The figure measures this at initialisation on 30 layers with
batch normalisation: in the plain stack the gradient with respect to each layer's kernel grows
about a hundredfold from the last layer to the first (batch normalisation makes plain stacks
explode backwards), while in the residual stack it varies by a factor of about five.

.. plot::

   from cookbook.convolution.resnet import layer_gradient_norms
   import jax
   plain = layer_gradient_norms(jax.random.key(0), depth=30, channels=8, residual=False)
   residual = layer_gradient_norms(jax.random.key(0), depth=30, channels=8, residual=True)
   plt.figure(figsize=(5, 3.2))
   plt.semilogy(range(1, 31), plain, "o-", ms=3, label="plain")
   plt.semilogy(range(1, 31), residual, "s-", ms=3, label="residual")
   plt.xlabel("layer (1 = nearest the input)")
   plt.ylabel("gradient norm w.r.t. its kernel")
   plt.legend()
   plt.tight_layout()

.. admonition:: Intuition

   A residual block edits a document with tracked changes instead of retyping it: each block
   proposes corrections to the draft it receives, and a block with nothing to add leaves the
   draft exactly as it was. A hundred editors in a row can then do no harm by default, and a
   complaint about the final text (the gradient) reaches every editor directly, not only through
   the retyped copies of all the editors after them.

*Numerical traps.* Batch normalisation needs the batch, so unlike the other recipes of this chapter
the blocks take a batch ``(B, H, W, C)`` and use ``jax.vmap`` only for the convolutions; they
return the updated running statistics, which must be used at test time (``training=False``).
The sum :math:`y + \mathcal{F}(y)` grows the variance of the residual stream by a little at every
block, which the next block's normalisation absorbs; starting each branch's last kernel at zero,
so that every block begins as the identity (as the example below does to one block), is a common
way to keep that growth, and the early training, tame. Inputs must be floating-point batches
with the channels of the first kernel, and sizes are Python integers.

Inductive bias
--------------

A residual block assumes that the function to learn is close to the identity plus small
corrections, so depth is cheap: a block that is not needed can switch itself off. Convolutions
inside the branch keep the locality and weight sharing of :doc:`conv2d`. The stages assume, like
LeNet, that resolution can be traded for channels as the features grow more abstract.

Example
-------

A small ResNet on a batch of two images; and a block whose branch is zero is the identity:

>>> import jax, jax.numpy as jnp
>>> from cookbook.convolution.resnet import apply, block, init, init_block, layer_gradient_norms
>>> params, state = init(jax.random.key(0), in_channels=1, channels=(8, 16), num_classes=10)
>>> x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
>>> logits, state = apply(params, state, x, training=True)
>>> logits.shape
(2, 10)
>>> bp, bs = init_block(jax.random.key(2), 3, 3)
>>> bp["conv2"]["w"] = jnp.zeros_like(bp["conv2"]["w"])
>>> y, _ = block(bp, bs, x[..., :1].repeat(3, axis=-1), training=False)
>>> bool(jnp.allclose(y, x[..., :1].repeat(3, axis=-1)))
True
>>> g_plain = layer_gradient_norms(jax.random.key(0), depth=30, channels=8, residual=False)
>>> g_res = layer_gradient_norms(jax.random.key(0), depth=30, channels=8, residual=True)
>>> round(float(g_plain.max() / g_plain.min())), round(float(g_res.max() / g_res.min()))
(108, 5)
"""

import functools
import math

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.convolution.conv2d import conv2d
from cookbook.convolution.pooling import global_avg_pool
from cookbook.normalization.batch_norm import batch_norm
from cookbook.normalization.batch_norm import init as init_batch_norm

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "block": ("training", "stride"),
    "apply": ("training",),
    "layer_gradient_norms": ("depth", "channels", "batch", "size"),
}


def _conv_params(key, k, c_in, c_out):
    return {"w": jax.random.normal(key, (k, k, c_in, c_out)) * math.sqrt(2.0 / (k * k * c_in))}


def _conv(p, x, stride=1):
    """A bias-free convolution applied to every image of a batch (B, H, W, C)."""
    return jax.vmap(lambda im: conv2d(im, p["w"], stride=stride))(x)


def init_block(key, in_channels, out_channels, *, stride=1):
    """Parameters and batch-norm state of one pre-activation residual block."""
    return _init_block_jit(key, in_channels, out_channels, stride)


# The public functions run compiled cores (sizes, stride and training static), after their checks:
# the page's examples, the tests and the bad-input checks share one program per shape instead of
# dispatching every draw, convolution and normalisation eagerly.
def _init_block(key, in_channels, out_channels, stride):
    k1, k2, k3 = jax.random.split(key, 3)
    bn1, s1 = init_batch_norm(in_channels)
    bn2, s2 = init_batch_norm(out_channels)
    params = {"bn1": bn1, "conv1": _conv_params(k1, 3, in_channels, out_channels),
              "bn2": bn2, "conv2": _conv_params(k2, 3, out_channels, out_channels)}
    if stride != 1 or in_channels != out_channels:
        params["proj"] = _conv_params(k3, 1, in_channels, out_channels)  # projection shortcut
    return params, {"bn1": s1, "bn2": s2}


_init_block_jit = jax.jit(_init_block, static_argnums=(1, 2, 3))


def block(params, state, x, *, training, stride=1):
    """``x + F(x)`` for a batch ``x`` (B, H, W, C); returns the output and the new batch-norm state."""
    x = _check_block(params, x, stride)
    return _block_jit(params, state, x, training, stride)


def _check_block(params, x, stride):
    x = _checks.float_array(x, "x")
    if x.ndim != 4 or x.shape[-1] != params["conv1"]["w"].shape[2]:
        raise ValueError(f"x must have shape (B, H, W, {params['conv1']['w'].shape[2]}), got shape {x.shape}")
    if ("proj" in params) != (stride != 1 or params["conv1"]["w"].shape[2] != params["conv1"]["w"].shape[3]):
        raise ValueError(f"stride {stride} does not match the block's parameters (made with another stride)")
    return x


def _block(params, state, x, training, stride):
    h, s1 = batch_norm(params["bn1"], state["bn1"], x, training=training)
    h = jax.nn.relu(h)
    shortcut = _conv(params["proj"], h, stride) if "proj" in params else x
    h = _conv(params["conv1"], h, stride)  # (B, H/stride, W/stride, C_out)
    h, s2 = batch_norm(params["bn2"], state["bn2"], h, training=training)
    h = _conv(params["conv2"], jax.nn.relu(h))
    return shortcut + h, {"bn1": s1, "bn2": s2}


_block_jit = jax.jit(_block, static_argnums=(3, 4))


def init(key, *, in_channels, channels=(8, 16), num_classes=10):
    """A small ResNet: a stem convolution, one block per stage (each stage after the first halves
    the resolution), a final normalisation, global average pooling and a linear classifier."""
    return _init(key, in_channels, tuple(channels), num_classes)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _init(key, in_channels, channels, num_classes):
    k_stem, k_head, *k_blocks = jax.random.split(key, 2 + len(channels))
    params = {"stem": _conv_params(k_stem, 3, in_channels, channels[0]), "blocks": []}
    state = {"blocks": []}
    c_prev = channels[0]
    for i, (k, c) in enumerate(zip(k_blocks, channels)):
        p, s = _init_block(k, c_prev, c, 1 if i == 0 else 2)
        params["blocks"].append(p)
        state["blocks"].append(s)
        c_prev = c
    params["bn"], state["bn"] = init_batch_norm(c_prev)
    params["head"] = {"w": jax.random.normal(k_head, (c_prev, num_classes)) / math.sqrt(c_prev),
                      "b": jnp.zeros(num_classes)}
    return params, state


def apply(params, state, x, *, training):
    """Logits (B, num_classes) for a batch ``x`` (B, H, W, C_in), and the new state."""
    x = _checks.float_array(x, "x", ndim=4, what=" (B, H, W, C_in)")
    return _apply(params, state, x, training)


@functools.partial(jax.jit, static_argnums=3)
def _apply(params, state, x, training):
    h = _conv(params["stem"], x)
    new_state = {"blocks": []}
    for i, (p, s) in enumerate(zip(params["blocks"], state["blocks"])):
        stride = 1 if i == 0 else 2
        h, s = _block(p, s, _check_block(p, h, stride), training, stride)
        new_state["blocks"].append(s)
    h, new_state["bn"] = batch_norm(params["bn"], state["bn"], h, training=training)
    features = jax.vmap(global_avg_pool)(jax.nn.relu(h))  # (B, C)
    return features @ params["head"]["w"] + params["head"]["b"][None, :], new_state


def layer_gradient_norms(key, *, depth, channels, residual, batch=8, size=8):
    """At initialisation, the norm of the gradient of a random linear loss with respect to each
    layer's kernel, for a stack of ``depth`` layers ``F(h) = conv(relu(BN(h)))``, either plain
    (``h <- F(h)``) or residual (``h <- h + F(h)``). Returns shape (depth,), input side first."""
    depth, channels = _checks.size(depth, "depth"), _checks.size(channels, "channels")
    batch, size = _checks.size(batch, "batch"), _checks.size(size, "size")
    if isinstance(residual, jax.core.Tracer):
        if residual.ndim != 0:
            raise ValueError(f"residual must be a scalar (True or False), got shape {residual.shape}")
    else:
        residual = bool(residual)
    return _layer_gradient_norms(key, residual, depth, channels, batch, size)


# residual is an argument, not a static one: the plain and the residual stack are one program (each
# took about 1.7 s to compile); a select between h + F(h) and F(h) gives each stack's values exactly.
@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _layer_gradient_norms(key, residual, depth, channels, batch, size):
    k_w, k_x, k_p = jax.random.split(key, 3)
    kernels = jax.random.normal(k_w, (depth, 3, 3, channels, channels)) * math.sqrt(2.0 / (9 * channels))
    x = jax.random.normal(k_x, (batch, size, size, channels))
    probe = jax.random.normal(k_p, (batch, size, size, channels))  # the loss is <output, probe>
    bn_params, bn_state = init_batch_norm(channels)

    def forward(kernels):
        def layer(h, w):
            out, _ = batch_norm(bn_params, bn_state, h, training=True)
            out = _conv({"w": w}, jax.nn.relu(out))
            return jnp.where(residual, h + out, out), None

        h, _ = jax.lax.scan(layer, x, kernels)
        return jnp.mean(h * probe)

    grads = jax.grad(forward)(kernels)  # (depth, 3, 3, C, C)
    return jnp.sqrt(jnp.sum(grads**2, axis=(1, 2, 3, 4)))
