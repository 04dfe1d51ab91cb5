import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.efficiency.speculative_decoding import (acceptance_rate, decode, expected_tokens,
                                                      residual_distribution, speculative_step)

V, GAMMA, ROUNDS = 3, 2, 20000


def _tables(seed, V=V, context_free=False):
    """Row-stochastic target and draft tables (V, V) in float64, from NumPy."""
    rng = np.random.default_rng(seed)
    P, Q = rng.dirichlet(np.ones(V), size=V), rng.dirichlet(np.ones(V), size=V)
    if context_free:
        P, Q = np.tile(P[:1], (V, 1)), np.tile(Q[:1], (V, 1))
    return P, Q


def test_residual_against_float64_numpy_and_by_hand():
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(7), size=(5, 3)), rng.dirichlet(np.ones(7), size=(5, 3))
    r = np.maximum(p - q, 0)
    got = residual_distribution(p.astype(np.float32), q.astype(np.float32))
    assert got.shape == (5, 3, 7) and got.dtype == jnp.float32
    got = np.asarray(got)
    np.testing.assert_allclose(got, r / r.sum(-1, keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(residual_distribution([0.5, 0.3, 0.2], [0.2, 0.5, 0.3]), [1, 0, 0])
    np.testing.assert_allclose(residual_distribution([0.6, 0.4, 0.0], [0.1, 0.3, 0.6]), [5 / 6, 1 / 6, 0], rtol=1e-6)
    # The residual's mass is the rejection probability 1 - alpha.
    alpha = np.asarray(acceptance_rate(p.astype(np.float32), q.astype(np.float32)))
    np.testing.assert_allclose(alpha, np.minimum(p, q).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(1 - alpha, r.sum(-1), atol=1e-6)
    np.testing.assert_allclose(1 - alpha, 0.5 * np.abs(p - q).sum(-1), atol=1e-6)  # one minus total variation


def test_equal_distributions_give_p_itself_and_no_nan():
    p = np.array([0.5, 0.3, 0.2], np.float32)
    np.testing.assert_array_equal(residual_distribution(p, p), p)
    assert float(acceptance_rate(p, p)) == pytest.approx(1.0)
    # p below q everywhere (not normalised): still no NaN, p normalised; all zero gives zeros.
    np.testing.assert_allclose(residual_distribution([0.1, 0.1, 0.2], [0.3, 0.2, 0.3]), [0.25, 0.25, 0.5])
    np.testing.assert_array_equal(residual_distribution([0.0, 0.0, 0.0], [0.3, 0.2, 0.5]), [0.0, 0.0, 0.0])
    # A NaN is passed on, not hidden behind the fallback.
    assert np.isnan(np.asarray(residual_distribution(p, [np.nan, 0.3, 0.2]))).all()


def test_bfloat16_residual():
    rng = np.random.default_rng(1)
    p, q = rng.dirichlet(np.ones(7), size=(5, 3)), rng.dirichlet(np.ones(7), size=(5, 3))
    got = residual_distribution(p.astype(jnp.bfloat16), q.astype(jnp.bfloat16))  # rounded by NumPy
    assert got.dtype == jnp.bfloat16
    r = np.maximum(p - q, 0)
    np.testing.assert_allclose(np.asarray(got, np.float32), r / r.sum(-1, keepdims=True), atol=0.02)


def _one_round(P, Q, accept, residual, c, gamma):
    """Every outcome of one round from context token c, exactly: {emitted tuple: probability}."""
    out = {}
    for drafts in itertools.product(range(P.shape[0]), repeat=gamma):
        contexts = (c,) + drafts
        weight = np.prod([Q[contexts[i], drafts[i]] for i in range(gamma)])
        if weight == 0:
            continue
        for n in range(gamma + 1):  # n drafts accepted, then a rejection (n < gamma) or the bonus
            w = weight * np.prod([accept[contexts[i], drafts[i]] for i in range(n)])
            if n < gamma:
                w *= 1 - accept[contexts[n], drafts[n]]
                dist = residual[contexts[n]]
            else:
                dist = P[contexts[gamma]]
            for x in range(P.shape[0]):
                key = drafts[:n] + (x,)
                out[key] = out.get(key, 0.0) + w * dist[x]
    return out


def _first_tokens(P, Q, accept, residual, c, length, gamma):
    """The exact distribution of the first ``length`` tokens decoded after c, over as many rounds as needed."""
    out = {}
    for emitted, w in _one_round(P, Q, accept, residual, c, gamma).items():
        if len(emitted) >= length:
            out[emitted[:length]] = out.get(emitted[:length], 0.0) + w
        else:
            for rest, w2 in _first_tokens(P, Q, accept, residual, emitted[-1], length - len(emitted), gamma).items():
                out[emitted + rest] = out.get(emitted + rest, 0.0) + w * w2
    return out


def test_exact_enumeration_gives_the_target_distribution():
    # Every draft sequence and every accept/reject outcome of rounds with gamma = 2 on 3 tokens, using
    # the recipe's residual; the first 3 decoded tokens are distributed as the target's, exactly.
    P, Q = _tables(2)
    Q[1, 2] = 0.0  # a token the draft never proposes after 1
    Q[1] /= Q[1].sum()
    with jax.enable_x64(True):
        residual = np.asarray(residual_distribution(P, Q))
    accept = np.minimum(1.0, P / np.where(Q > 0, Q, 1.0))
    for c in range(V):
        dist = _first_tokens(P, Q, accept, residual, c, 3, GAMMA)
        for x in itertools.product(range(V), repeat=3):
            target = P[c, x[0]] * P[x[0], x[1]] * P[x[1], x[2]]
            assert dist.get(x, 0.0) == pytest.approx(target, abs=1e-12)
    # Without the residual (resampling a rejection from p instead) the output is not the target's.
    wrong = _first_tokens(P, Q, accept, P, 0, 1, GAMMA)
    assert max(abs(wrong[(x,)] - P[0, x]) for x in range(V)) > 0.01


@pytest.fixture(scope="module")
def sampled():
    """A long decoding run (one compiled program) for a bigram pair and for a context-free pair."""
    out = {}
    for name, tables in (("bigram", _tables(2)), ("context_free", _tables(4, context_free=True))):
        P, Q = tables
        tokens, n = decode(jax.random.key(3), P.astype(np.float32), Q.astype(np.float32), 0,
                           gamma=GAMMA, rounds=ROUNDS)
        out[name] = (P, Q, np.asarray(tokens), np.asarray(n))
    return out


def test_sampled_tokens_follow_the_target(sampled):
    P, _, tokens, n = sampled["bigram"]
    assert tokens.shape == (ROUNDS, GAMMA + 1) and n.shape == (ROUNDS,)
    # Each row: n kept tokens and one more, then -1 padding.
    assert np.array_equal((tokens >= 0).sum(-1), n + 1)
    s = np.concatenate([[0], tokens[tokens >= 0]])  # the decoded sequence after the context token 0
    # The decoded sequence is a Markov chain with the target's transitions, across round boundaries too:
    # every pair and every triple of successive tokens, against P within 4.5 standard errors.
    for order in (2, 3):
        counts = np.zeros((V,) * order)
        np.add.at(counts, tuple(s[i:len(s) - order + 1 + i] for i in range(order)), 1)
        given = counts.sum(-1, keepdims=True) if order == 2 else counts.sum((-2, -1), keepdims=True)
        law = P if order == 2 else P[:, :, None] * P[None, :, :]
        se = np.sqrt(law * (1 - law) / given)
        assert np.all(np.abs(counts / given - law) < 4.5 * se)


def test_acceptance_matches_the_closed_form(sampled):
    P, Q, _, n = sampled["context_free"]
    alpha = float(np.minimum(P[0], Q[0]).sum())
    assert 0.3 < alpha < 0.9
    # n is a geometric count cut at gamma: P(n = k) = alpha^k (1 - alpha), P(n = gamma) = alpha^gamma.
    law = np.array([alpha ** k * (1 - alpha) for k in range(GAMMA)] + [alpha ** GAMMA])
    freq = np.bincount(n, minlength=GAMMA + 1) / n.size
    assert np.all(np.abs(freq - law) < 4.5 * np.sqrt(law * (1 - law) / n.size))
    # Tokens per target pass (the speed-up before the draft's cost) against E[n + 1].
    mean, se = (n + 1).mean(), (n + 1).std() / np.sqrt(n.size)
    assert abs(mean - (1 - alpha ** (GAMMA + 1)) / (1 - alpha)) < 4.5 * se  # expected_tokens, tested below


def test_expected_tokens_limits_and_the_page_numbers():
    alphas = np.array([0.0, 0.5, 0.6, 1.0])
    got3, got8 = np.asarray(expected_tokens(alphas, 3)), np.asarray(expected_tokens(alphas, 8))
    np.testing.assert_allclose(got3, [1.0, 1.875, 2.176, 4.0], rtol=1e-6)
    np.testing.assert_allclose(got8, [sum(a ** k for k in range(9)) for a in alphas], rtol=1e-6)
    # "At alpha = 0.5 the fourth and later drafts add almost nothing": gamma 3 -> 8 gains under 0.13 tokens.
    assert float(got8[1] - got3[1]) < 0.13


def test_step_with_equal_models_accepts_everything_and_certain_rejection_accepts_nothing():
    p = np.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2], [0.0, 0.0, 1.0]], np.float32)
    drafts = np.array([1, 0], np.int32)
    tokens, n = map(np.asarray, speculative_step(jax.random.key(0), p, p[:2], drafts))
    assert int(n) == 2 and tokens.tolist() == [1, 0, 2]  # bonus token from p's last row, one-hot at 2
    q = np.array([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]], np.float32)
    p = np.array([[0.5, 0.0, 0.5], [0.2, 0.3, 0.5], [0.3, 0.3, 0.4]], np.float32)  # the target never says 1 first
    tokens, n = map(np.asarray, speculative_step(jax.random.key(1), p, q, drafts))
    assert int(n) == 0 and tokens[1:].tolist() == [-1, -1] and int(tokens[0]) in (0, 2)


