import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.sequence_models.hyena import (
    direct_conv,
    fft_conv,
    hyena,
    implicit_filter,
    init,
)

TOL = dict(rtol=1e-5, atol=1e-5)  # float32 against float64, reached on every input below
by_fft = jax.jit(fft_conv)
directly = jax.jit(direct_conv)
operator = jax.jit(hyena)


def _numpy_causal_conv(u, h):
    """numpy.convolve per channel, cut to the first T outputs, in float64."""
    u, h = np.asarray(u, np.float64), np.asarray(h, np.float64)
    return np.stack([np.convolve(u[:, d], h[:, d])[: len(u)] for d in range(u.shape[1])], axis=1)


def _pair(seed, T=11, D=5):
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal((T, D)).astype(np.float32) for _ in range(2))


def test_both_convolutions_match_numpy_convolve():
    u, h = _pair(0)
    expected = _numpy_causal_conv(u, h)
    np.testing.assert_allclose(by_fft(u, h), expected, **TOL)
    np.testing.assert_allclose(directly(u, h), expected, **TOL)
    # T = 1: y = h_0 u_0
    np.testing.assert_allclose(by_fft(u[:1], h[:1]), u[:1] * h[:1], **TOL)
    np.testing.assert_allclose(directly(u[:1], h[:1]), u[:1] * h[:1], **TOL)


def test_without_padding_the_fft_wraps_around():
    u, h = _pair(1)
    circular = np.fft.irfft(np.fft.rfft(u, axis=0) * np.fft.rfft(h, axis=0), n=11, axis=0)  # length T only
    expected = _numpy_causal_conv(u, h)
    assert not np.allclose(circular, expected, atol=1e-2)
    # The error is the tail of the full convolution folded back onto the start.
    full = np.stack([np.convolve(u[:, d], h[:, d]) for d in range(5)], axis=1)  # (2T - 1, D)
    np.testing.assert_allclose(circular - expected, np.pad(full[11:], [(0, 1), (0, 0)]), atol=1e-4)


def test_convolutions_are_causal_and_shift_equivariant():
    u, h = _pair(2)
    later = u.copy()
    later[6:] += 1000.0
    # The direct form is exactly causal; the FFT mixes all positions, so a later input moves the
    # earlier outputs by rounding, relative to the largest values of the sequence (float32 eps).
    # (Outputs are read in NumPy before they are sliced: a slice of a JAX array compiles a program.)
    np.testing.assert_array_equal(np.asarray(directly(later, h))[:6], np.asarray(directly(u, h))[:6])
    fft_later, fft_u = np.asarray(by_fft(later, h)), np.asarray(by_fft(u, h))
    moved = np.abs(fft_later[:6] - fft_u[:6]).max()
    assert 0 < moved < 10 * np.finfo(np.float32).eps * np.abs(fft_later).max()
    for conv in (by_fft, directly):
        assert not np.allclose(np.asarray(conv(later, h))[6:], np.asarray(conv(u, h))[6:])
        # Delaying the input by 3 steps delays the output by 3 steps.
        delayed = np.concatenate([np.zeros((3, 5), np.float32), u[:-3]])
        np.testing.assert_allclose(np.asarray(conv(delayed, h))[3:], np.asarray(conv(u, h))[:-3], **TOL)


