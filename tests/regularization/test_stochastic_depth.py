import jax
import numpy as np
import pytest

from cookbook.regularization.stochastic_depth import (
    drop_path,
    residual_stack,
    stochastic_depth,
    survival_probabilities,
)

RNG = np.random.default_rng(0)
Z = 5.0  # tolerance in standard errors


@pytest.mark.parametrize("p", [0.3, 0.8])
def test_expectation_is_preserved_and_whole_examples_are_dropped(p):
    n = 100_000
    branch = np.tile(np.arange(1.0, 4.0, dtype=np.float32), (n, 1))  # (B, D): every example the same
    out = np.asarray(drop_path(jax.random.key(0), branch, p))
    kept = np.all(out != 0, axis=1)
    assert np.all(kept | np.all(out == 0, axis=1))  # an example is kept or dropped as a whole
    np.testing.assert_allclose(out[kept], np.broadcast_to(np.arange(1.0, 4.0) / p, (kept.sum(), 3)), rtol=1e-6)
    # b / p has mean 1 and variance (1 - p) / p.
    assert abs(out[:, 0].mean() - 1.0) < Z * np.sqrt((1 - p) / p / n)
    assert abs(kept.mean() - p) < Z * np.sqrt(p * (1 - p) / n)


def test_expectation_of_a_block_output_for_random_input():
    # The output minus x is b / p * f: its sum over the batch has mean sum(f) and variance sum(f^2) (1 - p) / p.
    n, p = 100_000, 0.6
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, 3)).astype(np.float32)
    branch = rng.standard_normal((n, 3)).astype(np.float32)
    delta = np.asarray(stochastic_depth(jax.random.key(1), x, branch, p), np.float64) - x
    f = np.asarray(branch, np.float64)
    assert np.all(np.abs(delta.sum(0) - f.sum(0)) < Z * np.sqrt((f**2).sum(0) * (1 - p) / p))


def test_deterministic_is_the_full_residual_and_survival_one_keeps_everything():
    x = RNG.standard_normal((3, 7)).astype(np.float32)
    branch = RNG.standard_normal((3, 7)).astype(np.float32)
    np.testing.assert_array_equal(stochastic_depth(None, x, branch, 0.2, deterministic=True), x + branch)
    np.testing.assert_array_equal(stochastic_depth(jax.random.key(3), x, branch, 1.0), x + branch)


def test_gradient_with_respect_to_the_branch_is_the_mask_over_p():
    branch = RNG.standard_normal((11, 3)).astype(np.float32)
    key = jax.random.key(4)
    g = jax.jit(jax.grad(lambda f: drop_path(key, f, 0.5).sum()))(branch)  # one program, not one per operation
    keep = np.asarray(jax.random.bernoulli(key, 0.5, (11, 1)))
    np.testing.assert_allclose(g, np.broadcast_to(keep / 0.5, (11, 3)))


def test_decay_rule_values():
    np.testing.assert_allclose(survival_probabilities(5, 0.5), [0.9, 0.8, 0.7, 0.6, 0.5], rtol=1e-6)
    np.testing.assert_allclose(survival_probabilities(5, 1.0), np.ones(5))
    # The paper's 110-layer ResNet: 54 blocks, p_L = 0.5, expected depth (3L - 1) / 4 = 40.25 blocks.
    p = np.asarray(survival_probabilities(54, 0.5))
    assert p.sum() == pytest.approx(40.25, rel=1e-5)
    assert np.all(np.diff(p) < 0) and p[-1] == pytest.approx(0.5) and p[0] == pytest.approx(1 - 0.5 / 54)


