import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.sequence_models.retnet import init, multiscale_gammas, multiscale_retention, retention

TOL = dict(rtol=1e-4, atol=1e-4)  # float32 against a float64 loop
# retention checks its input and hands it as it comes to a compiled core: called directly it shares one
# program per shape (and gamma traced) with the page's examples; a jax.jit around it compiled more.
forms = retention


def _qkv(seed, T=11, Dk=4, Dv=3):
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(s).astype(np.float32) for s in [(T, Dk), (T, Dk), (T, Dv)])


def _loop(q, k, v, gamma):
    q, k, v = (np.asarray(z, np.float64) for z in (q, k, v))
    return np.stack([sum(gamma ** (n - m) * (q[n] @ k[m]) * v[m] for m in range(n + 1)) for n in range(len(q))])


@pytest.mark.parametrize("gamma", [0.9, 0.3])
def test_the_three_forms_match_a_numpy_loop(gamma):
    q, k, v = _qkv(0)  # T = 11, the page's shapes
    expected = _loop(q, k, v, gamma)
    np.testing.assert_allclose(forms(q, k, v, gamma), expected, **TOL)
    np.testing.assert_allclose(forms(q, k, v, gamma, form="recurrent"), expected, **TOL)
    for chunk in (1, 4, 16):  # T = 11 is not a multiple of 4; one chunk longer than T
        np.testing.assert_allclose(forms(q, k, v, gamma, form="chunkwise", chunk_size=chunk), expected, **TOL)


def test_t_one_causality_and_a_hand_case():
    q, k, v = _qkv(1, T=1)
    for form, chunk in (("parallel", None), ("recurrent", None), ("chunkwise", 4)):
        np.testing.assert_allclose(retention(q, k, v, 0.5, form=form, chunk_size=chunk), (q @ k.T) * v, **TOL)
    q, k, v = _qkv(0)
    v2 = v.copy()
    v2[7:] += 3.0
    np.testing.assert_allclose(np.asarray(forms(q, k, v2, 0.9))[:7], np.asarray(forms(q, k, v, 0.9))[:7], **TOL)
    one = np.ones((3, 1), np.float32)
    np.testing.assert_allclose(retention(one, one, one, 0.5), [[1.0], [1.5], [1.75]])  # 1, 0.5 + 1, 0.25 + 0.5 + 1


def test_long_sequences_stay_finite_and_far_tokens_fade():
    q, k, v = _qkv(2, T=600)
    o = forms(q, k, v, 0.5)
    assert np.all(np.isfinite(o))  # gamma^(n - m) for n < m would overflow; it is never computed
    np.testing.assert_allclose(o, forms(q, k, v, 0.5, form="chunkwise", chunk_size=64), rtol=1e-4, atol=1e-4)
    v2 = v.copy()
    v2[0] += 1e3
    assert np.abs((np.asarray(forms(q, k, v2, 0.5)) - np.asarray(o))[100:]).max() < 1e-20  # 0.5^100 of the change


def test_multiscale_gammas_and_their_time_scales():
    gammas = np.asarray(multiscale_gammas(4), np.float64)
    np.testing.assert_allclose(gammas, [1 - 1 / 32, 1 - 1 / 64, 1 - 1 / 128, 1 - 1 / 256], rtol=1e-7)
    np.testing.assert_allclose(1 / (1 - gammas), [32, 64, 128, 256], rtol=1e-4)
    assert round(math.log(0.5) / math.log(gammas[0])) == 22  # the first head halves in about 22 steps


