import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.optimize import minimize
from scipy.spatial.distance import jensenshannon
from scipy.stats import norm

from cookbook.generative.gan import (discriminate, discriminator_loss, fit, generate, generator_loss, init,
                                     optimal_discriminator)

# Two one-dimensional Gaussians: the data p and a generator's samples q.
P, Q = norm(0.0, 1.0), norm(1.5, 0.7)


def test_discriminator_loss_is_binary_cross_entropy_as_in_optax():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=7).astype(np.float32) * 3, rng.normal(size=5).astype(np.float32) * 3
    # optax's operations as one program, not one each, on the real and the fake logits together
    bce = np.asarray(jax.jit(optax.sigmoid_binary_cross_entropy)(np.concatenate([real, fake]),
                                                                  np.float32([1] * 7 + [0] * 5)))
    want = np.mean(bce[:7]) + np.mean(bce[7:])
    np.testing.assert_allclose(discriminator_loss(real, fake), want, rtol=1e-6)
    # From logits it stays finite where probabilities would round to 0 or 1 (the shapes above: one program).
    assert np.isfinite(float(discriminator_loss(np.full(7, -200.0, np.float32), np.full(5, 200.0, np.float32))))


def test_generator_gradients_saturate_for_the_minimax_loss_only():
    logits = np.array([-12.0, -4.0, 0.0, 3.0, 9.0], np.float32)
    minimax = lambda l: generator_loss(l, non_saturating=False)  # noqa: E731

    @jax.jit  # the gradients and the losses below in one program, not a forward and a backward each
    def gradients_and_losses(l):
        return (jax.grad(generator_loss)(l), jax.grad(minimax)(l),
                [generator_loss(l), generator_loss(l + 1), minimax(l), minimax(l + 1)])

    ns, mm, (ns_loss, ns_fooled, mm_loss, mm_fooled) = jax.tree.map(np.asarray, gradients_and_losses(logits))
    sigmoid = 1 / (1 + np.exp(-logits.astype(np.float64)))
    np.testing.assert_allclose(ns, -(1 - sigmoid) / 5, rtol=1e-5)  # -sigma(-l) / B
    np.testing.assert_allclose(mm, -sigmoid / 5, rtol=1e-5, atol=1e-12)  # -sigma(l) / B
    assert abs(float(mm[0])) < 1e-5 < 0.19 < abs(float(ns[0]))  # a rejected sample: only ns has a gradient
    # The same fixed point: both losses fall as the discriminator is fooled more.
    assert float(ns_fooled) < float(ns_loss)
    assert float(mm_fooled) < float(mm_loss)


def test_logistic_regression_on_x_and_x_squared_recovers_the_optimal_discriminator():
    rng = np.random.default_rng(1)
    real = P.rvs(20_000, random_state=rng).astype(np.float32)
    fake = Q.rvs(20_000, random_state=rng).astype(np.float32)
    features = lambda x: jnp.stack([jnp.ones_like(x), x, x**2], axis=-1)  # noqa: E731

    @jax.jit
    def loss_and_grad(w):
        return jax.value_and_grad(lambda w: discriminator_loss(features(real) @ w, features(fake) @ w))(w)

    w = minimize(lambda w: [np.float64(a) if i == 0 else np.asarray(a, np.float64) for i, a in
                            enumerate(loss_and_grad(np.float32(w)))],
                 np.zeros(3), jac=True, method="L-BFGS-B").x
    grid = np.linspace(-2.0, 3.0, 11).astype(np.float32)
    trained = 1 / (1 + np.exp(-(np.stack([np.ones_like(grid), grid, grid**2], -1) @ w)))
    best = optimal_discriminator(P.logpdf(grid).astype(np.float32), Q.logpdf(grid).astype(np.float32))
    np.testing.assert_allclose(trained, best, atol=0.03)
    np.testing.assert_allclose(best, P.pdf(grid) / (P.pdf(grid) + Q.pdf(grid)), rtol=1e-5, atol=1e-6)


