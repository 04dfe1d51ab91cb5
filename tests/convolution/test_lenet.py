import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from cookbook.convolution.lenet import accuracy, adam_step, apply, init, loss, train

# One program for the batched forward pass of four images, shared by the tests that need it.
_batched_apply = jax.jit(jax.vmap(apply, in_axes=(None, 0)))


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    X_tr, X_te, y_tr, y_te = train_test_split(
        d.images[..., None] / 16.0, d.target, test_size=0.2, random_state=0, stratify=d.target)
    # Placed on the device from NumPy (nothing compiles); the small tests slice them in NumPy.
    return tuple(jax.device_put(a) for a in (X_tr.astype(np.float32), y_tr.astype(np.int32),
                                             X_te.astype(np.float32), y_te.astype(np.int32)))


@pytest.fixture(scope="module")
def four(digits):
    """Four training images and their labels, as NumPy: one shape for every small test."""
    return np.asarray(digits[0])[:4], np.asarray(digits[1])[:4]


@pytest.fixture(scope="module")
def trained(digits):
    X_tr, y_tr, _, _ = digits
    k_init, k_train = jax.random.split(jax.random.key(0))
    return train(k_train, init(k_init), X_tr, y_tr, epochs=10, batch_size=64)  # the page's run: one program


def test_reaches_97_percent_on_held_out_digits(digits, trained):
    _, _, X_te, y_te = digits
    params, losses = trained
    losses = np.asarray(losses)
    assert losses.shape == (10,)
    assert losses[-1] < 0.1 * losses[0]
    acc = float(accuracy(params, X_te, y_te))  # the page's call: the program its example compiled
    assert acc >= 0.97, acc
    # The page: "99.4% with the test's split and seed" (360 held-out digits; allow two either way).
    assert abs(acc - 0.994) < 0.006, acc
    # ... and "about 1,400 training images", "about 31,000 parameters".
    assert digits[0].shape[0] == 1437
    assert sum(p.size for p in jax.tree.leaves(params)) == 31294


def test_shapes_and_parameter_count():
    params = init(jax.random.key(1))
    assert jax.eval_shape(apply, params, jax.ShapeDtypeStruct((8, 8, 1), jnp.float32)).shape == (10,)
    counts = {k: sum(p.size for p in jax.tree.leaves(v)) for k, v in params.items()}
    assert counts == {"conv1": 9 * 16 + 16, "conv2": 9 * 16 * 32 + 32, "fc1": 128 * 120 + 120,
                      "fc2": 120 * 84 + 84, "out": 84 * 10 + 10}
    # Its shapes only: nothing compiled for a second image size.
    assert jax.eval_shape(lambda k: init(k, image_size=16), jax.random.key(1))["fc1"]["w"].shape == (4 * 4 * 32, 120)


def test_loss_matches_optax_cross_entropy(four):
    X, y = four  # four images in every small test: one shape to compile
    params = init(jax.random.key(2))
    ref = jax.jit(lambda p, X, y: optax.softmax_cross_entropy_with_integer_labels(
        jax.vmap(apply, in_axes=(None, 0))(p, X), y).mean())(params, X, y)  # one program, not one per operation
    np.testing.assert_allclose(jax.jit(loss)(params, X, y), ref, rtol=1e-5)
    np.testing.assert_allclose(loss(params, X, y), ref, rtol=1e-5)  # eagerly: its compiled core


