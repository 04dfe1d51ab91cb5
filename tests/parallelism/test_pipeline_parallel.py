import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.parallelism.data_parallel import collectives, memory_per_device
from cookbook.parallelism.pipeline_parallel import activations_held, apply, bubble_fraction, schedule
from cookbook.parallelism.rematerialization import layer

L, B, D, M = 16, 12, 5, 4  # two layers per stage on eight devices, four micro-batches of three rows
STATIC = ("mesh", "axis", "num_microbatches")


def _data(seed):
    rng = np.random.default_rng(seed)
    params = {"W": (rng.standard_normal((L, D, D)) / np.sqrt(D)).astype(np.float32),
              "b": (0.1 * rng.standard_normal((L, D))).astype(np.float32)}
    return params, rng.standard_normal((B, D)).astype(np.float32)


def _sequential(params, x):
    return jax.lax.scan(layer, x, (params["W"], params["b"]))[0]


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((8,), ("stage",))


@pytest.fixture(scope="module")
def forward_program(mesh):
    return jax.jit(apply, static_argnames=STATIC).lower(*_data(0), mesh, axis="stage", num_microbatches=M).compile()


@pytest.mark.parametrize("kind", ["gpipe", "1f1b"])
def test_measured_bubble_is_p_minus_1_over_m_plus_p_minus_1(kind):
    for p in (1, 2, 3, 5, 8):
        for m in (1, 2, 4, 7, 11):
            table = schedule(p, m, kind=kind)
            assert table.shape == (2 * (m + p - 1), p)  # forward and backward fill and drain
            assert bubble_fraction(table) == pytest.approx((p - 1) / (m + p - 1), abs=1e-12)


@pytest.mark.parametrize("kind", ["gpipe", "1f1b"])
def test_schedules_respect_the_dependencies(kind):
    p, m = 5, 7
    table = schedule(p, m, kind=kind)
    when = {(j, int(v)): t for (t, j), v in np.ndenumerate(table) if v}
    assert len(when) == 2 * p * m  # every step of every micro-batch, once on every stage
    for i in range(1, m + 1):
        for j in range(1, p):
            assert when[(j, i)] > when[(j - 1, i)]  # forward: after the previous stage
            assert when[(j - 1, -i)] > when[(j, -i)]  # backward: after the next stage
        assert when[(p - 1, -i)] > when[(p - 1, i)]


def test_1f1b_holds_at_most_p_minus_j_plus_1_micro_batches_gpipe_all_m():
    p, m = 4, 11
    np.testing.assert_array_equal(activations_held(schedule(p, m, kind="gpipe")), [m] * p)
    np.testing.assert_array_equal(activations_held(schedule(p, m, kind="1f1b")), [4, 3, 2, 1])
    np.testing.assert_array_equal(activations_held(schedule(p, 2, kind="1f1b")), [2, 2, 2, 1])


def test_pipelined_forward_equals_the_sequential_network(forward_program):
    params, x = _data(1)
    np.testing.assert_allclose(forward_program(params, x), _sequential(params, x), rtol=1e-5, atol=1e-6)


def test_compiled_forward_one_permute_per_tick_and_one_all_reduce(forward_program):
    assert collectives(forward_program) == {"collective-permute": 1, "all-reduce": 1}
    trips = re.findall(r"known_trip_count[^0-9]*(\d+)", forward_program.as_text())
    assert str(M + 8 - 1) in trips  # the ticks; the loop over a stage's two layers may show too
    memory = memory_per_device(forward_program)
    assert memory["arguments"] == 4 * (L * D * D + L * D) // 8 + 4 * B * D  # 1/p of the layers, all inputs


def test_gradients_equal_those_of_the_sequential_network(mesh):
    params, x = _data(2)
    w = np.random.default_rng(3).standard_normal((B, D)).astype(np.float32)
    piped = lambda params, x: jnp.sum(apply(params, x, mesh, axis="stage", num_microbatches=M) * w)
    plain = lambda params, x: jnp.sum(_sequential(params, x) * w)
    program = jax.jit(jax.grad(piped, argnums=(0, 1))).lower(params, x).compile()
    got, want = program(params, x), jax.jit(jax.grad(plain, argnums=(0, 1)))(params, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The backward loop sends gradients the other way: stage j + 1 to stage j.
    pairs = [set(re.findall(r"\{(\d+),(\d+)\}", s)) for s in
             re.findall(r"source_target_pairs=\{((?:\{\d+,\d+\},?)+)\}", program.as_text())]
    assert {("1", "0")} <= set.union(*pairs) and {("0", "1")} <= set.union(*pairs)


def test_bad_arguments_raise_clear_errors(mesh):
    params, x = _data(4)
    with pytest.raises(ValueError, match=r"x must have a batch size divisible by num_microbatches = 5"):
        apply(params, x, mesh, num_microbatches=5)
    with pytest.raises(ValueError, match=r"params\['W'\] must have a depth L .* divisible by the 8 devices"):
        apply({"W": params["W"][:12], "b": params["b"][:12]}, x, mesh, num_microbatches=M)
    with pytest.raises(ValueError, match=r"params\['b'\] must have shape \(16, 5\)"):
        apply({"W": params["W"], "b": params["b"][:8]}, x, mesh, num_microbatches=M)
    with pytest.raises(ValueError, match=r"x must have shape \(12, 5\)"):
        apply(params, x[:, :4], mesh, num_microbatches=M)
    with pytest.raises(TypeError, match=r"num_microbatches must be an int"):
        apply(params, x, mesh, num_microbatches=4.0)
    with pytest.raises(ValueError, match=r"axis must name axes of the mesh"):
        apply(params, x, mesh, axis="data", num_microbatches=M)
    with pytest.raises(ValueError, match=r"kind must be one of"):
        schedule(4, 3, kind="interleaved")
    with pytest.raises(ValueError, match=r"num_stages must be at least 1"):
        schedule(0, 3)
    with pytest.raises(ValueError, match=r"table must be a \(ticks, stages\) integer table"):
        bubble_fraction(np.zeros(5))
