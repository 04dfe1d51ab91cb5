r"""Stochastic gradient descent and momentum
========================================

Step against the gradient, optionally with a velocity that remembers past gradients (heavy-ball or
Nesterov momentum): the baseline optimiser, and still the one to beat on well-tuned vision models.

Equation
--------

.. math::

   v_t = \mu\, v_{t-1} + g_t, \qquad g_t = \nabla_\theta L(\theta_{t-1})

   \theta_t = \theta_{t-1} - \eta\, v_t \quad \text{(heavy ball)}, \qquad
   \theta_t = \theta_{t-1} - \eta\,(g_t + \mu\, v_t) \quad \text{(Nesterov)}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`\theta_t`
     - the parameters after step :math:`t` (any pytree)
     - ``params``
     - like the parameters
   * - :math:`L`
     - the loss being minimised
     - ``loss_fn``
     - ``()``
   * - :math:`g_t`
     - the gradient of the loss at the current parameters
     - ``grads``
     - like the parameters
   * - :math:`v_t`
     - the velocity: a decaying sum of past gradients
     - ``state.velocity``
     - like the parameters
   * - :math:`\mu`
     - momentum, the fraction of the velocity kept each step; 0 gives plain SGD
     - ``momentum``
     - scalar in :math:`[0, 1)`
   * - :math:`\eta`
     - learning rate
     - ``learning_rate``
     - scalar
   * - :math:`t`
     - step number, from 1
     - (the scan index)
     - scalar

Explanation
-----------

**The interface.** Every optimiser of this chapter is a ``GradientTransformation``, the pair
of pure functions that optax made familiar :footcite:`deepmind2020jax`: ``init(params)`` builds the
state (a ``NamedTuple`` of arrays shaped like the parameters) and ``update(grads, state, params)``
turns a gradient into an *update* and a new state. ``apply_updates`` adds the update to the
parameters. The parameters may be any pytree (a dict of weight matrices, a tuple, a single array),
and because ``init`` and ``update`` are pure they compile under :func:`jax.jit` and run inside
:func:`jax.lax.scan`, as ``run_optimizer`` does. The sign lives in the update: an optimiser
returns :math:`-\eta v_t`, so that applying an update is always an addition.

**Plain SGD** (:math:`\mu = 0`) moves each parameter against its own partial derivative. With a
mini-batch the gradient is a noisy but unbiased estimate of the full one
:footcite:`robbins1951stochastic`, which is what makes it *stochastic*; the noise is cheap (one batch
per step instead of the whole data set) and, with a learning rate that shrinks, averages out.

**Momentum: a heavy ball with friction.** Picture the loss as a landscape and the parameters as a
ball rolling on it. The gradient is the slope (the force), the velocity :math:`v_t` is the ball's
momentum, and :math:`\mu` is one minus the friction: each step the ball keeps a fraction
:math:`\mu` of its speed and is pushed by the slope :footcite:`polyak1964methods`. In a long narrow
valley the gradient zig-zags across the valley, and those components cancel in the velocity, while
the small component along the valley floor adds up step after step, to :math:`1/(1-\mu)` times its
size (10 times for :math:`\mu = 0.9`). The ball therefore crosses ravines calmly and accelerates
down gentle slopes. On a quadratic with condition number :math:`\kappa` this improves the number of
steps needed from order :math:`\kappa` to order :math:`\sqrt{\kappa}` when :math:`\eta` and
:math:`\mu` are tuned.

**Nesterov momentum** looks ahead :footcite:`nesterov1983method`. If the slope stays as it is, the
velocity at the next step will be :math:`\mu v_t + g_t`; Nesterov's method takes that step now
instead of :math:`v_t`. In the form above (the one of :footcite:t:`sutskever2013importance`, and of
optax) the correction costs nothing extra, and because the current gradient enters the step twice
the method reacts a step sooner when the slope changes, and overshoots less.

**Numerical traps.** The learning rate must stay below :math:`2/\lambda_{\max}` of the Hessian for
plain gradient descent to be stable (see the linear-regression page), and momentum effectively
multiplies the step by up to :math:`1/(1-\mu)`, so raising :math:`\mu` usually means lowering
:math:`\eta`. The velocity starts at zero, so the first steps are short: there is no bias correction
here (compare :doc:`adam`).

.. admonition:: Intuition

   A hiker in thick fog can feel only the slope under their boots, so each step goes straight
   downhill, as far as the learning rate allows. A mini-batch gradient is that slope felt through
   a thick sole: a little wrong at every step, right on average. Momentum turns the hiker into a
   sledge that keeps its speed, so that bumps across the path cancel out while the slope along it
   keeps adding up.

Inductive bias
--------------

SGD assumes that the loss is smooth enough for the local slope to point somewhere useful, and that
one learning rate suits every parameter: it is not invariant to rescaling a parameter, so badly
scaled coordinates are slow. Momentum adds the assumption that the recent gradients are a good
guide to the next ones (the landscape changes slowly along the path). The noise of small batches is
often said to favour wide, flat minima, which generalise well; that is one reason SGD with momentum
remains a strong default.

Example
-------

Minimise the Rosenbrock function with and without momentum, from the same starting point:

>>> import jax, jax.numpy as jnp
>>> from cookbook.optimization.sgd import apply_updates, rosenbrock, run_optimizer, sgd
>>> params = {"x": jnp.array(-1.5), "y": jnp.array(2.0)}
>>> round(float(rosenbrock(params)), 2)
12.5
>>> plain, losses = run_optimizer(rosenbrock, params, sgd(1e-3), steps=500)
>>> heavy, _ = run_optimizer(rosenbrock, params, sgd(1e-3, momentum=0.9), steps=500)
>>> round(float(rosenbrock(jax.tree.map(lambda p: p[-1], plain))), 3)
4.47
>>> round(float(rosenbrock(jax.tree.map(lambda p: p[-1], heavy))), 3)
0.004

One step by hand: the update is :math:`-\eta g` and adding it moves against the gradient.

>>> opt = sgd(learning_rate=0.1)
>>> state = opt.init({"w": jnp.ones(3)})
>>> updates, state = opt.update({"w": jnp.array([1.0, -2.0, 0.0])}, state)
>>> apply_updates({"w": jnp.ones(3)}, updates)["w"]
Array([0.9, 1.2, 1. ], dtype=float32)
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"apply_updates": (), "rosenbrock": ()}


class GradientTransformation(NamedTuple):
    """An optimiser: ``init(params) -> state`` and ``update(grads, state, params=None) -> (updates, state)``."""

    init: Callable
    update: Callable


class SgdState(NamedTuple):
    """The velocity :math:`v`, shaped like the parameters."""

    velocity: object


def apply_updates(params, updates):
    """Add ``updates`` to ``params`` leaf by leaf, keeping each parameter's dtype."""
    _checks.same_tree(updates, "updates", params, "params")
    _checks.same_tree(params, "params", updates, "updates")  # float parameters too
    return jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates)


