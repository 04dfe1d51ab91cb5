r"""Soft actor-critic
=================

Soft actor-critic (SAC) learns a stochastic policy for continuous actions that maximises reward plus
the entropy of its own actions, off-policy from a replay memory, with twin critics and a temperature
that tunes itself to an entropy target: a standard, sample-efficient choice for robot control.

Equation
--------

.. math::

   \begin{aligned}
   J(\pi) &= \textstyle\sum_t \mathbb{E}\big[r(s_t, a_t)
     + \alpha\, \mathcal{H}\big(\pi(\cdot \mid s_t)\big)\big], \\
   a &= \tanh(u), \quad u = \mu_\phi(s) + \sigma_\phi(s) \odot \varepsilon,
     \quad \varepsilon \sim \mathcal{N}(0, I), \\
   \log \pi_\phi(a \mid s) &= \log \mathcal{N}\big(u;\, \mu_\phi(s), \sigma_\phi(s)^2\big)
     - \textstyle\sum_{i=1}^{D} \log\big(1 - \tanh^2 u_i\big), \\
   y &= r + \gamma \big(\min_{j=1,2} Q_{\bar\theta_j}(s', a')
     - \alpha \log \pi_\phi(a' \mid s')\big), \quad a' \sim \pi_\phi(\cdot \mid s'), \\
   \mathcal{L}_Q(\theta_j) &= \tfrac{1}{2}\, \mathbb{E}\big[\big(Q_{\theta_j}(s, a) - y\big)^2\big],
     \qquad \bar\theta_j \leftarrow (1 - \tau)\, \bar\theta_j + \tau\, \theta_j, \\
   \mathcal{L}_\pi(\phi) &= \mathbb{E}\big[\alpha \log \pi_\phi(a \mid s)
     - \min_{j} Q_{\theta_j}(s, a)\big], \\
   \mathcal{L}(\alpha) &= -\alpha\, \mathbb{E}\big[\log \pi_\phi(a \mid s) + \bar{\mathcal{H}}\big]
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`J`
     - the maximum-entropy objective, maximised by training
     - ``train_sac``
     - scalar
   * - :math:`s_t`, :math:`a_t`, :math:`t`
     - state (the pendulum's observation), action and time step
     - ``observation``, ``action``
     - ``(O,)``, ``(D,)``
   * - :math:`s'`, :math:`a'`
     - the next state, and a next action drawn from the current policy
     - ``next_observations``, ``next_actions``
     - ``(B, O)``, ``(B, D)``
   * - :math:`r`
     - reward of a transition
     - ``rewards``
     - ``(B,)``
   * - :math:`\gamma`
     - discount (0 where an episode ends; the pendulum's never do, they are cut at 200 steps)
     - ``discounts``
     - ``(B,)``
   * - :math:`\alpha`
     - temperature: the price of entropy in reward units, learned through :math:`\log \alpha`
     - ``alpha``, ``log_alpha``
     - scalar
   * - :math:`\mathcal{H}`
     - entropy of the policy at a state, estimated by :math:`-\log \pi_\phi(a \mid s)`
     - minus ``log_probs``
     - ``(B,)``
   * - :math:`\bar{\mathcal{H}}`
     - entropy target, :math:`-D` as in the paper
     - ``target_entropy``
     - scalar
   * - :math:`u`, :math:`\varepsilon`
     - the Gaussian sample before the squash, and the standard normal noise that makes it
     - ``pre_tanh``, ``noise``
     - ``(D,)``
   * - :math:`\mu_\phi`, :math:`\sigma_\phi`
     - the policy network's mean and standard deviation (it outputs :math:`\log \sigma`)
     - ``mean``, ``log_std``
     - ``(D,)``
   * - :math:`\pi_\phi`, :math:`\phi`
     - the tanh-Gaussian policy and its parameters
     - ``actor``, ``actor_params``
     - list of layers
   * - :math:`I`, :math:`D`, :math:`i`
     - identity matrix, number of action dimensions (1 for the pendulum), a dimension
     - ``action_size``
     - scalar
   * - :math:`Q_{\theta_j}`, :math:`\theta_j`, :math:`j`
     - the two critics (soft action values) and their parameters
     - ``critics``, ``critic_params``
     - ``(2,)``, stacked layers
   * - :math:`\bar\theta_j`
     - the target critics' parameters, a slow average of :math:`\theta_j`
     - ``target_params``
     - like ``critic_params``
   * - :math:`y`
     - soft Bellman target, held fixed in the critics' loss
     - return value of ``soft_q_targets``
     - ``(B,)``
   * - :math:`\tau`
     - Polyak averaging rate of the target critics (0.005 in the paper, 0.01 here)
     - ``tau``
     - scalar
   * - :math:`\mathcal{L}_Q`, :math:`\mathcal{L}_\pi`, :math:`\mathcal{L}`
     - losses of the critics, the actor and the temperature
     - ``critic_loss``, ``actor_loss``, ``temperature_loss``
     - scalar

Explanation
-----------

*Maximum entropy.* The objective :math:`J` pays :math:`\alpha` for each nat of randomness in the
policy, so the agent keeps trying every action that is nearly as good as the best, and stops only
where the reward gap outweighs the bonus. The optimal policy is then the Boltzmann distribution
:math:`\pi(a \mid s) \propto \exp(Q(s, a)/\alpha)` of the *soft* action values, and a state's soft
value is a soft maximum, :math:`V(s) = \mathbb{E}_{a \sim \pi}[Q(s, a) - \alpha \log \pi(a \mid s)]
= \alpha \log \sum_a \exp(Q(s, a)/\alpha)` :footcite:p:`haarnoja2017reinforcement`, which tends to
the hard maximum of :doc:`q_learning` as :math:`\alpha \to 0`. ``soft_value_iteration`` iterates
this backup on a known tabular model; the tests check that its fixed point satisfies the sampled form
that SAC uses, the target :math:`y` averaged over next states and actions.

*SAC* :footcite:p:`haarnoja2018soft` turns this into an off-policy actor-critic for continuous
actions. The critics regress on the soft target :math:`y`, with the next action drawn from the
current policy and its log-probability subtracted. The actor minimises the KL divergence to the
Boltzmann policy of the critics, which is :math:`\mathcal{L}_\pi`; sampling by reparameterisation
(:math:`u` a differentiable function of :math:`\phi` and fixed noise, as in
:footcite:t:`kingma2014auto`) lets the gradient flow through the action into the critic, with much
less variance than the log-derivative trick of :doc:`policy_gradient`.

*The tanh squash and its log-density.* Torques are bounded, so the Gaussian sample :math:`u` is
squashed by :math:`\tanh`. By the change of variables, the density of :math:`a` is that of :math:`u`
divided by :math:`|\det \partial a / \partial u| = \prod_i (1 - \tanh^2 u_i)`. Two numerical traps:
in float32 :math:`\tanh(u)` is exactly 1 for :math:`u \geq 10` (in JAX from :math:`u = 8`), so the code never inverts
the action (``tanh_gaussian_log_prob`` takes :math:`u`), and it writes
:math:`\log(1 - \tanh^2 u) = 2\,(\log 2 - u - \operatorname{softplus}(-2u))`, which stays finite
where :math:`1 - \tanh^2 u` underflows.

*Twin critics, target critics, temperature.* A maximum over noisy estimates is biased upwards
(:doc:`q_learning`), and an actor trained on a critic exploits its errors; taking the smaller of two
independently trained critics, as TD3 does :footcite:p:`fujimoto2018addressing`, is a cheap
pessimism that removes most of that bias. The targets use slow Polyak averages :math:`\bar\theta_j`
of the critics, with no gradient, so that the regression target does not move with every step. A
fixed :math:`\alpha` must be retuned for every task and reward scale; the second SAC paper
:footcite:p:`haarnoja2018applications` instead constrains the mean entropy to at least
:math:`\bar{\mathcal{H}}` and adjusts :math:`\alpha` by dual gradient descent on
:math:`\mathcal{L}(\alpha)`. Its gradient, :math:`\alpha\,(\mathcal{H} - \bar{\mathcal{H}})`, is
negative when the entropy is below target, so descent raises :math:`\alpha` and buys exploration
back; above target :math:`\alpha` decays. The code learns :math:`\log \alpha`, which keeps
:math:`\alpha` positive.

.. admonition:: Intuition

   A diner who always orders the dish they rate best never learns that the kitchen has improved;
   one who orders at random eats badly. SAC's diner orders each dish with a probability that grows
   exponentially with its rating, and keeps a set amount of surprise per meal: when their orders
   become too predictable, the bonus for variety (:math:`\alpha`) goes up; when they dither more
   than they need to, it comes down.

.. plot::

   import jax, matplotlib.pyplot as plt, numpy as np
   from cookbook.reinforcement.soft_actor_critic import evaluate, train_sac

   actor_params, returns = train_sac(jax.random.key(0), 3000)  # trained once, shared with the test
   greedy = evaluate(actor_params, jax.random.key(1), 50)
   steps = 800 * (np.arange(len(returns)) // 4 + 1)  # four pendulums finish an episode every 200 iterations
   fig, ax = plt.subplots(figsize=(6, 3.2))
   ax.plot(steps, returns, "o", ms=3, alpha=0.6, label="training episodes (sampled actions)")
   ax.plot(steps[::4], returns.reshape(-1, 4).mean(axis=1), "-", color="C0")
   ax.axhline(float(greedy.mean()), color="C2", ls="--", label="after training: mean of 50 episodes (mean action)")
   ax.axvspan(0, 2000, color="0.9", label="uniform random actions")
   ax.set(xlabel="environment steps (all four pendulums)", ylabel="return of the episode", ylim=(-1900, 250),
          title="SAC on the pendulum swing-up")
   ax.legend(fontsize=7, loc="lower right")
   fig.tight_layout()

*In code.* The policy functions are written for one example and batched with :func:`jax.vmap`;
``soft_q_targets`` and the losses take batches. ``train_sac`` sums the three losses, each holding the
others' parameters fixed with ``stop_gradient``, so that one gradient of the sum gives each part its
own gradient (the actor then sees the critics before their step, the paper's algorithm after it).
*Bad input.* Shapes, dtypes and static arguments are checked always.

Inductive bias
--------------

SAC assumes that a good action is found by trying actions near the current one: its policy is one
Gaussian per state, squashed, so it cannot represent two distinct good actions at once, and the
entropy bonus assumes that randomness near the mean is useful exploration. Off-policy replay assumes
the Markov property and dynamics that do not change, so that old transitions still teach; the
minimum of two critics trades a slight underestimate for stability. The test trains on the
pendulum swing-up of :doc:`environments` for 3000 iterations, each stepping four pendulums (12000
steps, 60 episodes, a few seconds): over 50 episodes from random starts the trained policy's median
return is above -200 and its mean above -500, against a mean below -1000 for the untrained policy.

Example
-------

The log-density of a squashed sample, a sample, soft targets, and the temperature's gradient:

>>> import jax, jax.numpy as jnp
>>> from cookbook.reinforcement.soft_actor_critic import (
...     tanh_gaussian_log_prob, sample_tanh_gaussian, soft_q_targets, temperature_loss)
>>> mean, log_std = jnp.array([0.0, 1.0]), jnp.array([0.0, -1.0])
>>> round(float(tanh_gaussian_log_prob(mean, log_std, jnp.array([0.0, 1.0]))), 4)
0.0297
>>> action, log_prob = sample_tanh_gaussian(jax.random.key(0), mean, log_std)
>>> action.shape, bool(jnp.all(jnp.abs(action) < 1))
((2,), True)
>>> rewards, discounts = jnp.array([1.0, 2.0]), jnp.array([0.9, 0.0])
>>> next_q = jnp.array([[3.0, 5.0], [4.0, 1.0]])  # two critics' values of the next action
>>> soft_q_targets(rewards, discounts, next_q, jnp.array([-1.0, 0.5]), 0.1)  # 1 + 0.9 * (3 + 0.1)
Array([3.79, 2.  ], dtype=float32)
>>> log_alpha, log_probs = jnp.zeros(()), jnp.array([1.5, 2.5])  # entropy about -2, below the target -1
>>> temperature_loss(log_alpha, log_probs, -1.0)  # -alpha * (2 - 1)
Array(-1., dtype=float32)
>>> jax.grad(temperature_loss)(log_alpha, log_probs, -1.0)  # negative: gradient descent raises alpha
Array(-1., dtype=float32)

Soft value iteration on a one-state problem with two actions (rewards 1 and 2, discount 0.5,
:math:`\alpha = 1`): the soft value is :math:`V = 2 \log(e + e^2) = 4.6265`, and
:math:`Q = r + 0.5\, V`:

>>> from cookbook.reinforcement.soft_actor_critic import polyak_update, soft_value_iteration
>>> soft_value_iteration(jnp.ones((1, 2, 1)), jnp.array([[1.0, 2.0]]), 0.5, 1.0, 60).round(4)
Array([[3.3133, 4.3133]], dtype=float32)
>>> polyak_update({"w": jnp.zeros(3)}, {"w": jnp.ones(3)}, 0.25)
{'w': Array([0.25, 0.25, 0.25], dtype=float32)}

Implementation notes
--------------------

The paper's networks have two hidden layers of 256 units, batches of 256, a learning rate of
:math:`3 \cdot 10^{-4}` and :math:`\tau = 0.005`, for millions of steps on MuJoCo tasks. The pendulum
needs far less: two hidden layers of 64, batches of 128, a learning rate of :math:`3 \cdot 10^{-3}`
and :math:`\tau = 0.01` solve it in 3000 iterations. Each iteration steps four pendulums, for little
more than the cost of one, since the gradient step dominates; with one pendulum per iteration, more
of the runs tried ended with a policy that never swings up from some starts. SAC on the pendulum is
not always that lucky: of 16 runs of this configuration (seeds and compiler settings), 15 reached a
mean return above -200; in the other about a third of the starts were never swung up, which is why
the test bounds the median tightly and the mean loosely. For speed on a CPU the training loop keeps the actor,
the critics and :math:`\log \alpha` in one flat vector (one gradient, one Adam, one Polyak average of
which only the critics' part is read) and draws all its random numbers before the loop. The first
SAC paper also learned a separate state-value network and used a fixed :math:`\alpha`; the second
dropped the value network and learns :math:`\alpha`, as here. Libraries: ``distrax.Transformed``
with ``distrax.Block(distrax.Tanh(), 1)`` gives the same log-density from the action (and NaN where
the action rounds to 1, which the tests show); ``rlax.squashed_gaussian`` is another squashed Gaussian
(its squash and scale differ); Stable-Baselines3's ``SAC`` is a widely used PyTorch implementation.
"""

