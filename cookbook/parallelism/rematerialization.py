r"""Rematerialisation
=================

Store only some of the activations that the backward pass needs and compute the others again
when it needs them (activation checkpointing, :func:`jax.checkpoint`): the same gradients for less
memory and one extra forward pass, the trade to make when activations, not parameters, fill a
device.

Equation
--------

A stack of :math:`L` layers, cut into segments of :math:`s` layers; only each segment's input is
kept from the forward pass:

.. math::

   h_{l} = \tanh(h_{l-1} W_l + b_l), \qquad l = 1, \dots, L, \qquad
   \mathcal{L} = \tfrac{1}{2} \operatorname{mean}(h_L^2)

   \text{kept: } h_0, h_s, h_{2s}, \dots, h_{L-s}, \qquad
   \text{memory} \approx \Big(\frac{L}{s} + r s\Big) a, \qquad
   s^\star = \sqrt{L / r}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`h_l`, :math:`h_0`
     - activations after layer :math:`l`; the input
     - ``h``; ``x``
     - ``(B, D)``
   * - :math:`W_l`, :math:`b_l`
     - weights and bias of layer :math:`l`
     - slice :math:`l` of ``params["W"]``, of ``params["b"]``
     - ``(D, D)``, ``(D,)``
   * - :math:`l`, :math:`L`
     - index of a layer; depth
     - ``L``
     - scalar
   * - :math:`\mathcal{L}`
     - the loss, a stand-in for any scalar computed from the output
     - ``loss``
     - ``()``
   * - :math:`s`, :math:`s^\star`
     - layers per checkpointed segment; the one that needs least memory
     - ``segment``
     - scalar
   * - :math:`r`
     - activation-sized arrays that one layer keeps for its backward pass when nothing is
       recomputed (3 here, measured)
     - the residuals of ``layer``
     - scalar
   * - :math:`a`
     - bytes of one activation, :math:`4 B D` in float32
     - the bytes of ``x``
     - scalar

Explanation
-----------

Backpropagation needs, for every layer, quantities from the forward pass: its input for the
weight gradient, and the derivative of its nonlinearity. Stored for all :math:`L` layers they cost
:math:`r L` activations, and for a deep network on long inputs they, not the parameters, fill the
device. Chen et al. :footcite:`chen2016training` (after Griewank's checkpointing of adjoint
computations :footcite:`griewank2008evaluating`) keep only the input of every segment of
:math:`s` layers. In the backward pass, a segment is first computed again from its kept input,
this time storing its :math:`r s` residuals, and then differentiated. Peak memory is the kept
inputs plus one segment's residuals, :math:`(L/s + r s)` activations, smallest at
:math:`s^\star = \sqrt{L/r}`, where it grows as :math:`\sqrt{L}`; the cost is one more forward
pass of every layer. The gradients are those of the plain program: the same operations on the
same numbers, only done twice.

.. admonition:: Intuition

   A hiker who must walk back along a long trail leaves a cairn every few kilometres instead of
   photographing every step. On the way back, at each cairn, she walks the next stretch forward
   again from the cairn, memorising it, and then retraces it. She walks each stretch twice, but
   carries only the cairns and one stretch in her head.

**In JAX.** :func:`jax.checkpoint` (also :func:`jax.remat`) marks a function whose residuals
are not saved; its ``policy`` says which intermediate values may be saved after all:
``nothing_saveable`` recomputes everything inside, and ``dots_with_no_batch_dims_saveable`` keeps
the results of matrix products and recomputes only the cheap elementwise work around them, here
the tanh. The layers run under :func:`jax.lax.scan`; a segment is an inner scan of :math:`s`
layers wrapped in :func:`jax.checkpoint`, and an outer scan runs the :math:`L/s` segments.
``segment=L`` keeps only the input and recomputes the whole stack, which saves nothing.

**Measured, not estimated.** The tests compile the gradient for :math:`L = 64` layers on a batch
of 256 rows of 16 features (:math:`a` = 16 KiB) and read XLA's temporary buffers: without
checkpointing they hold :math:`r \approx 3` activations per layer (the input, the output and the
derivative of the tanh); checkpointing every layer leaves about one per layer; segments of
:math:`s = 4` layers, near :math:`\sqrt{64/3} \approx 4.6`, need less than a fifth of the plain
program's memory. XLA's cost analysis of the loop body shows the price: the gradient of a layer
costs a third more floating-point operations with ``nothing_saveable`` (the forward product is
done twice), and about the same with the dots policy, which recomputes only the tanh.

Inductive bias
--------------

None: the model and its gradients are unchanged (the tests compare them), only the schedule of
the computation is. The assumption is about cost: that computing is cheaper than remembering, as
on accelerators whose memory, not arithmetic, limits the batch or the depth.

Example
-------

The stack of the measurements, 64 layers of width 16 on a batch of 256:

>>> import jax, jax.numpy as jnp
>>> from cookbook.parallelism.rematerialization import init, loss, gradient
>>> k_p, k_x = jax.random.split(jax.random.key(0))
>>> params = init(k_p, depth=64, width=16)
>>> x = jax.random.normal(k_x, (256, 16))
>>> loss(params, x).shape
()
>>> plain = gradient(params, x, policy="none")
>>> remat = gradient(params, x, policy="nothing", segment=4)  # 16 segments of 4 layers
>>> plain["W"].shape, bool(jnp.allclose(plain["W"], remat["W"], atol=1e-7))
((64, 16, 16), True)

Implementation notes
--------------------

**Where it is used.** Large transformers checkpoint every block (the residual stream between
blocks is kept, the attention and MLP inside are recomputed), often with a policy that keeps
the matrix products; memory-efficient attention (:doc:`../attention/memory_efficient`) is
rematerialisation inside one layer. Policies can also name values to keep
(``save_only_these_names`` with ``jax.ad_checkpoint.checkpoint_name``) or move them to host
memory instead of recomputing them.

**Reading the compiled program.** ``cost`` returns XLA's ``memory_analysis`` temporaries and its
cost analysis's ``flops``; the cost analysis counts the body of a loop once, not once per trip, so
its flops compare the variants per layer, not in total.
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"loss": ("policy", "segment"), "gradient": ("policy", "segment")}

#: What :func:`jax.checkpoint` may save inside a segment; ``"none"`` checkpoints nothing at all.
POLICIES = {
    "none": None,
    "nothing": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def init(key, depth, width):
    """Weights ``W`` (L, D, D), normal with variance 1/D, and biases ``b`` (L, D), zero."""
    depth, width = _checks.size(depth, "depth"), _checks.size(width, "width")
    W = jax.random.normal(key, (depth, width, width)) / jnp.sqrt(width)
    return {"W": W, "b": jnp.zeros((depth, width))}


def _check(params, x, policy, segment):
    if not isinstance(params, dict) or set(params) != {"W", "b"}:
        raise TypeError(f"params must be the dict {{'W', 'b'}} that init returns, got {type(params).__name__}")
    W = _checks.float_array(params["W"], "params['W']", ndim=3, what=" (L, D, D)")
    L, D, _ = W.shape
    _checks.same_shape(W, "params['W']", (L, D, D), expected_from="(L, D, D)")
    _checks.same_shape(_checks.float_array(params["b"], "params['b']"), "params['b']", (L, D),
                       expected_from="(L, D), with L and D from params['W']")
    x = _checks.float_array(x, "x", ndim=2, what=f" (B, D) = (B, {D})")
    _checks.same_shape(x, "x", (x.shape[0], D), expected_from="(B, D), with D from params['W']")
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {sorted(POLICIES)}, got {policy!r}")
    segment = _checks.size(segment, "segment")
    if L % segment:
        raise ValueError(f"segment must divide the depth L = {L}, got {segment}")
    return x


def layer(h, W_b):
    """One layer, ``tanh(h W + b)``, as a step of :func:`jax.lax.scan`."""
    W, b = W_b
    return jnp.tanh(h @ W + b[None, :]), None  # (B, D)


@functools.partial(jax.jit, static_argnames=("policy", "segment"))
def _jit_loss(params, x, policy, segment):
    return _loss(params, x, policy, segment)


def _loss(params, x, policy, segment):
    L, D, _ = params["W"].shape

    def run_segment(h, W_b):  # s layers, an inner scan
        return jax.lax.scan(layer, h, W_b)[0], None

    if policy != "none":  # keep only the segment's input; recompute the rest in the backward pass
        run_segment = jax.checkpoint(run_segment, policy=POLICIES[policy])
    segments = (params["W"].reshape(L // segment, segment, D, D), params["b"].reshape(L // segment, segment, D))
    h, _ = jax.lax.scan(run_segment, x.astype(jnp.float32), segments)  # (B, D)
    return 0.5 * jnp.mean(h ** 2)


def loss(params, x, *, policy="none", segment=1):
    """Half the mean square of the stack's output for inputs x (B, D); ``policy`` and ``segment``
    change how the gradient is computed, never the value."""
    x = _check(params, x, policy, segment)
    return _jit_loss(params, x, policy, segment)


@functools.partial(jax.jit, static_argnames=("policy", "segment"))
def _gradient(params, x, policy, segment):
    return jax.grad(_loss)(params, x, policy, segment)


def gradient(params, x, *, policy="none", segment=1):
    """The gradient of :func:`loss` with respect to ``params``, with the layers checkpointed in
    segments of ``segment`` layers under ``policy`` (one of :data:`POLICIES`)."""
    x = _check(params, x, policy, segment)
    return _gradient(params, x, policy, segment)


def cost(params, x, *, policy="none", segment=1):
    """The compiled gradient program's ``temporaries`` (bytes, XLA's ``memory_analysis``) and
    ``flops`` (XLA's cost analysis, which counts a loop body once)."""
    x = _check(params, x, policy, segment)
    compiled = _gradient.lower(params, x, policy=policy, segment=segment).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return {"temporaries": int(compiled.memory_analysis().temp_size_in_bytes), "flops": float(analysis["flops"])}
