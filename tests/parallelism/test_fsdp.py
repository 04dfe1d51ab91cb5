import jax
import numpy as np
import optax
import pytest

from cookbook.foundations import mlp
from cookbook.parallelism.data_parallel import collectives
from cookbook.parallelism.fsdp import (State, init, padded_size, step_memory, step_program, train,
                                       unflatten)

SIZES = (3, 7, 2)  # 3 * 7 + 7 + 7 * 2 + 2 = 44 parameters: not a multiple of 8, so padding is tested
B, STEPS, LR = 16, 20, 0.05


def problem():
    rng = np.random.default_rng(1)
    # NumPy float32 (jnp.asarray of each would compile a conversion per shape)
    params = [{"W": (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
               "b": (0.1 * rng.standard_normal(b)).astype(np.float32)} for a, b in zip(SIZES[:-1], SIZES[1:])]
    X = rng.standard_normal((B, SIZES[0])).astype(np.float32)
    Y = np.stack([np.sin(X.sum(1)), X[:, 0] * X[:, 1]], axis=1).astype(np.float32)
    return params, X, Y


@pytest.fixture(scope="module")
def adam_reference():
    """optax.adam on one device: the loss before each step and the final parameters."""
    params, X, Y = problem()
    opt = optax.adam(LR)

    @jax.jit
    def run(params):
        def step(carry, _):
            params, opt_state = carry
            value, grads = jax.value_and_grad(mlp.loss)(params, X, Y, "tanh")
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value
        (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), length=STEPS)
        return params, losses

    return run(params)


