r"""AdamW: Adam with decoupled weight decay
=======================================

Adam whose weight decay shrinks the parameters directly instead of being added to the gradient:
the form of Adam to use whenever a model is regularised towards small weights, which is almost
always (transformers are trained with it).

Equation
--------

.. math::

   \theta_t = \theta_{t-1} - \eta \left( \frac{\hat{m}_t}{\sqrt{\hat{v}_t} + \epsilon}
   + \lambda\, \theta_{t-1} \right)

   \text{versus Adam on } L + \tfrac{\lambda}{2}\lVert\theta\rVert^2:\quad
   g_t = \nabla L(\theta_{t-1}) + \lambda\, \theta_{t-1}
   \ \text{ inside } \hat{m}_t \text{ and } \hat{v}_t

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
   * - :math:`\hat{m}_t`, :math:`\hat{v}_t`
     - Adam's bias-corrected first and second moments (see :doc:`adam`)
     - the corrected moments inside ``adam_direction``
     - like the parameters
   * - :math:`g_t`
     - the gradient fed to the moments
     - ``grads``
     - like the parameters
   * - :math:`L`
     - the loss without the penalty
     - (outside the optimiser: only its gradient ``grads`` comes in)
     - ``()``
   * - :math:`\lambda`
     - weight decay
     - ``weight_decay``
     - scalar
   * - :math:`\eta`
     - learning rate
     - ``learning_rate``
     - scalar
   * - :math:`\epsilon`
     - a small constant added to the root
     - ``eps``
     - scalar
   * - :math:`t`
     - step number, from 1
     - the step count in ``state``
     - ``()`` int32

Explanation
-----------

For plain SGD, weight decay and an L2 penalty are the same thing: the gradient of
:math:`\tfrac{\lambda}{2}\lVert\theta\rVert^2` is :math:`\lambda\theta`, and stepping along it
multiplies every weight by :math:`1-\eta\lambda`. :footcite:t:`loshchilov2019decoupled` observed that
this equivalence breaks under Adam. Put the penalty in the loss and its gradient
:math:`\lambda\theta` passes through Adam's normalisation: it is divided by
:math:`\sqrt{\hat{v}_t}`, the typical size of the *whole* gradient of that weight. A weight whose
loss gradient is large has a large :math:`\hat{v}_t`, so its decay is divided by a large number and
it is barely regularised; a weight with a small loss gradient is decayed hard. The strength of
regularisation then depends on the gradient history, which is not what anyone intended.

AdamW *decouples* the decay :footcite:`loshchilov2019decoupled`: Adam's direction is computed from
the loss gradient alone, and
:math:`\lambda\theta_{t-1}` is added afterwards, scaled only by :math:`\eta`. Every weight then
shrinks by the same factor :math:`1-\eta\lambda` per step, as under SGD. The test of this page
measures exactly that: with zero loss gradient and a penalty in the loss, Adam moves every weight by
about :math:`\eta` (the normalised step of a gradient :math:`\lambda\theta` is its sign), whatever
its size, while AdamW multiplies each by :math:`1-\eta\lambda`; and with a large loss gradient on one
weight, L2-under-Adam decays that weight far less than a quiet one, while AdamW decays both alike.

Two conventions differ between papers and libraries. Here, as in optax and PyTorch, the decay is
multiplied by the learning rate :math:`\eta`, so a learning-rate schedule also schedules the decay;
the paper writes a separate schedule multiplier. And the decay is applied to every leaf; in practice
biases and normalisation scales are usually excluded (optax's ``mask`` argument), which this recipe
leaves out.

**Numerical traps.** Because the decay is scaled by :math:`\eta`, useful values of
:math:`\lambda` for AdamW (about :math:`10^{-2}` to :math:`10^{-1}`) are far larger than the L2
coefficients used with SGD; the two cannot be swapped one for one.

.. admonition:: Intuition

   Weight decay is a tax on the size of every weight. L2-under-Adam collects it through the same
   adaptive accountant that handles each weight's income, its gradient, so a weight with a large
   income ends up paying almost no tax and a quiet weight pays dearly. AdamW takes the tax off
   the accountant's books and charges every weight the same rate, a factor of one minus eta
   lambda per step, whatever it earns.

Inductive bias
--------------

On top of Adam's assumptions (:doc:`adam`), AdamW encodes a prior that every weight should be small,
uniformly, independent of how strongly the data pulls on it: the Gaussian prior centred at zero
that L2 regularisation promises, now actually delivered under an adaptive optimiser.

Example
-------

With a zero loss gradient, AdamW shrinks every weight by the same factor :math:`1 - \eta\lambda`:

>>> import jax.numpy as jnp
>>> from cookbook.optimization.adamw import adamw
>>> from cookbook.optimization.sgd import apply_updates
>>> opt = adamw(learning_rate=0.1, weight_decay=0.5)
>>> params = jnp.array([0.01, 1.0, 100.0])
>>> state = opt.init(params)
>>> updates, state = opt.update(jnp.zeros(3), state, params)
>>> apply_updates(params, updates) / params
Array([0.95, 0.95, 0.95], dtype=float32)
"""

import numbers

import jax

from cookbook import _checks
from cookbook.optimization.adam import adam_direction, adam_moments, check_adam_hyperparameters, init_adam_state
from cookbook.optimization.sgd import GradientTransformation, check_hyperparameter, check_update

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {}


def adamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4):
    """Adam with decoupled weight decay; ``update`` needs ``params``."""
    check_adam_hyperparameters(learning_rate, b1, b2, eps)
    check_hyperparameter("weight_decay", weight_decay, 0.0, float("inf"))
    hyper = (learning_rate, b1, b2, eps, weight_decay)
    # Called eagerly, update runs one compiled core: the numbers (the usual case) as
    # static arguments, an array as a traced one. Traced (inside a training loop) it runs as it is.
    static = all(isinstance(h, numbers.Real) and not isinstance(h, jax.Array) for h in hyper)

    def init(params):
        return init_adam_state(params, amsgrad=False)

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("adamw's update needs params for the weight decay, got params=None")
        check_update(grads, params, adam_moments(state))
        if _checks.is_concrete((grads, state, params)):
            return (_update_static if static else _update)(grads, state, params, hyper)
        return _adamw_update(grads, state, params, hyper)

    return GradientTransformation(init, update)


def _adamw_update(grads, state, params, hyper):
    learning_rate, b1, b2, eps, weight_decay = hyper
    direction, state = adam_direction(grads, state, b1, b2, eps, amsgrad=False)
    updates = jax.tree.map(lambda d, p: (d + weight_decay * p) * -learning_rate, direction, params)
    return updates, state


_update_static = jax.jit(_adamw_update, static_argnums=3)
_update = jax.jit(_adamw_update)
