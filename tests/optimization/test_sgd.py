import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cookbook.optimization.sgd import GradientTransformation, SgdState, apply_updates, rosenbrock, run_optimizer, sgd
from optimization_helpers import (
    assert_update_rejects_bad_grads,
    assert_converges_on_quadratic,
    assert_jit_agrees,
    assert_same_trajectory,
    tree_and_grads,
)

# Tolerances reached against optax over 100 steps (parameters after every step), float32.
RTOL, ATOL = 1e-5, 1e-6


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_matches_optax_step_for_step(momentum, nesterov):
    assert_same_trajectory(
        lambda lr: sgd(lr, momentum=momentum, nesterov=nesterov),
        lambda lr: optax.sgd(lr, momentum=momentum, nesterov=nesterov),
        {"least_squares": 0.05, "rosenbrock": 1e-3},
        rtol=RTOL,
        atol=ATOL,
    )


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.5, False), (0.5, True)])
def test_converges_on_a_convex_quadratic(momentum, nesterov):
    assert_converges_on_quadratic(sgd(0.1, momentum=momentum, nesterov=nesterov), steps=300, atol=1e-3)


def test_one_step_by_hand():
    opt = sgd(0.5, momentum=0.9)
    state = opt.init({"w": jnp.array([1.0, 2.0])})
    g = {"w": jnp.array([2.0, -4.0])}
    u1, state = opt.update(g, state)
    np.testing.assert_allclose(u1["w"], [-1.0, 2.0])  # v = g
    u2, state = opt.update(g, state)
    np.testing.assert_allclose(u2["w"], [-1.9, 3.8], rtol=1e-6)  # v = g + 0.9 g
    np.testing.assert_allclose(state.velocity["w"], [3.8, -7.6], rtol=1e-6)


def test_velocity_of_a_constant_gradient_approaches_one_over_one_minus_mu():
    # The heavy ball on a constant slope reaches terminal speed g / (1 - mu).
    opt = sgd(1.0, momentum=0.9)
    state = opt.init(jnp.zeros(()))
    for _ in range(200):
        _, state = opt.update(jnp.array(1.0), state)
    np.testing.assert_allclose(state.velocity, 10.0, rtol=1e-4)


def test_momentum_beats_plain_sgd_on_rosenbrock():
    params = {"x": np.float32(-1.5), "y": np.float32(2.0)}

    @jax.jit  # both runs and their final losses in one program
    def final_losses(params):
        plain, _ = run_optimizer(rosenbrock, params, sgd(1e-3), steps=500)
        heavy, _ = run_optimizer(rosenbrock, params, sgd(1e-3, momentum=0.9), steps=500)
        last = lambda t: jax.tree.map(lambda p: p[-1], t)
        return rosenbrock(last(plain)), rosenbrock(last(heavy))

    plain, heavy = final_losses(params)
    assert float(heavy) < 0.1 * float(plain)


def test_init_and_update_agree_under_jit():
    params, grads = tree_and_grads()
    for opt in (sgd(0.1), sgd(0.1, momentum=0.9, nesterov=True)):
        assert isinstance(opt, GradientTransformation)
        assert isinstance(opt.init(params), SgdState)
        assert_jit_agrees(opt, params, grads)


def test_apply_updates_matches_optax_and_keeps_dtype():
    put = jax.device_put  # NumPy arrays put on the device, where jnp.ones, arange and full compile
    params = {"w": put(np.ones((3, 5), jnp.bfloat16)), "b": put(np.arange(7.0, dtype=np.float32))}
    updates = {"w": put(np.full((3, 5), 0.5, np.float32)), "b": put(-np.ones(7, np.float32))}
    ours, theirs = apply_updates(params, updates), optax.apply_updates(params, updates)
    assert ours["w"].dtype == jnp.bfloat16
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_rosenbrock_minimum_and_gradient():
    at_min = {"x": np.ones(3, np.float32), "y": np.ones(3, np.float32)}
    assert float(rosenbrock(at_min)) == 0.0
    g = jax.jit(jax.grad(rosenbrock))({"x": np.float32(-1.5), "y": np.float32(2.0)})  # one program
    # d/dx = -2(1 - x) - 400 x (y - x^2); d/dy = 200 (y - x^2)
    np.testing.assert_allclose(g["x"], -2 * 2.5 - 400 * -1.5 * (2.0 - 2.25), rtol=1e-6)
    np.testing.assert_allclose(g["y"], 200 * (2.0 - 2.25), rtol=1e-6)


def test_bad_hyperparameters_and_trees_raise():
    with pytest.raises(ValueError, match=r"momentum must be in \[0.0, 1.0\), got 1.5"):
        sgd(0.1, momentum=1.5)
    with pytest.raises(ValueError, match=r"learning_rate must be in"):
        sgd(-0.1)
    with pytest.raises(ValueError, match=r"updates must have the structure of params"):
        apply_updates({"w": jnp.ones(3)}, {"v": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"must have one shape, got \(3,\) and \(2,\)"):
        rosenbrock({"x": jnp.ones(3), "y": jnp.ones(2)})


def test_update_rejects_gradients_unlike_the_parameters():
    # Fails on the code before the boundary checks: mis-shaped gradients were broadcast or zipped
    # in silence, and integer gradients were accepted.
    for opt in [sgd(0.1), sgd(0.1, momentum=0.9, nesterov=True)]:
        assert_update_rejects_bad_grads(opt, needs_params=False)