import functools
import numbers
from typing import NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from cookbook import _checks
from cookbook._memo import cached
from cookbook.optimization.adam import adam
from cookbook.reinforcement.environments import MAX_TORQUE, PENDULUM_STEPS, pendulum_reset, pendulum_step

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"tanh_gaussian_log_prob": (), "sample_tanh_gaussian": (), "soft_q_targets": (), "temperature_loss": (),
       "polyak_update": (), "soft_value_iteration": ("num_iterations",)}
#: The batch of log-probabilities that the temperature's loss averages may take any size B.
FREE_LENGTH = {"temperature_loss": ("log_probs",)}

#: Bounds of the policy's log standard deviation (a clip, as in most implementations).
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


# ---- The tanh-squashed Gaussian policy -------------------------------------------------------------

def _gaussian(mean, log_std, name_mean="mean", name_log_std="log_std"):
    mean = _checks.float_array(mean, name_mean, ndim=1, what=" (D,)")
    log_std = _checks.float_array(log_std, name_log_std, ndim=1, what=" (D,)")
    _checks.same_shape(log_std, name_log_std, mean.shape, expected_from=f"(D,) of {name_mean}")
    return mean, log_std


def _log_prob(mean, log_std, u):
    """log pi(tanh(u)) of one pre-squash sample u (D,): the Gaussian's log-density minus the log of
    the Jacobian of tanh, log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), written so that it stays
    finite when tanh(u) rounds to +-1."""
    z = (u - mean) * jnp.exp(-log_std)
    gaussian = -0.5 * z**2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi)  # (D,)
    log_jacobian = 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))  # (D,)
    return jnp.sum(gaussian - log_jacobian)


