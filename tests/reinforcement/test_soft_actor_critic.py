import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cookbook.reinforcement.soft_actor_critic import (Batch, _sac_losses, actor_loss, critic_loss, critics, evaluate,
                                                      init_actor, init_critics, polyak_update, sample_tanh_gaussian,
                                                      soft_q_targets, soft_value_iteration, tanh_gaussian_log_prob,
                                                      temperature_loss, train_sac)

B, D, O, H = 7, 3, 5, 11  # batch, action dimensions, observation size, hidden units
log_prob_batch = jax.jit(jax.vmap(tanh_gaussian_log_prob))


def numpy_log_prob(mean, log_std, u):
    """log N(u; mean, std^2) - sum log(1 - tanh(u)^2), in float64 NumPy, one row per example."""
    mean, log_std, u = (np.asarray(x, np.float64) for x in (mean, log_std, u))
    std = np.exp(log_std)
    gaussian = -0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * np.log(2 * np.pi)
    return (gaussian - np.log(1.0 - np.tanh(u) ** 2)).sum(axis=-1)


def gaussians(seed, spread=1.0):
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=(B, D)).astype(np.float32)
    log_std = rng.uniform(-1.5, 0.5, size=(B, D)).astype(np.float32)
    u = (mean + spread * rng.normal(size=(B, D))).clip(-3, 3).astype(np.float32)
    return mean, log_std, u


def test_log_prob_matches_distrax_and_a_float64_formula():
    mean, log_std, u = gaussians(0)

    @jax.jit
    def distrax_log_prob(mean, log_std, u):
        def one(mean, log_std, u):
            policy = distrax.Transformed(distrax.MultivariateNormalDiag(mean, jnp.exp(log_std)),
                                         distrax.Block(distrax.Tanh(), 1))
            return policy.log_prob(jnp.tanh(u))
        return jax.vmap(one)(mean, log_std, u)

    ours = log_prob_batch(mean, log_std, u)
    np.testing.assert_allclose(ours, numpy_log_prob(mean, log_std, u), rtol=1e-5, atol=1e-5)
    # distrax inverts tanh of the action (atanh in float32), so it agrees to about 1e-3 when |u| <= 3
    np.testing.assert_allclose(ours, distrax_log_prob(mean, log_std, u), rtol=2e-3, atol=2e-3)
    # far in the tail tanh(u) rounds to 1 in float32: distrax, given the action, returns NaN; the
    # recipe, given u, stays finite and matches the float64 formula
    # the page: in float32 tanh(u) is exactly 1 for u >= 10, in JAX (XLA's tanh) from u = 8
    assert np.tanh(np.float32(10.0)) == 1.0 and np.tanh(np.float32(9.5)) < 1.0
    below, at = np.asarray(jax.jit(jnp.tanh)(np.float32([7.95, 8.0])))
    assert below < 1.0 and at == 1.0
    # B rows (the shape of the programs above), each holding a u far in the tail
    far = np.stack([np.roll(np.float32([0.5, 12.0, -15.0]), b) for b in range(B)])
    zeros = np.zeros((B, D), np.float32)
    assert not np.isfinite(distrax_log_prob(zeros, zeros, far)).any()
    np.testing.assert_allclose(log_prob_batch(zeros, zeros, far), numpy_log_prob(zeros, zeros, far), rtol=1e-5)


def test_density_integrates_to_one_over_the_actions():
    """In one dimension, the density of a = tanh(u) on (-1, 1), integrated over a, is 1 (Jacobian included)."""
    a = np.linspace(-1, 1, 20001)[1:-1]
    u = np.arctanh(a).astype(np.float32)[:, None]
    mean, log_std = np.full_like(u, 0.7), np.full_like(u, -0.3)
    density = np.exp(np.asarray(log_prob_batch(mean, log_std, u), np.float64))
    assert abs(np.trapezoid(density, a) - 1.0) < 1e-4


