r"""Mixed-precision training
========================

Mixed precision runs the forward and backward passes in 16-bit floating point while a 32-bit master
copy of the weights takes the updates, and scales the loss so that small gradients survive the
16-bit range: about half the memory traffic and, on hardware with 16-bit matrix units, several
times the speed, with the accuracy of float32 training.

Equation
--------

.. math::

   \begin{aligned}
   g &= \frac{1}{S}\, \operatorname{f32}\!\Bigl(\nabla_{\theta_{16}} \bigl[S \cdot L(\theta_{16})\bigr]\Bigr),
     \qquad \theta_{16} = \operatorname{f16}(\theta_{32}), \\
   \text{if } g \text{ is finite:}\quad & \theta_{32} \leftarrow \theta_{32} - \eta\, g, \quad
     n \leftarrow n + 1, \quad \text{and if } n = N:\ S \leftarrow 2 S,\ n \leftarrow 0, \\
   \text{otherwise:}\quad & \text{skip the update}, \quad S \leftarrow \max(S / 2, S_{\min}), \quad n \leftarrow 0
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`\theta_{32}`
     - the master weights, kept and updated in float32
     - ``params``
     - pytree
   * - :math:`\theta_{16}`
     - their 16-bit copy that the forward and backward passes use
     - ``cast_floats(params, compute_dtype)``
     - pytree
   * - :math:`L`
     - the loss, computed (at its end) in float32
     - ``loss_fn``
     - scalar
   * - :math:`S`
     - the loss scale
     - ``state.scale``
     - scalar
   * - :math:`g`
     - the unscaled float32 gradient
     - ``grads``
     - pytree
   * - :math:`\eta`
     - the learning rate
     - ``learning_rate``
     - scalar
   * - :math:`n`, :math:`N`
     - finite steps since the scale last changed, and how many make it grow
     - ``state.count``, ``period``
     - scalar
   * - :math:`S_{\min}`
     - the smallest scale allowed
     - ``min_scale``
     - scalar

Explanation
-----------

float16 has 5 exponent bits and 10 mantissa bits: its largest value is 65504, its smallest normal
one :math:`2^{-14} \approx 6 \times 10^{-5}` (subnormals reach :math:`6 \times 10^{-8}`), and
between 1 and 2 its values are :math:`2^{-10} \approx 0.001` apart. Two things go wrong when a
network is simply trained in it :footcite:p:`micikevicius2018mixed`. Gradients, often smaller than
:math:`2^{-24}`, flush to zero. And an update much smaller than the weight it is added to vanishes:
:math:`1 + 10^{-4}` is 1 in float16, so a weight of 1 stays 1 under a thousand such updates.

The recipe fixes each. The weights live in float32 (the *master* copy) and are cast to float16
for each step; the update is applied to the master copy, where a sum of small updates is kept.
The loss is multiplied by a *scale* :math:`S` before the backward pass, which shifts every gradient
up by the same factor (the chain rule is linear), into float16's range; the gradients are cast to
float32 and divided by :math:`S` again before the update. Products and sums inside the passes may
stay in float16 on hardware that accumulates matrix products in float32, as tensor cores do; the
loss and reductions such as softmax and normalisation statistics are computed in float32.

*Dynamic loss scaling* picks :math:`S` as large as the gradients allow. A scale too large makes
some gradient overflow to infinity (or NaN); then the step is skipped, and :math:`S` halves. After
:math:`N` finite steps in a row, :math:`S` doubles, to probe whether a larger scale now fits. A
skipped step now and then is the price; the tests trace the state machine step by step, and train
a 64-32-10 network on the digits in float16 from a scale of :math:`2^{20}`, which overflows at
first, to over 95 % held-out accuracy.

**bfloat16** keeps float32's 8 exponent bits and only 7 mantissa bits: the same range, so gradients
do not underflow and no loss scale is needed (the tests: :math:`10^{-30}` is 0 in float16 and not in
bfloat16), but coarser steps, so master weights in float32 matter even more.

.. admonition:: Intuition

   A scale that weighs to the nearest gram cannot weigh a grain of rice, so weigh a thousand grains
   and divide by a thousand; if the pile is too heavy for the scale, halve it and try again. The
   ledger in which the grains add up is kept in a finer book than the scale shows.

*Numerical traps.* Unscaling happens in float32, after the cast: dividing a float16 gradient by
:math:`2^{15}` would flush it to zero again. Overflow must be checked on every gradient leaf, and a
single infinity skips the whole step (all leaves together). With a power of two for the scale and
the factor, scaling and unscaling are exact.

*Bad input.* ``state`` must be a ``LossScale``; ``finite`` a boolean scalar; ``period`` a positive
integer, ``factor`` above 1 and ``min_scale`` positive; ``compute_dtype`` a 16- or 32-bit float type.
A ``ValueError`` or ``TypeError`` names the argument.

Inductive bias
--------------

None about the data: mixed precision changes how a network is computed, not what it can learn. It
assumes that the network's function and its training are insensitive to errors of the order of
float16's or bfloat16's precision in each product, which holds for most layers but not for all
(long sums, softmax and normalisation statistics, the optimiser's state), which are kept in float32.

Example
-------

The loss-scale state machine, with a period of 2 for the example:

>>> import jax, jax.numpy as jnp
>>> from cookbook.efficiency.mixed_precision import adjust_loss_scale, init_loss_scale
>>> state = init_loss_scale(2.0 ** 15)
>>> for finite in (True, True, False, True):
...     state = adjust_loss_scale(state, jnp.array(finite), period=2)
...     print(float(state.scale), int(state.count))
32768.0 1
65536.0 0
32768.0 0
32768.0 1

A gradient of about :math:`10^{-9}` is lost in float16 without a scale, and kept with one:

>>> from cookbook.efficiency.mixed_precision import scaled_grad
>>> x = jnp.array([[1.0, 2.0, 3.0]], jnp.float16)  # data in the compute type
>>> def loss_fn(params):
...     return 1e-9 * jnp.mean(x @ params["w"]).astype(jnp.float32)
>>> params = {"w": jnp.ones(3)}  # float32 master weights
>>> loss, grads, finite = scaled_grad(loss_fn, params, init_loss_scale(1.0))
>>> grads["w"]
Array([0., 0., 0.], dtype=float32)
>>> loss, grads, finite = scaled_grad(loss_fn, params, init_loss_scale(2.0 ** 24))
>>> grads["w"].dtype, bool(finite), bool(jnp.allclose(grads["w"], jnp.array([1e-9, 2e-9, 3e-9]), rtol=1e-3))
(dtype('float32'), True, True)

The update goes to the float32 master weights, and is skipped when a gradient overflowed:

>>> from cookbook.efficiency.mixed_precision import apply_if_finite
>>> apply_if_finite(params, grads, finite, learning_rate=1e7)["w"]
Array([0.99, 0.98, 0.97], dtype=float32)
>>> apply_if_finite(params, grads, jnp.array(False), learning_rate=1e7)["w"]
Array([1., 1., 1.], dtype=float32)

Implementation notes
--------------------

DeepMind's ``jmp`` library provides ``DynamicLossScale`` (``adjust``, ``scale``, ``unscale``) with
the same state machine (the tests follow it step for step over 300 random steps), a period of 2000
and a factor of 2; it also refuses to grow a scale to infinity. PyTorch's ``torch.amp.GradScaler``
defaults to an initial scale of :math:`2^{16}`, a growth interval of 2000 and the same factors.
On TPUs and recent GPUs, bfloat16 with float32 master weights and no loss scale is the common
choice. Optimiser state (Adam's moments) stays in float32; recent work trains in 8-bit floating point
(FP8) with per-tensor scales in the same spirit.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "adjust_loss_scale": ("period", "factor", "min_scale"),
    "scaled_grad": ("loss_fn", "compute_dtype"),
    "apply_if_finite": (),
}


class LossScale(NamedTuple):
    """The dynamic loss scale: ``scale`` (float32) and ``count`` (int32), finite steps since it last changed."""

    scale: jax.Array
    count: jax.Array


def init_loss_scale(scale=2.0 ** 15):
    """A ``LossScale`` starting at ``scale`` with a count of 0."""
    _checks.positive(scale, "scale")
    return LossScale(jnp.asarray(scale, jnp.float32), jnp.asarray(0, jnp.int32))


def _state(state):
    if not isinstance(state, LossScale):
        raise TypeError(f"state must be a LossScale (from init_loss_scale), got {type(state).__name__}")
    scale = _checks.float_array(state.scale, "state.scale", ndim=0)
    count = _checks.int_array(state.count, "state.count", ndim=0)
    return LossScale(scale, count)


def _boolean(finite):
    finite = jnp.asarray(finite) if isinstance(finite, (bool, np.bool_)) else _checks._as_array(finite, "finite")
    if finite.dtype != jnp.bool_ or finite.ndim != 0:
        raise TypeError(f"finite must be a boolean scalar, got dtype {finite.dtype} and shape {tuple(finite.shape)}")
    return finite


def all_finite(tree):
    """Whether every entry of every array leaf of ``tree`` is finite: a boolean scalar."""
    return _all_finite(tree)


@jax.jit  # one compiled program per tree of shapes rather than a test, a reduction and a stack eagerly
def _all_finite(tree):
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def adjust_loss_scale(state, finite, *, period=2000, factor=2.0, min_scale=1.0):
    """The next ``LossScale``: after a non-finite step the scale is divided by ``factor`` (not below
    ``min_scale``) and the count reset; after ``period`` finite steps in a row it is multiplied by
    ``factor`` and the count reset; otherwise the count grows by one."""
    state, finite = _state(state), _boolean(finite)
    period = _checks.size(period, "period")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 1:
        raise ValueError(f"factor must be a number above 1, got {factor!r}")
    _checks.positive(min_scale, "min_scale")
    return _adjust(state, finite, min_scale, period, factor)


# One compiled program per period and factor rather than a dozen small ones when called eagerly;
# min_scale is traced, as a number it was a weakly typed constant of the same value.
@functools.partial(jax.jit, static_argnums=(3, 4))
def _adjust(state, finite, min_scale, period, factor):
    grow = state.count == period - 1
    scale = jnp.where(finite, jnp.where(grow, state.scale * factor, state.scale),
                      jnp.maximum(state.scale / factor, min_scale))
    count = jnp.where(finite & ~grow, state.count + 1, 0)
    return LossScale(scale.astype(state.scale.dtype), count.astype(state.count.dtype))


def cast_floats(tree, dtype):
    """``tree`` with every floating-point leaf cast to ``dtype`` (integer leaves unchanged)."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x, tree)


