import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cookbook.optimization.adam import AdamState, adam
from optimization_helpers import (
    assert_update_rejects_bad_grads,
    assert_converges_on_quadratic,
    assert_jit_agrees,
    assert_same_trajectory,
    tree_and_grads,
)

# Tolerances reached against optax.adam / optax.amsgrad over 100 steps, float32.
RTOL, ATOL = 1e-5, 1e-5


PROBLEMS = {"least_squares": 0.01, "rosenbrock": 0.01}


def test_adam_matches_optax_step_for_step():
    assert_same_trajectory(adam, optax.adam, PROBLEMS, rtol=RTOL, atol=ATOL)


def test_amsgrad_matches_optax_step_for_step():
    mine = lambda lr: adam(lr, b1=0.8, b2=0.99, amsgrad=True)
    assert_same_trajectory(mine, lambda lr: optax.amsgrad(lr, b1=0.8, b2=0.99), PROBLEMS, rtol=RTOL, atol=ATOL)


def test_converges_on_a_convex_quadratic():
    assert_converges_on_quadratic(adam(0.05), steps=600, atol=1e-2)


def test_bias_corrected_moments_are_unbiased_for_a_constant_gradient():
    # With g constant, m_hat = g and v_hat = g^2 exactly at every step: the bias is gone.
    opt = adam(0.1, b1=0.9, b2=0.999, eps=0.0)
    state = opt.init(np.zeros(3, np.float32))
    g = np.array([0.5, -3.0, 7.0], np.float32)
    for t in range(1, 6):
        u, state = opt.update(g, state)  # one compiled program; the checks in NumPy
        np.testing.assert_allclose(np.asarray(state.mu) / (1 - 0.9**t), g, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(state.nu) / (1 - 0.999**t), g * g, rtol=1e-4)
        np.testing.assert_allclose(np.asarray(u), -0.1 * np.sign(g), rtol=1e-4)


def test_expected_first_moment_is_one_minus_b1_to_the_t_times_mean_gradient():
    # E[m_t] = (1 - b1^t) E[g], checked by averaging m_t over many random gradient sequences.
    b1, t, mean = 0.9, 5, 0.3
    g = (mean + np.random.default_rng(0).standard_normal((t, 20000))).astype(np.float32)
    opt = adam(1.0, b1=b1)
    state = opt.init(np.zeros(20000, np.float32))
    for i in range(t):
        _, state = opt.update(g[i], state)
    np.testing.assert_allclose(float(np.asarray(state.mu).mean()), (1 - b1**t) * mean, atol=0.01)


def test_amsgrad_never_increases_the_denominator():
    opt = adam(0.1, amsgrad=True)
    state = opt.init(np.zeros(2, np.float32))
    previous = np.zeros(2, np.float32)
    for g in ([10.0, 1.0], [0.1, 0.1], [0.1, 0.1], [1.0, 5.0]):
        _, state = opt.update(np.array(g, np.float32), state)
        assert np.all(np.asarray(state.nu_max) >= np.asarray(previous))
        previous = state.nu_max


def test_init_and_update_agree_under_jit():
    params, grads = tree_and_grads()
    for opt in (adam(0.1), adam(0.1, amsgrad=True)):
        assert isinstance(opt.init(params), AdamState)
        assert_jit_agrees(opt, params, grads)


def test_bad_hyperparameters_raise():
    with pytest.raises(ValueError, match=r"b2 must be in \[0.0, 1.0\), got 1.0"):
        adam(0.1, b2=1.0)
    with pytest.raises(ValueError, match=r"eps must be in"):
        adam(0.1, eps=-1e-8)


def test_update_rejects_gradients_unlike_the_parameters():
    # Fails on the code before the boundary checks: mis-shaped gradients were broadcast or zipped
    # in silence, and integer gradients were accepted.
    for opt in [adam(0.1), adam(0.1, amsgrad=True)]:
        assert_update_rejects_bad_grads(opt, needs_params=False)


def test_bias_correction_of_v_is_about_t_over_1000_early_on():
    # 1 - 0.999^t is within 5% of t / 1000 for the first hundred steps.
    t = np.arange(1, 101)
    np.testing.assert_allclose((1 - 0.999**t) / (t / 1000), 1.0, atol=0.05)


def test_default_eps_rounds_to_zero_in_float16_not_in_bfloat16():
    # The page says 1e-8 vanishes in float16 (smallest positive number about 6e-8); bfloat16 keeps it.
    assert float(jnp.asarray(1e-8, jnp.float16)) == 0.0
    assert float(jnp.asarray(1e-8, jnp.bfloat16)) > 0.0
