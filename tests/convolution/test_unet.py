import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.convolution.pooling import max_pool
from cookbook.convolution.transposed_conv import conv_transpose
from cookbook.convolution.unet import _pool2, _up2, apply, init, iou, loss, make_shapes, predict, train


def _normal(*shape, seed):
    """Test inputs from NumPy: jax.random.normal would compile a sampler for each new shape."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def trained():
    x, t = make_shapes(jax.random.key(0), 512)
    params, losses = train(jax.random.key(1), init(jax.random.key(2)), x, t, steps=100)
    return params, losses


@pytest.fixture(scope="module")
def held_out():
    # As many images as the training set, so that make_shapes is not compiled for another shape.
    return make_shapes(jax.random.key(3), 512)


def test_segments_held_out_shapes_with_iou_above_0_8(trained, held_out):
    params, losses = trained
    x, t = held_out
    assert float(losses[-10:].mean()) < 0.2 * float(losses[0])
    pred = jax.jit(jax.vmap(predict, in_axes=(None, 0)))(params, x)
    score = float(iou(pred, t))
    assert score >= 0.8, score  # 0.884 with these seeds
    # Thresholding each pixel on its own does much worse: the network uses the context.
    baseline = max(float(iou((np.asarray(x)[..., 0] > th).astype(np.float32), t)) for th in (0.3, 0.5, 0.7))
    assert baseline < score - 0.1, (baseline, score)
    # The page: "an IoU of about 0.89 ... the best threshold on the noisy pixels ... about 0.54".
    assert abs(score - 0.89) < 0.02 and abs(baseline - 0.54) < 0.03, (score, baseline)


def test_synthetic_data_is_well_formed():
    # Four images, as in the page's example and the other small tests: one compilation for them all.
    x, t = make_shapes(jax.random.key(4), 4, size=16)
    assert x.shape == (4, 16, 16, 1) and t.shape == (4, 16, 16)
    assert set(np.unique(np.asarray(t))) <= {0.0, 1.0}
    frac = np.asarray(t).mean(axis=(1, 2))
    assert np.all(frac > 0.03) and np.all(frac < 0.8)
    x2, t2 = make_shapes(jax.random.key(4), 4, size=16)
    np.testing.assert_array_equal(x, x2)  # deterministic given the key


def test_upsampling_and_pooling_helpers_equal_the_recipes():
    y, w, z = _normal(3, 5, 4, seed=5), _normal(2, 2, 7, 4, seed=6), _normal(6, 10, 3, seed=7)
    up, up_ref, pool, pool_ref = jax.jit(lambda y, w, z: (  # one program, not one per eager operation
        _up2(y, w), conv_transpose(y, w, stride=2), _pool2(z), max_pool(z, 2)))(y, w, z)
    np.testing.assert_allclose(up, up_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(pool, pool_ref)


def test_skip_connections_carry_full_resolution_detail():
    # Zeroing the upsampled path must still leave the output depending on the input through e1.
    params = init(jax.random.key(8))
    x = _normal(16, 12, 1, seed=9)
    g = jax.jit(jax.grad(lambda x: apply(params, x)[5, 7]))(x)
    assert g.shape == x.shape and float(jnp.abs(g[5, 7]).sum()) > 0


def test_iou_and_loss_by_hand():
    a = jnp.array([[1.0, 1.0], [0.0, 0.0]])
    b = jnp.array([[1.0, 0.0], [1.0, 0.0]])
    assert float(iou(a, b)) == pytest.approx(1 / 3)
    assert float(iou(jnp.zeros(4), jnp.zeros(4))) == 0.0
    params = init(jax.random.key(10))
    params["head"]["w"] = np.zeros(params["head"]["w"].shape, np.float32)  # logits all 0: loss = log 2
    x, t = make_shapes(jax.random.key(11), 4)
    np.testing.assert_allclose(jax.jit(loss)(params, x, t), np.log(2.0), rtol=1e-5)  # the jit check's program


def test_runs_on_larger_images_than_trained_on(trained, held_out):
    params, _ = trained
    # Four held-out 16 by 16 images tiled into one of 32 by 32 (make_shapes would compile again).
    x = np.asarray(held_out[0][:4]).reshape(2, 2, 16, 16, 1).transpose(0, 2, 1, 3, 4).reshape(32, 32, 1)
    assert jax.jit(predict)(params, x).shape == (32, 32)


def test_bad_input_raises():
    params = init(jax.random.key(13))
    with pytest.raises(ValueError, match=r"divisible by 4, got shape \(10, 16, 1\)"):
        apply(params, jnp.ones((10, 16, 1)))
    with pytest.raises(ValueError, match=r"X must be \(N, H, W, C\) and masks \(N, H, W\)"):
        loss(params, jnp.ones((2, 16, 16, 1)), jnp.ones((2, 16, 15)))
    with pytest.raises(ValueError, match="same shape"):
        iou(jnp.ones((3, 4)), jnp.ones((4, 3)))
    with pytest.raises(ValueError, match=r"widths must be a tuple of three channel counts, got \[8, 16, 32\]"):
        init(jax.random.key(13), widths=[8, 16, 32])
    with pytest.raises(TypeError, match=r"widths\[\.\.\.\] must be an int of at least 1, got"):
        init(jax.random.key(13), widths=(8, 16.0, 32))
    with pytest.raises(TypeError, match=r"in_channels must be an int of at least 1, got"):
        init(jax.random.key(13), in_channels=1.0)


def test_bad_arrays_and_parameters_raise_clear_errors():
    params = init(jax.random.key(14))
    X, masks = make_shapes(jax.random.key(15), 4)
    with pytest.raises(TypeError, match=r"X must be a floating-point array"):
        loss(params, np.asarray(X).astype(np.int32), masks)
    with pytest.raises(ValueError, match=r"X must have C = 1 channels"):
        loss(params, np.concatenate([X, X], axis=-1), masks)
    with pytest.raises(ValueError, match=r"params\['dec1'\]\['b'\] must have shape \(8,\)"):
        apply({**params, "dec1": {**params["dec1"], "b": jnp.zeros(1)}}, X[0])
    with pytest.raises(TypeError, match=r"n must be an int"):
        make_shapes(jax.random.key(16), 2.0)
    assert float(iou(masks.tolist(), masks.tolist())) == 1.0
    assert float(loss(params, np.asarray(X).tolist(), masks.tolist())) == pytest.approx(float(loss(params, X, masks)))
