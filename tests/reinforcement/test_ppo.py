import inspect
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from cookbook.reinforcement.actor_critic import gae
from cookbook.reinforcement.dynamic_programming import grid_world
from cookbook.reinforcement.ppo import (
    actor_critic, clipped_surrogate_loss, evaluate_cartpole, init_actor_critic, ppo_policy_loss, train_cartpole)
from rl_helpers import sample_episode

T = 11
# The losses check their input and then run one compiled core per shape: called as they are, they
# share it with the jit checks; the gradient and the reference are one compiled program each.
loss = clipped_surrogate_loss
loss_grad = jax.jit(jax.grad(clipped_surrogate_loss))
rlax_loss = jax.jit(rlax.clipped_surrogate_pg_loss)  # epsilon traced: one program for both values


def batch(seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 1.5, size=T).astype(np.float32), rng.normal(size=T).astype(np.float32)


@pytest.mark.parametrize("epsilon", [0.1, 0.2])
def test_matches_rlax_and_float64(epsilon):
    ratios, advantages = batch(int(epsilon * 10))
    expected = rlax_loss(ratios, advantages, epsilon)
    np.testing.assert_allclose(loss(ratios, advantages, epsilon), expected, rtol=1e-6, atol=1e-7)
    r, a = ratios.astype(np.float64), advantages.astype(np.float64)
    reference = -np.mean(np.minimum(r * a, np.clip(r, 1 - epsilon, 1 + epsilon) * a))
    np.testing.assert_allclose(loss(ratios, advantages, epsilon), reference, rtol=1e-6, atol=1e-7)


def test_gradient_is_zero_exactly_where_the_clip_binds():
    ratios, advantages = batch(3)
    grad = np.asarray(loss_grad(ratios, advantages, 0.2))
    flat = ((advantages > 0) & (ratios > 1.2)) | ((advantages < 0) & (ratios < 0.8))
    assert flat.any() and (~flat).any()
    np.testing.assert_array_equal(grad[flat], 0.0)
    np.testing.assert_allclose(grad[~flat], -advantages[~flat] / T, rtol=1e-6)
    # at ratio 1 the surrogate's gradient is the policy gradient: -A / T
    np.testing.assert_allclose(loss_grad(np.ones(T, np.float32), advantages, 0.2),
                               -advantages / T, rtol=1e-6)


def test_policy_loss_gradient_at_the_old_policy_is_the_policy_gradient():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(T, 3)).astype(np.float32)
    actions = np.arange(T) % 3
    advantages = rng.normal(size=T).astype(np.float32)
    log_pi = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    old = log_pi[np.arange(T), actions]
    grad = jax.jit(jax.grad(ppo_policy_loss))(logits, old, actions, advantages, 0.2)
    # the policy gradient -mean(A d log pi(a)/d logits) of a softmax, in NumPy: A (p - onehot(a)) / T
    pg = advantages[:, None] * (np.exp(log_pi) - np.eye(3)[actions]) / T
    np.testing.assert_allclose(grad, pg, rtol=1e-5, atol=1e-7)


def test_bad_input():
    ratios, advantages = batch(5)
    with pytest.raises(ValueError, match="advantages must have shape"):
        clipped_surrogate_loss(ratios, advantages[:3], 0.2)
    with pytest.raises(TypeError, match="ratios must be a floating-point"):
        clipped_surrogate_loss(np.ones(T, np.int32), advantages, 0.2)
    with pytest.raises(ValueError, match="epsilon must be positive"):
        clipped_surrogate_loss(ratios, advantages, -0.1)
    with pytest.raises(ValueError, match="actions .* must lie in"):
        ppo_policy_loss(np.zeros((T, 3), np.float32), np.zeros(T, np.float32), np.full(T, 3), advantages, 0.2)