def test_sample_is_the_squashed_reparameterised_gaussian():
    mean, log_std, _ = gaussians(1)

    @jax.jit  # one program: the keys, the samples, and the standard normal noise each key gives
    def sample_and_noise(key, mean, log_std):
        keys = jax.random.split(key, B)
        return jax.vmap(sample_tanh_gaussian)(keys, mean, log_std), jax.vmap(lambda k: jax.random.normal(k, (D,)))(keys)

    (actions, log_probs), noise = sample_and_noise(jax.random.key(0), mean, log_std)
    u = mean + np.exp(log_std) * np.asarray(noise)
    np.testing.assert_allclose(actions, np.tanh(u), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_probs, numpy_log_prob(mean, log_std, u), rtol=1e-4, atol=1e-4)


def test_soft_targets_match_a_numpy_loop():
    rng = np.random.default_rng(2)
    rewards, log_probs = rng.normal(size=(2, B)).astype(np.float32)
    discounts = (0.99 * (rng.uniform(size=B) > 0.3)).astype(np.float32)
    next_q = rng.normal(size=(B, 2)).astype(np.float32)
    y = np.asarray(jax.jit(soft_q_targets)(rewards, discounts, next_q, log_probs, 0.2))
    for b in range(B):
        expected = float(rewards[b]) + float(discounts[b]) * (min(next_q[b]) - 0.2 * float(log_probs[b]))
        assert np.isclose(y[b], expected, rtol=1e-6, atol=1e-6)


def small_problem(seed):
    rng = np.random.default_rng(seed)
    # Weights drawn in NumPy in init's shapes, at init's scales (1 / sqrt(fan-in), the actor's last
    # layer 0.01 of it), biases nonzero: jax.random and the eager scaling compile a program per shape.
    def draw(shapes, scale_last=1.0):
        return [{"W": rng.standard_normal(layer["W"].shape).astype(np.float32)
                 * np.float32((scale_last if l == len(shapes) - 1 else 1.0) / np.sqrt(layer["W"].shape[-2])),
                 "b": 0.1 * rng.standard_normal(layer["b"].shape).astype(np.float32)}
                for l, layer in enumerate(shapes)]

    actor_params = draw(jax.eval_shape(lambda k: init_actor(k, O, D, H), jax.random.key(0)), scale_last=0.01)
    critic_shapes = jax.eval_shape(lambda k: init_critics(k, O, D, H), jax.random.key(0))
    critic_params, target_params = draw(critic_shapes), draw(critic_shapes)
    batch = Batch(*(rng.normal(size=s).astype(np.float32) for s in ((B, O), (B, D), (B,))),
                  np.full(B, 0.99, np.float32), rng.normal(size=(B, O)).astype(np.float32))
    noise = rng.normal(size=(2, B, D)).astype(np.float32)
    return actor_params, critic_params, target_params, batch, noise


