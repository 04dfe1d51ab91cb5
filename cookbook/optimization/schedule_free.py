r"""Schedule-free AdamW
===================

Replace the learning-rate schedule by an average: take AdamW's steps at a constant rate, and evaluate
the model at a running average of where those steps went. The average does what a decaying schedule
does, without having to know in advance when training stops.

Equation
--------

.. math::

   y_t = (1-\beta_1)\, z_t + \beta_1\, x_t, \qquad g_t = \nabla f(y_t)

   v_t = \beta_2 v_{t-1} + (1-\beta_2)\, g_t \odot g_t, \qquad
   z_{t+1} = z_t - \gamma_{t-1} \left( \frac{g_t}{\sqrt{v_t / (1-\beta_2^t)} + \epsilon}
   + \lambda\, y_t \right)

   x_{t+1} = (1 - c_{t+1})\, x_t + c_{t+1}\, z_{t+1}, \qquad
   c_{t+1} = \frac{\bar\gamma_t^2}{\sum_{i=1}^{t} \bar\gamma_i^2}, \qquad
   \bar\gamma_t = \max_{i \le t} \gamma_i, \qquad
   \gamma_t = \eta \min\!\left(1, \frac{t}{T_w}\right)

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`y_t`
     - where the gradient is taken: the parameters the caller holds and trains
     - ``params``
     - like the parameters
   * - :math:`z_t`
     - the base sequence that AdamW's steps move
     - ``state.z``
     - like the parameters
   * - :math:`x_t`
     - the running average of the :math:`z`'s, the parameters to evaluate
     - ``eval_params``'s result (not stored: it is found from :math:`y` and :math:`z`)
     - like the parameters
   * - :math:`f`
     - the loss
     - (outside the optimiser: only its gradient ``grads`` comes in)
     - ``()``
   * - :math:`g_t`
     - the gradient at :math:`y_t`
     - ``grads``
     - like the parameters
   * - :math:`v_t`
     - the moving average of squared gradients (Adam's second moment)
     - ``state.nu``
     - like the parameters
   * - :math:`\beta_1`
     - the interpolation between :math:`z` and :math:`x` (it replaces momentum)
     - ``b1``
     - scalar in :math:`(0, 1]`
   * - :math:`\beta_2`, :math:`\epsilon`
     - the second moment's decay; the constant added to its root
     - ``b2``, ``eps``
     - scalars
   * - :math:`\lambda`
     - weight decay, applied at :math:`y_t`
     - ``weight_decay``
     - scalar
   * - :math:`\gamma_t`, :math:`\gamma_{t-1}`
     - the step size at step :math:`t`; the one before, which moves :math:`z`
     - ``lr``; ``step_lr``
     - scalars
   * - :math:`\eta`, :math:`T_w`
     - the constant step size after warm-up; the warm-up's length in steps
     - ``learning_rate``, ``warmup_steps``
     - scalars
   * - :math:`\bar\gamma_t`
     - the largest step size so far
     - ``state.max_lr``
     - scalar
   * - :math:`c_{t+1}`
     - the weight of the newest :math:`z` in the average
     - ``c``
     - scalar
   * - :math:`t`, :math:`i`
     - step number, from 1; the index of the sum over past steps
     - ``state.count``
     - ``()`` int32

Explanation
-----------

A constant learning rate makes fast progress but never settles: with noisy gradients the iterate
keeps bouncing in a ball whose size is set by the step. Schedules shrink the step at the end, but a
schedule must know when the end is, and stopping a cosine schedule early leaves a model that has not
cooled down. Averaging the iterates also removes the bounce, yet plain Polyak averaging is slow in
practice, because the average drags along every early, bad iterate.

Schedule-free learning :footcite:`defazio2024roadlessscheduled` keeps three sequences. The base
sequence :math:`z` takes AdamW steps at a constant rate (after a warm-up). The average :math:`x`
weighs each :math:`z` by its squared step size, so with a constant rate :math:`c_{t+1} = 1/t` and
:math:`x` is the uniform average of all :math:`z`'s so far; during warm-up the small early steps count
for little. The gradient is taken at neither, but at :math:`y`, a point between them:
:math:`\beta_1 = 0.9` puts it close to the average, which is what makes the method fast. With
:math:`\beta_1 = 1` it is Polyak averaging, and with :math:`\beta_1 = 0` (and :math:`c = 1`) plain
AdamW without momentum; the interpolation plays the role of momentum, which AdamW's base step here
does not have.

The caller trains :math:`y` (``params``), and only two buffers are stored beside it, :math:`z` and
:math:`v`, the same memory as AdamW; :math:`x` is recovered when needed as
:math:`(y - (1-\beta_1) z)/\beta_1`, which is why evaluation calls ``eval_params`` and why
:math:`\beta_1` must be positive. Weight decay is applied at :math:`y`, where the gradient is. During a warm-up, :math:`z` moves with the
previous step's rate :math:`\gamma_{t-1}`, so the very first step is zero, while the average's weights
use :math:`\gamma_t`; this follows optax, and makes no difference at a constant rate.

.. admonition:: Intuition

   A hiker crossing a valley in fog takes confident strides (the base sequence) and keeps bouncing
   from one side of the valley floor to the other. A companion walks behind and stands at the
   average of every place the hiker has been: the bounces cancel, and the companion ends up on the
   floor. Schedule-free learning asks the hiker where to go from a spot close to the companion,
   so the strides are aimed from a sensible place rather than from the last bounce.

Inductive bias
--------------

Schedule-free learning assumes that averaging iterates is as good as annealing the step, which
theory guarantees for convex problems and which holds in practice for deep networks. Like Adam it
is diagonal and adapts each coordinate's step to its gradient's scale. It assumes that the
evaluation point may differ from the training point; anything that reads statistics from the
trained parameters (batch normalisation's running statistics) must be recomputed at :math:`x`.

Example
-------

With a constant rate, the average gives every step the same weight (:math:`c_{t+1} = 1/t`), and on
a quadratic the evaluation parameters home in:

>>> import jax, jax.numpy as jnp
>>> from cookbook.optimization.schedule_free import eval_params, schedule_free_adamw
>>> opt = schedule_free_adamw(0.3)
>>> loss = lambda p: jnp.sum((p["w"] - jnp.array([1.0, -2.0, 3.0])) ** 2)
>>> def step(_, carry):
...     params, state = carry
...     updates, state = opt.update(jax.grad(loss)(params), state, params)
...     return jax.tree.map(jnp.add, params, updates), state
>>> params = {"w": jnp.zeros(3)}
>>> params, state = jax.lax.fori_loop(0, 300, step, (params, opt.init(params)))
>>> round(float(state.max_lr**2 / state.weight_sum) * 300, 4)  # c at the last step: 1/300
1.0
>>> eval_params(state, params)["w"].round(3)
Array([ 1., -2.,  3.], dtype=float32)

Implementation notes
--------------------

``optax.contrib.schedule_free_adamw`` is the same optimiser; the tests follow it step for step over
100 steps on two problems, with and without warm-up and weight decay, and ``eval_params`` equals
``optax.contrib.schedule_free_eval_params``. Optax's ``warmup_steps=None`` is this page's
``warmup_steps=0``. The published method also recomputes batch-normalisation statistics at
:math:`x` before evaluation and allows :math:`\bar\gamma_t^{\,p}` weights with another power
:math:`p`; this page keeps :math:`p = 2`.
"""

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.optimization.sgd import GradientTransformation, check_hyperparameter, check_update

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"eval_params": ()}


