import jax
import numpy as np
import pytest
from scipy.stats import entropy
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits

from cookbook.generative.vq_vae import EMAState, ema_init, ema_update, fit, init, loss, perplexity, quantise

# One compiled function each, shared by the tests of this module.
quantise_jit = jax.jit(quantise)
ema_jit = jax.jit(ema_update)


def random_params(seed, *, D, H, G, Z, M, scaled=False):
    """The shapes of init, drawn by NumPy (no JAX program to compile): every entry random, or, when
    ``scaled``, as init draws them (weights of variance 1 / fan_in, biases zero)."""
    shapes = {"W1": (D, H), "b1": (H,), "W2": (H, G * Z), "b2": (G * Z,), "W3": (G * Z, H), "b3": (H,),
              "W4": (H, D), "b4": (D,), "codebook": (M, Z)}
    rng = np.random.default_rng(seed)
    params = {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}
    if not scaled:
        return jax.tree.map(lambda p: 0.5 * p, params)
    return {name: np.zeros_like(p) if name.startswith("b") else p / np.sqrt(1 if name == "codebook" else p.shape[0],
                                                                           dtype=np.float32)
            for name, p in params.items()}


def test_quantise_picks_the_nearest_entry_like_a_brute_force_search():
    rng = np.random.default_rng(0)
    codebook, z_e = rng.normal(size=(11, 7)).astype(np.float32), rng.normal(size=(3, 5, 7)).astype(np.float32)
    z_q, indices = quantise_jit(codebook, z_e)
    assert z_q.shape == (3, 5, 7) and indices.shape == (3, 5)
    d = np.sum((z_e[..., None, :].astype(np.float64) - codebook) ** 2, axis=-1)  # (3, 5, 11)
    np.testing.assert_array_equal(indices, np.argmin(d, axis=-1))
    np.testing.assert_allclose(z_q, codebook[np.argmin(d, axis=-1)], rtol=1e-6, atol=1e-6)


def test_straight_through_gradient_is_the_identity_for_the_code_and_zero_for_the_codebook():
    rng = np.random.default_rng(1)
    codebook, z_e = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(3,)).astype(np.float32)
    J_codebook, J_z = jax.jit(jax.jacrev(lambda c, z: quantise(c, z)[0], argnums=(0, 1)))(codebook, z_e)
    np.testing.assert_array_equal(J_z, np.eye(3))  # d z_q / d z_e: straight through
    np.testing.assert_array_equal(J_codebook, np.zeros((3, 5, 3)))  # the codebook moves by ema_update


def test_commitment_gradient_pulls_the_encoder_towards_its_entry_and_never_moves_the_codebook():
    params = random_params(2, D=7, H=5, G=2, Z=3, M=11)
    x = np.linspace(-1.0, 1.0, 7, dtype=np.float32)
    # The difference of two betas isolates the commitment term: its gradient at the encoder's
    # output is 2 (z_e - z_q), through the last encoder layer by the chain rule (NumPy reference).
    grads = jax.jit(jax.grad(lambda p: loss(p, x, beta=1.0) - loss(p, x, beta=0.0)))(params)
    h = np.tanh(x @ params["W1"] + params["b1"])
    z_e = (h @ params["W2"] + params["b2"]).reshape(2, 3)
    z_q = params["codebook"][np.argmin(((z_e[:, None] - params["codebook"][None]) ** 2).sum(-1), axis=1)]
    np.testing.assert_allclose(grads["b2"], (2 * (z_e - z_q)).reshape(-1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads["W2"], np.outer(h, 2 * (z_e - z_q).reshape(-1)), rtol=1e-4, atol=1e-5)
    assert float(np.max(np.abs(grads["codebook"]))) == 0.0  # the codebook moves by ema_update alone
    for name in ("W3", "b3", "W4", "b4"):  # the decoder is not in this term (to rounding)
        assert float(np.max(np.abs(grads[name]))) < 1e-6


def _ema_reference(counts, sums, z_e, indices, decay, eps):
    """A plain NumPy float64 loop over the entries."""
    M = len(counts)
    counts, sums = counts.astype(np.float64).copy(), sums.astype(np.float64).copy()
    for j in range(M):
        chosen = z_e[indices == j].astype(np.float64)
        counts[j] = decay * counts[j] + (1 - decay) * len(chosen)
        sums[j] = decay * sums[j] + (1 - decay) * chosen.sum(axis=0)
    n = counts.sum()
    return sums / ((counts + eps) / (n + M * eps) * n)[:, None], counts, sums


def test_ema_update_matches_a_numpy_loop_and_keeps_unused_entries_in_place():
    rng = np.random.default_rng(3)
    state = EMAState(rng.uniform(0.5, 2.0, size=5).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32))
    z_e = rng.normal(size=(11, 3)).astype(np.float32)
    indices = np.array([0, 1, 1, 3, 0, 0, 1, 3, 3, 1, 0], np.int32)  # entries 2 and 4 unused
    codebook, new = ema_jit(state, z_e, indices, decay=0.9, eps=1e-5)
    want, counts, sums = _ema_reference(state.counts, state.sums, z_e, indices, 0.9, 1e-5)
    np.testing.assert_allclose(codebook, want, rtol=1e-5)
    np.testing.assert_allclose(new.counts, counts, rtol=1e-5)
    np.testing.assert_allclose(new.sums, sums, rtol=1e-5, atol=1e-6)
    old = state.sums / state.counts[:, None]
    np.testing.assert_allclose(np.asarray(codebook)[[2, 4]], old[[2, 4]], rtol=1e-4)  # decayed together: unmoved


