import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.sequence_models.rwkv import (
    channel_mixing,
    init,
    time_mixing,
    token_shift,
    wkv,
    wkv_direct,
)

TOL = dict(rtol=1e-5, atol=1e-5)  # float32 against float64, reached on every input below
# Each function checks its input and runs a compiled core: called directly, calls of the same shapes
# (and the bfloat16 ones, computed in float32) share the core's program with the page's example; a
# jax.jit around them compiled one more program for each.
recurrent, direct, mix_time, mix_channel = wkv, wkv_direct, time_mixing, channel_mixing
D, F, T = 3, 8, 9  # the layer of the page's example: the tests share its init and mixing programs


def _inputs(seed, T=11, D=5):
    rng = np.random.default_rng(seed)
    w = np.exp(rng.uniform(-3, 1, D)).astype(np.float32)
    u = rng.standard_normal(D).astype(np.float32)
    k, v = (rng.standard_normal((T, D)).astype(np.float32) for _ in range(2))
    return w, u, k, v


def _numpy_wkv(w, u, k, v):
    """The definition, term by term, in float64 (no stabilisation: only for moderate inputs)."""
    w, u, k, v = (np.asarray(a, np.float64) for a in (w, u, k, v))
    out = np.zeros_like(v)
    for t in range(len(k)):
        num, den = np.exp(u + k[t]) * v[t], np.exp(u + k[t])
        for i in range(t):
            weight = np.exp(-(t - 1 - i) * w + k[i])
            num, den = num + weight * v[i], den + weight
        out[t] = num / den
    return out


def test_token_shift_by_hand_and_with_a_previous_token():
    x = np.array([[1.0, 10.0], [2.0, 20.0], [4.0, 40.0]], np.float32)
    mu = np.array([0.25, 1.0], np.float32)
    np.testing.assert_allclose(token_shift(x, mu), [[0.25, 10.0], [1.25, 20.0], [2.5, 40.0]])
    np.testing.assert_allclose(np.asarray(token_shift(x, mu, np.array([4.0, 0.0], np.float32)))[0], [3.25, 10.0])
    # mu = 0 is a shift by one position: a causal convolution of width 2.
    np.testing.assert_allclose(token_shift(x, np.zeros(2, np.float32)), np.concatenate([np.zeros((1, 2)), x[:-1]]))


def test_both_forms_match_the_definition_in_float64():
    w, u, k, v = _inputs(0)
    expected = _numpy_wkv(w, u, k, v)
    np.testing.assert_allclose(recurrent(w, u, k, v), expected, **TOL)
    np.testing.assert_allclose(direct(w, u, k, v), expected, **TOL)


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_the_forms_agree_where_the_naive_exponentials_overflow():
    # e^k is infinite in float32 just above k = 88.7, as the page says.
    assert np.isfinite(np.exp(np.float32(88.7))) and np.isinf(np.exp(np.float32(88.8)))
    w, u, k, v = _inputs(1, T=11, D=5)
    big_k = k + np.linspace(0.0, 300.0, 11, dtype=np.float32)[:, None]  # keys up to 300
    assert big_k.max() > 300.0 and np.isinf(np.exp(big_k)).any()
    np.testing.assert_allclose(recurrent(w, u, big_k, v), direct(w, u, big_k, v), **TOL)
    # Large w * t: the factorised form e^{-(t-1)w} * sum_i e^{iw + k_i} overflows, the two forms do not.
    w_big = np.full(5, 40.0, np.float32)
    assert 40.0 * 10 == 400.0 and np.isinf(np.exp(np.float32(40.0) * np.arange(11, dtype=np.float32))).any()
    got, ref = recurrent(w_big, u, k, v), direct(w_big, u, k, v)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref, **TOL)
    np.testing.assert_allclose(got, _numpy_wkv(w_big, u, k, v), **TOL)  # moderate k: float64 can
    # A constant shift of every key cancels between numerator and denominator.
    np.testing.assert_allclose(recurrent(w, u, k + 200.0, v), recurrent(w, u, k, v), **TOL)


