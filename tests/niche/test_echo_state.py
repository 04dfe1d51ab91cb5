import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import Ridge

from cookbook.niche.echo_state import init, mackey_glass, readout, reservoir_states, ridge_readout, spectral_radius

N, WASHOUT, TRAIN = 100, 100, 1100  # reservoir size; dropped states; fitted states


@pytest.fixture(scope="module")
def series():
    return np.asarray(mackey_glass(1500))


@pytest.fixture(scope="module")
def u(series):
    return (series - 0.9)[:, None]  # the input: the series, roughly centred


@pytest.fixture(scope="module")
def params():
    return init(jax.random.key(0), n_inputs=1, n_reservoir=N, spectral_radius=0.9)


@pytest.fixture(scope="module")
def states(params, u):
    return np.asarray(reservoir_states(params, u))


def test_mackey_glass_matches_a_numpy_euler_loop(series):
    lag, dt = 170, 0.1
    s = [1.2] * (lag + 1)  # the history, then the series at every Euler step
    for _ in range(200 * 10):
        s.append(s[-1] + dt * (0.2 * s[-1 - lag] / (1 + s[-1 - lag] ** 10) - 0.1 * s[-1]))
    want = np.array(s[lag::10][:200])
    np.testing.assert_allclose(series[:200], want, atol=2e-4)
    assert 0.4 < float(series.min()) and float(series.max()) < 1.4


def test_init_rescales_to_the_asked_spectral_radius(params):
    W = np.float64(params["W"])
    np.testing.assert_allclose(np.abs(np.linalg.eigvals(W)).max(), 0.9, rtol=1e-4)
    np.testing.assert_allclose(spectral_radius(params["W"]), 0.9, rtol=1e-4)


def numpy_states(params, u, x0, a):
    W_in, W, b = (np.float64(params[k]) for k in ("W_in", "W", "b"))
    x, out = np.float64(x0), []
    for u_t in np.float64(u):
        x = (1 - a) * x + a * np.tanh(W_in @ u_t + W @ x + b)
        out.append(x)
    return np.array(out)


def test_states_match_a_numpy_loop_with_a_leak_and_a_start(params, u):
    x0 = np.random.default_rng(0).uniform(-1, 1, N).astype(np.float32)
    got = reservoir_states(params, u, x0, 0.3)
    np.testing.assert_allclose(got, numpy_states(params, u, x0, 0.3), atol=1e-4)
    # T = 1: one step from x0.
    np.testing.assert_allclose(np.asarray(reservoir_states(params, u[:1], x0, 0.3))[0], np.asarray(got)[0], atol=1e-6)


def test_states_are_causal(params, u, states):
    changed = u.copy()
    changed[700:] += 0.5
    b = np.asarray(reservoir_states(params, changed))
    np.testing.assert_array_equal(states[:700], b[:700])
    assert np.abs(states[700] - b[700]).max() > 1e-3


def test_ridge_readout_matches_scikit_learn(states, u):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((TRAIN, N)).astype(np.float32)
    Y = (X @ rng.standard_normal((N, 1)) + 0.3 * rng.standard_normal((TRAIN, 1)) + 2.0).astype(np.float32)
    for alpha in (1e-2, 30.0):
        W_out, c = ridge_readout(X, Y, alpha)
        ref = Ridge(alpha=alpha).fit(np.float64(X), np.float64(Y))
        np.testing.assert_allclose(W_out, ref.coef_.reshape(N, 1), atol=2e-5)
        np.testing.assert_allclose(c, np.ravel(ref.intercept_), atol=2e-5)
    # On the ill-conditioned reservoir states the coefficients are not unique; the fits agree.
    X, Y = states[WASHOUT:WASHOUT + TRAIN], u[WASHOUT + 1:WASHOUT + TRAIN + 1]
    W_out, c = ridge_readout(X, Y, 1e-6)
    ref = Ridge(alpha=1e-6).fit(np.float64(X), np.float64(Y))
    np.testing.assert_allclose(np.asarray(readout(W_out, c, X)).ravel(), ref.predict(np.float64(X)).ravel(), atol=2e-4)


def gap(params, u):
    """The distance between two copies of the reservoir started at opposite corners, x0 = ±1."""
    ones = np.ones(N, np.float32)
    return np.linalg.norm(np.asarray(reservoir_states(params, u, ones)) - np.asarray(reservoir_states(params, u, -ones)), axis=1)


def test_echo_state_property_holds_below_spectral_radius_one_and_fails_above(params, u):
    d = gap(params, u)
    assert d[0] > 7 and d[200] < 1e-5 and d[-1] < 1e-5, (d[0], d[200])
    wild = init(jax.random.key(0), n_inputs=1, n_reservoir=N, spectral_radius=1.5, input_scale=0.01)
    assert gap(wild, u)[-1] > 0.1, gap(wild, u)[-1]


@pytest.mark.parametrize("horizon, bound", [(1, 0.005), (20, 0.05)])
def test_it_predicts_mackey_glass_ahead(states, u, horizon, bound):
    X = states[:-horizon]  # (T - h, N): the state after reading u_t ...
    Y = u[horizon:]  # ... predicts u_{t+h}
    W_out, c = ridge_readout(X[WASHOUT:WASHOUT + TRAIN], Y[WASHOUT:WASHOUT + TRAIN], 1e-6)
    test = slice(WASHOUT + TRAIN, WASHOUT + TRAIN + 280)
    err = np.asarray(readout(W_out, c, X[test])) - Y[test]
    nrmse = np.sqrt(np.mean(err**2)) / np.std(Y[test])
    assert nrmse < bound, nrmse


def test_bad_input_gets_a_clear_error(params):
    u = np.zeros((7, 1), np.float32)
    with pytest.raises(ValueError, match="u"):
        reservoir_states(params, np.zeros((7, 2), np.float32))
    with pytest.raises(TypeError, match="u"):
        reservoir_states(params, np.zeros((7, 1), np.int32))
    with pytest.raises(ValueError, match="x0"):
        reservoir_states(params, u, np.zeros(N + 1, np.float32))
    with pytest.raises(ValueError, match="leak"):
        reservoir_states(params, u, leak=1.5)
    with pytest.raises(ValueError, match="W"):
        reservoir_states({**params, "W": np.asarray(params["W"])[:, :5]}, u)
    with pytest.raises(ValueError, match="targets"):
        ridge_readout(np.zeros((7, 3), np.float32), np.zeros((6, 1), np.float32), 1.0)
    with pytest.raises(ValueError, match="alpha"):
        ridge_readout(np.zeros((7, 3), np.float32), np.zeros((7, 1), np.float32), 0.0)
    with pytest.raises(TypeError, match="n_reservoir"):
        init(jax.random.key(0), n_inputs=1, n_reservoir=10.5)
    with pytest.raises(ValueError, match="tau"):
        mackey_glass(10, tau=17.05, dt=0.1)
    with pytest.raises(ValueError, match="W"):
        spectral_radius(np.zeros((3, 4), np.float32))
