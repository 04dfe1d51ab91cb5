import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.convolution.conv2d import conv2d
from cookbook.convolution.resnet import apply, block, init, init_block, layer_gradient_norms


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
    params, state = init_block(jax.random.key(1), 5, 5)
    x = jax.random.normal(jax.random.key(2), (3, 7, 5, 5))
    y, new_state = jax.jit(block, static_argnames=("training", "stride"))(params, state, x, training=True)

    def bn(v):
        mean = v.mean(axis=(0, 1, 2), keepdims=True)
        return (v - mean) / jnp.sqrt(v.var(axis=(0, 1, 2), keepdims=True) + 1e-5)

    def conv(v, w):
        return jnp.stack([conv2d(im, w) for im in v])

    with jax.numpy_rank_promotion("allow"):
        h = conv(jax.nn.relu(bn(x)), params["conv1"]["w"])
        ref = x + conv(jax.nn.relu(bn(h)), params["conv2"]["w"])
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(new_state["bn1"].mean, 0.1 * x.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)


def test_zero_branch_makes_the_block_the_identity():
    params, state = init_block(jax.random.key(3), 3, 3)
    params["conv2"]["w"] = jnp.zeros_like(params["conv2"]["w"])
    x = jax.random.normal(jax.random.key(4), (2, 5, 7, 3))
    for training in (True, False):
        y, _ = jax.jit(block, static_argnames=("training", "stride"))(params, state, x, training=training)
        np.testing.assert_allclose(y, x, atol=1e-6)


def test_projection_shortcut_when_stride_or_width_changes():
    params, state = init_block(jax.random.key(5), 3, 7, stride=2)
    assert params["proj"]["w"].shape == (1, 1, 3, 7)
    y, _ = jax.eval_shape(lambda p, s, x: block(p, s, x, training=True, stride=2), params, state, jnp.ones((2, 11, 5, 3)))
    assert y.shape == (2, 6, 3, 7)
    same_width, same_state = init_block(jax.random.key(5), 3, 3, stride=2)
    with pytest.raises(ValueError, match="stride 1 does not match"):
        block(same_width, same_state, jnp.ones((2, 11, 5, 3)), training=True, stride=1)


def test_small_resnet_shapes_state_and_eval_mode():
    params, state = init(jax.random.key(6), in_channels=1, channels=(4, 8), num_classes=3)
    x = jax.random.normal(jax.random.key(7), (5, 8, 8, 1))
    f = jax.jit(apply, static_argnames="training")
    logits, new_state = f(params, state, x, training=True)
    assert logits.shape == (5, 3)
    assert not np.allclose(new_state["bn"].mean, state["bn"].mean)
    logits_eval, same_state = f(params, new_state, x, training=False)
    assert logits_eval.shape == (5, 3)
    np.testing.assert_array_equal(same_state["bn"].mean, new_state["bn"].mean)
    # In eval mode each example is processed on its own: the batch does not leak between examples.
    one, _ = f(params, new_state, x[2:3], training=False)
    np.testing.assert_allclose(one[0], logits_eval[2], rtol=1e-4, atol=1e-5)


def test_bad_input_raises():
    params, state = init_block(jax.random.key(8), 3, 3)
    with pytest.raises(ValueError, match=r"x must have shape \(B, H, W, 3\), got shape \(5, 5, 3\)"):
        block(params, state, jnp.ones((5, 5, 3)), training=True)
    with pytest.raises(ValueError, match=r"x must have shape \(B, H, W, 3\), got shape \(2, 5, 5, 4\)"):
        block(params, state, jnp.ones((2, 5, 5, 4)), training=True)