def test_gradients_of_the_forms_agree_bfloat16_and_vmap():
    q, k, v = _qkv(3, T=7)
    loss = lambda form, chunk: (lambda q, k, v: jnp.sum(jnp.sin(retention(q, k, v, 0.8, form=form, chunk_size=chunk))))
    grads = jax.jit(lambda *a: [jax.grad(loss(f, c), argnums=(0, 1, 2))(*a)
                                for f, c in (("parallel", None), ("chunkwise", 3))])(q, k, v)  # one program
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, **TOL)
    q, k, v = _qkv(0)
    o16 = forms(*(z.astype(jnp.bfloat16) for z in (q, k, v)), 0.9)
    assert o16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(o16, np.float32), _loop(q, k, v, 0.9), atol=0.1, rtol=0.03)
    gammas = jnp.array([0.5, 0.9])
    batched = jax.vmap(lambda g: retention(q, k, v, g))(gammas)
    np.testing.assert_allclose(np.asarray(batched)[1], _loop(q, k, v, 0.9), **TOL)


def test_multiscale_retention_forms_agree_and_heads_have_their_own_decay():
    params = init(jax.random.key(4), 8)
    x = np.random.default_rng(5).standard_normal((11, 8)).astype(np.float32)
    y = multiscale_retention(params, x, H=2)
    assert y.shape == (11, 8)
    np.testing.assert_allclose(multiscale_retention(params, x, H=2, form="recurrent"), y, **TOL)
    np.testing.assert_allclose(multiscale_retention(params, x, H=2, form="chunkwise", chunk_size=4), y, **TOL)
    # Head h is retention with gamma_h = 1 - 2^(-5-h) on its half of the features.
    W = {name: np.asarray(w, np.float64) for name, w in params.items()}
    q, k, v = (x @ W[w] for w in ("W_Q", "W_K", "W_V"))
    heads = []
    for h, gamma in enumerate([1 - 1 / 32, 1 - 1 / 64]):
        part = slice(4 * h, 4 * h + 4)
        o = _loop(q[:, part], k[:, part] / 2.0, v[:, part], gamma)  # keys scaled by (D / H)^(-1/2)
        heads.append((o - o.mean(-1, keepdims=True)) / np.sqrt(o.var(-1, keepdims=True) + 1e-6))
    pre = x @ W["W_G"]
    gate = pre / (1 + np.exp(-pre))  # silu
    expected = (gate * np.concatenate(heads, axis=1)) @ W["W_O"]
    np.testing.assert_allclose(y, expected, rtol=1e-3, atol=1e-3)


def test_bad_input_raises_clear_errors():
    q, k, v = _qkv(6)
    with pytest.raises(ValueError, match=r"form must be one of \('parallel', 'recurrent', 'chunkwise'\), got 'chunked'"):
        retention(q, k, v, 0.9, form="chunked")
    with pytest.raises(ValueError, match=r"chunk_size is required for form='chunkwise'"):
        retention(q, k, v, 0.9, form="chunkwise")
    with pytest.raises(ValueError, match=r"chunk_size is only used by form='chunkwise'"):
        retention(q, k, v, 0.9, chunk_size=4)
    for gamma in (1.0, 0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"gamma must lie in \(0, 1\)"):
            retention(q, k, v, gamma)
    with pytest.raises(ValueError, match=r"gamma must lie in \(0, 1\)"):
        retention(q, k, v, jnp.float32(1.0))
    with pytest.raises(TypeError, match=r"gamma must be"):
        retention(q, k, v, True)
    with pytest.raises(ValueError, match=r"k must have shape \(11, 4\)"):
        retention(q, k[:, :3], v, 0.9)
    with pytest.raises(ValueError, match=r"v must have shape \(11, 3\)"):
        retention(q, k, v[:10], 0.9)
    with pytest.raises(TypeError, match=r"chunk_size must be an int"):
        retention(q, k, v, 0.9, form="chunkwise", chunk_size=2.5)
    params = init(jax.random.key(7), 8)
    with pytest.raises(ValueError, match=r"H must divide D = 8, got H=3"):
        multiscale_retention(params, np.ones((5, 8), np.float32), H=3)
    with pytest.raises(ValueError, match=r"x must have shape \(5, 8\)"):
        multiscale_retention(params, np.ones((5, 6), np.float32), H=2)
