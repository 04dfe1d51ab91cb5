r"""Group relative policy optimisation
==================================

Group relative policy optimisation (GRPO) samples a group of answers to each prompt and scores each
answer against the others in its group, so that the group's mean reward replaces the learned critic
of PPO; it suits language models trained on rewards that a program checks, such as whether an
arithmetic answer is right.

Equation
--------

.. math::

   \begin{aligned}
   \hat{A}_i &= \frac{r_i - \operatorname{mean}(r_1, \ldots, r_G)}
                     {\operatorname{std}(r_1, \ldots, r_G) + \varepsilon}, \qquad
   \rho_{i,t} = \frac{\pi_\theta(o_{i,t} \mid q, o_{i,<t})}{\pi_{\theta_{\text{old}}}(o_{i,t} \mid q, o_{i,<t})}, \\
   \mathbb{D}_{i,t} &= \frac{\pi_{\text{ref}}(o_{i,t})}{\pi_\theta(o_{i,t})}
   - \log \frac{\pi_{\text{ref}}(o_{i,t})}{\pi_\theta(o_{i,t})} - 1, \\
   \mathcal{L}(\theta) &= -\frac{1}{G} \sum_{i=1}^{G} \frac{1}{|o_i|} \sum_{t=1}^{|o_i|}
   \Big[\min\!\big(\rho_{i,t} \hat{A}_i,\, \operatorname{clip}(\rho_{i,t}, 1-\epsilon, 1+\epsilon)\, \hat{A}_i\big)
   - \beta\, \mathbb{D}_{i,t}\Big]
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`q`
     - the prompt that the group answers
     - (implicit: shared by the group)
     - n/a
   * - :math:`o_i`, :math:`o_{i,t}`, :math:`|o_i|`
     - the :math:`i`-th sampled answer, its :math:`t`-th token, its length
     - (implicit in the log-probabilities), ``mask``
     - ``(G, L)``
   * - :math:`G`, :math:`i`, :math:`t`
     - group size, an answer's index, a token's index (:math:`L` the padded length)
     - leading axes of ``log_probs``
     - scalar
   * - :math:`r_i`
     - the reward of answer :math:`i` (1 if right, 0 if not, in the example)
     - ``rewards``
     - ``(G,)``
   * - :math:`\hat{A}_i`
     - its group-relative advantage, shared by all its tokens
     - ``advantages``
     - ``(G,)``
   * - :math:`\varepsilon`
     - a small constant, for groups whose rewards are all equal
     - ``eps``
     - scalar
   * - :math:`\pi_\theta`, :math:`\pi_{\theta_{\text{old}}}`, :math:`\pi_{\text{ref}}`
     - the policy being trained, the one that sampled the group, the frozen reference
     - ``log_probs``, ``old_log_probs``, ``reference_log_probs`` (of the sampled tokens)
     - ``(G, L)``
   * - :math:`\theta`
     - the policy's parameters
     - (whatever produced ``log_probs``)
     - n/a
   * - :math:`\rho_{i,t}`
     - probability ratio of a token, new policy over old
     - ``ratios``
     - ``(G, L)``
   * - :math:`\mathbb{D}_{i,t}`
     - a per-token estimate of :math:`\mathrm{KL}(\pi_\theta \,\|\, \pi_{\text{ref}})`, never negative
     - return value of ``kl_estimate``
     - ``(G, L)``
   * - :math:`\epsilon`, :math:`\beta`
     - clip range and weight of the KL penalty
     - ``epsilon``, ``beta``
     - scalar
   * - :math:`\mathcal{L}`
     - the GRPO loss of one group
     - return value of ``grpo_loss``
     - scalar

Explanation
-----------

PPO (:doc:`ppo`) needs an advantage for each token, and gets it from a critic as large as the
policy. For a language model answering a question whose answer a program can check, the reward
comes once, at the end, and a critic is hard to train. :footcite:t:`shao2024deepseekmath` sample
:math:`G` answers to the same prompt and use the group as its own baseline: an answer's advantage is
its reward standardised within the group, and every token of the answer shares it. The mean is a
baseline of the kind :doc:`policy_gradient` allows, since it does not depend on which answer is
being scored (up to that answer's own share of it); dividing by the standard deviation makes each
prompt weigh the same whatever its rewards' scale, and makes the advantages invariant to an affine
change of the reward. A group whose answers are all right, or all wrong, teaches nothing: every
advantage is 0.

The rest is PPO's clipped surrogate, per token, averaged over each answer's tokens and then over the
group, with the KL penalty to the reference put in the loss rather than in the reward. The penalty
uses the estimator :math:`\mathbb{D} = x - \log x - 1` with :math:`x = \pi_{\text{ref}} /
\pi_\theta` :footcite:p:`schulman2020approximating`: it is never negative (since
:math:`\log x \le x - 1`), and its expectation over tokens sampled from :math:`\pi_\theta` is
exactly the KL divergence, which the tests check on a categorical in closed form.

.. admonition:: Intuition

   Grading on a curve, within one exam: each student's answer to the same question is compared with
   the other students' answers to it, so a hard question, where everyone scores low, still tells the
   best of them they did well. No one needs to know in advance how hard each question was (the
   critic); the class's average is enough.

*In code.* ``group_advantages`` uses the population standard deviation (dividing by :math:`G`);
some implementations divide by :math:`G - 1`, which scales the advantages by a constant. The loss
takes log-probabilities of the sampled tokens, with ``mask`` marking real tokens (padding is 0).
*Bad input.* Shapes and dtypes are checked always; every answer needs at least one real token
(checked when the mask is concrete; under :func:`jax.jit` an empty answer divides by zero and shows
as NaN).

Inductive bias
--------------

GRPO assumes that the rewards of answers to one prompt are comparable, and that sampling several
answers is cheap next to training a critic; it spreads an answer's reward evenly over its tokens, so
it cannot say which step of a long answer was the mistake. It learns only where a group holds both
right and wrong answers. In the test, a tabular policy over the nine answers to :math:`a + b` (with
:math:`a, b \in \{0, \ldots, 4\}`), starting from chance (one answer in nine right), is trained
with groups of 8 and reaches a pass rate above 0.9 within 60 groups per prompt.

Example
-------

Advantages of a group of four answers, two right; the loss of a policy that has not moved yet, and
its gradient, :math:`-\hat{A}_i / (G\, |o_i|)` per token:

>>> import jax.numpy as jnp
>>> from cookbook.reinforcement.grpo import group_advantages, kl_estimate, grpo_loss
>>> advantages = group_advantages(jnp.array([1.0, 0.0, 0.0, 1.0]))
>>> advantages.round(4)
Array([ 1., -1., -1.,  1.], dtype=float32)
>>> group_advantages(jnp.array([3.0, 3.0, 3.0, 3.0]))  # nothing to learn from this group
Array([0., 0., 0., 0.], dtype=float32)
>>> log_probs = jnp.log(jnp.array([[0.5, 0.5], [0.25, 0.5], [0.5, 0.5], [0.5, 0.25]]))
>>> kl_estimate(log_probs, log_probs)[0]  # the reference itself: no penalty
Array([0., 0.], dtype=float32)
>>> mask = jnp.array([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
>>> abs(float(grpo_loss(log_probs, log_probs, log_probs, advantages, mask, 0.2, 0.04)))  # -mean(A) = 0
0.0
>>> import jax  # descent raises the right answers' tokens and lowers the wrong ones'; padding gets nothing
>>> jax.grad(grpo_loss)(log_probs, log_probs, log_probs, advantages, mask, 0.2, 0.04)
Array([[-0.125, -0.125],
       [ 0.25 ,  0.   ],
       [ 0.125,  0.125],
       [-0.125, -0.125]], dtype=float32)
"""

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"group_advantages": (), "kl_estimate": (), "grpo_loss": ()}


