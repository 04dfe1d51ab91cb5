r"""Actor-critic with generalised advantage estimation
==================================================

An actor-critic learns a policy (the actor) and a value function (the critic) together, and scores
each action by its advantage, how much better it did than the critic expected; generalised advantage
estimation (GAE) blends one-step and many-step estimates of that advantage with one parameter, the
standard way to cut the variance of policy gradients without much bias.

Equation
--------

.. math::

   \begin{aligned}
   \delta_t &= r_t + \gamma_t V(s_{t+1}) - V(s_t), \qquad
   \hat{A}_t = \delta_t + \gamma_t \lambda \hat{A}_{t+1}, \quad \hat{A}_T = 0, \\
   \mathcal{L}(\theta, \phi) &= \frac{1}{T} \sum_{t=0}^{T-1}
   \Big[-\hat{A}_t \log \pi_\theta(a_t \mid s_t)
   + c\,\big(\hat{A}_t + V_\phi(s_t) - V_\phi(s_t)\big)^2 \Big]
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`r_t`
     - reward after the action at step :math:`t`
     - ``rewards``
     - ``(T,)``
   * - :math:`\gamma_t`
     - discount at step :math:`t` (0 where an episode ends)
     - ``discounts``
     - ``(T,)``
   * - :math:`V(s_t)`, :math:`V_\phi(s_t)`
     - the critic's value of the state at step :math:`t`; the last of the :math:`T+1` bootstraps
     - ``values``
     - ``(T+1,)``
   * - :math:`\delta_t`
     - temporal-difference error
     - ``delta``
     - ``(T,)``
   * - :math:`\hat{A}_t`
     - generalised advantage estimate (held fixed in the loss)
     - ``advantages``
     - ``(T,)``
   * - :math:`\lambda`
     - GAE parameter: 0 gives one-step TD errors, 1 the Monte Carlo return minus the value
     - ``lam``
     - scalar
   * - :math:`\pi_\theta(a_t \mid s_t)`
     - the actor's probability of the action taken
     - from ``logits`` and ``actions``
     - ``(T, A)``, ``(T,)``
   * - :math:`s_t`, :math:`a_t`
     - state and action at step :math:`t`
     - (implicit in ``logits`` and ``values``), ``actions``
     - n/a
   * - :math:`c`
     - weight of the critic's squared error
     - ``value_weight``
     - scalar
   * - :math:`\theta`, :math:`\phi`
     - parameters of the actor and the critic
     - (whatever produced ``logits`` and ``values``)
     - n/a
   * - :math:`\mathcal{L}`
     - the loss of one trajectory, a mean over its steps
     - return value of ``actor_critic_loss``
     - scalar
   * - :math:`t`, :math:`T`
     - step and number of steps
     - leading axis of ``rewards``
     - scalar

Explanation
-----------

The policy gradient theorem says that :math:`\mathbb{E}[\Psi_t \nabla \log \pi_\theta(a_t \mid
s_t)]` is the gradient of the expected return when :math:`\Psi_t` is the return that followed
:math:`a_t`, and stays unbiased when a baseline that depends only on the state is subtracted. The
advantage, return minus the critic's value, is such a choice, with much lower variance
:footcite:p:`sutton2018reinforcement`. :footcite:t:`schulman2016high` write the :math:`k`-step
advantage estimates as discounted sums of TD errors and average them with weights
:math:`(1-\lambda)\lambda^{k-1}`; the average collapses to the backward recursion above, one pass
from the end of the trajectory. With :math:`\lambda = 0` it is the TD error :math:`\delta_t`
(biased if the critic is wrong, low variance); with :math:`\lambda = 1` it is the full discounted
return minus :math:`V(s_t)` (unbiased, high variance). The critic is trained towards the target
:math:`\hat{A}_t + V(s_t)`, the :math:`\lambda`-return, held fixed (the equation's
:math:`\hat{A}_t + V_\phi(s_t)` is evaluated without gradient; the second :math:`V_\phi` carries
it).

.. admonition:: Intuition

   A coach (the critic) predicts how well each play will go; the player (the actor) is praised or
   blamed not for the score but for beating or missing the coach's prediction. :math:`\lambda` is
   how long the coach waits before judging: right after the play, trusting their own forecast of
   the rest, or at the end of the game, trusting only the final score.

*In code.* ``gae`` is written for one trajectory and runs the recursion with
:func:`jax.lax.scan` in reverse; :math:`\gamma_t = 0` where an episode ends stops both the bootstrap
and the recursion there. ``actor_critic_loss`` subtracts an entropy bonus, weighted by
``entropy_weight``, that the equation leaves out; it keeps the policy from collapsing early.
*Bad input.* Shapes and dtypes are checked always; :math:`\lambda \in [0, 1]` when concrete, and the
actions' range when concrete (under :func:`jax.jit` an action out of range reads a clamped logit).

Inductive bias
--------------

An actor-critic assumes that the critic's values generalise across states well enough to be a good
baseline; where they do not, a small :math:`\lambda` inherits the critic's bias. GAE assumes that
credit for a reward fades geometrically with the delay (by :math:`\gamma\lambda` per step), so
rewards long after an action count little towards its advantage. The test trains a tabular actor
and critic on the grid world of :doc:`dynamic_programming` from sampled episodes alone, and its
greedy policy reaches the optimal value of the start state found there by value iteration.

Example
-------

Three steps, an episode ending after the second; with :math:`\lambda = 0` the advantages are the TD
errors:

>>> import jax.numpy as jnp
>>> from cookbook.reinforcement.actor_critic import gae, actor_critic_loss
>>> rewards = jnp.array([1.0, 0.0, 2.0])
>>> discounts = jnp.array([0.9, 0.0, 0.9])
>>> values = jnp.array([0.5, 1.0, 0.0, 1.0])
>>> gae(rewards, discounts, values, 0.0)
Array([ 1.4, -1. ,  2.9], dtype=float32)
>>> gae(rewards, discounts, values, 1.0)  # 1.4 + 0.9 * (-1.0): the return 1.0 minus V = 0.5
Array([ 0.5, -1. ,  2.9], dtype=float32)
>>> logits = jnp.zeros((3, 2))
>>> round(float(actor_critic_loss(logits, values, jnp.array([0, 1, 0]), rewards, discounts, 0.9)), 4)
2.1947
"""

