import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from cookbook.self_supervised.jepa import EPS, ema_update, jepa_loss, mask_image, predict, sample_masks
from cookbook.self_supervised.simclr import encode
from ssl_helpers import knn_of

loss_jit = jax.jit(jepa_loss)
predict_jit = jax.jit(predict)


def masks_of(keys, grid, M, size, context):
    return jax.jit(jax.vmap(lambda k: sample_masks(k, grid, num_targets=M, target_size=size, context_size=context)))(keys)


def numpy_jepa(predictions, targets):
    """A float64 loop over the blocks and the features, from the definition."""
    p, t = np.asarray(predictions, np.float64), np.asarray(targets, np.float64)
    M, D = p.shape
    total = 0.0
    for i in range(M):
        mean = sum(t[i]) / D
        variance = sum((t[i, d] - mean) ** 2 for d in range(D)) / D
        for d in range(D):
            total += (p[i, d] - (t[i, d] - mean) / np.sqrt(variance + EPS)) ** 2
    return total / M


def test_block_masks():
    """Target blocks are h x w rectangles inside the grid; the context avoids every target patch,
    lies inside a block of context_size, and is never empty; every place is drawn."""
    R, C, h, w = 5, 7, 2, 3
    target_masks, context_masks = masks_of(jax.random.split(jax.random.key(0), 200), (R, C), 3, (h, w), (4, 6))
    target_masks, context_masks = np.asarray(target_masks), np.asarray(context_masks)
    assert target_masks.shape == (200, 3, R * C) and context_masks.shape == (200, R * C)

    def spans(masks):  # (..., R, C) -> first and last row and column that hold a patch
        rows, cols = masks.any(-1), masks.any(-2)
        return (rows.argmax(-1), R - 1 - rows[..., ::-1].argmax(-1), cols.argmax(-1), C - 1 - cols[..., ::-1].argmax(-1))

    blocks = target_masks.reshape(200, 3, R, C)
    top, bottom, left, right = spans(blocks)
    # a filled h x w rectangle: h * w patches whose rows span h and columns span w
    assert np.all(blocks.sum((-1, -2)) == h * w) and np.all(bottom - top == h - 1) and np.all(right - left == w - 1)
    assert set(zip(top.ravel(), left.ravel())) == {(r, c) for r in range(R - h + 1) for c in range(C - w + 1)}
    assert not np.any(context_masks & target_masks.any(1))  # the context never sees a target patch
    assert np.all(context_masks.sum(1) >= 1) and np.all(context_masks.sum(1) <= 4 * 6)
    top, bottom, left, right = spans(context_masks.reshape(200, R, C))
    assert np.all(bottom - top < 4) and np.all(right - left < 6)  # inside one block of context_size


def test_mask_image_against_numpy():
    rng = np.random.default_rng(1)
    image = rng.standard_normal((6, 9)).astype(np.float32)
    mask = rng.random(6) < 0.5  # a 2 x 3 grid of 3 x 3 patches
    expected = image.copy()
    for p in range(6):
        if not mask[p]:
            r, c = divmod(p, 3)
            expected[3 * r:3 * r + 3, 3 * c:3 * c + 3] = 0.0
    np.testing.assert_array_equal(jax.jit(mask_image, static_argnums=2)(image, mask, 3), expected)


def test_loss_against_a_float64_loop():
    rng = np.random.default_rng(2)
    predictions, targets = rng.standard_normal((2, 3, 5)).astype(np.float32)
    np.testing.assert_allclose(loss_jit(predictions, 4.0 * targets + 1.0), numpy_jepa(predictions, 4.0 * targets + 1.0),
                               rtol=1e-5)
    # the targets' scale and offset do not matter: they are normalised
    np.testing.assert_allclose(loss_jit(predictions, 4.0 * targets + 1.0), loss_jit(predictions, targets), rtol=1e-4)