def group_advantages(rewards, eps=1e-6):
    """Group-relative advantages (G,): the rewards (G,) of one group, standardised within it."""
    rewards = _checks.float_array(rewards, "rewards", ndim=1, what=" (G,)")
    if rewards.shape[0] < 2:
        raise ValueError(f"rewards must hold a group of at least 2 answers, got shape {tuple(rewards.shape)}")
    eps = _checks.positive(eps, "eps")
    return _standardise(rewards, eps)


@jax.jit
def _standardise(rewards, eps):
    centred = rewards - rewards.mean()
    return centred / (jnp.sqrt(jnp.mean(centred**2)) + eps)


def _token_array(x, name, shape=None):
    x = _checks.float_array(x, name, ndim=2, what=" (G, L)")
    if shape is not None:
        _checks.same_shape(x, name, shape, expected_from="(G, L) of log_probs")
    return x


def kl_estimate(log_probs, reference_log_probs):
    """Per-token estimates (G, L) of KL(pi || pi_ref): ``x - log x - 1`` with ``x = pi_ref / pi``."""
    log_probs = _token_array(log_probs, "log_probs")
    reference_log_probs = _token_array(reference_log_probs, "reference_log_probs", log_probs.shape)
    return _kl_estimate(log_probs, reference_log_probs)


