r"""Proximal policy optimisation
============================

Proximal policy optimisation (PPO) reuses each batch of experience for several gradient steps and
keeps the new policy close to the one that collected it by clipping the probability ratio in its
objective: the default policy-gradient method, from robot control to the RLHF of language models,
here solving CartPole in one compiled training run.

Equation
--------

.. math::

   \begin{aligned}
   \rho_t &= \frac{\pi_\theta(a_t \mid s_t)}{\pi_{\theta_{\text{old}}}(a_t \mid s_t)}, \\
   \mathcal{L}^{\text{CLIP}}(\theta) &= -\frac{1}{T} \sum_{t=0}^{T-1}
   \min\!\big(\rho_t \hat{A}_t,\; \operatorname{clip}(\rho_t, 1 - \epsilon, 1 + \epsilon)\, \hat{A}_t\big), \\
   \mathcal{L}(\theta) &= \mathcal{L}^{\text{CLIP}}(\theta)
   + \frac{c_{\text{V}}}{T} \sum_{t=0}^{T-1} \big(V_\theta(s_t) - \hat{R}_t\big)^2
   - \frac{c_{\text{H}}}{T} \sum_{t=0}^{T-1} \mathcal{H}\big(\pi_\theta(\cdot \mid s_t)\big)
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
   * - :math:`V_\theta(s_t)`, :math:`\hat{R}_t`
     - the value head's estimate and its target, :math:`\hat{A}_t + V_{\theta_{\text{old}}}(s_t)`
     - ``values``, ``targets``
     - ``(T,)``
   * - :math:`\mathcal{H}`
     - entropy of the policy at a state
     - ``entropy`` (the mean)
     - scalar
   * - :math:`c_{\text{V}}`, :math:`c_{\text{H}}`
     - weights of the value loss (0.5) and of the entropy bonus (0.01)
     - ``value_weight``, ``entropy_weight``
     - scalar
   * - :math:`\mathcal{L}`
     - the loss that trains the actor-critic network
     - return value of ``_ppo_loss``
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

*Solving CartPole.* One network with a shared hidden layer of 64 tanh units has two heads, the
policy's logits and the value (``actor_critic``); the full loss :math:`\mathcal{L}` adds the value
head's squared error and an entropy bonus that keeps the policy exploring. ``train_cartpole`` runs
8 cart-poles of :doc:`environments` side by side under :func:`jax.vmap`, collects 64 steps of each,
computes advantages with ``gae`` of :doc:`actor_critic`, and takes 4 epochs of 4 minibatch Adam steps
on those 512 transitions; 200 such iterations (102 400 steps) are one :func:`jax.lax.scan`, compiled
once. The greedy policy then balances the pole for at least 450 of the 500 steps on average over 10
episodes (the test).

.. plot::

   import jax, numpy as np
   from cookbook.reinforcement.ppo import train_cartpole

   _, curve = train_cartpole(jax.random.key(0))
   curve = np.asarray(curve)
   steps = (np.arange(len(curve)) + 1) * 8 * 64
   fig, ax = plt.subplots(figsize=(6, 3))
   ax.plot(steps, curve, ".-", ms=3, lw=1)  # NaN (no episode ended) leaves a gap
   ax.axhline(500, color="0.6", ls="--", lw=1)
   ax.set(xlabel="environment steps", ylabel="return of the episodes ended",
          title="PPO on CartPole (8 environments, one compiled run)")
   fig.tight_layout()

Each point is the mean return of the episodes that ended in one iteration, under the sampling
policy; a gap is an iteration in which none ended, every cart-pole balancing throughout.

Inductive bias
--------------

PPO assumes that the advantage estimates stay roughly valid for policies whose ratios are within
:math:`1 \pm \epsilon` of the old one; it trades the step size of a single update for the safety
of reusing a batch many times. The clip acts per sample, not on the divergence of the whole policy,
so it bounds the incentive to move, not the move itself. The tests train a tabular PPO on the grid
world of :doc:`dynamic_programming` from sampled episodes, with four epochs on each batch, whose
greedy policy reaches the optimal value of the start state, and the network above on CartPole.

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

The CartPole network starts from a nearly uniform policy whose greedy action pushes the same way at
every step and drops the pole within ten steps (training it is the figure's run):

>>> from cookbook.reinforcement.ppo import init_actor_critic, actor_critic, evaluate_cartpole
>>> params = init_actor_critic(jax.random.key(0))
>>> logits, value = actor_critic(params, jnp.array([0.0, 0.0, 0.05, 0.0]))
>>> logits.shape, value.shape
((2,), ())
>>> evaluate_cartpole(params, jax.random.key(1)).max()
Array(10., dtype=float32)

Implementation notes
--------------------

The training follows the common recipe of :footcite:t:`andrychowicz2021what` and of
:footcite:t:`lu2022discovered`'s single-file JAX PPO: advantages normalised within each minibatch,
gradients clipped to a global norm of 0.5, a learning rate of :math:`3 \times 10^{-3}` decayed
linearly to zero, a small last layer for the policy so that the first policy is nearly uniform. Two
simplifications: the actor and the critic share their hidden layer, and the 500-step time limit is
treated as a terminal state (its value is not bootstrapped; :doc:`environments` says how to tell the
two apart). On a CPU, compiling the run costs far more than running its 102 400 environment steps
and 3 200 gradient steps, so all the randomness of the run is drawn before the loop, in three
calls (each random call inside it would cost compile time), and an action is sampled by comparing
one uniform number with the probability of pushing right.
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook._memo import cached
from cookbook.optimization.adam import adam
from cookbook.reinforcement.actor_critic import gae
from cookbook.reinforcement.environments import cartpole_reset, cartpole_step

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"clipped_surrogate_loss": (), "ppo_policy_loss": (), "actor_critic": ()}


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
    return _clipped_surrogate_loss_jit(ratios, advantages, epsilon)


# The public functions check their input in Python, then hand it as it comes to a compiled core, so
# that a repeated call with the same shapes (the examples', the tests', the jit and bad-input checks')
# reuses one program instead of compiling each small operation alone. The training loop calls the
# cores' Python functions, as it called the checked functions before (it traces them either way).
def _clipped_surrogate_loss(ratios, advantages, epsilon):
    clipped = jnp.clip(ratios, 1 - epsilon, 1 + epsilon)
    return -jnp.mean(jnp.minimum(ratios * advantages, clipped * advantages))


_clipped_surrogate_loss_jit = jax.jit(_clipped_surrogate_loss)  # epsilon traced: one program per shape


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
    _checks.same_shape(advantages, "advantages", (T,), expected_from="(T,) of ratios")
    if T == 0:
        raise ValueError("ratios must hold at least one step, got shape (0,)")
    epsilon = _checks.positive(epsilon, "epsilon")
    return _ppo_policy_loss_jit(logits, old_log_probs, actions, advantages, epsilon)


def _ppo_policy_loss(logits, old_log_probs, actions, advantages, epsilon):
    log_probs = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), actions[:, None], axis=1)[:, 0]  # (T,)
    ratios = jnp.exp(log_probs - old_log_probs)
    return _clipped_surrogate_loss(ratios, jax.lax.stop_gradient(advantages), epsilon)


_ppo_policy_loss_jit = jax.jit(_ppo_policy_loss)


# ---- Solving CartPole -----------------------------------------------------------------------------

OBSERVATION, ACTIONS = 4, 2  # CartPole's observation size and number of actions


def _key(key, name="key"):
    if isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ():
        return key
    raise TypeError(f"{name} must be a single PRNG key from jax.random.key, got {_checks._describe(key)}")


def _check_params(params):
    n_in, n_out = _checks.layers(params)
    if len(params) != 2 or n_in != OBSERVATION or n_out != ACTIONS + 1:
        raise ValueError(f"params must be the two layers of init_actor_critic, from {OBSERVATION} inputs to "
                         f"{ACTIONS} logits and a value, got {len(params)} layers from {n_in} to {n_out}")
    return params


def init_actor_critic(key, hidden=64):
    """A one-hidden-layer MLP for CartPole: ``[{"W" (4, H), "b" (H,)}, {"W" (H, 3), "b" (3,)}]``.

    LeCun-normal weights from one random draw; the policy's two output columns are scaled by 0.01, so
    that the first policy is nearly uniform.
    """
    hidden = _checks.size(hidden, "hidden")
    return _init_actor_critic(_key(key), hidden)


@functools.partial(jax.jit, static_argnums=1)
def _init_actor_critic(key, hidden):
    z = jax.random.normal(key, ((OBSERVATION + ACTIONS + 1) * hidden,))  # all the weights, one draw
    W1 = z[: OBSERVATION * hidden].reshape(OBSERVATION, hidden) / jnp.sqrt(OBSERVATION)
    head_scale = jnp.array([[0.01] * ACTIONS + [1.0]])  # (1, 3): small policy logits, a unit-scale value
    W2 = z[OBSERVATION * hidden :].reshape(hidden, ACTIONS + 1) / jnp.sqrt(hidden) * head_scale
    return [{"W": W1, "b": jnp.zeros(hidden)}, {"W": W2, "b": jnp.zeros(ACTIONS + 1)}]


def actor_critic(params, observation):
    """The policy's logits (2,) and the value (a scalar) of one CartPole ``observation`` (4,)."""
    _check_params(params)
    observation = _checks.same_shape(_checks.float_array(observation, "observation"), "observation",
                                     (OBSERVATION,), expected_from="one observation; vmap for a batch")
    return _actor_critic_jit(params, observation)