def test_predict_against_numpy():
    rng = np.random.default_rng(3)
    predictor = [{"W": rng.standard_normal((7 + 16, 11)).astype(np.float32), "b": rng.standard_normal(11).astype(np.float32)},
                 {"W": rng.standard_normal((11, 7)).astype(np.float32), "b": rng.standard_normal(7).astype(np.float32)}]
    context = rng.standard_normal(7).astype(np.float32)
    target_masks = rng.random((3, 16)) < 0.3
    inputs = np.concatenate([np.tile(context, (3, 1)), target_masks], axis=1)
    expected = np.maximum(inputs @ predictor[0]["W"] + predictor[0]["b"], 0) @ predictor[1]["W"] + predictor[1]["b"]
    np.testing.assert_allclose(predict_jit(predictor, context, target_masks), expected, rtol=1e-4, atol=1e-4)


def test_no_gradient_reaches_the_targets():
    rng = np.random.default_rng(4)
    predictions, targets = rng.standard_normal((2, 3, 5)).astype(np.float32)
    g_predictions, g_targets = jax.jit(jax.grad(jepa_loss, argnums=(0, 1)))(predictions, targets)
    np.testing.assert_array_equal(g_targets, 0.0)  # exactly zero: a stop-gradient
    assert np.abs(g_predictions).max() > 0
    with jax.enable_x64(True):
        t64 = jnp.asarray(targets, jnp.float64)
        check_grads(jax.jit(lambda p: jepa_loss(p, t64)), (jnp.asarray(predictions, jnp.float64),), order=1,
                    modes=["rev"])


def test_edge_cases():
    rng = np.random.default_rng(5)
    predictions, targets = rng.standard_normal((2, 3, 5)).astype(np.float32)
    # a constant target normalises to zero, not NaN
    constant = np.ones_like(targets)
    np.testing.assert_allclose(loss_jit(predictions, constant), (predictions ** 2).sum(1).mean(), rtol=1e-5)
    got = loss_jit(jnp.asarray(predictions, jnp.bfloat16), jnp.asarray(targets, jnp.bfloat16))
    assert got.dtype == jnp.float32  # computed in float32, within the rounding of the bfloat16 inputs
    np.testing.assert_allclose(got, numpy_jepa(predictions, targets), rtol=3e-2)
    # one block on a one-patch grid: the context would be empty, so it is refused
    with pytest.raises(ValueError, match="context_size"):
        sample_masks(jax.random.key(0), (1, 1), num_targets=1, target_size=(1, 1), context_size=(1, 1))


def test_bad_input():
    rng = np.random.default_rng(6)
    predictions, targets = rng.standard_normal((2, 3, 5)).astype(np.float32)
    with pytest.raises(ValueError, match="targets"):
        jepa_loss(predictions, targets[:2])
    with pytest.raises(TypeError, match="predictions"):
        jepa_loss(predictions.astype(np.int32), targets)
    with pytest.raises(TypeError, match="num_targets"):
        sample_masks(jax.random.key(0), (4, 4), num_targets=2.0)
    with pytest.raises(ValueError, match="target_size"):
        sample_masks(jax.random.key(0), (4, 4), target_size=(5, 1))
    with pytest.raises(TypeError, match="grid"):
        sample_masks(jax.random.key(0), 16)
    with pytest.raises(TypeError, match="mask"):
        mask_image(np.ones((8, 8), np.float32), np.ones(16), 2)  # a float mask
    with pytest.raises(ValueError, match="mask"):
        mask_image(np.ones((8, 8), np.float32), np.ones(4, bool), 2)
    with pytest.raises(ValueError, match="predictor"):
        predict([{"W": np.ones((5, 3), np.float32), "b": np.zeros(3, np.float32)}], np.ones(3, np.float32),
                np.ones((2, 16), bool))


# ---- It learns: JEPA on scikit-learn's digits, no labels and no augmentations ---------------------

