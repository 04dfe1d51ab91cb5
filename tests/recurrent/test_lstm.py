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
    W_x, W_h, b = (np.split(np.asarray(params[k]), 4, axis=-1) for k in ("W_x", "W_h", "b"))
    out = {}
    for k, gate in enumerate(GATES):
        out["i" + gate] = {"kernel": W_x[k]}
        out["h" + gate] = {"kernel": W_h[k], "bias": b[k]}
    return {"params": {"cell": out}}


def normal(seed, *shape):
    """Test inputs drawn with NumPy: jax.random.normal would compile a sampler for every shape."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("T, D, H", [(11, 3, 5)])
def test_matches_flax_lstm_cell_over_a_sequence(T, D, H):
    params = init(jax.random.key(T), D, H)
    params["b"] = normal(T, 4 * H)  # every bias exercised, not only the forget gate's
    xs = normal(T + 1, 2, T, D)
    layer = nn.RNN(nn.LSTMCell(features=H))
    # Our layout covers every parameter flax creates, with the same shapes (read without running init).
    flax_shapes = jax.tree.map(jnp.shape, jax.eval_shape(layer.init, jax.random.key(0), xs))
    assert jax.tree.map(jnp.shape, to_flax(params)) == flax_shapes
    with jax.numpy_rank_promotion("allow"):
        expected = jax.jit(layer.apply)(to_flax(params), xs)  # (2, T, H), one program rather than op by op
    got = jax.vmap(apply, in_axes=(None, 0))(params, xs)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_one_step_matches_flax_carry_including_the_cell_state():
    params = init(jax.random.key(1), 3, 5)
    x, c0, h0 = normal(1, 3), normal(2, 5), normal(3, 5)
    flax_params = {"params": to_flax(params)["params"]["cell"]}
    with jax.numpy_rank_promotion("allow"):
        (c_ref, h_ref), _ = jax.jit(nn.LSTMCell(features=5).apply)(flax_params, (c0, h0), x)
    c, h = cell(params, (c0, h0), x)
    np.testing.assert_allclose(c, c_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-6)


def test_scan_matches_a_python_loop_over_cells():
    # The page example's sizes (T, D, H) = (7, 3, 5), so that both run the same compiled scan.
    params = init(jax.random.key(2), 3, 5)
    xs = normal(2, 7, 3)
    carry, hs = (np.zeros(5, np.float32), np.zeros(5, np.float32)), []
    for x in xs:
        carry = cell(params, carry, x)
        hs.append(carry[1])
    np.testing.assert_allclose(apply(params, xs), np.stack(hs), rtol=1e-6, atol=1e-6)


def test_forget_bias_initialisation():
    params = init(jax.random.key(3), 3, 5)
    # Read in NumPy: no eager reshape or sum compiled.
    b = np.asarray(params["b"])
    np.testing.assert_array_equal(b.reshape(4, 5), np.array([[0.0], [1.0], [0.0], [0.0]]) * np.ones(5))
    assert float(np.sum(np.asarray(init(jax.random.key(3), 3, 5, forget_bias=0.0)["b"]))) == 0.0
    assert params["W_x"].shape == (3, 20) and params["W_h"].shape == (5, 20)


def test_the_cell_state_is_a_gradient_highway():
    # With the forget gate held open (f = 1) and the input gate shut (i = 0), c_T = c_0 exactly and
    # d c_T / d c_0 is the identity after 11 steps, where a plain RNN's gradient has all but vanished.
    H = 5
    params = init(jax.random.key(4), 3, H)
    params["b"] = np.concatenate([-1e4 * np.ones(H), 1e4 * np.ones(H), np.zeros(2 * H)]).astype(np.float32)
    xs = normal(5, 11, 3)

    def last_cell(c0):
        def step(carry, x):
            return cell(params, carry, x), None
        (c, _), _ = jax.lax.scan(step, (c0, jnp.zeros(H)), xs)
        return c

    c0 = np.arange(1.0, H + 1, dtype=np.float32)
    c_T, jacobian = jax.jit(lambda c0: (last_cell(c0), jax.jacrev(last_cell)(c0)))(c0)  # one program
    np.testing.assert_allclose(c_T, c0, rtol=1e-6)
    np.testing.assert_allclose(jacobian, np.eye(H), atol=1e-6)


def test_gradients_pass_check_grads():
    params = init(jax.random.key(6), 3, 5)  # drawn in float32 at the example's sizes, then widened
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
        xs = normal(6, 7, 3).astype(np.float64)
        carry0 = (normal(7, 5).astype(np.float64), np.zeros(5))
        # Every input as one vector, made in NumPy and cut back into the inputs inside the jitted
        # loss: check_grads perturbs and compares one array, instead of compiling its eager
        # operations for each of six shapes.
        leaves, tree = jax.tree.flatten((params, xs, carry0))
        flat = np.concatenate([leaf.ravel() for leaf in leaves])
        ends = np.cumsum([leaf.size for leaf in leaves])

        def loss(v):
            pieces = [v[end - leaf.size:end].reshape(leaf.shape) for leaf, end in zip(leaves, ends)]
            return jnp.sum(jnp.sin(apply(*jax.tree.unflatten(tree, pieces))))

        assert flat.shape == (3 * 20 + 5 * 20 + 20 + 7 * 3 + 5 + 5,) and flat.dtype == np.float64
        check_grads(jax.jit(loss), (flat,), order=1, modes=("rev", "fwd"))


def test_huge_inputs_stay_finite():
    params = init(jax.random.key(7), 3, 5)
    hs = apply(params, np.full((7, 3), 1e30, np.float32))
    assert np.all(np.isfinite(hs)) and np.all(np.abs(hs) <= 1.0)


def test_bad_shapes_raise_clear_errors():
    params = init(jax.random.key(8), 3, 5)
    with pytest.raises(ValueError, match=r"xs must have shape \(T, D\) with D = 3, got shape \(7, 2\)"):
        apply(params, np.ones((7, 2), np.float32))
    with pytest.raises(ValueError, match=r"x must have shape \(D,\) = \(3,\)"):
        cell(params, (np.zeros(5, np.float32), np.zeros(5, np.float32)), np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"carry \(c, h\) must have shapes \(5,\) and \(5,\), got \(4,\)"):
        cell(params, (np.zeros(4, np.float32), np.zeros(5, np.float32)), np.ones(3, np.float32))


# ---- The adding problem (Hochreiter & Schmidhuber 1997) -----------------------------------------

T_ADD, H_ADD, STEPS, BATCH = 50, 16, 300, 32


def adding_problem(rng, N, T):
    """N sequences of T steps of (value, marker): the target is the sum of the two marked values.

    Drawn with NumPy: in the training program, jax.random's samplers took about half of its compile time.
    """
    values = rng.random((N, T), dtype=np.float32)
    first = rng.integers(0, T // 2, N)
    second = rng.integers(T // 2, T, N)
    markers = np.zeros((N, T), np.float32)
    markers[np.arange(N), first] = markers[np.arange(N), second] = 1.0
    return np.stack([values, markers], axis=-1), np.sum(values * markers, axis=-1)


def _train_on_adding(module, data, key, rng):
    """Held-out MSE after STEPS Adam steps on the batches ``data``, and that of predicting 1."""
    (xs_train, y_train), (xs_test, y_test) = data
    params = {"cell": module.init(key, 2, H_ADD), "w": rng.standard_normal(H_ADD).astype(np.float32) / H_ADD**0.5,
              "b": np.ones((), np.float32)}  # starts at the trivial prediction 1

    def mse(p, xs, y):
        pred = jax.vmap(lambda s: module.apply(p["cell"], s)[-1] @ p["w"] + p["b"])(xs)
        return jnp.mean((pred - y) ** 2)

    opt = optax.adam(0.02)

    @jax.jit
    def train(params, xs_train, y_train, xs_test, y_test):
        def step(state, batch):
            p, s = state
            grads = jax.grad(mse)(p, *batch)
            updates, s = opt.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), None

        (p, _), _ = jax.lax.scan(step, (params, opt.init(params)), (xs_train, y_train))
        return mse(p, xs_test, y_test)

    return float(train(params, xs_train, y_train, xs_test, y_test)), float(np.mean((1.0 - y_test) ** 2))


def _adding_results(seed):
    """Both networks trained from the same seed on the same sequences (STEPS batches, 1000 held out)."""
    rng = np.random.default_rng(seed)
    xs, y = adding_problem(rng, STEPS * BATCH, T_ADD)
    data = (xs.reshape(STEPS, BATCH, T_ADD, 2), y.reshape(STEPS, BATCH)), adding_problem(rng, 1000, T_ADD)
    key = jax.random.key(seed)
    return {name: _train_on_adding(module, data, key, np.random.default_rng(seed + 1))
            for name, module in (("lstm", lstm), ("rnn", rnn))}


@pytest.fixture(scope="module")
def adding_results():
    return _adding_results(0)


def test_lstm_solves_the_adding_problem_and_the_rnn_does_not(adding_results):
    lstm_mse, baseline = adding_results["lstm"]
    rnn_mse, _ = adding_results["rnn"]
    # Predicting 1 (the mean of the sum) scores Var(u1 + u2) = 1/6 = 0.167.
    assert baseline == pytest.approx(1 / 6, abs=0.02)
    # Measured (seed 0, 300 Adam steps of 32 sequences, H = 16): LSTM 0.0096, plain RNN 0.175;
    # seeds 1, 2, 3: LSTM 0.0055, 0.0074, 0.0028 and RNN 0.168, 0.231, 0.178.
    assert lstm_mse < 0.05
    assert rnn_mse > 0.1
    assert lstm_mse < 0.2 * rnn_mse


# ---- The page's statements and the boundary checks -----------------------------------------------

def test_without_a_forget_gate_the_cell_drifts_both_ways_by_less_than_one_a_step():
    # f = 1 (the 1997 cell): c_t = c_0 + sum_k i_k g_k. It is not monotone: it can fall as well as
    # rise, and |c_t - c_0| < t, so it drifts without bound but by less than one per step.
    H, T = 5, 40
    params = init(jax.random.key(20), 3, H)
    params["b"] = np.asarray(params["b"]).copy()
    params["b"][H:2 * H] = 1e4  # forget gate saturated open
    xs = 3.0 * normal(20, T, 3)

    @jax.jit  # one program for both runs below
    def cells(params, xs, c0):
        def step(carry, x):
            carry = cell(params, carry, x)
            return carry, carry[0]
        return jax.lax.scan(step, (c0, jnp.zeros(H)), xs)[1]  # (T, H)

    c0 = np.linspace(-1.0, 1.0, H, dtype=np.float32)
    cs = np.asarray(cells(params, xs, c0))
    steps = np.diff(np.concatenate([c0[None], cs]), axis=0)
    assert (steps > 0).any() and (steps < 0).any()  # rises and falls: "can only grow" was false
    assert np.all(np.abs(cs - np.asarray(c0)) < np.arange(1, T + 1)[:, None])
    # Driven one way (input gate open, candidate -1) it falls by about one a step without bound.
    zero = jax.tree.map(np.zeros_like, params)
    b = np.concatenate([1e4 * np.ones(H), 1e4 * np.ones(H), -1e4 * np.ones(H), np.zeros(H)]).astype(np.float32)
    drive = zero | {"b": b}
    np.testing.assert_allclose(np.asarray(cells(drive, xs, c0))[-1], c0 - T, rtol=1e-5)


def test_forget_gate_starts_at_sigmoid_of_the_bias():
    # The page: with b_f = 0 the gate starts at 0.5, with b_f = 1 at about 0.73.
    assert round(float(jax.nn.sigmoid(1.0)), 2) == 0.73
    for bias, expected in ((0.0, 0.5), (1.0, 0.7311)):
        params = init(jax.random.key(21), 3, 5, forget_bias=bias)
        params["W_x"], params["W_h"] = np.zeros((3, 20), np.float32), np.zeros((5, 20), np.float32)
        carry = (np.ones(5, np.float32), np.zeros(5, np.float32))
        c, _ = cell(params, carry, np.zeros(3, np.float32))  # i g = 0.5 tanh(0) = 0
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
    xs = normal(24, 7, 3)
    with pytest.raises(TypeError, match=r"xs must be a floating-point array"):
        apply(params, xs.astype(np.int32))
    with pytest.raises(TypeError, match=r"x must be a floating-point array"):
        cell(params, (np.zeros(5, np.float32), np.zeros(5, np.float32)), np.ones(3, np.int32))
    with pytest.raises(ValueError, match=r"params\['W_h'\] must have shape \(5, 20\)"):
        apply(params | {"W_h": np.asarray(params["W_h"])[:, :1]}, xs)
    with pytest.raises(TypeError, match=r"params\['b'\] must be a floating-point array"):
        apply(params | {"b": np.asarray(params["b"]).astype(np.int32)}, xs)
    np.testing.assert_allclose(apply(params, xs.tolist()), apply(params, xs), rtol=1e-6)
