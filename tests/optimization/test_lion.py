import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cookbook.optimization.lion import LionState, lion
from cookbook.optimization.sgd import rosenbrock, run_optimizer
from optimization_helpers import (
    assert_update_rejects_bad_grads,
    assert_converges_on_quadratic,
    assert_jit_agrees,
    assert_same_trajectory,
    tree_and_grads,
)

# Tolerances reached against optax.lion over 100 steps, float32. Lion's steps are signs, so the two
# trajectories agree to rounding unless a component of c_t is within rounding of zero.
RTOL, ATOL = 1e-5, 1e-6


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_matches_optax_step_for_step(weight_decay):
    mine = lambda lr: lion(lr, weight_decay=weight_decay)
    ref = lambda lr: optax.lion(lr, weight_decay=weight_decay)
    assert_same_trajectory(mine, ref, {"least_squares": 0.003, "rosenbrock": 0.001}, rtol=RTOL, atol=ATOL)


def test_converges_on_a_convex_quadratic():
    # A constant-step sign method ends within about lr of the minimum.
    assert_converges_on_quadratic(lion(0.002), steps=1500, atol=1e-2)


def test_every_step_has_size_lr_in_every_coordinate():
    params, grads = tree_and_grads()
    opt = lion(0.01)
    state = opt.init(params)
    for _ in range(3):
        updates, state = opt.update(grads, state, params)
        for u in jax.tree.leaves(updates):
            np.testing.assert_allclose(np.abs(u), 0.01, rtol=1e-6)


def test_uses_half_the_state_of_adam():
    params, _ = tree_and_grads()
    n = sum(p.size for p in jax.tree.leaves(params))
    assert sum(s.size for s in jax.tree.leaves(lion(0.1).init(params))) == n
    assert sum(s.size for s in jax.tree.leaves(optax.adam(0.1).init(params))) >= 2 * n


def test_reaches_the_rosenbrock_valley():
    params = {"x": jnp.array(-1.5), "y": jnp.array(2.0)}
    path, losses = run_optimizer(rosenbrock, params, lion(0.01), steps=500)
    assert float(losses[-1]) < 0.05 * float(losses[0])


def test_init_and_update_agree_under_jit():
    params, grads = tree_and_grads()
    opt = lion(0.1, weight_decay=0.1)
    assert isinstance(opt.init(params), LionState)
    assert_jit_agrees(opt, params, grads)


def test_bad_input_raises():
    with pytest.raises(ValueError, match=r"b2 must be in \[0.0, 1.0\), got 1.2"):
        lion(0.1, b2=1.2)
    opt = lion(0.1, weight_decay=0.1)
    with pytest.raises(ValueError, match=r"needs params for weight_decay=0.1"):
        opt.update(jnp.ones(3), opt.init(jnp.ones(3)))


def test_update_rejects_gradients_unlike_the_parameters():
    # Fails on the code before the boundary checks: mis-shaped gradients were broadcast or zipped
    # in silence, and integer gradients were accepted.
    for opt in [lion(0.1), lion(0.1, weight_decay=0.1)]:
        assert_update_rejects_bad_grads(opt, needs_params=True)
