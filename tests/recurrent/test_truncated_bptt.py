import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from cookbook.recurrent import rnn
from cookbook.recurrent.truncated_bptt import forward_windows, init, predict, train, window_loss


# The full unroll as one compiled program per shape (called eagerly, the layer's scan would compile
# again on every call, its step being a new closure).
full_unroll = jax.jit(rnn.apply)


def _data(seed, *shape):
    """Inputs drawn with NumPy: jax.random.normal would compile a sampler for every shape."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("T, window", [(35, 7), (33, 11), (5, 5), (5, 1)])
def test_forward_states_equal_the_full_unroll(T, window):
    params = init(jax.random.key(T + window), 3, 5)
    xs = _data(T + window, T, 3)
    # both in one program
    both = jax.jit(lambda params, xs: (forward_windows(params, xs, window=window), rnn.apply(params["rnn"], xs)))
    hs, full = both(params, xs)
    np.testing.assert_allclose(hs, full, rtol=1e-6, atol=1e-6)


def test_gradient_before_the_window_is_exactly_zero_and_full_bptt_is_not():
    params = init(jax.random.key(0), 3, 5, scale=1.0)
    xs = _data(0, 35, 3)
    truncated = jax.jit(jax.grad(lambda xs: jnp.sum(forward_windows(params, xs, window=7)[-7:] ** 2)))(xs)
    full = jax.jit(jax.grad(lambda xs: jnp.sum(rnn.apply(params["rnn"], xs)[-7:] ** 2)))(xs)
    truncated, full = np.asarray(truncated), np.asarray(full)  # sliced in NumPy: no eager slices compiled
    assert np.all(truncated[:28] == 0.0)  # exactly zero, not merely small
    assert np.all(np.abs(full[:28]).sum(axis=1) > 0)
    np.testing.assert_allclose(truncated[28:], full[28:], rtol=1e-5, atol=1e-6)  # inside the window, the same


def test_the_parameter_gradient_of_a_window_ignores_earlier_windows():
    # d L_k / d theta with the carried state treated as a constant input.
    params = init(jax.random.key(1), 3, 5)
    xs, ys = _data(1, 14, 3), _data(2, 14)
    h7 = np.asarray(full_unroll(params["rnn"], xs[:7]))[-1]
    grads, _ = jax.jit(jax.grad(window_loss, has_aux=True))(params, h7, xs[7:], ys[7:])  # one program, not two

    @jax.jit  # one compiled program rather than a compilation of each eager operation of the gradient
    @jax.grad
    def expected(p):  # the loss of window 2 through forward_windows, as a function of the parameters
        hs = forward_windows(p, xs, window=7)[7:]
        return jnp.mean((hs @ p["w"] + p["c"] - ys[7:]) ** 2)

    expected = expected(params)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_train_equals_a_python_loop_of_window_updates():
    params = init(jax.random.key(2), 3, 5)
    xs, ys = _data(3, 21, 3), _data(4, 21)
    got, losses = jax.jit(train, static_argnames="window")(params, xs, ys, window=7, learning_rate=0.05)

    @jax.jit  # one window's update, compiled once for the three calls of the loop
    def update(p, h, xs_k, ys_k):
        (loss, h), g = jax.value_and_grad(window_loss, has_aux=True)(p, h, xs_k, ys_k)
        return jax.tree.map(lambda p, g: p - 0.05 * g, p, g), h, loss

    ref, h, ref_losses = params, np.zeros(5, np.float32), []
    for k in range(3):
        ref, h, loss = update(ref, h, xs[7 * k: 7 * k + 7], ys[7 * k: 7 * k + 7])
        ref_losses.append(loss)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_window_loss_gradients_pass_check_grads():
    params = init(jax.random.key(3), 3, 5)  # drawn in float32 at the other tests' sizes, then widened
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
        xs, ys = _data(5, 7, 3).astype(np.float64), _data(6, 7).astype(np.float64)
        h0 = (0.5 * _data(7, 5)).astype(np.float64)
        # Every input (the parameters, h0 and xs) as one vector: check_grads perturbs and compares one
        # array, instead of compiling its eager operations for each of seven shapes. The vector is
        # made in NumPy and cut back into the inputs inside the jitted loss.
        leaves, tree = jax.tree.flatten((params, h0, xs))
        flat = np.concatenate([leaf.ravel() for leaf in leaves])
        ends = np.cumsum([leaf.size for leaf in leaves])

        def unravel(v):
            pieces = [v[end - leaf.size:end].reshape(leaf.shape) for leaf, end in zip(leaves, ends)]
            return jax.tree.unflatten(tree, pieces)

        assert flat.shape == (3 * 5 + 5 * 5 + 5 + 5 + 1 + 5 + 7 * 3,) and flat.dtype == np.float64
        check_grads(jax.jit(lambda v: window_loss(*unravel(v), ys)[0]), (flat,), order=1, modes=("rev", "fwd"))



def _echo_data(seed, T, delay):
    xs = _data(seed, T, 1)
    ys = np.roll(xs[:, 0], delay)
    ys[:delay] = 0.0  # y_t = x_{t - delay}
    return xs, ys


def test_learns_an_echo_shorter_than_the_window_but_not_longer():
    # Measured (8000 steps, H = 16, lr 0.05, the page's initial weights, NumPy seed 0 for the data):
    # windows of 8 reach 0.025 over the last 100 steps on a 3-step echo (target variance 1); windows
    # of 2 stay at 0.93 over the last 400: the readout uses what the state happens to keep. NumPy
    # seeds 1 and 2: 0.022 and 0.36, 0.031 and 0.58.
    k_p, _ = jax.random.split(jax.random.key(0))
    params = init(k_p, 1, 16)
    xs, ys = _echo_data(0, 8000, delay=3)
    fit = jax.jit(train, static_argnames="window")
    _, long_window = fit(params, xs, ys, window=8, learning_rate=0.05)
    _, short_window = fit(params, xs, ys, window=2, learning_rate=0.05)
    long_window, short_window = np.asarray(long_window), np.asarray(short_window)  # NumPy: no eager means compiled
    assert long_window[-100:].mean() < 0.05
    assert short_window[-400:].mean() > 0.15
    assert long_window[-100:].mean() < 0.5 * long_window[:100].mean()


def test_predict_is_the_readout_of_the_full_unroll():
    params = init(jax.random.key(4), 3, 5)
    xs = _data(8, 7, 3)
    w, c = np.asarray(params["w"]), np.asarray(params["c"])  # the readout in NumPy: no eager ops compiled
    np.testing.assert_allclose(predict(params, xs), np.asarray(full_unroll(params["rnn"], xs)) @ w + c, rtol=1e-6)


def test_bad_input_raises_clear_errors():
    params = init(jax.random.key(5), 3, 5)
    with pytest.raises(ValueError, match=r"T = 10 must be a multiple of window = 4"):
        forward_windows(params, np.ones((10, 3), np.float32), window=4)
    with pytest.raises(ValueError, match=r"ys must have shape \(T,\) = \(8,\), got shape \(8, 1\)"):
        train(params, np.ones((8, 3), np.float32), np.ones((8, 1), np.float32), window=4, learning_rate=0.1)


def test_bad_arrays_and_sizes_raise_clear_errors():
    params = init(jax.random.key(6), 3, 5)
    xs = _data(9, 7, 3)  # the shape of test_predict's: predict's program is compiled already
    ys = np.ones(7, np.float32)
    with pytest.raises(TypeError, match=r"xs must be a floating-point array"):
        forward_windows(params, xs.astype(np.int32), window=4)
    with pytest.raises(TypeError, match=r"window must be an int"):
        forward_windows(params, xs, window=4.0)
    with pytest.raises(TypeError, match=r"ys must be a floating-point array"):
        train(params, xs, ys.astype(np.int32), window=4, learning_rate=0.1)
    with pytest.raises(ValueError, match=r"h0 must have shape \(5,\)"):
        window_loss(params, np.zeros(4, np.float32), xs, ys)
    with pytest.raises(ValueError, match=r"ys must have shape \(7,\)"):
        window_loss(params, np.zeros(5, np.float32), xs, ys[:1])
    with pytest.raises(TypeError, match=r"params\['c'\] must be a floating-point array"):
        predict(params | {"c": np.zeros((), np.int32)}, xs)
    np.testing.assert_allclose(predict(params, xs.tolist()), predict(params, xs), rtol=1e-6)
