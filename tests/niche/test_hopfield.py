import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from cookbook.niche.hopfield import async_sweep, energy, hebbian_weights, retrieve

# The functions run one compiled core each and are called as they are (a jax.jit around them
# compiled a second program per shape); inputs are NumPy arrays, outputs are read in NumPy.
N = 11
IDENTITY = np.arange(64)
D = 64


def random_patterns(seed, n, d=D):
    rng = np.random.default_rng(seed)
    return rng.choice([-1.0, 1.0], size=(n, d)).astype(np.float32)


def flip(pattern, n_bits, seed):
    idx = np.random.default_rng(seed).choice(pattern.shape[0], n_bits, replace=False)
    flipped = pattern.copy()
    flipped[idx] *= -1.0
    return flipped


def recall(W, state, sweeps=4):
    for _ in range(sweeps):
        state, _ = async_sweep(W, state, IDENTITY)
    return np.asarray(state)


def normal(seed, *shape):
    return (np.random.default_rng(seed).standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)


# ---- The modern network: against float64 and attention -------------------------------------------

def numpy_retrieve(X, xi, beta):
    X, xi = np.float64(X), np.float64(xi)
    a = beta * X @ xi
    p = np.exp(a - a.max())
    return X.T @ (p / p.sum())


@pytest.mark.parametrize("beta", [0.3, 2.0, 50.0])
def test_retrieve_matches_float64(beta):
    X, xi = normal(0, N, D), normal(1, D)
    got = retrieve(X, xi, beta)
    assert got.shape == (D,)
    np.testing.assert_allclose(got, numpy_retrieve(X, xi, beta), rtol=1e-4, atol=1e-5)


def test_retrieve_is_attention_with_one_query_and_the_patterns_as_keys_and_values():
    X, xi = normal(2, N, D), normal(3, D)
    beta = 7.0
    want = jax.jit(jax.nn.dot_product_attention)(xi[None, None, None], X[None, :, None], X[None, :, None], scale=beta)
    np.testing.assert_allclose(retrieve(X, xi, beta), np.asarray(want)[0, 0, 0], rtol=1e-5, atol=1e-6)


def test_large_beta_retrieves_the_nearest_pattern_in_one_step():
    X = random_patterns(2, 11)
    for mu in range(11):
        query = flip(X[mu], 16, seed=mu)  # a quarter of the bits wrong
        np.testing.assert_allclose(retrieve(X, query, 10.0), X[mu], atol=1e-5)


def test_small_beta_gives_a_blend_and_zero_beta_is_refused():
    X = random_patterns(3, N)
    out = retrieve(X, X[0], 1e-3)
    np.testing.assert_allclose(out, X.mean(0), atol=0.05)  # nearly the mean of all patterns
    with pytest.raises(ValueError, match="beta"):
        retrieve(X, X[0], 0.0)


def test_large_scores_stay_finite_and_bfloat16_is_close():
    X, xi = normal(4, N, D), normal(5, D)
    assert bool(np.isfinite(np.asarray(retrieve(X * 1e3, xi * 1e3, 1e3))).all())
    out = retrieve(X.astype(jnp.bfloat16), xi.astype(jnp.bfloat16), 0.5)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(out), numpy_retrieve(X, xi, 0.5), atol=3e-2)


def test_retrieve_gradient_matches_finite_differences():
    X, xi = normal(6, N, D), normal(7, D)
    check_grads(lambda X, xi: retrieve(X, xi, 5.0), (X, xi), order=1, modes=["rev"], atol=2e-2, rtol=2e-2)


# ---- The classical network -----------------------------------------------------------------------

def test_hebbian_weights_are_symmetric_with_zero_diagonal_and_match_the_sum():
    X = random_patterns(6, 3)
    W = np.asarray(hebbian_weights(X))
    want = sum(np.outer(x, x) for x in np.float64(X)) / D
    np.fill_diagonal(want, 0)
    np.testing.assert_allclose(W, want, atol=1e-6)
    np.testing.assert_array_equal(W, W.T)


def test_energy_never_increases_under_asynchronous_updates():
    X = random_patterns(7, 24)  # over capacity: many flips, spurious minima
    W = np.asarray(hebbian_weights(X))
    rng = np.random.default_rng(8)
    state = rng.choice([-1.0, 1.0], D).astype(np.float32)
    previous = -0.5 * np.float64(state) @ np.float64(W) @ np.float64(state)
    np.testing.assert_allclose(energy(W, state), previous, rtol=1e-5)
    flips = 0
    for sweep in range(4):
        order = rng.permutation(D).astype(np.int32)
        new, energies = map(np.asarray, async_sweep(W, state, order))
        flips += int((new != state).sum())
        trace = np.concatenate([[previous], np.asarray(energies)])
        assert np.all(np.diff(trace) <= 1e-5), trace
        state, previous = new, float(energies[-1])
    assert flips > 5  # the test saw the energy fall, not a network standing still
    # A fixed point at the end: one more sweep changes nothing.
    again, _ = async_sweep(W, state, IDENTITY)
    np.testing.assert_array_equal(again, state)


def test_below_capacity_patterns_are_fixed_points_and_recalled_from_corrupted_queries():
    X = random_patterns(9, 3)
    W = np.asarray(hebbian_weights(X))
    for mu in range(3):
        same, _ = async_sweep(W, X[mu], IDENTITY)
        np.testing.assert_array_equal(same, X[mu])
        np.testing.assert_array_equal(recall(W, flip(X[mu], 10, seed=mu)), X[mu])


def test_above_capacity_most_patterns_are_not_fixed_points():
    X = random_patterns(10, 24)  # 24 / 64 = 0.375 D, beyond about 0.15 D
    W = np.asarray(hebbian_weights(X))
    fields = X @ W.T  # (N, D): the field at each stored pattern
    stable = np.all(np.where(fields >= 0, 1.0, -1.0) == np.asarray(X), axis=1)
    assert stable.sum() < 12, stable.sum()


def test_sweep_matches_a_python_loop():
    X = random_patterns(11, 5)
    W = np.float64(hebbian_weights(X))
    s = np.random.default_rng(12).choice([-1.0, 1.0], D)
    order = np.random.default_rng(13).permutation(D)
    got, energies = async_sweep(np.float32(W), np.float32(s), order.astype(np.int32))
    want, want_e = s.copy(), []
    for i in order:
        want[i] = 1.0 if W[i] @ want >= 0 else -1.0
        want_e.append(-0.5 * want @ W @ want)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(energies, want_e, atol=1e-5)


# ---- Bad input ---------------------------------------------------------------------------------------

def test_bad_input_gets_a_clear_error():
    X = random_patterns(13, 3, 5)
    W = np.asarray(hebbian_weights(X))
    with pytest.raises(ValueError, match="query"):
        retrieve(X, np.ones(4, np.float32), 1.0)
    with pytest.raises(TypeError, match="patterns"):
        retrieve(np.ones((3, 5), np.int32), np.ones(5, np.float32), 1.0)
    with pytest.raises(ValueError, match="patterns"):
        hebbian_weights(X * 0.5)
    with pytest.raises(ValueError, match="state"):
        energy(W, np.array([1.0, 0.0, 1.0, 1.0, -1.0], np.float32))
    with pytest.raises(ValueError, match="state"):
        async_sweep(W, np.array([1.0, np.nan, 1.0, 1.0, -1.0], np.float32))
    with pytest.raises(ValueError, match="W"):
        async_sweep(W[:, :4], X[0])
    with pytest.raises(ValueError, match="order"):
        async_sweep(W, X[0], np.array([0, 0, 1, 2, 3]))
