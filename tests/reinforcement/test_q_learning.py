import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from cookbook.reinforcement.dynamic_programming import grid_world
from cookbook.reinforcement.q_learning import (dqn_loss, double_q_learning_targets, init_q_network, q_learning_targets,
                                               q_network, tabular_q_learning, train_dqn)

B, A, S, H, GAMMA = 11, 5, 12, 7, 0.9


@jax.jit
def both_targets(rewards, discounts, next_q_online, next_q_target):
    return (q_learning_targets(rewards, discounts, next_q_target),
            double_q_learning_targets(rewards, discounts, next_q_online, next_q_target))


def batch(seed, B=B):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=B).astype(np.float32)
    discounts = (GAMMA * (rng.uniform(size=B) > 0.3)).astype(np.float32)  # some episodes end
    q, next_online, next_target = rng.normal(size=(3, B, A)).astype(np.float32)
    actions = rng.integers(0, A, size=B)
    return rewards, discounts, q, next_online, next_target, actions


@pytest.fixture(scope="module")
def grid():
    transitions, rewards = jax.jit(grid_world, static_argnums=(0, 1))(3, 4)
    P, r = np.asarray(transitions, np.float64), np.asarray(rewards, np.float64)
    v_star = np.zeros(S)
    for _ in range(200):  # value iteration in float64 NumPy (dynamic_programming's, tested there)
        q_star = r + GAMMA * P @ v_star
        v_star = q_star.max(axis=1)
    return transitions, rewards, v_star, q_star


def numpy_params(seed, hidden=H):
    rng = np.random.default_rng(seed)
    return {"W1": rng.normal(size=(S, hidden)).astype(np.float32), "b1": rng.normal(size=hidden).astype(np.float32),
            "W2": rng.normal(size=(hidden, A)).astype(np.float32), "b2": rng.normal(size=A).astype(np.float32)}


def numpy_q(params, states):
    hidden = np.maximum(params["W1"][states] + params["b1"], 0.0)
    return hidden @ params["W2"] + params["b2"]


def greedy_values(transitions, rewards, q):
    """Exact values (float64 NumPy) of the policy greedy with respect to q (S, A)."""
    P, r = np.asarray(transitions, np.float64), np.asarray(rewards, np.float64)
    best = np.asarray(q).argmax(axis=1)
    return np.linalg.solve(np.eye(S) - GAMMA * P[np.arange(S), best], r[np.arange(S), best])


def test_targets_match_rlax_and_a_numpy_loop():
    rewards, discounts, q, next_online, next_target, actions = batch(0)
    y, y_double = map(np.asarray, both_targets(rewards, discounts, next_online, next_target))
    rlax_td, rlax_double_td = jax.jit(lambda *args: (jax.vmap(rlax.q_learning)(*args[:5]),
                                                     jax.vmap(rlax.double_q_learning)(*args)))(
        q, actions, rewards, discounts, next_target, next_online)
    q_taken = q[np.arange(B), actions]
    np.testing.assert_allclose(y - q_taken, rlax_td, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y_double - q_taken, rlax_double_td, rtol=1e-6, atol=1e-6)
    for b in range(B):
        assert np.isclose(y[b], rewards[b] + discounts[b] * max(next_target[b]), rtol=1e-6)
        assert np.isclose(y_double[b], rewards[b] + discounts[b] * next_target[b][np.argmax(next_online[b])], rtol=1e-6)
    # an ended episode (discount 0) bootstraps nothing; with one network double Q-learning is Q-learning
    ended = discounts == 0
    np.testing.assert_array_equal(y[ended], rewards[ended])
    same = tuple(map(np.asarray, both_targets(rewards, discounts, next_target, next_target)))
    np.testing.assert_array_equal(same[0], same[1])


def test_the_maximum_overestimates_and_double_q_learning_does_not():
    """Five actions of true value 0 and unit noise: the max target is about 1.163, the expected
    maximum of five standard normals (as the page says); the double target is unbiased."""
    n = 20_000
    rng = np.random.default_rng(1)
    online, target = rng.normal(size=(2, n, A)).astype(np.float32)
    zeros, ones = np.zeros(n, np.float32), np.ones(n, np.float32)
    y, y_double = (np.asarray(x, np.float64) for x in jax.jit(both_targets.__wrapped__)(zeros, ones, online, target))
    grid = np.linspace(-8, 8, 16001)  # E[max] = integral of x d(Phi(x)^5), in float64
    phi = np.exp(-grid**2 / 2) / np.sqrt(2 * np.pi)
    cdf = np.cumsum(phi) * (grid[1] - grid[0])
    expected_max = np.sum(grid * 5 * cdf**4 * phi) * (grid[1] - grid[0])
    assert np.isclose(expected_max, 1.163, atol=1e-3)
    assert abs(y.mean() - expected_max) < 4 * y.std() / np.sqrt(n)
    assert abs(y_double.mean()) < 4 * y_double.std() / np.sqrt(n)


