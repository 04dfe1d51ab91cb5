import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.reinforcement.grpo import grpo_loss, group_advantages, kl_estimate
from cookbook.reinforcement.ppo import clipped_surrogate_loss

G, L, EPSILON, BETA = 7, 5, 0.2, 0.04
# The functions are called as they are: each checks its input, then runs one compiled core (a jax.jit
# around them would compile a second program; tests/test_replay.py checks them under jax.jit).


def group(seed):
    rng = np.random.default_rng(seed)
    old = np.log(rng.uniform(0.05, 1.0, size=(G, L))).astype(np.float32)
    new = (old + rng.normal(scale=0.3, size=(G, L))).astype(np.float32)
    ref = (old + rng.normal(scale=0.3, size=(G, L))).astype(np.float32)
    rewards = rng.integers(0, 2, size=G).astype(np.float32)
    lengths = rng.integers(1, L + 1, size=G)
    mask = (np.arange(L)[None, :] < lengths[:, None]).astype(np.float32)
    return new, old, ref, rewards, mask


def numpy_grpo(new, old, ref, advantages, mask, epsilon, beta):
    """Float64 loops over answers and tokens."""
    total = 0.0
    for i in range(new.shape[0]):
        terms = []
        for t in range(new.shape[1]):
            if mask[i, t]:
                ratio = np.exp(np.float64(new[i, t]) - old[i, t])
                surrogate = min(ratio * advantages[i], np.clip(ratio, 1 - epsilon, 1 + epsilon) * advantages[i])
                x = np.exp(np.float64(ref[i, t]) - new[i, t])
                terms.append(surrogate - beta * (x - np.log(x) - 1))
        total += np.mean(terms)
    return -total / new.shape[0]


def test_group_advantages_are_standardised_and_affine_invariant():
    rewards = np.random.default_rng(0).normal(size=G).astype(np.float32)
    a = np.asarray(group_advantages(rewards), np.float64)
    r = rewards.astype(np.float64)
    np.testing.assert_allclose(a, (r - r.mean()) / (r.std() + 1e-6), rtol=1e-5, atol=1e-6)
    assert abs(a.mean()) < 1e-6 and abs(a.std() - 1) < 1e-5
    np.testing.assert_allclose(group_advantages(3.0 * rewards - 7.0), a, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(group_advantages(np.full(G, 5.0, np.float32)), np.zeros(G))  # no NaN
    # a batch of groups: vmap over prompts
    batch = np.stack([rewards, -rewards])
    np.testing.assert_allclose(jax.vmap(group_advantages)(batch), np.stack([a, -a]), rtol=1e-5, atol=1e-6)


def test_kl_estimate_is_non_negative_and_its_mean_is_the_kl_divergence():
    rng = np.random.default_rng(1)
    K = 11
    pi, ref = rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K))
    per_token = np.asarray(kl_estimate(np.log(pi)[None].astype(np.float32),
                                                np.log(ref)[None].astype(np.float32)), np.float64)[0]
    assert (per_token >= 0).all()
    # E_{o ~ pi}[D(o)], taken exactly over the K tokens, is KL(pi || ref)
    np.testing.assert_allclose(pi @ per_token, np.sum(pi * np.log(pi / ref)), rtol=1e-5)
    # accurate near x = 1: D = x - log x - 1 is about (log x)^2 / 2 there
    small = np.array([[1e-4, -1e-4, 1e-3]], np.float32)
    np.testing.assert_allclose(kl_estimate(np.zeros_like(small), small), small**2 / 2, rtol=2e-2)


def test_loss_matches_a_float64_loop_and_ignores_padding():
    for seed in range(3):
        new, old, ref, rewards, mask = group(seed)
        advantages = group_advantages(rewards)
        expected = numpy_grpo(new, old, ref, np.asarray(advantages, np.float64), mask, EPSILON, BETA)
        np.testing.assert_allclose(grpo_loss(new, old, ref, advantages, mask, EPSILON, BETA), expected, rtol=1e-5, atol=1e-6)
        padded = np.where(mask > 0, new, 123.0).astype(np.float32)  # anything at the padding, even exp-overflowing
        value, grads = jax.jit(jax.value_and_grad(grpo_loss))(padded, old, ref, advantages, mask, EPSILON, BETA)
        np.testing.assert_allclose(value, grpo_loss(new, old, ref, advantages, mask, EPSILON, BETA), rtol=1e-6)
        grads = np.asarray(grads)
        assert np.isfinite(grads).all() and (grads[mask == 0] == 0).all()