def test_residual_stack_matches_a_python_loop_with_the_same_keys():
    L, B, D = 5, 3, 7
    W = (0.3 * RNG.standard_normal((L, D, D))).astype(np.float32)
    x = RNG.standard_normal((B, D)).astype(np.float32)
    p = survival_probabilities(L, 0.5)
    key = jax.random.key(5)
    # The loop calls stochastic_depth with each block's key; the branch tanh(h W_l) is computed in NumPy
    # (float32), so the loop compiles one program, not one per operation and block.
    h = x
    for l, k in enumerate(jax.random.split(key, L)):
        h = np.asarray(stochastic_depth(k, h, np.tanh(h @ W[l]), np.asarray(p)[l]))
    np.testing.assert_allclose(residual_stack(key, W, x, p), h, rtol=1e-5, atol=1e-6)
    full = x
    for l in range(L):
        full = full + np.tanh(full @ W[l])
    np.testing.assert_allclose(residual_stack(None, W, x, p, deterministic=True), full, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(residual_stack(key, W, x, np.ones(L, np.float32)), full, rtol=1e-5, atol=1e-6)


def test_jit_agrees_and_float16_is_kept():
    x = RNG.standard_normal((3, 7)).astype(np.float32)
    key = jax.random.key(6)
    jitted = jax.jit(stochastic_depth, static_argnames="deterministic")
    np.testing.assert_allclose(jitted(key, x, x, 0.7), stochastic_depth(key, x, x, 0.7), rtol=1e-6)
    out16 = drop_path(key, x.astype(np.float16), 0.5)
    assert out16.dtype == np.float16


@pytest.mark.parametrize("p", [0.0, -0.5, 1.5])
def test_bad_survival_probability_raises(p):
    with pytest.raises(ValueError, match=r"survival_prob must lie in \(0, 1\], got"):
        drop_path(jax.random.key(0), np.ones((3, 2), np.float32), p)
    with pytest.raises(ValueError, match=r"final_survival must lie in \(0, 1\]"):
        survival_probabilities(5, p)


def test_bad_shapes_raise():
    W = np.ones((5, 7, 7), np.float32)
    with pytest.raises(ValueError, match=r"same shape \(B, \.\.\., D\), got \(3, 5\) and \(3, 7\)"):
        stochastic_depth(jax.random.key(0), np.ones((3, 5), np.float32), np.ones((3, 7), np.float32), 0.5)
    with pytest.raises(ValueError, match=r"x must have shape \(3, 7\) \(\(B, D\) with D = 7 from W\)"):
        residual_stack(jax.random.key(0), W, np.ones((3, 5), np.float32), np.ones(5, np.float32))
    with pytest.raises(ValueError, match=r"survival_probs must have shape \(5,\) \(\(L,\), L from W\)"):
        residual_stack(jax.random.key(0), W, np.ones((3, 7), np.float32), np.ones(4, np.float32))
    with pytest.raises(ValueError, match="num_blocks must be at least 1"):
        survival_probabilities(0, 0.5)


def test_bad_input_gets_a_clear_error():
    W, x = np.zeros((5, 7, 7), np.float32), np.ones((3, 7), np.float32)
    with pytest.raises(ValueError, match=r"survival_probs must lie in \(0, 1\]"):  # a NaN was accepted before
        residual_stack(jax.random.key(0), W, x, np.array([1.0, np.nan, 1.0, 1.0, 1.0], np.float32))
    with pytest.raises(ValueError, match=r"W must have shape \(5, 7, 7\)"):
        residual_stack(jax.random.key(0), W[..., :1], x, np.ones(5, np.float32))
    with pytest.raises(TypeError, match=r"branch must be a floating-point array"):
        stochastic_depth(jax.random.key(0), x, np.ones((3, 7), np.int32), 0.5)
    with pytest.raises(TypeError, match=r"num_blocks must be an int"):
        survival_probabilities(5.0, 0.5)


def test_expected_depth_of_the_linear_rule_is_three_l_minus_one_over_four():
    # The page: (3L - 1)/4 blocks survive on average when p_L = 1/2; 40.25 of the paper's 54 blocks.
    for L in (5, 54):
        np.testing.assert_allclose(float(survival_probabilities(L, 0.5).sum()), (3 * L - 1) / 4, rtol=1e-6)
    assert (3 * 54 - 1) / 4 == 40.25
