import jax
import numpy as np
import optax
import pytest

from cookbook.optimization.adam import adam
from cookbook.optimization.gradient_clipping import chain, clip, clip_by_global_norm, clip_to_global_norm, global_norm
from cookbook.optimization.sgd import sgd
from optimization_helpers import (
    assert_converges_on_quadratic,
    assert_jit_agrees,
    assert_same_trajectory,
    tree_and_grads,
)

# Tolerances reached against optax (optax.clip, optax.clip_by_global_norm, optax.chain), float32.
RTOL, ATOL = 1e-5, 1e-6
# The clipped norm may exceed the bound by float32 rounding of the rescaling, at most this fraction.
BOUND_SLACK = 1e-6


def _random_tree(seed, scale):
    """Gaussian gradients times ``scale``, drawn by NumPy as float32 (jax.random compiled a sampler
    for each shape, and an eager multiply)."""
    rng = np.random.default_rng(seed)
    return {name: (scale * rng.standard_normal(shape)).astype(np.float32)
            for name, shape in (("w", (5, 3)), ("b", (3,)), ("c", (7, 11)))}


def test_match_optax_on_random_gradients():
    pairs = [(clip(0.7), optax.clip(0.7)), (clip_by_global_norm(2.0), optax.clip_by_global_norm(2.0)),
             (clip_by_global_norm(1e3), optax.clip_by_global_norm(1e3))]
    both = jax.jit(lambda g: [(mine.update(g, ())[0], ref.update(g, ref.init(g))[0]) for mine, ref in pairs]
                   + [(global_norm(g), optax.tree.norm(g))])
    for seed in range(4):
        g = _random_tree(seed, 3.0)
        for ours, theirs in both(g):
            for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
                np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


_CLIP_15 = jax.jit(clip_by_global_norm(1.5).update)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3, 1e20, 1e35])
def test_clipped_global_norm_never_exceeds_the_bound(scale):
    for seed in range(5):
        g = _random_tree(10 + seed, scale)
        clipped, _ = _CLIP_15(g, ())
        norm = float(global_norm(clipped))
        assert np.isfinite(norm) and norm <= 1.5 * (1 + BOUND_SLACK)
        if float(global_norm(g)) > 1.5:  # the direction is kept: clipped is a positive multiple of g
            ratio = np.asarray(clipped["c"]) / g["c"]
            np.testing.assert_allclose(ratio, ratio[0, 0], rtol=1e-5)
            assert norm == pytest.approx(1.5, rel=1e-5)


def test_clip_by_value_bounds_every_entry_and_changes_direction():
    g = {"w": np.array([0.1, -50.0, 2.0], np.float32)}
    clipped, _ = clip(1.0).update(g, ())
    np.testing.assert_allclose(clipped["w"], [0.1, -1.0, 1.0])


def test_chain_with_adam_matches_optax_step_for_step():
    mine = lambda lr: chain(clip_by_global_norm(1.0), adam(lr))
    ref = lambda lr: optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))
    assert_same_trajectory(mine, ref, {"least_squares": 0.05, "rosenbrock": 0.01}, rtol=RTOL, atol=1e-5)


def test_chain_with_value_clipping_and_momentum_matches_optax():
    mine = chain(clip(0.5), sgd(0.01, momentum=0.9))
    ref = optax.chain(optax.clip(0.5), optax.sgd(0.01, momentum=0.9))
    assert_same_trajectory(mine, ref, "rosenbrock", rtol=RTOL, atol=ATOL)


def test_clipped_momentum_converges_on_a_convex_quadratic():
    # The first gradients (norm ~ 9) are clipped to norm 1; near the minimum clipping is inactive.
    assert_converges_on_quadratic(chain(clip_by_global_norm(1.0), sgd(0.1, momentum=0.5)), steps=300, atol=1e-3)


def test_chain_state_and_jit():
    params, grads = tree_and_grads()
    opt = chain(clip(0.3), clip_by_global_norm(0.5), adam(0.1))
    state = opt.init(params)
    assert isinstance(state, tuple) and len(state) == 3 and state[0] == () and state[1] == ()
    assert_jit_agrees(opt, params, grads)
    np.testing.assert_allclose(jax.jit(global_norm)(grads), global_norm(grads), rtol=1e-6)


def test_bad_input_raises():
    with pytest.raises(ValueError, match=r"max_norm must be positive, got 0"):
        clip_by_global_norm(0.0)
    with pytest.raises(ValueError, match=r"max_delta must be in \[0.0, inf\), got -1"):
        clip(-1)
    with pytest.raises(ValueError, match=r"chain needs one or more GradientTransformations"):
        chain(lambda g: g)
    with pytest.raises(ValueError, match=r"at least one array"):
        global_norm({})
    with pytest.raises(ValueError, match=r"state must hold 2 states"):
        chain(clip(1.0), clip(2.0)).update(np.ones(3, np.float32), ((),))


def test_clipping_rejects_gradients_unlike_the_parameters():
    params, grads = tree_and_grads()
    grads = jax.tree.map(np.asarray, grads)  # sliced and cast in NumPy
    for clipper in (clip(1.0), clip_by_global_norm(1.0)):
        with pytest.raises(ValueError, match=r"updates\['w'\] must have the shape of params\['w'\], \(5, 3\), got \(5, 1\)"):
            clipper.update({**grads, "w": grads["w"][:, :1]}, (), params)
        with pytest.raises(TypeError, match=r"updates\['w'\] must be a floating-point array"):
            clipper.update({**grads, "w": grads["w"].astype(np.int32)}, ())
    with pytest.raises(TypeError, match=r"updates\['b'\] must be a floating-point array"):
        clip_to_global_norm({"b": np.arange(3, dtype=np.int32)}, 1.0)
    # A chain passes the gradients to its first transformation, which checks them.
    opt = chain(clip_by_global_norm(1.0), adam(0.1))
    with pytest.raises(ValueError, match=r"updates\['w'\] must have the shape of params"):
        opt.update({**grads, "w": grads["w"][:, :1]}, opt.init(params), params)


def test_squares_overflow_float32_above_about_1_8e19():
    with np.errstate(over="ignore"):
        assert np.isfinite(np.float32(1.8e19) ** 2) and np.isinf(np.float32(1.9e19) ** 2)
    # global_norm rescales first, so a gradient of such entries has a finite, correct norm.
    np.testing.assert_allclose(float(global_norm({"w": np.full(4, 1e30, np.float32)})), 2e30, rtol=1e-6)


def test_a_traced_bound_runs_and_agrees_with_a_number():
    # A number picks the compiled core built for it; a bound traced by an outer jax.jit goes to a
    # core that takes it as an argument, and rescales the same way.
    grads = {"w": np.float32([[3.0, -4.0], [12.0, 0.0]]), "b": np.float32([5.0, 0.0])}  # global norm 14
    for max_norm in (2.0, 20.0):
        traced = jax.jit(clip_to_global_norm)(grads, max_norm)
        number = clip_to_global_norm(grads, max_norm)
        for name in grads:
            np.testing.assert_allclose(traced[name], number[name], rtol=1e-6)
    np.testing.assert_allclose(float(global_norm(jax.jit(clip_to_global_norm)(grads, 2.0))), 2.0, rtol=1e-6)
