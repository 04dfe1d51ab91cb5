import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from cookbook.recurrent import lstm, rnn
from cookbook.recurrent.lstm import apply, cell, init

GATES = "ifgo"


def to_flax(params):
    """Our fused layout -> flax.linen.LSTMCell's eight dense layers.

    Column block k (k = 0..3 for gates i, f, g, o) of W_x is the kernel of flax's input layer 'i<gate>',
    block k of W_h the kernel of its recurrent layer 'h<gate>', and block k of b that layer's bias
    (flax's input layers have no bias).
    """
    W_x, W_h, b = (jnp.split(params[k], 4, axis=-1) for k in ("W_x", "W_h", "b"))
    out = {}
    for k, gate in enumerate(GATES):
        out["i" + gate] = {"kernel": W_x[k]}
        out["h" + gate] = {"kernel": W_h[k], "bias": b[k]}
    return {"params": {"cell": out}}


@pytest.mark.parametrize("T, D, H", [(11, 3, 5)])
def test_matches_flax_lstm_cell_over_a_sequence(T, D, H):
    k_p, k_b, k_x = jax.random.split(jax.random.key(T), 3)
    params = init(k_p, D, H)
    params["b"] = jax.random.normal(k_b, (4 * H,))  # every bias exercised, not only the forget gate's
    xs = jax.random.normal(k_x, (2, T, D))
    layer = nn.RNN(nn.LSTMCell(features=H))
    # Our layout covers every parameter flax creates, with the same shapes.
    flax_shapes = jax.tree.map(jnp.shape, layer.init(jax.random.key(0), xs))
    assert jax.tree.map(jnp.shape, to_flax(params)) == flax_shapes
    with jax.numpy_rank_promotion("allow"):
        expected = layer.apply(to_flax(params), xs)  # (2, T, H)
    got = jax.vmap(apply, in_axes=(None, 0))(params, xs)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_one_step_matches_flax_carry_including_the_cell_state():
    k_p, k_x, k_c, k_h = jax.random.split(jax.random.key(1), 4)
    params = init(k_p, 3, 5)
    x, c0, h0 = (jax.random.normal(k, s) for k, s in ((k_x, (3,)), (k_c, (5,)), (k_h, (5,))))
    flax_params = {"params": to_flax(params)["params"]["cell"]}
    with jax.numpy_rank_promotion("allow"):
        (c_ref, h_ref), _ = nn.LSTMCell(features=5).apply(flax_params, (c0, h0), x)
    c, h = cell(params, (c0, h0), x)
    np.testing.assert_allclose(c, c_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-6)


def test_scan_matches_a_python_loop_over_cells():
    k_p, k_x = jax.random.split(jax.random.key(2))
    params = init(k_p, 5, 7)
    xs = jax.random.normal(k_x, (11, 5))
    step = jax.jit(cell)
    carry, hs = (jnp.zeros(7), jnp.zeros(7)), []
    for x in xs:
        carry = step(params, carry, x)
        hs.append(carry[1])
    np.testing.assert_allclose(apply(params, xs), jnp.stack(hs), rtol=1e-6, atol=1e-6)


def test_forget_bias_initialisation():
    params = init(jax.random.key(3), 3, 5)
    np.testing.assert_array_equal(params["b"].reshape(4, 5), np.array([[0.0], [1.0], [0.0], [0.0]]) * np.ones(5))
    assert float(init(jax.random.key(3), 3, 5, forget_bias=0.0)["b"].sum()) == 0.0
    assert params["W_x"].shape == (3, 20) and params["W_h"].shape == (5, 20)


def test_the_cell_state_is_a_gradient_highway():
    # With the forget gate held open (f = 1) and the input gate shut (i = 0), c_T = c_0 exactly and
    # d c_T / d c_0 is the identity after 11 steps, where a plain RNN's gradient has all but vanished.
    H = 5
    params = init(jax.random.key(4), 3, H)
    params["b"] = jnp.concatenate([-1e4 * jnp.ones(H), 1e4 * jnp.ones(H), jnp.zeros(2 * H)])
    xs = jax.random.normal(jax.random.key(5), (11, 3))

    def last_cell(c0):
        def step(carry, x):
            return cell(params, carry, x), None
        (c, _), _ = jax.lax.scan(step, (c0, jnp.zeros(H)), xs)
        return c

    c0 = jnp.arange(1.0, H + 1)
    np.testing.assert_allclose(last_cell(c0), c0, rtol=1e-6)
    np.testing.assert_allclose(jax.jacrev(last_cell)(c0), np.eye(H), atol=1e-6)