def _actor_critic(params, observation):
    h = jnp.tanh(observation @ params[0]["W"] + params[0]["b"])  # (H,), shared by the two heads
    out = h @ params[1]["W"] + params[1]["b"]  # (3,)
    return out[:ACTIONS], out[ACTIONS]


_actor_critic_jit = jax.jit(_actor_critic)


@cached  # the page's figure and the test share this run when the book is built (cookbook/_memo.py)
def train_cartpole(key, *, envs=8, steps=64, iterations=200, epochs=4, minibatches=4, hidden=64,
                   learning_rate=3e-3, gamma=0.99, lam=0.95, epsilon=0.2, value_weight=0.5,
                   entropy_weight=0.01, max_grad_norm=0.5):
    """PPO on ``envs`` CartPoles, ``steps`` steps each per iteration, the whole run one compiled scan.

    Each iteration collects ``envs * steps`` transitions, computes GAE advantages, and takes
    ``epochs`` passes of ``minibatches`` Adam steps on the clipped loss; the learning rate decays
    linearly to zero. Returns the final parameters and the mean return of the episodes that ended in
    each iteration, shape (iterations,) (NaN where none ended).
    """
    key = _key(key)
    sizes = {name: _checks.size(value, name) for name, value in
             dict(envs=envs, steps=steps, iterations=iterations, epochs=epochs, minibatches=minibatches,
                  hidden=hidden).items()}
    if (envs * steps) % minibatches:
        raise ValueError(f"minibatches must divide envs * steps = {envs * steps}, got {minibatches}")
    rates = {name: float(_checks.positive(value, name)) for name, value in
             dict(learning_rate=learning_rate, gamma=gamma, epsilon=epsilon, value_weight=value_weight,
                  max_grad_norm=max_grad_norm).items()}
    rates["entropy_weight"] = float(_checks.positive(entropy_weight, "entropy_weight", allow_zero=True))
    if not (0.0 <= lam <= 1.0 and gamma <= 1.0):
        raise ValueError(f"gamma must lie in (0, 1] and lam in [0, 1], got gamma={gamma} and lam={lam}")
    return _train(key, **sizes, **rates, lam=float(lam))


