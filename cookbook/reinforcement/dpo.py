r"""Direct preference optimisation
==============================

Direct preference optimisation (DPO) fine-tunes a policy on pairs of preferred and rejected answers
with one logistic loss on log-probability ratios against a frozen reference: the optimum of the
KL-regularised objective of RLHF, reached without a reward model or sampling, which is why it is a
common way to align a language model with human preferences.

Equation
--------

.. math::

   \begin{aligned}
   z &= \beta \Big[\big(\log \pi_\theta(y_w \mid x) - \log \pi_{\text{ref}}(y_w \mid x)\big)
        - \big(\log \pi_\theta(y_l \mid x) - \log \pi_{\text{ref}}(y_l \mid x)\big)\Big], \\
   \mathcal{L}_{\text{DPO}}(\theta) &= -\frac{1}{B} \sum_{b=1}^{B} \log \sigma(z_b), \qquad
   \pi^{*}(y \mid x) \propto \pi_{\text{ref}}(y \mid x)\, \exp\!\big(r(x, y) / \beta\big)
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`
     - a prompt
     - (implicit: each pair shares one)
     - n/a
   * - :math:`y_w`, :math:`y_l`
     - the preferred (chosen) and the rejected answer of a pair
     - (implicit: their log-probabilities are given)
     - n/a
   * - :math:`\log \pi_\theta(y_w \mid x)`, :math:`\log \pi_\theta(y_l \mid x)`
     - the trained policy's log-probabilities of the two answers
     - ``policy_chosen_logps``, ``policy_rejected_logps``
     - ``(B,)``
   * - :math:`\log \pi_{\text{ref}}(y_w \mid x)`, :math:`\log \pi_{\text{ref}}(y_l \mid x)`
     - the frozen reference's log-probabilities
     - ``reference_chosen_logps``, ``reference_rejected_logps``
     - ``(B,)``
   * - :math:`\theta`
     - the policy's parameters (in the bandit, its logits)
     - ``logits``
     - ``(K,)``
   * - :math:`\beta`
     - strength of the pull towards the reference (the KL weight)
     - ``beta``
     - scalar
   * - :math:`z`, :math:`z_b`
     - the scaled margin of implicit rewards, for pair :math:`b`
     - ``z``
     - ``(B,)``
   * - :math:`B`, :math:`b`
     - number of pairs and a pair's index
     - leading axis of the inputs
     - scalar
   * - :math:`\sigma`
     - logistic sigmoid
     - ``jax.nn.log_sigmoid`` gives its logarithm
     - elementwise
   * - :math:`\mathcal{L}_{\text{DPO}}`
     - the loss, a mean over pairs
     - return value of ``dpo_loss``
     - scalar
   * - :math:`r`, :math:`\pi^{*}`
     - a reward, and the policy that maximises expected reward minus :math:`\beta` times the KL
       divergence from the reference
     - ``rewards``, return value of ``optimal_policy``
     - ``(K,)``

Explanation
-----------

RLHF :footcite:p:`christiano2017deep` fits a reward model :math:`r` to human preferences with the
Bradley–Terry model, :math:`P(y_w \succ y_l) = \sigma(r(x, y_w) - r(x, y_l))`
:footcite:p:`bradley1952rank`, then maximises :math:`\mathbb{E}[r] - \beta\,
\mathrm{KL}(\pi_\theta \,\|\, \pi_{\text{ref}})` with reinforcement learning. That objective has a
closed-form maximiser, :math:`\pi^{*}`, in the second equation. :footcite:t:`rafailov2023direct`
read it backwards: any policy defines an *implicit reward* :math:`\beta \log
\pi_\theta(y \mid x) / \pi_{\text{ref}}(y \mid x)` (up to a term that depends on :math:`x` alone and
cancels in a difference), and putting that reward into the Bradley–Terry likelihood gives the DPO
loss. Minimising it is maximum likelihood of the preferences, with the policy itself as the reward
model; where the preference data pins the rewards down, its minimiser is :math:`\pi^{*}`.

The gradient shows what the loss does: :math:`-\beta\,\sigma(-z)` times the gradient of the
chosen answer's log-probability minus the rejected one's. Each pair pushes the chosen answer up and
the rejected one down, weighted by how wrongly the implicit reward orders them; a pair already
ordered with a large margin contributes almost nothing, which stops the policy drifting far from the
reference on easy pairs.

.. admonition:: Intuition

   A judge who compares two essays grades the change, not the essay: both students started from
   the same draft (the reference), and the one whose edits the reader preferred is rewarded for
   having moved further in that direction than the other. The reference keeps the comparison
   fair, and :math:`\beta` says how much a given edit counts.

*Numerical traps.* :math:`-\log \sigma(z)` is written with ``jax.nn.log_sigmoid``, which is
stable at both ends (:math:`\operatorname{softplus}(-z)`); the naive :math:`\log(1/(1 + e^{-z}))`
overflows for :math:`z < -88` in float32. The four log-probabilities are each divided by 4 (exact
in binary floating point) before they are combined and the sum multiplied back, so that the
difference of extreme inputs cannot overflow: the loss is finite whenever its true value is
(for inputs of :math:`\pm 10^{30}` and :math:`\beta = 0.1` it is about :math:`4 \cdot 10^{29}`).
The mean divides before it sums, for the same reason. The loss is a mean over pairs; the batch is part of the idea, so the function takes it whole.
*Bad input.* The four arrays must be floating-point, one axis, of one shape; :math:`\beta` must be
positive.

Inductive bias
--------------

DPO assumes that preferences follow a Bradley–Terry model of some reward, and that the best policy
is the reference tilted by that reward; it can therefore only reweight answers the reference already
gives some probability, never invent new ones. On a bandit with :math:`K` arms and exact
preference probabilities for every pair, gradient descent on the loss reaches :math:`\pi^{*}`; the
test finds it within 0.01 in total variation after 300 steps from the uniform policy.

Example
-------

With equal log-probability ratios the loss is :math:`\log 2`; a policy that moved towards the chosen
answer has a lower loss; the closed-form optimum tilts the reference by the rewards:

>>> import jax, jax.numpy as jnp
>>> from cookbook.reinforcement.dpo import dpo_loss, optimal_policy, bandit_loss
>>> ref_c, ref_r = jnp.array([-2.0, -1.5, -3.0]), jnp.array([-2.5, -1.0, -2.0])
>>> round(float(dpo_loss(ref_c, ref_r, ref_c, ref_r, 0.1)), 4)
0.6931
>>> round(float(dpo_loss(ref_c + 1.0, ref_r - 1.0, ref_c, ref_r, 0.1)), 4)
0.5981
>>> optimal_policy(jnp.zeros(3), jnp.array([0.0, 0.0, jnp.log(2.0)]), 1.0)
Array([0.25, 0.25, 0.5 ], dtype=float32)
>>> logits, rewards = jnp.zeros(3), jnp.array([0.0, 1.0, 2.0])
>>> round(float(bandit_loss(logits, jnp.zeros(3), rewards, 0.5)), 4)  # expected loss of the uniform policy
0.3466
>>> grad = jax.grad(bandit_loss)(logits, jnp.zeros(3), rewards, 0.5)
>>> bool(grad[2] < 0 < grad[0])  # descent raises the best arm and lowers the worst
True
"""

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"dpo_loss": (), "optimal_policy": (), "bandit_loss": ()}


