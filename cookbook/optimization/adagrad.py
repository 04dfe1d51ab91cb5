r"""AdaGrad
=======

Give every parameter its own learning rate, divided by the root of the sum of all its past squared
gradients: the first adaptive optimiser, suited to sparse features and convex problems.

Equation
--------

.. math::

   s_t = s_{t-1} + g_t \odot g_t, \qquad s_0 = s_{\text{init}}

   \theta_t = \theta_{t-1} - \eta\, \frac{g_t}{\sqrt{s_t + \epsilon}}

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
   * - :math:`s_t`
     - the running sum of squared gradients, one per parameter
     - ``state.sum_of_squares``
     - like the parameters
   * - :math:`s_{\text{init}}`
     - its starting value (optax's default 0.1)
     - ``initial_accumulator_value``
     - scalar
   * - :math:`\eta`
     - learning rate
     - ``learning_rate``
     - scalar
   * - :math:`\epsilon`
     - a small constant under the root
     - ``eps``
     - scalar
   * - :math:`t`
     - step number, from 1
     - (implicit)
     - scalar

Explanation
-----------

:footcite:t:`duchi2011adaptive` asked what step size each coordinate should have if the gradients
seen so far are all we know. Their answer divides each coordinate's step by the square root of the
sum of its squared gradients: a parameter that has received large or frequent gradients takes small
steps, and one that is rarely touched (the weight of a rare word, a rare feature) keeps taking
large steps when its gradient finally appears. Dividing by a root of a sum of squares also makes the
update unitless: rescaling the loss, or one parameter's gradient, by a constant leaves the step
unchanged (exactly so when :math:`s_{\text{init}}` and :math:`\epsilon` are negligible).

The sum only grows, so the effective learning rate :math:`\eta/\sqrt{s_t}` decays like
:math:`1/\sqrt{t}` when gradients have a steady size. That is the decay that convex online
learning needs for its regret bound :footcite:`duchi2011adaptive`, and it removes the need for a
schedule there; but on the long,
non-convex runs of deep learning it stops learning too early. RMSProp (:doc:`rmsprop`) replaces the
sum by a moving average for that reason.

**Numerical traps.** The accumulator starts at :math:`s_{\text{init}} = 0.1` rather than 0, as in
optax, so that the first step is not a pure sign step of size :math:`\eta`; :math:`\epsilon` sits
*inside* the root, as in optax. Zero gradients leave a zero update (the code guards the division
rather than relying on :math:`\epsilon`).

.. admonition:: Intuition

   Picture an editor who weighs each news source by how much it has already said: a source that
   reports loudly every day has each new story discounted by everything before it, while a source
   that is rarely heard is taken at full weight when it finally speaks. Rare features are those
   quiet sources. Because the discount only accumulates, the editor also grows more sceptical of
   everyone as the years pass, which is AdaGrad's decaying step size.

Inductive bias
--------------

AdaGrad assumes that the right scale for each coordinate is the size of the gradients it has seen
over the *whole* run, and that later steps should be more cautious than earlier ones. Those
assumptions fit sparse, convex problems (linear models on bag-of-words features, click prediction)
and fail where the landscape changes as training goes on.

Example
-------

Two coordinates with gradients 100 times apart take steps of the same size:

>>> import jax.numpy as jnp
>>> from cookbook.optimization.adagrad import adagrad
>>> opt = adagrad(learning_rate=0.1, initial_accumulator_value=0.0)
>>> state = opt.init(jnp.zeros(2))
>>> updates, state = opt.update(jnp.array([100.0, 1.0]), state)
>>> updates
Array([-0.1, -0.1], dtype=float32)
>>> updates, state = opt.update(jnp.array([100.0, 1.0]), state)
>>> updates.round(4)  # 0.1 / sqrt(2): the step shrinks as the sum grows
Array([-0.0707, -0.0707], dtype=float32)
"""

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.optimization.sgd import GradientTransformation, check_hyperparameter, check_update

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {}


class AdagradState(NamedTuple):
    """The running sum of squared gradients, shaped like the parameters."""

    sum_of_squares: object


def adagrad(learning_rate, initial_accumulator_value=0.1, eps=1e-7):
    """AdaGrad with optax's defaults: the accumulator starts at 0.1 and ``eps`` sits inside the root."""
    check_hyperparameter("learning_rate", learning_rate, 0.0, float("inf"))
    check_hyperparameter("initial_accumulator_value", initial_accumulator_value, 0.0, float("inf"))
    check_hyperparameter("eps", eps, 0.0, float("inf"))

    def init(params):
        return AdagradState(jax.tree.map(lambda p: jnp.full_like(p, initial_accumulator_value), params))

    hyper = (learning_rate, eps)
    # Called eagerly, update runs one compiled core: the numbers (the usual case) as
    # static arguments, an array as a traced one. Traced (inside a training loop) it runs as it is.
    static = all(isinstance(h, numbers.Real) and not isinstance(h, jax.Array) for h in hyper)

    def update(grads, state, params=None):
        check_update(grads, params, {"state.sum_of_squares": state.sum_of_squares})
        if _checks.is_concrete((grads, state)):
            return (_update_static if static else _update)(grads, state, hyper)
        return _adagrad_update(grads, state, hyper)

    return GradientTransformation(init, update)


def _adagrad_update(grads, state, hyper):
    learning_rate, eps = hyper
    s = jax.tree.map(lambda g, s: s + g * g, grads, state.sum_of_squares)

    def step(g, s):
        safe = jnp.where(s > 0, s, 1.0)  # a zero sum means a zero gradient: no step, no 0/0
        return jnp.where(s > 0, -learning_rate * g / jnp.sqrt(safe + eps), 0.0)

    return jax.tree.map(step, grads, s), AdagradState(s)


_update_static = jax.jit(_adagrad_update, static_argnums=2)
_update = jax.jit(_adagrad_update)
