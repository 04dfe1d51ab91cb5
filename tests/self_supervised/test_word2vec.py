import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from cookbook.self_supervised.word2vec import analogy, noise_distribution, sgns_loss, skip_gram_pairs

def numpy_sgns(u, v, n):
    """A float64 loop over the pairs and their negatives."""
    u, v, n = (np.asarray(x, np.float64) for x in (u, v, n))
    log_sigmoid = lambda x: -np.logaddexp(0.0, -x)
    total = 0.0
    for b in range(len(u)):
        total -= log_sigmoid(u[b] @ v[b])
        for k in range(n.shape[1]):
            total -= log_sigmoid(-(u[b] @ n[b, k]))
    return total / len(u)


def vectors(seed, B=5, K=3, D=7):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((B, D)).astype(np.float32), rng.standard_normal((B, D)).astype(np.float32),
            rng.standard_normal((B, K, D)).astype(np.float32))


def test_loss_against_a_float64_loop():
    u, v, n = vectors(0)
    # sgns_loss checks its input, then runs one compiled core: no jax.jit around it.
    np.testing.assert_allclose(sgns_loss(u, v, n), numpy_sgns(u, v, n), rtol=1e-5)
    # large scores stay finite and exact: -log s(x) ~ -x for very negative x
    np.testing.assert_allclose(sgns_loss(100 * u, v, n), numpy_sgns(100 * u, v, n), rtol=1e-5)


def test_gradients():
    u, v, n = vectors(1, B=3, K=2, D=4)
    with jax.enable_x64(True):
        check_grads(jax.jit(sgns_loss), tuple(jnp.asarray(x, jnp.float64) for x in (u, v, n)), order=1, modes=["rev"])


@pytest.mark.parametrize("T, window", [(1, 2), (7, 3)])
def test_pairs_against_a_python_loop(T, window):
    tokens = np.arange(10, 10 + T)
    expected = [(tokens[t], tokens[t + o]) for t in range(T) for o in list(range(-window, 0)) + list(range(1, window + 1))
                if 0 <= t + o < T]
    centers, contexts, valid = skip_gram_pairs(tokens, window=window)  # one compiled core already
    assert centers.shape == (T * 2 * window,)
    # Lists, not iteration over the arrays (which compiles an unstack program per shape and dtype).
    got = [(int(w), int(c)) for w, c, ok in zip(centers.tolist(), contexts.tolist(), valid.tolist()) if ok]
    assert got == [(int(w), int(c)) for w, c in expected]


def test_noise_distribution():
    counts = np.array([1.0, 10.0, 100.0, 0.0, 5.0], np.float32)
    p = np.asarray(noise_distribution(counts))
    np.testing.assert_allclose(p, counts ** 0.75 / (counts ** 0.75).sum(), rtol=1e-6)
    assert p[0] / p[2] > counts[0] / counts[2]  # rare words drawn more often than their frequency
    np.testing.assert_allclose(noise_distribution(counts, power=1.0), counts / counts.sum(), rtol=1e-6)


def test_analogy_on_planted_vectors_and_its_exclusions():
    # four words on the corners of a parallelogram plus a distractor
    e = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]], np.float32)
    assert int(analogy(e, 0, 1, 2)) == 3
    # the query words are excluded even when one of them is nearest: here b itself is
    e = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]], np.float32)
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    query = u[1] - u[0] + u[2]
    assert (u @ query).argmax() == 1
    assert int(analogy(e, 0, 1, 2)) == 3


def test_bad_input():
    u, v, n = vectors(2)
    with pytest.raises(ValueError, match="negative_vectors"):
        sgns_loss(u, v, n[:, :, :3])
    with pytest.raises(ValueError, match="context_vectors"):
        sgns_loss(u, v[:2], n)
    with pytest.raises(TypeError, match="tokens"):
        skip_gram_pairs(np.zeros(3, np.float32), window=1)
    with pytest.raises(TypeError, match="window"):
        skip_gram_pairs(np.arange(3), window=1.0)
    with pytest.raises(ValueError, match="b"):
        analogy(np.eye(4, dtype=np.float32), 0, 7, 1)


# ---- It learns: analogies planted in a generated corpus -----------------------------------------

P, Q, TOPICS, STYLES, D, K = 4, 3, 3, 3, 16, 5
V = P * Q + P * TOPICS + Q * STYLES


def word(i, j):
    return i * Q + j


@pytest.fixture(scope="module")
def trained():
    """1500 five-word sentences: word(i, j) with two topic words of kind i and two style words of
    attribute j, shuffled; skip-gram pairs within the sentence; 300 Adam steps in one lax.scan."""
    rng = np.random.default_rng(0)
    sentences = []
    for _ in range(1500):
        i, j = rng.integers(P), rng.integers(Q)
        topic = P * Q + i * TOPICS + rng.integers(TOPICS, size=2)
        style = P * Q + P * TOPICS + j * STYLES + rng.integers(STYLES, size=2)
        sentences.append(rng.permutation(np.concatenate([[word(i, j)], topic, style])))
    sentences = np.array(sentences)  # (1500, 5)
    centers, contexts, valid = jax.jit(jax.vmap(lambda s: skip_gram_pairs(s, window=4)))(sentences)
    centers, contexts = np.asarray(centers)[np.asarray(valid)], np.asarray(contexts)[np.asarray(valid)]
    noise = np.asarray(noise_distribution(np.bincount(sentences.ravel(), minlength=V).astype(np.float32)), np.float64)
    steps, B = 300, 256
    pick = rng.integers(len(centers), size=(steps, B))
    batches = (centers[pick], contexts[pick], rng.choice(V, size=(steps, B, K), p=noise / noise.sum()))
    params0 = {"in": (0.1 * rng.standard_normal((V, D))).astype(np.float32), "out": np.zeros((V, D), np.float32)}
    opt = optax.adam(0.05)

    @jax.jit
    def train(params, batches):
        def step(carry, batch):
            params, state = carry
            w, c, n = batch
            value, grads = jax.value_and_grad(
                lambda p: sgns_loss(p["in"][w], p["out"][c], p["out"][n]))(params)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), value
        (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), batches)
        return params, losses

    params, losses = train(params0, batches)
    return params0["in"], np.asarray(params["in"]), np.asarray(losses)


SOLVE = jax.jit(jax.vmap(analogy, in_axes=(None, 0, 0, 0)))  # one program for the trained and untrained vectors


def analogies_solved(embeddings):
    queries = [(word(i, j), word(i, j2), word(i2, j), word(i2, j2))
               for i in range(P) for i2 in range(P) for j in range(Q) for j2 in range(Q) if i != i2 and j != j2]
    a, b, c, d = (np.array(x) for x in zip(*queries))
    return int((np.asarray(SOLVE(embeddings, a, b, c)) == d).sum()), len(queries)


def test_word2vec_recovers_the_planted_analogies(trained):
    untrained, embeddings, losses = trained
    assert losses[-20:].mean() < losses[:20].mean() - 1.0
    solved, total = analogies_solved(embeddings)
    assert total == 72
    assert solved >= 65, solved  # 72 of 72 here
    assert analogies_solved(untrained)[0] <= 10  # 2 here