def test_ema_with_decay_zero_is_lloyds_k_means_as_in_scikit_learn():
    rng = np.random.default_rng(4)
    centres = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.0], [2.0, 7.0]])
    data = (centres[rng.integers(0, 5, 300)] + rng.normal(size=(300, 2))).astype(np.float32)
    start = data[:5]

    @jax.jit
    def lloyd(codebook, _):
        _, indices = quantise(codebook, data)
        codebook, _ = ema_update(ema_init(codebook), data, indices, decay=0.0, eps=0.0)
        return codebook, None

    ours, _ = jax.lax.scan(lloyd, start, None, length=30)
    km = KMeans(5, init=start, n_init=1, max_iter=30, tol=0.0, algorithm="lloyd").fit(data)
    np.testing.assert_allclose(ours, km.cluster_centers_, rtol=1e-4, atol=1e-4)


def test_perplexity_counts_the_entries_in_use():
    idx = np.array([0, 1, 2, 0, 1, 2, 0, 4, 4, 4, 4], np.int32)
    p = np.bincount(idx, minlength=7) / len(idx)
    np.testing.assert_allclose(perplexity(idx, num_codes=7), np.exp(entropy(p)), rtol=1e-5)
    np.testing.assert_allclose(perplexity(np.zeros(11, np.int32), num_codes=7), 1.0)


@pytest.fixture(scope="module")
def digits():
    X = (load_digits().data / 16.0).astype(np.float32)
    X = X[np.random.default_rng(0).permutation(len(X))]
    return X[:1500], X[1500:]  # NumPy: fit places them without compiling a copy


def test_it_learns_digits_with_most_codes_in_use(digits):
    train, test = digits
    # init's shapes and scales, drawn by NumPy: compiling init's random draws costs more than the run.
    params0 = random_params(0, D=64, H=16, G=4, Z=2, M=16, scaled=True)
    shapes = jax.eval_shape(lambda k: init(k, D=64, H=16, G=4, Z=2, M=16), jax.random.key(0))
    assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(np.shape, params0)
    params, values = fit(params0, jax.random.key(1), train, steps=300, batch=64, learning_rate=1e-2, decay=0.9)

    def evaluate(params):  # in NumPy: a second compiled program would cost more than this
        p = {k: np.asarray(v, np.float64) for k, v in params.items()}
        X = np.asarray(test, np.float64)
        z_e = (np.tanh(X @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]).reshape(len(X), 4, 2)
        codes = np.argmin(((z_e[:, :, None] - p["codebook"][None, None]) ** 2).sum(-1), axis=-1)  # (N, G)
        x_hat = np.tanh(p["codebook"][codes].reshape(len(X), -1) @ p["W3"] + p["b3"]) @ p["W4"] + p["b4"]
        return np.mean(np.sum((x_hat - X) ** 2, axis=1)), codes.astype(np.int32)

    before, _ = evaluate(params0)
    after, codes = evaluate(params)
    mean_image_error = float(np.mean(np.sum((np.asarray(test) - np.asarray(train).mean(0)) ** 2, axis=1)))  # about 4.8
    assert float(before) > 15.0  # about 20 untrained
    assert float(after) < 2.6  # about 2.0 after 300 steps
    assert float(after) < 0.55 * mean_image_error  # the code says far more than the average digit does
    assert float(perplexity(codes, num_codes=16)) > 12.0  # about 15.6 of the 16 entries in use
    values = np.asarray(values)  # read in NumPy: a slice and a mean of a JAX array compile programs
    assert float(values[-30:].mean()) < float(values[:30].mean()) / 2.5  # about 7.1, then 2.0


def test_bad_input_gets_a_clear_error():
    codebook = np.zeros((5, 3), np.float32)
    with pytest.raises(ValueError, match="z_e"):
        quantise(codebook, np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="z_e"):
        quantise(codebook, np.zeros((2, 3), np.int32))
    with pytest.raises(ValueError, match="z_e"):
        quantise(codebook, np.array([[0.0, np.nan, 0.0]], np.float32))
    state = ema_init(codebook)
    with pytest.raises(ValueError, match="indices"):
        ema_update(state, np.zeros((2, 3), np.float32), np.array([0, 5]))
    with pytest.raises(ValueError, match="indices"):
        ema_update(state, np.zeros((2, 3), np.float32), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="decay"):
        ema_update(state, np.zeros((2, 3), np.float32), np.array([0, 1]), decay=1.0)
    with pytest.raises(ValueError, match="num_codes"):
        perplexity(np.array([0, 1]), num_codes=0)
    with pytest.raises(ValueError, match="indices"):
        perplexity(np.array([0, 3]), num_codes=3)
    params = random_params(0, D=7, H=5, G=2, Z=3, M=11)
    with pytest.raises(ValueError, match="x"):
        loss(params, np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="params"):
        loss({**params, "codebook": np.zeros((11, 4), np.float32)}, np.zeros(7, np.float32))
    with pytest.raises(TypeError, match="G"):
        init(jax.random.key(0), D=7, H=5, G=2.0, Z=3, M=11)
