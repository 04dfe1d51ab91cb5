r"""Policy gradients: REINFORCE and baselines
=========================================

REINFORCE estimates the gradient of a policy's expected return from sampled episodes alone, by
weighting the gradient of each action's log-probability with the return that followed it; a
baseline subtracted from the return leaves the estimate unbiased and can cut its variance many
times, the starting point of every actor-critic method.

Equation
--------

.. math::

   \begin{aligned}
   G_t &= \sum_{k=t}^{T-1} \gamma^{k-t} r_k, \qquad
   J(\theta) = \mathbb{E}_{\pi_\theta}\big[G_0\big], \\
   \nabla_\theta J(\theta) &= \mathbb{E}_{\pi_\theta}\Big[\sum_{t=0}^{T-1}
   \gamma^{t}\, \big(G_t - b(s_t)\big)\, \nabla_\theta \log \pi_\theta(a_t \mid s_t)\Big]
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`r_k`
     - reward after the action at step :math:`k`
     - ``rewards``
     - ``(T,)``
   * - :math:`\gamma`
     - discount
     - ``discount``
     - scalar
   * - :math:`G_t`
     - the return from step :math:`t`: the discounted rewards that followed
     - ``returns``
     - ``(T,)``
   * - :math:`s_t`, :math:`a_t`
     - state and action at step :math:`t`
     - (implicit in ``logits``), ``actions``
     - n/a, ``(T,)``
   * - :math:`\pi_\theta(a_t \mid s_t)`
     - the policy's probability of the action taken
     - from ``logits`` and ``actions``
     - ``(T, A)``
   * - :math:`\theta`
     - the policy's parameters
     - (whatever produced ``logits``)
     - n/a
   * - :math:`b(s_t)`
     - a baseline that depends on the state only (not on :math:`a_t`)
     - ``baselines``
     - ``(T,)``
   * - :math:`J`
     - expected return from the start state
     - (estimated; its gradient is that of ``-reinforce_loss``)
     - scalar
   * - :math:`t`, :math:`k`, :math:`T`
     - steps and the episode's length
     - leading axis of ``rewards``
     - scalar

Explanation
-----------

The return depends on the actions, which are sampled, so it cannot be differentiated directly. The
*log-derivative trick* moves the gradient onto the probabilities: :math:`\nabla_\theta
\mathbb{E}_{a \sim \pi_\theta}[f(a)] = \mathbb{E}[f(a)\, \nabla_\theta \log \pi_\theta(a)]`, since
:math:`\nabla \pi = \pi\, \nabla \log \pi`. Applied to a whole episode, whose probability is a
product of the policy's and the world's probabilities, only the policy's factors depend on
:math:`\theta`, and the world's model drops out: REINFORCE :footcite:p:`williams1992simple` needs
no model, only samples. An action cannot change the rewards before it, so each
:math:`\nabla \log \pi(a_t \mid s_t)` is weighted by the return from :math:`t` on; the factor
:math:`\gamma^t` makes it the gradient of the discounted objective exactly (practical code often
drops it, which changes the objective slightly) :footcite:p:`sutton2018reinforcement`.

Any baseline :math:`b(s_t)` that does not depend on :math:`a_t` leaves the mean unchanged, because
:math:`\mathbb{E}_{a \sim \pi}[\nabla \log \pi(a)] = \nabla \sum_a \pi(a) = \nabla 1 = 0`. It
changes the variance, which is what makes REINFORCE slow: a return of 10 everywhere pushes every
sampled action up, and only the average of many samples cancels the pushes. Subtracting the
state's value leaves only how much better than usual the action did. On the five-armed bandit of the
tests, whose rewards have unit noise around means between 9.4 and 10.5, the expected reward as
baseline cuts the total variance of the one-sample estimate by a factor of 90, in closed form and on
sampled gradients.

.. admonition:: Intuition

   A teacher who praises every answer in proportion to its raw score praises everything when the
   exam is easy, and the student learns little from any single piece of praise; praising only what
   beat the class average carries the same information with far less noise. The average is the
   baseline; it is fair because it does not depend on what the student answered.

*In code.* ``discounted_returns`` runs :math:`G_t = r_t + \gamma_t G_{t+1}` backwards with
:func:`jax.lax.scan`, with a discount per step (0 where an episode ends) as in rlax.
``reinforce_loss`` is a surrogate: a sum, not a mean, whose gradient is the estimate of
:math:`-\nabla J` of one episode, with the returns and baselines held fixed. Averaging it over
episodes and descending it is REINFORCE. *Bad input.* Shapes and dtypes are checked always; the
actions' range when concrete (under :func:`jax.jit` an out-of-range action reads a clamped logit).

Inductive bias
--------------

REINFORCE assumes only that the policy is differentiable in its parameters and that episodes can be
sampled: no model of the world, no Markov property even, since a whole trajectory's return is used.
The price is variance that grows with the horizon and the size of the returns, so it learns from
many episodes what a critic or a model would learn from few. The tests check the estimate against
the exact gradient of a small random Markov decision process, computed by differentiating the
linear solve of :doc:`dynamic_programming`.

Example
-------

Returns of a three-step episode; then the one-sample gradient on a bandit (one step, no discount):

>>> import jax, jax.numpy as jnp
>>> from cookbook.reinforcement.policy_gradient import discounted_returns, reinforce_loss
>>> discounted_returns(jnp.array([1.0, 0.0, 2.0]), jnp.array([0.5, 0.5, 0.5]))  # 1 + 0.25 * 2
Array([1.5, 1. , 2. ], dtype=float32)
>>> logits = jnp.zeros((1, 3))  # uniform over three arms; arm 2 was pulled and paid 10
>>> round(float(reinforce_loss(logits, jnp.array([2]), jnp.array([10.0]), jnp.zeros(1), 1.0)), 4)  # 10 log 3
10.9861
>>> grad = jax.grad(reinforce_loss)(logits, jnp.array([2]), jnp.array([10.0]), jnp.zeros(1), 1.0)
>>> -grad  # ascent direction: 10 * (e_2 - pi), up for the pulled arm, down for the others
Array([[-3.3333, -3.3333,  6.6667]], dtype=float32)
>>> -jax.grad(reinforce_loss)(logits, jnp.array([2]), jnp.array([10.0]), jnp.array([9.5]), 1.0)
Array([[-0.1667, -0.1667,  0.3333]], dtype=float32)
"""

