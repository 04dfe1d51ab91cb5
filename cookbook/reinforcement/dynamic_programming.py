r"""Dynamic programming
===================

When the transition probabilities and rewards of a Markov decision process are known, the Bellman
equations give the value of a policy by one linear solve and the optimal values by repeated
backups: the exact answers that every learning method of this chapter approximates from samples.

Equation
--------

.. math::

   \begin{aligned}
   V^{\pi} &= r_{\pi} + \gamma P_{\pi} V^{\pi}
   \;\Longrightarrow\; V^{\pi} = (I - \gamma P_{\pi})^{-1} r_{\pi}, \\
   r_{\pi}(s) &= \textstyle\sum_a \pi(a \mid s)\, r(s, a), \qquad
   P_{\pi}(s, s') = \textstyle\sum_a \pi(a \mid s)\, P(s' \mid s, a), \\
   Q(s, a) &= r(s, a) + \gamma \textstyle\sum_{s'} P(s' \mid s, a)\, V(s'), \qquad
   V^{*}(s) = \max_a Q^{*}(s, a)
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`s`, :math:`s'`
     - a state and the state after it, numbered :math:`0 \ldots S-1`
     - first and last axis of ``transitions``
     - scalar
   * - :math:`a`
     - an action, numbered :math:`0 \ldots A-1`
     - middle axis of ``transitions``
     - scalar
   * - :math:`P`
     - transition probabilities :math:`P(s' \mid s, a)`, each row summing to 1
     - ``transitions``
     - ``(S, A, S)``
   * - :math:`r`
     - expected reward of taking :math:`a` in :math:`s`
     - ``rewards``
     - ``(S, A)``
   * - :math:`\pi`
     - a stochastic policy :math:`\pi(a \mid s)`, each row summing to 1
     - ``policy``
     - ``(S, A)``
   * - :math:`\gamma`
     - discount, in :math:`[0, 1)`
     - ``discount``
     - scalar
   * - :math:`r_{\pi}`, :math:`P_{\pi}`
     - reward and transition matrix of the Markov chain that :math:`\pi` induces
     - ``r_pi``, ``P_pi``
     - ``(S,)``, ``(S, S)``
   * - :math:`V^{\pi}`, :math:`V^{*}`, :math:`V`
     - state values of :math:`\pi`, optimal state values, any state values
     - ``values``
     - ``(S,)``
   * - :math:`Q`, :math:`Q^{*}`
     - action values (of :math:`V`, and optimal)
     - ``q``
     - ``(S, A)``
   * - :math:`I`
     - identity matrix
     - ``jnp.eye(S)``
     - ``(S, S)``

Explanation
-----------

A Markov decision process :footcite:p:`bellman1957dynamic` is a set of states, a set of actions,
the probabilities :math:`P(s' \mid s, a)` of where an action leads and the reward it earns. The
value :math:`V^{\pi}(s)` of a policy is the expected discounted sum of rewards when starting in
:math:`s` and following :math:`\pi`. Splitting that sum into the first reward and the rest gives
the Bellman equation: a state's value is the reward now plus the discounted value of where one
lands. For a fixed policy this is a system of :math:`S` *linear* equations, and
``policy_evaluation`` solves it directly. Because :math:`P_{\pi}` is a stochastic matrix, its
eigenvalues have modulus at most 1, so :math:`I - \gamma P_{\pi}` is invertible for every
:math:`\gamma < 1`.

Optimal values satisfy the same equation with a maximum over actions, which is no longer linear.
*Value iteration* applies the backup :math:`V \leftarrow \max_a Q` again and again; the backup is a
:math:`\gamma`-contraction in the maximum norm, so the error shrinks by a factor :math:`\gamma` at
least per sweep, from any start. *Policy iteration* :footcite:p:`howard1960dynamic` alternates an
exact evaluation with a greedy improvement, :math:`\pi(s) \leftarrow \arg\max_a Q^{\pi}(s, a)`;
each improvement can only raise the values, and there are finitely many deterministic policies, so
it stops at the optimum after a few, expensive, iterations where value iteration takes many cheap
ones. Both end at the same :math:`V^{*}`, and a policy greedy with respect to it is optimal
:footcite:p:`sutton2018reinforcement`.

.. admonition:: Intuition

   Planning a trip backwards from the destination: a town next to it is one step away, a town next
   to that town is two, and so on. Each backup spreads the news of the goal one step further out,
   discounted a little more each time; once the news has reached every town, the best road from
   anywhere is to go to the neighbour that heard the best news.

The grid world of the example puts the agent on a ``height`` by ``width`` grid with four moves (up,
right, down, left; a move into a wall stays put), a reward of 1 for stepping onto the goal in the
last corner, and the goal absorbing, with no reward after. With ``slip`` the chosen move is
replaced, with that probability, by one drawn uniformly from the four. Without slipping, the optimal
value of a cell at Manhattan distance :math:`d` from the goal is exactly :math:`\gamma^{d-1}`.

*Numerical traps.* The solve is the accurate route; summing the series :math:`\sum_k \gamma^k
P_{\pi}^k r_{\pi}` needs about :math:`\log \varepsilon / \log \gamma` terms, which grows without
bound as :math:`\gamma \to 1`, and so does the condition number of :math:`I - \gamma P_{\pi}`.
*Bad input.* Shapes and dtypes are checked always; that the rows of ``transitions`` and ``policy``
are probabilities, and that the discount lies in :math:`[0, 1)`, is checked when the values are
concrete. Under :func:`jax.jit` these checks cannot run and the solve returns the values of
whatever linear system it was given.

Inductive bias
--------------

Dynamic programming assumes the Markov property, that the next state and reward depend only on the
current state and action, and that the model :math:`(P, r)` is known and small enough to hold as
an array: its cost is :math:`O(S^3)` per exact evaluation and :math:`O(S^2 A)` per backup. It
learns nothing from data; the later recipes of the chapter keep its equations and replace the known
model by sampled transitions.

Example
-------

A 3 by 4 grid world without slipping; the far corner is 5 moves from the goal, so its optimal value
is :math:`0.9^4 = 0.6561`:

>>> import jax.numpy as jnp
>>> from cookbook.reinforcement.dynamic_programming import (
...     grid_world, policy_evaluation, value_iteration, policy_iteration, greedy_policy)
>>> transitions, rewards = grid_world(3, 4)
>>> transitions.shape, rewards.shape
((12, 4, 12), (12, 4))
>>> v_star = value_iteration(transitions, rewards, 0.9, 50)
>>> round(float(v_star[0]), 4), float(v_star[11])
(0.6561, 0.0)
>>> v_pi, policy = policy_iteration(transitions, rewards, 0.9, 10)
>>> bool(jnp.allclose(v_pi, v_star, atol=1e-5))
True
>>> uniform = jnp.full((12, 4), 0.25)  # a random walk does worse everywhere but at the goal
>>> v_uniform = policy_evaluation(transitions, rewards, uniform, 0.9)
>>> bool((v_uniform[:11] < v_star[:11]).all()), round(float(v_uniform[0]), 4)
(True, 0.1167)
>>> greedy_policy(transitions, rewards, v_star, 0.9)[0]  # from the first cell: move right
Array([0., 1., 0., 0.], dtype=float32)
"""