def test_gradients_of_the_two_convolutions_agree():
    u, h = _pair(3, T=7, D=3)
    with jax.enable_x64(True):
        u64, h64 = u.astype(np.float64), h.astype(np.float64)
        g_fft = jax.jit(jax.grad(lambda u, h: jnp.sum(jnp.sin(fft_conv(u, h))), argnums=(0, 1)))(u64, h64)
        g_dir = jax.jit(jax.grad(lambda u, h: jnp.sum(jnp.sin(direct_conv(u, h))), argnums=(0, 1)))(u64, h64)
        for a, b in zip(g_fft, g_dir):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_implicit_filters_window_and_length():
    params = init(jax.random.key(0), 5, max_len=64)
    p = params["filter"]
    h = np.asarray(implicit_filter(p, T=64))
    assert h.shape == (64, 10)
    # The filter of length 11 is the start of the filter of length 64: the parameters do not depend on T.
    np.testing.assert_allclose(implicit_filter(p, T=11), h[:11], **TOL)
    # The window falls to 1% at 150% of max_len in the slowest channel, 30% in the fastest.
    decay = np.asarray(p["decay"], np.float64)
    np.testing.assert_allclose(np.exp(-decay[[0, -1]] * 64 * np.array([1.5, 0.3])), 0.01, rtol=1e-5)
    # The filter is the network's output times that window.
    W = {k: np.asarray(v, np.float64) for k, v in p.items()}
    angles = np.arange(64)[:, None] * W["freqs"][None]  # (T, K)
    rho = np.concatenate([np.cos(angles), np.sin(angles)], axis=1)  # positional_features, in float64
    a = np.sin(np.sin(rho @ W["W1"] + W["b1"]) @ W["W2"] + W["b2"])
    expected = np.exp(-np.arange(64)[:, None] * decay) * (a @ W["W3"])
    np.testing.assert_allclose(h, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(p["freqs"], 2 * np.pi * np.arange(1, 5) / 64, rtol=1e-6)


def _numpy_hyena(params, u):
    P = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    u = np.asarray(u, np.float64)
    T, D = u.shape
    x = u @ P["W_in"]
    x = sum(P["short"][j] * np.concatenate([np.zeros((j, 3 * D)), x[: T - j]]) for j in range(3))
    v, x1, x2 = np.split(x, 3, axis=1)
    h = np.asarray(implicit_filter(params["filter"], T), np.float64)
    z = x1 * _numpy_causal_conv(v, h[:, :D])
    z = x2 * _numpy_causal_conv(z, h[:, D:])
    return z @ P["W_out"]


def test_hyena_matches_a_numpy_reference_and_is_causal():
    params = init(jax.random.key(1), 5, max_len=64)
    params["short"] = params["short"] + 0.3 * np.random.default_rng(2).standard_normal((3, 15)).astype(np.float32)
    u = np.random.default_rng(4).standard_normal((11, 5)).astype(np.float32)
    y = np.asarray(operator(params, u))
    np.testing.assert_allclose(y, _numpy_hyena(params, u), rtol=1e-4, atol=1e-5)
    later = u.copy()
    later[6:] -= 2.0
    y_later = np.asarray(operator(params, later))
    np.testing.assert_allclose(y_later[:6], y[:6], atol=1e-5)  # causal up to the FFTs rounding; |y| is up to 4
    assert not np.allclose(y_later[6:], y[6:])


def test_bfloat16_and_vmap():
    params = init(jax.random.key(3), 5, max_len=64)
    u = np.random.default_rng(5).standard_normal((11, 5)).astype(np.float32)
    y16 = operator(jax.tree.map(lambda a: np.asarray(a).astype(jnp.bfloat16), params), u.astype(jnp.bfloat16))
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y16, np.float32), operator(params, u), atol=5e-2, rtol=5e-2)
    u2, h2 = _pair(6)
    c16 = by_fft(u2.astype(jnp.bfloat16), h2.astype(jnp.bfloat16))
    assert c16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(c16, np.float32), _numpy_causal_conv(u2, h2), atol=0.1, rtol=2e-2)
    batched = jax.vmap(hyena, in_axes=(None, 0))(params, np.stack([u, -u]))
    np.testing.assert_allclose(np.asarray(batched)[1], operator(params, -u), **TOL)


def test_bad_input_raises_clear_errors():
    u, h = _pair(7)
    with pytest.raises(ValueError, match=r"u and h must have the same shape \(T, D\), got u \(11, 5\) and h \(10, 5\)"):
        fft_conv(u, h[:10])
    with pytest.raises(TypeError, match=r"h must be a floating-point array"):
        direct_conv(u, h.astype(np.int32))
    params = init(jax.random.key(4), 5, max_len=64)
    with pytest.raises(ValueError, match=r"params\['W_in'\] must have shape \(3, 9\)"):
        hyena(params, u[:, :3])
    with pytest.raises(ValueError, match=r"params\['decay'\] must have shape \(10,\)"):
        implicit_filter(dict(params["filter"], decay=np.asarray(params["filter"]["decay"])[:4]), 11)
    with pytest.raises(TypeError, match=r"T must be an int"):
        implicit_filter(params["filter"], 11.0)
    with pytest.raises(TypeError, match=r"max_len must be an int"):
        init(jax.random.key(0), 5, max_len=32.0)