def tanh_gaussian_log_prob(mean, log_std, pre_tanh):
    """Log-density of the action ``tanh(pre_tanh)`` (D,) under the policy ``tanh(N(mean, exp(log_std)^2))``.

    The argument is the sample before the squash, ``u``: inverting ``tanh`` of an action that rounds
    to +-1 would give infinity. One example; batch with :func:`jax.vmap`.
    """
    mean, log_std = _gaussian(mean, log_std)
    pre_tanh = _checks.same_shape(_checks.float_array(pre_tanh, "pre_tanh", ndim=1, what=" (D,)"),
                                  "pre_tanh", mean.shape, expected_from="(D,) of mean")
    return _log_prob_jit(mean, log_std, pre_tanh)


# The public functions check their input, then run a compiled core like this one on the inputs as they
# came: a call with the same shapes (the tests', the jit and bad-input checks') reuses one program
# instead of dispatching a dozen small operations one by one. The training loop calls the plain
# functions (_log_prob, _squash, _soft_targets, ...), traced in its own program.
_log_prob_jit = jax.jit(_log_prob)


def _squash(mean, log_std, noise):
    u = mean + jnp.exp(log_std) * noise  # reparameterised: a differentiable function of mean and log_std
    return jnp.tanh(u), _log_prob(mean, log_std, u)


