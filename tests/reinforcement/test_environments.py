import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments.classic_control import cartpole as gym_cartpole
from gymnax.environments.classic_control import pendulum as gym_pendulum

from cookbook.reinforcement.environments import (
    CARTPOLE_STEPS, PENDULUM_STEPS, THETA_LIMIT, X_LIMIT, CartPoleState, PendulumState,
    cartpole_reset, cartpole_step, pendulum_reset, pendulum_step)

N = 3001  # random states per environment, plus the edge cases
CARTPOLE, CARTPOLE_PARAMS = gymnax.make("CartPole-v1")
PENDULUM, PENDULUM_PARAMS = gymnax.make("Pendulum-v1")


def _gymnax_step(env, params, key, state, action):
    """gymnax's transition without its reset (the next state, observation, reward, done), and the
    observation, reward and done that its auto-resetting ``step`` reports."""
    obs, next_state, reward, terminated, _ = env.step_env(key, state, action, params)
    done = terminated | env.is_truncated(next_state, params)
    _, _, reward_auto, terminated_auto, truncated_auto, info = env.step(key, state, action, params)
    return next_state, obs, reward, done, (info["final_observation"], reward_auto, terminated_auto | truncated_auto)


def _episode_pair(step, reset, env, params, key, actions):
    """One episode from the same start and actions, stepped by the recipe and by gymnax's
    ``step_env``: each side's (observations, rewards, dones)."""

    def mine(state, action):
        state, obs, reward, done = step(state, action)
        return state, (obs, reward, done)

    def theirs(state, action):
        obs, state, reward, terminated, _ = env.step_env(key, state, action, params)
        return state, (obs, reward, terminated | env.is_truncated(state, params))

    return (jax.lax.scan(mine, reset(key)[0], actions)[1], jax.lax.scan(theirs, env.reset(key, params)[1], actions)[1])


@jax.jit
def cartpole_both(states, actions):
    mine = jax.vmap(cartpole_step)(states, actions)
    theirs_state = gym_cartpole.EnvState(
        x=states.x, x_dot=states.x_dot, theta=states.theta, theta_dot=states.theta_dot, time=states.time)
    key = jax.random.key(0)
    theirs = jax.vmap(lambda s, a: _gymnax_step(CARTPOLE, CARTPOLE_PARAMS, key, s, a))(theirs_state, actions)
    return mine, theirs


@jax.jit
def pendulum_both(states, actions):
    mine = jax.vmap(pendulum_step)(states, actions)
    zero = jnp.zeros_like(states.theta)
    theirs_state = gym_pendulum.EnvState(
        theta=states.theta, theta_dot=states.theta_dot, last_u=zero, time=states.time)
    key = jax.random.key(0)
    theirs = jax.vmap(lambda s, a: _gymnax_step(PENDULUM, PENDULUM_PARAMS, key, s, a))(theirs_state, actions)
    return mine, theirs


def cartpole_states(rng):
    f32 = np.float32
    x = rng.uniform(-2.6, 2.6, N).astype(f32)
    x_dot = rng.normal(0, 2, N).astype(f32)
    theta = rng.uniform(-0.25, 0.25, N).astype(f32)
    theta_dot = rng.normal(0, 2, N).astype(f32)
    time = rng.integers(0, CARTPOLE_STEPS + 2, N).astype(np.int32)
    # The edges: exactly on a threshold and one float32 step past it, at rest (so that the step keeps
    # the position), and the last steps before the limit.
    limit_x, limit_theta = f32(X_LIMIT), f32(THETA_LIMIT)
    edges_x = [limit_x, -limit_x, np.nextafter(limit_x, f32(9)), -np.nextafter(limit_x, f32(9)), f32(0), f32(0)]
    edges_theta = [f32(0), f32(0), f32(0), f32(0), limit_theta, np.nextafter(limit_theta, f32(9))]
    k = len(edges_x)
    x[:k], theta[:k], x_dot[:k + 3], theta_dot[:k + 3], time[:k] = edges_x, edges_theta, 0, 0, 0
    x[k:k + 3], theta[k:k + 3], time[k:k + 3] = 0, 0, [CARTPOLE_STEPS - 2, CARTPOLE_STEPS - 1, CARTPOLE_STEPS]
    return CartPoleState(x, x_dot, theta, theta_dot, time), rng.integers(0, 2, N).astype(np.int32)


