r"""Transformer block
=================

Self-attention followed by a position-wise perceptron, each wrapped in a residual connection and a
layer normalisation: the unit that every transformer repeats, in the post-norm form of the original
paper or the pre-norm form to reach for when the stack is deep.

Equation
--------

Post-norm :footcite:`vaswani2017attention` normalises after each residual sum; pre-norm
:footcite:`xiong2020layer` normalises only the input of each sub-layer:

.. math::

   \text{post:}\quad h = \operatorname{LN}\big(x + \operatorname{Attn}(x)\big), \qquad
   y = \operatorname{LN}\big(h + \operatorname{FFN}(h)\big)

   \text{pre:}\quad h = x + \operatorname{Attn}\big(\operatorname{LN}(x)\big), \qquad
   y = h + \operatorname{FFN}\big(\operatorname{LN}(h)\big)

   \operatorname{FFN}(u) = \max(0,\, u W_1 + b_1)\, W_2 + b_2

A stack applies :math:`L` blocks in turn, :math:`x_{l} = \operatorname{Block}_l(x_{l-1})`; a
pre-norm stack ends with one more layer norm, :math:`\operatorname{LN}(x_L)`.

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`, :math:`x_{l}`
     - input of the block (the residual stream); output of block :math:`l` of a stack
     - ``x``
     - ``(T, d_model)``
   * - :math:`h`
     - the stream after the attention sub-layer
     - ``x`` inside ``apply``
     - ``(T, d_model)``
   * - :math:`y`
     - output of the block
     - ``apply(params, x, mask, norm=...)``
     - ``(T, d_model)``
   * - :math:`u`
     - the input of the perceptron, one row per position
     - argument of ``feed_forward``
     - ``(T, d_model)``
   * - :math:`W_1`, :math:`b_1`
     - first layer of the perceptron (expands to ``d_ff``)
     - ``params["mlp"][0]["W"]``, ``["b"]``
     - ``(d_model, d_ff)``, ``(d_ff,)``
   * - :math:`W_2`, :math:`b_2`
     - second layer of the perceptron (back to ``d_model``)
     - ``params["mlp"][1]["W"]``, ``["b"]``
     - ``(d_ff, d_model)``, ``(d_model,)``
   * - :math:`l`, :math:`L`
     - index of a block; number of blocks in a stack
     - ``num_layers``
     - scalar

:math:`\operatorname{Attn}` is :doc:`/docs/chapters/attention/multi_head` self-attention (with an
optional mask), :math:`\operatorname{LN}` is :doc:`/docs/chapters/normalization/layer_norm` with its
own scale and bias per sub-layer, and the perceptron is :doc:`/docs/chapters/foundations/mlp`
applied to every position separately.

Explanation
-----------

**Two kinds of mixing.** Attention is the only place where positions exchange information; the
perceptron then transforms each position on its own, with the same weights everywhere. Stacking
blocks alternates the two: gather from the sequence, think about what was gathered, gather again.
The perceptron is usually four times wider than the stream (``d_ff = 4 d_model``) and holds most
of the parameters.

.. admonition:: Intuition

   A stack of blocks works like rounds of a meeting that keeps shared minutes. In each round
   everyone first listens to everyone else (attention), then thinks alone about what was heard
   (the perceptron), and each step only adds an amendment to the minutes rather than rewriting
   them (the residual connection), so that nothing said earlier is lost.

**Residual connections** make each sub-layer learn a *correction* to its input rather than a new
representation: with the sub-layer near zero the block is near the identity, and the gradient reaches
early layers through the sum unchanged :footcite:`he2016deep`. **Layer normalisation** keeps the
scale of the activations fixed so that attention scores and ReLUs stay in a useful range
:footcite:`ba2016layer`.

**Where the normalisation sits matters.** In post-norm, every residual sum is normalised, so the
identity path is interrupted :math:`2L` times; in pre-norm, the stream :math:`x_L = x_0 + \sum_l
(\text{sub-layer outputs})` is a plain sum and only the sub-layers see normalised inputs.
:footcite:t:`xiong2020layer` showed that at initialisation the gradient of the last layers of a
post-norm transformer does not shrink as the stack gets deeper, while in pre-norm it shrinks like
:math:`1/\sqrt{L}`: each of the :math:`L` layers adds a comparable amount to the stream, and the final
layer norm divides the total by its size. With one learning rate for all layers, post-norm therefore
takes steps that are too large for its top layers at the start, which is why it needs a learning-rate
warm-up and still diverges at depth, whereas pre-norm trains without warm-up. The price is that the
later blocks of a pre-norm stack change the stream less and less, so deep pre-norm models use their
depth less efficiently.

The figure measures this on a 12-block stack at initialisation (``d_model`` 32, 4 heads): the
gradient norm of the last perceptron weight of each block, for a squared-error loss against random
targets. In post-norm the gradients *grow* towards the output; in pre-norm they *shrink* towards it.
The test checks the depth scaling: from 2 to 16 blocks, the last block's gradient shrinks by more
than half in pre-norm and stays about the same in post-norm.

.. plot::

   import jax
   from cookbook.transformers.transformer_block import init_stack, layer_gradient_norms
   k_p, k_x, k_t = jax.random.split(jax.random.key(0), 3)
   params = init_stack(k_p, num_layers=12, d_model=32, num_heads=4, d_ff=64)
   x, target = jax.random.normal(k_x, (11, 32)), jax.random.normal(k_t, (11, 32))
   plt.figure(figsize=(5, 3.4))
   for norm, marker in (("post", "o"), ("pre", "s")):
       g = layer_gradient_norms(params, x, target, norm=norm)
       plt.plot(np.arange(1, 13), np.asarray(g), marker=marker, label=f"{norm}-norm")
   plt.xlabel("block l (1 = nearest the input)")
   plt.ylabel("gradient norm of W2")
   plt.title("Gradients at initialisation, 12 blocks")
   plt.legend()
   plt.tight_layout()

**Numerics.** The layer norms compute their statistics in float32; the attention softmax is that of
:doc:`/docs/chapters/attention/scaled_dot_product` (masking with the most negative float, zero output
for a query that may attend to nothing). Weights are initialised with variance
:math:`2/\text{fan-in}` for the ReLU layer (He) and :math:`1/\text{fan-in}` for the others, so the
sub-layer outputs start at the scale of the stream.

Inductive bias
--------------

The block assumes that one computation, shared by every position, is right for all of them, and that
everything a position needs from the others can be gathered by content-based look-ups. It knows
nothing of order (self-attention is permutation equivariant, and so is the block) unless positions
are added to the input, and nothing of locality: a token far away is as easy to read as a neighbour.
That makes the transformer data-hungry on small problems where a convolution's or a recurrence's
assumptions would hold, and hard to beat once data are plentiful.

Example
-------

A causal pre-norm block and a post-norm one on seven tokens, and a stack of three blocks:

>>> import jax, jax.numpy as jnp
>>> from cookbook.transformers.transformer_block import (
...     init, apply, feed_forward, init_stack, apply_stack, layer_gradient_norms)
>>> k_p, k_s, k_x, k_t = jax.random.split(jax.random.key(0), 4)
>>> params = init(k_p, d_model=8, num_heads=2, d_ff=16)
>>> x = jax.random.normal(k_x, (7, 8))
>>> causal = jnp.tril(jnp.ones((7, 7), bool))
>>> y = apply(params, x, causal, norm="pre")
>>> y.shape
(7, 8)
>>> y_post = apply(params, x, causal, norm="post")
>>> bool(jnp.allclose(y_post.mean(axis=-1), 0.0, atol=1e-5))  # post-norm rows are normalised
True
>>> feed_forward(params["mlp"], x).shape
(7, 8)
>>> stack = init_stack(k_s, num_layers=3, d_model=8, num_heads=2, d_ff=16)
>>> apply_stack(stack, x, causal, norm="pre").shape
(7, 8)
>>> layer_gradient_norms(stack, x, jax.random.normal(k_t, (7, 8)), norm="pre").shape
(3,)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks
from cookbook.attention import multi_head
from cookbook.foundations import mlp
from cookbook.normalization.layer_norm import layer_norm
from cookbook.transformers._boundary import check_params

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "init": ("d_model", "num_heads", "d_ff", "cross_attention"),
    "feed_forward": (),
    "apply": ("norm",),
    "init_stack": ("num_layers", "d_model", "num_heads", "d_ff"),
    "apply_stack": ("norm",),
    "layer_gradient_norms": ("norm",),
}

NORMS = ("pre", "post")


def _init_norm(d_model):
    return {"scale": jnp.ones((d_model,)), "bias": jnp.zeros((d_model,))}


def _norm(p, x):
    return layer_norm(x, p["scale"], p["bias"])


def _check_norm(norm):
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def _check_block(params, stacked=False):
    """``params`` shaped as :func:`init` (or :func:`init_stack`) makes them, for the sizes read from the
    attention's output projection and the perceptron's second layer."""
    try:
        blocks = params["blocks"] if stacked else params
        *L, H, _, d_model = blocks["attn"]["W_o"].shape
        d_ff = blocks["mlp"][1]["W"].shape[-2]
        cross = "cross" in blocks
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"params must be the dict that init{'_stack' if stacked else ''} returns, got one "
                         f"without the usual shapes ({error!r})")
    if stacked:
        return check_params(params, init_stack, num_layers=L[0] if L else 0, d_model=d_model, num_heads=H, d_ff=d_ff)
    return check_params(params, init, d_model=d_model, num_heads=H, d_ff=d_ff, cross_attention=cross)


def _check_x(x, d_model, name="x"):
    x = _checks.float_array(x, name, ndim=2, what=f" (T, d_model) = (T, {d_model})")
    return _checks.same_shape(x, name, (x.shape[0], d_model), expected_from="(T, d_model)")


def _check_mask(mask, name, shape):
    if mask is None:
        return None
    mask = jnp.asarray(mask) if isinstance(mask, list) else mask
    if getattr(mask, "dtype", None) != jnp.bool_:
        raise TypeError(f"{name} must be a boolean array, got {mask!r:.80}")
    return _checks.same_shape(mask, name, shape)


def init(key, d_model, num_heads, d_ff, cross_attention=False):
    """Parameters of one block: self-attention, an MLP ``d_model -> d_ff -> d_model``, layer norms.

    ``cross_attention=True`` adds a second attention sub-layer that reads a context (a decoder
    block, as in the encoder-decoder transformer).
    """
    return _init(key, *_check_sizes(d_model, num_heads, d_ff), bool(cross_attention))


def _check_sizes(d_model, num_heads, d_ff):
    """The sizes as ints (hashable, for the static arguments of the programs below), or an error."""
    if _checks.size(d_ff, "d_ff", minimum=0) < 1:
        raise ValueError(f"d_ff must be a positive width, got d_ff={d_ff}")
    d_model, num_heads = _checks.size(d_model, "d_model"), _checks.size(num_heads, "num_heads")
    if d_model % num_heads:
        raise ValueError(f"num_heads must divide d_model, got d_model={d_model} and num_heads={num_heads}")
    return d_model, num_heads, int(d_ff)


# Not jitted: the random draws compile faster one by one (a compiled program holding them all took
# longer to compile than the eager calls here), and eager draws keep the weights bit for bit.
def _init(key, d_model, num_heads, d_ff, cross_attention):
    k_attn, k_cross, k_mlp = jax.random.split(key, 3)
    params = {
        "attn": multi_head.init(k_attn, d_model, num_heads),
        "ln_attn": _init_norm(d_model),
        "mlp": mlp.init(k_mlp, (d_model, d_ff, d_model)),
        "ln_mlp": _init_norm(d_model),
    }
    if cross_attention:
        params["cross"] = multi_head.init(k_cross, d_model, num_heads)
        params["ln_cross"] = _init_norm(d_model)
    return params


def feed_forward(params, x):
    """The position-wise MLP (ReLU hidden layer) applied to every row of ``x`` (T, d_model)."""
    try:
        d_ff, d_model = params[1]["W"].shape
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"params must be the two layers of mlp.init, got {type(params).__name__} ({error!r})")
    # NumPy zeros: only their shapes are compared, and they add nothing to a trace under jax.jit.
    like = [{"W": np.zeros((d_model, d_ff)), "b": np.zeros((d_ff,))},
            {"W": np.zeros((d_ff, d_model)), "b": np.zeros((d_model,))}]
    _checks.same_tree(params, "params", like, "mlp.init((d_model, d_ff, d_model))")
    return _feed_forward(params, _check_x(x, d_model))


# The checks run in Python; each computation below is one compiled program rather than dozens of
# eager operations that each compile on first use.
@jax.jit
def _feed_forward(params, x):
    return jax.vmap(mlp.apply, in_axes=(None, 0))(params, x)  # (T, d_model)


def apply(params, x, mask=None, *, norm="pre", context=None, context_mask=None):
    """One block on ``x`` (T, d_model): ``norm="pre"`` (Xiong et al.) or ``"post"`` (Vaswani et al.).

    ``mask`` (T, T), boolean, ``True`` = may attend, restricts self-attention (causal for a decoder).
    A block made with ``cross_attention=True`` needs ``context`` (S, d_model), read with the optional
    ``context_mask`` (T, S). Returns (T, d_model). One sequence; batch with :func:`jax.vmap`.
    """
    _check_norm(norm)
    _check_block(params)
    d_model = params["ln_attn"]["scale"].shape[0]
    x = _check_x(x, d_model)
    mask = _check_mask(mask, "mask", (x.shape[0], x.shape[0]))
    if context is not None:
        context = _check_x(context, d_model, "context")
        context_mask = _check_mask(context_mask, "context_mask", (x.shape[0], context.shape[0]))
    if ("cross" in params) != (context is not None):
        raise ValueError("context must be given exactly when the block has cross-attention, got "
                         f"cross_attention={'cross' in params} and context={'None' if context is None else context.shape}")
    return _apply(params, x, mask, context, context_mask, norm)


@functools.partial(jax.jit, static_argnums=5)
def _apply(params, x, mask, context, context_mask, norm):
    sublayers = [("ln_attn", lambda h: multi_head.apply(params["attn"], h, mask=mask))]
    if context is not None:
        sublayers.append(("ln_cross", lambda h: multi_head.apply(params["cross"], h, context, context_mask)))
    sublayers.append(("ln_mlp", lambda h: _feed_forward(params["mlp"], h)))
    for ln, f in sublayers:
        if norm == "pre":
            x = x + f(_norm(params[ln], x))  # the residual stream is never normalised
        else:
            x = _norm(params[ln], x + f(x))  # every sub-layer's sum is normalised
    return x


def init_stack(key, num_layers, d_model, num_heads, d_ff):
    """``num_layers`` blocks with their parameters stacked on a leading axis (for :func:`jax.lax.scan`),
    and the final layer norm that a pre-norm stack needs."""
    if _checks.size(num_layers, "num_layers", minimum=0) < 1:
        raise ValueError(f"num_layers must be at least 1, got num_layers={num_layers}")
    return _init_stack(key, int(num_layers), *_check_sizes(d_model, num_heads, d_ff))


def _init_stack(key, num_layers, d_model, num_heads, d_ff):
    keys = jax.random.split(key, num_layers)
    blocks = jax.vmap(lambda k: _init(k, d_model, num_heads, d_ff, False))(keys)
    return {"blocks": blocks, "ln_final": _init_norm(d_model)}


def apply_stack(params, x, mask=None, *, norm="pre"):
    """The stacked blocks on ``x`` (T, d_model), scanned over layers; pre-norm ends with a layer norm."""
    _check_norm(norm)
    _check_block(params, stacked=True)
    x = _check_x(x, params["ln_final"]["scale"].shape[0])
    mask = _check_mask(mask, "mask", (x.shape[0], x.shape[0]))
    return _apply_stack(params, x, mask, norm)


@functools.partial(jax.jit, static_argnums=3)
def _apply_stack(params, x, mask, norm):
    def layer(h, block):
        return _apply(block, h, mask, None, None, norm), None

    x, _ = jax.lax.scan(layer, x, params["blocks"])
    return _norm(params["ln_final"], x) if norm == "pre" else x


def layer_gradient_norms(params, x, target, *, norm="pre"):
    """Euclidean norm of the gradient of each layer's MLP output weights, shape (L,).

    The loss is the mean squared error between the stack's output and ``target`` (T, d_model), the
    measure used to compare the two placements of the normalisation at initialisation.
    """
    _check_block(params, stacked=True)
    x = _check_x(x, params["ln_final"]["scale"].shape[0])
    target = _checks.float_array(target, "target")
    if target.shape != x.shape:
        raise ValueError(f"target must have the shape of x {x.shape}, got shape {target.shape}")
    _check_norm(norm)
    return _layer_gradient_norms(params, x, target, norm)


@functools.partial(jax.jit, static_argnums=3)
def _layer_gradient_norms(params, x, target, norm):
    def loss(p):
        return jnp.mean((_apply_stack(p, x, None, norm) - target) ** 2)

    grads = jax.grad(loss)(params)
    W = grads["blocks"]["mlp"][-1]["W"]  # (L, d_ff, d_model): the last weight of each layer's MLP
    return jnp.sqrt(jnp.sum(W**2, axis=(1, 2)))
