import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.sequence_models.delta_rule import delta_rule_chunkwise, delta_rule_recurrent

TOL = dict(rtol=1e-5, atol=1e-5)  # float32 against float64, reached on every input below
# Both functions check their input and run a compiled core: called directly, calls that differ only in
# alpha=None, or in a bfloat16 input (computed in float32), share one program; a jax.jit around them
# compiled one more program for each.
recurrent, chunkwise = delta_rule_recurrent, delta_rule_chunkwise


def _inputs(seed, T=11, Dk=5, Dv=3):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((T, Dk)).astype(np.float32)
    k = rng.standard_normal((T, Dk)).astype(np.float32)
    k /= np.linalg.norm(k, axis=1, keepdims=True)
    v = rng.standard_normal((T, Dv)).astype(np.float32)
    beta = rng.uniform(0.1, 1.0, T).astype(np.float32)
    alpha = rng.uniform(0.5, 1.0, T).astype(np.float32)
    return q, k, v, beta, alpha


def _numpy_recurrence(q, k, v, beta, alpha, delta=True):
    """The equation as written, with the identity matrix, in float64."""
    q, k, v, beta, alpha = (np.asarray(a, np.float64) for a in (q, k, v, beta, alpha))
    S, out = np.zeros((v.shape[1], k.shape[1])), []
    for t in range(len(k)):
        erase = np.eye(k.shape[1]) - beta[t] * np.outer(k[t], k[t]) if delta else np.eye(k.shape[1])
        S = alpha[t] * S @ erase + beta[t] * np.outer(v[t], k[t])
        out.append(S @ q[t])
    return np.array(out)


def test_recurrence_matches_the_equation_in_float64():
    q, k, v, beta, alpha = _inputs(0)
    for delta in (True, False):
        expected = _numpy_recurrence(q, k, v, beta, alpha, delta)
        np.testing.assert_allclose(recurrent(q, k, v, beta, alpha, delta=delta), expected, **TOL)
    np.testing.assert_allclose(recurrent(q, k, v, beta), _numpy_recurrence(q, k, v, beta, np.ones(11)), **TOL)


# T = 11: not a multiple of 4, a chunk per token, one chunk larger than the sequence.
@pytest.mark.parametrize("chunk_size, delta", [(4, True), (4, False), (1, True), (16, True)])
def test_chunkwise_equals_recurrent(chunk_size, delta):
    q, k, v, beta, alpha = _inputs(1)
    np.testing.assert_allclose(chunkwise(q, k, v, beta, alpha, chunk_size=chunk_size, delta=delta),
                               recurrent(q, k, v, beta, alpha, delta=delta), **TOL)


def test_one_token_and_no_gate():
    q, k, v, beta, alpha = _inputs(2)
    # T = 1: S_1 = beta v k^T, so o_1 = beta (k . q) v.
    expected = beta[0] * (k[0] @ q[0]) * v[:1]
    np.testing.assert_allclose(recurrent(q[:1], k[:1], v[:1], beta[:1], alpha[:1]), expected, **TOL)
    np.testing.assert_allclose(chunkwise(q[:1], k[:1], v[:1], beta[:1], alpha[:1], chunk_size=4), expected, **TOL)
    np.testing.assert_allclose(chunkwise(q, k, v, beta, chunk_size=4), recurrent(q, k, v, beta), **TOL)


def test_the_gate_only_case_is_decayed_linear_attention():
    q, k, v, beta, alpha = _inputs(3)
    # o_t = sum_{s <= t} (gamma_t / gamma_s) beta_s (k_s . q_t) v_s: a masked, decayed attention.
    log_gamma = np.cumsum(np.log(alpha.astype(np.float64)))
    decay = np.tril(np.exp(log_gamma[:, None] - log_gamma[None, :]))
    expected = (decay * (q @ k.T) * beta[None, :]) @ v
    np.testing.assert_allclose(chunkwise(q, k, v, beta, alpha, chunk_size=4, delta=False), expected, **TOL)
    # No gate and beta = 1: unnormalised causal linear attention, the fast-weight programmer.
    ones = np.ones(11, np.float32)
    np.testing.assert_allclose(recurrent(q, k, v, ones, delta=False), np.tril(q @ k.T) @ v, **TOL)


def test_the_delta_rule_replaces_the_value_under_a_key():
    q, k, v, beta, alpha = _inputs(4)
    ones = np.ones(11, np.float32)
    # Querying with the key just written, at beta = 1: exactly its value, whatever came before.
    np.testing.assert_allclose(recurrent(k, k, v, ones, alpha), v, **TOL)
    # Linear attention returns the value plus the interference of the earlier keys.
    assert not np.allclose(recurrent(k, k, v, ones, alpha, delta=False), v, atol=1e-2)
    # The page's example: 1 then 2 under one key; the sum for linear attention, the latest for the delta rule.
    key = np.array([[1.0, 0.0]] * 3, np.float32)
    vals, write = np.array([[1.0], [2.0], [0.0]], np.float32), np.array([1.0, 1.0, 0.0], np.float32)
    assert float(recurrent(key, key, vals, write, delta=False)[2, 0]) == 3.0
    assert float(recurrent(key, key, vals, write)[2, 0]) == 2.0