def sample_tanh_gaussian(key, mean, log_std):
    """An action ``a = tanh(mean + exp(log_std) * eps)`` (D,) with ``eps ~ N(0, I)``, and its log-density.

    Reparameterised: gradients flow from ``a`` and the log-density into ``mean`` and ``log_std``.
    """
    mean, log_std = _gaussian(mean, log_std)
    return _sample(key, mean, log_std)


@jax.jit
def _sample(key, mean, log_std):
    return _squash(mean, log_std, jax.random.normal(key, mean.shape, mean.dtype))


# ---- Networks: the actor and the twin critics ----------------------------------------------------------

def _dense_init(key, sizes, scale_last=1.0):
    """Weights of an MLP with layer widths ``sizes``, drawn in one random call (1/sqrt(fan-in) scale)."""
    total = sum(m * n for m, n in zip(sizes[:-1], sizes[1:]))
    z = jax.random.normal(key, (total,))
    params, start = [], 0
    for l, (m, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        scale = (scale_last if l == len(sizes) - 2 else 1.0) / np.sqrt(m)
        params.append({"W": z[start:start + m * n].reshape(m, n) * scale, "b": jnp.zeros(n)})
        start += m * n
    return params


def _mlp(params, x):
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["W"] + layer["b"])
    return x @ params[-1]["W"] + params[-1]["b"]


def init_actor(key, observation_size, action_size, hidden_size):
    """An actor: a two-hidden-layer MLP from an observation (O,) to a mean and a log std (D,) each."""
    O = _checks.size(observation_size, "observation_size")
    D = _checks.size(action_size, "action_size")
    H = _checks.size(hidden_size, "hidden_size")
    return _dense_init(key, (O, H, H, 2 * D), scale_last=0.01)


def actor(params, observation):
    """The policy's ``(mean, log_std)`` (D,) each at one ``observation`` (O,); log_std clipped to
    [LOG_STD_MIN, LOG_STD_MAX]."""
    O, twice_D = _checks.layers(params, "params")
    observation = _checks.same_shape(_checks.float_array(observation, "observation", ndim=1, what=" (O,)"),
                                     "observation", (O,), expected_from="(O,) of params[0]['W']")
    return _actor(params, observation)


def _actor(params, observation):
    mean, log_std = jnp.split(_mlp(params, observation), 2)
    return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


def init_critics(key, observation_size, action_size, hidden_size):
    """Twin critics: two MLPs from an observation and an action (O + D,) to a value, stacked on a
    leading axis of size 2 (``W`` (2, in, out), ``b`` (2, out))."""
    O = _checks.size(observation_size, "observation_size")
    D = _checks.size(action_size, "action_size")
    H = _checks.size(hidden_size, "hidden_size")
    k1, k2 = jax.random.split(key)
    twins = [_dense_init(k, (O + D, H, H, 1)) for k in (k1, k2)]
    return jax.tree.map(lambda a, b: jnp.stack([a, b]), *twins)


