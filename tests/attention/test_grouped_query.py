import jax
import numpy as np
import pytest

from cookbook.attention import multi_head
from cookbook.attention.grouped_query import apply, from_multi_head, init, keys_values, kv_cache_floats

TOL = dict(rtol=1e-5, atol=1e-5)
D_MODEL, H = 24, 6  # D = 4 features per head
# apply, keys_values and from_multi_head run one compiled core each, called directly; inputs, edits
# and the by-hand references are NumPy (an eager jnp operation compiles for every shape).
mha_apply = jax.jit(multi_head.apply)


def _x(seed, T=5):
    return np.random.default_rng(seed).standard_normal((T, D_MODEL)).astype(np.float32)


def _draw(init_fn, seed):
    """Weights in the shapes that ``init_fn`` returns (read with jax.eval_shape, which compiles
    nothing), drawn in NumPy: the weights with standard deviation 1 / sqrt(d_model), the biases
    nonzero (0.1) so that a lost bias shows."""
    rng = np.random.default_rng(seed)
    return {name: ((0.1 if name.startswith("b") else 1.0 / np.sqrt(D_MODEL))
                   * rng.standard_normal(leaf.shape)).astype(np.float32)
            for name, leaf in jax.eval_shape(init_fn).items()}


def _params(G, seed):
    """Grouped-query weights in init's shapes for G groups: a jax.random draw would compile init's
    program for every G."""
    return _draw(lambda: init(jax.random.key(0), D_MODEL, H, G), seed)


@pytest.fixture(scope="module")
def mha_params():
    """Multi-head weights in multi_head.init's shapes, drawn in NumPy."""
    return _draw(lambda: multi_head.init(jax.random.key(0), D_MODEL, H), 0)


def _attention(q, k, v, mask=None):
    """softmax(q k^T / sqrt(D), masked) v for one head, in float64 NumPy."""
    s = np.asarray(q, np.float64) @ np.asarray(k, np.float64).T / np.sqrt(q.shape[-1])
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    w = np.exp(s - s.max(axis=-1, keepdims=True))
    return (w / w.sum(axis=-1, keepdims=True)) @ np.asarray(v, np.float64)


def test_as_many_groups_as_heads_is_multi_head_attention(mha_params):
    x, c = _x(1, T=5), _x(2, T=7)
    mask = np.random.default_rng(3).random((H, 5, 7)) < 0.7
    mask[..., 0] = True
    gqa_params = from_multi_head(mha_params, H)  # one head per group: the parameters are unchanged
    assert all(np.array_equal(gqa_params[name], mha_params[name]) for name in mha_params)
    np.testing.assert_allclose(apply(gqa_params, x, c, mask), mha_apply(mha_params, x, c, mask), **TOL)


def test_one_group_is_multi_query_attention():
    params = _params(1, 4)
    x = _x(5, T=7)
    causal = np.tril(np.ones((7, 7), bool))
    expected = _multi_query_by_hand(params, x, causal)
    np.testing.assert_allclose(apply(params, x, None, causal), expected, **TOL)


def _multi_query_by_hand(params, x, causal):
    # Multi-query attention by hand: one key and one value projection shared by every head.
    p = {name: np.asarray(w, np.float64) for name, w in params.items()}
    k = x @ p["W_k"][:, 0] + p["b_k"][0][None, :]  # (S, D)
    v = x @ p["W_v"][:, 0] + p["b_v"][0][None, :]
    heads = [_attention(x @ p["W_q"][:, h] + p["b_q"][h][None, :], k, v, causal) for h in range(H)]
    return sum(heads[h] @ p["W_o"][h] for h in range(H)) + p["b_o"][None, :]


# The tests with three groups run T = 5 tokens, so that they share one program of apply and one of
# keys_values.
def test_each_head_reads_its_own_group():
    params = _params(3, 6)  # heads (0, 1), (2, 3), (4, 5)
    x = _x(7)
    # Zeroing the values of group 1 changes exactly the contribution of heads 2 and 3.
    W_v, b_v = np.array(params["W_v"]), np.array(params["b_v"])
    W_v[:, 1], b_v[1] = 0.0, 0.0
    zeroed = {**params, "W_v": W_v, "b_v": b_v}
    delta = np.asarray(apply(params, x)) - np.asarray(apply(zeroed, x))
    np.testing.assert_allclose(delta, _group_one_by_hand(params, x), rtol=1e-4, atol=1e-5)


