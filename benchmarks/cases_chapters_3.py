"""Recipe/twin rows for the environments of the reinforcement chapter and the parallelism chapter's
ring attention.

* The cart-pole and the pendulum of :mod:`cookbook.reinforcement.environments` against gymnax's
  ``step_env`` (the same transition without gymnax's automatic reset), a batch of states stepped
  at once under :func:`jax.vmap`, as a vectorised training loop steps them. Each side returns the
  next observation with the reward and the end-of-episode flag, which the tests find equal bit for
  bit.
* Ring attention (:mod:`cookbook.parallelism.sequence_parallel`) over every device of the process
  against :func:`jax.nn.dot_product_attention` on one. ``make bench`` runs with the one device of
  the CPU, where the ring is a single block and the row measures what the recipe's loop and masks
  cost against the library's fused attention; under the tests' eight simulated devices (one
  processor presented as eight) it would measure the blocking and the collective permutes on one
  processor, never the speed-up of real devices.

``tests/test_benchmarks.py`` checks that every row's recipe and twin return the same values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks.cases import Case


def _uniform(shape, seed, low, high):
    return jax.random.uniform(jax.random.key(seed), shape, jnp.float32, low, high)


def comparisons() -> list[Case]:
    import gymnax
    from gymnax.environments.classic_control import cartpole as gym_cartpole
    from gymnax.environments.classic_control import pendulum as gym_pendulum

    from cookbook.parallelism import sequence_parallel
    from cookbook.reinforcement import environments as env

    cartpole, cartpole_params = gymnax.make("CartPole-v1")
    pendulum, pendulum_params = gymnax.make("Pendulum-v1")
    key = jax.random.key(0)

    def summary(obs, reward, done):  # (B, obs + 2)
        return jnp.concatenate([obs, reward[:, None].astype(obs.dtype), done[:, None].astype(obs.dtype)], axis=1)

    def cartpole_inputs(B):
        x, x_dot, theta, theta_dot = (_uniform((B,), s, lo, hi) for s, lo, hi in
                                      [(1, -2.4, 2.4), (2, -2.0, 2.0), (3, -0.2, 0.2), (4, -2.0, 2.0)])
        time = jax.random.randint(jax.random.key(5), (B,), 0, 500)
        return x, x_dot, theta, theta_dot, time, jax.random.randint(jax.random.key(6), (B,), 0, 2)

    def cartpole_recipe(x, x_dot, theta, theta_dot, time, action):
        _, obs, reward, done = jax.vmap(env.cartpole_step)(env.CartPoleState(x, x_dot, theta, theta_dot, time), action)
        return summary(obs, reward, done)

    def cartpole_twin(x, x_dot, theta, theta_dot, time, action):
        def one(s, a):
            obs, nxt, reward, terminated, _ = cartpole.step_env(key, s, a, cartpole_params)
            return obs, reward, terminated | cartpole.is_truncated(nxt, cartpole_params)
        return summary(*jax.vmap(one)(gym_cartpole.EnvState(x=x, x_dot=x_dot, theta=theta, theta_dot=theta_dot,
                                                            time=time), action))

    def pendulum_inputs(B):
        theta, theta_dot = _uniform((B,), 7, -3.14, 3.14), _uniform((B,), 8, -8.0, 8.0)
        time = jax.random.randint(jax.random.key(9), (B,), 0, 200)
        return theta, theta_dot, time, _uniform((B, 1), 10, -2.0, 2.0)

    def pendulum_recipe(theta, theta_dot, time, torque):
        _, obs, reward, done = jax.vmap(env.pendulum_step)(env.PendulumState(theta, theta_dot, time), torque)
        return summary(obs, reward, done)

    def pendulum_twin(theta, theta_dot, time, torque):
        def one(s, u):
            obs, nxt, reward, terminated, _ = pendulum.step_env(key, s, u, pendulum_params)
            return obs, reward, terminated | pendulum.is_truncated(nxt, pendulum_params)
        state = gym_pendulum.EnvState(theta=theta, theta_dot=theta_dot, last_u=jnp.zeros_like(theta), time=time)
        return summary(*jax.vmap(one)(state, torque))

    def attention_inputs(size):
        T, H, D = size
        q, k, v = (jax.random.normal(jax.random.key(11 + i), (T, H, D), jnp.float32) for i in range(3))
        return q, k, v

    def ring(q, k, v):
        mesh = jax.make_mesh((jax.device_count(),), ("seq",))
        return sequence_parallel.ring_attention(q, k, v, mesh, causal=True)

    def ring_twin(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, is_causal=True)

    def describe(fmt):
        return lambda s: fmt.format(*s) if isinstance(s, tuple) else fmt.format(s)

    return [
        Case("environments.cartpole_step", cartpole_recipe, cartpole_twin, cartpole_inputs, [256, 65536],
             "cookbook.reinforcement.environments.cartpole_step (vmapped)", "gymnax CartPole-v1 step_env (vmapped)",
             describe("B={} cart-poles")),
        Case("environments.pendulum_step", pendulum_recipe, pendulum_twin, pendulum_inputs, [256, 65536],
             "cookbook.reinforcement.environments.pendulum_step (vmapped)", "gymnax Pendulum-v1 step_env (vmapped)",
             describe("B={} pendulums")),
        Case("sequence_parallel.ring_attention", ring, ring_twin, attention_inputs, [(512, 4, 32), (4096, 4, 32)],
             "cookbook.parallelism.sequence_parallel.ring_attention (causal, all devices)",
             "jax.nn.dot_product_attention (is_causal, one device)", describe("T={}, H={}, D={}")),
    ]
