r"""Stochastic depth
================

Skip whole residual blocks at random during training, each example independently, with a survival
probability that falls linearly with depth; reach for it to train very deep residual networks
(ResNets, vision transformers) faster and with less overfitting.

Equation
--------

.. math::

   b \sim \operatorname{Bernoulli}(p_l), \qquad
   x_l = x_{l-1} + \frac{b}{p_l}\, f_l(x_{l-1}) \quad \text{(training)}, \qquad
   x_l = x_{l-1} + f_l(x_{l-1}) \quad \text{(evaluation)}

   p_l = 1 - \frac{l}{L}\,(1 - p_L), \qquad l = 1, \dots, L

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_{l-1}`, :math:`x_l`
     - input and output of residual block :math:`l`, for a batch
     - ``x``; the return value
     - ``(B, ..., D)``
   * - :math:`f_l`
     - the residual branch of block :math:`l` (its output, computed by the caller)
     - ``branch``
     - ``(B, ..., D)``, like ``x``
   * - :math:`b`
     - survival draw, one per example: 1 keeps the branch, 0 skips it
     - ``keep``
     - ``(B, 1, ..., 1)``
   * - :math:`p_l`
     - survival probability of block :math:`l`
     - ``survival_prob``
     - scalar in :math:`(0, 1]`
   * - :math:`p_L`
     - survival probability of the last block (0.5 in the paper)
     - ``final_survival``
     - scalar
   * - :math:`l`, :math:`L`
     - index of a block (1-based); number of blocks
     - ``num_blocks``
     - scalar

Explanation
-----------

A residual block computes :math:`x + f(x)`, so removing its branch leaves the identity, a perfectly
good (if shallower) network. Stochastic depth :footcite:`huang2016deep` exploits this: in training,
each block's branch is kept with probability :math:`p_l` and skipped otherwise, so every step
trains a random shallower sub-network. The expected depth is much smaller than :math:`L` (for the
linear rule, :math:`(3L - 1)/4` blocks when :math:`p_L = 1/2`), which shortens the gradient
paths, eases the vanishing-gradient problem and cuts training time, while at evaluation the full
depth is used. Like dropout (:doc:`dropout`), it trains an implicit ensemble, here of networks of
different depths sharing weights.

**The linear decay rule.** Early blocks compute low-level features that every later block needs,
so they should almost always survive; late blocks refine, and can be skipped more often. The paper
sets :math:`p_l = 1 - \frac{l}{L}(1 - p_L)`, falling linearly from (almost) 1 at the first block to
:math:`p_L` at the last, and found it better than one uniform :math:`p`.

**Scaling: which convention.** The paper trains with :math:`x_{l-1} + b\,f_l(x_{l-1})` and multiplies
each branch by :math:`p_l` at test time, so that the test-time branch equals its training-time
expectation. This recipe uses the *inverted* convention (as inverted dropout does, and as most
libraries' "drop path" does): the kept branches are divided by :math:`p_l` during training, so
the expectation :math:`\mathbb{E}[b/p_l]\,f_l = f_l` is already right and evaluation is the plain
residual :math:`x_{l-1} + f_l(x_{l-1})` with no knowledge of :math:`p_l`. The two conventions train
the same function up to that fixed per-block scale.

**Per example.** The draw :math:`b` is made for each example of the batch, not once per batch (the
paper's original form, which drops the block for the whole mini-batch and so also saves its
compute): different examples of a batch pass through different sub-networks, which gives a
less noisy gradient. The batch axis is therefore part of the idea, and the functions take the
batch ``(B, ..., D)``, with one key for the whole batch. ``residual_stack`` shows the complete loop
over depth, with a :func:`jax.lax.scan` over blocks and one key split off per block.

*Numerical traps.* :math:`p_l = 0` would divide by zero and is rejected, as is any probability
outside :math:`(0, 1]` or a NaN, when the values are concrete (under :func:`jax.jit` traced
probabilities are not checked); the scaling is done in the
branch's dtype, so a float16 branch stays float16.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.regularization.stochastic_depth import survival_probabilities
   L = 54  # the paper's 110-layer ResNet has 54 residual blocks
   p = survival_probabilities(L, 0.5)
   keep = jax.random.bernoulli(jax.random.key(0), p[None, :], (12, L))  # 12 examples
   fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6.5, 4.2), sharex=True)
   ax1.plot(jnp.arange(1, L + 1), p, "o-", ms=3)
   ax1.set_ylabel("survival probability $p_l$")
   ax1.set_ylim(0, 1.05)
   ax2.imshow(keep, aspect="auto", cmap="Greys", interpolation="nearest", extent=(0.5, L + 0.5, 12.5, 0.5))
   ax2.set_xlabel("residual block $l$")
   ax2.set_ylabel("example")
   ax2.set_title("blocks kept (black) in one training step", fontsize=9)
   ax2.set_yticks([1, 4, 8, 12])
   fig.tight_layout()

.. admonition:: Intuition

   Stochastic depth is a relay team trained with runners randomly sitting out: each leg must hand
   on something the next runner can use even if the runner before it was absent, and the baton
   (the identity path) always gets through. On race day everyone runs. Because the early legs
   matter to everyone after them, they sit out least, which is the linear decay rule.

Inductive bias
--------------

Stochastic depth assumes that the blocks of a deep residual network are *incrementally refining*
a shared representation, so that any one of them can be skipped without destroying the computation,
and that later blocks matter less than earlier ones. That holds for residual networks, whose
blocks are known to behave like an ensemble of shallower paths; it does not hold for a plain
(non-residual) stack, where skipping a layer breaks the chain, nor for blocks that change the
shape of the representation (downsampling blocks are never dropped).

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.regularization.stochastic_depth import (
...     residual_stack, stochastic_depth, survival_probabilities)
>>> survival_probabilities(5, 0.5)  # linear decay towards p_L = 0.5
Array([0.9, 0.8, 0.7, 0.6, 0.5], dtype=float32)
>>> x = jnp.zeros((4, 3))  # (B, D)
>>> branch = jnp.ones((4, 3))  # the residual branch's output, f(x)
>>> stochastic_depth(jax.random.key(0), x, branch, 0.5)  # each example keeps (x2) or drops its branch
Array([[0., 0., 0.],
       [0., 0., 0.],
       [2., 2., 2.],
       [2., 2., 2.]], dtype=float32)
>>> stochastic_depth(None, x, branch, 0.5, deterministic=True)  # evaluation: the full residual
Array([[1., 1., 1.],
       [1., 1., 1.],
       [1., 1., 1.],
       [1., 1., 1.]], dtype=float32)
>>> W = 0.1 * jax.random.normal(jax.random.key(1), (5, 3, 3))  # five blocks of tanh(h W_l)
>>> residual_stack(jax.random.key(2), W, jnp.ones((4, 3)), survival_probabilities(5, 0.5)).shape
(4, 3)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "survival_probabilities": ("num_blocks",),
    "drop_path": ("deterministic",),
    "stochastic_depth": ("deterministic",),
    "residual_stack": ("deterministic",),
}


def _check_prob(value, name):
    if not isinstance(value, jax.core.Tracer):  # checked whenever the value is known
        v = np.asarray(value)
        if not np.all((v > 0) & (v <= 1)):  # a NaN fails too
            raise ValueError(f"{name} must lie in (0, 1], got {value}")


def survival_probabilities(num_blocks, final_survival):
    """The linear decay rule: ``p_l = 1 - l / L * (1 - p_L)`` for blocks ``l = 1, ..., L``; shape (L,)."""
    num_blocks = _checks.size(num_blocks, "num_blocks")
    _check_prob(final_survival, "final_survival")
    return _survival_probabilities(num_blocks, final_survival)


# One compiled program per number of blocks, rather than four eager operations that each compile.
@functools.partial(jax.jit, static_argnums=0)
def _survival_probabilities(num_blocks, final_survival):
    l = jnp.arange(1, num_blocks + 1, dtype=jnp.float32)
    return 1.0 - l / num_blocks * (1.0 - final_survival)


def drop_path(key, branch, survival_prob, *, deterministic=False):
    """Keep each example's ``branch`` (B, ...) with probability ``survival_prob`` and scale it by ``1/p``.

    The whole example is kept or dropped, not single entries. With ``deterministic=True`` the branch is
    returned unchanged (``key`` may be ``None``).
    """
    _check_prob(survival_prob, "survival_prob")
    branch = _checks.float_array(branch, "branch", min_ndim=1, what=" (B, ...)")
    if deterministic:
        return branch
    return _drop_path(key, branch, survival_prob, _scale(survival_prob, branch.dtype))


def _scale(survival_prob, dtype):
    """``1 / p`` in the branch's dtype; a known ``p`` is divided in NumPy (no program to compile)."""
    if isinstance(survival_prob, jax.core.Tracer):
        return jnp.asarray(1.0 / survival_prob, dtype)
    if isinstance(survival_prob, jax.Array):
        survival_prob = np.asarray(survival_prob)
    return np.asarray(1.0 / survival_prob, dtype)