def test_a_long_sequence_stays_bounded_where_linear_attention_grows():
    q, k, v, beta, alpha = _inputs(5, T=400)
    o = chunkwise(q, k, v, beta, chunk_size=16)  # no gate: only the delta rule keeps it small
    np.testing.assert_allclose(o, recurrent(q, k, v, beta), rtol=1e-4, atol=1e-4)  # 25 chunks
    o_linear = recurrent(q, k, v, beta, delta=False)
    late, early = slice(300, 400), slice(100, 200)
    assert np.abs(o[late]).mean() < 1.5 * np.abs(o[early]).mean()  # the delta rule does not grow
    assert np.abs(o_linear[late]).mean() > 1.5 * np.abs(o_linear[early]).mean()  # the sums do
    assert np.abs(o_linear[late]).mean() > 3 * np.abs(o[late]).mean()


def test_causality():
    q, k, v, beta, alpha = _inputs(6)
    q2, k2, v2, beta2, alpha2 = (a.copy() for a in (q, k, v, beta, alpha))
    for a in (q2, k2, v2):
        a[7:] += 1.0
    beta2[7:], alpha2[7:] = 0.9, 0.6
    for delta in (True, False):
        for f in (lambda *a: recurrent(*a, delta=delta), lambda *a: chunkwise(*a, chunk_size=4, delta=delta)):
            before, after = f(q, k, v, beta, alpha), f(q2, k2, v2, beta2, alpha2)
            np.testing.assert_array_equal(before[:7], after[:7])
            assert not np.allclose(before[7:], after[7:])


def test_gradients_of_the_chunkwise_form():
    q, k, v, beta, alpha = _inputs(7, T=7, Dk=3, Dv=2)
    with jax.enable_x64(True):
        args = tuple(np.float64(a) for a in (q, k, v, beta, alpha))  # NumPy: no eager program per operation
        loss_c = jax.jit(lambda *a: jnp.sum(jnp.sin(delta_rule_chunkwise(*a, chunk_size=3))))
        g_c = jax.jit(jax.grad(loss_c, argnums=(0, 1, 2, 3, 4)))(*args)
        # they match a central finite difference along a random direction
        rng = np.random.default_rng(0)
        d = tuple(rng.standard_normal(a.shape) for a in args)
        eps = 1e-6
        plus = float(loss_c(*(a + eps * e for a, e in zip(args, d))))
        minus = float(loss_c(*(a - eps * e for a, e in zip(args, d))))
        directional = sum(np.sum(np.asarray(g) * e) for g, e in zip(g_c, d))
        np.testing.assert_allclose((plus - minus) / (2 * eps), directional, rtol=1e-6)


def test_bfloat16_and_vmap_over_heads():
    q, k, v, beta, alpha = _inputs(8)
    b16 = [a.astype(jnp.bfloat16) for a in (q, k, v, beta, alpha)]
    o16 = chunkwise(*b16, chunk_size=4)
    assert o16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(o16, np.float32), recurrent(q, k, v, beta, alpha), atol=5e-2)
    heads = jax.vmap(lambda *a: delta_rule_chunkwise(*a, chunk_size=4))(
        *(np.stack([a, a[::-1]]) for a in (q, k, v, beta, alpha)))
    np.testing.assert_allclose(heads[1], recurrent(q[::-1], k[::-1], v[::-1], beta[::-1], alpha[::-1]), **TOL)


def test_bad_input_raises_clear_errors():
    q, k, v, beta, alpha = _inputs(9, T=5)
    with pytest.raises(ValueError, match=r"q and k must have the same shape \(T, Dk\), got q \(5, 5\) and k \(5, 1\)"):
        delta_rule_recurrent(q, k[:, :1], v, beta)
    with pytest.raises(ValueError, match=r"v must have shape \(T, Dv\) with T = 5"):
        delta_rule_chunkwise(q, k, v[:4], beta)
    with pytest.raises(ValueError, match=r"alpha must have shape \(5,\) \(one per token of k\)"):
        delta_rule_chunkwise(q, k, v, beta, alpha[:, None])
    with pytest.raises(TypeError, match=r"chunk_size must be an int"):
        delta_rule_chunkwise(q, k, v, beta, chunk_size=4.0)
    with pytest.raises(ValueError, match=r"chunk_size must be at least 1"):
        delta_rule_chunkwise(q, k, v, beta, chunk_size=0)
    with pytest.raises(TypeError, match=r"delta must be a bool"):
        delta_rule_recurrent(q, k, v, beta, delta=1)
    with pytest.raises(TypeError, match=r"beta must be a floating-point array"):
        delta_rule_recurrent(q, k, v, np.ones(5, np.int32))
