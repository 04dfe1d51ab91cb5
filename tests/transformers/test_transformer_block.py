import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.transformers.transformer_block import (
    apply,
    apply_stack,
    feed_forward,
    init,
    init_stack,
    layer_gradient_norms,
)

TOL = dict(rtol=1e-5, atol=1e-5)  # reached against a block written with flax.linen
# The sizes of the page's example, so that the tests and the example compile the same programs
# (apply already runs one jitted program; another jit around it would compile a new one).
D_MODEL, H, D_FF, T = 8, 2, 16, 7
pre_apply = functools.partial(apply, norm="pre")
post_apply = functools.partial(apply, norm="post")


@pytest.fixture(scope="module")
def params():
    return init(jax.random.key(0), D_MODEL, H, D_FF)


def _x(seed, T=T):
    return np.random.default_rng(seed).standard_normal((T, D_MODEL)).astype(np.float32)


class FlaxBlock(nn.Module):
    """The same block from flax.linen modules, as the reference."""

    pre: bool

    @nn.compact
    def __call__(self, x, mask):
        attn = nn.MultiHeadDotProductAttention(num_heads=H, qkv_features=D_MODEL, out_features=D_MODEL,
                                               name="attn")
        ln1, ln2 = nn.LayerNorm(epsilon=1e-6, name="ln1"), nn.LayerNorm(epsilon=1e-6, name="ln2")
        ff = nn.Sequential([nn.Dense(D_FF, name="fc1"), nn.relu, nn.Dense(D_MODEL, name="fc2")])
        if self.pre:
            x = x + attn(ln1(x), mask=mask)
            return x + ff(ln2(x))
        x = ln1(x + attn(x, mask=mask))
        return ln2(x + ff(x))


def _flax_params(p):
    a = p["attn"]
    ln = lambda q: {"scale": q["scale"], "bias": q["bias"]}  # noqa: E731
    return {"params": {
        "attn": {"query": {"kernel": a["W_q"], "bias": a["b_q"]}, "key": {"kernel": a["W_k"], "bias": a["b_k"]},
                 "value": {"kernel": a["W_v"], "bias": a["b_v"]}, "out": {"kernel": a["W_o"], "bias": a["b_o"]}},
        "ln1": ln(p["ln_attn"]), "ln2": ln(p["ln_mlp"]),
        "fc1": {"kernel": p["mlp"][0]["W"], "bias": p["mlp"][0]["b"]},
        "fc2": {"kernel": p["mlp"][1]["W"], "bias": p["mlp"][1]["b"]},
    }}


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_block_matches_flax(params, norm):
    rng = np.random.default_rng(1)
    # Non-trivial norm scales and biases, so that the comparison checks them.
    params = jax.tree.map(lambda w: np.asarray(w) + 0.1 * rng.standard_normal(w.shape).astype(np.float32), params)
    x = _x(2)
    causal = np.tril(np.ones((T, T), bool))
    ours = (pre_apply if norm == "pre" else post_apply)(params, x, causal)
    with jax.numpy_rank_promotion("allow"):  # one compiled program rather than ~40 eager operations
        ref = jax.jit(FlaxBlock(pre=norm == "pre").apply)(_flax_params(params), x, causal[None])
    np.testing.assert_allclose(ours, ref, **TOL)


def test_feed_forward_by_hand():
    p = [{"W": np.array([[1.0, -1.0]], np.float32), "b": np.array([0.0, 0.5], np.float32)},
         {"W": np.array([[2.0], [3.0]], np.float32), "b": np.array([1.0], np.float32)}]
    x = np.array([[1.0], [-2.0]], np.float32)
    # Row 1: relu([1, -0.5]) = [1, 0] -> 2 + 1 = 3. Row 2: relu([-2, 2.5]) = [0, 2.5] -> 7.5 + 1 = 8.5.
    np.testing.assert_allclose(feed_forward(p, x), [[3.0], [8.5]], **TOL)