def test_bad_input():
    p, q, drafts = np.full((3, 5), 0.2, np.float32), np.full((2, 5), 0.2, np.float32), np.array([1, 4], np.int32)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="q"):
        residual_distribution(p, q)
    with pytest.raises(TypeError, match="p"):
        residual_distribution(np.ones(3, np.int32), np.ones(3, np.float32))
    with pytest.raises(ValueError, match="p"):
        speculative_step(key, p[:2], q, drafts)
    with pytest.raises(ValueError, match="drafts"):
        speculative_step(key, p, q, np.array([1, 5], np.int32))
    with pytest.raises(TypeError, match="drafts"):
        speculative_step(key, p, q, np.array([1.0, 4.0], np.float32))
    q[0, 0] = np.nan
    with pytest.raises(ValueError, match="q"):
        speculative_step(key, p, q, drafts)
    P = np.full((5, 5), 0.2, np.float32)
    with pytest.raises(ValueError, match="context"):
        decode(key, P, P, 5, gamma=2, rounds=3)
    with pytest.raises(ValueError, match="Q"):
        decode(key, P, P[:, :3], 0, gamma=2, rounds=3)
    with pytest.raises(TypeError, match="gamma"):
        decode(key, P, P, 0, gamma=2.0, rounds=3)
    with pytest.raises(ValueError, match="alpha"):
        expected_tokens(np.array(1.5, np.float32), 3)