def _check_loss(loss_fn, params):
    """A ``ValueError`` naming ``params`` unless ``loss_fn(params)`` is a scalar (traced, never run)."""
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be a function of params, got {type(loss_fn).__name__}")
    try:
        out = jax.eval_shape(loss_fn, params)
    except (TypeError, ValueError) as error:
        raise ValueError(f"loss_fn cannot take params of shapes {jax.tree.map(jnp.shape, params)}: {error}") from None
    if jnp.shape(out) != ():
        raise ValueError(f"loss_fn must map params to a scalar loss, got an output of shape {jnp.shape(out)}")


def scaled_grad(loss_fn, params, state, *, compute_dtype=jnp.float16):
    """``(loss, grads, finite)`` of ``loss_fn(params)`` computed in ``compute_dtype``.

    ``params`` (float32 master weights) are cast to ``compute_dtype`` (data that ``loss_fn`` closes
    over should be in that type too); the loss is cast to float32 and multiplied by ``state.scale``
    before differentiation; ``grads`` are cast to float32 and divided by the scale; ``finite`` says
    whether all of them are finite. ``loss`` is the unscaled float32 loss.
    """
    state = _state(state)
    if jnp.dtype(compute_dtype) not in (jnp.float16, jnp.bfloat16, jnp.float32):
        raise TypeError(f"compute_dtype must be float16, bfloat16 or float32, got {compute_dtype!r}")
    _checks.same_tree(params, "params", params, "params")  # float leaves
    low_params = cast_floats(params, compute_dtype)
    _check_loss(loss_fn, low_params)
    return _scaled_grad(loss_fn, low_params, state.scale)


