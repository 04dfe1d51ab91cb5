r"""Proximal policy optimisation
============================

Proximal policy optimisation (PPO) reuses each batch of experience for several gradient steps and
keeps the new policy close to the one that collected it by clipping the probability ratio in its
objective: the default policy-gradient method, from robot control to the RLHF of language models.

Equation
--------

.. math::

   \begin{aligned}
   \rho_t &= \frac{\pi_\theta(a_t \mid s_t)}{\pi_{\theta_{\text{old}}}(a_t \mid s_t)}, \\
   \mathcal{L}^{\text{CLIP}}(\theta) &= -\frac{1}{T} \sum_{t=0}^{T-1}
   \min\!\big(\rho_t \hat{A}_t,\; \operatorname{clip}(\rho_t, 1 - \epsilon, 1 + \epsilon)\, \hat{A}_t\big)
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`\rho_t`
     - probability ratio of the action taken, new policy over the one that collected the data
     - ``ratios``
     - ``(T,)``
   * - :math:`\pi_\theta`, :math:`\pi_{\theta_{\text{old}}}`
     - the policy being trained and the frozen policy that collected the batch
     - ``logits``, ``old_log_probs``
     - ``(T, A)``, ``(T,)``
   * - :math:`\theta`
     - the policy's parameters
     - (whatever produced ``logits``)
     - n/a
   * - :math:`s_t`, :math:`a_t`
     - state and action at step :math:`t`
     - (implicit in ``logits``), ``actions``
     - n/a
   * - :math:`\hat{A}_t`
     - advantage estimate (from ``gae`` of :doc:`actor_critic`), held fixed
     - ``advantages``
     - ``(T,)``
   * - :math:`\epsilon`
     - clipping range, 0.2 in the paper's experiments
     - ``epsilon``
     - scalar
   * - :math:`\mathcal{L}^{\text{CLIP}}`
     - the clipped surrogate loss, a mean over steps
     - return value of ``clipped_surrogate_loss``
     - scalar
   * - :math:`t`, :math:`T`
     - step and number of steps
     - leading axis of ``ratios``
     - scalar

Explanation
-----------

The policy gradient of :doc:`actor_critic` is only valid at the policy that collected the data:
after one step the samples come from an older policy. Importance weighting by :math:`\rho_t` gives
a surrogate whose gradient at :math:`\rho_t = 1` is the policy gradient, but maximising it over
many steps lets the ratio run far from 1, where the estimate is poor and performance can collapse.
Trust-region methods bound the KL divergence between the two policies; PPO
:footcite:p:`schulman2017proximal` gets most of that effect with a clip. Taking the minimum of the
clipped and the unclipped term makes the objective a pessimistic bound: once the ratio has moved
past :math:`1 + \epsilon` for an action with positive advantage (or below :math:`1 - \epsilon` for
one with negative advantage), the term is flat and its gradient is zero, so there is no incentive to
move further; in the other direction, where the move made things worse, the unclipped term still
pulls back.

.. admonition:: Intuition

   A coach who reviews a recorded match can draw many lessons from one tape, but the further the
   team's new tactics drift from what was on the tape, the less the tape says about them. PPO lets
   each lesson push the tactics at most :math:`\epsilon` (20 %) away from the recorded
   behaviour, then records a new match.

*In code.* ``clipped_surrogate_loss`` takes the ratios and the advantages, as the equation does;
``ppo_policy_loss`` computes the ratios from the new logits and the stored log-probabilities
(:math:`\rho_t = \exp(\log \pi_\theta - \log \pi_{\theta_{\text{old}}})`, never a quotient of
probabilities, which underflow) and holds the advantages fixed. *Bad input.* Shapes and dtypes are
checked always, :math:`\epsilon` must be positive, and the actions' range is checked when concrete.

Inductive bias
--------------

PPO assumes that the advantage estimates stay roughly valid for policies whose ratios are within
:math:`1 \pm \epsilon` of the old one; it trades the step size of a single update for the safety
of reusing a batch many times. The clip acts per sample, not on the divergence of the whole policy,
so it bounds the incentive to move, not the move itself. The test trains a tabular PPO on the grid
world of :doc:`dynamic_programming` from sampled episodes, with four epochs on each batch, and its
greedy policy reaches the optimal value of the start state.

Example
-------

Ratios inside the clip count in full; outside it, only the side that makes the objective worse:

>>> import jax, jax.numpy as jnp
>>> from cookbook.reinforcement.ppo import clipped_surrogate_loss, ppo_policy_loss
>>> ratios = jnp.array([1.0, 1.5, 0.5, 1.5])
>>> advantages = jnp.array([1.0, 1.0, 1.0, -1.0])
>>> round(float(clipped_surrogate_loss(ratios, advantages, 0.2)), 4)  # -(1 + 1.2 + 0.5 - 1.5) / 4
-0.3
>>> jax.grad(clipped_surrogate_loss)(ratios, advantages, 0.2)  # flat where clipped
Array([-0.25, -0.  , -0.25,  0.25], dtype=float32)
>>> logits = jnp.zeros((4, 3))
>>> old = jnp.log(jnp.full(4, 1 / 3))
>>> round(float(ppo_policy_loss(logits, old, jnp.array([0, 1, 2, 0]), advantages, 0.2)), 4)
-0.5
"""

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"clipped_surrogate_loss": (), "ppo_policy_loss": ()}


def clipped_surrogate_loss(ratios, advantages, epsilon):
    """PPO's clipped surrogate loss, ``-mean(min(r A, clip(r, 1 - eps, 1 + eps) A))``, a scalar.

    ``ratios`` and ``advantages`` have shape (T,); ``epsilon`` is positive. Gradients flow into
    both; ``ppo_policy_loss`` holds the advantages fixed.
    """
    ratios = _checks.float_array(ratios, "ratios", ndim=1, what=" (T,)")
    advantages = _checks.float_array(advantages, "advantages", ndim=1, what=" (T,)")
    _checks.same_shape(advantages, "advantages", ratios.shape, expected_from="(T,) of ratios")
    if ratios.shape[0] == 0:
        raise ValueError("ratios must hold at least one step, got shape (0,)")
    epsilon = _checks.positive(epsilon, "epsilon")
    clipped = jnp.clip(ratios, 1 - epsilon, 1 + epsilon)
    return -jnp.mean(jnp.minimum(ratios * advantages, clipped * advantages))


def ppo_policy_loss(logits, old_log_probs, actions, advantages, epsilon):
    """The clipped surrogate loss of new ``logits`` (T, A) against the stored ``old_log_probs`` (T,)
    of the ``actions`` (T,) taken; the advantages (T,) are held fixed."""
    logits = _checks.float_array(logits, "logits", ndim=2, what=" (T, A)")
    T, A = logits.shape
    old_log_probs = _checks.same_shape(_checks.float_array(old_log_probs, "old_log_probs", ndim=1, what=" (T,)"),
                                       "old_log_probs", (T,), expected_from="(T,) of logits")
    actions = _checks.same_shape(_checks.int_array(actions, "actions", ndim=1, what=" (T,)"),
                                 "actions", (T,), expected_from="(T,) of logits")
    _checks.check_range(actions, "actions (indices into the last axis of logits)", 0, A)
    advantages = _checks.float_array(advantages, "advantages", ndim=1, what=" (T,)")
    log_probs = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), actions[:, None], axis=1)[:, 0]  # (T,)
    ratios = jnp.exp(log_probs - old_log_probs)
    return clipped_surrogate_loss(ratios, jax.lax.stop_gradient(advantages), epsilon)
