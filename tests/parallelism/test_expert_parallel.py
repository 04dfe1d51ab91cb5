import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.parallelism.data_parallel import collectives, memory_per_device
from cookbook.parallelism import expert_parallel
from cookbook.parallelism.expert_parallel import apply
from cookbook.transformers import mixture_of_experts as moe

TOL = dict(rtol=1e-5, atol=1e-5)  # float32, against the single-device layer
STATIC = ("mesh", "axis", "k", "capacity_factor")
T, D, F, M = 40, 6, 7, 16  # tokens, d_model, d_ff, experts: five tokens and two experts per device


def _params(seed, M=M):
    """Weights of moe.init's shapes drawn with NumPy (no eager JAX to compile)."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: (rng.standard_normal(shape) / np.sqrt(shape[-2])).astype(np.float32)
    return {"W_r": normal(D, M),
            "experts": [{"W": normal(M, D, F), "b": 0.1 * normal(M, 1, F)[:, 0]},
                        {"W": normal(M, F, D), "b": 0.1 * normal(M, 1, D)[:, 0]}]}


def _x(seed, T=T):
    return np.random.default_rng(seed).standard_normal((T, D)).astype(np.float32)


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((8,), ("expert",))


@functools.cache
def _program(mesh, k, capacity_factor):
    """The layer's program on eight devices, the one that the page's examples run (compiled once)."""
    C = moe.expert_capacity(T // 8, M, k, capacity_factor)
    return expert_parallel._apply.lower(_params(0), _x(0), mesh=mesh, axis="expert", k=k, C=C).compile()


def _dense(params, x):
    """Every expert on every token, combined with the top-2 gates: the single-device reference."""
    return jax.jit(moe.dense_reference, static_argnames="k")(params, x, k=2)


@functools.cache
def _per_group(groups, k, capacity_factor):
    """The single-device layer on each group of tokens, one compiled program."""
    one = lambda params, x: moe.apply(params, x, k=k, capacity_factor=capacity_factor)
    return jax.jit(lambda params, x: jax.vmap(one, in_axes=(None, 0))(params, x.reshape(groups, -1, D)))


def test_with_room_for_every_token_it_equals_dense_routing(mesh):
    params, x = _params(1), _x(1)
    y, dropped = _program(mesh, 2, None)(params, x)
    assert not np.asarray(dropped).any()
    np.testing.assert_allclose(y, _dense(params, x), **TOL)


def test_with_capacity_it_equals_the_single_device_layer_on_each_group_drops_included(mesh):
    params, x = _params(2), _x(2)
    y, dropped = _program(mesh, 2, 1.0)(params, x)  # one slot per expert and group
    y_ref, aux = _per_group(8, 2, 1.0)(params, x)
    np.testing.assert_allclose(y, y_ref.reshape(T, D), **TOL)
    np.testing.assert_array_equal(dropped, aux["dropped"].reshape(T, 2))
    # What dropping does: a token that lost both experts gets a zero output, and there are some.
    lost = np.asarray(dropped).all(axis=1)
    assert 0 < lost.sum() < T and np.asarray(dropped).sum() > lost.sum()
    np.testing.assert_array_equal(np.asarray(y)[lost], 0.0)
    assert np.all(np.abs(np.asarray(y)[~lost]).sum(axis=1) > 0)


def test_gradients_equal_those_of_dense_routing(mesh):
    params, x = _params(3), _x(3)
    w = np.random.default_rng(4).standard_normal((T, D)).astype(np.float32)

    def loss(layer):
        return lambda params, x: jnp.sum(layer(params, x) * w)

    parallel = loss(lambda p, x: apply(p, x, mesh, axis="expert", k=2, capacity_factor=None)[0])
    dense = loss(lambda p, x: moe.dense_reference(p, x, k=2))
    program = jax.jit(jax.grad(parallel, argnums=(0, 1))).lower(params, x).compile()
    got, want = program(params, x), jax.jit(jax.grad(dense, argnums=(0, 1)))(params, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # The backward program: the two exchanges transposed, and the router's gradient summed.
    assert collectives(program) == {"all-to-all": 4, "all-reduce": 1}


def test_two_all_to_alls_and_one_slice_of_the_experts_per_device(mesh):
    program = _program(mesh, 2, None)
    assert collectives(program) == {"all-to-all": 2}
    memory = memory_per_device(program)
    expert_bytes = 4 * M * (D * F + F + F * D + D)
    assert memory["arguments"] == 4 * D * M + expert_bytes // 8 + 4 * T * D // 8  # router replicated
    # y and dropped (bool) of one group, and the two 8-byte pointers of the tuple that holds them.
    assert memory["outputs"] == 4 * T * D // 8 + T * 2 // 8 + 2 * 8


def test_four_devices_of_a_two_by_four_mesh_and_four_experts_each():
    mesh = jax.make_mesh((2, 4), ("data", "expert"))
    params, x = _params(5), _x(5)
    y, dropped = apply(params, x, mesh, axis="expert", k=2, capacity_factor=None)
    assert not np.asarray(dropped).any()
    np.testing.assert_allclose(y, _dense(params, x), **TOL)


def test_bad_arguments_raise_clear_errors(mesh):
    params, x = _params(6), _x(6)
    with pytest.raises(ValueError, match=r"x must have a number of tokens T .* divisible by the 8 devices"):
        apply(params, x[:39], mesh)
    few = {"W_r": params["W_r"][:, :4], "experts": jax.tree.map(lambda a: a[:4], params["experts"])}
    with pytest.raises(ValueError, match=r"params\['W_r'\] must have a number of experts .* divisible by the 8"):
        apply(few, x, mesh)
    with pytest.raises(ValueError, match=r"axis must name axes of the mesh"):
        apply(params, x, mesh, axis="data")
    with pytest.raises(TypeError, match=r"axis must be the name of one mesh axis"):
        apply(params, x, mesh, axis=("expert",))
    with pytest.raises(TypeError, match=r"x must be a floating-point array"):
        apply(params, x.astype(np.int32), mesh)
    with pytest.raises(ValueError, match=r"x must have shape \(40, 6\)"):
        apply(params, x[:, :5], mesh)
    with pytest.raises(ValueError, match=r"k must be between 1 and the number of experts 16"):
        apply(params, x, mesh, k=17)
    with pytest.raises(TypeError, match=r"k must be an int"):
        apply(params, x, mesh, k=1.5)
    with pytest.raises(ValueError, match=r"capacity_factor must be positive"):
        apply(params, x, mesh, capacity_factor=-1.0)
    with pytest.raises(ValueError, match=r"params"):
        apply({"W_r": params["W_r"], "experts": params["experts"][:1]}, x, mesh)