import numbers

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"discounted_returns": (), "reinforce_loss": ()}


def discounted_returns(rewards, discounts):
    """The returns G (T,) of one trajectory: ``G_t = rewards_t + discounts_t * G_{t+1}``, ``G_T = 0``.

    ``rewards`` and ``discounts`` have shape (T,); a discount of 0 ends an episode there.
    """
    rewards = _checks.float_array(rewards, "rewards", ndim=1, what=" (T,)")
    discounts = _checks.float_array(discounts, "discounts", ndim=1, what=" (T,)")
    _checks.same_shape(discounts, "discounts", rewards.shape, expected_from="(T,) of rewards")
    return _returns(rewards, discounts)


@jax.jit
def _returns(rewards, discounts):
    def back(following, step):
        reward, discount = step
        g = reward + discount * following
        return g, g

    _, returns = jax.lax.scan(back, jnp.zeros((), rewards.dtype), (rewards, discounts), reverse=True)
    return returns


def reinforce_loss(logits, actions, returns, baselines, discount):
    """The REINFORCE surrogate of one episode, ``-sum_t discount**t (G_t - b_t) log pi(a_t | s_t)``.

    ``logits`` (T, A) are the policy's at the visited states, ``actions`` (T,) integer, ``returns``
    and ``baselines`` (T,) are held fixed; its gradient is a one-episode estimate of ``-grad J``.
    """
    logits = _checks.float_array(logits, "logits", ndim=2, what=" (T, A)")
    T, A = logits.shape
    actions = _checks.same_shape(_checks.int_array(actions, "actions", ndim=1, what=" (T,)"),
                                 "actions", (T,), expected_from="(T,) of logits")
    _checks.check_range(actions, "actions (indices into the last axis of logits)", 0, A)
    returns = _checks.same_shape(_checks.float_array(returns, "returns", ndim=1, what=" (T,)"),
                                 "returns", (T,), expected_from="(T,) of logits")
    baselines = _checks.same_shape(_checks.float_array(baselines, "baselines", ndim=1, what=" (T,)"),
                                   "baselines", (T,), expected_from="(T,) of logits")
    if isinstance(discount, bool) or (isinstance(discount, numbers.Real) and not 0.0 <= discount <= 1.0):
        raise ValueError(f"discount must be a real number in [0, 1], got {discount!r}")
    return _reinforce(logits, actions, returns, baselines, discount)


@jax.jit
def _reinforce(logits, actions, returns, baselines, discount):
    """The surrogate on checked inputs, one compiled program."""
    T = logits.shape[0]
    weights = discount ** jnp.arange(T, dtype=logits.dtype)  # gamma^t
    advantages = jax.lax.stop_gradient(weights * (returns - baselines))  # (T,)
    log_pi = jax.nn.log_softmax(logits, axis=-1)
    log_pi_taken = jnp.take_along_axis(log_pi, actions[:, None], axis=1)[:, 0]  # (T,)
    return -jnp.sum(advantages * log_pi_taken)
