import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.attention.linear_attention import (
    causal_linear_attention,
    feature_map,
    kernel_attention,
    linear_attention,
)

TOL = dict(rtol=1e-5, atol=1e-5)  # reached between the forms, float32
# The three forms check their input and then run one compiled core per shape: the tests call them as
# they are, with NumPy inputs, so that the jit checks and the tests share those programs, and look at
# their results in NumPy.
parallel = kernel_attention
linear = linear_attention
recurrent = causal_linear_attention
# jax.nn.elu(x) + 1, the form that the feature map avoids, as one program, on the trap's inputs.
elu_plus_one = jax.jit(lambda x: jax.nn.elu(x) + 1.0)
TRAP = np.array([-17.0, -17.5, -30.0], np.float32)


def _qkv(seed, T=7, S=11, D=4, Dv=3):
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(s).astype(np.float32) for s in [(T, D), (S, D), (S, Dv)])


def _numpy_reference(q, k, v, mask):
    elu1 = lambda x: np.where(x > 0, x + 1.0, np.exp(x))
    w = (elu1(np.asarray(q, np.float64)) @ elu1(np.asarray(k, np.float64)).T) * mask
    return w @ np.asarray(v, np.float64) / w.sum(axis=1, keepdims=True)


def test_feature_map_is_elu_plus_one_and_positive():
    x = np.array([-80.0, -1.0, 0.0, 0.5, 3.0], np.float32)
    np.testing.assert_allclose(feature_map(x), [np.exp(-80.0), np.exp(-1.0), 1.0, 1.5, 4.0], rtol=1e-6)
    assert np.all(np.asarray(feature_map(np.linspace(-80, 30, 111, dtype=np.float32))) > 0)
    assert float(np.asarray(elu_plus_one(TRAP))[2]) == 0.0  # the trap that the direct exp avoids, at -30
    grads = jax.jit(jax.vmap(jax.grad(feature_map)))(x)
    np.testing.assert_allclose(grads, [np.exp(-80.0), np.exp(-1.0), 1.0, 1.0, 1.0], rtol=1e-6)


def test_parallel_form_matches_numpy_with_and_without_mask():
    q, k, v = _qkv(0)
    np.testing.assert_allclose(parallel(q, k, v), _numpy_reference(q, k, v, np.ones((7, 11))), **TOL)
    mask = np.random.default_rng(0).random((7, 11)) < 0.5
    mask[:, 0] = True
    np.testing.assert_allclose(parallel(q, k, v, mask), _numpy_reference(q, k, v, mask), **TOL)


def test_linear_form_equals_the_parallel_form_t_not_s():
    q, k, v = _qkv(1, T=7, S=11)
    np.testing.assert_allclose(linear(q, k, v), parallel(q, k, v), **TOL)


def test_recurrent_form_equals_the_causal_parallel_form():
    q, k, v = _qkv(2, T=11, S=11)
    causal = np.tril(np.ones((11, 11), bool))
    y = np.asarray(recurrent(q, k, v))
    np.testing.assert_allclose(y, parallel(q, k, v, causal), **TOL)
    # Causality: the first outputs do not depend on later tokens.
    np.testing.assert_allclose(recurrent(q[:5], k[:5], v[:5]), y[:5], **TOL)
    np.testing.assert_allclose(y[0], v[0], **TOL)  # the first query sees only itself


def test_outputs_are_convex_combinations_of_the_values():
    q, k, v = _qkv(3)
    y = np.asarray(linear(q, k, v))
    assert np.all(y <= np.asarray(v).max(axis=0) + 1e-5) and np.all(y >= np.asarray(v).min(axis=0) - 1e-5)


def test_extreme_inputs_and_empty_rows_stay_finite():
    q, k, v = _qkv(4, T=5, S=5)
    for scale in (1e-6, 1e3):
        assert np.all(np.isfinite(recurrent(q * scale, k * scale, v)))
        assert np.all(np.isfinite(linear(q * scale, k * scale, v)))
    mask = np.ones((5, 5), bool)
    mask[2] = False
    y = np.asarray(parallel(q, k, v, mask))
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(y[2], np.zeros(3))
    np.testing.assert_allclose(recurrent(np.full((5, 4), -100.0, np.float32), k, v), np.zeros((5, 3)), atol=1e-6)


def test_bfloat16_and_vmap_over_heads():
    q, k, v = _qkv(5, T=5, S=5)
    y16 = recurrent(q.astype(jnp.bfloat16), k.astype(jnp.bfloat16), v.astype(jnp.bfloat16))
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y16, np.float32), recurrent(q, k, v), atol=3e-2)
    qs, ks, vs = (np.stack([x, 2 * x]) for x in (q, k, v))
    batched = np.asarray(jax.vmap(causal_linear_attention)(qs, ks, vs))
    np.testing.assert_allclose(batched[1], recurrent(2 * q, 2 * k, 2 * v), **TOL)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"q and k must have shapes \(T, D\) and \(S, D\)"):
        linear_attention(np.ones((5, 4)), np.ones((5, 3)), np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"v must have shape \(S, Dv\) = \(5, Dv\)"):
        kernel_attention(np.ones((5, 4)), np.ones((5, 4)), np.ones((6, 2)))
    with pytest.raises(ValueError, match=r"causal attention needs as many queries as keys"):
        causal_linear_attention(np.ones((5, 4)), np.ones((7, 4)), np.ones((7, 2)))
    with pytest.raises(ValueError, match=r"mask must have shape \(T, S\) = \(5, 7\)"):
        kernel_attention(np.ones((5, 4)), np.ones((7, 4)), np.ones((7, 2)), np.ones((5, 6), bool))
    with pytest.raises(ValueError, match=r"mask must have shape \(T, S\) = \(5, 7\)"):
        kernel_attention(np.ones((5, 4)), np.ones((7, 4)), np.ones((7, 2)), np.ones((5, 1), bool))
    with pytest.raises(TypeError, match=r"mask must be boolean"):
        kernel_attention(np.ones((5, 4)), np.ones((7, 4)), np.ones((7, 2)), np.ones((5, 7)))
    for fn in (kernel_attention, linear_attention, causal_linear_attention):
        with pytest.raises(TypeError, match=r"k must be a floating-point array, got dtype int32"):
            fn(np.ones((5, 4)), np.ones((5, 4), np.int32), np.ones((5, 2)))
    with pytest.raises(TypeError, match=r"x must be a floating-point array"):
        feature_map(np.arange(3))


def test_elu_plus_one_rounds_to_zero_below_about_minus_17():
    direct = np.asarray(elu_plus_one(TRAP))  # at -17, -17.5 (and -30)
    assert float(direct[0]) > 0 and float(direct[1]) == 0.0
    assert np.all(np.asarray(feature_map(TRAP)) > 0)


def test_linear_form_has_fewer_flops_once_t_exceeds_the_head_width():
    # Self-attention, D = Dv = 16: XLA's count of floating-point operations of the two forms,
    # T S (D + Dv) against (T + S) D Dv multiply-adds: equal at T = D.
    def flops(fn, n):
        x = jax.ShapeDtypeStruct((n, 16), jnp.float32)
        cost = jax.jit(fn).lower(x, x, x).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return cost["flops"]

    assert flops(linear_attention, 8) > flops(kernel_attention, 8)  # T = D / 2: the quadratic form is cheaper
    assert flops(linear_attention, 32) < flops(kernel_attention, 32)  # T = 2 D: the linear form is
