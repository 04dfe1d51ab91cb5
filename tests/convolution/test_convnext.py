import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

from cookbook.convolution.convnext import LAYER_SCALE_INIT, _patchify, apply, block, init, init_block
from cookbook.optimization.adamw import adamw


def normal(seed, shape):
    """Test inputs drawn with NumPy: jax.random would compile a sampler for every new shape."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def gelu_np(z):
    return 0.5 * z * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))


def block_reference(params, x):
    """The block's equation in float64 NumPy: a loop over channels and kernel taps."""
    p = {n: np.asarray(a, np.float64) for n, a in params.items()}
    x = np.asarray(x, np.float64)
    H, W, C = x.shape
    k = p["dw"].shape[0]
    r = k // 2
    padded = np.pad(x, ((r, r), (r, r), (0, 0)))
    h = np.zeros_like(x)
    for i in range(k):
        for j in range(k):
            h += padded[i : i + H, j : j + W] * p["dw"][i, j]
    mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
    h = (h - mu) / np.sqrt(var + 1e-6) * p["ln_scale"] + p["ln_bias"]
    h = gelu_np(h @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
    return x + p["gamma"] * h


# The blocks of these tests have the page example's weights (6 channels, a 7 x 7 kernel), and all but
# the translation test its 9 x 8 map.
@pytest.fixture(scope="module")
def trained_block():
    # The page's program (the default layer scale), with the layer scale of 0.5 set in NumPy: the
    # weights that init_block(..., layer_scale=0.5) draws, without compiling a program for 0.5.
    p = init_block(jax.random.key(0), channels=6, kernel_size=7)
    return p | {"gamma": np.full(6, 0.5, np.float32), "b1": np.full(24, 0.1, np.float32),
                "ln_bias": np.full(6, -0.2, np.float32)}


def test_block_matches_the_equation_in_float64(trained_block):
    x = normal(1, (9, 8, 6))
    np.testing.assert_allclose(np.asarray(block(trained_block, x)), block_reference(trained_block, x), rtol=1e-4, atol=1e-5)


def test_layer_scale_makes_a_new_block_the_identity():
    # The shapes of the page's example, so that no new computation is compiled; compared in NumPy.
    x = normal(2, (9, 8, 6))
    p = init_block(jax.random.key(3), channels=6)
    assert np.max(np.abs(np.asarray(block(p, x)) - x)) < 1e-5
    assert np.max(np.abs(np.asarray(block(p | {"gamma": np.ones(6, np.float32)}, x)) - x)) > 0.1


def test_block_is_translation_equivariant_away_from_the_border(trained_block):
    x = np.zeros((21, 21, 6), np.float32)  # built and shifted in NumPy: no eager scatter or roll compiled
    x[3:9, 4:10] = normal(4, (6, 6, 6))
    shifted = np.roll(x, (2, 3), axis=(0, 1))
    np.testing.assert_allclose(np.asarray(block(trained_block, shifted)),
                               np.roll(np.asarray(block(trained_block, x)), (2, 3), axis=(0, 1)), atol=1e-5)


def test_a_large_depthwise_kernel_has_fewer_weights_than_a_small_dense_one_above_five_channels():
    for C in range(1, 30):
        assert (7 * 7 * C < 3 * 3 * C * C) == (C > 5)


@jax.jit  # both sides in one compiled program, not a dozen eager operations
def _patchify_and_strided_conv(x, w, b):
    ref = jax.lax.conv_general_dilated(x[None], w, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]
    return _patchify(x, w, b, 2), ref + b[None, None, :]


def test_patchify_stem_is_a_strided_convolution():
    x = normal(5, (8, 6, 3))
    w = normal(6, (2, 2, 3, 5))
    got, ref = _patchify_and_strided_conv(x, w, normal(7, 5))
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def small_convnext():
    """The network of the page's example (and of its replay), shared by the tests that need one."""
    return init(jax.random.key(0), in_channels=1, num_classes=10, widths=(16, 32), depths=(1, 1), patch=2)


def test_a_small_convnext_reads_digits(small_convnext):
    # Widths 16 and 32, one block each, 2 x 2 patches: 100 AdamW steps on mini-batches of 32, in one
    # compiled scan (three seeds of this run reached 0.92 to 0.94 held-out accuracy).
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(X))
    X, y = (X[order].reshape(-1, 8, 8, 1) / 16.0).astype(np.float32), y[order].astype(np.int32)
    opt = adamw(1e-2, weight_decay=0.05)
    logits = jax.vmap(lambda p, x: apply(p, x, patch=2), in_axes=(None, 0))

    def loss(p, xb, yb):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits(p, xb)), yb[:, None], axis=1))

    # The data and the batches are arguments of the compiled run, not constants folded into it, and
    # the batches are drawn outside it (the same draws): a sampler inside adds to its compile time.
    @jax.jit
    def run(params, X, y, batches):
        def step(carry, idx):
            p, s = carry
            u, s = opt.update(jax.grad(loss)(p, X[idx], y[idx]), s, p)
            return (jax.tree.map(jnp.add, p, u), s), None

        (p, _), _ = jax.lax.scan(step, (params, opt.init(params)), batches)
        return jnp.argmax(logits(p, X[1200:]), axis=-1)

    batches = jax.random.randint(jax.random.key(1), (100, 32), 0, 1200)
    accuracy = np.mean(np.asarray(run(small_convnext, X, y, batches)) == y[1200:])
    assert accuracy > 0.9, accuracy


def test_bad_input_raises(trained_block, small_convnext):
    with pytest.raises(ValueError, match=r"kernel_size must be odd"):
        init_block(jax.random.key(0), channels=4, kernel_size=4)
    # The layer scale is a static number of init_block's compiled core: a 0-d array runs as its
    # Python value (the page's program, no new one), a traced one is refused by name.
    scaled = init_block(jax.random.key(0), channels=6, kernel_size=7, layer_scale=np.array(LAYER_SCALE_INIT))
    default = init_block(jax.random.key(0), channels=6, kernel_size=7, layer_scale=LAYER_SCALE_INIT)
    for name in default:
        np.testing.assert_array_equal(np.asarray(scaled[name]), np.asarray(default[name]))
    with pytest.raises(TypeError, match=r"layer_scale must be a concrete number"):
        jax.jit(lambda s: init_block(jax.random.key(0), channels=6, layer_scale=s))(0.5)
    with pytest.raises(ValueError, match=r'params\["dw"\] must have shape \(7, 7, 5\) \(C from x\)'):
        block(trained_block, np.ones((4, 4, 5), np.float32))
    with pytest.raises(TypeError, match=r"x must be a floating-point array"):
        block(trained_block, np.ones((4, 4, 6), np.int32))
    with pytest.raises(ValueError, match=r"x must have a height and width divisible by 2, got shape \(7, 8, 1\)"):
        apply(small_convnext, np.ones((7, 8, 1), np.float32), patch=2)
    with pytest.raises(ValueError, match=r"widths and depths must be tuples of one length"):
        init(jax.random.key(0), in_channels=1, num_classes=3, widths=(4, 8), depths=(1,))