def check_hyperparameter(name, value, low, high, *, high_open=True):
    """Raise a ``ValueError`` naming ``name`` unless ``low <= value < high`` (``<= high`` if closed)."""
    ok = low <= value and (value < high if high_open else value <= high)
    if not ok:
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be in [{low}, {high}{bracket}, got {value}")


def check_update(grads, params, moments):
    """The boundary check of every optimiser's ``update``: ``grads`` are floats shaped like ``params``
    (or, when ``params`` is None, like the first of the state's ``moments``, a dict from a name such
    as ``"state.mu"`` to a tree), and so is every moment."""
    like_name, like = ("params", params) if params is not None else next(iter(moments.items()))
    _checks.same_tree(grads, "grads", like, like_name)
    for name, moment in moments.items():
        _checks.same_tree(moment, name, grads, "grads")


def sgd(learning_rate, momentum=0.0, nesterov=False):
    """Stochastic gradient descent, with heavy-ball (default) or Nesterov momentum when ``momentum > 0``."""
    check_hyperparameter("learning_rate", learning_rate, 0.0, float("inf"))
    check_hyperparameter("momentum", momentum, 0.0, 1.0)

    def init(params):
        return SgdState(velocity=jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        check_update(grads, params, {"state.velocity": state.velocity})
        velocity = jax.tree.map(lambda g, v: g + momentum * v, grads, state.velocity)
        direction = jax.tree.map(lambda g, v: g + momentum * v, grads, velocity) if nesterov else velocity
        updates = jax.tree.map(lambda d: -learning_rate * d, direction)
        return updates, SgdState(velocity=velocity)

    return GradientTransformation(init, update)


def rosenbrock(params, a=1.0, b=100.0):
    r"""The Rosenbrock function :math:`\sum (a - x)^2 + b (y - x^2)^2` of ``params = {"x": x, "y": y}``.

    ``x`` and ``y`` may be scalars or arrays of one shape (a sum of independent 2-D problems); the
    minimum is 0 at :math:`x = a, y = a^2`, at the end of a long, curved, flat-bottomed valley.
    """
    x, y = _checks.float_array(params["x"], "params['x']"), _checks.float_array(params["y"], "params['y']")
    if jnp.shape(x) != jnp.shape(y):
        raise ValueError(f"params['x'] and params['y'] must have one shape, got {jnp.shape(x)} and {jnp.shape(y)}")
    return jnp.sum((a - x) ** 2 + b * (y - x**2) ** 2)


def run_optimizer(loss_fn, params, optimizer, *, steps):
    """Run ``optimizer`` on ``loss_fn`` for ``steps`` full-gradient steps inside :func:`jax.lax.scan`.

    Works with any object that has this chapter's ``init``/``update`` interface (optax's too).
    Returns the parameters after every step (each leaf gains a leading axis of length ``steps``) and
    the loss before every step, shape (steps,).
    """

    def step(carry, _):
        params, state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = optimizer.update(grads, state, params)
        params = apply_updates(params, updates)
        return (params, state), (params, loss)

    _, (trajectory, losses) = jax.lax.scan(step, (params, optimizer.init(params)), length=steps)
    return trajectory, losses