import numbers
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "grid_world": ("height", "width"),
    "policy_evaluation": (),
    "action_values": (),
    "greedy_policy": (),
    "value_iteration": ("num_iterations",),
    "policy_iteration": ("num_iterations",),
}


def _probabilities(x, name: str, axis_name: str):
    """When ``x`` is concrete, a ``ValueError`` unless its entries are >= 0 and sum to 1 over the last axis."""
    if _checks.is_concrete(x) and x.size:
        values = np.asarray(x, dtype=np.float64)
        sums = values.sum(axis=-1)
        if not (np.all(values >= 0) and np.allclose(sums, 1.0, atol=1e-4)):
            worst = float(np.nanmax(np.abs(sums - 1.0))) if not np.isnan(sums).all() else float("nan")
            raise ValueError(f"{name} must hold probabilities, non-negative and summing to 1 over "
                             f"{axis_name}; got sums off by up to {worst:.3g} "
                             f"(or negative or NaN entries), minimum entry {np.nanmin(values):.3g}")
    return x


def _discount(discount):
    if isinstance(discount, bool):
        raise TypeError(f"discount must be a real number in [0, 1), got {discount!r}")
    if isinstance(discount, numbers.Real):
        if not 0.0 <= discount < 1.0:
            raise ValueError(f"discount must lie in [0, 1), got {discount}")
        return discount
    discount = _checks.float_array(discount, "discount", ndim=0, what=" (a scalar)")
    if _checks.is_concrete(discount) and not 0.0 <= float(discount) < 1.0:
        raise ValueError(f"discount must lie in [0, 1), got {float(discount)}")
    return discount