def test_a_weighted_average_of_the_values_so_far():
    w, u, k, v = _inputs(2)
    y = np.asarray(recurrent(w, u, k, v))
    running_max, running_min = np.maximum.accumulate(v, axis=0), np.minimum.accumulate(v, axis=0)
    assert np.all(y <= running_max + 1e-5) and np.all(y >= running_min - 1e-5)
    np.testing.assert_allclose(recurrent(w, u, k, np.full_like(v, 3.0)), np.full_like(v, 3.0), **TOL)
    np.testing.assert_allclose(recurrent(w, u, k[:1], v[:1]), v[:1], **TOL)  # T = 1: only itself


def test_decay_and_bonus_shape_the_weights():
    w, u, k, v = _inputs(3, T=7, D=5)
    k = np.zeros_like(k)
    # A huge decay forgets everything but the last two tokens (the current one and its predecessor).
    last_two = np.asarray(recurrent(np.full(5, 1e4, np.float32), u, k, v))  # sliced in NumPy
    bonus = np.exp(u)
    np.testing.assert_allclose(last_two[1:], (bonus * v[1:] + v[:-1]) / (bonus + 1.0), **TOL)
    # No decay and no bonus: the plain running mean.
    mean = recurrent(np.zeros(5, np.float32), np.zeros(5, np.float32), k, v)
    np.testing.assert_allclose(mean, np.cumsum(v, 0) / np.arange(1, 8)[:, None], **TOL)


def test_mixers_are_causal():
    params = init(jax.random.key(0), D, F)
    x = np.random.default_rng(4).standard_normal((T, D)).astype(np.float32)
    changed = x.copy()
    changed[6:] += 3.0
    w, u, k, v = _inputs(4)
    k2, v2 = k.copy(), v.copy()
    k2[6:] += 3.0
    v2[6:] -= 1.0
    for before, after in [
        (mix_time(params["time"], x), mix_time(params["time"], changed)),
        (mix_channel(params["channel"], x), mix_channel(params["channel"], changed)),
        (recurrent(w, u, k, v), recurrent(w, u, k2, v2)),
        (direct(w, u, k, v), direct(w, u, k2, v2)),
    ]:
        before, after = np.asarray(before), np.asarray(after)  # sliced in NumPy
        np.testing.assert_array_equal(before[:6], after[:6])
        assert not np.allclose(before[6:], after[6:])


def test_gradients_of_the_two_forms_agree():
    w, u, k, v = _inputs(5, T=7, D=3)
    with jax.enable_x64(True):
        args = tuple(np.float64(a) for a in (w, u, k, v))  # NumPy: no eager program per operation
        # One program gives the loss (for the finite difference below), both forms' gradients, and
        # the float32 gradient where the keys are huge (float32 inputs stay float32 under x64).
        huge = (w, u, k + np.float32(300.0), v)

        def loss_and_grads(a, huge):
            value, g_rec = jax.value_and_grad(lambda *a: jnp.sum(jnp.sin(wkv(*a))), argnums=(0, 1, 2, 3))(*a)
            g_dir = jax.grad(lambda *a: jnp.sum(jnp.sin(wkv_direct(*a))), argnums=(0, 1, 2, 3))(*a)
            g_huge = jax.grad(lambda k: jnp.sum(wkv(huge[0], huge[1], k, huge[3])))(huge[2])
            return value, g_rec, g_dir, g_huge

        loss_and_grads = jax.jit(loss_and_grads)
        loss = lambda *a: loss_and_grads(a, huge)[0]  # noqa: E731
        _, g_rec, g_dir, g_huge = loss_and_grads(args, huge)
        for a, b in zip(g_rec, g_dir):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        # and a central finite difference along a random direction
        d = tuple(np.random.default_rng(0).standard_normal(a.shape) for a in args)
        eps = 1e-6
        diff = float(loss(*(a + eps * e for a, e in zip(args, d)))) - float(loss(*(a - eps * e for a, e in zip(args, d))))
        np.testing.assert_allclose(diff / (2 * eps), sum(np.sum(np.asarray(g) * e) for g, e in zip(g_rec, d)), rtol=1e-6)
    # Finite gradients where the keys are huge, in float32.
    assert g_huge.dtype == np.float32 and np.all(np.isfinite(np.asarray(g_huge)))