@pytest.fixture(scope="module")
def digits_runs():
    """The SimCLR page's 64-128-8 MLP as encoder and a 24-64-8 predictor, trained by JEPA (a 4 x 4
    grid of 2 x 2 patches, two 2 x 2 target blocks, the rest of the image as context, decay 0.99),
    and the same run with the context encoder as its own target and no stop-gradient. One compiled
    lax.scan loop serves both; weights and batches drawn with NumPy, embeddings read with NumPy."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32).reshape(-1, 8, 8)
    B, steps = 64, 400
    rng = np.random.default_rng(0)
    batches = np.stack([rng.permutation(1000)[:B] for _ in range(steps)])  # (steps, B)

    def he(sizes):
        return [{"W": (rng.standard_normal((n, m)) * np.sqrt(2.0 / n)).astype(np.float32), "b": np.zeros(m, np.float32)}
                for n, m in zip(sizes[:-1], sizes[1:])]

    params0 = {"encoder": he((64, 128, 8)), "predictor": he((8 + 16, 64, 8))}
    opt = optax.multi_transform({"encoder": optax.adam(3e-3), "predictor": optax.adam(1e-2)},
                                {"encoder": "encoder", "predictor": "predictor"})

    def one_image(params, target, x, key, use_target):
        target_masks, context_mask = sample_masks(key, (4, 4), num_targets=2, target_size=(2, 2), context_size=(4, 4))
        context = encode(params["encoder"], mask_image(x, context_mask, 2))  # (8,)
        predictions = predict(params["predictor"], context, target_masks)  # (2, 8)
        blocks = jax.vmap(lambda m: mask_image(x, m, 2))(target_masks)  # (2, 8, 8)
        targets = jax.vmap(encode, in_axes=(None, 0))(target, blocks)
        # the ablation: the context encoder as its own target, the gradient flowing into the targets
        own = jax.vmap(encode, in_axes=(None, 0))(params["encoder"], blocks)
        centred = own - own.mean(1, keepdims=True)
        own = centred / jnp.sqrt(jnp.mean(centred ** 2, axis=1, keepdims=True) + EPS)
        ablation = jnp.mean(jnp.sum((predictions - own) ** 2, axis=1))
        return use_target * jepa_loss(predictions, targets) + (1.0 - use_target) * ablation

    @jax.jit
    def train(params, key, use_target):
        images = jnp.asarray(X)

        def step(carry, xs):
            params, target, state = carry
            batch, key = xs
            loss = lambda p: jax.vmap(one_image, in_axes=(None, None, 0, 0, None))(
                p, target, images[batch], jax.random.split(key, B), use_target).mean()
            value, grads = jax.value_and_grad(loss)(params)
            updates, state = opt.update(grads, state, params)
            params = optax.apply_updates(params, updates)
            return (params, ema_update(target, params["encoder"], 0.99), state), value
        (params, _, _), losses = jax.lax.scan(step, (params, params["encoder"], opt.init(params)),
                                              (batches, jax.random.split(key, steps)))
        return params, losses

    def evaluate(encoder):
        accuracy, z = knn_of(encoder, X, y)
        u = z / np.linalg.norm(z, axis=1, keepdims=True)
        return {"knn": accuracy, "spread": float(u.std(axis=0).mean())}

    runs = {"untrained": evaluate(params0["encoder"])}
    for name, use_target in [("jepa", 1.0), ("own target", 0.0)]:
        params, losses = train(params0, jax.random.key(1), use_target)
        runs[name] = evaluate(params["encoder"]) | {"losses": np.asarray(losses)}
    return runs


def test_jepa_learns_digits_without_labels(digits_runs):
    jepa, untrained = digits_runs["jepa"], digits_runs["untrained"]
    assert jepa["losses"][-20:].mean() < jepa["losses"][:20].mean() - 1.0
    # 0.79 against 0.69 here; 0.81 with other masks
    assert jepa["knn"] >= untrained["knn"] + 0.07, (jepa["knn"], untrained["knn"])
    assert jepa["spread"] > 0.2, jepa  # about 0.31


def test_without_the_target_encoder_it_collapses(digits_runs):
    # the collapse detector: the spread over the images of the unit-length embeddings
    run = digits_runs["own target"]
    assert run["spread"] < 0.05, run  # about 0.015
    assert run["knn"] < digits_runs["untrained"]["knn"], run  # worse than not training at all