def test_value_at_the_optimal_discriminator_is_minus_log_4_plus_twice_the_jsd():
    x = np.linspace(-8.0, 8.0, 4001)
    dx = x[1] - x[0]
    p, q = P.pdf(x), Q.pdf(x)
    jsd = jensenshannon(p, q) ** 2  # scipy: the square root of the divergence, natural logarithm
    D = np.asarray(optimal_discriminator(P.logpdf(x), Q.logpdf(x)), np.float64)  # float32 values
    # Where D rounds to 0 or 1 in float32, the density that multiplies its logarithm is below 1e-7.
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(D > 0, p * np.log(D), 0.0) + np.where(D < 1, q * np.log1p(-D), 0.0)
    value = np.sum(terms) * dx
    np.testing.assert_allclose(value, -np.log(4) + 2 * jsd, atol=1e-4)
    # The same value, by Monte Carlo, from discriminator_loss at the optimal logits log p - log q.
    rng = np.random.default_rng(2)
    real, fake = P.rvs(100_000, random_state=rng), Q.rvs(100_000, random_state=rng)
    logit = lambda x: (P.logpdf(x) - Q.logpdf(x)).astype(np.float32)  # noqa: E731
    np.testing.assert_allclose(-float(discriminator_loss(logit(real), logit(fake))), value, atol=0.01)
    # With q = p the value is -log 4 and the optimal discriminator is one half everywhere (7 and 5
    # logits: the program of the first test).
    assert float(discriminator_loss(np.zeros(7, np.float32), np.zeros(5, np.float32))) == pytest.approx(np.log(4))


def ring(n, seed, modes=8, radius=2.0, std=0.05):
    rng = np.random.default_rng(seed)
    angle = 2 * np.pi * rng.integers(0, modes, n) / modes
    return (np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1) + std * rng.normal(size=(n, 2))).astype(np.float32)


def coverage(samples, modes=8, radius=2.0, std=0.05):
    """Modes holding at least 2 % of the samples within 3 std, and the fraction of samples near any mode."""
    angle = 2 * np.pi * np.arange(modes) / modes
    centres = radius * np.stack([np.cos(angle), np.sin(angle)], 1)
    distance = np.sqrt(((samples[:, None] - centres[None]) ** 2).sum(-1))  # (N, modes)
    near = distance.min(1) < 3 * std
    counts = np.bincount(distance.argmin(1)[near], minlength=modes)
    return int((counts > 0.02 * len(samples)).sum()), float(near.mean())


def numpy_init(seed, *, latent, hidden, data_dim):
    """init's shapes and scales, drawn by NumPy: compiling init's random draws costs more than a run."""
    rng = np.random.default_rng(seed)

    def mlp(sizes):
        return [{"W": (rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32), "b": np.zeros(b, np.float32)}
                for a, b in zip(sizes[:-1], sizes[1:])]

    params = {"generator": mlp((latent, hidden, hidden, data_dim)), "discriminator": mlp((data_dim, hidden, hidden, 1))}
    shapes = jax.eval_shape(lambda k: init(k, latent=latent, hidden=hidden, data_dim=data_dim), jax.random.key(0))
    assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(np.shape, params)
    return params


CENTRES = 2.0 * np.stack([np.cos(2 * np.pi * np.arange(8) / 8), np.sin(2 * np.pi * np.arange(8) / 8)], 1).astype(np.float32)
NOISE = np.random.default_rng(5).normal(size=(2000, 2)).astype(np.float32)
sample = jax.jit(jax.vmap(generate, in_axes=(None, 0)))
logits = jax.jit(jax.vmap(discriminate, in_axes=(None, 0)))


def _at_centres(params):
    """The logits at the eight modes, computed in a batch of NOISE's shape: the program of the samples' logits."""
    return np.asarray(logits(params, np.resize(CENTRES, NOISE.shape)))[:8]


@pytest.fixture(scope="module")
def trained():
    params0 = numpy_init(0, latent=2, hidden=16, data_dim=2)
    params, d_losses, g_losses = fit(params0, jax.random.key(1), ring(4096, 0), steps=2000, batch=128, learning_rate=2e-3)
    return params0, params, np.asarray(d_losses), np.asarray(g_losses)  # the losses read in NumPy


def test_it_learns_a_ring_of_gaussians(trained):
    params0, params, d_losses, g_losses = trained
    modes0, near0 = coverage(np.asarray(sample(params0, NOISE)))
    modes, near = coverage(np.asarray(sample(params, NOISE)))
    assert modes0 == 0 and near0 < 0.01  # untrained: a blob at the centre
    assert modes >= 7 and near > 0.5  # all 8 modes, about 73 % of the samples near one
    # Near the equilibrium D is about 1/2: the losses approach log 4 and log 2.
    assert abs(float(d_losses[-100:].mean()) - np.log(4)) < 0.06
    assert abs(float(g_losses[-100:].mean()) - np.log(2)) < 0.06


