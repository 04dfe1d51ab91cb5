import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.parallelism.data_parallel import collectives, memory_per_device
from cookbook.parallelism import sequence_parallel
from cookbook.parallelism.sequence_parallel import ring_attention, ring_schedule

TOL = dict(rtol=1e-5, atol=1e-5)  # float32 ring against a float64 reference
STATIC = ("mesh", "axis", "causal")
T, H, D, DV = 24, 2, 5, 5  # three positions per device on eight devices: the page's example


def _qkv(seed, T=T, H=H, D=D, Dv=DV):
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(s).astype(np.float32) for s in [(T, H, D), (T, H, D), (T, H, Dv)])


def _rings(compiled):
    """The (source, target) pairs of each collective permute of a compiled program."""
    found = re.findall(r"source_target_pairs=\{((?:\{\d+,\d+\},?)+)\}", compiled.as_text())
    return [{(int(a), int(b)) for a, b in re.findall(r"\{(\d+),(\d+)\}", pairs)} for pairs in found]


def _reference(q, k, v, causal):
    """Softmax attention per head in float64: the single-device form."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(q.shape[-1])
    if causal:
        scores = np.where(np.tril(np.ones(scores.shape[1:], bool)), scores, -np.inf)
    w = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return np.einsum("hts,shd->thd", w / w.sum(axis=-1, keepdims=True), v)


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((8,), ("seq",))


@pytest.fixture(scope="module")
def causal_program(mesh):
    """The causal ring on eight devices, compiled once for every test that reads it."""
    q, k, v = _qkv(0)  # the program of the page's example (compiled once when the compilation cache is on)
    return sequence_parallel._ring_attention.lower(q, k, v, mesh=mesh, axis="seq", causal=True).compile()


@pytest.fixture(scope="module")
def grad_program(mesh):
    weights = np.random.default_rng(9).standard_normal((T, H, DV)).astype(np.float32)

    def loss(q, k, v):
        return jnp.sum(ring_attention(q, k, v, mesh, axis="seq", causal=True) * weights)

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(*_qkv(0)).compile(), weights


def test_causal_ring_equals_full_attention(causal_program):
    q, k, v = _qkv(1)
    np.testing.assert_allclose(causal_program(q, k, v), _reference(q, k, v, causal=True), **TOL)


def test_non_causal_on_four_devices_of_a_two_by_four_mesh():
    # Another device count, and a mesh with a second axis (the ring runs along "seq" only).
    mesh = jax.make_mesh((2, 4), ("data", "seq"))
    q, k, v = _qkv(2, T=12, Dv=3)  # values narrower than keys
    y = ring_attention(q, k, v, mesh, axis="seq")
    np.testing.assert_allclose(y, _reference(q, k, v, causal=False), **TOL)
    assert y.sharding.spec[0] == "seq"


def test_causality_later_positions_never_change_earlier_outputs(causal_program):
    q, k, v = _qkv(3)
    later_k, later_v = k.copy(), v.copy()
    later_k[13:] += 5.0
    later_v[13:] -= 7.0
    y, y_changed = np.asarray(causal_program(q, k, v)), np.asarray(causal_program(q, later_k, later_v))
    np.testing.assert_array_equal(y_changed[:13], y[:13])
    assert np.abs(y_changed[13:] - y[13:]).min() > 0


def test_gradients_equal_those_of_full_attention(grad_program):
    program, weights = grad_program
    q, k, v = _qkv(4)

    def full_loss(q, k, v):  # the library's single-device attention
        return jnp.sum(jax.nn.dot_product_attention(q, k, v, is_causal=True) * weights)

    expected = jax.jit(jax.grad(full_loss, argnums=(0, 1, 2)))(q, k, v)
    for got, want in zip(program(q, k, v), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)


def test_collectives_two_permutes_in_a_loop_of_n_minus_one_steps(causal_program, grad_program):
    # Forward: one loop of N - 1 = 7 steps that sends the key block and the value block.
    assert collectives(causal_program) == {"collective-permute": 2}
    assert re.findall(r'known_trip_count[^0-9]*(\d+)', causal_program.as_text()) == ["7"]
    right = {(d, (d + 1) % 8) for d in range(8)}
    assert _rings(causal_program) == [right, right]  # each device sends to its right, round the ring
    # Backward: a second ring the other way (the transpose of a send to the right).
    assert collectives(grad_program[0]) == {"collective-permute": 4}
    left = {(b, a) for a, b in right}
    rings = _rings(grad_program[0])
    assert rings.count(right) == 2 and rings.count(left) == 2


def test_memory_per_device_is_one_block(causal_program):
    memory = memory_per_device(causal_program)
    block = T // 8
    assert memory["arguments"] == 4 * block * H * (D + D + DV)  # q, k, v: T/N rows each
    assert memory["outputs"] == 4 * block * H * DV
    # Never the T x T scores of full attention (4608 bytes here), only tiles of (T/N)^2.
    assert memory["temporaries"] < 4 * T * T * H


def test_ring_schedule_every_block_visits_every_device_once():
    blocks = ring_schedule(5)
    np.testing.assert_array_equal(blocks[0], np.arange(5))  # step 0: the device's own block
    for column in blocks.T:
        assert sorted(column) == list(range(5))
    np.testing.assert_array_equal(blocks[1:], np.roll(blocks[:-1], 1, axis=1))  # passed to the right
    # Causal: device i uses i + 1 of its N steps.
    np.testing.assert_array_equal((blocks <= np.arange(5)).sum(axis=0), np.arange(1, 6))
    with pytest.raises(TypeError, match=r"num_devices must be an int"):
        ring_schedule(4.0)


def test_bad_arguments_raise_clear_errors(mesh):
    q, k, v = _qkv(6)
    with pytest.raises(ValueError, match=r"q must have a length T .* divisible by the 8 devices"):
        ring_attention(q[:23], k[:23], v[:23], mesh)
    with pytest.raises(ValueError, match=r"axis must name axes of the mesh"):
        ring_attention(q, k, v, mesh, axis="model")
    with pytest.raises(TypeError, match=r"axis must be the name of one mesh axis"):
        ring_attention(q, k, v, mesh, axis=("seq",))
    with pytest.raises(TypeError, match=r"mesh must be a jax.sharding.Mesh"):
        ring_attention(q, k, v, jax.devices())
    with pytest.raises(TypeError, match=r"k must be a floating-point array"):
        ring_attention(q, k.astype(np.int32), v, mesh)
    with pytest.raises(ValueError, match=r"k must have shape \(24, 2, 5\)"):
        ring_attention(q, k[:, :, :4], v, mesh)
    with pytest.raises(ValueError, match=r"v must have shape \(24, 2, 5\)"):
        ring_attention(q, k, v[:16], mesh)
    with pytest.raises(ValueError, match=r"q must have 3 axes \(T, H, D\)"):
        ring_attention(q[:, 0], k[:, 0], v[:, 0], mesh)
    with pytest.raises(TypeError, match=r"causal must be a bool"):
        ring_attention(q, k, v, mesh, causal=1)