def _group_one_by_hand(params, x):
    k, v = (np.asarray(a, np.float64) for a in keys_values(params, x))  # (G, S, D) each
    p = {name: np.asarray(w, np.float64) for name, w in params.items()}
    # Heads 2 and 3 attend with their own queries to group 1's keys and values (sqrt(D) = 2).
    return sum(_attention(x @ p["W_q"][:, h] + p["b_q"][h], k[1], v[1]) @ p["W_o"][h] for h in (2, 3))


@pytest.mark.parametrize("G", [1, 3])
def test_cache_size_is_asserted(G):
    params = _params(G, 8)
    k, v = keys_values(params, _x(9))
    assert k.shape == v.shape == (G, 5, 4)
    assert k.size + v.size == kv_cache_floats(5, G, 4) == 2 * 5 * G * 4
    assert kv_cache_floats(5, G, 4) * H == kv_cache_floats(5, H, 4) * G  # H / G times smaller than MHA


def test_uptraining_average_pools_key_value_heads(mha_params):
    params = from_multi_head(mha_params, 3)
    assert params["W_k"].shape == (D_MODEL, 3, 4) and params["b_v"].shape == (3, 4)
    np.testing.assert_allclose(np.asarray(params["W_k"])[:, 1], mha_params["W_k"][:, 2:4].mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(params["b_v"])[2], mha_params["b_v"][4:].mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(params["W_q"], mha_params["W_q"])
    assert apply(params, _x(10)).shape == (5, D_MODEL)


def test_vmap_over_a_batch_and_permutation_equivariance():
    params = _params(3, 11)
    xs = np.stack([_x(12), _x(13)])
    batched = np.asarray(jax.jit(jax.vmap(apply, in_axes=(None, 0)))(params, xs))
    np.testing.assert_allclose(batched[1], apply(params, xs[1]), **TOL)
    perm = np.array([3, 0, 4, 1, 2])
    np.testing.assert_allclose(apply(params, xs[0][perm]), batched[0][perm], **TOL)


def test_bad_arguments_raise_clear_errors(mha_params):
    with pytest.raises(ValueError, match=r"num_groups must divide num_heads, got num_heads=6 and num_groups=4"):
        init(jax.random.key(0), D_MODEL, H, 4)
    with pytest.raises(ValueError, match=r"num_heads must divide d_model"):
        init(jax.random.key(0), D_MODEL, 5, 1)
    params = _params(2, 0)
    with pytest.raises(ValueError, match=r"x must have shape \(T, d_model\) = \(T, 24\)"):
        apply(params, np.ones((5, 23)))
    with pytest.raises(ValueError, match=r"context must have shape \(S, d_model\)"):
        apply(params, np.ones((5, 24)), np.ones((7,)))
    with pytest.raises(ValueError, match=r"mask must broadcast to \(H, T, S\) = \(6, 5, 5\)"):
        apply(params, np.ones((5, 24)), mask=np.ones((4, 5, 5), bool))
    with pytest.raises(ValueError, match=r"mask must broadcast to \(H, T, S\) = \(6, 5, 5\) with its last axis S = 5"):
        apply(params, np.ones((5, 24)), mask=np.ones((5, 1), bool))
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        apply(params, np.ones((5, 24), np.int32))
    with pytest.raises(ValueError, match=r'params\["W_k"\] must have shape \(24, 2, 4\)'):
        apply({**params, "W_k": np.asarray(params["W_k"])[..., :1]}, np.ones((5, 24)))
    with pytest.raises(TypeError, match="num_groups must be an int"):
        from_multi_head(mha_params, 2.5)
    with pytest.raises(ValueError, match=r'params\["W_k"\] must have shape \(24, 6, 4\)'):
        from_multi_head(params, 1)  # already grouped: not a multi-head checkpoint
