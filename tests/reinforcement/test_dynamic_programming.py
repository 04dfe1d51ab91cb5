import jax
import numpy as np
import pytest

from cookbook.reinforcement.dynamic_programming import (action_values, grid_world, greedy_policy,
                                                        policy_evaluation, policy_iteration, value_iteration)

# One set of shapes for every jitted call: random MDPs of the grid world's size (3 x 5 cells, 4 moves).
S, A, GAMMA = 15, 4, 0.9
SWEEPS, ROUNDS = 200, 10  # one compiled loop each
# The functions check their input, then run one compiled core each: the tests call them as they are
# (a jax.jit around them would compile another program per shape).


def random_mdp(seed, S=S, A=A):
    rng = np.random.default_rng(seed)
    transitions = rng.dirichlet(np.ones(S) * 0.5, size=(S, A))  # (S, A, S), rows sum to 1
    rewards = rng.normal(size=(S, A))
    policy = rng.dirichlet(np.ones(A), size=S)  # (S, A)
    return transitions, rewards, policy


def numpy_evaluation(transitions, rewards, policy, discount, tol=1e-14):
    """Iterative policy evaluation in float64: V <- r_pi + discount P_pi V until it stops moving."""
    r_pi = (policy * rewards).sum(axis=1)
    P_pi = (policy[:, :, None] * transitions).sum(axis=1)
    values = np.zeros(transitions.shape[0])
    for _ in range(10_000):
        new = r_pi + discount * P_pi @ values
        if np.max(np.abs(new - values)) < tol:
            return new
        values = new
    raise AssertionError("the reference did not converge")


@pytest.fixture(scope="module")
def mdp():
    return random_mdp(0)


def test_policy_evaluation_matches_iterative_numpy_float64(mdp):
    transitions, rewards, policy = mdp
    expected = numpy_evaluation(transitions, rewards, policy, GAMMA)
    got = policy_evaluation(*(np.asarray(x, np.float32) for x in mdp), GAMMA)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_bellman_equation_holds_exactly(mdp):
    transitions, rewards, policy = mdp
    with jax.enable_x64(True):
        values = np.asarray(jax.jit(policy_evaluation)(transitions, rewards, policy, GAMMA))
        assert values.dtype == np.float64
    backed_up = np.einsum("sa,sa->s", policy, rewards + GAMMA * np.einsum("sat,t->sa", transitions, values))
    np.testing.assert_allclose(backed_up, values, rtol=0, atol=1e-12)
    # float32: the same equation to float32 precision
    values32 = np.asarray(policy_evaluation(*(np.asarray(x, np.float32) for x in mdp), GAMMA), np.float64)
    backed_up32 = np.einsum("sa,sa->s", policy, rewards + GAMMA * np.einsum("sat,t->sa", transitions, values32))
    np.testing.assert_allclose(backed_up32, values32, rtol=0, atol=1e-5)


def test_action_values_are_one_backup(mdp):
    transitions, rewards, policy = mdp
    values = np.arange(S, dtype=np.float32)
    q = action_values(transitions.astype(np.float32), rewards.astype(np.float32), values, 0.5)
    expected = rewards + 0.5 * np.einsum("sat,t->sa", transitions, values)
    np.testing.assert_allclose(q, expected, rtol=1e-5, atol=1e-5)


