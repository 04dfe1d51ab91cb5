r"""Lion
====

Step by the *sign* of an interpolation between the momentum and the current gradient: an optimiser
found by program search that matches AdamW with half its memory, for large models trained with
large batches.

Equation
--------

.. math::

   c_t = \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, \qquad
   \theta_t = \theta_{t-1} - \eta \left( \operatorname{sign}(c_t) + \lambda\, \theta_{t-1} \right)

   m_t = \beta_2 m_{t-1} + (1 - \beta_2)\, g_t, \qquad m_0 = 0

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`\theta_t`
     - the parameters after step :math:`t`
     - ``params``
     - like the parameters
   * - :math:`g_t`
     - the gradient at step :math:`t`
     - ``grads``
     - like the parameters
   * - :math:`m_t`
     - momentum, the only state (Adam keeps two)
     - ``state.mu``
     - like the parameters
   * - :math:`c_t`
     - the interpolation whose sign is the step
     - the argument of ``jnp.sign`` in ``update``
     - like the parameters
   * - :math:`\beta_1`, :math:`\beta_2`
     - interpolation weight for the step; decay of the momentum
     - ``b1``, ``b2``
     - scalars in :math:`[0, 1)`
   * - :math:`\lambda`
     - decoupled weight decay, as in :doc:`adamw`
     - ``weight_decay``
     - scalar
   * - :math:`\eta`
     - learning rate
     - ``learning_rate``
     - scalar
   * - :math:`t`
     - step number, from 1
     - (implicit)
     - scalar

Explanation
-----------

:footcite:t:`chen2023symbolic` searched a space of small programs (built from arithmetic, sign,
moving averages and the like) for an update rule that trains well, and simplified the winner by
hand into Lion (*EvoLved Sign Momentum*). Every coordinate moves by exactly :math:`\eta` each step
(plus the decay), in the direction of the sign of :math:`c_t`. So Lion, like Adam at its first
step, makes every coordinate move at the same speed, but it needs no second moment to do so: the
sign normalises by itself. That saves one buffer the size of the model, and a division and a square
root per parameter.

Two averages with two rates play distinct roles. The step uses :math:`\beta_1 = 0.9`, so the current
gradient weighs 10% in the direction; the momentum that is carried forward uses
:math:`\beta_2 = 0.99`, a longer memory of about 100 steps. The update is computed *before* the
momentum is refreshed, which gives it a Nesterov-like look-ahead flavour. Because a sign step has
norm :math:`\sqrt{n}\,\eta` for :math:`n` parameters, larger than Adam's typical step, the paper
uses a learning rate 3 to 10 times smaller than AdamW's :footcite:`chen2023symbolic` and a weight
decay 3 to 10 times larger, so
that the product :math:`\eta\lambda` (the decay per step) stays the same.

**Numerical traps.** The sign of an exact zero is zero, so a coordinate that has never had a
gradient does not move (optax behaves the same way). A sign step never shrinks as the optimum
approaches: with a constant learning rate Lion ends up oscillating within about :math:`\eta` of the
minimum, so in practice it is paired with a decaying schedule (see :doc:`schedules`).

.. admonition:: Intuition

   Lion is a referee who only points: for every coordinate it signals one way or the other and
   the parameter moves by the same pace either way, however loudly the gradient shouts. Its
   memory of past gradients settles the close calls, and the current gradient gets a slightly
   larger say in the call than it gets in the memory. The rule was not derived from a principle
   but found by a search over programs, then simplified by hand.

Inductive bias
--------------

Lion assumes that the *direction* of each coordinate's smoothed gradient is reliable while its
magnitude is not worth keeping. That suits large batches, where the sign of the average gradient is
stable, and is a poorer fit to small, noisy batches, where the sign flips and every flip still costs
a full step of size :math:`\eta`.

Example
-------

Every coordinate moves by exactly :math:`\eta`, whatever the size of its gradient:

>>> import jax.numpy as jnp
>>> from cookbook.optimization.lion import lion
>>> opt = lion(learning_rate=0.01)
>>> state = opt.init(jnp.zeros(3))
>>> updates, state = opt.update(jnp.array([1e-4, -3.0, 200.0]), state, jnp.zeros(3))
>>> updates
Array([-0.01,  0.01, -0.01], dtype=float32)
>>> state.mu  # (1 - b2) * g, with b2 = 0.99
Array([ 0.  , -0.03,  2.  ], dtype=float32)
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from cookbook.optimization.sgd import GradientTransformation, check_hyperparameter, check_update

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {}


class LionState(NamedTuple):
    """The momentum, shaped like the parameters."""

    mu: object


def lion(learning_rate, b1=0.9, b2=0.99, weight_decay=0.0):
    """Lion: sign of the interpolated momentum, plus decoupled weight decay (needs ``params`` if nonzero)."""
    check_hyperparameter("learning_rate", learning_rate, 0.0, float("inf"))
    check_hyperparameter("b1", b1, 0.0, 1.0, high_open=False)
    check_hyperparameter("b2", b2, 0.0, 1.0)
    check_hyperparameter("weight_decay", weight_decay, 0.0, float("inf"))

    def init(params):
        return LionState(jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        if params is None and weight_decay != 0.0:
            raise ValueError(f"lion's update needs params for weight_decay={weight_decay}, got params=None")
        check_update(grads, params, {"state.mu": state.mu})
        direction = jax.tree.map(lambda g, m: jnp.sign((1 - b1) * g + b1 * m), grads, state.mu)
        if weight_decay != 0.0:
            direction = jax.tree.map(lambda d, p: d + weight_decay * p, direction, params)
        mu = jax.tree.map(lambda g, m: (1 - b2) * g + b2 * m, grads, state.mu)
        return jax.tree.map(lambda d: d * -learning_rate, direction), LionState(mu)

    return GradientTransformation(init, update)
