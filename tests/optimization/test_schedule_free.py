import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cookbook.optimization.adamw import adamw
from cookbook.optimization.schedule_free import ScheduleFreeState, eval_params, schedule_free_adamw
from cookbook.optimization.schedules import cosine_decay, scheduled
from optimization_helpers import (
    assert_jit_agrees,
    assert_same_trajectory,
    assert_update_rejects_bad_grads,
    least_squares_problem,
    tree_and_grads,
)


@pytest.mark.parametrize("warmup_steps, weight_decay", [(0, 0.0), (10, 0.1)])
def test_matches_optax_contrib_step_for_step(warmup_steps, weight_decay):
    # Optax's warmup_steps=None is this page's warmup_steps=0.
    gap = assert_same_trajectory(
        lambda lr: schedule_free_adamw(lr, warmup_steps=warmup_steps, weight_decay=weight_decay),
        lambda lr: optax.contrib.schedule_free_adamw(lr, warmup_steps=warmup_steps or None, weight_decay=weight_decay),
        {"least_squares": 0.01, "rosenbrock": 0.01},
        rtol=1e-4,
        atol=1e-5,
    )
    assert gap < 1e-5


def run(opt, loss, params, steps):
    def step(carry, _):
        p, s = carry
        updates, s = opt.update(jax.grad(loss)(p), s, p)
        return (jax.tree.map(jnp.add, p, updates), s), s.z

    (params, state), zs = jax.lax.scan(step, (params, opt.init(params)), length=steps)
    return params, state, zs


def test_eval_params_equal_optax_and_are_the_uniform_average_of_z_at_a_constant_rate():
    loss, params0 = least_squares_problem()
    opt, ref = schedule_free_adamw(0.01), optax.contrib.schedule_free_adamw(0.01)
    params, state, zs = jax.jit(lambda p: run(opt, loss, p, 40))(params0)
    # optax's state at the same point, from the same trajectory: its 40 steps in one compiled scan.
    def ref_step(carry, _):
        ref_params, ref_state = carry
        updates, ref_state = ref.update(jax.grad(loss)(ref_params), ref_state, ref_params)
        return (optax.apply_updates(ref_params, updates), ref_state), None

    (ref_params, ref_state), _ = jax.jit(lambda p: jax.lax.scan(ref_step, (p, ref.init(p)), length=40))(params0)
    ours, theirs = eval_params(state, params), optax.contrib.schedule_free_eval_params(ref_state, ref_params)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    # At a constant rate c = 1, 1/2, 1/3, ...: after T steps x is the plain mean of the T z's they made.
    mean_z = jax.tree.map(lambda z: np.mean(np.asarray(z), axis=0), zs)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(mean_z)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_b1_of_one_trains_the_average_itself_and_warmup_makes_the_first_step_zero():
    loss, params0 = least_squares_problem()
    # b1 = 1: y = x, the gradient is taken at the Polyak average.
    params, state, _ = jax.jit(lambda p: run(schedule_free_adamw(0.01, b1=1.0), loss, p, 5))(params0)
    for a, b in zip(jax.tree.leaves(eval_params(state, params)), jax.tree.leaves(params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    opt = schedule_free_adamw(0.01, warmup_steps=4)
    updates, state = jax.jit(lambda p: opt.update(jax.grad(loss)(p), opt.init(p), p))(params0)  # one program
    # Zero up to the rounding of 0.9 z + 0.1 z.
    assert all(float(np.max(np.abs(np.asarray(u)))) < 1e-6 for u in jax.tree.leaves(updates))
    np.testing.assert_allclose(float(state.max_lr), 0.01 / 4, rtol=1e-6)


def test_stores_two_buffers_like_adamw():
    params, _ = tree_and_grads()
    state = schedule_free_adamw(0.1).init(params)
    assert isinstance(state, ScheduleFreeState)
    n = sum(p.size for p in jax.tree.leaves(params))
    assert sum(x.size for x in jax.tree.leaves((state.z, state.nu))) == 2 * n
    assert sum(x.size for x in jax.tree.leaves(adamw(0.1).init(params))) - 1 == 2 * n  # mu, nu and a count


def test_averaging_replaces_the_schedule_on_noisy_least_squares():
    # Mini-batches of 8 from 512 noisy linear observations, 1000 steps at learning rate 0.1, five
    # mini-batch orders. The excess loss of schedule-free's average is over 20 times smaller than that
    # of AdamW's last iterate at the same constant rate, and within 1.5 times that of AdamW with a
    # cosine decay that knew the number of steps.
    steps = 1000

    @jax.jit  # the data, the least-squares solution and the fifteen runs in one program
    def excesses():
        k_x, k_w, k_n, k_i = jax.random.split(jax.random.key(0), 4)
        X = jax.random.normal(k_x, (512, 10))
        Y = X @ jax.random.normal(k_w, (10,)) + 0.5 * jax.random.normal(k_n, (512,))
        w_star = jnp.linalg.lstsq(X, Y)[0]
        full = lambda w: jnp.mean((X @ w - Y) ** 2)

        def excess(opt, batches, average):
            def step(carry, i):
                w, s = carry
                updates, s = opt.update(jax.grad(lambda w: jnp.mean((X[i] @ w - Y[i]) ** 2))(w), s, w)
                return (w + updates, s), None

            (w, s), _ = jax.lax.scan(step, (jnp.zeros(10), opt.init(jnp.zeros(10))), batches)
            return full(eval_params(s, w) if average else w) - full(w_star)

        def three(batches):
            return (
                excess(adamw(0.1, weight_decay=0.0), batches, False),
                excess(scheduled(adamw(0.1, weight_decay=0.0), lambda t: cosine_decay(t, 1.0, steps)), batches, False),
                excess(schedule_free_adamw(0.1), batches, True),
            )

        return jax.vmap(three)(jax.random.randint(k_i, (5, steps, 8), 0, 512))

    constant, cosine, free = (float(np.mean(np.asarray(e))) for e in excesses())
    assert free < constant / 20, (constant, cosine, free)
    assert free < 1.5 * cosine, (constant, cosine, free)


def test_init_and_update_agree_under_jit():
    params, grads = tree_and_grads()
    assert_jit_agrees(schedule_free_adamw(0.1, warmup_steps=3, weight_decay=0.1), params, grads)


def test_bad_input_raises():
    with pytest.raises(ValueError, match=r"b1 must be in \(0.0, 1.0\] \(eval_params divides by it\), got 0.0"):
        schedule_free_adamw(0.1, b1=0.0)
    with pytest.raises(ValueError, match=r"warmup_steps must be a non-negative int, got 2.5"):
        schedule_free_adamw(0.1, warmup_steps=2.5)
    with pytest.raises(ValueError, match=r"b2 must be in \[0.0, 1.0\), got 1.0"):
        schedule_free_adamw(0.1, b2=1.0)
    opt = schedule_free_adamw(0.1)
    params = {"w": np.ones(3, np.float32)}
    with pytest.raises(ValueError, match=r"needs params \(the point y\), got params=None"):
        opt.update(params, opt.init(params))
    with pytest.raises(TypeError, match=r"state must be a ScheduleFreeState from schedule_free_adamw, got AdamState"):
        eval_params(adamw(0.1).init(params), params)
    with pytest.raises(ValueError, match=r"params\['w'\] must have the shape"):
        eval_params(opt.init(params), {"w": np.ones(4, np.float32)})


def test_update_rejects_gradients_unlike_the_parameters():
    assert_update_rejects_bad_grads(schedule_free_adamw(0.1), needs_params=True)
