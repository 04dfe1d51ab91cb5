import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from cookbook.reinforcement.actor_critic import actor_critic_loss, gae
from cookbook.reinforcement.dynamic_programming import grid_world
from rl_helpers import sample_episode

T = 11
advantages = gae  # runs one compiled core per shape
rlax_gae = jax.jit(rlax.truncated_generalized_advantage_estimation)


def trajectory(seed, T=T):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=T).astype(np.float32)
    discounts = (0.95 * (rng.uniform(size=T) > 0.2)).astype(np.float32)  # some episode ends
    values = rng.normal(size=T + 1).astype(np.float32)
    return rewards, discounts, values


def numpy_gae(rewards, discounts, values, lam):
    """Float64 reference: the lambda-weighted average of k-step advantages, as a Python loop."""
    r, d, v = (np.asarray(x, np.float64) for x in (rewards, discounts, values))
    out = np.zeros(len(r))
    for t in range(len(r)):
        total, weight = 0.0, 1.0
        for k in range(t, len(r)):
            total += weight * (r[k] + d[k] * v[k + 1] - v[k])
            weight *= d[k] * lam
        out[t] = total
    return out


@pytest.mark.parametrize("lam", [0.0, 0.7, 1.0])
def test_matches_rlax_and_a_float64_loop(lam):
    rewards, discounts, values = trajectory(int(lam * 10))
    got = advantages(rewards, discounts, values, lam)
    expected = rlax_gae(rewards, discounts, lam, values)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, numpy_gae(rewards, discounts, values, lam), rtol=1e-5, atol=1e-5)


def test_lambda_ends_are_td_errors_and_monte_carlo_returns():
    rewards, _, values = trajectory(3)
    discounts = np.full(T, 0.9, np.float32)
    td = rewards + discounts * values[1:] - values[:-1]
    np.testing.assert_allclose(advantages(rewards, discounts, values, 0.0), td, rtol=1e-5, atol=1e-6)
    returns = np.zeros(T)
    following = values[-1]
    for t in reversed(range(T)):
        following = rewards[t] + 0.9 * following
        returns[t] = following
    np.testing.assert_allclose(advantages(rewards, discounts, values, 1.0), returns - values[:-1], rtol=1e-5, atol=1e-5)


def test_loss_value_and_gradients():
    rewards, discounts, values = trajectory(4)
    logits = np.random.default_rng(5).normal(size=(T, 3)).astype(np.float32)
    actions = np.arange(T) % 3
    lam = 0.8
    a = numpy_gae(rewards, discounts, values, lam)
    log_pi = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    entropy = -(np.exp(log_pi) * log_pi).sum(axis=1)
    expected = np.mean(-a * log_pi[np.arange(T), actions] + 0.5 * a**2 - 0.01 * entropy)
    loss_grad = jax.jit(jax.value_and_grad(actor_critic_loss, argnums=(0, 1)))
    value, (g_logits, g_values) = loss_grad(logits, values, actions, rewards, discounts, lam)
    g_logits, g_values = np.asarray(g_logits), np.asarray(g_values)
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    # the critic moves towards its fixed targets: d/dV_t of 0.5 (target - V_t)^2 / T = -(target - V_t) / T
    np.testing.assert_allclose(g_values[:-1], -a / T, rtol=1e-4, atol=1e-6)
    assert g_values[-1] == 0.0  # the bootstrap value is only a target
    # the actor raises the taken action's logit where the advantage is positive
    taken = g_logits[np.arange(T), actions]
    assert (np.sign(taken[np.abs(a) > 1e-3]) == -np.sign(a[np.abs(a) > 1e-3])).all()


def test_bad_input():
    rewards, discounts, values = trajectory(6)
    with pytest.raises(ValueError, match="values must have shape"):
        gae(rewards, discounts, values[:-1], 0.9)
    with pytest.raises(ValueError, match="discounts must have shape"):
        gae(rewards, discounts[:3], values, 0.9)
    with pytest.raises(TypeError, match="rewards must be a floating-point"):
        gae(np.arange(T), discounts, values, 0.9)
    with pytest.raises(ValueError, match="lam must lie in"):
        gae(rewards, discounts, values, 1.5)
    with pytest.raises(ValueError, match="actions .* must lie in"):
        actor_critic_loss(np.zeros((T, 3), np.float32), values, np.full(T, 3), rewards, discounts, 0.9)


def test_tabular_actor_critic_learns_the_grid_world():
    """Sampled episodes only: the greedy policy reaches the optimal value of the start state."""
    gamma, episodes, steps, iterations = 0.9, 16, 12, 150
    transitions, rewards_table = jax.jit(grid_world, static_argnums=(0, 1))(3, 4)
    S, A = rewards_table.shape

    def episode(params, key):
        return sample_episode(transitions, rewards_table, params["logits"], key, steps)

    def loss(params, states, actions, rewards):
        values = params["values"][states]  # (steps + 1,)
        return actor_critic_loss(params["logits"][states[:-1]], values, actions, rewards,
                                 jnp.full(steps, gamma), 0.9)

    @jax.jit
    def train(key):
        params = {"logits": jnp.zeros((S, A)), "values": jnp.zeros(S)}

        def iteration(params, key):
            states, actions, rewards = jax.vmap(episode, in_axes=(None, 0))(params, jax.random.split(key, episodes))
            grads = jax.grad(lambda p: jax.vmap(loss, in_axes=(None, 0, 0, 0))(p, states, actions, rewards).mean())(params)
            return jax.tree.map(lambda p, g: p - 1.0 * g, params, grads), None

        return jax.lax.scan(iteration, params, jax.random.split(key, iterations))[0]

    params = train(jax.random.key(0))
    # the greedy policy's exact values, in NumPy float64 (policy evaluation of dynamic_programming)
    P, r = np.asarray(transitions, np.float64), np.asarray(rewards_table, np.float64)
    best = np.asarray(params["logits"]).argmax(axis=1)
    P_pi, r_pi = P[np.arange(S), best], r[np.arange(S), best]
    v_greedy = np.linalg.solve(np.eye(S) - gamma * P_pi, r_pi)
    # the optimal value of the start corner, 5 moves from the goal, is gamma ** 4 (dynamic_programming)
    np.testing.assert_allclose(v_greedy[0], gamma**4, rtol=1e-9)
