import numpy as np
import optax
import pytest

from cookbook.optimization.rmsprop import RmspropState, rmsprop
from optimization_helpers import (
    assert_update_rejects_bad_grads,
    assert_converges_on_quadratic,
    assert_jit_agrees,
    assert_same_trajectory,
    tree_and_grads,
)

# Tolerances reached against optax.rmsprop over 100 steps (parameters after every step), float32.
# With decay 0.9 and lr 0.01 on least squares, a coordinate whose gradient hovers near zero changes
# sign step after step; its step g / sqrt(nu) then amplifies one-ulp differences in the order of
# float operations (~4e-3 after 100 steps), so that case runs at lr 0.005, where the largest gap is 2e-6.
RTOL, ATOL = 1e-5, 1e-5


@pytest.mark.parametrize("decay", [0.9, 0.99])
def test_matches_optax_step_for_step(decay):
    assert_same_trajectory(lambda lr: rmsprop(lr, decay=decay), lambda lr: optax.rmsprop(lr, decay=decay),
                           {"least_squares": 0.005, "rosenbrock": 0.01}, rtol=RTOL, atol=ATOL)


def test_converges_on_a_convex_quadratic():
    # A constant learning rate leaves RMSProp hovering within about lr of the minimum.
    assert_converges_on_quadratic(rmsprop(0.003), steps=1500, atol=1e-2)


def test_first_step_is_lr_over_root_one_minus_decay_and_scale_free():
    opt = rmsprop(0.1, decay=0.75, eps=0.0)
    for scale in (1e-3, 1.0, 1e3):
        u, _ = opt.update(np.full(3, scale, np.float32), opt.init(np.zeros(3, np.float32)))
        np.testing.assert_allclose(u, np.full(3, -0.1 / np.sqrt(0.25)), rtol=1e-5)


def test_average_forgets_old_gradients():
    opt = rmsprop(0.1, decay=0.5)
    state = opt.init(np.float32(0.0))
    _, state = opt.update(np.float32(100.0), state)
    for _ in range(40):
        _, state = opt.update(np.float32(1.0), state)
    np.testing.assert_allclose(state.nu, 1.0, rtol=1e-5)


def test_init_and_update_agree_under_jit():
    params, grads = tree_and_grads()
    opt = rmsprop(0.1)
    assert isinstance(opt.init(params), RmspropState)
    assert_jit_agrees(opt, params, grads)


def test_bad_hyperparameters_raise():
    with pytest.raises(ValueError, match=r"decay must be in \[0.0, 1.0\), got 1.0"):
        rmsprop(0.1, decay=1.0)


def test_update_rejects_gradients_unlike_the_parameters():
    # Fails on the code before the boundary checks: mis-shaped gradients were broadcast or zipped
    # in silence, and integer gradients were accepted.
    for opt in [rmsprop(0.1)]:
        assert_update_rejects_bad_grads(opt, needs_params=False)