def test_tabular_ppo_learns_the_grid_world():
    """Sampled episodes, four epochs of the clipped loss on each batch: the greedy policy is optimal."""
    gamma, episodes, steps, iterations, epochs = 0.9, 16, 12, 60, 4
    transitions, rewards_table = jax.jit(grid_world, static_argnums=(0, 1))(3, 4)
    S, A = rewards_table.shape

    def episode(params, key):
        return sample_episode(transitions, rewards_table, params["logits"], key, steps)

    def loss(params, states, actions, advantages, old_log_probs, targets):
        policy = ppo_policy_loss(params["logits"][states[:-1]], old_log_probs, actions, advantages, 0.2)
        return policy + 0.5 * jnp.mean((targets - params["values"][states[:-1]]) ** 2)

    @jax.jit
    def train(key):
        params = {"logits": jnp.zeros((S, A)), "values": jnp.zeros(S)}

        def iteration(params, key):
            states, actions, rewards = jax.vmap(episode, in_axes=(None, 0))(params, jax.random.split(key, episodes))
            values = params["values"][states]  # (episodes, steps + 1)
            advantages = jax.vmap(gae, in_axes=(0, None, 0, None))(rewards, jnp.full(steps, gamma), values, 0.9)
            targets = advantages + values[:, :-1]
            old = jnp.take_along_axis(jax.nn.log_softmax(params["logits"][states[:, :-1]]), actions[..., None], -1)[..., 0]

            def epoch(params, _):
                total = lambda p: jax.vmap(loss, in_axes=(None, 0, 0, 0, 0, 0))(
                    p, states, actions, advantages, old, targets).mean()
                return jax.tree.map(lambda p, g: p - 1.0 * g, params, jax.grad(total)(params)), None

            return jax.lax.scan(epoch, params, length=epochs)[0], None

        return jax.lax.scan(iteration, params, jax.random.split(key, iterations))[0]

    params = train(jax.random.key(0))
    P, r = np.asarray(transitions, np.float64), np.asarray(rewards_table, np.float64)
    best = np.asarray(params["logits"]).argmax(axis=1)
    v_greedy = np.linalg.solve(np.eye(S) - gamma * P[np.arange(S), best], r[np.arange(S), best])
    np.testing.assert_allclose(v_greedy[0], gamma**4, rtol=1e-9)  # the optimum (dynamic_programming)


# ---- CartPole ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cartpole_run():
    """The page's run (the figure's, shared through cookbook._memo when the book is built)."""
    start = time.perf_counter()
    params, curve = train_cartpole(jax.random.key(0))
    jax.block_until_ready(curve)
    return params, np.asarray(curve), time.perf_counter() - start


def test_ppo_solves_cartpole(cartpole_run):
    """The issue's bar: a mean return of at least 450 over 10 evaluation episodes (greedy policy)."""
    params, curve, seconds = cartpole_run
    returns = np.asarray(evaluate_cartpole(params, jax.random.key(7), 10))
    assert returns.shape == (10,) and returns.mean() >= 450, returns
    # it learned: episodes of a few dozen steps at first, near the limit of 500 at the end
    assert np.nanmean(curve[:5]) < 50 and np.nanmean(curve[-20:]) > 400
    print(f"PPO on CartPole: evaluation returns {returns}, training {seconds:.1f} s (compile included)")


def test_the_page_figures_are_the_defaults():
    defaults = {k: p.default for k, p in inspect.signature(train_cartpole).parameters.items() if k != "key"}
    assert defaults["envs"] * defaults["steps"] == 512
    assert defaults["envs"] * defaults["steps"] * defaults["iterations"] == 102_400
    assert defaults["iterations"] * defaults["epochs"] * defaults["minibatches"] == 3_200
    assert (defaults["envs"], defaults["steps"], defaults["epochs"], defaults["minibatches"], defaults["hidden"],
            defaults["iterations"]) == (8, 64, 4, 4, 64, 200)
    assert (defaults["learning_rate"], defaults["value_weight"], defaults["entropy_weight"],
            defaults["max_grad_norm"], defaults["epsilon"]) == (3e-3, 0.5, 0.01, 0.5, 0.2)


def test_actor_critic_shapes_vmap_and_bad_input():
    params = init_actor_critic(jax.random.key(2), hidden=64)  # the page's width: its compiled init
    assert [layer["W"].shape for layer in params] == [(4, 64), (64, 3)]
    observations = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    logits, values = jax.vmap(actor_critic, in_axes=(None, 0))(params, observations)
    assert logits.shape == (5, 2) and values.shape == (5,)
    logits = np.asarray(logits, np.float64)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)  # softmax in NumPy
    np.testing.assert_allclose(probs, 0.5, atol=0.02)  # the first policy: near uniform
    with pytest.raises(ValueError, match="observation must have shape"):
        actor_critic(params, observations)
    with pytest.raises(TypeError, match="observation must be a floating-point"):
        actor_critic(params, np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="params must be the two layers"):
        actor_critic(params[:1], observations[0])
    with pytest.raises(TypeError, match="hidden must be an int"):
        init_actor_critic(jax.random.key(0), hidden=6.5)
    with pytest.raises(TypeError, match="key must be a single PRNG key"):
        init_actor_critic(0)
    with pytest.raises(ValueError, match="minibatches must divide"):
        train_cartpole(jax.random.key(0), envs=3, steps=5, minibatches=4)
    with pytest.raises(TypeError, match="iterations must be an int"):
        train_cartpole(jax.random.key(0), iterations=10.0)
    with pytest.raises(ValueError, match="learning_rate must be positive"):
        train_cartpole(jax.random.key(0), learning_rate=-1.0)
    with pytest.raises(ValueError, match=r"lam in \[0, 1\]"):
        train_cartpole(jax.random.key(0), lam=1.5)
    with pytest.raises(ValueError, match="episodes must be at least 1"):
        evaluate_cartpole(params, jax.random.key(0), 0)