def test_gradients_pass_check_grads():
    k_p, k_x, k_c = jax.random.split(jax.random.key(6), 3)
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: a.astype(jnp.float64), init(k_p, 3, 5))
        xs = jax.random.normal(k_x, (7, 3), jnp.float64)
        carry0 = (jax.random.normal(k_c, (5,), jnp.float64), jnp.zeros(5, jnp.float64))
        loss = jax.jit(lambda p, xs, carry0: jnp.sum(jnp.sin(apply(p, xs, carry0))))
        check_grads(loss, (params, xs, carry0), order=1, modes=("rev", "fwd"))


def test_huge_inputs_stay_finite():
    params = init(jax.random.key(7), 3, 5)
    hs = apply(params, jnp.full((5, 3), 1e30))
    assert np.all(np.isfinite(hs)) and np.all(np.abs(hs) <= 1.0)


def test_bad_shapes_raise_clear_errors():
    params = init(jax.random.key(8), 3, 5)
    with pytest.raises(ValueError, match=r"xs must have shape \(T, D\) with D = 3, got shape \(7, 2\)"):
        apply(params, jnp.ones((7, 2)))
    with pytest.raises(ValueError, match=r"x must have shape \(D,\) = \(3,\)"):
        cell(params, (jnp.zeros(5), jnp.zeros(5)), jnp.ones(4))
    with pytest.raises(ValueError, match=r"carry \(c, h\) must have shapes \(5,\) and \(5,\), got \(4,\)"):
        cell(params, (jnp.zeros(4), jnp.zeros(5)), jnp.ones(3))


# ---- The adding problem (Hochreiter & Schmidhuber 1997) -----------------------------------------

T_ADD, H_ADD, STEPS, BATCH = 50, 16, 300, 32


def adding_problem(key, N, T):
    """N sequences of T steps of (value, marker): the target is the sum of the two marked values."""
    k_v, k_a, k_b = jax.random.split(key, 3)
    values = jax.random.uniform(k_v, (N, T))
    first = jax.random.randint(k_a, (N,), 0, T // 2)
    second = jax.random.randint(k_b, (N,), T // 2, T)
    markers = jax.nn.one_hot(first, T) + jax.nn.one_hot(second, T)
    return jnp.stack([values, markers], axis=-1), jnp.sum(values * markers, axis=-1)


def _train_on_adding(module, key):
    k_p, k_w, k_data, k_test = jax.random.split(key, 4)
    params = {"cell": module.init(k_p, 2, H_ADD), "w": jax.random.normal(k_w, (H_ADD,)) / H_ADD**0.5,
              "b": jnp.ones(())}  # starts at the trivial prediction 1

    def mse(p, xs, y):
        pred = jax.vmap(lambda s: module.apply(p["cell"], s)[-1] @ p["w"] + p["b"])(xs)
        return jnp.mean((pred - y) ** 2)

    opt = optax.adam(0.02)

    @jax.jit
    def train(params, key):
        def step(state, k):
            p, s = state
            xs, y = adding_problem(k, BATCH, T_ADD)
            grads = jax.grad(mse)(p, xs, y)
            updates, s = opt.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), None

        (p, _), _ = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, STEPS))
        xs, y = adding_problem(k_test, 1000, T_ADD)  # held-out sequences
        return mse(p, xs, y), jnp.mean((1.0 - y) ** 2)

    return train(params, k_data)


@pytest.fixture(scope="module")
def adding_results():
    key = jax.random.key(0)
    return {"lstm": _train_on_adding(lstm, key), "rnn": _train_on_adding(rnn, key)}


def test_lstm_solves_the_adding_problem_and_the_rnn_does_not(adding_results):
    lstm_mse, baseline = (float(v) for v in adding_results["lstm"])
    rnn_mse, _ = (float(v) for v in adding_results["rnn"])
    # Predicting 1 (the mean of the sum) scores Var(u1 + u2) = 1/6 = 0.167.
    assert baseline == pytest.approx(1 / 6, abs=0.02)
    # Measured (seed 0, 300 Adam steps of 32 sequences, H = 16): LSTM 0.0041, plain RNN 0.153.
    assert lstm_mse < 0.05
    assert rnn_mse > 0.1
    assert lstm_mse < 0.2 * rnn_mse