# One compiled program per shape: the draw, the scaling and the select.
@jax.jit
def _drop_path(key, branch, survival_prob, scale):
    mask_shape = (branch.shape[0],) + (1,) * (branch.ndim - 1)  # one draw per example
    keep = jax.random.bernoulli(key, survival_prob, mask_shape)
    return jnp.where(keep, branch * scale, jnp.zeros_like(branch))


def stochastic_depth(key, x, branch, survival_prob, *, deterministic=False):
    """The output ``x + b / p * branch`` of a residual block whose branch survives with probability ``p``."""
    x, branch = _checks.float_array(x, "x"), _checks.float_array(branch, "branch")
    if x.shape != branch.shape:
        raise ValueError(f"x and branch must have the same shape (B, ..., D), got {x.shape} and {branch.shape}")
    return x + drop_path(key, branch, survival_prob, deterministic=deterministic)


def residual_stack(key, W, x, survival_probs, *, deterministic=False):
    """A stack of residual blocks ``h + tanh(h @ W[l])`` with stochastic depth, scanned over ``l``.

    ``W`` is (L, D, D), ``x`` is (B, D) and ``survival_probs`` is (L,), e.g. from
    :func:`survival_probabilities`. One key is split off for each block.
    """
    W = _checks.float_array(W, "W", ndim=3, what=" (L, D, D)")
    L, D, _ = W.shape
    _checks.same_shape(W, "W", (L, D, D), expected_from="square blocks (L, D, D)")
    x = _checks.float_array(x, "x", ndim=2, what=" (B, D)")
    _checks.same_shape(x, "x", (x.shape[0], D), expected_from=f"(B, D) with D = {D} from W")
    survival_probs = _checks.float_array(survival_probs, "survival_probs")
    _checks.same_shape(survival_probs, "survival_probs", (L,), expected_from="(L,), L from W")
    _check_prob(survival_probs, "survival_probs")
    return _residual_stack(key, W, x, survival_probs, deterministic)


# A module-level core: an eager lax.scan would compile again at every call.
@functools.partial(jax.jit, static_argnums=4)
def _residual_stack(key, W, x, survival_probs, deterministic):
    L = W.shape[0]
    keys = jax.random.split(key, L) if not deterministic else jnp.zeros(L)  # keys unused when deterministic

    def block(h, inputs):
        W_l, p_l, k_l = inputs
        branch = jnp.tanh(h @ W_l)  # (B, D)
        return stochastic_depth(None if deterministic else k_l, h, branch, p_l, deterministic=deterministic), None

    h, _ = jax.lax.scan(block, x, (W, survival_probs, keys))
    return h
