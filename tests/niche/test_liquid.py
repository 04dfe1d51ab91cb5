import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.niche.liquid import cfc_step, init_cfc, init_ltc, ltc_field, ltc_step

N, D = 3, 2  # the page's sizes, so that the tests run the page's compiled init and steps


@pytest.fixture(scope="module")
def params():
    p = init_ltc(jax.random.key(0), n_inputs=D, n_hidden=N)
    return {**p, "b": np.asarray(p["b"]) + np.float32(1.0), "tau": np.linspace(0.5, 2.0, N).astype(np.float32)}  # an open gate, several tau


def numpy_field(p, x, inputs):
    p = {k: np.float64(v) for k, v in p.items()}
    f = 1 / (1 + np.exp(-(x @ p["W_x"] + inputs @ p["W_i"] + p["b"])))
    return -(1 / p["tau"] + f) * x + f * p["A"]


def test_field_matches_numpy(params):
    x, inputs = np.float32(np.linspace(-1, 1, N)), np.float32([0.5, -0.2])
    np.testing.assert_allclose(ltc_field(params, x, inputs), numpy_field(params, x, inputs), rtol=1e-5, atol=1e-6)


def test_fused_solver_converges_to_a_fine_euler_integration_at_first_order(params):
    inputs = np.float32([0.5, -0.2])
    x0 = np.float32(np.linspace(-1, 1, N))
    x = np.float64(x0)  # the reference: 10 000 explicit Euler steps over one unit of time
    for _ in range(10_000):
        x = x + 1e-4 * numpy_field(params, x, np.float64(inputs))
    step = jax.jit(lambda x, dt, n: jax.lax.fori_loop(0, n, lambda _, x: ltc_step(params, x, inputs, dt), x))
    errors = [np.abs(np.float64(step(x0, 1.0 / n, n)) - x).max() for n in (10, 20, 40)]
    assert errors[2] < 0.02, errors  # 40 steps per unit of time
    assert errors[0] / errors[1] > 1.7 and errors[1] / errors[2] > 1.7, errors  # about 2: first order


def test_fused_step_stays_bounded_at_any_step_where_euler_does_not(params):
    x0 = np.float32(np.linspace(-1, 1, N))
    inputs = np.float32([0.5, -0.2])
    A = np.asarray(params["A"])
    lo, hi = np.minimum(np.minimum(0, A), x0.min()), np.maximum(np.maximum(0, A), x0.max())
    x, euler = x0, np.float64(x0)
    for _ in range(5):
        x = np.asarray(ltc_step(params, x, inputs, 100.0))
        with np.errstate(over="ignore"):
            euler = euler + 100.0 * numpy_field(params, euler, np.float64(inputs))
        assert np.all(x >= lo - 1e-6) and np.all(x <= hi + 1e-6)
    assert np.abs(euler).max() > 10 * np.abs(hi - lo).max()  # explicit Euler has left the bounds


def numpy_cfc(p, x, inputs, t):
    z = np.concatenate([x, inputs]).astype(np.float64)
    head = lambda k: z @ np.float64(p[k]["W"]) + np.float64(p[k]["b"])
    gate = 1 / (1 + np.exp(head("F") * t))
    return gate * np.tanh(head("G")) + (1 - gate) * np.tanh(head("H")), np.tanh(head("G")), np.tanh(head("H")), head("F")


def test_cfc_matches_numpy_and_moves_from_the_average_to_h():
    p = init_cfc(jax.random.key(1), n_inputs=D, n_hidden=N)
    x, inputs = np.float32(np.linspace(-1, 1, N)), np.float32([0.5, -0.2])
    for t in (0.0, 0.7, 3.0):
        want, G, H, F = numpy_cfc(p, x, inputs, t)
        np.testing.assert_allclose(cfc_step(p, x, inputs, t), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cfc_step(p, x, inputs, 0.0), (G + H) / 2, rtol=1e-5, atol=1e-6)
    far = np.asarray(cfc_step(p, x, inputs, 1e4))
    np.testing.assert_allclose(far[F > 0.01], H[F > 0.01], atol=1e-5)
    np.testing.assert_allclose(far[F < -0.01], G[F < -0.01], atol=1e-5)


def test_gradients_are_finite_and_vmap_batches_states(params):
    xs = np.float32(np.random.default_rng(0).uniform(-1, 1, (7, N)))
    inputs = np.float32([0.5, -0.2])
    batched = jax.jit(jax.vmap(lambda x: ltc_step(params, x, inputs, 0.3)))(xs)
    np.testing.assert_allclose(np.asarray(batched)[2], ltc_step(params, xs[2], inputs, 0.3), rtol=1e-6)
    g = jax.jit(jax.grad(lambda p: ltc_step(p, xs[0], inputs, 0.3).sum()))(params)
    assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(g))


def test_bad_input_gets_a_clear_error(params):
    x, inputs = np.zeros(N, np.float32), np.zeros(D, np.float32)
    with pytest.raises(ValueError, match="x"):
        ltc_step(params, np.zeros(N + 1, np.float32), inputs, 0.1)
    with pytest.raises(ValueError, match="inputs"):
        ltc_step(params, x, np.zeros(D + 1, np.float32), 0.1)
    with pytest.raises(ValueError, match="dt"):
        ltc_step(params, x, inputs, -0.1)
    with pytest.raises(ValueError, match="tau"):
        ltc_step({**params, "tau": -np.ones(N, np.float32)}, x, inputs, 0.1)
    with pytest.raises(TypeError, match="inputs"):
        ltc_step(params, x, np.zeros(D, np.int32), 0.1)
    cfc = init_cfc(jax.random.key(1), n_inputs=D, n_hidden=N)
    with pytest.raises(ValueError, match="t"):
        cfc_step(cfc, x, inputs, -1.0)
    with pytest.raises(ValueError, match="inputs"):
        cfc_step(cfc, x, np.zeros(D + 1, np.float32), 1.0)