def _check_logps(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    """The four log-probability arrays (B,), checked, and beta."""
    names = ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps")
    arrays = [_checks.float_array(x, name, ndim=1, what=" (B,)") for x, name in zip(
        (policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps), names)]
    for x, name in zip(arrays[1:], names[1:]):
        _checks.same_shape(x, name, arrays[0].shape, expected_from="the shape of policy_chosen_logps")
    if arrays[0].shape[0] == 0:
        raise ValueError("policy_chosen_logps must hold at least one pair, got shape (0,)")
    return (*arrays, _checks.positive(beta, "beta"))


def _margins(pi_c, pi_r, ref_c, ref_r, beta):
    """The scaled margins z (B,), computed so that extreme (finite) inputs do not overflow."""
    pi_c, pi_r, ref_c, ref_r = (x / 4 for x in (pi_c, pi_r, ref_c, ref_r))  # exact: a power of two
    z = ((pi_c - ref_c) - (pi_r - ref_r)) * (4 * beta)  # (B,)
    return z


def dpo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    """The DPO loss: the mean over the B pairs of ``-log sigmoid(beta * margin)``.

    All four log-probability arrays have shape (B,); ``beta`` is a positive scalar.
    """
    return _dpo_loss(*_check_logps(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                                   reference_rejected_logps, beta))


# Each public function checks its input in Python, then runs one compiled core (beta traced), so
# that a repeated call with the same shapes (the examples', the tests', the jit and bad-input
# checks') reuses one program instead of dispatching each small operation alone.
@jax.jit
def _dpo_loss(pi_c, pi_r, ref_c, ref_r, beta):
    z = _margins(pi_c, pi_r, ref_c, ref_r, beta)
    return jnp.sum(-jax.nn.log_sigmoid(z) / z.shape[0])  # a mean that cannot overflow in the sum


def optimal_policy(reference_logits, rewards, beta):
    """The KL-regularised optimum ``softmax(reference_logits + rewards / beta)`` (K,) of a bandit."""
    reference_logits = _checks.float_array(reference_logits, "reference_logits", ndim=1, what=" (K,)")
    rewards = _checks.float_array(rewards, "rewards", ndim=1, what=" (K,)")
    _checks.same_shape(rewards, "rewards", reference_logits.shape, expected_from="(K,) of reference_logits")
    beta = _checks.positive(beta, "beta")
    return _optimal_policy(reference_logits, rewards, beta)


@jax.jit
def _optimal_policy(reference_logits, rewards, beta):
    return jax.nn.softmax(reference_logits + rewards / beta)


def bandit_loss(logits, reference_logits, rewards, beta):
    """The expected DPO loss of a K-armed bandit policy ``softmax(logits)``.

    Every ordered pair of distinct arms (i, j) is shown equally often and labelled "i preferred"
    with the Bradley–Terry probability ``sigmoid(rewards[i] - rewards[j])``; the result is the
    mean DPO loss under those labels, whose minimiser is ``optimal_policy``.
    """
    logits = _checks.float_array(logits, "logits", ndim=1, what=" (K,)")
    reference_logits = _checks.float_array(reference_logits, "reference_logits", ndim=1, what=" (K,)")
    _checks.same_shape(reference_logits, "reference_logits", logits.shape, expected_from="(K,) of logits")
    rewards = _checks.float_array(rewards, "rewards", ndim=1, what=" (K,)")
    _checks.same_shape(rewards, "rewards", logits.shape, expected_from="(K,) of logits")
    if logits.shape[0] < 2:
        raise ValueError(f"logits must have at least 2 arms, got shape {logits.shape}")
    return _bandit_loss(logits, reference_logits, rewards, _checks.positive(beta, "beta"))


@jax.jit
def _bandit_loss(logits, reference_logits, rewards, beta):
    K = logits.shape[0]
    logp, ref_logp = jax.nn.log_softmax(logits), jax.nn.log_softmax(reference_logits)
    i, j = np.nonzero(~np.eye(K, dtype=bool))  # the K (K - 1) ordered pairs i != j, fixed by the shape
    z = _margins(logp[i], logp[j], ref_logp[i], ref_logp[j], beta)  # i chosen over j
    preferred = jax.nn.sigmoid(rewards[i] - rewards[j])  # Bradley-Terry probability of that label
    return -jnp.mean(preferred * jax.nn.log_sigmoid(z))
