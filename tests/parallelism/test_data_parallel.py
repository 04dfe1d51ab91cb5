import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.foundations import mlp
from cookbook.parallelism.data_parallel import collectives, grad, memory_per_device, train

SIZES = (3, 7, 2)
B = 16


def problem():
    rng = np.random.default_rng(0)
    params = [{"W": jnp.asarray(rng.standard_normal((a, b)) / np.sqrt(a), jnp.float32),
               "b": jnp.asarray(0.1 * rng.standard_normal(b), jnp.float32)} for a, b in zip(SIZES[:-1], SIZES[1:])]
    X = rng.standard_normal((B, SIZES[0])).astype(np.float32)
    Y = np.stack([np.sin(X.sum(1)), X[:, 0] * X[:, 1]], axis=1).astype(np.float32)
    return params, X, Y


@functools.cache
def compiled_grad(n):
    params, X, Y = problem()
    mesh = jax.make_mesh((n,), ("data",))
    return jax.jit(grad, static_argnames=("mesh", "axis")).lower(params, X, Y, mesh).compile()


@jax.jit
def reference(params, X, Y):
    return jax.value_and_grad(mlp.loss)(params, X, Y, "tanh")


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_gradient_equals_the_single_device_gradient(n):
    params, X, Y = problem()
    value, grads = compiled_grad(n)(params, X, Y)
    want_value, want = reference(params, X, Y)
    np.testing.assert_allclose(value, want_value, rtol=1e-6)
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_memory_per_device_holds_all_parameters_and_a_1_over_n_share_of_the_batch(n):
    params, X, Y = problem()
    parameter_bytes = sum(a.nbytes for a in jax.tree.leaves(params))
    memory = memory_per_device(compiled_grad(n))
    assert memory["arguments"] == parameter_bytes + (X.nbytes + Y.nbytes) // n
    # the gradients and the loss, replicated (XLA adds a few bytes of pointers for the output tuple)
    assert parameter_bytes + 4 <= memory["outputs"] <= parameter_bytes + 4 + 8 * 5


@pytest.mark.parametrize("n", [1, 8])
def test_the_step_holds_exactly_one_all_reduce(n):
    assert collectives(compiled_grad(n)) == {"all-reduce": 1}


def test_a_two_axis_mesh_shares_the_batch_over_both_axes():
    params, X, Y = problem()
    mesh = jax.make_mesh((2, 4), ("data", "model"))
    value, grads = grad(params, X, Y, mesh, axis=("data", "model"))
    _, want = reference(params, X, Y)
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_training_on_eight_devices_follows_single_device_gradient_descent():
    params, X, Y = problem()
    steps, lr = 20, 0.1

    @jax.jit
    def single(params):
        def step(params, _):
            value, grads = reference(params, X, Y)
            return jax.tree.map(lambda p, g: p - lr * g, params, grads), value
        return jax.lax.scan(step, params, length=steps)

    want_params, want_losses = single(params)
    got_params, got_losses = train(params, X, Y, jax.make_mesh((8,), ("data",)), learning_rate=lr, steps=steps)
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-6, atol=1e-6)
    for g, w in zip(jax.tree.leaves(got_params), jax.tree.leaves(want_params)):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
    assert got_losses[-1] < 0.5 * got_losses[0]  # it learns


def test_clear_errors():
    params, X, Y = problem()
    mesh = jax.make_mesh((8,), ("data",))
    with pytest.raises(ValueError, match=r"X must have a batch size divisible by the 8 devices"):
        grad(params, X[:12], Y[:12], mesh)
    with pytest.raises(ValueError, match="axis must name axes of the mesh"):
        grad(params, X, Y, mesh, axis="batch")
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        grad(params, X, Y, 8)
    with pytest.raises(TypeError, match="steps must be an int"):
        train(params, X, Y, mesh, learning_rate=0.1, steps=2.0)
    with pytest.raises(ValueError, match="Y must have shape"):
        grad(params, X, Y[:, :1], mesh)
    with pytest.raises(TypeError, match="compiled must be a jax.stages.Compiled"):
        collectives(grad)
    with pytest.raises(TypeError, match="compiled must be a jax.stages.Compiled"):
        memory_per_device(grad)