# ---- The page's statements and the boundary checks -----------------------------------------------

def test_without_a_forget_gate_the_cell_drifts_both_ways_by_less_than_one_a_step():
    # f = 1 (the 1997 cell): c_t = c_0 + sum_k i_k g_k. It is not monotone: it can fall as well as
    # rise, and |c_t - c_0| < t, so it drifts without bound but by less than one per step.
    H, T = 5, 40
    k_p, k_x = jax.random.split(jax.random.key(20))
    params = init(k_p, 3, H)
    params["b"] = params["b"].at[H:2 * H].set(1e4)  # forget gate saturated open
    xs = 3.0 * jax.random.normal(k_x, (T, 3))

    def cells(params, xs, c0):
        def step(carry, x):
            carry = cell(params, carry, x)
            return carry, carry[0]
        return jax.lax.scan(step, (c0, jnp.zeros(H)), xs)[1]  # (T, H)

    c0 = jnp.linspace(-1.0, 1.0, H)
    cs = np.asarray(cells(params, xs, c0))
    steps = np.diff(np.concatenate([np.asarray(c0)[None], cs]), axis=0)
    assert (steps > 0).any() and (steps < 0).any()  # rises and falls: "can only grow" was false
    assert np.all(np.abs(cs - np.asarray(c0)) < np.arange(1, T + 1)[:, None])
    # Driven one way (input gate open, candidate -1) it falls by about one a step without bound.
    zero = jax.tree.map(jnp.zeros_like, params)
    drive = zero | {"b": jnp.concatenate([1e4 * jnp.ones(H), 1e4 * jnp.ones(H), -1e4 * jnp.ones(H), jnp.zeros(H)])}
    np.testing.assert_allclose(cells(drive, xs, c0)[-1], np.asarray(c0) - T, rtol=1e-5)


def test_forget_gate_starts_at_sigmoid_of_the_bias():
    # The page: with b_f = 0 the gate starts at 0.5, with b_f = 1 at about 0.73.
    assert round(float(jax.nn.sigmoid(1.0)), 2) == 0.73
    for bias, expected in ((0.0, 0.5), (1.0, 0.7311)):
        params = init(jax.random.key(21), 3, 5, forget_bias=bias)
        params["W_x"], params["W_h"] = jnp.zeros_like(params["W_x"]), jnp.zeros_like(params["W_h"])
        c, _ = cell(params, (jnp.ones(5), jnp.zeros(5)), jnp.zeros(3))  # i g = 0.5 tanh(0) = 0
        np.testing.assert_allclose(c, expected, atol=1e-4)


@pytest.mark.parametrize("D, H, error, match", [
    (3, -5, ValueError, r"H must be at least 1, got -5"),
    (0, 5, ValueError, r"D must be at least 1, got 0"),
    (3, 5.0, TypeError, r"H must be an int"),
])
def test_init_rejects_bad_sizes_with_a_clear_error(D, H, error, match):
    with pytest.raises(error, match=match):
        init(jax.random.key(22), D, H)


def test_bad_arrays_raise_clear_errors_and_lists_are_accepted():
    params = init(jax.random.key(23), 3, 5)
    xs = jax.random.normal(jax.random.key(24), (7, 3))
    with pytest.raises(TypeError, match=r"xs must be a floating-point array"):
        apply(params, xs.astype(jnp.int32))
    with pytest.raises(TypeError, match=r"x must be a floating-point array"):
        cell(params, (jnp.zeros(5), jnp.zeros(5)), jnp.ones(3, jnp.int32))
    with pytest.raises(ValueError, match=r"params\['W_h'\] must have shape \(5, 20\)"):
        apply(params | {"W_h": params["W_h"][:, :1]}, xs)
    with pytest.raises(TypeError, match=r"params\['b'\] must be a floating-point array"):
        apply(params | {"b": params["b"].astype(jnp.int32)}, xs)
    np.testing.assert_allclose(apply(params, np.asarray(xs).tolist()), apply(params, xs), rtol=1e-6)
