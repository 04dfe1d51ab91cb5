r"""Batch normalisation
===================

Standardise every feature with the mean and variance of the current mini-batch, then apply a
learned scale and shift: the layer that made very deep convolutional networks easy to train, to
reach for in image models trained with reasonably large batches.

Equation
--------

.. math::

   \mu_c = \frac{1}{M} \sum_{m=1}^{M} x_{mc}, \qquad
   \sigma_c^2 = \frac{1}{M} \sum_{m=1}^{M} \left(x_{mc} - \mu_c\right)^2, \qquad
   y_{mc} = \gamma_c \, \frac{x_{mc} - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}} + \beta_c

   \bar{\mu}_c \leftarrow \rho\, \bar{\mu}_c + (1 - \rho)\, \mu_c, \qquad
   \bar{\sigma}_c^2 \leftarrow \rho\, \bar{\sigma}_c^2 + (1 - \rho)\, \sigma_c^2, \qquad
   y_{mc}^{\text{eval}} = \gamma_c \, \frac{x_{mc} - \bar{\mu}_c}{\sqrt{\bar{\sigma}_c^2 + \epsilon}}
   + \beta_c

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_{mc}`
     - input: feature :math:`c` at position :math:`m`, where a position is one example (and, for
       images, one pixel of it)
     - ``x``
     - ``(B, ..., C)``
   * - :math:`y_{mc}`
     - normalised output
     - ``y``
     - same as ``x``
   * - :math:`m`, :math:`M`
     - index of a position; number of positions pooled per feature, :math:`M = B \times H \times W`
       for images
     - the leading axes of ``x``
     - scalar
   * - :math:`c`
     - index of a feature (channel)
     - the last axis of ``x``
     - scalar
   * - :math:`\mu_c`, :math:`\sigma_c^2`
     - batch mean and (biased) batch variance of feature :math:`c`
     - ``mean``, ``var``
     - ``(C,)``
   * - :math:`\gamma_c`, :math:`\beta_c`
     - learned scale and shift
     - ``params["scale"]``, ``params["bias"]``
     - ``(C,)``
   * - :math:`\epsilon`
     - small constant that keeps the division finite
     - ``eps``
     - scalar
   * - :math:`\bar{\mu}_c`, :math:`\bar{\sigma}_c^2`
     - running (exponential moving) averages of the batch statistics, used in evaluation
     - ``state.mean``, ``state.var``
     - ``(C,)``
   * - :math:`\rho`
     - momentum of the running averages
     - ``momentum``
     - scalar

Explanation
-----------

For each feature :math:`c` the layer pools every value that feature takes in the mini-batch (over
the examples and, for images, over all pixels: every axis but the last), subtracts their mean and
divides by their standard deviation, so the feature leaves the layer with mean 0 and variance 1
across the batch. The learned :math:`\gamma_c, \beta_c` then set whatever mean and spread suit the
next layer; with :math:`\gamma_c = \sqrt{\sigma_c^2 + \epsilon}` and :math:`\beta_c = \mu_c` the
layer is the identity, so normalising never removes what the network can represent
:footcite:`ioffe2015batch`.

.. admonition:: Intuition

   Batch normalisation grades on a curve. Each feature's raw score is replaced by how many standard
   deviations it sits above the class average, and :math:`\gamma, \beta` then map those standings
   onto whatever scale the next layer expects. As with any curve, an example's grade depends on who
   else sat the exam: the same input scores differently in a different batch.

**The batch is part of the idea.** The output for one example depends on the other examples it
happens to share a batch with. That is why this recipe, unlike the others of the book, takes the
whole batch and is not written for one example and mapped with :func:`jax.vmap`. The dependence is
also a source of noise during training (each example is normalised with slightly different
statistics every epoch), which acts as a mild regulariser.

**Why it helps: the story and the evidence.** :footcite:t:`ioffe2015batch` motivated the layer by
*internal covariate shift*: each layer's input distribution keeps changing as the layers below it
learn, so each layer chases a moving target; fixing the first two moments of every input should
remove that drift. The layer delivered what they promised in practice (much higher learning rates,
less care at initialisation, an Inception network trained to the same accuracy in 14 times fewer
steps), but the explanation did not survive later tests. :footcite:t:`santurkar2018how` inserted
noise with a *changing* mean and variance right after each batch-norm layer, deliberately
re-creating covariate shift, and the network still trained as fast as with plain batch norm; they
also measured that batch norm does not reliably reduce internal covariate shift at all. What they
found instead is that batch norm makes the loss landscape smoother: the loss and its gradient
change more slowly (smaller Lipschitz constants) along the directions training moves in, so a
gradient stays a good guide over a longer step and large learning rates stop being dangerous.
Treat "reduces internal covariate shift" as the historical motivation, not the mechanism.

**Training and evaluation are different functions.** At test time there may be a single example,
and a prediction should not depend on its neighbours, so evaluation uses the running averages
:math:`\bar{\mu}, \bar{\sigma}^2` collected during training instead of batch statistics. In
evaluation the layer is a fixed affine map per feature, :math:`y = a_c x + b_c` with
:math:`a_c = \gamma_c / \sqrt{\bar{\sigma}_c^2 + \epsilon}`, which can be folded into the preceding
linear or convolution layer. The price is a train/evaluation discrepancy: the running averages lag
behind the weights (with :math:`\rho = 0.9` they average roughly the last 10 batches, with flax's
default 0.99 the last 100), they describe the training distribution, and forgetting to switch
``training`` off, or evaluating with a model whose statistics were never collected, silently
changes the network's outputs.

**Small batches.** With :math:`M` values per feature the batch mean has a standard error of
:math:`\sigma_c / \sqrt{M}`, and the noise this injects grows quickly as the batch shrinks. Tasks
that fit only one or two images per device (detection, segmentation, video) see batch norm's error
rise sharply :footcite:`wu2018group`; with one position per feature (:math:`M = 1`) every feature
is normalised to exactly 0 and the output is :math:`\beta` whatever the input. Remedies are batch
renormalisation, which corrects the batch statistics towards the running ones
:footcite:`ioffe2017batch`, and normalisers that do not pool over the batch at all (the
:doc:`layer_norm` and :doc:`group_norm` recipes).

**Numerical traps.** For float16 or bfloat16 inputs the sums are accumulated in float32 and the
result is cast back: bfloat16 keeps 8 significant bits, so statistics kept in it lose the
variance of values that sit far from zero entirely (the tests show it). The variance is computed in two passes, as the mean squared deviation from the mean;
the one-pass form :math:`\mathbb{E}[x^2] - \mathbb{E}[x]^2` (flax's default,
``use_fast_variance=True``) subtracts two nearly equal numbers when :math:`|\mu_c| \gg \sigma_c`,
loses digits and can even come out negative. :math:`\epsilon` sits inside the square root, so a
constant feature gives :math:`0 / \sqrt{\epsilon} = 0` rather than a division by zero.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.normalization.batch_norm import init, batch_norm
   # Three features with very different means and spreads, as a layer might produce them.
   noise = jax.random.normal(jax.random.key(0), (512, 3))
   h = jnp.array([[-20.0, 5.0, 40.0]]) + jnp.array([[2.0, 6.0, 12.0]]) * noise
   params, state = init(3)
   y, _ = batch_norm(params, state, h, training=True)
   fig, axes = plt.subplots(1, 2, figsize=(8, 3), sharey=True)
   for c in range(3):
       axes[0].hist(np.asarray(h[:, c]), bins=40, alpha=0.6, label=f"feature {c}")
       axes[1].hist(np.asarray(y[:, c]), bins=40, alpha=0.6, label=f"feature {c}")
   axes[0].set(title="before batch norm", xlabel="activation", ylabel="count")
   axes[1].set(title="after batch norm", xlabel="activation")
   axes[0].legend(fontsize=8)
   fig.tight_layout()

Inductive bias
--------------

Batch normalisation assumes that the examples of a batch are independent draws from one
distribution, so that their statistics are a fair estimate of the population's. It also declares
that the absolute position and scale of each feature carry no information: the output is
unchanged when a feature is shifted or rescaled by a positive factor across the whole batch. One
consequence is that the weights feeding a batch-norm layer become scale-invariant (multiplying
them by a constant changes nothing), so weight decay on them only changes their effective
learning rate. The assumption breaks when batches are not independent samples: sorted or
class-balanced batches, padded sequences, recurrent networks whose statistics change over time,
or contrastive losses where the batch statistics leak information between the examples a model is
meant to tell apart.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.normalization.batch_norm import init, batch_norm
>>> params, state = init(3)
>>> x = 5.0 + 2.0 * jax.random.normal(jax.random.key(0), (64, 3))
>>> y, new_state = batch_norm(params, state, x, training=True)
>>> bool(jnp.abs(y.mean(axis=0)).max() < 1e-6), y.std(axis=0).round(3)  # mean 0 up to rounding, std 1
(True, Array([1., 1., 1.], dtype=float32))
>>> new_state.mean.round(3)  # 0.9 * 0 + 0.1 * (batch mean, about 5)
Array([0.505, 0.522, 0.463], dtype=float32)
>>> y_eval, same_state = batch_norm(params, new_state, x[:2], training=False)
>>> y_eval.shape, bool(jnp.all(same_state.var == new_state.var))
((2, 3), True)

Implementation notes
--------------------

The variance is the *biased* one (dividing by :math:`M`) both for normalising and for the running
average, matching flax's ``nn.BatchNorm``; PyTorch instead stores the unbiased estimate (dividing
by :math:`M - 1`) in its running variance, a difference that matters only for small :math:`M`.
PyTorch's ``momentum=0.1`` is the weight of the *new* batch, this recipe's :math:`\rho = 0.9` (and
flax's ``momentum``) the weight of the old average.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"init": ("num_features",), "batch_norm": ("training",)}


class BatchNormState(NamedTuple):
    """Running statistics of one batch-norm layer, each of shape (C,), kept in float32."""

    mean: jax.Array
    var: jax.Array


def init(num_features):
    """Parameters ``{"scale": ones, "bias": zeros}`` and state ``(mean=zeros, var=ones)``, all (C,)."""
    if not isinstance(num_features, int) or num_features < 1:
        raise ValueError(f"num_features must be a positive int, got {num_features!r}")
    return _init(num_features)


@functools.partial(jax.jit, static_argnums=0)  # one program per size, not one per eager array
def _init(num_features):
    params = {"scale": jnp.ones((num_features,), jnp.float32), "bias": jnp.zeros((num_features,), jnp.float32)}
    state = BatchNormState(mean=jnp.zeros((num_features,), jnp.float32), var=jnp.ones((num_features,), jnp.float32))
    return params, state


def _check(params, state, x):
    x = _checks.float_array(x, "x", min_ndim=2, what=" (B, ..., C) with a batch axis")
    C = x.shape[-1]
    for name, value in (("params['scale']", params["scale"]), ("params['bias']", params["bias"]),
                        ("state.mean", state.mean), ("state.var", state.var)):
        value = _checks.float_array(value, name)
        if value.shape != (C,):
            raise ValueError(f"{name} must have shape ({C},) to match the {C} features of x {x.shape}, "
                             f"got shape {value.shape}")
    return x


def batch_norm(params, state, x, *, training, momentum=0.9, eps=1e-5):
    """Batch-normalise ``x`` of shape (B, ..., C) over every axis but the last.

    With ``training=True`` the batch statistics normalise ``x`` and update the running averages
    (biased variance, as flax); with ``training=False`` the running averages normalise ``x`` and
    the state comes back unchanged. Returns ``(y, state)``, ``y`` in the dtype of ``x``.
    """
    x = _check(params, state, x)
    training = _flag(training)
    _checks.positive(eps, "eps", allow_zero=True)
    if isinstance(momentum, (int, float)) and not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
    # Checked in Python, then run as one compiled core (a program per shape) rather than a dozen
    # eager operations; Python numbers for momentum and eps are built into it, as eagerly.
    if isinstance(momentum, (int, float)) and isinstance(eps, (int, float)):
        return _batch_norm_static(params, state, x, training=training, momentum=momentum, eps=eps)
    return _batch_norm_traced(params, state, x, training=training, momentum=momentum, eps=eps)


def _flag(training):
    """``training`` as a Python bool (it chooses the program, so it is static): a bool, a NumPy bool
    or a concrete 0-d array of one; a ``TypeError`` otherwise."""
    if isinstance(training, jax.core.Tracer):
        raise TypeError(f"training must be a concrete bool: it chooses between two computations, so it "
                        f"cannot be traced; got a traced {training.aval}")
    if isinstance(training, (bool, np.bool_)) or (np.ndim(training) == 0 and np.asarray(training).dtype == bool):
        return bool(training)
    raise TypeError(f"training must be a bool, got {training!r}")


def _batch_norm(params, state, x, *, training, momentum, eps):
    axes = tuple(range(x.ndim - 1))  # every axis but the features
    per_feature = (1,) * (x.ndim - 1) + (x.shape[-1],)  # (1, ..., 1, C): broadcast without rank promotion
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # accumulate in at least float32
    if training:
        mean = jnp.mean(x32, axis=axes)  # (C,)
        var = jnp.mean(jnp.square(x32 - mean.reshape(per_feature)), axis=axes)  # two-pass, biased
        state = BatchNormState(
            mean=momentum * state.mean + (1.0 - momentum) * mean,
            var=momentum * state.var + (1.0 - momentum) * var,
        )
    else:
        mean, var = state.mean, state.var
    inv = params["scale"] * jax.lax.rsqrt(var + eps)  # (C,): gamma / sqrt(var + eps)
    y = (x32 - mean.reshape(per_feature)) * inv.reshape(per_feature) + params["bias"].reshape(per_feature)
    return y.astype(x.dtype), state


_batch_norm_static = jax.jit(_batch_norm, static_argnames=("training", "momentum", "eps"))
_batch_norm_traced = jax.jit(_batch_norm, static_argnames=("training",))