def test_padded_size_and_unflatten_round_trip():
    params, _, _ = problem()
    assert padded_size(SIZES, 1) == 44 and padded_size(SIZES, 8) == 48
    state = init(params, jax.make_mesh((8,), ("data",)), stage=3)
    assert state.params.shape == (48,) and state.params.sharding.shard_shape((48,)) == (6,)
    np.testing.assert_array_equal(np.asarray(state.params)[44:], 0.0)  # the padding
    for got, want in zip(jax.tree.leaves(unflatten(state.params, SIZES)), jax.tree.leaves(params)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_every_stage_on_eight_devices_follows_single_device_adam(stage, adam_reference):
    params, X, Y = problem()
    mesh = jax.make_mesh((8,), ("data",))
    state, losses = train(init(params, mesh, stage=stage), X, Y, mesh, sizes=SIZES, stage=stage,
                          learning_rate=LR, steps=STEPS)
    want_params, want_losses = adam_reference
    losses = np.asarray(losses)  # read in NumPy: indexing and comparing a JAX array compile programs
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5, atol=1e-5)
    for got, want in zip(jax.tree.leaves(unflatten(state.params, SIZES)), jax.tree.leaves(want_params)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert int(state.count) == STEPS and losses[-1] < 0.5 * losses[0]


def test_fully_sharded_over_a_two_by_four_mesh_reproduces_the_single_device_loss_curve(adam_reference):
    params, X, Y = problem()
    mesh = jax.make_mesh((2, 4), ("data", "model"))
    axes = ("data", "model")
    state = init(params, mesh, stage=3, axis=axes)
    assert state.params.sharding.shard_shape(state.params.shape) == (6,)
    _, losses = train(state, X, Y, mesh, sizes=SIZES, stage=3, learning_rate=LR, steps=STEPS, axis=axes)
    np.testing.assert_allclose(losses, adam_reference[1], rtol=0, atol=1e-5)


FIGURE = (32, 256, 4)  # the page's figure: 9476 parameters
BATCH = 8


def expected_arguments(stage, n):
    """Bytes per device between steps: parameters, two moments, the step count and the learning rate
    (4 bytes each), and this device's share of the batch."""
    P = padded_size(FIGURE, n)
    params = P if stage < 3 else P // n
    moments = 2 * (P if stage == 0 else P // n)
    batch = BATCH * (FIGURE[0] + FIGURE[-1]) // n
    return 4 * (params + moments + 1 + 1 + batch)


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_stage_three_memory_per_device_falls_as_one_over_n(n):
    assert padded_size(FIGURE, 1) == 9476
    memory = step_memory(FIGURE, n, stage=3)
    assert memory["arguments"] == expected_arguments(3, n)
    state_bytes = memory["arguments"] - 4 * (2 + BATCH * (FIGURE[0] + FIGURE[-1]) // n)
    assert state_bytes == 3 * 4 * padded_size(FIGURE, n) // n  # parameters and moments: 1/N


@pytest.mark.parametrize("stage", [0, 1])
def test_data_parallel_holds_everything_and_stage_one_shards_the_moments(stage):
    assert step_memory(FIGURE, 8, stage=stage)["arguments"] == expected_arguments(stage, 8)


@pytest.mark.parametrize("stage, want", [
    (0, {"all-reduce": 1}),
    (1, {"all-reduce": 1, "all-gather": 1}),
    (3, {"all-gather": 1, "reduce-scatter": 1, "all-reduce": 1}),
])
def test_collectives_of_one_step(stage, want):
    assert collectives(step_program(FIGURE, 8, stage=stage)) == want


def test_clear_errors():
    params, X, Y = problem()
    mesh = jax.make_mesh((8,), ("data",))
    state = init(params, mesh, stage=3)
    with pytest.raises(ValueError, match="stage must be one of"):
        init(params, mesh, stage=4)
    with pytest.raises(ValueError, match=r"state.params must have shape \(32,\) \(the parameters of sizes \(3, 5, 2\)"):
        train(state, X, Y, mesh, sizes=(3, 5, 2), stage=3, learning_rate=LR, steps=1)
    with pytest.raises(ValueError, match="X must have a batch size divisible by the 8 devices"):
        train(state, X[:12], Y[:12], mesh, sizes=SIZES, stage=3, learning_rate=LR, steps=1)
    with pytest.raises(TypeError, match="state must be an fsdp.State"):
        train(tuple(state), X, Y, mesh, sizes=SIZES, stage=3, learning_rate=LR, steps=1)
    with pytest.raises(ValueError, match="flat must hold at least 44 entries"):
        unflatten(np.zeros(40, np.float32), SIZES)
    with pytest.raises(ValueError, match="n must be at most"):
        step_program(FIGURE, 16, stage=3)
    assert isinstance(state, State)


def test_the_compilers_own_plan_from_the_same_shardings_gives_the_same_step():
    """jax.jit on a single-device Adam step, with the state sharded as stage 3 says on a mesh whose
    axes the compiler may partition over, computes the same step with a plan of its own: it gathers
    the parameters too, but with more collectives than the hand-written step's three."""
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

    from cookbook.parallelism import fsdp

    params, X, Y = problem()
    auto = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    state = init(params, auto, stage=3)
    assert state.params.sharding.spec == P("data")
    X_s, Y_s = (jax.device_put(a, NamedSharding(auto, P("data"))) for a in (X, Y))

    def step(state, X, Y):
        value, g = jax.value_and_grad(lambda flat: mlp.loss(unflatten(flat, SIZES), X, Y, "tanh"))(state.params)
        theta, m, v = fsdp._adam(state.params, g, state.m, state.v, 1.0, LR)
        return theta, value

    program = jax.jit(step, out_shardings=(state.params.sharding, NamedSharding(auto, P()))).lower(
        state, X_s, Y_s).compile()
    counts = collectives(program)
    assert counts.get("all-gather", 0) >= 1 and sum(counts.values()) > 3
    theta, value = program(state, X_s, Y_s)
    mesh = jax.make_mesh((8,), ("data",))
    want, losses = train(init(params, mesh, stage=3), X, Y, mesh, sizes=SIZES, stage=3, learning_rate=LR, steps=1)
    np.testing.assert_allclose(value, np.asarray(losses)[0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(theta), np.asarray(want.params), rtol=1e-5, atol=1e-6)