# One compiled program per loss function and shapes, rather than dozens of small ones when called
# eagerly: define the loss once and reuse it (a new closure at every call compiles again).
@functools.partial(jax.jit, static_argnums=0)
def _scaled_grad(loss_fn, low_params, scale):
    def scaled_loss(low_params):
        loss = loss_fn(low_params).astype(jnp.float32)
        return loss * scale, loss

    (_, loss), grads = jax.value_and_grad(scaled_loss, has_aux=True)(low_params)
    grads = jax.tree.map(lambda g: g.astype(jnp.float32) / scale, grads)  # unscale in float32
    return loss, grads, all_finite(grads)


def apply_if_finite(params, grads, finite, *, learning_rate):
    """``params - learning_rate * grads`` when ``finite``, else ``params`` unchanged (the step skipped).

    A gradient step on the float32 master weights; ``grads`` must have the structure of ``params``.
    """
    _checks.same_tree(params, "params", params, "params")  # float leaves
    _checks.same_tree(grads, "grads", params, "params")
    finite = _boolean(finite)
    _checks.positive(learning_rate, "learning_rate")
    return _apply_if_finite(params, grads, finite, learning_rate)


@jax.jit  # one compiled program per tree of shapes; the learning rate traced
def _apply_if_finite(params, grads, finite, learning_rate):
    return jax.tree.map(lambda p, g: jnp.where(finite, p - learning_rate * g.astype(p.dtype), p), params, grads)
