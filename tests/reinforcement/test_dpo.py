import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.reinforcement.dpo import bandit_loss, dpo_loss, optimal_policy

B, K, BETA = 11, 5, 0.5
loss = dpo_loss  # runs one compiled core per shape
loss_and_grad = jax.jit(jax.value_and_grad(dpo_loss, argnums=(0, 1, 2, 3)))


def logps(seed, n=B):
    return tuple(np.log(np.random.default_rng(seed + k).uniform(1e-4, 1.0, size=n)).astype(np.float32)
                 for k in range(4))


def numpy_dpo(pc, pr, rc, rr, beta):
    z = beta * ((pc.astype(np.float64) - rc) - (pr.astype(np.float64) - rr))
    return np.mean(np.logaddexp(0.0, -z))  # -log sigmoid(z)


def test_matches_float64_numpy():
    for seed, beta in ((0, 0.1), (1, 0.5), (2, 3.0)):
        args = logps(seed)
        np.testing.assert_allclose(loss(*args, beta), numpy_dpo(*args, beta), rtol=1e-6, atol=1e-7)


def test_loss_is_log_two_at_the_reference_and_symmetric():
    pc, pr, _, _ = logps(3)
    np.testing.assert_allclose(loss(pc, pr, pc, pr, BETA), np.log(2.0), rtol=1e-6)
    # swapping chosen and rejected turns -log sigma(z) into -log sigma(-z) = -log sigma(z) + z
    args = logps(4)
    z = BETA * ((args[0] - args[2]) - (args[1] - args[3]))
    swapped = loss(args[1], args[0], args[3], args[2], BETA)
    np.testing.assert_allclose(swapped, np.asarray(loss(*args, BETA)) + np.mean(z), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("big", [1e30, -1e30])
def test_extreme_inputs_stay_finite(big):
    ones = np.ones(B, np.float32)
    for signs in ((1, -1, -1, 1), (-1, 1, 1, -1), (1, 1, 1, 1), (1, -1, 1, -1)):
        args = [s * big * ones for s in signs]
        value, grads = loss_and_grad(*args, 0.1)
        assert np.isfinite(value) and all(np.isfinite(g).all() for g in grads)
    # a margin of -4e30 (scaled by beta = 0.1): the loss is about 4e29, as the page says
    value = loss(-1e30 * ones, 1e30 * ones, 1e30 * ones, -1e30 * ones, 0.1)
    np.testing.assert_allclose(value, 4e29, rtol=1e-6)
    # even at the largest float32 the differences do not overflow
    top = np.finfo(np.float32).max * ones
    assert np.isfinite(loss(top, -top, -top, top, 0.1)) and np.isfinite(loss(-top, top, top, -top, 0.1))


def test_gradient_direction_and_value():
    args = logps(5)
    _, grads = loss_and_grad(*args, BETA)
    g_pc, g_pr, g_rc, g_rr = (np.asarray(g) for g in grads)
    assert (g_pc < 0).all() and (g_pr > 0).all()  # raise the chosen answer, lower the rejected one
    np.testing.assert_allclose(g_rc, -g_pc, rtol=1e-6)
    np.testing.assert_allclose(g_rr, -g_pr, rtol=1e-6)
    z = BETA * ((args[0].astype(np.float64) - args[2]) - (args[1] - args[3]))
    expected = -BETA / (1 + np.exp(z)) / B  # -beta sigma(-z) / B
    np.testing.assert_allclose(g_pc, expected, rtol=1e-5, atol=1e-9)


def test_well_ordered_pairs_contribute_little():
    pc, pr, rc, rr = logps(6)
    _, grads = loss_and_grad(pc + 40.0, pr, rc, rr, BETA)  # margin 20 on every pair
    assert np.abs(grads[0]).max() < 1e-9


def test_dpo_on_a_bandit_reaches_the_closed_form_optimum():
    rng = np.random.default_rng(7)
    reference_logits = rng.normal(size=K).astype(np.float32)
    rewards = rng.normal(size=K).astype(np.float32)
    grad = jax.grad(bandit_loss)

    @jax.jit
    def train(logits):
        def step(logits, _):
            return logits - 2.0 * grad(logits, reference_logits, rewards, BETA), None
        return jax.lax.scan(step, logits, length=300)[0]

    start = train(reference_logits * 0)  # from the uniform policy, not the reference
    target = optimal_policy(reference_logits, rewards, BETA)
    start, target = np.asarray(start, np.float64), np.asarray(target)
    total_variation = 0.5 * np.abs(np.exp(start) / np.exp(start).sum() - target).sum()  # softmax in NumPy
    assert total_variation < 0.01, total_variation  # 0.0033 when written
    # the optimum is the reference tilted by exp(r / beta), computed here in float64
    tilted = np.exp(np.asarray(reference_logits, np.float64) + np.asarray(rewards, np.float64) / BETA)
    np.testing.assert_allclose(target, tilted / tilted.sum(), rtol=1e-5)


def test_bad_input():
    pc, pr, rc, rr = logps(8)
    with pytest.raises(ValueError, match="policy_rejected_logps must have shape"):
        dpo_loss(pc, pr[:3], rc, rr, BETA)
    with pytest.raises(ValueError, match="reference_chosen_logps must have 1 axes"):
        dpo_loss(pc, pr, rc[None], rr, BETA)
    with pytest.raises(TypeError, match="policy_chosen_logps must be a floating-point"):
        dpo_loss(np.arange(B), pr, rc, rr, BETA)
    with pytest.raises(ValueError, match="beta must be positive"):
        dpo_loss(pc, pr, rc, rr, 0.0)
    with pytest.raises(ValueError, match="at least one pair"):
        dpo_loss(pc[:0], pr[:0], rc[:0], rr[:0], BETA)
    with pytest.raises(ValueError, match="rewards must have shape"):
        optimal_policy(np.zeros(K, np.float32), np.zeros(K + 1, np.float32), BETA)
    with pytest.raises(ValueError, match="at least 2 arms"):
        bandit_loss(np.zeros(1, np.float32), np.zeros(1, np.float32), np.zeros(1, np.float32), BETA)