def test_no_gradient_reaches_the_target_critics_and_the_joint_gradient_splits():
    actor_params, critic_params, target_params, batch, noise = small_problem(3)
    alpha = 0.3

    @jax.jit
    def gradients(actor_params, critic_params, target_params):
        g_critic = jax.grad(critic_loss, argnums=(0, 1, 2))(critic_params, target_params, actor_params, batch, alpha,
                                                            noise[0])
        g_actor, log_probs = jax.grad(actor_loss, has_aux=True)(actor_params, critic_params, batch.observations, alpha,
                                                                 noise[1])
        flat, unravel = jax.flatten_util.ravel_pytree((actor_params, critic_params, jnp.log(alpha)))
        target_flat = jax.flatten_util.ravel_pytree((actor_params, target_params, jnp.log(alpha)))[0]
        joint = unravel(jax.grad(_sac_losses)(flat, target_flat, batch, noise, unravel, -float(D)))
        return g_critic, g_actor, log_probs, joint

    (g_critic, g_target, g_actor_from_critic), g_actor, log_probs, joint = gradients(actor_params, critic_params,
                                                                                    target_params)
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves((g_target, g_actor_from_critic)))
    assert all(np.abs(np.asarray(g)).max() > 0 for g in jax.tree.leaves(g_critic))
    # one gradient of the summed losses gives each part its own loss's gradient; the temperature's
    # is alpha * (entropy - target), the entropy estimated as -mean(log pi)
    g_alpha = alpha * (-np.mean(np.asarray(log_probs, np.float64)) + D)
    for got, want in zip(jax.tree.leaves(joint), jax.tree.leaves((g_actor, g_critic, g_alpha))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_temperature_rises_when_entropy_is_below_target_and_falls_above():
    grad = jax.jit(jax.grad(temperature_loss))
    log_alpha = np.float32(np.log(0.5))
    low_entropy = np.array([1.0, 2.0, 3.0], np.float32)  # entropy estimate -2, target -1: too certain
    high_entropy = -low_entropy  # entropy 2
    assert float(grad(log_alpha, low_entropy, -1.0)) < 0  # gradient descent raises alpha
    assert float(grad(log_alpha, high_entropy, -1.0)) > 0
    # the gradient is alpha * (entropy - target)
    np.testing.assert_allclose(grad(log_alpha, low_entropy, -1.0), 0.5 * (-2.0 + 1.0), rtol=1e-6)
    np.testing.assert_allclose(grad(log_alpha, high_entropy, -1.0), 0.5 * (2.0 + 1.0), rtol=1e-6)


def test_polyak_update():
    target = {"W": np.zeros((2, 3), np.float32), "b": np.ones(3, np.float32)}
    online = {"W": np.ones((2, 3), np.float32), "b": np.full(3, 3.0, np.float32)}
    out = jax.jit(polyak_update)(target, online, 0.1)
    np.testing.assert_allclose(out["W"], 0.1, rtol=1e-6)
    np.testing.assert_allclose(out["b"], 1.2, rtol=1e-6)
    reference = optax.incremental_update(online, target, 0.1)  # optax's Polyak average (new tensors first)
    for k in online:
        np.testing.assert_allclose(out[k], reference[k], rtol=1e-6)
    copied = jax.jit(polyak_update)(target, online, 1.0)
    assert all(np.array_equal(copied[k], online[k]) for k in online)


def random_mdp(seed, S=5, A=3):
    rng = np.random.default_rng(seed)
    transitions = rng.uniform(size=(S, A, S)) ** 3
    transitions /= transitions.sum(axis=2, keepdims=True)
    return transitions.astype(np.float32), rng.normal(size=(S, A)).astype(np.float32)


def test_soft_value_iteration_fixed_point_is_the_soft_bellman_backup():
    """Soft value iteration (log-sum-exp) against a float64 NumPy loop; at its fixed point the
    sampled-form backup of SAC, soft_q_targets averaged over next states and next actions drawn from
    the Boltzmann policy, gives Q back; as alpha -> 0 it tends to value iteration."""
    transitions, rewards = random_mdp(4)
    S, A = rewards.shape
    gamma, iterations = 0.8, 100
    solve = jax.jit(soft_value_iteration, static_argnames="num_iterations")
    P, r = transitions.astype(np.float64), rewards.astype(np.float64)
    for alpha in (0.5, 2.0):
        q = np.asarray(solve(transitions, rewards, gamma, alpha, iterations), np.float64)
        q_np = np.zeros((S, A))
        for _ in range(iterations):
            m = q_np.max(axis=1)
            v = m + alpha * np.log(np.exp((q_np - m[:, None]) / alpha).sum(axis=1))
            q_np = r + gamma * P @ v
        np.testing.assert_allclose(q, q_np, rtol=1e-5, atol=1e-5)
        # SAC's backup at every (s, a): E_{s'} E_{a' ~ pi} [r + gamma (Q(s', a') - alpha log pi(a' | s'))]
        log_pi = (q - q.max(axis=1, keepdims=True)) / alpha
        log_pi -= np.log(np.exp(log_pi).sum(axis=1, keepdims=True))  # the Boltzmann policy (S, A)
        y = np.asarray(soft_q_targets(np.repeat(rewards.reshape(-1), S * A),
                                      np.full(S * A * S * A, gamma, np.float32),
                                      np.tile(np.repeat(q.reshape(-1), 2)[None], (S * A, 1)).reshape(-1, 2).astype(np.float32),
                                      np.tile(log_pi.reshape(-1), S * A).astype(np.float32), alpha), np.float64)
        weights = P[:, :, :, None] * np.exp(log_pi)[None, None]  # p(s' | s, a) pi(a' | s'), (S, A, S, A)
        np.testing.assert_allclose((weights.reshape(S * A, -1) * y.reshape(S * A, -1)).sum(axis=1),
                                   q.reshape(-1), rtol=1e-4, atol=1e-4)
    # as alpha -> 0 the soft maximum becomes the maximum: hard value iteration's Q*
    q_star = np.zeros((S, A))
    for _ in range(iterations):
        q_star = r + gamma * P @ q_star.max(axis=1)
    np.testing.assert_allclose(solve(transitions, rewards, gamma, 1e-3, iterations), q_star, atol=5e-3)


def test_bad_input():
    mean, log_std, u = gaussians(5)
    with pytest.raises(ValueError, match="log_std must have shape"):
        tanh_gaussian_log_prob(mean[0], log_std[0, :2], u[0])
    with pytest.raises(TypeError, match="pre_tanh must be a floating-point"):
        tanh_gaussian_log_prob(mean[0], log_std[0], np.zeros(D, np.int32))
    with pytest.raises(ValueError, match="mean must have 1 axes"):
        sample_tanh_gaussian(jax.random.key(0), mean, log_std)
    with pytest.raises(ValueError, match="next_q must have shape"):
        soft_q_targets(np.zeros(B, np.float32), np.ones(B, np.float32), np.zeros((B, 3), np.float32),
                       np.zeros(B, np.float32), 0.1)
    with pytest.raises(ValueError, match="alpha must be positive"):
        soft_q_targets(np.zeros(B, np.float32), np.ones(B, np.float32), np.zeros((B, 2), np.float32),
                       np.zeros(B, np.float32), -0.1)
    with pytest.raises(ValueError, match="tau must lie in"):
        polyak_update({"w": np.zeros(3, np.float32)}, {"w": np.ones(3, np.float32)}, 1.5)
    with pytest.raises(ValueError, match="target_params"):
        polyak_update({"w": np.zeros(2, np.float32)}, {"w": np.ones(3, np.float32)}, 0.1)
    with pytest.raises(TypeError, match="log_alpha must be a floating-point"):
        temperature_loss(np.int32(0), np.zeros(B, np.float32), -1.0)
    transitions, rewards = random_mdp(0)
    with pytest.raises(ValueError, match="discount must lie in"):
        soft_value_iteration(transitions, rewards, 1.0, 0.5, 3)
    with pytest.raises(TypeError, match="num_iterations must be an int"):
        soft_value_iteration(transitions, rewards, 0.9, 0.5, 3.0)
    with pytest.raises(ValueError, match="rewards must have shape"):
        soft_value_iteration(transitions, rewards[:, :2], 0.9, 0.5, 3)
    actor_params, critic_params, target_params, batch, noise = small_problem(0)
    with pytest.raises(ValueError, match="noise must have shape"):
        critic_loss(critic_params, target_params, actor_params, batch, 0.1, noise[0, :3])
    with pytest.raises(ValueError, match="params\\[0\\]\\['W'\\] must have shape"):
        critics(critic_params, np.zeros(O + 1, np.float32), np.zeros(D, np.float32))
    with pytest.raises(TypeError, match="num_steps must be an int"):
        train_sac(jax.random.key(0), 10.0)


def test_sac_learns_the_pendulum_swing_up():
    """3000 iterations of four pendulums (12000 steps, 60 episodes). Over 50 episodes from random
    starts the policy's mean action earns a median return above -200 and a mean above -500 (-126 and
    -159 when written); the untrained actor's mean is below -1000 (-1255; a uniformly random torque
    earns -1241 over 200 episodes). Over 16 training runs tried (seeds, compiler flags) 15 reached a
    mean above -200 and all a mean above -450: in the other about a third of the starts were never
    swung up, so the median is the tight bound and the mean the loose one."""
    actor_params, returns = train_sac(jax.random.key(0), 3000)  # shared with the page's figure
    returns = np.asarray(returns)
    assert returns.shape == (60,)
    # init_actor compiled in one program, not drawn op by op (a last-bit change of its weights moves
    # the untrained return by far less than its margin to -1000)
    untrained_params = jax.jit(init_actor, static_argnums=(1, 2, 3))(jax.random.key(1), 3, 1, 64)
    untrained = np.asarray(evaluate(untrained_params, jax.random.key(2), 50))
    trained = np.asarray(evaluate(actor_params, jax.random.key(2), 50))
    assert untrained.mean() < -1000
    assert np.median(trained) > -200
    assert trained.mean() > -500
    assert np.median(returns[-8:]) > -300  # the last training episodes, with sampled actions
