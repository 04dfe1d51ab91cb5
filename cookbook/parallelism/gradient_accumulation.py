r"""Gradient accumulation
=====================

Split a batch that does not fit in memory into micro-batches, run them one after another and
average their gradients before taking one step: the same step as on the whole batch, for the
memory of one micro-batch, as long as no layer lets the examples of a batch see each other.

Equation
--------

.. math::

   g = \frac{1}{M} \sum_{m=1}^{M} \nabla_\theta L\left(\theta; \mathcal{B}_m\right),
   \qquad
   L(\theta; \mathcal{B}) = \frac{1}{|\mathcal{B}|} \sum_{i \in \mathcal{B}}
       \ell\left(f_\theta(x_i; \mathcal{B}), y_i\right)

   f_\theta(x; \mathcal{B}) = \tanh\left(\gamma \odot \frac{z - \mu_{\mathcal{B}}}
       {\sqrt{\sigma^2_{\mathcal{B}} + \epsilon}} + \beta\right) W_2 + b_2,
   \qquad z = x W_1 + b_1

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`M`, :math:`m`
     - number of micro-batches; the index of one
     - ``micro_batches``; a step of the scan
     - scalars
   * - :math:`\mathcal{B}`, :math:`\mathcal{B}_m`
     - the whole batch of :math:`B` examples; the :math:`m`-th micro-batch of :math:`B / M` of them
     - ``X``, ``Y``; ``X_m``, ``Y_m``
     - ``(B, D)``; ``(B / M, D)``
   * - :math:`x_i`, :math:`y_i`, :math:`i`
     - one example, its target, its index
     - rows of ``X``, ``Y``
     - ``(D,)``, ``(C,)``
   * - :math:`\theta`
     - all parameters
     - ``params``
     - a dict
   * - :math:`g`
     - the accumulated gradient
     - ``grads``
     - like ``params``
   * - :math:`L`, :math:`\ell`
     - the mean loss over a batch; the squared error of one example
     - ``loss``
     - scalars
   * - :math:`f_\theta`
     - the model, an MLP with one hidden layer, optionally batch-normalised
     - ``apply``
     - ``(B, D) -> (B, C)``
   * - :math:`W_1`, :math:`b_1`, :math:`W_2`, :math:`b_2`
     - the weights and biases of the two layers
     - ``params["W1"]``, ``params["b1"]``, ``params["W2"]``, ``params["b2"]``
     - ``(D, F)``, ``(F,)``, ``(F, C)``, ``(C,)``
   * - :math:`z`
     - the hidden pre-activations
     - ``z``
     - ``(B, F)``
   * - :math:`\mu_{\mathcal{B}}`, :math:`\sigma^2_{\mathcal{B}}`
     - the mean and variance of :math:`z` over the examples of the batch (only with ``norm=True``)
     - ``mu``, ``var``
     - ``(F,)``
   * - :math:`\gamma`, :math:`\beta`, :math:`\epsilon`
     - batch normalisation's scale and shift, and its guard against division by zero
     - ``params["gamma"]``, ``params["beta"]``, ``eps``
     - ``(F,)``, ``(F,)``, scalar

Explanation
-----------

A batch's loss is the mean of its examples' losses, and the gradient is linear, so the gradient
of a batch is the mean of the gradients of equal micro-batches: run them one after another, add
their gradients into one buffer, divide by :math:`M`, and take the step. The result is the
gradient of the whole batch up to rounding (the tests find :math:`10^{-6}`), while the memory for
activations is that of one micro-batch, since each is forgotten before the next runs. It is
:doc:`data_parallel` in time instead of in space: there :math:`N` devices compute the parts at
once and an all-reduce adds them; here one device computes them in turn and a running sum adds
them. The two combine: each of :math:`N` devices accumulates :math:`M` micro-batches, for a batch
of :math:`N M` micro-batches.

.. admonition:: Intuition

   Counting a national vote precinct by precinct gives the same total as counting every ballot in
   one hall, because a total is a sum of sums. But grading on a curve is not: a student graded
   against their own classroom can get another mark than when graded against the whole school.

That is where it stops being true. The equation's second line is an MLP with batch
normalisation :footcite:`ioffe2015batch` in its hidden layer (``norm=True``): each example is
standardised with the mean :math:`\mu_{\mathcal{B}}` and variance :math:`\sigma^2_{\mathcal{B}}`
of the batch it is in, so :math:`f_\theta(x_i; \mathcal{B})` depends on the other examples, and
the loss of the batch is no longer a mean of terms that each micro-batch could compute alone. With
micro-batches, each is normalised by its own statistics: the accumulated gradient is that of a
different, noisier model, as if each micro-batch had been a "ghost batch"
:footcite:`hoffer2017train`, which is sometimes done on purpose. The tests measure it: the same
split that reproduces the full-batch gradient to :math:`10^{-6}` without normalisation is off by
more than 1 % with it. The fixes are layers that normalise each example alone (layer or group
normalisation), or statistics computed over the whole batch in a first pass.

Inductive bias
--------------

Accumulation changes nothing about the model when its loss is a mean of independent per-example
terms, which is what it assumes. It cannot reproduce a loss that couples the examples of a batch:
batch normalisation, contrastive losses whose negatives are the other examples of the batch, or
any statistic of the batch as a whole.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.parallelism.gradient_accumulation import accumulated_grad, apply, init, loss
>>> params = init(jax.random.key(0), (3, 5, 2))
>>> X = jnp.linspace(-1.0, 1.0, 24).reshape(8, 3)
>>> apply(params, X).shape
(8, 2)
>>> Y = jnp.stack([X.sum(1), X[:, 0] * X[:, 1]], axis=1)
>>> value, grads = accumulated_grad(params, X, Y, micro_batches=4)  # 4 micro-batches of 2
>>> full = jax.grad(loss)(params, X, Y)
>>> bool(jnp.allclose(grads["W1"], full["W1"], atol=1e-6)), bool(jnp.allclose(value, loss(params, X, Y)))
(True, True)
>>> _, with_norm = accumulated_grad(params, X, Y, micro_batches=4, norm=True)
>>> bool(jnp.allclose(with_norm["W1"], jax.grad(loss)(params, X, Y, norm=True)["W1"], atol=1e-3))
False

Implementation notes
--------------------

* **Measured here** (tests): without normalisation, accumulated gradients for 2, 4 and 8
  micro-batches equal the full-batch gradient within :math:`10^{-6}`, and twenty training steps
  with 4 micro-batches follow full-batch training within :math:`10^{-6}`; with batch
  normalisation, 4 micro-batches give a gradient more than 1 % away. The compiled gradient allocates fewer
  temporary bytes with every doubling of :math:`M`, and with 8 micro-batches of 7 examples under a
  third of those of the whole batch of 56 (``memory_analysis``).
* **Loss scaling.** Libraries that accumulate by calling ``backward`` repeatedly (PyTorch) add the
  gradients of the micro-batch *means*, so each micro-batch loss is divided by :math:`M`; with
  unequal micro-batches the weights must be their sizes instead. ``optax.MultiSteps`` wraps an
  optimiser so that it applies the mean of :math:`M` gradients every :math:`M` calls; with plain
  gradient descent its steps equal these (the tests compare five steps).
* **Cost.** The same arithmetic, :math:`M` times fewer examples in flight, so less parallel work
  per kernel launch: accumulation buys memory, not speed.
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"init": ("sizes",), "apply": ("norm",), "loss": ("norm",),
       "accumulated_grad": ("micro_batches", "norm")}

_KEYS = ("W1", "b1", "gamma", "beta", "W2", "b2")


def init(key, sizes):
    """``{"W1", "b1", "gamma", "beta", "W2", "b2"}`` for widths ``sizes = (D, F, C)``: normal weights
    scaled by the fan-in, zero biases, ``gamma`` one and ``beta`` zero."""
    if not isinstance(sizes, tuple) or len(sizes) != 3:
        raise ValueError(f"sizes must be a tuple (D, F, C) of three widths, got {sizes!r}")
    D, F, C = (_checks.size(s, f"sizes[{l}]") for l, s in enumerate(sizes))
    return _init(key, D, F, C)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _init(key, D, F, C):
    k1, k2 = jax.random.split(key)
    return {"W1": jax.random.normal(k1, (D, F)) / jnp.sqrt(D), "b1": jnp.zeros((F,)),
            "gamma": jnp.ones((F,)), "beta": jnp.zeros((F,)),
            "W2": jax.random.normal(k2, (F, C)) / jnp.sqrt(F), "b2": jnp.zeros((C,))}


def _check(params, X, Y=None):
    if not isinstance(params, dict) or set(params) != set(_KEYS):
        raise TypeError(f"params must be a dict with keys {_KEYS} (from init), got {type(params).__name__}")
    W1 = _checks.float_array(params["W1"], "params['W1']", ndim=2, what=" (D, F)")
    D, F = W1.shape
    for name in ("b1", "gamma", "beta"):
        _checks.same_shape(_checks.float_array(params[name], f"params['{name}']"), f"params['{name}']", (F,))
    W2 = _checks.float_array(params["W2"], "params['W2']", ndim=2, what=" (F, C)")
    _checks.same_shape(W2, "params['W2']", (F, W2.shape[1]), expected_from="(F, C) to match params['W1']")
    _checks.same_shape(_checks.float_array(params["b2"], "params['b2']"), "params['b2']", (W2.shape[1],))
    X = _checks.float_array(X, "X", ndim=2, what=" (B, D)")
    _checks.same_shape(X, "X", (X.shape[0], D), expected_from="(B, D) to match params['W1']")
    if Y is None:
        return X
    Y = _checks.float_array(Y, "Y", ndim=2, what=" (B, C)")
    return X, _checks.same_shape(Y, "Y", (X.shape[0], W2.shape[1]), expected_from="(B, C) to match X and params['W2']")


def _check_norm(norm):
    if not isinstance(norm, bool):
        raise TypeError(f"norm must be a bool, got {norm!r}")


def _apply(params, X, norm, eps=1e-5):
    z = X @ params["W1"] + params["b1"][None, :]  # (B, F)
    if norm:  # batch normalisation: statistics over the examples of this batch
        mu = jnp.mean(z, axis=0)
        var = jnp.var(z, axis=0)
        z = params["gamma"][None, :] * (z - mu[None, :]) / jnp.sqrt(var[None, :] + eps) + params["beta"][None, :]
    return jnp.tanh(z) @ params["W2"] + params["b2"][None, :]  # (B, C)


def _loss(params, X, Y, norm):
    return jnp.mean((_apply(params, X, norm) - Y) ** 2)


_apply_jit = jax.jit(_apply, static_argnums=2)
_loss_jit = jax.jit(_loss, static_argnums=3)


def apply(params, X, *, norm=False):
    """The MLP's outputs (B, C) for the batch ``X`` (B, D); with ``norm=True`` the hidden layer is
    batch-normalised with the statistics of this batch (training mode)."""
    _check_norm(norm)
    return _apply_jit(params, _check(params, X), norm)


def loss(params, X, Y, *, norm=False):
    """The mean squared error of :func:`apply` on the batch ``X`` (B, D), ``Y`` (B, C)."""
    _check_norm(norm)
    X, Y = _check(params, X, Y)
    return _loss_jit(params, X, Y, norm)


@functools.partial(jax.jit, static_argnames=("micro_batches", "norm"))
def _accumulated_grad(params, X, Y, micro_batches, norm):
    B = X.shape[0]
    X_m = X.reshape(micro_batches, B // micro_batches, X.shape[1])  # (M, B / M, D)
    Y_m = Y.reshape(micro_batches, B // micro_batches, Y.shape[1])

    def add(total, batch):  # one micro-batch: its loss and gradient, added to the running sums
        value, grads = jax.value_and_grad(_loss)(params, *batch, norm)
        return jax.tree.map(jnp.add, total, (value, grads)), None

    zero = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))
    (value, grads), _ = jax.lax.scan(add, zero, (X_m, Y_m))
    return value / micro_batches, jax.tree.map(lambda g: g / micro_batches, grads)


def _check_micro(params, X, Y, micro_batches, norm):
    _check_norm(norm)
    X, Y = _check(params, X, Y)
    M = _checks.size(micro_batches, "micro_batches")
    if X.shape[0] % M:
        raise ValueError(f"X must have a batch size divisible by micro_batches = {M}, got {X.shape[0]}")
    return X, Y, M


def accumulated_grad(params, X, Y, *, micro_batches, norm=False):
    """The loss and gradient of :func:`loss` on the batch ``X``, ``Y``, computed as the mean over
    ``micro_batches`` equal consecutive micro-batches, one at a time (a :func:`jax.lax.scan`).
    Equal to the full-batch gradient unless ``norm=True``."""
    X, Y, M = _check_micro(params, X, Y, micro_batches, norm)
    return _accumulated_grad(params, X, Y, M, norm)


@functools.partial(jax.jit, static_argnames=("micro_batches", "norm", "steps"))
def _train(params, X, Y, learning_rate, micro_batches, norm, steps):
    def step(params, _):
        value, grads = _accumulated_grad(params, X, Y, micro_batches, norm)
        return jax.tree.map(lambda p, g: p - learning_rate * g, params, grads), value

    return jax.lax.scan(step, params, length=steps)


def train(params, X, Y, *, micro_batches, learning_rate, steps, norm=False):
    """``steps`` steps of gradient descent, each on the gradient accumulated over ``micro_batches``.
    Returns the parameters and the loss before each step, shape (steps,)."""
    X, Y, M = _check_micro(params, X, Y, micro_batches, norm)
    _checks.size(steps, "steps")
    _checks.positive(learning_rate, "learning_rate")
    return _train(params, X, Y, learning_rate, M, norm, steps)