def assert_same_step(mine, theirs, fields):
    state, obs, reward, done = mine
    their_state, their_obs, their_reward, their_done, (auto_obs, auto_reward, auto_done) = theirs
    for name in fields:
        np.testing.assert_array_equal(getattr(state, name), getattr(their_state, name), err_msg=name)
    np.testing.assert_array_equal(obs, their_obs)
    # gymnax's auto-resetting step compiles its step_env apart and, on a few states, differs from it
    # in the last bits of the velocities
    np.testing.assert_allclose(obs, auto_obs, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(reward, their_reward)
    np.testing.assert_array_equal(reward, auto_reward)
    np.testing.assert_array_equal(done, their_done)
    np.testing.assert_array_equal(done, auto_done)
    assert obs.dtype == jnp.float32 and reward.dtype == jnp.float32 and done.dtype == jnp.bool_


def test_cartpole_matches_gymnax_bit_for_bit():
    states, actions = cartpole_states(np.random.default_rng(0))
    mine, theirs = cartpole_both(states, actions)
    assert_same_step(mine, theirs, ("x", "x_dot", "theta", "theta_dot", "time"))
    done, reward = np.asarray(mine[3]), np.asarray(mine[2])  # read in NumPy, not sliced as JAX arrays
    # the edges behave as Gym's strict inequalities say, and both kinds of ending occur
    np.testing.assert_array_equal(done[:6], [False, False, True, True, False, True])
    np.testing.assert_array_equal(reward[:6], [1, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(done[6:9], [False, True, True])
    assert 0.2 < float(done.mean()) < 0.8 and 0.2 < float(reward.mean()) < 0.9


def test_pendulum_matches_gymnax_bit_for_bit():
    rng = np.random.default_rng(1)
    theta = rng.uniform(-10, 10, N).astype(np.float32)  # beyond [-pi, pi]: the reward wraps it
    theta_dot = rng.uniform(-9, 9, N).astype(np.float32)
    time = rng.integers(0, PENDULUM_STEPS + 2, N).astype(np.int32)
    time[:3] = [PENDULUM_STEPS - 2, PENDULUM_STEPS - 1, PENDULUM_STEPS]
    actions = rng.uniform(-3, 3, (N, 1)).astype(np.float32)  # beyond [-2, 2]: clipped
    actions[:2] = [[2.0], [-2.5]]
    mine, theirs = pendulum_both(PendulumState(theta, theta_dot, time), actions)
    assert_same_step(mine, theirs, ("theta", "theta_dot", "time"))
    assert np.abs(np.asarray(mine[0].theta_dot)).max() == 8.0  # the speed limit binds
    np.testing.assert_array_equal(np.asarray(mine[3])[:3], [False, True, True])


def test_resets_match_gymnax_and_vmap():
    @jax.jit
    def resets(keys):
        return (jax.vmap(cartpole_reset)(keys), jax.vmap(CARTPOLE.reset, in_axes=(0, None))(keys, CARTPOLE_PARAMS),
                jax.vmap(pendulum_reset)(keys), jax.vmap(PENDULUM.reset, in_axes=(0, None))(keys, PENDULUM_PARAMS))

    (state, obs), (their_obs, _), (pend, pend_obs), (their_pend_obs, their_pend) = resets(
        jax.random.split(jax.random.key(5), 8))  # eight, as the page's split
    np.testing.assert_array_equal(obs, their_obs)
    np.testing.assert_array_equal(state.time, 0)
    assert obs.shape == (8, 4) and obs.dtype == jnp.float32 and np.abs(obs).max() <= 0.05
    np.testing.assert_array_equal(pend_obs, their_pend_obs)
    np.testing.assert_array_equal(pend.theta, their_pend.theta)
    assert pend_obs.shape == (8, 3) and pend_obs.dtype == jnp.float32


def test_whole_episodes_under_scan_match_gymnax():
    """500 scanned steps from the same start with the same random actions: the same trajectory."""

    @jax.jit
    def episodes(key):
        k_reset, k_actions, k_torques = jax.random.split(key, 3)
        actions = jax.random.bernoulli(k_actions, 0.5, (CARTPOLE_STEPS,)).astype(jnp.int32)

        cart = _episode_pair(cartpole_step, cartpole_reset, CARTPOLE, CARTPOLE_PARAMS, k_reset, actions)
        torques = jax.random.uniform(k_torques, (PENDULUM_STEPS, 1), minval=-2.0, maxval=2.0)
        pend = _episode_pair(pendulum_step, pendulum_reset, PENDULUM, PENDULUM_PARAMS, k_reset, torques)
        # from hanging at rest, the largest torque held for a whole episode never lifts it past
        # horizontal: 3u / (m L^2) = 6 is less than 3 g / (2 L) = 15 (it must swing up)
        hanging = PendulumState(jnp.float32(jnp.pi), jnp.float32(0.0), jnp.int32(0))
        _, obs = jax.lax.scan(lambda state, u: pendulum_step(state, u)[:2], hanging, jnp.full((PENDULUM_STEPS, 1), 2.0))

        def pump(state, _):  # the largest torque, in the direction of the motion (the page's figure)
            state, obs, _, _ = pendulum_step(state, jnp.where(state.theta_dot >= 0, 2.0, -2.0)[None])
            return state, obs

        _, pumped = jax.lax.scan(pump, hanging, length=PENDULUM_STEPS)
        return cart, pend, obs[:, 0], pumped[:, 0]

    (cart_mine, cart_theirs), (pend_mine, pend_theirs), cos_held, cos_pumped = episodes(jax.random.key(3))
    assert float(np.asarray(cos_held).max()) < 0.0  # never past horizontal
    assert float(np.asarray(cos_pumped).max()) > 0.99  # over the top
    for a, b in zip(cart_mine + pend_mine, cart_theirs + pend_theirs):
        np.testing.assert_array_equal(a, b)
    # the cart-pole fails under random actions long before the limit; the pendulum ends only there
    assert 1 <= int(np.argmax(np.asarray(cart_mine[2]))) < 100
    np.testing.assert_array_equal(np.flatnonzero(pend_mine[2]), [PENDULUM_STEPS - 1])


def test_bad_input():
    state, _ = cartpole_reset(jax.random.key(0))
    with pytest.raises(ValueError, match="action must lie in"):
        cartpole_step(state, 2)
    with pytest.raises(TypeError, match="action must be an integer"):
        cartpole_step(state, jnp.float32(1.0))
    with pytest.raises(ValueError, match="action must have 0 axes"):
        cartpole_step(state, np.array([1], np.int32))
    with pytest.raises(ValueError, match=r"state.x must have 0 axes .*vmap"):
        cartpole_step(state._replace(x=np.zeros(3, np.float32)), 1)
    with pytest.raises(TypeError, match="state.time must be an integer"):
        cartpole_step(state._replace(time=jnp.float32(0)), 1)
    with pytest.raises(TypeError, match="state must be a CartPoleState"):
        cartpole_step(tuple(state), 1)
    with pytest.raises(TypeError, match="state must be a PendulumState"):
        pendulum_step(state, np.zeros(1, np.float32))
    pend, _ = pendulum_reset(jax.random.key(0))
    with pytest.raises(ValueError, match=r"action must have 1 axes"):
        pendulum_step(pend, jnp.float32(1.0))
    with pytest.raises(ValueError, match=r"action must have shape \(1,\)"):
        pendulum_step(pend, np.zeros(2, np.float32))
    with pytest.raises(TypeError, match="action must be a floating-point"):
        pendulum_step(pend, np.array([1], np.int32))
    with pytest.raises(TypeError, match="key must be a PRNG key"):
        cartpole_reset(0)
    with pytest.raises(ValueError, match="key must be a single PRNG key"):
        pendulum_reset(jax.random.split(jax.random.key(0), 8))  # the page's split