@jax.jit
def _kl_estimate(log_probs, reference_log_probs):
    log_x = reference_log_probs - log_probs
    return jnp.expm1(log_x) - log_x  # x - 1 - log x, accurate when x is near 1


def grpo_loss(log_probs, old_log_probs, reference_log_probs, advantages, mask, epsilon, beta):
    """The GRPO loss of one group of G answers, a scalar.

    ``log_probs``, ``old_log_probs`` and ``reference_log_probs`` (G, L) are the three policies'
    log-probabilities of the sampled tokens; ``advantages`` (G,) are held fixed, as are the old and
    reference log-probabilities; ``mask`` (G, L) is 1 on real tokens and 0 on padding.
    """
    log_probs = _token_array(log_probs, "log_probs")
    G, L = log_probs.shape
    old_log_probs = _token_array(old_log_probs, "old_log_probs", (G, L))
    reference_log_probs = _token_array(reference_log_probs, "reference_log_probs", (G, L))
    advantages = _checks.same_shape(_checks.float_array(advantages, "advantages", ndim=1, what=" (G,)"),
                                    "advantages", (G,), expected_from="G of log_probs")
    mask = _token_array(mask, "mask", (G, L))
    if _checks.is_concrete(mask) and bool((np.asarray(mask).sum(axis=1) <= 0).any()):
        raise ValueError("mask must mark at least one real token in every answer, got an answer with none")
    epsilon = _checks.positive(epsilon, "epsilon")
    beta = _checks.positive(beta, "beta", allow_zero=True)
    return _grpo_loss(log_probs, old_log_probs, reference_log_probs, advantages, mask, epsilon, beta)


@jax.jit
def _grpo_loss(log_probs, old_log_probs, reference_log_probs, advantages, mask, epsilon, beta):
    """The loss on checked inputs, one compiled program."""
    real = mask > 0  # padding is set to 0 in all three, so that whatever it holds cannot overflow
    log_probs = jnp.where(real, log_probs, 0.0)
    old_log_probs = jnp.where(real, old_log_probs, 0.0)
    reference_log_probs = jnp.where(real, reference_log_probs, 0.0)
    ratios = jnp.exp(log_probs - jax.lax.stop_gradient(old_log_probs))  # (G, L)
    a = jax.lax.stop_gradient(advantages)[:, None]  # (G, 1): one advantage for all of an answer's tokens
    surrogate = jnp.minimum(ratios * a, jnp.clip(ratios, 1 - epsilon, 1 + epsilon) * a)
    penalty = _kl_estimate(log_probs, jax.lax.stop_gradient(reference_log_probs))
    per_answer = jnp.sum((surrogate - beta * penalty) * mask, axis=1) / jnp.sum(mask, axis=1)  # (G,)
    return -jnp.mean(per_answer)