import numbers

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"gae": (), "actor_critic_loss": ()}


def _lam(lam):
    if isinstance(lam, bool):
        raise TypeError(f"lam must be a real number in [0, 1], got {lam!r}")
    if isinstance(lam, numbers.Real):
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must lie in [0, 1], got {lam}")
        return lam
    lam = _checks.float_array(lam, "lam", ndim=0, what=" (a scalar)")
    if _checks.is_concrete(lam) and not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"lam must lie in [0, 1], got {float(lam)}")
    return lam


def gae(rewards, discounts, values, lam):
    """Generalised advantage estimates (T,) of one trajectory.

    ``rewards`` and ``discounts`` have shape (T,); ``values`` has shape (T+1,), its last entry the
    value of the state after the last step, which bootstraps the tail; ``lam`` is in [0, 1].
    """
    return _gae_jit(*_gae_inputs(rewards, discounts, values, lam))


def _gae_inputs(rewards, discounts, values, lam):
    rewards = _checks.float_array(rewards, "rewards", ndim=1, what=" (T,)")
    (T,) = rewards.shape
    discounts = _checks.same_shape(_checks.float_array(discounts, "discounts", ndim=1, what=" (T,)"),
                                   "discounts", (T,), expected_from="(T,) of rewards")
    values = _checks.same_shape(_checks.float_array(values, "values", ndim=1, what=" (T+1,)"),
                                "values", (T + 1,), expected_from="(T+1,) from rewards (T,)")
    return rewards, discounts, values, _lam(lam)


# Each public function checks its input in Python, then runs one compiled core, so that a repeated
# call with the same shapes (the examples', the tests', the jit and bad-input checks') reuses one
# program instead of dispatching each small operation, and a scan with a fresh closure, alone.
def _gae(rewards, discounts, values, lam):
    delta = rewards + discounts * values[1:] - values[:-1]  # (T,)

    def back(next_advantage, step):
        delta_t, discount_t = step
        advantage = delta_t + discount_t * lam * next_advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(back, jnp.zeros((), delta.dtype), (delta, discounts), reverse=True)
    return advantages


_gae_jit = jax.jit(_gae)


def actor_critic_loss(logits, values, actions, rewards, discounts, lam, *, value_weight=0.5, entropy_weight=0.01):
    """The advantage actor-critic loss of one trajectory, a scalar.

    ``logits`` (T, A) are the actor's, ``values`` (T+1,) the critic's, ``actions`` (T,) integer.
    The advantages and the critic's targets are held fixed (no gradient flows through them).
    """
    logits = _checks.float_array(logits, "logits", ndim=2, what=" (T, A)")
    T, A = logits.shape
    actions = _checks.same_shape(_checks.int_array(actions, "actions", ndim=1, what=" (T,)"),
                                 "actions", (T,), expected_from="(T,) of logits")
    _checks.check_range(actions, "actions (indices into the last axis of logits)", 0, A)
    rewards = _checks.same_shape(_checks.float_array(rewards, "rewards", ndim=1, what=" (T,)"),
                                 "rewards", (T,), expected_from="(T,) of logits")
    value_weight = _checks.positive(value_weight, "value_weight", allow_zero=True)
    entropy_weight = _checks.positive(entropy_weight, "entropy_weight", allow_zero=True)
    _, discounts, values, lam = _gae_inputs(rewards, discounts, values, lam)
    if isinstance(value_weight, jax.core.Tracer) or isinstance(entropy_weight, jax.core.Tracer):
        return _loss_traced(logits, values, actions, rewards, discounts, lam, value_weight, entropy_weight)
    # Number weights are constants of the core's program, so that it takes the function's array
    # inputs as they come (and a jax.jit around the function compiles nothing more).
    return _loss_jit(logits, values, actions, rewards, discounts, lam,
                     _checks.static_number(value_weight, "value_weight"),
                     _checks.static_number(entropy_weight, "entropy_weight"))


def _loss(logits, values, actions, rewards, discounts, lam, value_weight, entropy_weight):
    advantages = _gae(rewards, discounts, values, lam)
    targets = jax.lax.stop_gradient(advantages + values[:-1])  # the lambda-returns
    advantages = jax.lax.stop_gradient(advantages)
    log_pi = jax.nn.log_softmax(logits, axis=-1)  # (T, A)
    log_pi_taken = jnp.take_along_axis(log_pi, actions[:, None], axis=1)[:, 0]  # (T,)
    entropy = -(jnp.exp(log_pi) * log_pi).sum(axis=-1)  # (T,)
    per_step = -advantages * log_pi_taken + value_weight * (targets - values[:-1]) ** 2 - entropy_weight * entropy
    return per_step.mean()


_loss_jit = jax.jit(_loss, static_argnums=(6, 7))
_loss_traced = jax.jit(_loss)
