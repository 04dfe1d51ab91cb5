import jax
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

from cookbook.niche.spiking import apply, init, lif_layer, spike


def numpy_lif(W, inputs, beta, threshold):
    v, s, spikes, vs = np.zeros(W.shape[1]), np.zeros(W.shape[1]), [], []
    for current in np.float64(inputs) @ np.float64(W):
        v = beta * v + current - threshold * s
        s = (v > threshold).astype(float)
        spikes.append(s)
        vs.append(v)
    return np.array(spikes), np.array(vs)


def test_spike_trains_match_a_numpy_loop():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((7, 11)).astype(np.float32)
    inputs = rng.uniform(0, 1, (13, 7)).astype(np.float32)
    spikes, v = lif_layer(W, inputs, 0.8, 0.7)
    want_s, want_v = numpy_lif(W, inputs, 0.8, 0.7)
    assert 10 < want_s.sum() < 13 * 11 - 10  # some neurons fire, not all all the time
    np.testing.assert_array_equal(spikes, want_s)
    np.testing.assert_allclose(v, want_v, rtol=1e-5, atol=1e-5)


def test_a_constant_current_fires_only_above_threshold_times_one_minus_beta():
    currents = np.array([[0.0, 0.09, 0.11, 0.3, 0.6]], np.float32)  # threshold (1 - beta) = 0.1
    spikes, _ = lif_layer(currents, np.ones((60, 1), np.float32), 0.9)
    counts = np.asarray(spikes).sum(0)
    assert counts[0] == 0 and counts[1] == 0 and counts[2] > 0
    assert np.all(np.diff(counts[1:]) > 0), counts  # a stronger current fires more often


@jax.jit
def _surrogate(u, t):
    """The step, its surrogate gradient, and its forward- and reverse-mode derivatives along t, in
    one program."""
    _, jvp = jax.jvp(lambda u: spike(u, 5.0), (u,), (t,))
    _, vjp = jax.vjp(lambda u: spike(u, 5.0), u)
    return {"step": spike(u, 5.0), "grads": jax.vmap(jax.grad(spike), in_axes=(0, None))(u, 5.0),
            "jvp": jvp, "vjp": vjp(t)[0]}


def test_the_surrogate_gradient_is_the_fast_sigmoid_derivative():
    u = np.linspace(-2, 2, 9).astype(np.float32)
    t = np.arange(9, dtype=np.float32)
    got = _surrogate(u, t)
    np.testing.assert_array_equal(got["step"], (u > 0).astype(np.float32))
    np.testing.assert_allclose(got["grads"], 1 / (1 + 5 * np.abs(u)) ** 2, rtol=1e-6)
    # Forward and reverse mode agree (the custom rule is linear in the tangent).
    np.testing.assert_allclose(got["jvp"], got["vjp"], rtol=1e-6)


def test_gradients_flow_through_the_spikes_to_the_weights():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((7, 11)).astype(np.float32)
    inputs = rng.uniform(0, 1, (13, 7)).astype(np.float32)
    g = jax.grad(lambda W: lif_layer(W, inputs, 0.8, 0.7)[0].sum())(W)
    assert np.all(np.isfinite(g)) and np.count_nonzero(g) > 60  # a true step function would give 0
    # More input weight means more spikes: the surrogate points the right way on average.
    assert float(np.sum(g)) > 0


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)  # intensities in [0, 1], fed as constant currents
    params = init(jax.random.key(0), sizes=(64, 32, 10))
    opt = optax.adam(0.03)

    def logits(params, X):
        return jax.vmap(lambda x: apply(params, x, 0.9, T=5))(X)

    def loss(params):
        return optax.softmax_cross_entropy_with_integer_labels(logits(params, X[:1200]), y[:1200]).mean()

    @jax.jit
    def train(params):
        def step(carry, _):
            params, state = carry
            updates, state = opt.update(jax.grad(loss)(params), state, params)
            return (optax.apply_updates(params, updates), state), None

        return jax.lax.scan(step, (params, opt.init(params)), None, length=100)[0][0]

    trained = train(params)
    return float(np.mean(np.asarray(jax.jit(logits)(trained, X[1200:])).argmax(1) == y[1200:]))


def test_it_classifies_digits(digits):
    assert digits >= 0.90, digits


def test_bad_input_gets_a_clear_error():
    W, inputs = np.ones((3, 5), np.float32), np.ones((7, 3), np.float32)
    with pytest.raises(ValueError, match="inputs"):
        lif_layer(W, np.ones((7, 4), np.float32), 0.9)
    with pytest.raises(TypeError, match="W"):
        lif_layer(np.ones((3, 5), np.int32), inputs, 0.9)
    with pytest.raises(ValueError, match="beta"):
        lif_layer(W, inputs, 1.0)
    with pytest.raises(ValueError, match="threshold"):
        lif_layer(W, inputs, 0.9, threshold=0.0)
    params = {"W": np.ones((3, 5), np.float32), "W_out": np.ones((5, 2), np.float32)}
    with pytest.raises(ValueError, match="x"):
        apply(params, np.ones(4, np.float32), 0.9, T=3)
    with pytest.raises(TypeError, match="T"):
        apply(params, np.ones(3, np.float32), 0.9, T=3.0)
