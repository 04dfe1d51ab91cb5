import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from cookbook.self_supervised.clip import clip_loss, sigmoid_loss

# The losses run one compiled core each and are called as they are (a jax.jit around them compiled a
# second program per shape); results are compared as floats.


def normalise(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def numpy_clip(x, y, temperature):
    """A float64 loop: each image picks its text, each text its image."""
    x, y = normalise(x), normalise(y)
    B = len(x)
    total = 0.0
    for i in range(B):
        row = [np.exp(x[i] @ y[j] / temperature) for j in range(B)]
        column = [np.exp(x[j] @ y[i] / temperature) for j in range(B)]
        total += -np.log(row[i] / sum(row)) - np.log(column[i] / sum(column))
    return total / (2 * B)


def numpy_sigmoid(x, y, t, b):
    x, y = normalise(x), normalise(y)
    B = len(x)
    total = 0.0
    for i in range(B):
        for j in range(B):
            z = 1.0 if i == j else -1.0
            total += np.log(1.0 / (1.0 + np.exp(-z * (t * x[i] @ y[j] + b))))
    return -total / B


def pairs(seed, B=5, D=7, noise=0.5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, D)).astype(np.float32)
    y = (x + noise * rng.standard_normal((B, D))).astype(np.float32)
    return x, y


@pytest.mark.parametrize("temperature", [0.07, 1.0])
def test_clip_against_a_float64_loop(temperature):
    x, y = pairs(0)
    np.testing.assert_allclose(clip_loss(x, y, temperature), numpy_clip(x, y, temperature), rtol=2e-5)


@pytest.mark.parametrize("t, b", [(10.0, -10.0), (1.0, 0.5)])
def test_sigmoid_against_a_float64_loop(t, b):
    x, y = pairs(1)
    np.testing.assert_allclose(sigmoid_loss(x, y, t, b), numpy_sigmoid(x, y, t, b), rtol=2e-5)


@jax.jit
def optax_losses(xn, yn):
    logits = xn @ yn.T / 0.2
    targets = jnp.arange(xn.shape[0])
    clip = 0.5 * (optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
                  + optax.softmax_cross_entropy_with_integer_labels(logits.T, targets).mean())
    sigmoid = optax.sigmoid_binary_cross_entropy(3.0 * xn @ yn.T - 2.0, jnp.eye(xn.shape[0])).sum() / xn.shape[0]
    return clip, sigmoid


def test_against_optax():
    x, y = pairs(2)
    clip, sigmoid = optax_losses(normalise(x).astype(np.float32), normalise(y).astype(np.float32))
    np.testing.assert_allclose(clip_loss(x, y, 0.2), clip, rtol=1e-5)
    np.testing.assert_allclose(sigmoid_loss(x, y, 3.0, -2.0), sigmoid, rtol=1e-5)


def test_symmetry_and_invariances():
    x, y = pairs(3)
    perm = np.array([2, 4, 0, 1, 3])
    rotation, _ = np.linalg.qr(np.random.default_rng(4).standard_normal((7, 7)))
    for loss, args in ((clip_loss, (0.3,)), (sigmoid_loss, (4.0, -1.0))):
        base = float(loss(x, y, *args))
        np.testing.assert_allclose(loss(y, x, *args), base, rtol=1e-5)  # images and texts swapped
        np.testing.assert_allclose(loss(x[perm], y[perm], *args), base, rtol=1e-5)  # pairs reordered
        np.testing.assert_allclose(loss(2.5 * x, 0.3 * y, *args), base, rtol=1e-5)  # lengths ignored
        np.testing.assert_allclose(loss(x @ rotation, y @ rotation, *args), base, rtol=1e-5)
        assert float(loss(x, y[perm], *args)) > base  # mismatched pairs cost more


def test_chance_level_and_limits():
    c = np.tile(np.array([[1.0, -2.0, 0.5, 0.0, 3.0, 1.0, -1.0]], np.float32), (5, 1))
    np.testing.assert_allclose(clip_loss(c, c, 0.05), np.log(5), rtol=1e-6)
    # collapsed, the sigmoid loss is log(1 + e^-(t + b)) + (B - 1) log(1 + e^(t + b))
    np.testing.assert_allclose(sigmoid_loss(c, c, 3.0, -1.0), np.log1p(np.exp(-2.0)) + 4 * np.log1p(np.exp(2.0)),
                               rtol=1e-6)
    # orthogonal pairs: a small temperature drives CLIP's loss to 0; huge logits stay finite
    x = np.eye(5, 7, dtype=np.float32)
    assert float(clip_loss(x, x, 1e-3)) < 1e-6
    far = float(clip_loss(x, x[::-1], 1e-6))
    assert np.isfinite(far) and far > 1e5
    assert float(sigmoid_loss(x, x, 1e4, -5e3)) < 1e-6  # positives at +5000, negatives at -5000
    big = float(sigmoid_loss(x, x[::-1], 1e6, -5e5))
    assert np.isfinite(big) and big > 1e5


def test_gradients():
    x, y = pairs(5, B=3, D=5)
    with jax.enable_x64(True):
        x, y = jnp.asarray(x, jnp.float64), jnp.asarray(y, jnp.float64)
        check_grads(jax.jit(lambda a, b, t: clip_loss(a, b, t)), (x, y, 0.5), order=1, modes=["rev"])
        check_grads(jax.jit(lambda a, b, t, c: sigmoid_loss(a, b, t, c)), (x, y, 2.0, -1.0), order=1, modes=["rev"])
    # a zero embedding: finite loss and gradients
    zero = pairs(5)[0]
    zero[0] = 0.0
    g = jax.jit(jax.grad(lambda a: clip_loss(a, a, 0.5) + sigmoid_loss(a, a, 2.0, -1.0)))(zero)
    assert np.isfinite(np.asarray(g)).all()


def test_bfloat16():
    x, y = pairs(6)
    xb, yb = x.astype(jnp.bfloat16), y.astype(jnp.bfloat16)  # cast in NumPy, as XLA rounds
    np.testing.assert_allclose(clip_loss(xb, yb, 0.2), numpy_clip(x, y, 0.2), rtol=2e-2)
    np.testing.assert_allclose(sigmoid_loss(xb, yb, 10.0, -10.0), numpy_sigmoid(x, y, 10.0, -10.0), rtol=2e-2)


def test_bad_input():
    x, y = pairs(7)
    with pytest.raises(ValueError, match="text_embeddings"):
        clip_loss(x, y[:, :3], 0.1)
    with pytest.raises(ValueError, match="image_embeddings"):
        sigmoid_loss(x[0], y[0], 1.0, 0.0)
    with pytest.raises(TypeError, match="image_embeddings"):
        clip_loss(x.astype(np.int32), y, 0.1)
    with pytest.raises(ValueError, match="temperature"):
        clip_loss(x, y, -0.1)
    with pytest.raises(TypeError, match="bias"):
        sigmoid_loss(x, y, 1.0, np.zeros(3))
