import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cookbook.efficiency.mixed_precision import (LossScale, adjust_loss_scale, all_finite, apply_if_finite,
                                                 cast_floats, init_loss_scale, scaled_grad)
from cookbook.foundations.training_loop import load_digits_split

# The state machine is checked against a trace computed by hand from its rules, and against jmp,
# DeepMind's mixed-precision library, on a long random run.


def test_loss_scale_state_machine_against_a_hand_trace():
    adjust = jax.jit(adjust_loss_scale, static_argnames=("period", "factor", "min_scale"))
    state = init_loss_scale(8.0)
    flags = [True, True, True, False, False, False, False, True, True, True, True]
    # period 3, factor 2, floor 2: grow on the 3rd finite step in a row, halve (not below 2) on overflow.
    expected = [(8, 1), (8, 2), (16, 0), (8, 0), (4, 0), (2, 0), (2, 0), (2, 1), (2, 2), (4, 0), (4, 1)]
    trace = []
    for finite in flags:
        state = adjust(state, np.bool_(finite), period=3, factor=2.0, min_scale=2.0)
        trace.append((float(state.scale), int(state.count)))
    assert trace == expected
    assert state.scale.dtype == jnp.float32 and state.count.dtype == jnp.int32


def test_loss_scale_follows_jmp_dynamic_loss_scale():
    import jmp

    flags = np.random.default_rng(0).random(300) > 0.05  # about one overflow in twenty steps
    ours, theirs = init_loss_scale(2.0 ** 10), jmp.DynamicLossScale(jnp.float32(2.0 ** 10), period=7, factor=2,
                                                                    min_loss_scale=jnp.float32(4.0))

    @jax.jit
    def run(ours, theirs):
        def step(carry, finite):
            ours, theirs = carry
            ours = adjust_loss_scale(ours, finite, period=7, factor=2.0, min_scale=4.0)
            theirs = theirs.adjust(finite)
            return (ours, theirs), (ours.scale, ours.count, theirs.loss_scale, theirs.counter)

        return jax.lax.scan(step, (ours, theirs), jnp.asarray(flags))[1]

    scale, count, jmp_scale, jmp_count = map(np.asarray, run(ours, theirs))
    np.testing.assert_array_equal(scale, jmp_scale)
    np.testing.assert_array_equal(count, jmp_count)
    assert scale.min() < 2.0 ** 10 < scale.max()  # the run both shrank and grew the scale


def test_float16_and_bfloat16_facts_the_page_states():
    f16 = np.finfo(np.float16)
    assert float(f16.max) == 65504 and float(f16.tiny) == 2.0 ** -14 and float(f16.eps) == 2.0 ** -10
    assert float(np.float16(2.0 ** -24)) > 0 and abs(2.0 ** -24 - 6e-8) < 1e-9 and float(np.float16(2.0 ** -26)) == 0
    assert float(np.float16(1e-30)) == 0 and float(jnp.asarray(1e-30, jnp.bfloat16)) != 0
    assert jnp.finfo(jnp.bfloat16).nmant == 7 and jnp.finfo(jnp.bfloat16).nexp == 8
    # 1 + 1e-4 is 1 in float16: a thousand such updates leave a float16 weight at 1; float32 keeps them.
    w16, w32 = np.float16(1.0), np.float32(1.0)
    for _ in range(1000):
        w16, w32 = w16 + np.float16(1e-4), w32 + np.float32(1e-4)
    assert float(w16) == 1.0 and abs(float(w32) - 1.1) < 1e-4


def _mlp_loss(X, y):
    def loss_fn(params):
        h = jax.nn.relu(X @ params[0]["W"] + params[0]["b"][None, :])
        logits = (h @ params[1]["W"] + params[1]["b"][None, :]).astype(jnp.float32)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss_fn


def _params(seed, sizes=(7, 11, 5)):
    rng = np.random.default_rng(seed)
    return [{"W": (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), "b": np.zeros(b, np.float32)}
            for a, b in zip(sizes[:-1], sizes[1:])]


def test_low_precision_gradients_against_float32():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((13, 7)).astype(np.float32), rng.integers(0, 5, 13).astype(np.int32)
    params = _params(1)
    reference = jax.jit(jax.grad(_mlp_loss(X, y)))(params)
    for dtype, rtol in ((jnp.float16, 2e-2), (jnp.bfloat16, 1e-1)):
        loss_fn = _mlp_loss(X.astype(dtype), y)
        loss, grads, finite = scaled_grad(loss_fn, params, init_loss_scale(2.0 ** 12), compute_dtype=dtype)
        assert bool(finite) and grads[0]["W"].dtype == jnp.float32 and loss.dtype == jnp.float32
        for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(reference)):
            np.testing.assert_allclose(g, r, rtol=rtol, atol=rtol * float(np.abs(r).max()))


