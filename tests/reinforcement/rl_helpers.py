"""Episodes sampled from a tabular policy, shared by the chapter's learning tests."""

import jax
import jax.numpy as jnp


def sample_episode(transitions, rewards_table, logits, key, steps, start=0):
    """``steps`` transitions from state ``start`` under the softmax policy ``logits`` (S, A).

    Returns ``(states (steps + 1,), actions (steps,), rewards (steps,))``.
    """

    def step(state, key):
        k_a, k_s = jax.random.split(key)
        action = jax.random.categorical(k_a, logits[state])
        next_state = jax.random.categorical(k_s, jnp.log(transitions[state, action]))
        return next_state, (state, action, rewards_table[state, action])

    last, (states, actions, rewards) = jax.lax.scan(step, start, jax.random.split(key, steps))
    return jnp.append(states, last), actions, rewards