def test_dqn_loss_is_half_the_mean_squared_td_error_and_holds_the_targets_fixed():
    rewards, discounts, _, _, _, actions = batch(2)
    states, next_states = np.random.default_rng(3).integers(0, S, size=(2, B))
    params, target_params = numpy_params(0), numpy_params(1)

    @jax.jit
    def losses_and_grads(params, target_params):
        def loss(params, target_params, double):
            return dqn_loss(params, target_params, states, actions, rewards, discounts, next_states, double=double)
        return [jax.value_and_grad(loss, argnums=(0, 1))(params, target_params, double) for double in (False, True)]

    q, next_online, next_target = numpy_q(params, states), numpy_q(params, next_states), numpy_q(target_params, next_states)
    y = rewards + discounts * next_target.max(axis=1)
    y_double = rewards + discounts * next_target[np.arange(B), next_online.argmax(axis=1)]
    for (value, (g_params, g_target)), targets in zip(losses_and_grads(params, target_params), (y, y_double)):
        np.testing.assert_allclose(value, 0.5 * np.mean(np.square(targets - q[np.arange(B), actions])), rtol=1e-5)
        assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(g_target))  # the targets carry no gradient
        assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(g_params))


def test_tabular_q_learning_finds_value_iterations_greedy_policy(grid):
    transitions, rewards, v_star, q_star = grid
    learn = jax.jit(jax.vmap(lambda key: tabular_q_learning(transitions, rewards, GAMMA, key, 600, 8)))
    for q in learn(jax.random.split(jax.random.key(0), 3)):
        # the greedy values to 1e-3 of V*; the whole table, rarely tried actions included, to 0.02 of Q*
        np.testing.assert_allclose(np.asarray(q).max(axis=1), v_star, atol=1e-3)
        np.testing.assert_allclose(q, q_star, atol=0.02)
        np.testing.assert_allclose(greedy_values(transitions, rewards, q), v_star, atol=1e-6)
        # each greedy action is one of value iteration's optimal actions (they tie where two moves are as short)
        optimal = np.isclose(q_star, q_star.max(axis=1, keepdims=True), atol=1e-6)
        assert optimal[np.arange(S), np.asarray(q).argmax(axis=1)].all()


def test_double_dqn_with_replay_and_a_target_network_learns_the_grid_world(grid):
    transitions, rewards, v_star, _ = grid
    params = jax.jit(lambda key: train_dqn(transitions, rewards, GAMMA, key, 2000))(jax.random.key(0))
    q = numpy_q(jax.tree.map(np.asarray, params), np.arange(S))
    np.testing.assert_allclose(greedy_values(transitions, rewards, q), v_star, atol=1e-6)  # optimal everywhere
    assert np.abs(np.asarray(q).max(axis=1) - v_star)[:-1].max() < 0.02  # 0.003 when written (goal excluded)


def test_bad_input(grid):
    transitions, rewards, _, _ = grid
    r, d, q, next_online, next_target, actions = batch(4)
    with pytest.raises(ValueError, match="discounts must have shape"):
        q_learning_targets(r, d[:3], next_target)
    with pytest.raises(ValueError, match="next_q must have shape"):
        q_learning_targets(r, d, next_target[:3])
    with pytest.raises(TypeError, match="rewards must be a floating-point"):
        q_learning_targets(np.arange(B), d, next_target)
    with pytest.raises(ValueError, match="next_q_target must have shape"):
        double_q_learning_targets(r, d, next_online, next_target[:, :2])
    nan = next_online.copy()
    nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="next_q_online holds NaN"):
        double_q_learning_targets(r, d, nan, next_target)
    with pytest.raises(ValueError, match="discount must be"):
        tabular_q_learning(transitions, rewards, 1.0, jax.random.key(0), 3, 2)
    with pytest.raises(ValueError, match="epsilon must lie"):
        tabular_q_learning(transitions, rewards, GAMMA, jax.random.key(0), 3, 2, epsilon=1.5)
    with pytest.raises(TypeError, match="episode_length"):
        tabular_q_learning(transitions, rewards, GAMMA, jax.random.key(0), 3, 2.0)
    params = numpy_params(0)
    states = np.zeros(B, np.int32)
    with pytest.raises(ValueError, match="actions must lie in"):
        dqn_loss(params, params, states, np.full(B, A), r, d, states)
    with pytest.raises(ValueError, match="next_states must have shape"):
        dqn_loss(params, params, states, actions, r, d, states[:3])
    with pytest.raises(ValueError, match="target_params"):
        dqn_loss(params, numpy_params(0, H + 1), states, actions, r, d, states)
    with pytest.raises(TypeError, match="num_states must be an int"):
        init_q_network(jax.random.key(0), 12.0, H, A)