def test_underflow_without_a_scale_and_overflow_with_too_large_a_one():
    x = np.array([[1.0, 2.0, 3.0]], np.float16)
    params = {"w": np.ones(3, np.float32)}

    def loss_fn(params):
        return 1e-9 * jnp.mean(x @ params["w"]).astype(jnp.float32)

    _, grads, finite = scaled_grad(loss_fn, params, init_loss_scale(1.0))
    assert bool(finite) and not np.any(np.asarray(grads["w"]))  # every gradient flushed to zero
    _, grads, finite = scaled_grad(loss_fn, params, init_loss_scale(2.0 ** 24))
    np.testing.assert_allclose(grads["w"], [1e-9, 2e-9, 3e-9], rtol=1e-3)
    _, grads, finite = scaled_grad(loss_fn, params, init_loss_scale(2.0 ** 50))  # 1e-9 * 2^50 > 65504
    assert not bool(finite) and not bool(all_finite(grads))
    np.testing.assert_array_equal(apply_if_finite(params, grads, finite, learning_rate=0.1)["w"], params["w"])
    state = adjust_loss_scale(init_loss_scale(2.0 ** 50), finite)
    assert float(state.scale) == 2.0 ** 49 and int(state.count) == 0


def test_cast_floats_leaves_integers_alone():
    tree = {"w": np.ones(3, np.float32), "step": np.array(3, np.int32)}
    out = cast_floats(tree, jnp.float16)
    assert out["w"].dtype == jnp.float16 and out["step"].dtype == jnp.int32


def test_bad_input():
    params = {"w": np.ones(3, np.float32)}
    state = init_loss_scale(4.0)
    with pytest.raises(TypeError, match="state"):
        adjust_loss_scale((4.0, 0), np.array(True))
    with pytest.raises(TypeError, match="finite"):
        adjust_loss_scale(state, np.float32(1.0))
    with pytest.raises(ValueError, match="factor"):
        adjust_loss_scale(state, np.array(True), factor=0.5)
    with pytest.raises(TypeError, match="period"):
        adjust_loss_scale(state, np.array(True), period=2.5)
    with pytest.raises(ValueError, match="params"):
        scaled_grad(lambda p: jnp.sum(p["w"] * jnp.ones(4)), params, state)
    with pytest.raises(TypeError, match="compute_dtype"):
        scaled_grad(lambda p: jnp.sum(p["w"]), params, state, compute_dtype=jnp.int8)
    with pytest.raises(ValueError, match="grads"):
        apply_if_finite(params, {"w": np.ones(4, np.float32)}, np.array(True), learning_rate=0.1)
    with pytest.raises(TypeError, match="params"):
        apply_if_finite({"w": np.ones(3, np.int32)}, params, np.array(True), learning_rate=0.1)
    with pytest.raises(TypeError, match="state"):
        scaled_grad(lambda p: jnp.sum(p["w"]), params, LossScale(np.float32(4.0), np.float32(0.0)))


# ---- It learns: the digits in float16 with dynamic loss scaling ---------------------------------

STEPS, PERIOD, START = 300, 50, 2.0 ** 20


@jax.jit
def _train_float16(params, X, y):
    loss_fn = _mlp_loss(X.astype(jnp.float16), y)

    def step(carry, _):
        params, state = carry
        loss, grads, finite = scaled_grad(loss_fn, params, state, compute_dtype=jnp.float16)
        params = apply_if_finite(params, grads, finite, learning_rate=0.5)
        return (params, adjust_loss_scale(state, finite, period=PERIOD)), (loss, finite, state.scale)

    return jax.lax.scan(step, (params, init_loss_scale(START)), length=STEPS)


def test_float16_training_with_dynamic_loss_scaling_learns_the_digits():
    X, X_test, y, y_test = load_digits_split()
    (params, state), (losses, finite, scales) = _train_float16(_params(2, (64, 32, 10)), X, y)
    finite, scales = np.asarray(finite), np.asarray(scales)
    assert params[0]["W"].dtype == jnp.float32  # master weights stayed float32
    # 2^20 is too large at first: the first steps overflow, are skipped and halve the scale ...
    assert not finite[0] and scales[1] == START / 2 and 1 <= (~finite).sum() <= 10
    # ... which then grows again after each PERIOD finite steps in a row.
    assert float(state.scale) > scales[~finite].min()
    h = np.maximum(np.asarray(X_test) @ np.asarray(params[0]["W"]) + np.asarray(params[0]["b"]), 0)
    accuracy = ((h @ np.asarray(params[1]["W"]) + np.asarray(params[1]["b"])).argmax(-1) == np.asarray(y_test)).mean()
    assert accuracy > 0.95 and float(losses[-1]) < 0.1 * float(losses[finite][0])