def test_one_token_answers_without_penalty_are_ppos_clipped_surrogate():
    new, old, ref, rewards, _ = group(4)
    advantages = group_advantages(rewards)
    ones = np.ones((G, L), np.float32)
    one_token = grpo_loss(new, old, ref, advantages, ones * (np.arange(L) == 0), EPSILON, 0.0)
    ratios = np.exp(new[:, 0] - old[:, 0])
    np.testing.assert_allclose(one_token, clipped_surrogate_loss(ratios, advantages, EPSILON), rtol=1e-5, atol=1e-7)


def test_grpo_raises_the_pass_rate_on_generated_addition():
    """Prompts a + b with a, b in 0..4, answers 0..8, reward 1 for the right sum. A tabular policy
    (logits for each prompt) starts at chance, 1/9, and GRPO with groups of 8 raises its pass rate
    above 0.9."""
    steps, group_size, inner = 60, 8, 2
    a, b = np.divmod(np.arange(25), 5)
    answers = (a + b).astype(np.int32)
    u = np.random.default_rng(5).uniform(size=(steps, 25, group_size)).astype(np.float32)

    def log_policy(params):
        return jax.nn.log_softmax(params["logits"])  # (25, 9)

    def pass_rate(params):
        return jnp.exp(log_policy(params))[jnp.arange(25), answers].mean()

    def batch_loss(params, old_logp, ref_logp, samples, advantages):
        logp = jnp.take_along_axis(log_policy(params), samples, axis=1)  # (25, G)
        per_prompt = jax.vmap(grpo_loss, in_axes=(0, 0, 0, 0, None, None, None))(
            logp[:, :, None], old_logp[:, :, None], ref_logp[:, :, None], advantages,
            jnp.ones((group_size, 1)), EPSILON, BETA)
        return per_prompt.mean()

    @jax.jit
    def train(params):
        reference = jax.lax.stop_gradient(log_policy(params))

        def step(params, u):
            logp = log_policy(params)
            cumulative = jnp.cumsum(jnp.exp(logp), axis=1)  # (25, 9): inverse-CDF sampling of G answers
            samples = jnp.minimum(jnp.sum(cumulative[:, None, :] <= u[:, :, None], axis=2), 8)  # (25, G)
            rewards = (samples == answers[:, None]).astype(jnp.float32)
            advantages = jax.vmap(group_advantages)(rewards)
            old_logp = jnp.take_along_axis(logp, samples, axis=1)
            ref_logp = jnp.take_along_axis(reference, samples, axis=1)
            for _ in range(inner):  # a few steps on the same group: the ratios move and the clip acts
                grads = jax.grad(batch_loss)(params, old_logp, ref_logp, samples, advantages)
                params = jax.tree.map(lambda p, g: p - 10.0 * g, params, grads)
            return params, pass_rate(params)

        return jax.lax.scan(step, params, u)

    params = {"logits": np.zeros((25, 9), np.float32)}
    _, rates = train(params)
    rates = np.asarray(rates)
    assert abs(float(jax.jit(pass_rate)(params)) - 1 / 9) < 1e-6
    assert rates[-1] > 0.9, rates[::10]  # 0.98 when written


def test_bad_input():
    new, old, ref, rewards, mask = group(6)
    advantages = np.zeros(G, np.float32)
    with pytest.raises(ValueError, match="at least 2 answers"):
        group_advantages(np.ones(1, np.float32))
    with pytest.raises(TypeError, match="rewards must be a floating-point"):
        group_advantages(np.arange(G))
    with pytest.raises(ValueError, match="old_log_probs must have shape"):
        grpo_loss(new, old[:, :2], ref, advantages, mask, EPSILON, BETA)
    with pytest.raises(ValueError, match="advantages must have shape"):
        grpo_loss(new, old, ref, advantages[:3], mask, EPSILON, BETA)
    empty = mask.copy()
    empty[2] = 0.0
    with pytest.raises(ValueError, match="at least one real token"):
        grpo_loss(new, old, ref, advantages, empty, EPSILON, BETA)
    with pytest.raises(ValueError, match="epsilon must be positive"):
        grpo_loss(new, old, ref, advantages, mask, 0.0, BETA)
    with pytest.raises(ValueError, match="beta must be non-negative"):
        grpo_loss(new, old, ref, advantages, mask, EPSILON, -1.0)
    with pytest.raises(ValueError, match="reference_log_probs must have shape"):
        kl_estimate(new, ref[:3])