def _critics(params, observation, action):
    x = jnp.concatenate([observation, action])
    return jax.vmap(_mlp, in_axes=(0, None))(params, x)[:, 0]  # (2,)


def critics(params, observation, action):
    """The twin critics' values Q1, Q2 (2,) of one ``observation`` (O,) and ``action`` (D,)."""
    if not isinstance(params, (list, tuple)) or not params:
        raise TypeError(f"params must be a non-empty list of {{'W', 'b'}} layers, got {type(params).__name__}")
    first = _checks.float_array(params[0]["W"], "params[0]['W']", ndim=3, what=" (2, O + D, H)")
    observation = _checks.float_array(observation, "observation", ndim=1, what=" (O,)")
    action = _checks.float_array(action, "action", ndim=1, what=" (D,)")
    if first.shape[0] != 2 or first.shape[1] != observation.shape[0] + action.shape[0]:
        raise ValueError(f"params[0]['W'] must have shape (2, O + D, H) with O + D = "
                         f"{observation.shape[0] + action.shape[0]}, got {tuple(first.shape)}")
    return _critics(params, observation, action)


# ---- The soft Bellman backup and the losses ---------------------------------------------------------

def _real(value, name, low, high, *, closed_low=True, closed_high=True):
    """A real hyperparameter (a Python number, or a scalar array as under :func:`jax.jit`) in the
    interval from ``low`` to ``high``; checked when concrete."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, jax.Array, np.ndarray)):
        raise TypeError(f"{name} must be a real number, got {_checks._describe(value)}")
    if isinstance(value, (jax.Array, np.ndarray)):
        _checks.float_array(value, name, ndim=0, what=" (a scalar)")
        if not _checks.is_concrete(value):
            return value
    v = float(value)
    if not ((low <= v if closed_low else low < v) and (v <= high if closed_high else v < high)):
        interval = f"{'[' if closed_low else '('}{low}, {high}{']' if closed_high else ')'}"
        raise ValueError(f"{name} must lie in {interval}, got {v}")
    return value


def _alpha(alpha):
    if isinstance(alpha, (jax.Array, np.ndarray)):
        alpha = _checks.float_array(alpha, "alpha", ndim=0, what=" (a scalar)")
        if _checks.is_concrete(alpha) and not bool(alpha > 0):
            raise ValueError(f"alpha must be positive, got {float(alpha)}")
        return alpha
    return _checks.positive(alpha, "alpha")


def soft_q_targets(rewards, discounts, next_q, next_log_probs, alpha):
    """Soft Bellman targets ``r + discount * (min(Q1', Q2') - alpha * log pi(a' | s'))`` (B,).

    ``rewards``, ``discounts`` and ``next_log_probs`` have shape (B,), ``next_q`` (B, 2) the target
    critics' values of a next action ``a'`` drawn from the current policy. No gradient is stopped here.
    """
    rewards = _checks.float_array(rewards, "rewards", ndim=1, what=" (B,)")
    B = rewards.shape[0]
    discounts = _checks.same_shape(_checks.float_array(discounts, "discounts", ndim=1, what=" (B,)"),
                                   "discounts", (B,), expected_from="(B,) of rewards")
    next_q = _checks.same_shape(_checks.float_array(next_q, "next_q", ndim=2, what=" (B, 2)"),
                                "next_q", (B, 2), expected_from="B of rewards, and two critics")
    next_log_probs = _checks.same_shape(_checks.float_array(next_log_probs, "next_log_probs", ndim=1, what=" (B,)"),
                                        "next_log_probs", (B,), expected_from="(B,) of rewards")
    return _soft_targets_jit(rewards, discounts, next_q, next_log_probs, _alpha(alpha))


def _soft_targets(rewards, discounts, next_q, next_log_probs, alpha):
    return rewards + discounts * (jnp.min(next_q, axis=1) - alpha * next_log_probs)


_soft_targets_jit = jax.jit(_soft_targets)  # alpha traced: a number or an array, one program for both


class Batch(NamedTuple):
    """A batch of B transitions from the replay memory."""

    observations: jax.Array  # (B, O)
    actions: jax.Array  # (B, D), in (-1, 1)
    rewards: jax.Array  # (B,)
    discounts: jax.Array  # (B,)
    next_observations: jax.Array  # (B, O)


def _check_batch(batch, noise):
    if not isinstance(batch, Batch):
        raise TypeError(f"batch must be a Batch of transitions, got {type(batch).__name__}")
    B = _checks.float_array(batch.rewards, "batch.rewards", ndim=1, what=" (B,)").shape[0]
    for name in ("observations", "actions", "next_observations"):
        x = _checks.float_array(getattr(batch, name), f"batch.{name}", ndim=2, what=" (B, ...)")
        if x.shape[0] != B:
            raise ValueError(f"batch.{name} must have B = {B} rows as batch.rewards, got shape {tuple(x.shape)}")
    _checks.same_shape(_checks.float_array(batch.discounts, "batch.discounts", ndim=1), "batch.discounts", (B,))
    _checks.same_shape(_checks.float_array(noise, "noise", ndim=2, what=" (B, D)"), "noise", batch.actions.shape,
                       expected_from="(B, D) of batch.actions")


def _check_networks(actor_params, critic_params, observation_size, names=("actor_params", "critic_params")):
    """The action size D of checked actor and critic parameters for observations of ``observation_size``."""
    O, twice_D = _checks.layers(actor_params, names[0])
    if O != observation_size or twice_D % 2:
        raise ValueError(f"{names[0]} must map observations of size {observation_size} to 2 D outputs, "
                         f"got sizes {O} -> {twice_D}")
    D = twice_D // 2
    if not isinstance(critic_params, (list, tuple)) or not critic_params:
        raise TypeError(f"{names[1]} must be a non-empty list of stacked {{'W', 'b'}} layers")
    first = _checks.float_array(critic_params[0]["W"], f"{names[1]}[0]['W']", ndim=3, what=" (2, O + D, H)")
    if first.shape[:2] != (2, observation_size + D):
        raise ValueError(f"{names[1]}[0]['W'] must have shape (2, O + D, H) with O + D = {observation_size + D}, "
                         f"got {tuple(first.shape)}")
    return D


def _check_batch(batch, noise):
    if not isinstance(batch, Batch):
        raise TypeError(f"batch must be a Batch of transitions, got {type(batch).__name__}")
    rewards = _checks.float_array(batch.rewards, "batch.rewards", ndim=1, what=" (B,)")
    B = rewards.shape[0]
    observations = _checks.float_array(batch.observations, "batch.observations", ndim=2, what=" (B, O)")
    actions = _checks.float_array(batch.actions, "batch.actions", ndim=2, what=" (B, D)")
    _checks.same_shape(_checks.float_array(batch.next_observations, "batch.next_observations", ndim=2),
                       "batch.next_observations", observations.shape, expected_from="of batch.observations")
    _checks.same_shape(observations, "batch.observations", (B, observations.shape[1]), expected_from="B of batch.rewards")
    _checks.same_shape(actions, "batch.actions", (B, actions.shape[1]), expected_from="B of batch.rewards")
    _checks.same_shape(_checks.float_array(batch.discounts, "batch.discounts", ndim=1), "batch.discounts", (B,))
    _checks.same_shape(_checks.float_array(noise, "noise", ndim=2, what=" (B, D)"), "noise", actions.shape,
                       expected_from="(B, D) of batch.actions")
    return observations.shape[1]


def critic_loss(critic_params, target_params, actor_params, batch, alpha, noise):
    """Twin critics' loss: the sum over the two of half their mean squared error to the soft targets.

    ``batch`` is a :class:`Batch` of B transitions. The targets are computed with the target critics
    ``target_params`` and a next action drawn from the actor with the standard normal ``noise``
    (B, D), and held fixed (no gradient reaches ``target_params`` or ``actor_params``).
    """
    O = _check_batch(batch, noise)
    _check_networks(actor_params, critic_params, O)
    _checks.same_tree(target_params, "target_params", critic_params, "critic_params")
    return _critic_loss(critic_params, target_params, actor_params, batch, _alpha(alpha), noise)


def _critic_loss(critic_params, target_params, actor_params, batch, alpha, noise):
    next_actions, next_log_probs = jax.vmap(_squash)(*jax.vmap(_actor, (None, 0))(actor_params, batch.next_observations),
                                                     noise)
    next_q = jax.vmap(_critics, (None, 0, 0))(target_params, batch.next_observations, next_actions)  # (B, 2)
    targets = jax.lax.stop_gradient(_soft_targets(batch.rewards, batch.discounts, next_q, next_log_probs, alpha))
    q = jax.vmap(_critics, (None, 0, 0))(critic_params, batch.observations, batch.actions)  # (B, 2)
    return 0.5 * jnp.mean(jnp.sum((q - targets[:, None]) ** 2, axis=1))


def actor_loss(actor_params, critic_params, observations, alpha, noise):
    """The policy's loss ``mean(alpha * log pi(a | s) - min(Q1, Q2)(s, a))`` over ``observations`` (B, O),
    with ``a`` drawn by reparameterisation from the standard normal ``noise`` (B, D); returns the loss
    and the log-probabilities (B,)."""
    observations = _checks.float_array(observations, "observations", ndim=2, what=" (B, O)")
    D = _check_networks(actor_params, critic_params, observations.shape[1])
    noise = _checks.same_shape(_checks.float_array(noise, "noise", ndim=2, what=" (B, D)"), "noise",
                               (observations.shape[0], D), expected_from="B of observations, D of actor_params")
    return _actor_loss(actor_params, critic_params, observations, _alpha(alpha), noise)


def _actor_loss(actor_params, critic_params, observations, alpha, noise):
    actions, log_probs = jax.vmap(_squash)(*jax.vmap(_actor, (None, 0))(actor_params, observations), noise)
    q = jax.vmap(_critics, (None, 0, 0))(critic_params, observations, actions)  # (B, 2)
    return jnp.mean(alpha * log_probs - jnp.min(q, axis=1)), log_probs


def temperature_loss(log_alpha, log_probs, target_entropy):
    """The temperature's loss ``-alpha * mean(log pi + target_entropy)`` with ``alpha = exp(log_alpha)``.

    Its gradient ``alpha * (entropy - target_entropy)``, the entropy estimated as ``-mean(log_probs)``,
    is negative when the policy's entropy is below the target, so gradient descent raises alpha.
    The log-probabilities (B,) are held fixed.
    """
    log_alpha = _checks.float_array(log_alpha, "log_alpha", ndim=0, what=" (a scalar)")
    log_probs = _checks.float_array(log_probs, "log_probs", ndim=1, what=" (B,)")
    _real(target_entropy, "target_entropy", -np.inf, np.inf)
    return _temperature_loss_jit(log_alpha, log_probs, target_entropy)


def _temperature_loss(log_alpha, log_probs, target_entropy):
    return -jnp.exp(log_alpha) * jnp.mean(jax.lax.stop_gradient(log_probs) + target_entropy)


_temperature_loss_jit = jax.jit(_temperature_loss)


def polyak_update(target_params, params, tau):
    """Target parameters moved a fraction ``tau`` in (0, 1] of the way to ``params``: Polyak averaging."""
    _checks.same_tree(target_params, "target_params", params, "params")
    _checks.same_tree(params, "params", params, "params")
    _real(tau, "tau", 0.0, 1.0, closed_low=False)
    return _polyak(target_params, params, tau)


@jax.jit
def _polyak(target_params, params, tau):
    return jax.tree.map(lambda t, p: (1.0 - tau) * t + tau * p, target_params, params)


# ---- Soft value iteration on a known tabular MDP ------------------------------------------------------

def soft_value_iteration(transitions, rewards, discount, alpha, num_iterations):
    """Soft action values Q (S, A) of the MDP ``transitions`` (S, A, S), ``rewards`` (S, A), by
    ``num_iterations`` soft Bellman backups ``Q <- r + discount * P V`` with
    ``V(s) = alpha * logsumexp(Q(s, .) / alpha)``, from Q = 0."""
    transitions = _checks.float_array(transitions, "transitions", ndim=3, what=" (S, A, S)")
    S, A, S_next = transitions.shape
    if S_next != S:
        raise ValueError(f"transitions must have shape (S, A, S), got shape {tuple(transitions.shape)}")
    rewards = _checks.same_shape(_checks.float_array(rewards, "rewards", ndim=2, what=" (S, A)"),
                                 "rewards", (S, A), expected_from="(S, A) of transitions")
    _real(discount, "discount", 0.0, 1.0, closed_high=False)
    alpha = _alpha(alpha)
    num_iterations = _checks.size(num_iterations, "num_iterations")
    return _soft_value_iteration(transitions, rewards, discount, alpha, num_iterations)


@functools.partial(jax.jit, static_argnames=("num_iterations",))
def _soft_value_iteration(transitions, rewards, discount, alpha, num_iterations):
    def backup(q, _):
        v = alpha * jax.nn.logsumexp(q / alpha, axis=1)  # (S,): the soft maximum
        return rewards + discount * transitions @ v, None

    return jax.lax.scan(backup, jnp.zeros_like(rewards), length=num_iterations)[0]


# ---- Training on the pendulum -------------------------------------------------------------------

class Config(NamedTuple):
    hidden_size: int
    batch_size: int
    learning_rate: float
    discount: float
    tau: float
    random_steps: int
    num_envs: int


@cached  # the page's figure and the learning test share this run when the book is built (cookbook/_memo.py)
def train_sac(key, num_steps, *, hidden_size=64, batch_size=128, learning_rate=3e-3, discount=0.99, tau=0.01,
              random_steps=500, num_envs=4):
    """SAC on the pendulum swing-up: ``(actor_params, episode_returns)``.

    Each of ``num_steps`` iterations steps ``num_envs`` pendulums at once and takes one gradient step
    on the critics, the actor and the temperature together, on a batch drawn uniformly from a replay
    memory that keeps every transition; the actions of the first ``random_steps`` iterations are
    uniform. ``episode_returns`` holds the return of each finished training episode (sampled
    actions), in the order they finished.
    """
    num_steps = _checks.size(num_steps, "num_steps")
    for value, name in ((hidden_size, "hidden_size"), (batch_size, "batch_size"), (num_envs, "num_envs")):
        _checks.size(value, name)
    _checks.size(random_steps, "random_steps", minimum=0)
    _checks.positive(learning_rate, "learning_rate")
    _real(discount, "discount", 0.0, 1.0, closed_high=False)
    _real(tau, "tau", 0.0, 1.0, closed_low=False)
    config = Config(hidden_size, batch_size, float(learning_rate), float(discount), float(tau), random_steps, num_envs)
    actor_params, returns, done = _train(key, num_steps, config)
    return actor_params, returns[np.asarray(done)]


def _sac_losses(params, target_params, batch, noise, unravel, target_entropy):
    """The critics', the actor's and the temperature's losses in one sum whose gradient is, in each
    part of ``params``, that part's own gradient: every term holds the other parts fixed."""
    actor_params, critic_params, log_alpha = unravel(params)
    fixed = jax.lax.stop_gradient
    alpha = jnp.exp(fixed(log_alpha))
    q_loss = _critic_loss(critic_params, unravel(target_params)[1], fixed(actor_params), batch, alpha, noise[0])
    pi_loss, log_probs = _actor_loss(actor_params, fixed(critic_params), batch.observations, alpha, noise[1])
    return q_loss + pi_loss + _temperature_loss(log_alpha, log_probs, target_entropy)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _train(key, num_steps, config):
    O, D = 3, 1
    k_actor, k_critic, k_env, k_run = jax.random.split(key, 4)
    params = (init_actor(k_actor, O, D, config.hidden_size), init_critics(k_critic, O, D, config.hidden_size),
              jnp.zeros(()))
    # One flat vector holds the actor, the critics and log alpha: one gradient, one Adam and one Polyak
    # average (of which only the critics' part is read) instead of one per array, a smaller program.
    params, unravel = jax.flatten_util.ravel_pytree(params)
    optimiser = adam(config.learning_rate)
    E, N, B = config.num_envs, num_steps, config.batch_size
    env_state, observation = jax.vmap(pendulum_reset)(jax.random.split(k_env, E))
    memory = jnp.zeros((N * E, 2 * O + D + 1))  # each row: observation, action, reward, next observation
    target_entropy = -float(D)
    grad = jax.grad(_sac_losses)

    def step(carry, inputs):
        params, target_params, opt_state, memory, env_state, observation, ret = carry
        t, reset_key, normal, uniform = inputs
        # act in the E environments and remember the E transitions
        mean, log_std = jax.vmap(_actor, (None, 0))(unravel(params)[0], observation)
        action, _ = jax.vmap(_squash)(mean, log_std, normal[:E * D].reshape(E, D))
        action = jnp.where(t < config.random_steps, 2.0 * uniform[:E * D].reshape(E, D) - 1.0, action)
        env_state, next_observation, reward, done = jax.vmap(pendulum_step)(env_state, MAX_TORQUE * action)
        rows = jnp.concatenate([observation, action, reward[:, None], next_observation], axis=1)  # (E, 2 O + D + 1)
        memory = jax.lax.dynamic_update_slice(memory, rows, (t * E, 0))
        ret = ret + reward
        reset_state, reset_observation = jax.vmap(pendulum_reset)(jax.random.split(reset_key, E))
        env_state = jax.tree.map(lambda a, b: jnp.where(done, a, b), reset_state, env_state)
        observation = jnp.where(done[:, None], reset_observation, next_observation)
        # learn from a batch drawn uniformly from the (t + 1) E remembered transitions
        rows = memory[jnp.minimum((uniform[E * D:] * ((t + 1) * E)).astype(jnp.int32), (t + 1) * E - 1)]  # (B, ...)
        batch = Batch(rows[:, :O], rows[:, O:O + D], rows[:, O + D], jnp.full(B, config.discount), rows[:, O + D + 1:])
        grads = grad(params, target_params, batch, normal[E * D:].reshape(2, B, D), unravel, target_entropy)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        params = params + updates
        target_params = (1.0 - config.tau) * target_params + config.tau * params  # Polyak averaging
        carry = (params, target_params, opt_state, memory, env_state, observation, jnp.where(done, 0.0, ret))
        return carry, (ret, done)

    # All the randomness drawn at once, before the loop, in one normal and one uniform draw: a smaller
    # compiled program (each draw compiles to a hash and, for the normal, an inverse error function).
    k_normal, k_uniform, k_reset = jax.random.split(k_run, 3)
    normal = jax.random.normal(k_normal, (N, (E + 2 * B) * D))
    uniform = jax.random.uniform(k_uniform, (N, E * D + B))
    carry = (params, params, optimiser.init(params), memory, env_state, observation, jnp.zeros(E))
    carry, (returns, done) = jax.lax.scan(step, carry, (jnp.arange(N), jax.random.split(k_reset, N), normal, uniform))
    return unravel(carry[0])[0], returns, done  # returns and done (N, E)


def evaluate(actor_params, key, num_episodes, num_steps=PENDULUM_STEPS):
    """Returns (num_episodes,) of the policy's mean action ``MAX_TORQUE * tanh(mean)`` on the pendulum,
    over episodes of ``num_steps`` steps from random starts."""
    _checks.layers(actor_params, "actor_params")
    num_episodes = _checks.size(num_episodes, "num_episodes")
    num_steps = _checks.size(num_steps, "num_steps")
    return _evaluate(actor_params, key, num_episodes, num_steps)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _evaluate(actor_params, key, num_episodes, num_steps):
    def episode(key):
        def step(carry, _):
            state, observation = carry
            mean, _ = _actor(actor_params, observation)
            state, observation, reward, _ = pendulum_step(state, MAX_TORQUE * jnp.tanh(mean))
            return (state, observation), reward

        return jax.lax.scan(step, pendulum_reset(key), length=num_steps)[1].sum()

    return jax.vmap(episode)(jax.random.split(key, num_episodes))
