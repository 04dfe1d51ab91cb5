import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from cookbook.reinforcement.dynamic_programming import policy_evaluation
from cookbook.reinforcement.policy_gradient import discounted_returns, reinforce_loss

T, K = 11, 5
# the bandit of the page: unit noise around these means, a fixed softmax policy
MEANS = 10 + np.array([-0.6, 0.2, 0.5, -0.3, 0.0])
BANDIT_LOGITS = np.array([0.3, -0.2, 0.1, 0.0, -0.4], np.float32)


def sample_index(probabilities, u):
    """Inverse-CDF sampling of an index from one uniform number (no threefry in the loop)."""
    cumulative = jnp.cumsum(probabilities)
    return jnp.minimum(jnp.sum(cumulative <= u * cumulative[-1]), probabilities.shape[0] - 1)


def closed_form_bandit(baseline):
    """Float64: the exact gradient of E[r] for softmax(BANDIT_LOGITS) and the total variance of the
    one-sample estimate (r - b)(e_a - pi), with r ~ N(mean_a, 1)."""
    pi = np.exp(BANDIT_LOGITS.astype(np.float64))
    pi /= pi.sum()
    E = np.eye(K) - pi  # row a: e_a - pi, the gradient of log pi(a) with respect to the logits
    gradient = pi * (MEANS - pi @ MEANS)
    second_moment = sum(pi[a] * ((MEANS[a] - baseline) ** 2 + 1.0) * (E[a] @ E[a]) for a in range(K))
    return pi, gradient, second_moment - gradient @ gradient


def test_returns_match_rlax_and_a_numpy_loop():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=T).astype(np.float32)
    discounts = (0.9 * (rng.uniform(size=T) > 0.2)).astype(np.float32)
    got = jax.jit(discounted_returns)(rewards, discounts)
    np.testing.assert_allclose(got, rlax.discounted_returns(rewards, discounts, 0.0), rtol=1e-5, atol=1e-6)
    expected, following = np.zeros(T), 0.0
    for t in reversed(range(T)):
        following = rewards[t] + discounts[t] * following
        expected[t] = following
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_bandit_estimate_is_unbiased_and_the_baseline_cuts_the_variance_ninety_fold():
    n = 20_000
    rng = np.random.default_rng(1)
    pi, exact, variance = closed_form_bandit(0.0)
    value = pi @ MEANS
    _, _, variance_baselined = closed_form_bandit(value)
    assert np.isclose(variance / variance_baselined, 90, atol=1)  # the page's factor, in closed form
    actions = rng.choice(K, size=n, p=pi)
    rewards = (MEANS[actions] + rng.normal(size=n)).astype(np.float32)
    logits = np.broadcast_to(BANDIT_LOGITS, (n, 1, K))

    @jax.jit
    def gradients(baseline):
        one = jax.grad(lambda l, a, r: -reinforce_loss(l, a[None], r[None], baseline[None], 1.0))
        return jax.vmap(one)(logits, actions, rewards)[:, 0]  # (n, K): ascent estimates

    for b, v in ((0.0, variance), (value, variance_baselined)):
        g = np.asarray(gradients(jnp.float32(b)), np.float64)
        standard_error = g.std(axis=0) / np.sqrt(n)
        assert (np.abs(g.mean(axis=0) - exact) < 4 * standard_error).all()  # unbiased either way
        np.testing.assert_allclose(g.var(axis=0).sum(), v, rtol=0.05)  # the closed-form variance


def test_episodes_estimate_the_exact_gradient_of_a_random_mdp():
    """REINFORCE on sampled episodes against the exact gradient of V(s_0), from differentiating the
    linear solve of policy evaluation; the value baseline V(s_t) keeps the mean and lowers the variance."""
    S, A, gamma, steps, n = 5, 3, 0.5, 25, 4000  # gamma ** steps < 3e-8: truncation is negligible
    rng = np.random.default_rng(2)
    P = jnp.asarray(rng.dirichlet(np.ones(S), size=(S, A)), jnp.float32)
    R = jnp.asarray(rng.normal(size=(S, A)) + 3.0, jnp.float32)  # rewards far from 0: baselines matter
    theta = rng.normal(size=(S, A)).astype(np.float32)
    u = rng.uniform(size=(n, steps, 2)).astype(np.float32)

    @jax.jit
    def exact_and_estimates(theta, u):
        start_value = lambda th: policy_evaluation(P, R, jax.nn.softmax(th, axis=1), gamma)[0]
        values = policy_evaluation(P, R, jax.nn.softmax(theta, axis=1), gamma)

        def episode(u):
            def step(state, u):
                action = sample_index(jax.nn.softmax(theta[state]), u[0])
                return sample_index(P[state, action], u[1]), (state, action, R[state, action])
            _, (states, actions, rewards) = jax.lax.scan(step, 0, u)
            returns = discounted_returns(rewards, jnp.full(steps, gamma))
            grad = jax.grad(lambda th, b: -reinforce_loss(th[states], actions, returns, b, gamma))
            return grad(theta, jnp.zeros(steps)), grad(theta, values[states])

        return jax.grad(start_value)(theta), jax.vmap(episode)(u)

    exact, (plain, baselined) = exact_and_estimates(theta, u)
    for g in (plain, baselined):
        g = np.asarray(g, np.float64)
        standard_error = g.std(axis=0) / np.sqrt(n)
        assert (np.abs(g.mean(axis=0) - exact) < 4 * standard_error + 1e-6).all()
    ratio = np.asarray(plain).var(axis=0).sum() / np.asarray(baselined).var(axis=0).sum()
    assert ratio > 20, ratio  # 36 when written


def test_gradient_ascent_with_reinforce_learns_the_best_arm():
    """Batches of 16 pulls, the batch's mean reward as baseline: the best arm's probability passes 0.9."""
    steps, batch = 300, 16
    noise = np.random.default_rng(3).normal(size=(steps, batch)).astype(np.float32)
    u = np.random.default_rng(4).uniform(size=(steps, batch)).astype(np.float32)
    means = jnp.asarray(MEANS, jnp.float32)

    @jax.jit
    def train(logits):
        def step(logits, inputs):
            noise, u = inputs
            actions = jax.vmap(sample_index, in_axes=(None, 0))(jax.nn.softmax(logits), u)
            rewards = means[actions] + noise
            baselines = jnp.full(batch, rewards.mean())

            def loss(logits):
                return jax.vmap(lambda a, r, b: reinforce_loss(logits[None], a[None], r[None], b[None], 1.0))(
                    actions, rewards, baselines).mean()
            return logits - 0.5 * jax.grad(loss)(logits), None
        return jax.nn.softmax(jax.lax.scan(step, logits, (noise, u))[0])

    pi = train(jnp.zeros(K))
    assert pi[np.argmax(MEANS)] > 0.9, pi  # 0.988 when written


def test_bad_input():
    logits, actions, returns = np.zeros((T, 3), np.float32), np.zeros(T, np.int32), np.zeros(T, np.float32)
    with pytest.raises(ValueError, match="actions .* must lie in"):
        reinforce_loss(logits, np.full(T, 3), returns, returns, 0.9)
    with pytest.raises(ValueError, match="baselines must have shape"):
        reinforce_loss(logits, actions, returns, returns[:3], 0.9)
    with pytest.raises(TypeError, match="returns must be a floating-point"):
        reinforce_loss(logits, actions, actions, returns, 0.9)
    with pytest.raises(ValueError, match="discount must be"):
        reinforce_loss(logits, actions, returns, returns, 1.5)
    with pytest.raises(ValueError, match="discounts must have shape"):
        discounted_returns(returns, returns[:3])
