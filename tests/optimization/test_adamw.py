import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cookbook.optimization.adam import AdamState, adam
from cookbook.optimization.adamw import adamw
from cookbook.optimization.sgd import apply_updates
from optimization_helpers import (
    assert_update_rejects_bad_grads,
    assert_converges_on_quadratic,
    assert_jit_agrees,
    assert_same_trajectory,
    tree_and_grads,
)

# Tolerances reached against optax.adamw over 100 steps, float32.
RTOL, ATOL = 1e-5, 1e-5


def test_matches_optax_step_for_step():
    assert_same_trajectory(lambda lr: adamw(lr, weight_decay=0.1), lambda lr: optax.adamw(lr, weight_decay=0.1),
                           {"least_squares": 0.01, "rosenbrock": 0.01}, rtol=RTOL, atol=ATOL)


def test_default_weight_decay_matches_optax():
    assert_same_trajectory(adamw(0.02), optax.adamw(0.02), "least_squares", rtol=RTOL, atol=ATOL)


def test_converges_on_a_convex_quadratic():
    # A tiny decay moves the minimum by about lambda / curvature, within the tolerance.
    assert_converges_on_quadratic(adamw(0.05, weight_decay=1e-4), steps=600, atol=1e-2)


def _one_step(opt, params, grads):
    updates, _ = opt.update(grads, opt.init(params), params)
    return apply_updates(params, updates)


def test_decoupled_decay_is_uniform_but_l2_under_adam_is_not():
    lr, lam = 0.01, 0.1
    params = np.array([0.01, 1.0, 100.0], np.float32)  # NumPy in and out: no eager jnp programs
    # AdamW with zero loss gradient: every weight is multiplied by 1 - lr * lam.
    decayed = np.asarray(_one_step(adamw(lr, weight_decay=lam), params, np.zeros(3, np.float32)))
    np.testing.assert_allclose(decayed / params, np.full(3, 1 - lr * lam), rtol=1e-6)
    # Adam with the penalty in the loss: the gradient lam * theta is normalised away, and every weight
    # moves by lr, which is a 100% change for the small one and 0.01% for the large one.
    moved = params - np.asarray(_one_step(adam(lr), params, np.float32(lam) * params))
    np.testing.assert_allclose(moved, np.full(3, lr), rtol=1e-3)  # float32 rounding of 100 - 0.01


def test_l2_under_adam_decays_weights_with_large_gradients_less():
    # Two equal weights; the loss pushes weight 0 with large, sign-alternating gradients and leaves
    # weight 1 alone. Measure how far each is pulled towards zero, relative to no regularisation.
    lr, lam, steps = 1e-3, 0.1, 200
    noise = 10.0 * np.where(np.arange(steps) % 2 == 0, 1.0, -1.0)
    loss_grads = np.stack([noise, np.zeros(steps)], axis=1).astype(np.float32)  # (steps, 2)

    def run(opt, penalty):
        def step(carry, g):
            params, state = carry
            updates, state = opt.update(g + penalty * params, state, params)
            return (apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (jnp.ones(2), opt.init(jnp.ones(2))), loss_grads)
        return params

    # The three runs in one program, read in NumPy.
    free, l2, decoupled = map(np.asarray, jax.jit(lambda: (run(adam(lr), 0.0), run(adam(lr), lam), run(adamw(lr, weight_decay=lam), 0.0)))())
    l2_decay, adamw_decay = free - l2, free - decoupled
    assert float(l2_decay[0]) < 0.05 * float(l2_decay[1])  # the busy weight is hardly decayed
    np.testing.assert_allclose(adamw_decay[0], adamw_decay[1], rtol=0.05)  # AdamW decays both alike


def test_init_and_update_agree_under_jit():
    params, grads = tree_and_grads()
    opt = adamw(0.1, weight_decay=0.01)
    assert isinstance(opt.init(params), AdamState)
    assert_jit_agrees(opt, params, grads)


def test_missing_params_and_bad_hyperparameters_raise():
    opt = adamw(0.1)
    with pytest.raises(ValueError, match=r"needs params for the weight decay"):
        opt.update(np.ones(3, np.float32), opt.init(np.ones(3, np.float32)))
    with pytest.raises(ValueError, match=r"weight_decay must be in \[0.0, inf\), got -0.1"):
        adamw(0.1, weight_decay=-0.1)


def test_update_rejects_gradients_unlike_the_parameters():
    # Fails on the code before the boundary checks: mis-shaped gradients were broadcast or zipped
    # in silence, and integer gradients were accepted.
    for opt in [adamw(0.1, weight_decay=0.1)]:
        assert_update_rejects_bad_grads(opt, needs_params=True)