def test_zero_sublayers_make_the_pre_norm_block_the_identity(params):
    zeroed = dict(params, attn=dict(params["attn"], W_o=np.zeros(params["attn"]["W_o"].shape, np.float32)),
                  mlp=[params["mlp"][0], jax.tree.map(lambda w: np.zeros(w.shape, np.float32), params["mlp"][1])])
    x, causal = _x(3), np.tril(np.ones((T, T), bool))  # the mask of the page's example: its programs
    np.testing.assert_allclose(pre_apply(zeroed, x, causal), x, **TOL)  # the residual path alone
    post = np.asarray(post_apply(zeroed, x, causal))  # post-norm: still normalises the stream
    np.testing.assert_allclose(post.mean(axis=-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(post.std(axis=-1), 1.0, atol=1e-3)


def test_block_is_permutation_equivariant_without_a_mask(params):
    x = _x(4)
    perm = np.array([3, 6, 0, 5, 1, 4, 2])
    np.testing.assert_allclose(pre_apply(params, x[perm]), np.asarray(pre_apply(params, x))[perm], **TOL)


def test_causal_mask_hides_later_tokens(params):
    x = _x(5)
    causal = np.tril(np.ones((T, T), bool))
    changed = x.copy()
    changed[5:] += 3.0
    for f in (pre_apply, post_apply):
        np.testing.assert_allclose(np.asarray(f(params, changed, causal))[:5], np.asarray(f(params, x, causal))[:5],
                                   **TOL)


def test_vmap_over_a_batch_matches_single_calls(params):
    xs = np.stack([_x(6), _x(7)])
    batched = np.asarray(jax.vmap(lambda x: apply(params, x, norm="pre"))(xs))
    for b in range(2):
        np.testing.assert_allclose(batched[b], pre_apply(params, xs[b]), **TOL)


def test_cross_attention_block_reads_the_context():
    p = init(jax.random.key(8), D_MODEL, H, D_FF, cross_attention=True)
    x, c = _x(9), _x(10, T=11)
    y = apply(p, x, context=c)
    assert y.shape == (T, D_MODEL)
    assert not np.allclose(apply(p, x, context=c + 1.0), y, atol=1e-3)
    with pytest.raises(ValueError, match="context must be given exactly when the block has cross-attention"):
        apply(p, x)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_stack_equals_blocks_applied_in_turn(norm):
    # With the example's causal mask: the pre-norm stack and the blocks are the example's programs.
    stack = init_stack(jax.random.key(11), 3, D_MODEL, H, D_FF)
    x, causal = _x(12), np.tril(np.ones((T, T), bool))
    h = x
    for l in range(3):
        h = apply(jax.tree.map(lambda w: np.asarray(w)[l], stack["blocks"]), h, causal, norm=norm)  # NumPy: no compile
    if norm == "pre":  # a pre-norm stack ends with its final layer norm (eps 1e-6), here in NumPy
        h = np.asarray(h, np.float64)
        ln = jax.tree.map(np.asarray, stack["ln_final"])
        h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-6) * ln["scale"] + ln["bias"]
    np.testing.assert_allclose(apply_stack(stack, x, causal, norm=norm), h, **TOL)


def test_pre_norm_last_layer_gradient_shrinks_with_depth_post_norm_does_not():
    # Xiong et al. (2020): at initialisation the last layer's gradient is O(1/sqrt(L)) in pre-norm and
    # independent of L in post-norm. Averaged over 4 random initialisations, from L = 2 to L = 16.
    # One call to init_stack makes the 4 x 16 layers (the layers are independent draws); a stack of
    # L = 2 is the first two layers of each.
    k_x, k_t = jax.random.split(jax.random.key(1))
    x, target = jax.random.normal(k_x, (7, 16)), jax.random.normal(k_t, (7, 16))
    pool = jax.jit(init_stack, static_argnums=(1, 2, 3, 4))(jax.random.key(0), 4 * 16, 16, 2, 32)  # one program
    deep = {
        "blocks": jax.tree.map(lambda w: np.asarray(w).reshape(4, 16, *w.shape[1:]), pool["blocks"]),
        "ln_final": jax.tree.map(lambda w: np.broadcast_to(w, (4, *w.shape)), pool["ln_final"]),
    }
    shallow = {"blocks": jax.tree.map(lambda w: w[:, :2], deep["blocks"]), "ln_final": deep["ln_final"]}

    @jax.jit  # the four measurements in one program: it compiles in about half the time of four
    def norms(shallow, deep):
        return {(norm, L): jax.vmap(functools.partial(layer_gradient_norms, norm=norm), in_axes=(0, None, None))(
                    p, x, target) for norm in ("pre", "post") for L, p in ((2, shallow), (16, deep))}

    last = {}
    for (norm, L), g in norms(shallow, deep).items():  # g: (4, L)
        assert g.shape == (4, L) and np.all(np.isfinite(g))
        g = np.asarray(g)
        last[norm, L] = float(g[:, -1].mean())
        if L == 16:  # the figure: post-norm gradients grow towards the output, pre-norm ones shrink
            assert (g[:, -1].mean() > g[:, 0].mean()) == (norm == "post")
    assert len(last) == 4
    assert last["pre", 16] / last["pre", 2] < 0.5  # the page: "by more than half"; measured 0.32, 1/sqrt(8) = 0.35
    assert last["post", 16] / last["post", 2] > 0.8  # measured 1.09


def test_huge_inputs_stay_finite(params):
    x, causal = _x(13) * 1e4, np.tril(np.ones((T, T), bool))
    assert np.all(np.isfinite(pre_apply(params, x)))
    assert np.all(np.isfinite(post_apply(params, x, causal)))


def test_bad_inputs_raise_clear_errors(params):
    with pytest.raises(ValueError, match=r"x must have shape \(7, 8\) \(\(T, d_model\)\), got shape \(7, 5\)"):
        apply(params, np.ones((7, 5)))
    with pytest.raises(ValueError, match=r"norm must be one of \('pre', 'post'\), got 'middle'"):
        apply(params, _x(0), norm="middle")
    with pytest.raises(ValueError, match=r"d_ff must be a positive width, got d_ff=0"):
        init(jax.random.key(0), D_MODEL, H, 0)
    with pytest.raises(ValueError, match=r"num_layers must be at least 1"):
        init_stack(jax.random.key(0), 0, D_MODEL, H, D_FF)
    stack = init_stack(jax.random.key(0), 3, D_MODEL, H, D_FF)  # the example's sizes: its programs
    with pytest.raises(ValueError, match=r"target must have the shape of x \(7, 8\), got shape \(7, 3\)"):
        layer_gradient_norms(stack, _x(0), np.ones((7, 3)))


def test_initial_weight_variances_of_the_page(params):
    # He (2 / fan-in) for the ReLU layer, 1 / fan-in for the others.
    params = jax.tree.map(np.asarray, params)  # NumPy's variances (np.var of a jax.Array runs jnp's)
    np.testing.assert_allclose(np.var(params["mlp"][0]["W"]), 2 / D_MODEL, rtol=0.3)
    np.testing.assert_allclose(np.var(params["mlp"][1]["W"]), 1 / D_FF, rtol=0.3)
    np.testing.assert_allclose(np.var(params["attn"]["W_q"]), 1 / D_MODEL, rtol=0.3)
