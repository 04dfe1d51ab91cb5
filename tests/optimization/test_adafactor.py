import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cookbook.optimization.adafactor import AdafactorState, adafactor, reconstruct
from cookbook.optimization.adam import adam
from optimization_helpers import (
    assert_update_rejects_bad_grads,
    assert_converges_on_quadratic,
    assert_jit_agrees,
    assert_same_trajectory,
    tree_and_grads,
)

# Tolerances reached against optax.adafactor over 100 steps, float32, with the settings under which
# the two are the same algorithm: no parameter scaling, no momentum, no weight decay, and
# min_dim_size_to_factor=3 so that the (5, 3) weight matrix of the test problem is factored.
RTOL, ATOL = 1e-5, 1e-5


def _optax_adafactor(lr, **kw):
    return optax.adafactor(lr, multiply_by_parameter_scale=False, momentum=None, weight_decay_rate=None, **kw)


def test_matches_optax_step_for_step():
    mine = lambda lr: adafactor(lr, min_dim_size_to_factor=3)
    ref = lambda lr: _optax_adafactor(lr, min_dim_size_to_factor=3)
    assert_same_trajectory(mine, ref, {"least_squares": 0.01, "rosenbrock": 0.005}, rtol=RTOL, atol=ATOL)


def test_matches_optax_unfactored_with_other_settings():
    mine = adafactor(0.02, decay_rate=0.5, clipping_threshold=0.5)
    ref = _optax_adafactor(0.02, decay_rate=0.5, clipping_threshold=0.5)  # default min size: nothing factored
    assert_same_trajectory(mine, ref, "least_squares", rtol=RTOL, atol=ATOL)


def test_factored_state_of_a_tall_and_a_wide_matrix_matches_optax():
    params = {"tall": np.ones((11, 7), np.float32), "wide": np.ones((5, 13), np.float32)}
    rng = np.random.default_rng(3)  # NumPy draws: no sampler to compile per shape
    grads = {"tall": rng.standard_normal((11, 7)).astype(np.float32), "wide": rng.standard_normal((5, 13)).astype(np.float32)}
    mine, ref = adafactor(0.1, min_dim_size_to_factor=5), _optax_adafactor(0.1, min_dim_size_to_factor=5)

    @jax.jit
    def three_steps(params, grads):
        s_mine, s_ref = mine.init(params), ref.init(params)
        for _ in range(3):
            u_mine, s_mine = mine.update(grads, s_mine, params)
            u_ref, s_ref = ref.update(grads, s_ref, params)
        return u_mine, s_mine, u_ref, s_ref

    u_mine, s_mine, u_ref, s_ref = three_steps(params, grads)
    for k in params:
        np.testing.assert_allclose(u_mine[k], u_ref[k], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(s_mine.v_row[k], s_ref[0].v_row[k], rtol=1e-5)
        np.testing.assert_allclose(s_mine.v_col[k], s_ref[0].v_col[k], rtol=1e-5)


def test_converges_on_a_convex_quadratic():
    assert_converges_on_quadratic(adafactor(0.01, min_dim_size_to_factor=1), steps=1500, atol=1e-2)


def _state_floats(opt, shape):
    state = jax.eval_shape(opt.init, {"W": jax.ShapeDtypeStruct(shape, jnp.float32)})
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state) if x.dtype == jnp.float32)


def test_memory_of_a_1000_by_1000_matrix():
    assert _state_floats(adam(1e-3), (1000, 1000)) == 2_000_000
    assert _state_floats(adafactor(1e-3), (1000, 1000)) == 2_000
    assert _state_floats(adafactor(1e-3), (1000,)) == 1_000  # vectors keep the full average


def test_reconstruction_is_exact_for_rank_one_and_keeps_row_and_column_means():
    rng = np.random.default_rng(0)
    a, b = rng.random(7, np.float32) + np.float32(0.1), rng.random(11, np.float32) + np.float32(0.1)
    V = np.outer(a, b)
    from_means = jax.jit(lambda V: reconstruct(V.mean(1), V.mean(0)))
    np.testing.assert_allclose(from_means(V), V, rtol=1e-5)
    W = rng.random((7, 11), np.float32) + np.float32(0.1)  # not rank 1: the means still survive
    W_hat = np.asarray(from_means(W))
    np.testing.assert_allclose(W_hat.mean(1), W.mean(1), rtol=1e-5)
    np.testing.assert_allclose(W_hat.mean(0), W.mean(0), rtol=1e-5)


