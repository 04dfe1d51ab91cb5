import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cookbook.parallelism.data_parallel import memory_per_device
from cookbook.parallelism.gradient_accumulation import accumulated_grad, apply, init, loss, train

D, F, C, B = 3, 11, 2, 56  # 56 examples: 2, 4 or 8 micro-batches of 28, 14 or 7


def problem(seed=0):
    rng = np.random.default_rng(seed)
    params = {"W1": rng.standard_normal((D, F)) / np.sqrt(D), "b1": 0.1 * rng.standard_normal(F),
              "gamma": 1 + 0.1 * rng.standard_normal(F), "beta": 0.1 * rng.standard_normal(F),
              "W2": rng.standard_normal((F, C)) / np.sqrt(F), "b2": 0.1 * rng.standard_normal(C)}
    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    X = rng.standard_normal((B, D)).astype(np.float32)
    Y = np.stack([np.sin(X.sum(1)), X[:, 0] * X[:, 1]], axis=1).astype(np.float32)
    return params, X, Y


full_grad = jax.jit(jax.value_and_grad(lambda p, X, Y, norm: loss(p, X, Y, norm=norm)), static_argnums=3)


@functools.cache
def compiled(M):
    """The compiled accumulated gradient for M micro-batches, shared by the value and memory tests."""
    params, X, Y = problem()
    return jax.jit(accumulated_grad, static_argnames=("micro_batches", "norm")).lower(
        params, X, Y, micro_batches=M).compile()


def relative_error(got, want):
    got, want = (np.concatenate([np.ravel(a) for a in jax.tree.leaves(t)]) for t in (got, want))
    return np.linalg.norm(got - want) / np.linalg.norm(want)


@pytest.mark.parametrize("M", [1, 2, 4, 8])
def test_micro_batches_give_the_full_batch_gradient_without_normalisation(M):
    params, X, Y = problem()
    value, grads = compiled(M)(params, X, Y)
    want_value, want = full_grad(params, X, Y, False)
    np.testing.assert_allclose(value, want_value, rtol=1e-6)
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert relative_error(grads, want) < 1e-6


def test_the_loss_is_a_mean_over_examples_computed_in_float64():
    params, X, Y = problem()
    p = {k: np.float64(v) for k, v in params.items()}
    h = np.tanh(X @ p["W1"] + p["b1"])
    want = np.mean((h @ p["W2"] + p["b2"] - Y) ** 2)
    np.testing.assert_allclose(loss(params, X, Y), want, rtol=1e-6)


def test_batch_normalisation_breaks_the_equality():
    params, X, Y = problem()
    _, want = full_grad(params, X, Y, True)
    _, one = accumulated_grad(params, X, Y, micro_batches=1, norm=True)
    _, four = accumulated_grad(params, X, Y, micro_batches=4, norm=True)
    assert relative_error(one, want) < 1e-6  # one micro-batch is the batch
    assert relative_error(four, want) > 1e-2  # each micro-batch normalised by its own statistics


def test_batch_normalisation_couples_the_examples_of_a_batch():
    params, X, _ = problem()
    changed = X.copy()
    changed[-1] += 3.0  # change only the last example
    plain = apply(params, changed)[:-1] - apply(params, X)[:-1]
    normed = apply(params, changed, norm=True)[:-1] - apply(params, X, norm=True)[:-1]
    assert np.abs(plain).max() == 0.0  # without normalisation the other outputs do not move
    assert np.abs(normed).max() > 1e-3  # with it, every output moves


def test_training_with_accumulation_follows_full_batch_training():
    params, X, Y = problem()
    steps, lr = 20, 0.1

    @jax.jit
    def full(params):
        def step(params, _):
            value, grads = full_grad(params, X, Y, False)
            return jax.tree.map(lambda p, g: p - lr * g, params, grads), value
        return jax.lax.scan(step, params, length=steps)

    want_params, want_losses = full(params)
    got_params, got_losses = train(params, X, Y, micro_batches=4, learning_rate=lr, steps=steps)
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-6, atol=1e-6)
    for g, w in zip(jax.tree.leaves(got_params), jax.tree.leaves(want_params)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert got_losses[-1] < 0.7 * got_losses[0]  # it learns


def test_training_matches_optax_multisteps():
    """optax.MultiSteps applies the mean of k micro-batch gradients every k calls: the same steps."""
    params, X, Y = problem()
    M, steps, lr = 4, 5, 0.1
    opt = optax.MultiSteps(optax.sgd(lr), every_k_schedule=M)
    micro = (X.reshape(M, B // M, D), Y.reshape(M, B // M, C))

    @jax.jit
    def run(params):
        def call(carry, batch):
            params, state = carry
            grads = jax.grad(lambda p: loss(p, *batch))(params)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None
        batches = jax.tree.map(lambda a: jnp.tile(a, (steps, 1, 1)), micro)  # the micro-batches, every step
        (params, _), _ = jax.lax.scan(call, (params, opt.init(params)), batches)
        return params

    want = run(params)
    got, _ = train(params, X, Y, micro_batches=M, learning_rate=lr, steps=steps)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_accumulation_needs_fewer_temporary_bytes():
    temporaries = [memory_per_device(compiled(M))["temporaries"] for M in (1, 2, 4, 8)]
    assert temporaries == sorted(temporaries, reverse=True) and len(set(temporaries)) == 4
    assert temporaries[-1] < temporaries[0] / 3  # 8 micro-batches of 7 against one batch of 56


def test_clear_errors():
    params, X, Y = problem()
    with pytest.raises(ValueError, match="X must have a batch size divisible by micro_batches = 5"):
        accumulated_grad(params, X, Y, micro_batches=5)
    with pytest.raises(TypeError, match="micro_batches must be an int"):
        accumulated_grad(params, X, Y, micro_batches=2.0)
    with pytest.raises(TypeError, match="norm must be a bool"):
        loss(params, X, Y, norm="batch")
    with pytest.raises(ValueError, match="Y must have shape"):
        loss(params, X, Y[:, :1])
    with pytest.raises(TypeError, match="params must be a dict"):
        apply([params], X)
    with pytest.raises(ValueError, match="sizes must be a tuple"):
        init(jax.random.key(0), (3, 5))