def _model(transitions, rewards):
    """``transitions`` (S, A, S) and ``rewards`` (S, A), checked, and ``(S, A)``."""
    transitions = _checks.float_array(transitions, "transitions", ndim=3, what=" (S, A, S)")
    S, A, S_next = transitions.shape
    if S_next != S:
        raise ValueError(f"transitions must have shape (S, A, S), got shape {transitions.shape}")
    rewards = _checks.float_array(rewards, "rewards", ndim=2, what=" (S, A)")
    _checks.same_shape(rewards, "rewards", (S, A), expected_from="(S, A) of transitions")
    _probabilities(transitions, "transitions", "the next state s'")
    return transitions, rewards, S, A


def _values(values, S):
    values = _checks.float_array(values, "values", ndim=1, what=" (S,)")
    return _checks.same_shape(values, "values", (S,), expected_from="S of transitions")


def grid_world(height, width, *, slip=0.0, dtype=jnp.float32):
    """``(transitions, rewards)`` of a ``height`` by ``width`` grid with the goal in the last cell.

    States are numbered row by row; actions are up, right, down, left. A move into a wall stays
    put; with probability ``slip`` the move is drawn uniformly from the four instead. Stepping onto
    the goal earns 1; the goal is absorbing and earns nothing after.
    """
    height, width = _checks.size(height, "height"), _checks.size(width, "width")
    if height * width < 2:
        raise ValueError(f"the grid needs at least 2 cells, got height {height} and width {width}")
    if isinstance(slip, numbers.Real) and not isinstance(slip, bool) and not 0.0 <= slip <= 1.0:
        raise ValueError(f"slip must lie in [0, 1], got {slip}")
    return _grid_world(height, width, slip, jnp.dtype(dtype))


@partial(jax.jit, static_argnums=(0, 1, 3))  # one compiled program per grid and dtype
def _grid_world(height, width, slip, dtype):
    S, goal = height * width, height * width - 1
    row, col = jnp.divmod(jnp.arange(S), width)
    d_row = jnp.array([-1, 0, 1, 0])
    d_col = jnp.array([0, 1, 0, -1])
    next_row = jnp.clip(row[:, None] + d_row[None, :], 0, height - 1)  # (S, A)
    next_col = jnp.clip(col[:, None] + d_col[None, :], 0, width - 1)
    moves = jax.nn.one_hot(next_row * width + next_col, S, dtype=dtype)  # (S, A, S)
    transitions = (1 - slip) * moves + slip * moves.mean(axis=1, keepdims=True)
    transitions = transitions.at[goal].set(jax.nn.one_hot(goal, S, dtype=dtype))
    rewards = transitions[:, :, goal].at[goal].set(0.0)  # (S, A)
    return transitions.astype(dtype), rewards.astype(dtype)


def policy_evaluation(transitions, rewards, policy, discount):
    """The exact state values V (S,) of ``policy`` (S, A): the solution of the Bellman equation."""
    transitions, rewards, S, A = _model(transitions, rewards)
    policy = _checks.float_array(policy, "policy", ndim=2, what=" (S, A)")
    _checks.same_shape(policy, "policy", (S, A), expected_from="(S, A) of transitions")
    _probabilities(policy, "policy", "the actions a")
    discount = _discount(discount)
    return _policy_evaluation(transitions, rewards, policy, discount)


