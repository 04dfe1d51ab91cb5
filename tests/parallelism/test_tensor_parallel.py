import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.parallelism.data_parallel import collectives, memory_per_device
from cookbook.parallelism.tensor_parallel import (attention, mlp, parallel_attention, parallel_mlp,
                                                  train)

D, F, C, T = 5, 24, 3, 7  # F = 24 hidden units: 24, 12, 6 or 3 per device
H, K = 8, 3  # 8 heads of width 3


# The weights are NumPy arrays: placed on a mesh, a NumPy array is cut on the host, where a JAX array
# on one device is cut by a compiled program (_multi_slice) for every shape and sharding.
def mlp_params(seed=0):
    rng = np.random.default_rng(seed)
    return {"W1": (rng.standard_normal((D, F)) / np.sqrt(D)).astype(np.float32),
            "b1": (0.1 * rng.standard_normal(F)).astype(np.float32),
            "W2": (rng.standard_normal((F, C)) / np.sqrt(F)).astype(np.float32),
            "b2": (0.1 * rng.standard_normal(C)).astype(np.float32)}


def attention_params(seed=1):
    rng = np.random.default_rng(seed)
    w = lambda *shape: (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)
    return {"Wq": w(D, H, K), "Wk": w(D, H, K), "Wv": w(D, H, K), "Wo": w(H, K, D)}


def rows(seed=2, n=T):
    return np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)


def model_mesh(n):
    return jax.make_mesh((n,), ("model",))


@functools.cache
def compiled(layer, n):
    fn, params = (parallel_mlp, mlp_params()) if layer == "mlp" else (parallel_attention, attention_params())
    return jax.jit(fn, static_argnames=("mesh", "axis")).lower(params, rows(), model_mesh(n)).compile()


mlp_jit, attention_jit = jax.jit(mlp), jax.jit(attention)


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_parallel_mlp_equals_the_mlp_and_holds_one_nth_of_its_weights(n):
    params, X = mlp_params(), rows()
    program = compiled("mlp", n)
    np.testing.assert_allclose(program(params, X), mlp_jit(params, X), rtol=1e-6, atol=1e-6)
    sharded = (D * F + F + F * C) // n  # W1 by columns, b1 with them, W2 by rows
    assert memory_per_device(program)["arguments"] == 4 * (sharded + C + T * D)  # b2 and X whole
    assert collectives(program) == {"all-reduce": 1}


@pytest.mark.parametrize("n", [2, 8])
def test_parallel_attention_equals_attention_with_one_all_reduce(n):
    params, X = attention_params(), rows()
    program = compiled("attention", n)
    np.testing.assert_allclose(program(params, X), attention_jit(params, X), rtol=1e-6, atol=1e-6)
    assert collectives(program) == {"all-reduce": 1}
    assert memory_per_device(program)["arguments"] == 4 * (4 * D * H * K // n + T * D)


@pytest.mark.parametrize("layer", ["mlp", "attention"])
def test_gradients_equal_and_the_backward_pass_adds_one_all_reduce(layer):
    mesh = model_mesh(4)
    single, parallel, params = ((mlp, parallel_mlp, mlp_params()) if layer == "mlp"
                                else (attention, parallel_attention, attention_params()))
    loss = lambda f: jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.tanh(f(p, x)) ** 2), argnums=(0, 1)))
    program = loss(lambda p, x: parallel(p, x, mesh)).lower(params, rows()).compile()
    got, want = program(params, rows()), loss(single)(params, rows())
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert collectives(program) == {"all-reduce": 2}  # Megatron's g (forward) and f (backward)


@pytest.mark.parametrize("fully_sharded", [False, True])
def test_training_on_a_two_by_four_mesh_reproduces_the_single_device_loss_curve(fully_sharded, single_device_run):
    params, X, Y, want_params, want_losses = single_device_run
    mesh = jax.make_mesh((2, 4), ("data", "model"))
    got_params, got_losses = train(params, X, Y, mesh, learning_rate=LR, steps=STEPS, fully_sharded=fully_sharded)
    np.testing.assert_allclose(got_losses, want_losses, rtol=0, atol=1e-5)
    per_device = F // 8 if fully_sharded else F // 4  # hidden units of W1 on each device
    assert got_params["W1"].sharding.shard_shape((D, F)) == (D, per_device)
    for key in want_params:
        np.testing.assert_allclose(np.asarray(got_params[key]), want_params[key], rtol=1e-4, atol=1e-5)
    assert got_losses[-1] < 0.6 * got_losses[0]  # it learns


STEPS, LR = 30, 0.1


@pytest.fixture(scope="module")
def single_device_run():
    params = mlp_params()
    X = rows(3, 16)
    Y = np.stack([np.sin(X[:, 0]), X[:, 1] * X[:, 2], np.cos(X[:, 3])], axis=1).astype(np.float32)

    @jax.jit
    def single(params):
        def step(params, _):
            value, grads = jax.value_and_grad(lambda p: jnp.mean((mlp(p, X) - Y) ** 2))(params)
            return jax.tree.map(lambda p, g: p - LR * g, params, grads), value
        return jax.lax.scan(step, params, length=STEPS)

    return (params, X, Y) + tuple(single(params))


def test_clear_errors():
    mesh = model_mesh(8)
    params = mlp_params()
    with pytest.raises(ValueError, match=r"params\['W1'\] must have a hidden width F divisible by the 8"):
        parallel_mlp({**params, "W1": params["W1"][:, :20], "b1": params["b1"][:20], "W2": params["W2"][:20]},
                     rows(), mesh)
    heads = attention_params()
    with pytest.raises(ValueError, match=r"params\['Wq'\] must have a number of heads H divisible by the 8"):
        parallel_attention({k: v[:, :6] if k != "Wo" else v[:6] for k, v in heads.items()}, rows(), mesh)
    with pytest.raises(ValueError, match="X must have shape"):
        parallel_mlp(params, rows()[:, :4], mesh)
    with pytest.raises(ValueError, match="axis must name axes of the mesh"):
        parallel_mlp(params, rows(), mesh, axis="data")
    with pytest.raises(TypeError, match="params must be a dict with keys"):
        attention(params, rows())
    with pytest.raises(ValueError, match="X must have a batch size divisible by the 2"):
        train(params, rows(), np.zeros((T, C), np.float32), jax.make_mesh((2, 4), ("data", "model")),
              learning_rate=0.1, steps=1)
    with pytest.raises(ValueError, match=r"params\['W1'\] must have a hidden width F divisible by the 8"):
        train({**params, "W1": params["W1"][:, :20], "b1": params["b1"][:20], "W2": params["W2"][:20]},
              rows(3, 16), np.zeros((16, C), np.float32), jax.make_mesh((2, 4), ("data", "model")),
              learning_rate=0.1, steps=1, fully_sharded=True)


def test_the_compilers_own_partitioning_from_the_same_shardings_also_holds_one_all_reduce():
    """jax.jit on the single-device MLP, with the weights given the page's shardings (on a mesh whose
    axes the compiler may partition over), finds the same plan: one all-reduce, the same values."""
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

    mesh = jax.make_mesh((4,), ("model",), axis_types=(AxisType.Auto,))
    specs = {"W1": P(None, "model"), "b1": P("model"), "W2": P("model", None), "b2": P()}
    params = {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in mlp_params().items()}
    X = jax.device_put(rows(), NamedSharding(mesh, P()))
    program = mlp_jit.lower(params, X).compile()
    assert collectives(program) == {"all-reduce": 1}
    np.testing.assert_allclose(program(params, X), compiled("mlp", 4)(mlp_params(), rows()), rtol=1e-6, atol=1e-6)