def test_factored_step_equals_the_unfactored_one_for_a_rank_one_gradient():
    # G = a b^T makes G^2 rank 1, so the factored and the direct per-element second moments agree.
    rng = np.random.default_rng(1)
    G = np.outer(rng.standard_normal(7), rng.standard_normal(11)).astype(np.float32)
    factored, direct = adafactor(0.1, min_dim_size_to_factor=1), adafactor(0.1, min_dim_size_to_factor=10**9)
    first_steps = jax.jit(lambda G: (factored.update(G, factored.init(G))[0], direct.update(G, direct.init(G))[0]))
    u_f, u_d = first_steps(G)
    np.testing.assert_allclose(u_f, u_d, rtol=1e-4)
    np.testing.assert_allclose(u_d, -0.1 * np.sign(G), rtol=1e-5)  # the first step is a sign step
    u_f, u_d = map(np.asarray, first_steps(rng.standard_normal((7, 11)).astype(np.float32)))  # a general gradient: the two differ
    assert float(np.abs(u_f - u_d).max()) > 1e-3


def test_update_clipping_bounds_the_rms():
    opt = adafactor(1.0, clipping_threshold=0.5, min_dim_size_to_factor=1)
    G = np.full((5, 7), 1e-3, np.float32)
    G[0, 0] += 100.0
    u, _ = jax.jit(opt.update)(G, opt.init(G))
    u = np.asarray(u)
    assert float(np.sqrt(np.mean(u * u))) <= 0.5 + 1e-6


def test_init_and_update_agree_under_jit():
    params, grads = tree_and_grads()
    opt = adafactor(0.1, min_dim_size_to_factor=3)
    state = opt.init(params)
    assert isinstance(state, AdafactorState)
    assert state.v_row["w"].shape == (3,) and state.v_col["w"].shape == (5,) and state.v["b"].shape == (3,)
    assert_jit_agrees(opt, params, grads)


def test_bad_input_raises():
    with pytest.raises(ValueError, match=r"decay_rate must be in \[0.0, 1.0\], got 1.5"):
        adafactor(0.1, decay_rate=1.5)
    with pytest.raises(ValueError, match=r"v_row must have 1 axes \(n,\), got shape \(2, 2\)"):
        reconstruct(jnp.ones((2, 2)), jnp.ones(3))


def test_update_rejects_gradients_unlike_the_parameters():
    # Fails on the code before the boundary checks: mis-shaped gradients were broadcast or zipped
    # in silence, and integer gradients were accepted.
    for opt in [adafactor(0.1), adafactor(0.1, min_dim_size_to_factor=3)]:
        assert_update_rejects_bad_grads(opt, needs_params=False)


def test_eps1_is_a_normal_float32_and_bfloat16_number_but_zero_in_float16():
    # The page once said 1e-30 lies below float32's smallest normal number squared; it does not.
    eps1 = 1e-30
    assert np.finfo(np.float32).tiny < np.float32(eps1)  # about 1.2e-38 < 1e-30
    assert round(float(np.finfo(np.float32).tiny) / 1e-38, 1) == 1.2
    assert float(jnp.asarray(eps1, jnp.bfloat16)) > 0
    assert float(jnp.asarray(eps1, jnp.float16)) == 0.0
    assert round(float(jnp.finfo(jnp.float16).smallest_subnormal) / 1e-8) == 6
    # With it, an all-zero row of a factored matrix gives a zero step, not 0/0.
    opt = adafactor(0.1, min_dim_size_to_factor=1)
    G = np.ones((5, 7), np.float32)
    G[2] = 0.0
    u, _ = jax.jit(opt.update)(G, opt.init(G))
    u = np.asarray(u)
    assert bool(np.all(np.isfinite(u))) and bool(np.all(u[2] == 0.0))


def test_factoring_threshold_is_a_default_of_the_code_like_optax():
    # 128 is optax's min_dim_size_to_factor default (the page credits it to optax, not to the paper).
    import inspect

    assert inspect.signature(adafactor).parameters["min_dim_size_to_factor"].default == 128
    assert inspect.signature(optax.adafactor).parameters["min_dim_size_to_factor"].default == 128
    assert _state_floats(adafactor(1e-3), (127, 1000)) == 127 * 1000  # below the threshold: not factored
    assert _state_floats(adafactor(1e-3), (128, 1000)) == 128 + 1000


def test_adam_state_of_a_billion_parameters_is_eight_gigabytes_in_float32():
    assert _state_floats(adam(1e-3), (10**9,)) * 4 == 8 * 10**9


def test_first_decay_is_zero_so_the_first_step_needs_no_bias_correction():
    # beta_2 at t = 1 is 1 - 1^(-0.8) = 0: the average is the first squared gradient itself.
    opt = adafactor(0.1)
    g = np.float32([0.5, -3.0, 7.0])
    _, state = jax.jit(opt.update)(g, opt.init(g))
    np.testing.assert_allclose(state.v, g * g, rtol=1e-6)
