import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from cookbook.generative.energy_based import cd_loss, fit, free_energy, gibbs_step, init, langevin


def random_params(seed, D, H, scale=1.0):
    rng = np.random.default_rng(seed)
    return {"W": (scale * rng.normal(size=(D, H))).astype(np.float32), "b": (scale * rng.normal(size=D)).astype(np.float32),
            "c": (scale * rng.normal(size=H)).astype(np.float32)}


def binary(n):
    return np.array(list(itertools.product([0.0, 1.0], repeat=n)))


def exact_log_p(params, V):
    """log p(v) for the rows of V, with Z summed over all visible vectors (NumPy float64)."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    F = lambda V: -V @ p["b"] - np.sum(np.logaddexp(0.0, p["c"] + V @ p["W"]), axis=-1)  # noqa: E731
    return -F(V) - logsumexp(-F(binary(p["W"].shape[0])))


free_energies = jax.jit(jax.vmap(free_energy, in_axes=(None, 0)))


def test_free_energy_sums_the_hidden_units_out():
    params = random_params(0, 5, 3)
    V, Hs = binary(5), binary(3)
    W, b, c = (np.asarray(params[k], np.float64) for k in "Wbc")
    joint = -(V @ W @ Hs.T) - (V @ b)[:, None] - (Hs @ c)[None, :]  # E(v, h), (32, 8)
    np.testing.assert_allclose(free_energies(params, V.astype(np.float32)), -logsumexp(-joint, axis=1), rtol=1e-5)


def test_gibbs_sampling_reaches_the_exact_distribution():
    params = random_params(1, 3, 2)

    @jax.jit
    def chains(key):  # 20,000 chains, the keys split inside the program
        def run(key):
            v, _ = jax.lax.scan(lambda v, k: (gibbs_step(params, k, v), None), jnp.zeros(3), jax.random.split(key, 30))
            return v
        return jax.vmap(run)(jax.random.split(key, 20_000))

    S = np.asarray(chains(jax.random.key(2)))
    freq = np.array([np.mean(np.all(S == v, axis=1)) for v in binary(3)])
    np.testing.assert_allclose(freq, np.exp(exact_log_p(params, binary(3))), atol=0.015)


def test_cd_with_long_chains_approaches_the_exact_gradient():
    params = random_params(3, 4, 3, scale=0.5)
    v = np.array([1.0, 0.0, 1.0, 1.0], np.float32)
    # Exact: -grad log p(v) = grad F(v) - E_p[grad F], with p(v) by enumeration.
    V = binary(4).astype(np.float32)
    weights = np.exp(exact_log_p(params, V))
    grad_F = jax.jit(jax.vmap(jax.grad(free_energy), in_axes=(None, 0)))(params, V)
    row = int(np.flatnonzero(np.all(V == v, axis=1))[0])  # grad F(v): v's row of grad_F
    exact = {k: np.asarray(g)[row] - np.tensordot(weights, np.asarray(g), axes=1) for k, g in grad_F.items()}
    cd = jax.jit(lambda p, key: jax.vmap(jax.grad(lambda p, key: cd_loss(p, key, v, k=20)), in_axes=(None, 0))(
        p, jax.random.split(key, 4000)))(params, jax.random.key(4))
    for name in exact:
        np.testing.assert_allclose(np.mean(np.asarray(cd[name]), axis=0), exact[name], atol=0.03)


def test_langevin_stationary_variance_is_widened_by_the_step_size():
    mu, sigma2, eta = np.array([1.0, -2.0, 0.5], np.float32), 0.25, 0.1

    def energy(x):
        return jnp.sum((x - mu) ** 2) / (2 * sigma2)

    run = jax.jit(lambda key: jax.vmap(lambda key: langevin(energy, key, jnp.zeros(3), steps=100, step_size=eta))(
        jax.random.split(key, 20_000)))
    X = np.asarray(run(jax.random.key(5)))
    np.testing.assert_allclose(X.mean(0), mu, atol=0.01)
    var = X.var(0).mean()
    assert abs(var - sigma2 / (1 - eta / (4 * sigma2))) < 0.006  # 0.278, not 0.25
    assert abs(var - sigma2) > 0.02


def test_it_learns_two_patterns_by_contrastive_divergence():
    rng = np.random.default_rng(6)
    patterns = np.array([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]], np.float32)
    V = patterns[rng.integers(0, 2, 1024)]
    V = np.abs(V - (rng.random(V.shape) < 0.05)).astype(np.float32)  # 5 % of the bits flipped
    params0 = {"W": (0.1 * rng.normal(size=(6, 4))).astype(np.float32), "b": np.zeros(6, np.float32),
               "c": np.zeros(4, np.float32)}  # init's shapes and scale, drawn by NumPy
    shapes = jax.eval_shape(lambda k: init(k, D=6, H=4), jax.random.key(0))
    assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(np.shape, params0)
    params, _ = fit(params0, jax.random.key(7), jnp.asarray(V), steps=300, batch=64, k=1, learning_rate=3e-2)
    before, after = exact_log_p(params0, V).mean(), exact_log_p(params, V).mean()
    assert before < -4.1  # about -6 log 2 = -4.16
    assert after > -2.3  # about -1.93
    # No model of these data does better than their own entropy (about 1.9 nats): the bound of
    # maximum likelihood on the training set.
    _, counts = np.unique(V, axis=0, return_counts=True)
    entropy = -np.sum(counts / len(V) * np.log(counts / len(V)))
    assert abs(entropy - 1.9) < 0.1 and after <= -entropy


def test_bad_input_gets_a_clear_error():
    params = random_params(8, 5, 3)
    with pytest.raises(ValueError, match="v"):
        free_energy(params, np.zeros(7, np.float32))
    with pytest.raises(TypeError, match="v"):
        gibbs_step(params, jax.random.key(0), np.zeros(5, np.int32))
    with pytest.raises(ValueError, match="params"):
        free_energy({**params, "c": np.zeros(4, np.float32)}, np.zeros(5, np.float32))
    with pytest.raises(TypeError, match="k"):
        cd_loss(params, jax.random.key(0), np.zeros(5, np.float32), k=1.5)
    with pytest.raises(ValueError, match="params"):
        gibbs_step({**params, "b": np.full(5, np.nan, np.float32)}, jax.random.key(0), np.zeros(5, np.float32))
    with pytest.raises(TypeError, match="energy"):
        langevin(3.0, jax.random.key(0), np.zeros(2, np.float32), steps=2, step_size=0.1)
    with pytest.raises(ValueError, match="step_size"):
        langevin(jnp.sum, jax.random.key(0), np.zeros(2, np.float32), steps=2, step_size=-0.1)
