import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.regularization.early_stopping import init, replay, update


def keras_style(losses, patience, min_delta=0.0):
    """A plain-Python patience rule written like Keras's EarlyStopping(mode="min"): the stop index or None."""
    best, wait = np.inf, 0
    for t, loss in enumerate(losses):
        wait += 1
        if loss + min_delta < best:  # Keras: monitor_op(current - min_delta, best), min_delta negated for "min"
            best, wait = loss, 0
        if wait >= patience:
            return t, best
    return None, best


@pytest.fixture(scope="module")
def replay_jit():
    return jax.jit(replay, static_argnames=("patience", "min_delta"))


def _stop_index(states):
    stops = np.asarray(states.should_stop)
    return int(np.argmax(stops)) if stops.any() else None


def test_stops_exactly_after_patience_non_improving_steps():
    losses = jnp.array([5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 2.0, 2.5])
    states = replay(losses, patience=3)
    # best 3.0 at t = 2; t = 3, 4, 5 do not improve: stop at t = 5, before the 2.0 at t = 6 is seen.
    np.testing.assert_array_equal(states.bad_steps, [0, 0, 0, 1, 2, 3, 3, 3])
    np.testing.assert_array_equal(states.should_stop, [False] * 5 + [True] * 3)
    np.testing.assert_array_equal(states.best_step, [0, 1, 2, 2, 2, 2, 2, 2])
    np.testing.assert_allclose(states.best_loss[-1], 3.0)


def test_improvement_smaller_than_min_delta_does_not_reset():
    losses = jnp.array([1.0, 0.95, 0.93, 0.91, 0.905])  # none is below 1.0 - 0.1
    states = replay(losses, patience=4, min_delta=0.1)
    np.testing.assert_array_equal(states.bad_steps, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(states.best_loss, [1.0] * 5)  # the best is not moved either
    assert bool(states.should_stop[-1]) and not bool(states.should_stop[-2])
    # without min_delta each of them is an improvement
    np.testing.assert_array_equal(replay(losses, patience=4).bad_steps, [0, 0, 0, 0, 0])


def test_patience_one_stops_at_the_first_bad_step_and_never_before_improvement():
    states = replay(jnp.array([3.0, 2.0, 2.0, 1.0]), patience=1)
    np.testing.assert_array_equal(states.should_stop, [False, False, True, True])  # equal is not better


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("patience, min_delta", [(2, 0.0), (5, 0.01)])
def test_matches_a_keras_style_rule_on_random_curves(replay_jit, seed, patience, min_delta):
    rng = np.random.default_rng(seed)
    t = np.arange(60)
    losses = (np.exp(-t / 10) + 2e-4 * t**2 / 10 + 0.03 * rng.standard_normal(60)).astype(np.float32)
    states = replay_jit(jnp.asarray(losses), patience=patience, min_delta=min_delta)
    stop, best = keras_style(losses.tolist(), patience, min_delta)
    assert _stop_index(states) == stop
    np.testing.assert_allclose(states.best_loss[-1], best, rtol=1e-6)


def test_state_is_frozen_after_stopping_and_best_params_are_kept():
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    state = init(params)
    for k, loss in enumerate([0.9, 0.5, 0.7, 0.8, 0.1]):
        state = update(state, loss, {"w": jnp.full(3, float(k)), "b": jnp.array(float(k))}, patience=2)
    # stopped at t = 3 (0.7 and 0.8 did not improve on 0.5); the 0.1 at t = 4 is ignored
    assert bool(state.should_stop) and int(state.step) == 4 and int(state.best_step) == 1
    np.testing.assert_allclose(state.best_loss, 0.5)
    np.testing.assert_allclose(state.best_params["w"], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(state.best_params["b"], 1.0)


def test_nan_is_an_error_eagerly_and_never_an_improvement_under_jit(replay_jit):
    curve = jnp.array([1.0, jnp.nan, jnp.nan, 0.5])
    with pytest.raises(ValueError, match="val_losses holds NaN"):
        replay(curve, patience=2)
    with pytest.raises(ValueError, match="val_loss holds NaN"):
        update(init(), jnp.nan, patience=2)
    states = replay_jit(curve, patience=2)
    np.testing.assert_array_equal(states.should_stop, [False, False, True, True])
    np.testing.assert_allclose(states.best_loss[-1], 1.0)


def test_runs_inside_a_jitted_while_loop():
    losses = jnp.array([4.0, 3.0, 2.5, 2.6, 2.7, 2.8, 1.0, 0.5])

    @jax.jit
    def train():
        def cond(carry):
            t, state = carry
            return (t < losses.shape[0]) & ~state.should_stop

        def body(carry):
            t, state = carry
            return t + 1, update(state, losses[t], patience=3)

        return jax.lax.while_loop(cond, body, (0, init()))

    t, state = train()
    assert int(t) == 6 and int(state.best_step) == 2 and bool(state.should_stop)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="patience must be at least 1, got 0"):
        update(init(), 1.0, patience=0)
    with pytest.raises(TypeError, match="patience must be an int of at least 1, got float 2.5"):
        update(init(), 1.0, patience=2.5)
    with pytest.raises(ValueError, match="min_delta must be >= 0, got -0.1"):
        update(init(), 1.0, patience=2, min_delta=-0.1)
    with pytest.raises(ValueError, match="params must be passed to update if and only if"):
        update(init(), 1.0, {"w": jnp.ones(2)}, patience=2)
    with pytest.raises(ValueError, match=r"val_loss must have 0 axes \(a scalar\), got shape \(3,\)"):
        update(init(), jnp.ones(3), patience=2)
    with pytest.raises(ValueError, match=r"val_losses must have 1 axes \(T,\), got shape \(2, 3\)"):
        replay(jnp.ones((2, 3)), patience=2)


def test_params_and_losses_of_the_wrong_kind_raise():
    state = init({"w": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"params\['w'\] must have the shape of state.best_params\['w'\]"):
        update(state, 1.0, {"w": jnp.ones(2)}, patience=2)
    with pytest.raises(TypeError, match=r"val_losses must be a floating-point array"):
        replay(jnp.arange(3), patience=2)
