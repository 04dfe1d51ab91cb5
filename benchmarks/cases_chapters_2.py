"""Recipe/twin rows for the chapters written after the classic ones: generative models, efficiency,
reinforcement learning, self-supervised learning and the niche chapter's neural ODE.

Each twin is the library function that a practitioner would call for the same quantity: distrax's
KL divergence between diagonal Gaussians, optax's binary and soft cross-entropies and its NT-Xent
loss, rlax's generalised advantage estimation and PPO's clipped surrogate, and diffrax's ODE solver
(its Tsit5 method with the same constant step as the recipe's RK4; the two are different methods of
high order, so they agree to the accuracy of either). Recipes written for one sequence or one state
(GAE, the ODE) are batched with :func:`jax.vmap`, as a reader would use them. ``tests/test_benchmarks.py``
checks that every row's recipe and twin return the same values before anyone times them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks.cases import Case


def _normal(shape, seed):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def comparisons() -> list[Case]:
    import diffrax
    import distrax
    import optax
    import rlax

    from cookbook.efficiency import distillation
    from cookbook.generative import gan, vae
    from cookbook.niche import neural_ode
    from cookbook.reinforcement import actor_critic, ppo
    from cookbook.self_supervised import simclr

    def kl_twin(mu, log_var):
        q = distrax.MultivariateNormalDiag(mu, jnp.exp(0.5 * log_var))
        return q.kl_divergence(distrax.MultivariateNormalDiag(jnp.zeros_like(mu), jnp.ones_like(mu)))

    def bce_twin(real, fake):
        return (optax.sigmoid_binary_cross_entropy(real, jnp.ones_like(real)).mean()
                + optax.sigmoid_binary_cross_entropy(fake, jnp.zeros_like(fake)).mean())

    def soft_ce_twin(z, v):
        return optax.softmax_cross_entropy(z / 4.0, jax.nn.softmax(v / 4.0))

    def gae_inputs(s):
        B, T = s
        rewards, values = _normal((B, T), 0), _normal((B, T + 1), 1)
        discounts = jnp.full((B, T), 0.99) * (jax.random.uniform(jax.random.key(2), (B, T)) > 0.05)
        return rewards, discounts, values

    def gae_twin(rewards, discounts, values):
        return jax.vmap(lambda r, d, v: rlax.truncated_generalized_advantage_estimation(r, d, 0.95, v))(
            rewards, discounts, values)

    def surrogate_inputs(n):
        return jnp.exp(0.2 * _normal((n,), 3)), _normal((n,), 4)

    def surrogate_twin(ratios, advantages):
        return rlax.clipped_surrogate_pg_loss(ratios, advantages, 0.2)

    def ntxent_twin(z1, z2):
        B = z1.shape[0]
        labels = jnp.concatenate([jnp.arange(B), jnp.arange(B)])
        return optax.losses.ntxent(jnp.concatenate([z1, z2]), labels, temperature=0.5)

    def pendulum(t, h, args):  # a damped, driven pendulum (angle, angular velocity)
        return jnp.stack([h[1], -4.0 * jnp.sin(h[0]) - 0.2 * h[1] + 0.3 * jnp.cos(t)])

    ode_times = jnp.linspace(0.0, 3.0, 7)  # 6 intervals of 0.5, 32 steps each

    def ode_inputs(B):
        return (jnp.stack([jnp.linspace(-1.0, 1.0, B), jnp.zeros(B)], axis=1),)

    def ode_twin(h0s):
        def one(h0):
            return diffrax.diffeqsolve(diffrax.ODETerm(pendulum), diffrax.Tsit5(), 0.0, 3.0, 0.5 / 32, h0,
                                       saveat=diffrax.SaveAt(ts=ode_times), max_steps=256,
                                       stepsize_controller=diffrax.ConstantStepSize()).ys
        return jax.vmap(one)(h0s)

    def describe(fmt):
        return lambda s: fmt.format(*s) if isinstance(s, tuple) else fmt.format(s)

    return [
        Case("vae.gaussian_kl", vae.gaussian_kl, kl_twin, lambda s: (_normal(s, 5), 0.3 * _normal(s, 6)),
             [(256, 16), (4096, 64)], "cookbook.generative.vae.gaussian_kl",
             "distrax.MultivariateNormalDiag.kl_divergence", describe("B={}, D={}")),
        Case("gan.discriminator_loss", gan.discriminator_loss, bce_twin, lambda n: (_normal((n,), 7), _normal((n,), 8)),
             [1024, 65536], "cookbook.generative.gan.discriminator_loss", "optax.sigmoid_binary_cross_entropy",
             describe("B={}")),
        Case("distillation.soft_cross_entropy", lambda z, v: distillation.soft_cross_entropy(z, v, T=4.0), soft_ce_twin,
             lambda s: (_normal(s, 9), _normal(s, 10)), [(256, 10), (1024, 1000)],
             "cookbook.efficiency.distillation.soft_cross_entropy", "optax.softmax_cross_entropy",
             describe("N={}, classes={}")),
        Case("actor_critic.gae", jax.vmap(lambda r, d, v: actor_critic.gae(r, d, v, 0.95)), gae_twin, gae_inputs,
             [(16, 128), (64, 1024)], "cookbook.reinforcement.actor_critic.gae",
             "rlax.truncated_generalized_advantage_estimation", describe("B={}, T={}")),
        Case("ppo.clipped_surrogate_loss", lambda r, a: ppo.clipped_surrogate_loss(r, a, 0.2), surrogate_twin,
             surrogate_inputs, [1024, 65536], "cookbook.reinforcement.ppo.clipped_surrogate_loss",
             "rlax.clipped_surrogate_pg_loss", describe("N={}")),
        Case("simclr.nt_xent", lambda a, b: simclr.nt_xent(a, b, 0.5), ntxent_twin,
             lambda s: (_normal(s, 11), _normal(s, 12)), [(64, 32), (512, 128)],
             "cookbook.self_supervised.simclr.nt_xent", "optax.losses.ntxent", describe("B={}, D={}")),
        Case("neural_ode.odeint", jax.vmap(lambda h0: neural_ode.odeint(pendulum, h0, ode_times, None, 32)), ode_twin,
             ode_inputs, [16, 256], "cookbook.niche.neural_ode.odeint (RK4)",
             "diffrax.diffeqsolve (Tsit5, constant step)", describe("B={} states, 192 steps")),
    ]