@jax.jit
def _policy_evaluation(transitions, rewards, policy, discount):
    r_pi = jnp.einsum("sa,sa->s", policy, rewards)  # (S,)
    P_pi = jnp.einsum("sa,sat->st", policy, transitions)  # (S, S)
    return jnp.linalg.solve(jnp.eye(r_pi.shape[0], dtype=P_pi.dtype) - discount * P_pi, r_pi)


def action_values(transitions, rewards, values, discount):
    """The action values Q (S, A) of state values ``values`` (S,): one Bellman backup."""
    transitions, rewards, S, A = _model(transitions, rewards)
    values = _values(values, S)
    discount = _discount(discount)
    return _action_values(transitions, rewards, values, discount)


@jax.jit
def _action_values(transitions, rewards, values, discount):
    return rewards + discount * jnp.einsum("sat,t->sa", transitions, values)


def greedy_policy(transitions, rewards, values, discount):
    """The deterministic policy (S, A), one-hot rows, greedy with respect to ``values``.

    Ties go to the lowest-numbered action. A NaN in ``values`` or ``rewards`` is refused when
    concrete, since it would silently decide the action.
    """
    q = action_values(transitions, rewards, values, discount)
    _checks.check_no_nan(q, "rewards or values")
    return _greedy(q)


@jax.jit
def _greedy(q):
    return jax.nn.one_hot(jnp.argmax(q, axis=1), q.shape[1], dtype=q.dtype)


def value_iteration(transitions, rewards, discount, num_iterations):
    """The optimal state values V* (S,) after ``num_iterations`` backups from V = 0.

    The error in the maximum norm is at most ``discount ** num_iterations`` times that of V = 0.
    """
    transitions, rewards, S, A = _model(transitions, rewards)
    discount = _discount(discount)
    num_iterations = _checks.size(num_iterations, "num_iterations", minimum=0)
    return _value_iteration(transitions, rewards, discount, num_iterations)


@partial(jax.jit, static_argnums=3)  # one compiled loop per shape and number of iterations
def _value_iteration(transitions, rewards, discount, num_iterations):
    def backup(_, values):
        q = rewards + discount * jnp.einsum("sat,t->sa", transitions, values)  # (S, A)
        return q.max(axis=1)

    return jax.lax.fori_loop(0, num_iterations, backup, jnp.zeros(rewards.shape[:1], rewards.dtype))


def policy_iteration(transitions, rewards, discount, num_iterations):
    """``(values, policy)`` after ``num_iterations`` rounds of exact evaluation and greedy improvement.

    Starts from the uniform policy; ``policy`` (S, A) has one-hot rows (ties to the lowest action)
    and ``values`` are its exact values. Once the policy is stable, further rounds change nothing.
    """
    transitions, rewards, S, A = _model(transitions, rewards)
    discount = _discount(discount)
    num_iterations = _checks.size(num_iterations, "num_iterations", minimum=1)
    _checks.check_no_nan(rewards, "rewards")
    return _policy_iteration(transitions, rewards, discount, num_iterations)


@partial(jax.jit, static_argnums=3)
def _policy_iteration(transitions, rewards, discount, num_iterations):
    S, A = rewards.shape
    eye = jnp.eye(S, dtype=rewards.dtype)

    def evaluate(policy):
        r_pi = jnp.einsum("sa,sa->s", policy, rewards)
        P_pi = jnp.einsum("sa,sat->st", policy, transitions)
        return jnp.linalg.solve(eye - discount * P_pi, r_pi)

    def improve(_, policy):
        q = rewards + discount * jnp.einsum("sat,t->sa", transitions, evaluate(policy))
        return jax.nn.one_hot(jnp.argmax(q, axis=1), A, dtype=rewards.dtype)

    policy = jax.lax.fori_loop(0, num_iterations, improve, jnp.full((S, A), 1.0 / A, rewards.dtype))
    return evaluate(policy), policy