def test_bfloat16_within_tolerance_and_vmap():
    w, u, k, v = _inputs(6)
    y16 = recurrent(w, u, k.astype(jnp.bfloat16), v.astype(jnp.bfloat16))
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y16, np.float32), recurrent(w, u, k, v), atol=3e-2)
    params = init(jax.random.key(1), D, F)
    x = np.random.default_rng(6).standard_normal((T, D)).astype(np.float32)
    params16 = {n: np.asarray(a).astype(jnp.bfloat16) for n, a in params["time"].items()}
    out16 = mix_time(params16, x.astype(jnp.bfloat16))
    assert out16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out16, np.float32), mix_time(params["time"], x), atol=1e-1)
    batched = jax.vmap(wkv, in_axes=(None, None, 0, 0))(w, u, np.stack([k, 2 * k]), np.stack([v, v]))
    np.testing.assert_allclose(np.asarray(batched)[1], recurrent(w, u, 2 * k, v), **TOL)


def test_time_mixing_step_by_step():
    params = init(jax.random.key(2), D, F)
    p = params["time"]
    x = np.random.default_rng(7).standard_normal((T, D))
    prev = np.concatenate([np.zeros((1, D)), x[:-1]])
    P = {name: np.asarray(a, np.float64) for name, a in p.items()}
    shift = lambda mu: mu * x + (1 - mu) * prev  # noqa: E731
    r, k, v = shift(P["mu_r"]) @ P["W_r"], shift(P["mu_k"]) @ P["W_k"], shift(P["mu_v"]) @ P["W_v"]
    expected = (1 / (1 + np.exp(-r)) * _numpy_wkv(np.exp(P["log_w"]), P["u"], k, v)) @ P["W_o"]
    np.testing.assert_allclose(mix_time(p, x.astype(np.float32)), expected, rtol=1e-4, atol=1e-4)
    c = {name: np.asarray(a, np.float64) for name, a in params["channel"].items()}
    hidden = np.maximum(shift(c["mu_k"]) @ c["W_k"], 0.0) ** 2
    expected = 1 / (1 + np.exp(-(shift(c["mu_r"]) @ c["W_r"]))) * (hidden @ c["W_v"])
    np.testing.assert_allclose(mix_channel(params["channel"], x.astype(np.float32)), expected, rtol=1e-4, atol=1e-4)


def test_init_spreads_the_decay_rates():
    params = init(jax.random.key(3), D, F)
    w = np.exp(params["time"]["log_w"])
    np.testing.assert_allclose([w[0], w[-1]], [np.exp(-5.0), np.e], rtol=1e-6)
    assert np.all(np.diff(w) > 0) and 1 / w[0] > 148  # a memory of about 150 tokens in the slowest channel
    assert params["channel"]["W_k"].shape == (D, F) and params["channel"]["W_v"].shape == (F, D)


def test_bad_input_raises_clear_errors():
    w, u, k, v = _inputs(8, T=5, D=3)
    with pytest.raises(ValueError, match=r"w must have shape \(3,\) \(one entry per channel of k, shape \(5, 3\)\), got shape \(1,\)"):
        wkv(w[:1], u, k, v)
    with pytest.raises(ValueError, match=r"v must have shape \(5, 3\)"):
        wkv_direct(w, u, k, v[:4])
    with pytest.raises(TypeError, match=r"k must be a floating-point array"):
        wkv(w, u, k.astype(np.int32), v)
    with pytest.raises(ValueError, match=r"x must have 2 axes \(T, D\)"):
        token_shift(np.ones((2, 5, 3), np.float32), np.ones(3, np.float32))
    params = init(jax.random.key(4), 3, 8)  # the page example's sizes: init's program is shared
    with pytest.raises(ValueError, match=r"params\['W_o'\] must have shape \(3, 3\)"):
        time_mixing({**params["time"], "W_o": np.ones((3, 4), np.float32)}, np.ones((5, 3), np.float32))
    with pytest.raises(ValueError, match=r"params\['W_v'\] must have shape \(8, 3\)"):
        channel_mixing({**params["channel"], "W_v": np.ones((5, 3), np.float32)}, np.ones((5, 3), np.float32))
    with pytest.raises(TypeError, match=r"F must be an int"):
        init(jax.random.key(0), 3, 4.0)
