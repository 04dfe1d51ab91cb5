import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.signal import correlate2d
from sklearn.datasets import load_digits

from cookbook.generative.autoregressive import conv_mask, fit, init, log_prob, logits, masked_conv, masks, sample


def random_params(seed, D, H):
    """Every weight and bias random (init zeroes the biases), drawn by NumPy."""
    rng = np.random.default_rng(seed)
    shapes = {"W": (D, H), "b": (H,), "V": (H, D), "c": (D,)}
    return {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}


def numpy_log_prob(params, x):
    """The chain rule written out in NumPy float64: conditional d from a network that sees x_<d only,
    built by zeroing the later inputs and keeping the units of degree below d."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    D, H = p["W"].shape
    degrees = np.arange(H) % (D - 1) + 1
    total = 0.0
    for d in range(1, D + 1):
        seen = np.where(np.arange(1, D + 1) < d, x, 0.0)  # x_<d
        h = np.maximum(0.0, seen @ (p["W"] * (np.arange(1, D + 1)[:, None] <= degrees[None, :])) + p["b"])
        logit = h[degrees < d] @ p["V"][degrees < d, d - 1] + p["c"][d - 1]
        total += x[d - 1] * logit - np.logaddexp(0.0, logit)
    return total


def test_masks_match_their_definition_and_connect_each_output_to_every_earlier_input():
    M_W, M_V = map(np.asarray, masks(7, 11))  # read in NumPy: no program per index
    degrees = np.arange(11) % 6 + 1
    for d in range(1, 8):
        for k in range(11):
            assert M_W[d - 1, k] == (degrees[k] >= d)
            assert M_V[k, d - 1] == (d > degrees[k])
    paths = M_W @ M_V  # (D, D): paths from input j to output d
    np.testing.assert_array_equal(paths > 0, np.triu(np.ones((7, 7)), k=1) > 0)


def test_the_jacobian_is_strictly_lower_triangular():
    params = random_params(0, 7, 11)
    x = np.random.default_rng(1).normal(size=7).astype(np.float32)  # any input, not only binary
    J = np.asarray(jax.jacfwd(lambda x: logits(params, x))(x))  # J[d, j] = d logit_d / d x_j
    np.testing.assert_array_equal(np.triu(J), 0.0)  # output d never sees x_j for j >= d
    assert np.count_nonzero(np.tril(J, k=-1)) > 10  # and does see earlier inputs


def test_log_prob_matches_the_chain_rule_and_sums_to_one():
    params = random_params(2, 5, 7)
    X = np.array(list(itertools.product([0.0, 1.0], repeat=5)), np.float32)  # all 32 vectors
    got = jax.jit(jax.vmap(log_prob, in_axes=(None, 0)))(params, X)
    want = np.array([numpy_log_prob(params, x.astype(np.float64)) for x in X])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.sum(np.exp(want)), 1.0, rtol=1e-9)
    np.testing.assert_allclose(np.sum(np.exp(np.asarray(got, np.float64))), 1.0, rtol=1e-5)


def test_samples_have_the_model_probabilities():
    params = random_params(3, 3, 5)
    S = np.asarray(jax.jit(jax.vmap(sample, in_axes=(None, 0)))(params, jax.random.split(jax.random.key(4), 20_000)))
    assert set(np.unique(S)) <= {0.0, 1.0}
    X = np.array(list(itertools.product([0.0, 1.0], repeat=3)))
    freq = np.array([np.mean(np.all(S == x, axis=1)) for x in X])
    probs = np.exp([numpy_log_prob(params, x) for x in X])
    np.testing.assert_allclose(freq, probs, atol=0.015)  # about 4 standard errors at most


def test_masked_conv_matches_scipy_with_the_masked_kernel():
    rng = np.random.default_rng(6)
    kernel, x = rng.normal(size=(3, 3, 2, 3)).astype(np.float32), rng.normal(size=(5, 7, 2)).astype(np.float32)
    got = jax.jit(masked_conv, static_argnames="first")(kernel, x, first=False)
    masked = kernel * np.asarray(conv_mask(3, first=False))
    want = np.stack([sum(correlate2d(x[:, :, i], masked[:, :, i, o], mode="same") for i in range(2))
                     for o in range(3)], axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("first", [True, False])
def test_stacked_masked_convs_see_only_earlier_pixels(first):
    # Layer A then layer B: output pixel (i, j) depends on input pixels strictly before it in
    # raster order; a single layer B alone also sees (i, j) itself.
    rng = np.random.default_rng(7)
    k1, k2 = rng.normal(size=(3, 3, 1, 4)).astype(np.float32), rng.normal(size=(3, 3, 4, 1)).astype(np.float32)
    x = rng.normal(size=(5, 7, 1)).astype(np.float32)

    def net(x):
        return masked_conv(k2, jax.nn.relu(masked_conv(k1, x, first=first)), first=False)[:, :, 0]

    J = np.asarray(jax.jit(jax.jacrev(net))(x))[..., 0].reshape(35, 35)  # (output pixel, input pixel), raster order
    later = np.triu(np.ones((35, 35)), k=1 if not first else 0) > 0
    np.testing.assert_array_equal(J[later], 0.0)
    assert np.count_nonzero(J[~later]) > 100
    if not first:
        assert np.count_nonzero(np.diag(J)) > 0  # mask B keeps the centre


def test_it_learns_digits_better_than_independent_pixels():
    X = (load_digits().data > 8).astype(np.float32)
    X = X[np.random.default_rng(0).permutation(len(X))]
    train, test = X[:1500], X[1500:]
    # init's shapes and scales, drawn by NumPy: compiling init's random draws costs more than the run.
    rng = np.random.default_rng(0)
    params0 = {"W": (rng.normal(size=(64, 64)) * np.sqrt(2 / 64)).astype(np.float32), "b": np.zeros(64, np.float32),
               "V": (rng.normal(size=(64, 64)) * np.sqrt(2 / 64)).astype(np.float32), "c": np.zeros(64, np.float32)}
    shapes = jax.eval_shape(lambda k: init(k, D=64, H=64), jax.random.key(0))
    assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(np.shape, params0)
    params, values = fit(params0, jax.random.key(1), jnp.asarray(train), steps=300, batch=64, learning_rate=1e-2)
    nll = jax.jit(lambda p: -jnp.mean(jax.vmap(log_prob, in_axes=(None, 0))(p, test)))
    f = np.clip(train.mean(0), 1e-3, 1 - 1e-3)
    independent = -np.mean(np.sum(test * np.log(f) + (1 - test) * np.log(1 - f), axis=1))  # about 24.5 nats
    before, after = float(nll(params0)), float(nll(params))
    assert before > independent + 10  # about 45 untrained
    assert after < independent - 4  # about 19 after 300 steps
    assert float(values[-30:].mean()) < float(values[:30].mean()) - 10  # about 32, then 18


def test_bad_input_gets_a_clear_error():
    params = random_params(5, 5, 7)
    with pytest.raises(ValueError, match="x"):
        log_prob(params, np.zeros(7, np.float32))
    with pytest.raises(TypeError, match="x"):
        logits(params, np.zeros(5, np.int32))
    with pytest.raises(ValueError, match="params"):
        log_prob({**params, "V": np.zeros((7, 4), np.float32)}, np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="params"):
        sample({**params, "c": np.full(5, np.nan, np.float32)}, jax.random.key(0))
    with pytest.raises(ValueError, match="D"):
        masks(1, 3)
    with pytest.raises(ValueError, match="size"):
        conv_mask(4, first=True)
    with pytest.raises(ValueError, match="x"):
        masked_conv(np.zeros((3, 3, 2, 1), np.float32), np.zeros((5, 5, 3), np.float32), first=True)
    with pytest.raises(TypeError, match="H"):
        init(jax.random.key(0), D=5, H=2.5)
