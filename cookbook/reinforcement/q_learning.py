r"""Q-learning and the deep Q-network
=================================

Q-learning learns the optimal action values from sampled transitions alone, by moving each estimate
towards the reward plus the discounted best value of the next state; the deep Q-network (DQN) does
the same with a neural network, made stable by a replay memory and a slowly updated target network,
and Double DQN removes the upward bias of the maximum.

Equation
--------

.. math::

   \begin{aligned}
   y &= r + \gamma \max_{a'} Q_{\theta^-}(s', a'), \qquad
   y^{\text{double}} = r + \gamma\, Q_{\theta^-}\big(s', \arg\max_{a'} Q_\theta(s', a')\big), \\
   Q(s, a) &\leftarrow Q(s, a) + \alpha\,\big(y - Q(s, a)\big)
   \quad \text{(tabular, with } \theta^- = \theta\text{)}, \\
   \mathcal{L}(\theta) &= \frac{1}{2B} \sum_{b=1}^{B} \big(y_b - Q_\theta(s_b, a_b)\big)^2
   \quad \text{(DQN, } y_b \text{ held fixed)}
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`s`, :math:`a`, :math:`s'`, :math:`a'`
     - a state, the action taken there, the next state and an action in it
     - ``states``, ``actions``, ``next_states``
     - ``(B,)``
   * - :math:`r`
     - the reward of the transition
     - ``rewards``
     - ``(B,)``
   * - :math:`\gamma`
     - discount of the transition (0 where the episode ends)
     - ``discounts``
     - ``(B,)``
   * - :math:`Q`, :math:`Q_\theta`
     - action values: a table, or a network with parameters :math:`\theta`
     - ``q``, ``q_network``
     - ``(S, A)``, ``(B, A)``
   * - :math:`\theta^-`
     - the target network's parameters, a copy of :math:`\theta` refreshed every few steps
     - ``target_params``
     - like ``params``
   * - :math:`\theta`
     - the online network's parameters
     - ``params``
     - dict
   * - :math:`y`, :math:`y^{\text{double}}`
     - the Q-learning and the Double Q-learning target
     - return values of ``q_learning_targets``, ``double_q_learning_targets``
     - ``(B,)``
   * - :math:`\alpha`
     - learning rate of the tabular update
     - ``learning_rate``
     - scalar
   * - :math:`B`, :math:`b`
     - number of transitions in a batch and a transition's index
     - ``batch_size``
     - scalar
   * - :math:`\mathcal{L}`
     - the DQN loss
     - return value of ``dqn_loss``
     - scalar

Explanation
-----------

The optimal action values satisfy :math:`Q^{*}(s, a) = \mathbb{E}[r + \gamma \max_{a'} Q^{*}(s',
a')]`, the Bellman optimality equation of :doc:`dynamic_programming` written for actions. Q-learning
:footcite:p:`watkins1992q` replaces the expectation by one sampled transition and takes a step of
size :math:`\alpha` towards it. The target uses the *best* next action whatever the agent did next,
so Q-learning is *off-policy*: it learns the optimal values while behaving otherwise, here
:math:`\epsilon`-greedily (a random action with probability :math:`\epsilon`). If every pair
:math:`(s, a)` keeps being visited and the step sizes shrink suitably, the table converges to
:math:`Q^{*}`; in a deterministic world a constant :math:`\alpha` suffices, and on the grid world of
:doc:`dynamic_programming` the greedy policy of the learned table is optimal, as value iteration's
is.

DQN :footcite:p:`mnih2015human` fits a network to the same targets by gradient descent, and adds two
things without which it diverges easily. A *replay memory* :footcite:p:`lin1992self` stores past
transitions and trains on random batches of them, which breaks the correlation between consecutive
steps and reuses each one many times. A *target network* :math:`\theta^-`, refreshed every
``target_period`` steps, computes the targets, so that they do not move with every step of the
network they train. The maximum over noisy estimates is biased upwards: if every action's true value
is 0 and each estimate carries independent unit noise, the expected maximum of five is about 1.16.
Double Q-learning :footcite:p:`vanhasselt2016deep` picks the action with the online network and
evaluates it with the target network, whose errors are independent of that choice, and the bias
vanishes.

.. admonition:: Intuition

   Q-learning is a hiker keeping a notebook of how good each turn at each junction is. After each
   turn she rewrites that entry as what she just found plus the best entry for the junction she
   reached: news of the summit travels back one junction per visit. DQN writes the notebook in
   pencil from memory (the replay) and, to keep from chasing her own edits, copies the entries it
   aims at only now and then (the target network).

*In code.* The targets are written for a batch of transitions and compared with rlax's
per-transition errors in the tests. ``tabular_q_learning`` runs episodes of fixed length from
uniformly drawn states; a transition into an absorbing state of reward 0 (the grid world's goal)
ends the episode with discount 0. ``train_dqn`` does the same with a two-layer network on one-hot
states and plain gradient descent, the target network and the replay memory as in the paper, but
the squared error in place of the paper's Huber loss. *Bad input.* Shapes and dtypes are checked
always; actions' range when concrete (under :func:`jax.jit` an out-of-range action reads a clamped
entry).

Inductive bias
--------------

Q-learning assumes the Markov property and finitely many actions, since it takes a maximum over
them; the tabular form shares nothing between states and needs every pair visited many times. A
network generalises between similar states, which is what lets DQN learn from pixels, and is also why
its targets shift as it learns, the instability that replay and the target network damp. The test
trains the tabular form and DQN on the 3 by 4 grid world; both greedy policies reach the optimal
values of value iteration in every state.

Example
-------

Targets for two transitions, the second ending its episode; then tabular Q-learning on the grid world:

>>> import jax, jax.numpy as jnp
>>> from cookbook.reinforcement.q_learning import (
...     q_learning_targets, double_q_learning_targets, tabular_q_learning)
>>> rewards, discounts = jnp.array([1.0, 2.0]), jnp.array([0.9, 0.0])
>>> next_q = jnp.array([[1.0, 3.0], [5.0, 0.0]])
>>> q_learning_targets(rewards, discounts, next_q)  # 1 + 0.9 * 3, and 2
Array([3.7, 2. ], dtype=float32)
>>> online = jnp.array([[2.0, 1.0], [0.0, 1.0]])  # picks action 0 in the first next state
>>> double_q_learning_targets(rewards, discounts, online, next_q)  # 1 + 0.9 * 1
Array([1.9, 2. ], dtype=float32)
>>> from cookbook.reinforcement.dynamic_programming import grid_world
>>> transitions, table_rewards = grid_world(3, 4)
>>> q = tabular_q_learning(transitions, table_rewards, 0.9, jax.random.key(0), 300, 8)
>>> round(float(q[0].max()), 4)  # the optimal value 0.9 ** 4 of the far corner, as value iteration finds
0.6561
"""