class ScheduleFreeState(NamedTuple):
    """The step count, the base sequence, Adam's second moment, the sum of the averaging weights and
    the largest step size so far; ``b1`` is kept so that ``eval_params`` can undo the interpolation."""

    count: jax.Array
    z: object
    nu: object
    weight_sum: jax.Array
    max_lr: jax.Array
    b1: jax.Array


def schedule_free_adamw(learning_rate, *, warmup_steps=0, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
    """Schedule-free AdamW with a linear warm-up over ``warmup_steps`` steps (none when 0).

    ``update`` needs ``params`` (the point :math:`y` where the gradient was taken).
    """
    check_hyperparameter("learning_rate", learning_rate, 0.0, float("inf"))
    if not 0.0 < b1 <= 1.0:
        raise ValueError(f"b1 must be in (0.0, 1.0] (eval_params divides by it), got {b1}")
    check_hyperparameter("b2", b2, 0.0, 1.0)
    check_hyperparameter("eps", eps, 0.0, float("inf"))
    check_hyperparameter("weight_decay", weight_decay, 0.0, float("inf"))
    if not isinstance(warmup_steps, int) or isinstance(warmup_steps, bool) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a non-negative int, got {warmup_steps!r}")
    hyper = (learning_rate, b1, b2, eps, weight_decay)
    # Called eagerly, update runs one compiled core: the numbers (the usual case) as
    # static arguments, an array as a traced one. Traced (inside a training loop) it runs as it is.
    static = all(isinstance(h, numbers.Real) and not isinstance(h, jax.Array) for h in hyper)

    def init(params):
        zero = jnp.zeros((), jnp.float32)
        return ScheduleFreeState(
            jnp.zeros((), jnp.int32), jax.tree.map(jnp.array, params), jax.tree.map(jnp.zeros_like, params),
            zero, zero, jnp.asarray(b1, jnp.float32),
        )

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("schedule_free_adamw's update needs params (the point y), got params=None")
        check_update(grads, params, {"state.z": state.z, "state.nu": state.nu})
        if _checks.is_concrete((grads, state, params)):
            return (_update_static if static else _update)(grads, state, params, hyper, warmup_steps)
        return _schedule_free_update(grads, state, params, hyper, warmup_steps)

    return GradientTransformation(init, update)


def _schedule_free_update(grads, state, params, hyper, warmup_steps):
    learning_rate, b1, b2, eps, weight_decay = hyper
    count = state.count + 1
    t = count.astype(jnp.float32)
    lr = learning_rate * jnp.minimum(1.0, t / warmup_steps) if warmup_steps else jnp.float32(learning_rate)
    # z's step uses the previous step's rate (zero at the first step of a warm-up), as optax does.
    step_lr = learning_rate * jnp.minimum(1.0, (t - 1) / warmup_steps) if warmup_steps else lr
    max_lr = jnp.maximum(state.max_lr, lr)
    weight_sum = state.weight_sum + max_lr**2
    c = jnp.where(weight_sum > 0, max_lr**2 / jnp.where(weight_sum > 0, weight_sum, 1.0), 0.0)
    nu = jax.tree.map(lambda g, v: b2 * v + (1 - b2) * g * g, grads, state.nu)
    # AdamW's step without momentum, with the decay taken at y, moves the base sequence z.
    z = jax.tree.map(
        lambda z, g, v, y: z - step_lr * (g / (jnp.sqrt(v / (1 - b2**t)) + eps) + weight_decay * y),
        state.z, grads, nu, params,
    )
    x = jax.tree.map(lambda y, z_old, z_new: (1 - c) * (y - (1 - b1) * z_old) / b1 + c * z_new, params, state.z, z)
    new_y = jax.tree.map(lambda x, z: b1 * x + (1 - b1) * z, x, z)
    updates = jax.tree.map(jnp.subtract, new_y, params)
    return updates, ScheduleFreeState(count, z, nu, weight_sum, max_lr, state.b1)


_update_static = jax.jit(_schedule_free_update, static_argnums=(3, 4))
_update = jax.jit(_schedule_free_update, static_argnums=4)


def eval_params(state, params):
    """The average :math:`x = (y - (1-\\beta_1) z)/\\beta_1`: the parameters to evaluate the model at."""
    if not isinstance(state, ScheduleFreeState):
        raise TypeError(f"state must be a ScheduleFreeState from schedule_free_adamw, got {type(state).__name__}")
    _checks.same_tree(params, "params", state.z, "state.z")
    _checks.same_tree(state.z, "state.z", params, "params")
    return _eval_params(state, params)


@jax.jit  # checked above, then one compiled program rather than three operations per leaf
def _eval_params(state, params):
    return jax.tree.map(lambda y, z: (y - (1 - state.b1) * z) / state.b1, params, state.z)
