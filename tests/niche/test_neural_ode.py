import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cookbook.niche.neural_ode import init, mlp_field, odeint, odeint_adjoint


def pendulum(t, h, p):
    """A damped, driven pendulum: angle and angular velocity; the drive makes f depend on t."""
    return jnp.stack([h[1], -p["w2"] * jnp.sin(h[0]) - p["c"] * h[1] + 0.3 * jnp.cos(t)])


H0 = np.array([1.0, 0.0], np.float32)
TS = np.linspace(0.0, 3.0, 7).astype(np.float32)  # 6 intervals of 0.5
P = {"w2": np.float32(4.0), "c": np.float32(0.2)}


def test_solutions_match_diffrax_and_the_error_is_fourth_order():
    with jax.enable_x64(True):
        h0, ts, p = np.float64(H0), np.float64(TS), {"w2": 4.0, "c": 0.2}
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(pendulum), diffrax.Tsit5(), 0.0, 3.0, 0.01, h0, args=p,
            saveat=diffrax.SaveAt(ts=ts), max_steps=4096,
            stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-12))
        errors = [np.abs(np.asarray(odeint(pendulum, h0, ts, p, n)) - np.asarray(sol.ys)).max() for n in (8, 16)]
    assert errors[1] < 1e-6, errors  # 32 steps per time unit
    assert errors[0] / errors[1] > 12, errors  # about 2^4 = 16


def loss(solver):
    return lambda h0, ts, p: jnp.sum(jnp.sin(solver(pendulum, h0, ts, p, 10)))


ADJOINT_GRAD = jax.jit(jax.grad(loss(odeint_adjoint), argnums=(0, 1, 2)))  # compiled once, used twice


def test_adjoint_gradients_equal_backpropagation_through_the_solver():
    got = ADJOINT_GRAD(H0, TS, P)
    want = jax.jit(jax.grad(loss(odeint), argnums=(0, 1, 2)))(H0, TS, P)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    # Forward values are the same program.
    np.testing.assert_array_equal(odeint_adjoint(pendulum, H0, TS, P, 10), odeint(pendulum, H0, TS, P, 10))


def test_adjoint_gradients_match_central_finite_differences():
    # The loss of the forward solution, summed in NumPy (float64): eager jnp would compile per shape.
    f = lambda h0, ts, p: np.sum(np.sin(np.asarray(odeint_adjoint(pendulum, h0, ts, p, 10), np.float64)))
    grads = ADJOINT_GRAD(H0, TS, P)
    rng = np.random.default_rng(0)
    x = (H0, TS, P)
    v = jax.tree.map(lambda a: rng.standard_normal(np.shape(a)).astype(np.float32), x)  # a random direction
    eps = 3e-3
    shifted = lambda sign: jax.tree.map(lambda a, d: np.float32(a + sign * eps * d), x, v)
    fd = (float(f(*shifted(1))) - float(f(*shifted(-1)))) / (2 * eps)
    exact = sum(float(np.sum(g * d)) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(v)))
    np.testing.assert_allclose(exact, fd, rtol=1e-3)


def test_one_time_gives_the_start_and_an_identity_gradient():
    ts = TS[:1]
    np.testing.assert_array_equal(odeint(pendulum, H0, ts, P, 3), H0[None])
    g = jax.grad(lambda h0: odeint_adjoint(pendulum, h0, ts, P, 3).sum())(H0)
    np.testing.assert_array_equal(g, np.ones(2))


@pytest.fixture(scope="module")
def spiral():
    """A linear spiral dh/dt = A h with A = [[-0.1, -1], [1, -0.1]] from h(0) = (2, 0), sampled at 41
    times on [0, 10] (exactly: 2 exp(-0.1 t) (cos t, sin t)), and a neural ODE fitted to it by
    backpropagation through one RK4 step per sampling interval."""
    ts = np.linspace(0.0, 10.0, 41).astype(np.float32)
    data = (2 * np.exp(-0.1 * ts)[:, None] * np.stack([np.cos(ts), np.sin(ts)], axis=1)).astype(np.float32)

    def mse(params, n_steps):
        return jnp.mean((odeint(mlp_field, data[0], ts, params, n_steps) - data) ** 2)

    opt = optax.adam(0.02)

    @jax.jit
    def train(params):
        def step(carry, _):
            params, state = carry
            value, grads = jax.value_and_grad(mse)(params, 1)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), value

        return jax.lax.scan(step, (params, opt.init(params)), None, length=400)

    params = init(jax.random.key(0), dim=2, hidden=16)
    assert {k: v.shape for k, v in params.items()} == {"W1": (2, 16), "b1": (16,), "W2": (16, 2), "b2": (2,)}
    (trained, _), losses = train(params)
    fine = jax.jit(lambda p: mse(p, 4))  # judged with a finer solver than it was trained with
    return float(fine(params)), float(fine(trained)), float(np.var(data, axis=0).sum()), np.asarray(losses)


def test_a_neural_ode_fits_a_spiral(spiral):
    before, after, variance, losses = spiral
    assert after < 0.01 and before > 1.0, (before, after)
    assert variance > 1.5  # the error is under 1 % of the data's spread
    assert losses[-1] < losses[0] / 100


def test_bad_input_gets_a_clear_error():
    with pytest.raises(TypeError, match="hidden"):
        init(jax.random.key(0), dim=3, hidden=5.0)
    with pytest.raises(ValueError, match="h0"):
        odeint(pendulum, np.ones(3, np.float32), TS, P, 4)
    with pytest.raises(TypeError, match="h0"):
        odeint(pendulum, np.ones(2, np.int32), TS, P, 4)
    with pytest.raises(ValueError, match="ts"):
        odeint(pendulum, H0, TS[::-1], P, 4)
    with pytest.raises(TypeError, match="n_steps"):
        odeint(pendulum, H0, TS, P, 4.0)
    with pytest.raises(TypeError, match="args"):
        odeint_adjoint(pendulum, H0, TS, {"w2": np.int32(4), "c": np.float32(0.2)}, 4)
    with pytest.raises(TypeError, match="f"):
        odeint("pendulum", H0, TS, P, 4)