import functools
import numbers

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"q_learning_targets": (), "double_q_learning_targets": ()}
#: The number of actions A, the last axis of the next values, may take any size.
FREE_LENGTH = {"q_learning_targets": ("next_q",), "double_q_learning_targets": ("next_q_online", "next_q_target")}


def _rewards_discounts(rewards, discounts):
    rewards = _checks.float_array(rewards, "rewards", ndim=1, what=" (B,)")
    discounts = _checks.float_array(discounts, "discounts", ndim=1, what=" (B,)")
    _checks.same_shape(discounts, "discounts", rewards.shape, expected_from="(B,) of rewards")
    return rewards, discounts


def _next_values(x, name, B):
    x = _checks.float_array(x, name, ndim=2, what=" (B, A)")
    if x.shape[0] != B:
        raise ValueError(f"{name} must have shape (B, A) with B = {B} as rewards, got shape {tuple(x.shape)}")
    return x


def _probability(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return float(value)


def q_learning_targets(rewards, discounts, next_q):
    """Q-learning targets ``r + discount * max_a' next_q`` (B,) of a batch of transitions.

    ``rewards`` and ``discounts`` have shape (B,), ``next_q`` (B, A) the values of the next states
    (the target network's in DQN). No gradient is stopped here; ``dqn_loss`` holds the targets fixed.
    """
    rewards, discounts = _rewards_discounts(rewards, discounts)
    next_q = _next_values(next_q, "next_q", rewards.shape[0])
    return _q_targets(rewards, discounts, next_q)


@jax.jit
def _q_targets(rewards, discounts, next_q):
    return rewards + discounts * next_q.max(axis=1)


def double_q_learning_targets(rewards, discounts, next_q_online, next_q_target):
    """Double Q-learning targets (B,): the online values pick the next action, the target values score it."""
    rewards, discounts = _rewards_discounts(rewards, discounts)
    next_q_online = _next_values(next_q_online, "next_q_online", rewards.shape[0])
    next_q_target = _next_values(next_q_target, "next_q_target", rewards.shape[0])
    _checks.same_shape(next_q_target, "next_q_target", next_q_online.shape, expected_from="(B, A) of next_q_online")
    _checks.check_no_nan(next_q_online, "next_q_online")  # a NaN would silently pick the action
    return _double_q_targets(rewards, discounts, next_q_online, next_q_target)


@jax.jit
def _double_q_targets(rewards, discounts, next_q_online, next_q_target):
    chosen = jnp.argmax(next_q_online, axis=1)  # (B,)
    return rewards + discounts * jnp.take_along_axis(next_q_target, chosen[:, None], axis=1)[:, 0]


def _tabular_model(transitions, rewards, discount):
    transitions = _checks.float_array(transitions, "transitions", ndim=3, what=" (S, A, S)")
    S, A, S_next = transitions.shape
    if S_next != S:
        raise ValueError(f"transitions must have shape (S, A, S), got shape {tuple(transitions.shape)}")
    rewards = _checks.float_array(rewards, "rewards", ndim=2, what=" (S, A)")
    _checks.same_shape(rewards, "rewards", (S, A), expected_from="(S, A) of transitions")
    if isinstance(discount, bool) or not isinstance(discount, numbers.Real) or not 0.0 <= discount < 1.0:
        raise ValueError(f"discount must be a real number in [0, 1), got {discount!r}")
    return transitions, rewards, S, A


def _terminal(transitions, rewards):
    """(S,): an absorbing state that earns nothing ends an episode, its value 0 (the grid world's goal)."""
    stays = jnp.einsum("sas->sa", transitions)  # (S, A): probability of staying put
    return jnp.all(stays == 1.0, axis=1) & jnp.all(rewards == 0.0, axis=1)


def _uniform_index(u, n):
    """An index in [0, n) from a uniform number ``u`` in [0, 1)."""
    return jnp.minimum((u * n).astype(jnp.int32), n - 1)


def _environment_step(transitions, rewards, terminal, discount, episode_length, state, age, q_values, epsilon, u):
    """One epsilon-greedy action and its sampled transition, from four uniform numbers ``u`` (4,).

    Returns the transition ``(state, action, reward, discount, next_state)`` and the state and age
    the agent continues from: a uniformly drawn state once the episode has ended.
    """
    S, A = rewards.shape
    action = jnp.where(u[0] < epsilon, _uniform_index(u[1], A), jnp.argmax(q_values))
    cumulative = jnp.cumsum(transitions[state, action])  # (S,): inverse-CDF sampling of the next state
    next_state = jnp.minimum(jnp.sum(cumulative <= u[2] * cumulative[-1]), S - 1)
    next_discount = jnp.where(terminal[next_state], 0.0, discount)  # 0 into a terminal state
    ended = terminal[next_state] | (age + 1 >= episode_length)
    continue_from = jnp.where(ended, _uniform_index(u[3], S), next_state)
    transition = (state, action, rewards[state, action], next_discount, next_state)
    return transition, continue_from, jnp.where(ended, 0, age + 1)


def tabular_q_learning(transitions, rewards, discount, key, num_episodes, episode_length, *,
                       learning_rate=0.5, epsilon=0.5):
    """The action values Q (S, A) learned by tabular Q-learning from sampled episodes.

    The environment is the Markov decision process ``transitions`` (S, A, S), ``rewards`` (S, A)
    of :doc:`dynamic_programming`, sampled one step at a time. Each of ``num_episodes`` episodes
    starts in a uniformly drawn state and lasts ``episode_length`` steps or until it enters an
    absorbing state that earns nothing; actions are epsilon-greedy. All the randomness is drawn
    at once, before the loop, which keeps the compiled program small.
    """
    transitions, rewards, S, A = _tabular_model(transitions, rewards, discount)
    num_episodes = _checks.size(num_episodes, "num_episodes")
    episode_length = _checks.size(episode_length, "episode_length")
    learning_rate = _probability(learning_rate, "learning_rate")
    epsilon = _probability(epsilon, "epsilon")
    return _tabular(transitions, rewards, discount, key, num_episodes, episode_length, learning_rate, epsilon)


@functools.partial(jax.jit, static_argnames=("num_episodes", "episode_length"))
def _tabular(transitions, rewards, discount, key, num_episodes, episode_length, learning_rate, epsilon):
    """Tabular Q-learning on checked inputs, one compiled program."""
    S, A = rewards.shape
    terminal = _terminal(transitions, rewards)
    num_steps = num_episodes * episode_length
    u = jax.random.uniform(key, (num_steps + 1, 4))

    def step(carry, u):
        q, state, age = carry
        (s, a, r, next_discount, next_state), state, age = _environment_step(
            transitions, rewards, terminal, discount, episode_length, state, age, q[state], epsilon, u)
        y = r + next_discount * q[next_state].max()
        return (q.at[s, a].add(learning_rate * (y - q[s, a])), state, age), None

    start = _uniform_index(u[0, 0], S)
    carry = (jnp.zeros((S, A), rewards.dtype), start, jnp.zeros((), jnp.int32))
    return jax.lax.scan(step, carry, u[1:])[0][0]


def init_q_network(key, num_states, hidden_size, num_actions):
    """Parameters of a two-layer Q-network from one-hot states (S,) to action values (A,)."""
    num_states = _checks.size(num_states, "num_states")
    hidden_size = _checks.size(hidden_size, "hidden_size")
    num_actions = _checks.size(num_actions, "num_actions")
    z = jax.random.normal(key, (num_states * hidden_size + hidden_size * num_actions,))  # one draw for both
    W1, W2 = jnp.split(z, [num_states * hidden_size])
    return {"W1": W1.reshape(num_states, hidden_size) / jnp.sqrt(num_states),
            "b1": jnp.zeros(hidden_size),
            "W2": W2.reshape(hidden_size, num_actions) / jnp.sqrt(hidden_size),
            "b2": jnp.zeros(num_actions)}


def q_network(params, states):
    """Action values (B, A) of integer ``states`` (B,), fed to the network as one-hot vectors (B, S)."""
    num_states = params["W1"].shape[0]
    hidden = jax.nn.relu(jax.nn.one_hot(states, num_states) @ params["W1"] + params["b1"][None, :])  # (B, H)
    return hidden @ params["W2"] + params["b2"][None, :]


def dqn_loss(params, target_params, states, actions, rewards, discounts, next_states, *, double=False):
    """The DQN loss of a batch of B transitions: half the mean squared error to fixed targets.

    ``states``, ``actions``, ``next_states`` are integer (B,); ``rewards``, ``discounts`` float (B,).
    With ``double`` the targets are Double Q-learning's.
    """
    rewards, discounts = _rewards_discounts(rewards, discounts)
    (B,) = rewards.shape
    num_states, _ = _checks.float_array(params["W1"], "params['W1']", ndim=2, what=" (S, H)").shape
    A = params["W2"].shape[1]
    for x, name, high in ((states, "states", num_states), (actions, "actions", A), (next_states, "next_states", num_states)):
        _checks.same_shape(_checks.int_array(x, name, ndim=1, what=" (B,)"), name, (B,), expected_from="(B,) of rewards")
        _checks.check_range(x, name, 0, high)
    _checks.same_tree(target_params, "target_params", params, "params")
    next_q_target = q_network(target_params, next_states)
    if double:
        y = double_q_learning_targets(rewards, discounts, q_network(params, next_states), next_q_target)
    else:
        y = q_learning_targets(rewards, discounts, next_q_target)
    q_taken = jnp.take_along_axis(q_network(params, states), jnp.asarray(actions)[:, None], axis=1)[:, 0]
    return 0.5 * jnp.mean((jax.lax.stop_gradient(y) - q_taken) ** 2)


def train_dqn(transitions, rewards, discount, key, num_steps, *, hidden_size=32, batch_size=32, capacity=1000,
              target_period=50, episode_length=8, learning_rate=0.3, epsilon=0.5, double=True):
    """``params`` of a Q-network trained by DQN on the Markov decision process ``(transitions, rewards)``.

    One environment step and one gradient step on a batch drawn uniformly from a replay memory of the
    last ``capacity`` transitions per iteration; the target network is refreshed every
    ``target_period`` steps. Episodes start in uniformly drawn states and last ``episode_length``
    steps or until they enter an absorbing state that earns nothing.
    """
    transitions, rewards, S, A = _tabular_model(transitions, rewards, discount)
    terminal = _terminal(transitions, rewards)
    num_steps = _checks.size(num_steps, "num_steps")
    for value, name in ((batch_size, "batch_size"), (capacity, "capacity"), (target_period, "target_period"),
                        (episode_length, "episode_length"), (hidden_size, "hidden_size")):
        _checks.size(value, name)
    learning_rate = _checks.positive(learning_rate, "learning_rate")
    epsilon = _probability(epsilon, "epsilon")
    k_init, k_run = jax.random.split(key)
    params = init_q_network(k_init, S, hidden_size, A)
    memory = {"states": jnp.zeros(capacity, jnp.int32), "actions": jnp.zeros(capacity, jnp.int32),
              "rewards": jnp.zeros(capacity), "discounts": jnp.zeros(capacity),
              "next_states": jnp.zeros(capacity, jnp.int32)}
    grad = jax.grad(dqn_loss)
    u = jax.random.uniform(k_run, (num_steps + 1, 4 + batch_size))  # all the randomness, drawn at once

    def iteration(carry, inputs):
        params, target_params, memory, state, age = carry
        t, u = inputs
        # act, and remember the transition in the slot of the oldest one
        (s, a, r, next_discount, next_state), state, age = _environment_step(
            transitions, rewards, terminal, discount, episode_length, state, age,
            q_network(params, state[None])[0], epsilon, u[:4])
        new = {"states": s, "actions": a, "rewards": r, "discounts": next_discount, "next_states": next_state}
        memory = jax.tree.map(lambda m, x: m.at[t % capacity].set(x), memory, new)
        # learn from a batch drawn uniformly from the remembered transitions
        index = _uniform_index(u[4:], jnp.minimum(t + 1, capacity))  # (batch_size,)
        batch = jax.tree.map(lambda m: m[index], memory)
        grads = grad(params, target_params, batch["states"], batch["actions"], batch["rewards"],
                     batch["discounts"], batch["next_states"], double=double)
        params = jax.tree.map(lambda p, g: p - learning_rate * g, params, grads)
        target_params = jax.tree.map(lambda p, q: jnp.where((t + 1) % target_period == 0, p, q),
                                     params, target_params)
        return (params, target_params, memory, state, age), None

    start = _uniform_index(u[0, 0], S)
    carry = (params, params, memory, start, jnp.zeros((), jnp.int32))
    (params, _, _, _, _), _ = jax.lax.scan(iteration, carry, (jnp.arange(num_steps), u[1:]))
    return params
