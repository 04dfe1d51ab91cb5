import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from cookbook.reinforcement.dpo import optimal_policy
from cookbook.reinforcement.reward_model import (bradley_terry_loss, kl_regularised_objective, linear_reward,
                                                 log_partition, reward_model_loss)

B, K, D, N, BETA = 11, 7, 5, 4000, 0.3
loss_and_grad = jax.jit(jax.value_and_grad(bradley_terry_loss, argnums=(0, 1)))


def numpy_objective(logits, reference_logits, rewards, beta):
    """Float64: E_pi[r] - beta KL(pi || pi_ref), written out."""
    logits, reference_logits, rewards = (np.asarray(x, np.float64) for x in (logits, reference_logits, rewards))
    pi = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    ref = np.exp(reference_logits - reference_logits.max()) / np.exp(reference_logits - reference_logits.max()).sum()
    return float(pi @ rewards - beta * (pi * np.log(pi / ref)).sum()), pi, ref


def bandit(seed):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=K).astype(np.float32), rng.normal(size=K).astype(np.float32),
            rng.normal(size=K).astype(np.float32))


def test_bradley_terry_loss_and_gradient_match_float64_numpy():
    rng = np.random.default_rng(0)
    chosen, rejected = (rng.normal(scale=3.0, size=B).astype(np.float32) for _ in range(2))
    value, (g_chosen, g_rejected) = loss_and_grad(chosen, rejected)
    d = chosen.astype(np.float64) - rejected
    np.testing.assert_allclose(value, np.mean(np.logaddexp(0.0, -d)), rtol=1e-6)
    np.testing.assert_allclose(g_chosen, -1 / (1 + np.exp(d)) / B, rtol=1e-5, atol=1e-9)  # -sigma(-d) / B
    np.testing.assert_allclose(g_rejected, -g_chosen, rtol=1e-6)


def test_loss_depends_only_on_differences_and_stays_finite():
    rng = np.random.default_rng(1)
    chosen, rejected = (rng.normal(size=B).astype(np.float32) for _ in range(2))
    for shift in (-100.0, 7.0, 1e3):
        np.testing.assert_allclose(loss_and_grad(chosen + shift, rejected + shift)[0],
                                   loss_and_grad(chosen, rejected)[0], rtol=1e-4)
    top = np.full(B, np.finfo(np.float32).max, np.float32)
    value, grads = loss_and_grad(-top / 2, top / 2)  # a margin of -max float32: the loss is max float32
    np.testing.assert_allclose(value, np.finfo(np.float32).max, rtol=1e-6)
    assert all(np.isfinite(g).all() for g in grads)
    value, grads = loss_and_grad(-top, top)  # a margin of -2 max: the true loss is not a float32
    assert all(np.isfinite(g).all() for g in grads)
    assert float(loss_and_grad(top, -top)[0]) == 0.0


def test_linear_reward_model_matches_sklearn_and_recovers_the_true_weights():
    """N sampled preferences from a true linear reward: the fit is sklearn's logistic regression on
    feature differences, and lies within 0.15 of the true weights (0.03 when written)."""
    rng = np.random.default_rng(2)
    true_weights = rng.normal(size=D)
    first, second = rng.normal(size=(2, N, D))
    first_wins = rng.uniform(size=N) < 1 / (1 + np.exp(-(first - second) @ true_weights))
    chosen = np.where(first_wins[:, None], first, second).astype(np.float32)
    rejected = np.where(first_wins[:, None], second, first).astype(np.float32)
    grad = jax.grad(reward_model_loss)

    @jax.jit
    def fit(chosen, rejected):
        def step(weights, _):
            return weights - 2.0 * grad(weights, chosen, rejected), None
        weights = jax.lax.scan(step, jnp.zeros(D), length=200)[0]
        return weights, reward_model_loss(weights, chosen, rejected), reward_model_loss(
            jnp.asarray(true_weights, jnp.float32), chosen, rejected)

    weights, fitted_loss, true_loss = fit(chosen, rejected)
    # the same maximum-likelihood problem: labels 1 for (chosen - rejected) and 0 for its negative
    differences = np.concatenate([chosen - rejected, rejected - chosen]).astype(np.float64)
    labels = np.concatenate([np.ones(N), np.zeros(N)])
    sklearn_fit = LogisticRegression(C=np.inf, fit_intercept=False, tol=1e-10, max_iter=1000).fit(differences, labels)
    np.testing.assert_allclose(weights, sklearn_fit.coef_[0], rtol=0, atol=1e-3)
    assert np.abs(weights - true_weights).max() < 0.15
    assert fitted_loss <= true_loss
    np.testing.assert_allclose(linear_reward(weights, chosen[:3]), chosen[:3] @ np.asarray(weights), rtol=1e-5)


