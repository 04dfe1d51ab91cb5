import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import beta as beta_function
from scipy.special import log_softmax

from cookbook.diffusion.masked_diffusion import (
    _loss,
    alpha,
    denoiser_init,
    is_periodic,
    loss,
    loss_weight,
    mask_tokens,
    periodic_sequences,
    sample,
    train,
    weighted_masked_cross_entropy,
)

L, K = 9, 7  # the page's language: length nine, seven tokens, period three


def test_weight_is_minus_alpha_prime_over_one_minus_alpha():
    for t in (0.05, 0.3, 0.5, 0.9, 1.0):
        derivative = jax.grad(alpha)(t)
        assert float(derivative) == -1.0
        np.testing.assert_allclose(loss_weight(t), -derivative / (1.0 - alpha(t)), rtol=1e-6)
        np.testing.assert_allclose(loss_weight(t), 1.0 / t, rtol=1e-6)


def _categorical_kl(p, q):
    """KL(p || q) of two distributions over the same states, in float64 (0 log 0 = 0)."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    keep = p > 0
    return float(np.sum(p[keep] * (np.log(p[keep]) - np.log(q[keep]))))


def test_the_weight_gives_the_continuous_time_elbo_and_the_discrete_kl_terms_converge_to_it():
    # A tiny case that can be enumerated: one clean sequence of length 3 over 2 tokens and a network
    # that sees the mask pattern (the context), with arbitrary logits for each pattern.
    n, k = 3, 2
    x = np.array([1, 0, 1])
    rng = np.random.default_rng(0)
    patterns = [np.array(p, bool) for p in itertools.product([False, True], repeat=n)]  # True = masked
    logits = {p.tobytes(): rng.normal(size=(n, k)) * 2.0 for p in patterns}
    log_p = {key: log_softmax(v, axis=-1) for key, v in logits.items()}

    def cross_entropy(p):  # sum over masked positions of -log p(x | z)
        return float(-np.sum(log_p[p.tobytes()][np.arange(n), x][p]))

    # The continuous-time ELBO: the integral of w(t) = 1/t against P(pattern | t) = t^j (1 - t)^(n - j),
    # a Beta function for a pattern with j masks.
    exact = sum(cross_entropy(p) * beta_function(p.sum(), n - p.sum() + 1) for p in patterns if p.any())

    # The recipe's weighted cross-entropy, integrated over t by Gauss-Legendre quadrature on (0, 1].
    nodes, weights = np.polynomial.legendre.leggauss(40)
    ts = 0.5 * (nodes + 1.0)
    z_of = lambda p: np.where(p, k, x)
    grid = [(t, p) for t in ts for p in patterns]
    wce = jax.vmap(weighted_masked_cross_entropy)(
        np.stack([logits[p.tobytes()] for _, p in grid]).astype(np.float32),
        np.stack([x for _ in grid]).astype(np.int32),
        np.stack([z_of(p) for _, p in grid]).astype(np.int32),
        np.array([t for t, _ in grid], np.float32))
    prob = np.array([t ** p.sum() * (1 - t) ** (n - p.sum()) for t, p in grid])
    quadrature = 0.5 * np.sum(np.repeat(weights, len(patterns)) * prob * np.asarray(wce, np.float64))
    np.testing.assert_allclose(quadrature, exact, rtol=1e-5)

    # The discrete-time ELBO of Austin et al. with T steps, from generic Kullback-Leibler divergences
    # between the true reverse step q(z_s | z_t, x) and the model's p(z_s | z_t), token by token, over
    # the K + 1 states (the mask last). Unmasked tokens stay put under both: no term.
    def discrete_elbo(T):
        total = 0.0
        for i in range(1, T + 1):
            t, s = i / T, (i - 1) / T
            reveal = (alpha(s) - alpha(t)) / (1 - alpha(t))
            for p in patterns:
                weight = t ** p.sum() * (1 - t) ** (n - p.sum())
                for pos in np.flatnonzero(p):
                    q_true = np.append(reveal * np.eye(k)[x[pos]], 1 - reveal)
                    q_model = np.append(reveal * np.exp(log_p[p.tobytes()][pos]), 1 - reveal)
                    total += weight * _categorical_kl(q_true, q_model)
        return total

    gaps = [abs(discrete_elbo(T) - exact) for T in (10, 100, 1000)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-2 * exact, (gaps, exact)


def test_a_network_that_ignores_the_context_scores_its_own_log_loss():
    # Zero weights, last bias = fixed logits: p(x | z) does not depend on z. The bound is then exactly
    # the sequence's log-loss, sum over positions of -log p(x), whatever the masks.
    sizes = (L * (K + 1), 256, 256, L * K)  # the shapes of the trained network
    params = [{"W": np.zeros((a, b), np.float32), "b": np.zeros(b, np.float32)} for a, b in zip(sizes, sizes[1:])]
    logits = np.random.default_rng(1).normal(size=(L, K)).astype(np.float32)
    params[-1]["b"] = logits.reshape(-1)
    x = np.tile([1, 2, 6], 3)
    expected = float(-np.sum(log_softmax(logits.astype(np.float64), axis=-1)[np.arange(L), x])) / L
    estimate = float(loss(params, np.tile(x, (4096, 1)), jax.random.key(3)))
    assert estimate == pytest.approx(expected, rel=0.05)  # 3.4 standard errors (1.5 % each, measured over 30 keys)


def test_weighted_masked_cross_entropy_against_numpy():
    rng = np.random.default_rng(4)
    logits, x = rng.normal(size=(L, K)), rng.integers(0, K, L)
    z = np.where(rng.random(L) < 0.4, K, x)
    t = 0.37
    expected = np.sum(-log_softmax(logits, axis=-1)[np.arange(L), x] * (z == K)) / t
    np.testing.assert_allclose(weighted_masked_cross_entropy(logits.astype(np.float32), x, z, t), expected, rtol=1e-5)
    # bfloat16 logits: the softmax runs in float32, the answer agrees to bfloat16's rounding of the logits
    got = weighted_masked_cross_entropy(logits.astype(jnp.bfloat16), x, z, t)  # converted in NumPy (ml_dtypes)
    np.testing.assert_allclose(got, expected, rtol=2e-2)
    assert float(weighted_masked_cross_entropy(logits.astype(np.float32), x, x, t)) == 0.0  # nothing masked


def test_mask_tokens_masks_a_fraction_t_and_leaves_the_rest():
    x = np.random.default_rng(5).integers(0, K, 20_000).astype(np.int32)
    for t in (0.1, 0.5, 1.0):
        z = np.asarray(mask_tokens(jax.random.key(6), x, t, vocab_size=K))
        masked = z == K
        assert abs(masked.mean() - t) < 0.01  # binomial standard error below 0.004
        np.testing.assert_array_equal(z[~masked], x[~masked])


@pytest.fixture(scope="module")
def trained():
    data = periodic_sequences(jax.random.key(0), 2048, length=L, vocab_size=K)
    params = denoiser_init(jax.random.key(1), length=L, vocab_size=K)
    return train(params, data, jax.random.key(2), steps=500)


def test_it_learns_the_language(trained):
    params, losses = trained
    held_out = periodic_sequences(jax.random.key(5), 4096, length=L, vocab_size=K)  # shapes as above
    bound = float(loss(params, held_out, jax.random.key(6)))
    entropy = 3 * np.log(K) / L  # 0.65 nats per token
    assert float(np.asarray(losses)[0]) > 1.7  # about log 7 = 1.95 before training
    assert entropy < bound + 0.02 and bound < 0.75, bound  # the page: below 0.75 nats per token
    samples = sample(params, jax.random.key(7), 500, 100)
    assert np.sum(np.asarray(samples) == K) == 0  # every mask revealed
    # the page: more than 80 % have period three. Measured after 500 steps: bound 0.679, 87.8 % periodic
    # (0.672 and 88.2 %, 0.675 and 85.6 % with keys 10-12 and 20-22 for data, init and training;
    # 0.675 and 90.8 % after 1000 steps)
    assert np.mean(np.asarray(is_periodic(samples))) > 0.8


def test_bad_input_gets_a_clear_error():
    x = np.array([1, 2, 6, 1, 2, 6, 1, 2, 6], np.int32)
    logits = np.zeros((L, K), np.float32)
    changed = lambda value: np.concatenate([[value], x[1:]]).astype(np.int32)  # noqa: E731 (x with x[0] = value)
    with pytest.raises(ValueError, match="z must equal x"):
        weighted_masked_cross_entropy(logits, x, changed(3), 0.5)
    with pytest.raises(ValueError, match=r"x \(ids below K.*must lie in"):
        weighted_masked_cross_entropy(logits, changed(K), x, 0.5)
    with pytest.raises(ValueError, match="t must lie in"):
        weighted_masked_cross_entropy(logits, x, x, 0.0)
    with pytest.raises(ValueError, match="t holds NaN"):
        mask_tokens(jax.random.key(0), x, np.nan, vocab_size=K)
    with pytest.raises(TypeError, match="x must be an integer array"):
        mask_tokens(jax.random.key(0), x.astype(np.float32), 0.5, vocab_size=K)
    with pytest.raises(ValueError, match="z must have shape"):
        weighted_masked_cross_entropy(logits, x, x[:5], 0.5)
    params = denoiser_init(jax.random.key(1), length=L, vocab_size=K)
    with pytest.raises(ValueError, match="x must have shape"):
        loss(params, np.zeros((3, L + 2), np.int32), jax.random.key(0))
