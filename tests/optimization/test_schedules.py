import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cookbook.optimization import schedules as s
from cookbook.optimization.adam import adam
from cookbook.optimization.sgd import sgd
from optimization_helpers import assert_jit_agrees, assert_same_trajectory, assert_update_rejects_bad_grads, tree_and_grads

STEPS = jnp.arange(0, 1200)  # well past the end of every schedule below
# Tolerance reached against optax's schedules at every step 0..1199, float32.
RTOL, ATOL = 1e-5, 1e-7

CASES = [
    ("constant", lambda t: s.constant(t, 0.3), optax.constant_schedule(0.3)),
    ("step", lambda t: s.step_decay(t, 0.5, (100, 400, 900), 0.1),
     optax.piecewise_constant_schedule(0.5, {100: 0.1, 400: 0.1, 900: 0.1})),
    ("exponential", lambda t: s.exponential_decay(t, 0.2, 150, 0.7),
     optax.exponential_decay(0.2, 150, 0.7)),
    ("staircase", lambda t: s.exponential_decay(t, 0.2, 150, 0.7, staircase=True),
     optax.exponential_decay(0.2, 150, 0.7, staircase=True)),
    ("cosine", lambda t: s.cosine_decay(t, 0.1, 1000, alpha=0.05), optax.cosine_decay_schedule(0.1, 1000, alpha=0.05)),
    ("warmup_cosine", lambda t: s.warmup_cosine_decay(t, 1e-4, 0.1, 77, 1000, end_value=1e-3),
     optax.warmup_cosine_decay_schedule(1e-4, 0.1, 77, 1000, end_value=1e-3)),
    ("one_cycle", lambda t: s.one_cycle(t, 1000, 0.2), optax.cosine_onecycle_schedule(1000, 0.2)),
    ("one_cycle_odd", lambda t: s.one_cycle(t, 333, 0.2, pct_start=0.25, div_factor=10.0, final_div_factor=100.0),
     optax.cosine_onecycle_schedule(333, 0.2, pct_start=0.25, div_factor=10.0, final_div_factor=100.0)),
]


@pytest.mark.parametrize("name, mine, ref", CASES, ids=[c[0] for c in CASES])
def test_matches_optax_at_every_step(name, mine, ref):
    ours = np.asarray(jax.jit(mine)(STEPS))
    theirs = np.asarray(jax.jit(jax.vmap(ref))(STEPS))
    assert ours.shape == (len(STEPS),)
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)
    # The eager call gives the same values as the compiled one.
    np.testing.assert_allclose(np.asarray(mine(STEPS)), ours, rtol=RTOL, atol=ATOL)


def test_shapes_by_hand():
    # Evaluated on STEPS and read at the steps by hand: the schedules' eager operations are compiled
    # per shape, so these calls reuse the programs of the eager calls above instead of compiling 26.
    np.testing.assert_allclose(np.asarray(s.cosine_decay(STEPS, 2.0, 1000))[[0, 500, 1000, 1199]], [2.0, 1.0, 0.0, 0.0],
                               atol=1e-6)
    np.testing.assert_allclose(np.asarray(s.warmup_cosine_decay(STEPS, 0.0, 1.0, 10, 20))[[0, 5, 10, 15]],
                               [0.0, 0.5, 1.0, 0.5], atol=1e-6)
    peak = np.asarray(s.one_cycle(STEPS, 100, 3.0))[:100]
    assert int(np.argmax(peak)) == 30 and float(peak.max()) == pytest.approx(3.0)


def test_scheduled_optimiser_matches_optax_with_a_schedule_as_learning_rate():
    mine = lambda peak: s.scheduled(adam(1.0), lambda t: s.warmup_cosine_decay(t, 0.0, peak, 10, 100))
    ref = lambda peak: optax.adam(optax.warmup_cosine_decay_schedule(0.0, peak, 10, 100))
    assert_same_trajectory(mine, ref, {"least_squares": 0.02, "rosenbrock": 0.02}, rtol=1e-5, atol=1e-5)


def test_scheduled_init_and_update_agree_under_jit():
    params, grads = tree_and_grads()
    assert_jit_agrees(s.scheduled(sgd(1.0, momentum=0.9), lambda t: s.cosine_decay(t, 0.1, 10)), params, grads)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"decay_steps must be at least 1, got 0"):
        s.cosine_decay(jnp.arange(3), 1.0, 0)
    with pytest.raises(ValueError, match=r"decay_steps must exceed warmup_steps=10, got 5"):
        s.warmup_cosine_decay(jnp.arange(3), 0.0, 1.0, 10, 5)
    with pytest.raises(ValueError, match=r"boundaries must be increasing steps, got \(5, 3\)"):
        s.step_decay(jnp.arange(3), 1.0, (5, 3), 0.1)


def test_scheduled_update_rejects_gradients_unlike_the_parameters():
    assert_update_rejects_bad_grads(s.scheduled(adam(1.0), lambda t: s.cosine_decay(t, 0.1, 100)))


def test_step_counts_must_be_ints():
    # Fails on the old code, which took a float number of steps in silence.
    with pytest.raises(TypeError, match=r"decay_steps must be an int"):
        s.cosine_decay(3, 1.0, 100.5)
    with pytest.raises(TypeError, match=r"transition_steps must be an int"):
        s.one_cycle(3, 10.5, 1.0)
    with pytest.raises(TypeError, match=r"boundaries must be an int"):
        s.step_decay(3, 1.0, (2.5, 4), 0.1)
    with pytest.raises(ValueError, match=r"warmup_steps must be at least 1, got 0"):
        s.warmup_cosine_decay(3, 0.0, 1.0, 0, 100)