@jax.jit
def optimum_and_objectives(reference_logits, rewards, other_logits, beta=BETA):
    """pi*, J(pi*), log Z, the gradient of J at pi*, and J at each row of other_logits: one program."""
    pi_star = optimal_policy(reference_logits, rewards, beta)
    best = kl_regularised_objective(jnp.log(pi_star), reference_logits, rewards, beta)
    gradient = jax.grad(kl_regularised_objective)(jnp.log(pi_star), reference_logits, rewards, beta)
    others = jax.vmap(kl_regularised_objective, in_axes=(0, None, None, None))(other_logits, reference_logits,
                                                                                rewards, beta)
    return pi_star, best, log_partition(reference_logits, rewards, beta), gradient, others


def test_closed_form_optimum_maximises_the_objective():
    reference_logits, rewards, _ = bandit(3)
    other_logits = np.random.default_rng(4).normal(scale=2.0, size=(5, K)).astype(np.float32)
    pi_star, best, log_z, gradient, others = optimum_and_objectives(reference_logits, rewards, other_logits, BETA)
    np.testing.assert_allclose(best, BETA * log_z, rtol=1e-5)
    np.testing.assert_allclose(numpy_objective(np.log(pi_star), reference_logits, rewards, BETA)[0], BETA * log_z,
                               rtol=1e-5)
    assert np.abs(gradient).max() < 1e-5  # stationary there: the gradient with respect to the logits vanishes
    # J(pi) = beta log Z - beta KL(pi || pi*) for any pi, against float64 NumPy
    for logits, got in zip(other_logits, others):
        expected, pi, _ = numpy_objective(logits, reference_logits, rewards, BETA)
        kl_to_optimum = (pi * np.log(pi / np.asarray(pi_star, np.float64))).sum()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(expected, BETA * float(log_z) - BETA * kl_to_optimum, rtol=1e-5, atol=1e-6)
        assert expected < float(best)


def test_the_reward_is_read_back_from_the_optimum_and_beta_interpolates():
    reference_logits, rewards, other_logits = bandit(8)
    other_logits = np.stack([other_logits] * 5)
    log_reference = np.asarray(reference_logits, np.float64) - np.log(np.exp(np.asarray(reference_logits, np.float64)).sum())
    pi_star, _, log_z, _, _ = optimum_and_objectives(reference_logits, rewards, other_logits, BETA)
    np.testing.assert_allclose(BETA * (np.log(np.asarray(pi_star, np.float64)) - log_reference) + BETA * float(log_z),
                               rewards, rtol=1e-4, atol=1e-5)
    # a large beta keeps the reference; a small one picks the best answer
    np.testing.assert_allclose(optimum_and_objectives(reference_logits, rewards, other_logits, 1e4)[0],
                               np.exp(log_reference), atol=1e-4)
    assert optimum_and_objectives(reference_logits, rewards, other_logits, 1e-3)[0][np.argmax(rewards)] > 0.999


def test_bad_input():
    chosen = np.zeros(B, np.float32)
    with pytest.raises(ValueError, match="rejected_rewards must have shape"):
        bradley_terry_loss(chosen, chosen[:3])
    with pytest.raises(TypeError, match="chosen_rewards must be a floating-point"):
        bradley_terry_loss(np.arange(B), chosen)
    with pytest.raises(ValueError, match="at least one pair"):
        bradley_terry_loss(chosen[:0], chosen[:0])
    with pytest.raises(ValueError, match="features must have shape"):
        linear_reward(np.zeros(D, np.float32), np.zeros((3, D + 1), np.float32))
    with pytest.raises(ValueError, match="rejected_features must have shape"):
        reward_model_loss(np.zeros(D, np.float32), np.zeros((3, D), np.float32), np.zeros((4, D), np.float32))
    with pytest.raises(ValueError, match="beta must be positive"):
        kl_regularised_objective(np.zeros(K, np.float32), np.zeros(K, np.float32), np.zeros(K, np.float32), 0.0)
    with pytest.raises(ValueError, match="reference_logits must have shape"):
        kl_regularised_objective(np.zeros(K, np.float32), np.zeros(K + 1, np.float32), np.zeros(K + 1, np.float32), 1.0)
    with pytest.raises(ValueError, match="rewards must have shape"):
        log_partition(np.zeros(K, np.float32), np.zeros(K - 1, np.float32), 1.0)
