import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.diffusion.ddpm import alpha_bar_schedule, linear_beta_schedule
from cookbook.diffusion.diffusion_transformer import (
    _block,
    _loss,
    block_init,
    digits,
    dit,
    dit_block,
    init,
    loss,
    train,
    unpatchify,
)
from cookbook.transformers.vision_transformer import patchify

D, H, N = 12, 3, 7  # width, heads, tokens: distinct sizes (those of the page's example)
ALPHA_BAR = alpha_bar_schedule(linear_beta_schedule(100, 1e-3, 0.2))
SMALL = dict(image_size=4, patch_size=2, channels=1, d_model=D, num_heads=H, num_layers=2, num_classes=3)


def _rng(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _random_block(seed):
    """A block whose adaLN regression is not zero, so that every branch is open (NumPy draws: no
    compilation for them)."""
    block = block_init(jax.random.key(seed), D, H)
    rng = np.random.default_rng(seed)
    block["W_ada"] = (0.3 * rng.standard_normal((D, 6 * D))).astype(np.float32)
    block["b_ada"] = (0.3 * rng.standard_normal(6 * D)).astype(np.float32)
    return block


def _np_block(p, x, c):
    """The DiT block in NumPy float64, written out from the equation."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    x, c = np.asarray(x, np.float64), np.asarray(c, np.float64)
    silu = lambda z: z / (1.0 + np.exp(-z))
    gelu = lambda z: 0.5 * z * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (z + 0.044715 * z ** 3)))

    def ln(z, scale, shift):
        mu, var = z.mean(-1, keepdims=True), z.var(-1, keepdims=True)
        return (z - mu) / np.sqrt(var + 1e-6) * (1.0 + scale) + shift

    def attn(a, z):
        out = np.zeros_like(z)
        for h in range(a["W_q"].shape[1]):
            q = z @ a["W_q"][:, h] + a["b_q"][h]
            k = z @ a["W_k"][:, h] + a["b_k"][h]
            v = z @ a["W_v"][:, h] + a["b_v"][h]
            s = q @ k.T / np.sqrt(q.shape[1])
            w = np.exp(s - s.max(1, keepdims=True))
            out += (w / w.sum(1, keepdims=True)) @ v @ a["W_o"][h]
        return out + a["b_o"]

    g1, b1, a1, g2, b2, a2 = np.split(silu(c) @ p["W_ada"] + p["b_ada"], 6)
    h = x + a1 * attn(p["attn"], ln(x, g1, b1))
    m = p["mlp"]
    return h + a2 * (gelu(ln(h, g2, b2) @ m[0]["W"] + m[0]["b"]) @ m[1]["W"] + m[1]["b"])


def test_block_is_exactly_the_identity_at_initialisation():
    x = (5.0 * np.random.default_rng(0).standard_normal((N, D))).astype(np.float32)
    c = np.random.default_rng(1).standard_normal(D).astype(np.float32)
    block = block_init(jax.random.key(2), D, H)
    np.testing.assert_array_equal(dit_block(block, x, c), x)  # bit for bit, for any condition
    assert not np.allclose(dit_block(_random_block(3), x, c), x)  # and not once the gates open


def test_block_matches_a_numpy_float64_reference():
    block = _random_block(4)
    x = _rng(5, N, D)
    c = _rng(6, D)
    np.testing.assert_allclose(dit_block(block, x, c), _np_block(block, x, c), rtol=1e-4, atol=1e-5)


def test_block_is_equivariant_to_permuting_the_tokens():
    # Positions are added before the first block; the block itself treats the tokens as a set.
    block = _random_block(7)
    x = _rng(8, N, D)
    c = _rng(9, D)
    perm = np.array([3, 0, 6, 1, 5, 2, 4])
    np.testing.assert_allclose(_block(block, x[perm], c), np.asarray(_block(block, x, c))[perm], rtol=1e-5, atol=1e-5)


def test_patchify_and_unpatchify_are_inverse():
    image = _rng(10, 6, 6, 5)
    # unpatchify only reshapes and transposes, so it runs as well on a NumPy array: nothing to compile
    np.testing.assert_array_equal(unpatchify(np.asarray(patchify(image, 3)), 6, 3, 5), image)


def test_with_the_gates_shut_only_the_gates_get_a_gradient():
    block = block_init(jax.random.key(13), D, H)
    x = _rng(14, N, D)
    c = _rng(15, D)
    r = _rng(16, N, D)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(_block(p, x, c) * r)))(block)  # one program, not one per operation
    flat = {jax.tree_util.keystr(path): np.asarray(g) for path, g in jax.tree_util.tree_leaves_with_path(grads)}
    moving = {k for k, g in flat.items() if np.abs(g).max() > 0}
    assert moving == {"['W_ada']", "['b_ada']"}  # attention and perceptron: exactly zero


@pytest.fixture(scope="module")
def trained():
    images, labels = digits("train")
    params = init(jax.random.key(0), image_size=8, patch_size=2, channels=1, d_model=32, num_heads=2,
                  num_layers=1, num_classes=10)  # one block: the smallest program; the page's example's sizes
    trained, losses = train(params, images, labels, jax.random.key(1), alpha_bar=ALPHA_BAR, patch_size=2,
                            steps=200)
    return params, trained, losses


def test_it_learns_to_predict_the_noise_of_digits(trained):
    _, fitted, losses = trained
    losses = np.asarray(losses)
    # Each step draws fresh steps and noises, so the training loss estimates the population loss.
    assert abs(float(losses[0]) - 1.0) < 0.1  # the mean square of the noise: the untrained net says zero
    assert float(losses[-50:].mean()) < 0.2, float(losses[-50:].mean())  # the page: below 0.2
    assert np.abs(np.asarray(fitted["blocks"]["W_ada"])).max() > 0.01  # the gates opened


def test_bad_input_gets_a_clear_error():
    block = block_init(jax.random.key(0), D, H)
    x, c = np.zeros((N, D), np.float32), np.zeros(D, np.float32)
    with pytest.raises(ValueError, match="x must have shape"):
        dit_block(block, np.zeros((N, D + 1), np.float32), c)
    with pytest.raises(ValueError, match="c must have shape"):
        dit_block(block, x, np.zeros(D + 2, np.float32))
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        dit_block(block, np.zeros((N, D), np.int32), c)
    with pytest.raises(ValueError, match="num_heads must divide d_model"):
        block_init(jax.random.key(0), 10, 3)
    # zeros of the right shapes, traced but not compiled: the checks run before any computation
    params = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), jax.eval_shape(lambda: init(jax.random.key(1), **SMALL)))
    image = np.zeros((4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="label must lie in"):
        dit(params, image, jnp.float32(0.5), 3, patch_size=2)
    with pytest.raises(ValueError, match="image must be square"):
        dit(params, np.zeros((4, 6, 1), np.float32), jnp.float32(0.5), 0, patch_size=2)
    with pytest.raises(ValueError, match="params"):  # two channels, params made for one
        dit(params, np.zeros((4, 4, 2), np.float32), jnp.float32(0.5), 0, patch_size=2)
    with pytest.raises(TypeError, match="patch_size must be an int"):
        dit(params, image, jnp.float32(0.5), 0, patch_size=2.0)
    with pytest.raises(ValueError, match="labels must have shape"):
        loss(params, np.zeros((3, 4, 4, 1), np.float32), jnp.array([0, 1]), jax.random.key(0), ALPHA_BAR, 2)
