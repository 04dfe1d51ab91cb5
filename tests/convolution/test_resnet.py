import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.convolution.conv2d import conv2d
from cookbook.convolution.resnet import apply, block, init, init_block, layer_gradient_norms

# block and apply run compiled cores: the block's tests share one input shape (2, 5, 7, 3), the
# network's the page's sizes (its programs), and inputs come from NumPy (jax.random compiles a
# sampler for each new shape).


def _normal(*shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def grad_norms():
    key = jax.random.key(0)
    return (np.asarray(layer_gradient_norms(key, depth=30, channels=8, residual=False)),
            np.asarray(layer_gradient_norms(key, depth=30, channels=8, residual=True)))


def test_residual_gradients_are_far_more_even_across_depth_than_plain(grad_norms):
    plain, residual = grad_norms
    assert plain.shape == residual.shape == (30,)
    assert np.all(np.isfinite(plain)) and np.all(residual > 0)
    spread_plain, spread_res = plain.max() / plain.min(), residual.max() / residual.min()
    assert spread_plain > 50, spread_plain  # about 108: geometric growth towards the input
    assert spread_res < 10, spread_res  # about 5
    assert spread_plain > 10 * spread_res
    # The plain stack's norms grow geometrically: a straight line on a log scale.
    slope = np.polyfit(np.arange(30), np.log(plain), 1)[0]
    assert slope < -0.1


def test_block_matches_a_hand_written_pre_activation_block():
    params, state = init_block(jax.random.key(1), 3, 3)
    x = _normal(2, 5, 7, 3, seed=2)
    y, new_state = block(params, state, x, training=True)

    @jax.jit  # the reference in one program, not one per eager operation
    def reference(params, x):
        def bn(v):
            mean = v.mean(axis=(0, 1, 2), keepdims=True)
            return (v - mean) / jnp.sqrt(v.var(axis=(0, 1, 2), keepdims=True) + 1e-5)

        def conv(v, w):
            return jnp.stack([conv2d(im, w) for im in v])

        with jax.numpy_rank_promotion("allow"):
            h = conv(jax.nn.relu(bn(x)), params["conv1"]["w"])
            return x + conv(jax.nn.relu(bn(h)), params["conv2"]["w"])

    np.testing.assert_allclose(y, reference(params, x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(new_state["bn1"].mean, 0.1 * x.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)


def test_zero_branch_makes_the_block_the_identity():
    params, state = init_block(jax.random.key(3), 3, 3)
    params["conv2"]["w"] = np.zeros(params["conv2"]["w"].shape, np.float32)
    x = _normal(2, 5, 7, 3, seed=4)
    for training in (True, False):
        y, _ = block(params, state, x, training=training)
        np.testing.assert_allclose(y, x, atol=1e-6)


def test_projection_shortcut_when_stride_or_width_changes():
    # Shapes only: nothing drawn, nothing compiled.
    params, state = jax.eval_shape(lambda k: init_block(k, 3, 7, stride=2), jax.random.key(5))
    assert params["proj"]["w"].shape == (1, 1, 3, 7)
    y, _ = jax.eval_shape(lambda p, s, x: block(p, s, x, training=True, stride=2), params, state,
                          jax.ShapeDtypeStruct((2, 11, 5, 3), jnp.float32))
    assert y.shape == (2, 6, 3, 7)
    same_width, same_state = jax.eval_shape(lambda k: init_block(k, 3, 3, stride=2), jax.random.key(5))
    assert "proj" in same_width
    with pytest.raises(ValueError, match="stride 1 does not match"):
        block(same_width, same_state, np.ones((2, 11, 5, 3), np.float32), training=True, stride=1)


def test_small_resnet_shapes_state_and_eval_mode():
    params, state = init(jax.random.key(6), in_channels=1, channels=(8, 16), num_classes=10)  # the page's
    x = _normal(2, 8, 8, 1, seed=7)
    logits, new_state = apply(params, state, x, training=True)
    assert logits.shape == (2, 10)
    assert not np.allclose(new_state["bn"].mean, state["bn"].mean)
    logits_eval, same_state = apply(params, new_state, x, training=False)
    assert logits_eval.shape == (2, 10)
    np.testing.assert_array_equal(same_state["bn"].mean, new_state["bn"].mean)
    # In eval mode each example is processed on its own: the batch does not leak between examples.
    # Another first image leaves the second image's logits as they were (the batch's shape: no
    # program compiled for a batch of one).
    other = x.copy()
    other[0] = _normal(8, 8, 1, seed=8)
    changed, _ = apply(params, new_state, other, training=False)
    np.testing.assert_allclose(changed[1], logits_eval[1], rtol=1e-4, atol=1e-5)
    assert not np.allclose(changed[0], logits_eval[0], rtol=1e-4, atol=1e-5)


def test_bad_input_raises():
    params, state = init_block(jax.random.key(8), 3, 3)
    with pytest.raises(ValueError, match=r"x must have shape \(B, H, W, 3\), got shape \(5, 5, 3\)"):
        block(params, state, np.ones((5, 5, 3), np.float32), training=True)
    with pytest.raises(ValueError, match=r"x must have shape \(B, H, W, 3\), got shape \(2, 5, 5, 4\)"):
        block(params, state, np.ones((2, 5, 5, 4), np.float32), training=True)