def _ppo_loss(params, observations, actions, old_log_probs, advantages, targets,
              epsilon, value_weight, entropy_weight):
    logits, values = jax.vmap(_actor_critic, in_axes=(None, 0))(params, observations)
    log_probs = jax.nn.log_softmax(logits)  # (B, A)
    entropy = -jnp.mean(jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1))
    return (_ppo_policy_loss(logits, old_log_probs, actions, advantages, epsilon)
            + value_weight * jnp.mean((values - targets) ** 2) - entropy_weight * entropy)


@functools.partial(jax.jit, static_argnames=("envs", "steps", "iterations", "epochs", "minibatches", "hidden",
                                             "learning_rate", "gamma", "lam", "epsilon", "value_weight",
                                             "entropy_weight", "max_grad_norm"))
def _train(key, *, envs, steps, iterations, epochs, minibatches, hidden, learning_rate, gamma, lam,
           epsilon, value_weight, entropy_weight, max_grad_norm):
    N = envs * steps
    k_init, k_reset, k_noise = jax.random.split(key, 3)
    params = _init_actor_critic(k_init, hidden)
    optimiser = adam(learning_rate)
    # All the run's randomness drawn up front, in three calls (each random call costs compile time):
    # a fresh start for every step that may end an episode, the noise that samples the actions, and
    # the noise whose ranks shuffle the minibatches.
    starts = jax.vmap(cartpole_reset)(jax.random.split(k_reset, (iterations + 1) * N))
    starts = jax.tree.map(lambda x: x.reshape((iterations + 1, steps, envs) + x.shape[1:]), starts)
    noise = jax.random.uniform(k_noise, (iterations, (1 + epochs) * N))
    batched = jax.vmap(_actor_critic, in_axes=(None, 0))

    def iteration(carry, inputs):
        params, opt_state, env_state, observation, running = carry
        (fresh_states, fresh_observations), noise, fraction = inputs

        def env_step(carry, inputs):
            env_state, observation, running = carry
            u, fresh_state, fresh_observation = inputs
            logits, value = batched(params, observation)
            action = (u < jax.nn.sigmoid(logits[:, 1] - logits[:, 0])).astype(jnp.int32)  # a sample of pi
            log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], axis=1)[:, 0]
            next_state, next_observation, reward, done = jax.vmap(cartpole_step)(env_state, action)
            next_state = jax.tree.map(lambda a, b: jnp.where(done, a, b), fresh_state, next_state)
            next_observation = jnp.where(done[:, None], fresh_observation, next_observation)
            running = running + reward
            record = (observation, action, log_prob, value, reward, done, jnp.where(done, running, 0.0))
            return (next_state, next_observation, jnp.where(done, 0.0, running)), record

        (env_state, observation, running), rollout = jax.lax.scan(
            env_step, (env_state, observation, running),
            (noise[:N].reshape(steps, envs), fresh_states, fresh_observations))
        observations, actions, log_probs, values, rewards, dones, finished = rollout  # (steps, envs, ...)
        values = jnp.concatenate([values, batched(params, observation)[1][None]])  # (steps + 1, envs)
        discounts = gamma * (1.0 - dones)  # an episode's end, failure or time limit, stops the bootstrap
        advantages = jax.vmap(gae, in_axes=(1, 1, 1, None), out_axes=1)(rewards, discounts, values, lam)
        data = (observations, actions, log_probs, advantages, advantages + values[:-1])
        data = jax.tree.map(lambda x: x.reshape((N,) + x.shape[2:]), data)

        def minibatch_step(carry, batch):
            params, opt_state = carry
            observations, actions, log_probs, advantages, targets = batch
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
            grads = jax.grad(_ppo_loss)(params, observations, actions, log_probs, advantages, targets,
                                        epsilon, value_weight, entropy_weight)
            norm = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads)))
            grads = jax.tree.map(lambda g: g * jnp.minimum(1.0, max_grad_norm / (norm + 1e-6)), grads)
            updates, opt_state = optimiser.update(grads, opt_state, params)
            params = jax.tree.map(lambda p, u: p + fraction * u, params, updates)  # linear decay
            return (params, opt_state), None

        def epoch(carry, u):
            order = jnp.argsort(u)  # a random permutation of the N transitions
            batches = jax.tree.map(lambda x: x[order].reshape((minibatches, -1) + x.shape[1:]), data)
            return jax.lax.scan(minibatch_step, carry, batches)[0], None

        (params, opt_state), _ = jax.lax.scan(epoch, (params, opt_state), noise[N:].reshape(epochs, N))
        ended = dones.sum()
        mean_return = jnp.where(ended > 0, finished.sum() / jnp.maximum(ended, 1), jnp.nan)
        return (params, opt_state, env_state, observation, running), mean_return

    env_state, observation = jax.tree.map(lambda x: x[0, 0], starts)
    fresh = jax.tree.map(lambda x: x[1:], starts)
    fractions = 1.0 - jnp.arange(iterations) / iterations
    carry = (params, optimiser.init(params), env_state, observation, jnp.zeros(envs))
    (params, *_), curve = jax.lax.scan(iteration, carry, (fresh, noise, fractions))
    return params, curve


def evaluate_cartpole(params, key, episodes=10):
    """The returns (episodes,) of the greedy policy (the most likely action) over whole episodes."""
    _check_params(params)
    return _evaluate(params, _key(key), _checks.size(episodes, "episodes"))


@functools.partial(jax.jit, static_argnums=2)
def _evaluate(params, key, episodes):
    def episode(state, observation):
        def step(carry, _):
            state, observation, alive, total = carry
            logits, _ = _actor_critic(params, observation)
            state, observation, reward, done = cartpole_step(state, jnp.argmax(logits))
            return (state, observation, alive & ~done, total + jnp.where(alive, reward, 0.0)), None

        start = (state, observation, jnp.array(True), jnp.zeros(()))
        return jax.lax.scan(step, start, length=500)[0][3]

    return jax.vmap(episode)(*jax.vmap(cartpole_reset)(jax.random.split(key, episodes)))
