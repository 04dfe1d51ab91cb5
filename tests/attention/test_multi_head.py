import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.attention.multi_head import apply, init

TOL = dict(rtol=1e-5, atol=1e-5)  # reached against flax.linen.MultiHeadDotProductAttention
D_MODEL, H = 12, 3
batched_apply = jax.jit(jax.vmap(apply, in_axes=(None, 0, 0, 0)))
self_apply = apply  # apply runs one compiled core: a jax.jit around it would compile another


@pytest.fixture(scope="module")
def params():
    p = init(jax.random.key(0), D_MODEL, H)
    # Non-zero biases, so that the comparison checks them too.
    rng = np.random.default_rng(0)
    return {name: (rng.standard_normal(w.shape).astype(np.float32) * 0.1 if name.startswith("b") else w)
            for name, w in p.items()}


@jax.jit
def _flax(params, x, context, mask):
    layer = nn.MultiHeadDotProductAttention(num_heads=H, qkv_features=D_MODEL, out_features=D_MODEL)
    flax_params = {"params": {
        "query": {"kernel": params["W_q"], "bias": params["b_q"]},
        "key": {"kernel": params["W_k"], "bias": params["b_k"]},
        "value": {"kernel": params["W_v"], "bias": params["b_v"]},
        "out": {"kernel": params["W_o"], "bias": params["b_o"]},
    }}
    with jax.numpy_rank_promotion("allow"):
        return layer.apply(flax_params, x, context, mask=mask)


def _data(seed, B=2, T=5, S=7):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, D_MODEL)).astype(np.float32)
    c = rng.standard_normal((B, S, D_MODEL)).astype(np.float32)
    mask = rng.random((B, 1, T, S)) < 0.6
    mask[..., 0] = True  # no empty rows
    return x, c, mask


def test_init_layout_matches_flax(params):
    layer = nn.MultiHeadDotProductAttention(num_heads=H, qkv_features=D_MODEL, out_features=D_MODEL)
    shapes = jax.tree.map(jnp.shape, jax.eval_shape(layer.init, jax.random.key(1), np.ones((1, 5, D_MODEL))))["params"]
    assert params["W_q"].shape == shapes["query"]["kernel"] == (12, 3, 4)
    assert params["b_k"].shape == shapes["key"]["bias"] == (3, 4)
    assert params["W_o"].shape == shapes["out"]["kernel"] == (3, 4, 12)
    assert params["b_o"].shape == shapes["out"]["bias"] == (12,)


def test_cross_attention_with_mask_matches_flax(params):
    x, c, mask = _data(1)
    z = batched_apply(params, x, c, mask)
    assert z.shape == (2, 5, 12)
    np.testing.assert_allclose(z, _flax(params, x, c, mask), **TOL)


def test_self_attention_causal_matches_flax(params):
    x, _, _ = _data(2, T=7)
    causal = np.broadcast_to(np.tril(np.ones((7, 7), bool)), (2, 1, 7, 7))
    z = batched_apply(params, x, x, causal)
    np.testing.assert_allclose(z, _flax(params, x, x, causal), **TOL)
    np.testing.assert_allclose(self_apply(params, x[0], None, causal[0]), z[0], **TOL)  # context=None


def test_self_attention_is_permutation_equivariant(params):
    x, _, _ = _data(3, B=1, T=7)
    x = x[0]
    perm = np.array([4, 2, 6, 0, 1, 5, 3])
    np.testing.assert_allclose(self_apply(params, x[perm]), self_apply(params, x)[perm], **TOL)


def test_per_head_mask_and_empty_rows(params):
    x, c, _ = _data(4, B=1)
    mask = np.ones((H, 5, 7), bool)
    mask[1, 2] = False  # head 1, query 2 sees nothing
    z = self_apply(params, x[0], c[0], mask)
    assert np.all(np.isfinite(z))
    # Head 1 contributes only its value bias path to query 2: its attention output is zero.
    full = self_apply(params, x[0], c[0], np.ones((H, 5, 7), bool))
    np.testing.assert_allclose(np.delete(z, 2, axis=0), np.delete(full, 2, axis=0), **TOL)
    assert not np.allclose(z[2], full[2])


def test_init_gives_unit_scale_outputs():
    p = jax.tree.map(np.asarray, init(jax.random.key(5), D_MODEL, H))
    assert np.all(p["b_q"] == 0) and np.all(p["b_o"] == 0)
    W = np.concatenate([p["W_q"].ravel(), p["W_k"].ravel(), p["W_v"].ravel(), p["W_o"].ravel()])
    np.testing.assert_allclose(W.std(), 1 / np.sqrt(D_MODEL), rtol=0.1)  # fan-in 12 for all four here
    x = np.random.default_rng(5).standard_normal((200, D_MODEL))
    q = np.einsum("TM,MHD->HTD", x, p["W_q"])
    assert 0.7 < q.std() < 1.3


@pytest.mark.parametrize(
    "x_shape, c_shape, match",
    [
        ((5, 10), None, r"x must have shape \(T, d_model\) = \(T, 12\), got shape \(5, 10\)"),
        ((2, 5, 12), None, r"x must have shape"),
        ((5, 12), (7, 11), r"context must have shape \(S, d_model\)"),
    ],
)
def test_bad_shapes_raise_clear_errors(params, x_shape, c_shape, match):
    context = None if c_shape is None else np.ones(c_shape)
    with pytest.raises(ValueError, match=match):
        apply(params, np.ones(x_shape), context)


def test_bad_parameters_and_dtypes_raise_clear_errors(params):
    x = np.ones((5, 12), np.float32)
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        apply(params, x.astype(np.int32))
    with pytest.raises(TypeError, match=r'params\["W_k"\] must be a floating-point array'):
        apply({**params, "W_k": params["W_k"].astype(jnp.int32)}, x)
    with pytest.raises(ValueError, match=r'params\["W_k"\] must have shape \(12, 3, 4\)'):
        apply({**params, "W_k": params["W_k"][..., :1]}, x)
    with pytest.raises(ValueError, match=r"mask must broadcast to .* last axis S = 5"):
        apply(params, x, mask=np.ones((5, 1), bool))
    with pytest.raises(TypeError, match="d_model must be an int"):
        init(jax.random.key(0), 12.0, 3)
    np.testing.assert_allclose(apply(params, x.tolist()), apply(params, x), rtol=1e-6)  # lists are arrays


def test_bad_head_count_raises():
    with pytest.raises(ValueError, match=r"num_heads must divide d_model, got d_model=12 and num_heads=5"):
        init(jax.random.key(0), 12, 5)