def test_adam_step_matches_optax():
    params = {"w": np.array([1.0, -2.0, 3.0], np.float32), "b": np.float32(0.5)}
    grads_seq = [{"w": np.array([0.1, -0.3, 0.2], np.float32) * k, "b": np.float32(0.05 * k)} for k in (1, -2, 3)]

    @jax.jit  # three steps of both, in one program rather than dozens of eager ones
    def both(params, grads_seq):
        opt = optax.adam(1e-2)
        ref_state, ref = opt.init(params), params
        zeros = jax.tree.map(jnp.zeros_like, params)
        state, mine = (zeros, zeros, jnp.zeros((), jnp.int32)), params
        for g in grads_seq:
            updates, ref_state = opt.update(g, ref_state, ref)
            ref = optax.apply_updates(ref, updates)
            mine, state = adam_step(mine, g, state, learning_rate=1e-2)
        return mine, ref

    mine, ref = both(params, grads_seq)
    for k in params:
        np.testing.assert_allclose(mine[k], ref[k], rtol=1e-5, atol=1e-6)
    assert not np.allclose(mine["w"], params["w"])  # the steps moved the weights


def test_prediction_is_batched_by_vmap_and_jit(four):
    params = init(jax.random.key(3))
    X = four[0]
    batched = np.asarray(_batched_apply(params, X))
    np.testing.assert_allclose(jax.jit(apply)(params, X[3]), batched[3], rtol=1e-5, atol=1e-5)


def test_bad_input_raises():
    params = init(jax.random.key(4))
    with pytest.raises(ValueError, match=r"X must have shape \(N, H, W, C\)"):
        loss(params, np.ones((5, 8, 8), np.float32), np.zeros(5, np.int32))
    with pytest.raises(ValueError, match="image_size must be divisible by 4"):
        init(jax.random.key(0), image_size=10)
    with pytest.raises(TypeError, match=r"image_size must be an int of at least 1, got"):
        init(jax.random.key(0), image_size=8.0)
    with pytest.raises(ValueError, match=r"channels must be a tuple of two sizes, got \[16, 32\]"):
        init(jax.random.key(0), channels=[16, 32])
    with pytest.raises(TypeError, match=r"hidden\[\.\.\.\] must be an int of at least 1, got"):
        init(jax.random.key(0), hidden=(120, 84.0))
    with pytest.raises(ValueError, match=r"x has C_in = 3"):
        apply(params, np.ones((8, 8, 3), np.float32))


def test_bad_arrays_labels_and_parameters_raise_clear_errors():
    params = init(jax.random.key(5))
    # NumPy inputs, made and changed on the host: no eager jnp operation to compile for each.
    X, y = np.ones((4, 8, 8, 1), np.float32), np.array([0, 1, 2, 9], np.int32)
    with pytest.raises(TypeError, match=r"X must be a floating-point array"):
        loss(params, X.astype(np.int32), y)
    with pytest.raises(TypeError, match=r"y must be an integer array"):
        loss(params, X, y.astype(np.float32))
    with pytest.raises(ValueError, match=r"y must lie in \[0, 10\), got values from 0 to 10"):
        loss(params, X, np.array([0, 1, 2, 10], np.int32))
    with pytest.raises(ValueError, match=r"X must have C = 1 channels"):
        accuracy(params, np.ones((4, 8, 8, 2), np.float32), y)
    with pytest.raises(ValueError, match=r"params\['conv1'\]\['b'\] must have shape \(16,\)"):
        apply({**params, "conv1": {**params["conv1"], "b": np.zeros(1, np.float32)}}, X[0])
    nan_bias = np.asarray(params["conv1"]["b"]).copy()
    nan_bias[0] = np.nan
    with pytest.raises(ValueError, match=r"params\['conv1'\]\['b'\] holds NaN"):
        accuracy({**params, "conv1": {**params["conv1"], "b": nan_bias}}, X, y)
    with pytest.raises(ValueError, match=r"params\['conv1'\]\['b'\] holds NaN"):
        loss({**params, "conv1": {**params["conv1"], "b": nan_bias}}, X, y)
    with pytest.raises(ValueError, match=r"X holds NaN"):
        accuracy(params, np.where(np.arange(4)[:, None, None, None] == 2, np.nan, X).astype(np.float32), y)
    assert float(loss(params, X.tolist(), y.tolist())) == pytest.approx(float(loss(params, X, y)))