def test_value_iteration_and_policy_iteration_reach_the_same_optimum(mdp):
    transitions, rewards, _ = (np.asarray(x, np.float32) for x in mdp)
    v_star = np.asarray(value_iteration(transitions, rewards, GAMMA, SWEEPS))  # error <= 0.9**SWEEPS * max|V*|, below 1e-7 here
    v_pi, policy = policy_iteration(transitions, rewards, GAMMA, ROUNDS)
    np.testing.assert_allclose(v_pi, v_star, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(policy, greedy_policy(transitions, rewards, v_star, GAMMA))
    # the optimal values dominate those of random policies, state by state
    for seed in range(1, 4):
        _, _, other = random_mdp(seed)
        assert (np.asarray(policy_evaluation(transitions, rewards, np.asarray(other, np.float32), GAMMA)) <= v_star + 1e-5).all()
    # and policy iteration's values are those of its own policy
    np.testing.assert_allclose(policy_evaluation(transitions, rewards, policy, GAMMA), v_pi, rtol=1e-6, atol=1e-6)


def test_value_iteration_matches_a_numpy_loop_sweep_by_sweep(mdp):
    transitions, rewards, _ = mdp
    values = np.zeros(S)
    for _ in range(SWEEPS):
        values = np.array([max(rewards[s, a] + GAMMA * transitions[s, a] @ values for a in range(A)) for s in range(S)])
    got = value_iteration(np.asarray(transitions, np.float32), np.asarray(rewards, np.float32), GAMMA, SWEEPS)
    np.testing.assert_allclose(got, values, rtol=1e-5, atol=1e-5)


def test_grid_world_optimal_values_are_discount_to_the_distance():
    height, width = 3, 5
    transitions, rewards = (np.asarray(x) for x in grid_world(height, width))
    assert transitions.shape == (15, 4, 15) and rewards.shape == (15, 4)
    np.testing.assert_allclose(transitions.sum(axis=2), 1.0, atol=1e-6)
    v_star = value_iteration(transitions, rewards, GAMMA, SWEEPS)
    row, col = np.divmod(np.arange(15), width)
    distance = (height - 1 - row) + (width - 1 - col)
    expected = np.where(distance > 0, GAMMA ** (distance - 1.0), 0.0)
    np.testing.assert_allclose(v_star, expected, rtol=1e-5, atol=1e-6)
    v_pi, policy = policy_iteration(transitions, rewards, GAMMA, ROUNDS)
    np.testing.assert_allclose(v_pi, v_star, atol=1e-5)


def test_slippery_grid_world_rows_and_agreement():
    transitions, rewards = (np.asarray(x) for x in grid_world(3, 5, slip=0.3))
    np.testing.assert_allclose(transitions.sum(axis=2), 1.0, atol=1e-6)
    # from the cell left of the goal, moving right reaches it with 0.7 + 0.3 / 4
    assert np.isclose(transitions[13, 1, 14], 0.775) and np.isclose(rewards[13, 1], 0.775)
    v_star = value_iteration(transitions, rewards, GAMMA, SWEEPS)
    v_pi, _ = policy_iteration(transitions, rewards, GAMMA, ROUNDS)
    np.testing.assert_allclose(v_pi, v_star, atol=1e-5)


def test_discount_zero_gives_the_immediate_reward(mdp):
    transitions, rewards, policy = mdp
    got = policy_evaluation(*(np.asarray(x, np.float32) for x in mdp), 0.0)
    np.testing.assert_allclose(got, (policy * rewards).sum(axis=1), rtol=1e-5, atol=1e-6)


def test_bad_input(mdp):
    transitions, rewards, policy = (np.asarray(x, np.float32) for x in mdp)
    unnormalised = transitions.copy()
    unnormalised[2, 1] *= 1.5
    with pytest.raises(ValueError, match="transitions must hold probabilities"):
        policy_evaluation(unnormalised, rewards, policy, GAMMA)
    with pytest.raises(ValueError, match="transitions must hold probabilities"):
        value_iteration(unnormalised, rewards, GAMMA, 3)
    with pytest.raises(ValueError, match="policy must hold probabilities"):
        policy_evaluation(transitions, rewards, policy * 2, GAMMA)
    with pytest.raises(ValueError, match="transitions must have shape"):
        policy_evaluation(transitions[:, :, :5], rewards, policy, GAMMA)
    with pytest.raises(ValueError, match="rewards must have shape"):
        policy_evaluation(transitions, rewards.T, policy, GAMMA)
    with pytest.raises(ValueError, match="policy must have shape"):
        policy_evaluation(transitions, rewards, policy[:5], GAMMA)
    with pytest.raises(TypeError, match="transitions must be a floating-point"):
        policy_evaluation(transitions.astype(np.int32), rewards, policy, GAMMA)
    for discount in (1.0, -0.1):
        with pytest.raises(ValueError, match="discount must lie in"):
            policy_evaluation(transitions, rewards, policy, discount)
    with pytest.raises(TypeError, match="num_iterations"):
        value_iteration(transitions, rewards, GAMMA, 3.0)
    with pytest.raises(ValueError, match="values must have shape"):
        action_values(transitions, rewards, np.zeros(S + 1, np.float32), GAMMA)
    with pytest.raises(ValueError, match="slip"):
        grid_world(3, 4, slip=1.5)
    # under jit the values are traced: the rows are not checked and the solve runs on what it got
    assert jax.jit(policy_evaluation)(unnormalised, rewards, policy, GAMMA).shape == (S,)
