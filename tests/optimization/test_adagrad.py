import jax
import numpy as np
import optax
import pytest

from cookbook.optimization.adagrad import AdagradState, adagrad
from optimization_helpers import (
    assert_update_rejects_bad_grads,
    assert_converges_on_quadratic,
    assert_jit_agrees,
    assert_same_trajectory,
    tree_and_grads,
)

# Tolerances reached against optax.adagrad over 100 steps (parameters after every step), float32.
RTOL, ATOL = 1e-5, 1e-6


def test_matches_optax_step_for_step():
    problems = {"least_squares": 0.1, "rosenbrock": 0.05}
    assert_same_trajectory(adagrad, optax.adagrad, problems, rtol=RTOL, atol=ATOL)


def test_matches_optax_with_other_settings():
    mine = adagrad(0.2, initial_accumulator_value=1.0, eps=1e-3)
    ref = optax.adagrad(0.2, initial_accumulator_value=1.0, eps=1e-3)
    assert_same_trajectory(mine, ref, "least_squares", rtol=RTOL, atol=ATOL)


def test_converges_on_a_convex_quadratic():
    assert_converges_on_quadratic(adagrad(0.5), steps=300, atol=1e-3)


def test_step_is_invariant_to_gradient_scale_and_shrinks_like_one_over_root_t():
    opt = adagrad(0.1, initial_accumulator_value=0.0, eps=0.0)
    state = opt.init(np.zeros(3, np.float32))
    g = np.array([1e-3, 1.0, 1e3], np.float32)
    for t in range(1, 6):
        u, state = opt.update(g, state)
        np.testing.assert_allclose(u, np.full(3, -0.1 / np.sqrt(t)), rtol=1e-5)


def test_zero_gradient_gives_zero_update():
    opt = adagrad(0.1, initial_accumulator_value=0.0)
    zeros = np.zeros(3, np.float32)  # the shape of the test above, so the same programs
    u, state = opt.update(zeros, opt.init(zeros))
    assert np.all(np.asarray(u) == 0.0) and np.all(np.isfinite(np.asarray(state.sum_of_squares)))


def test_init_and_update_agree_under_jit():
    params, grads = tree_and_grads()
    opt = adagrad(0.1)
    assert isinstance(opt.init(params), AdagradState)
    assert_jit_agrees(opt, params, grads)


def test_bad_hyperparameters_raise():
    with pytest.raises(ValueError, match=r"initial_accumulator_value must be in \[0.0, inf\), got -1"):
        adagrad(0.1, initial_accumulator_value=-1)
    with pytest.raises(ValueError, match=r"learning_rate must be in"):
        adagrad(-1.0)


def test_update_rejects_gradients_unlike_the_parameters():
    # Fails on the code before the boundary checks: mis-shaped gradients were broadcast or zipped
    # in silence, and integer gradients were accepted.
    for opt in [adagrad(0.1)]:
        assert_update_rejects_bad_grads(opt, needs_params=False)