@jax.jit
def _discriminator_replies(d, real, fake, key):
    """300 Adam steps of the discriminator alone, on minibatches of the data against fixed samples."""
    from cookbook.generative.gan import _adam, _mlp

    batched = jax.vmap(_mlp, in_axes=(None, 0))

    def step(carry, inputs):
        d, m, v = carry
        t, k = inputs
        rows = jax.random.randint(k, (128,), 0, real.shape[0])
        loss = lambda d: discriminator_loss(batched(d, real[rows])[:, 0], batched(d, fake[rows])[:, 0])  # noqa: E731
        d, m, v = _adam(d, jax.grad(loss)(d), m, v, t, 2e-3)
        return (d, m, v), None

    zeros = jax.tree.map(jnp.zeros_like, d)
    (d, _, _), _ = jax.lax.scan(step, (d, zeros, zeros), (jnp.arange(1.0, 301.0), jax.random.split(key, 300)))
    return d


def test_mode_collapse_is_a_best_reply_that_the_discriminator_then_punishes(trained):
    """The cycle of mode collapse on the ring: nothing in the generator's loss asks for coverage, so
    putting every sample on the mode the discriminator likes best beats covering the ring; the
    discriminator's reply is to reject that mode; the generator's reply is to leave it."""
    _, params, _, _ = trained
    covering = np.asarray(sample(params, NOISE))
    favourite = int(np.argmax(_at_centres(params)))
    collapsed = np.repeat(CENTRES[favourite][None], len(NOISE), 0)
    # 1. Against the trained discriminator, collapse costs the generator less than coverage
    #    (about 0.57 against 0.73).
    loss_covering = float(generator_loss(logits(params, covering)))
    loss_collapsed = float(generator_loss(logits(params, collapsed)))
    assert loss_covering == pytest.approx(0.73, abs=0.02) and loss_collapsed == pytest.approx(0.57, abs=0.02)
    # 2. A discriminator trained against the collapsed samples rejects that mode: its logit there
    #    becomes the lowest of the eight, and collapse now costs the generator more than coverage did.
    d = _discriminator_replies(params["discriminator"], ring(2000, 1), collapsed, jax.random.key(2))
    replied = {**params, "discriminator": d}
    assert int(np.argmin(_at_centres(replied))) == favourite
    assert float(generator_loss(logits(replied, collapsed))) > loss_covering + 1.0
    # 3. A generator collapsed on that mode (its last layer's weights scaled to nothing, its bias at
    #    the mode), playing the same 2000 steps of the game as the learning test from that
    #    discriminator, leaves it: the ring is covered again, with about 1/8 of the samples (9-13 %
    #    over three seeds) left on the mode that held them all. In this small GAN the cycle damps out.
    start = jax.tree.map(np.asarray, params)
    start["generator"][-1] = {"W": 0.01 * start["generator"][-1]["W"], "b": CENTRES[favourite].copy()}
    start["discriminator"] = jax.tree.map(np.asarray, d)
    assert coverage(np.asarray(sample(start, NOISE))) == (1, 1.0)
    moved, _, _ = fit(start, jax.random.key(3), ring(4096, 0), steps=2000, batch=128, learning_rate=2e-3)
    after = np.asarray(sample(moved, NOISE))
    assert (np.linalg.norm(after - CENTRES[favourite], axis=1) < 0.15).mean() < 0.25
    assert coverage(after)[0] >= 7


def test_bad_input_gets_a_clear_error():
    params = numpy_init(0, latent=3, hidden=5, data_dim=2)
    with pytest.raises(ValueError, match="z"):
        generate(params, np.zeros(7, np.float32))
    with pytest.raises(TypeError, match="x"):
        discriminate(params, np.zeros(2, np.int32))
    with pytest.raises(ValueError, match="real_logits"):
        discriminator_loss(np.zeros((3, 1), np.float32), np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="non_saturating"):
        generator_loss(np.zeros(3, np.float32), non_saturating=1)
    with pytest.raises(ValueError, match="log_q"):
        optimal_discriminator(np.zeros(3, np.float32), np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="discriminator"):
        generate({**params, "discriminator": params["discriminator"][:1]}, np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="hidden"):
        init(jax.random.key(0), latent=3, hidden=2.5, data_dim=2)
