import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.sequence_models.xlstm import init_slstm, mlstm_parallel, mlstm_recurrent, slstm

TOL = dict(rtol=1e-5, atol=1e-5)  # float32 against float64, reached on every input below
# The three functions check their input and hand it to a compiled core: called directly, they share
# one program per shape with the page's examples; a jax.jit around them compiled one more each.
s_lstm, m_recurrent, m_parallel = slstm, mlstm_recurrent, mlstm_parallel


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _numpy_slstm(params, xs):
    """The plain recurrence of the equation, in float64."""
    W, R, b = (np.asarray(params[n], np.float64) for n in ("W", "R", "b"))
    H = R.shape[0]
    c, n, h, out = np.zeros(H), np.zeros(H), np.zeros(H), []
    for x in np.asarray(xs, np.float64):
        z, i, f, o = np.split(x @ W + h @ R + b, 4)
        i, f = np.exp(i), _sigmoid(f)
        c, n = f * c + i * np.tanh(z), f * n + i
        h = _sigmoid(o) * c / n
        out.append(h)
    return np.array(out)


def _numpy_mlstm(q, k, v, i_pre, f_pre):
    q, k, v, i_pre, f_pre = (np.asarray(a, np.float64) for a in (q, k, v, i_pre, f_pre))
    k = k / np.sqrt(k.shape[1])
    C, n, out = np.zeros((v.shape[1], k.shape[1])), np.zeros(k.shape[1]), []
    for t in range(len(k)):
        i, f = np.exp(i_pre[t]), _sigmoid(f_pre[t])
        C, n = f * C + i * np.outer(v[t], k[t]), f * n + i * k[t]
        out.append(C @ q[t] / max(abs(n @ q[t]), 1.0))
    return np.array(out)


def _slstm_case(seed, T=7, D=3, H=5):  # the page's sizes: the tests and its example share their programs
    params = {name: np.asarray(a) for name, a in init_slstm(jax.random.key(seed), D, H).items()}  # edited in NumPy
    xs = np.random.default_rng(seed).standard_normal((T, D)).astype(np.float32)
    return params, xs


def _mlstm_case(seed, T=11, Dk=5, Dv=3):
    rng = np.random.default_rng(seed)
    q, k = (rng.standard_normal((T, Dk)).astype(np.float32) for _ in range(2))
    v = rng.standard_normal((T, Dv)).astype(np.float32)
    i_pre = rng.standard_normal(T).astype(np.float32)
    f_pre = (2.0 + rng.standard_normal(T)).astype(np.float32)
    return q, k, v, i_pre, f_pre


def test_slstm_stabilised_and_plain_match_float64():
    params, xs = _slstm_case(0)
    params["b"] = params["b"] + np.random.default_rng(1).standard_normal(20).astype(np.float32)
    expected = _numpy_slstm(params, xs)
    np.testing.assert_allclose(s_lstm(params, xs), expected, **TOL)
    np.testing.assert_allclose(s_lstm(params, xs, stabilise=False), expected, **TOL)


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_slstm_stabiliser_keeps_huge_and_tiny_input_gates_finite():
    assert np.isinf(np.exp(np.float32(100.0)))  # e^100 overflows float32; float64 holds it
    params, xs = _slstm_case(2)
    for shift in (100.0, -120.0):
        b = params["b"].copy()
        b[5:10] += shift  # input-gate biases
        shifted = dict(params, b=b)
        plain = s_lstm(shifted, xs, stabilise=False)
        assert np.isnan(plain).any()  # inf / inf, or 0 / 0
        h = s_lstm(shifted, xs)
        assert np.all(np.isfinite(h)) and np.all(np.abs(h) < 1)
        np.testing.assert_allclose(h, _numpy_slstm(shifted, xs), **TOL)


def test_slstm_normaliser_makes_a_weighted_average():
    params, xs = _slstm_case(3)
    # Output gate open (o = 1), forget gate shut (f = 0): h = c / n = z exactly, whatever the input gate.
    b = params["b"].copy()
    b[15:], b[10:15], b[5:10] = 1e4, -1e4, 50.0
    R0 = np.zeros_like(params["R"])
    h = s_lstm(dict(params, b=b, R=R0), xs)
    np.testing.assert_allclose(h, np.tanh(xs @ np.asarray(params["W"])[:, :5]), **TOL)
    # Forget gate open (f -> 1) and a constant input gate: h is the running mean of z.
    b = params["b"].copy()
    b[15:], b[10:15], b[5:10] = 1e4, 1e4, 7.0
    W = params["W"].copy()
    W[:, 5:10] = 0.0
    z = np.tanh(xs @ np.asarray(params["W"])[:, :5])
    np.testing.assert_allclose(s_lstm(dict(params, b=b, R=R0, W=W), xs), np.cumsum(z, 0) / np.arange(1, len(xs) + 1)[:, None], **TOL)


def test_init_forget_gate_memory():
    params = init_slstm(jax.random.key(4), 3, 5)
    b = np.asarray(params["b"])
    b_f = b[10:15]
    np.testing.assert_allclose(b_f, np.linspace(3.0, 6.0, 5), rtol=1e-6)
    memory = 1 / (1 - _sigmoid(b_f.astype(np.float64)))  # expected number of steps a value is kept
    assert 20 < memory[0] < 22 and 400 < memory[-1] < 410
    np.testing.assert_array_equal(b[:10], 0.0)
    np.testing.assert_array_equal(b[15:], 0.0)


def test_mlstm_forms_match_float64_and_each_other():
    q, k, v, i_pre, f_pre = _mlstm_case(5)
    expected = _numpy_mlstm(q, k, v, i_pre, f_pre)
    np.testing.assert_allclose(m_recurrent(q, k, v, i_pre, f_pre), expected, **TOL)
    np.testing.assert_allclose(m_recurrent(q, k, v, i_pre, f_pre, stabilise=False), expected, **TOL)
    np.testing.assert_allclose(m_parallel(q, k, v, i_pre, f_pre), expected, **TOL)
    # T = 1: C = i v k^T / sqrt(Dk), n = i k / sqrt(Dk)
    one = m_parallel(q[:1], k[:1], v[:1], i_pre[:1], f_pre[:1])
    np.testing.assert_allclose(one, _numpy_mlstm(q[:1], k[:1], v[:1], i_pre[:1], f_pre[:1]), **TOL)
    np.testing.assert_allclose(m_recurrent(q[:1], k[:1], v[:1], i_pre[:1], f_pre[:1]), one, **TOL)


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_mlstm_stabiliser_at_huge_input_gates():
    q, k, v, i_pre, f_pre = _mlstm_case(6)
    big = i_pre + 100.0
    assert np.isnan(m_recurrent(q, k, v, big, f_pre, stabilise=False)).any()
    expected = _numpy_mlstm(q, k, v, big, f_pre)
    for h in (m_recurrent(q, k, v, big, f_pre), m_parallel(q, k, v, big, f_pre)):
        assert np.all(np.isfinite(h))
        # The floor e^-m is negligible here, so the read-out is C q / |n^T q|, and where n^T q is
        # small (outputs of 35) float32 loses a few more digits: rtol 1e-4.
        np.testing.assert_allclose(h, expected, rtol=1e-4, atol=1e-5)


def test_causality():
    params, xs = _slstm_case(7)
    xs2 = xs.copy()
    xs2[4:] += 1.0
    q, k, v, i_pre, f_pre = _mlstm_case(7)
    changed = [a.copy() for a in (q, k, v, i_pre, f_pre)]
    for a in changed:
        a[4:] += 1.0
    pairs = [(s_lstm(params, xs), s_lstm(params, xs2)),
             (m_recurrent(q, k, v, i_pre, f_pre), m_recurrent(*changed)),
             (m_parallel(q, k, v, i_pre, f_pre), m_parallel(*changed))]
    for before, after in pairs:
        before, after = np.asarray(before), np.asarray(after)
        np.testing.assert_array_equal(before[:4], after[:4])
        assert not np.allclose(before[4:], after[4:])


def test_mlstm_gradients_of_the_two_forms_agree():
    q, k, v, i_pre, f_pre = _mlstm_case(8, T=7, Dk=3, Dv=2)
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        args = tuple(np.float64(a) for a in (q, k, v, i_pre, f_pre))  # NumPy: no eager program per operation
        d = tuple(rng.standard_normal(a.shape) for a in args)
        eps = 1e-6
        loss_p = lambda *a: jnp.sum(jnp.sin(mlstm_parallel(*a)))  # noqa: E731
        loss_r = lambda *a: jnp.sum(jnp.sin(mlstm_recurrent(*a)))  # noqa: E731

        @jax.jit  # one program: both forms' gradients, and the parallel loss a step either side along d
        def both(args, d):
            steps = [loss_p(*(a + sign * eps * e for a, e in zip(args, d))) for sign in (1.0, -1.0)]
            return (jax.grad(loss_p, argnums=(0, 1, 2, 3, 4))(*args), jax.grad(loss_r, argnums=(0, 1, 2, 3, 4))(*args),
                    steps[0] - steps[1])

        g_p, g_r, diff = both(args, d)
        for a, b in zip(g_p, g_r):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(float(diff) / (2 * eps), sum(np.sum(np.asarray(g) * e) for g, e in zip(g_p, d)),
                                   rtol=1e-6)


def test_bfloat16_and_vmap():
    q, k, v, i_pre, f_pre = _mlstm_case(9)
    b16 = [a.astype(jnp.bfloat16) for a in (q, k, v, i_pre, f_pre)]
    for f in (m_parallel, m_recurrent):
        h16 = f(*b16)
        assert h16.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(h16, np.float32), m_parallel(q, k, v, i_pre, f_pre), atol=5e-2)
    params, xs = _slstm_case(9)
    h16 = s_lstm(params, xs.astype(jnp.bfloat16))
    assert h16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(h16, np.float32), s_lstm(params, xs), atol=2e-2)
    heads = jax.vmap(mlstm_parallel)(*(np.stack([a, 2 * a]) for a in (q, k, v, i_pre, f_pre)))
    np.testing.assert_allclose(np.asarray(heads)[1], m_parallel(2 * q, 2 * k, 2 * v, 2 * i_pre, 2 * f_pre), **TOL)


def test_bad_input_raises_clear_errors():
    params, xs = _slstm_case(10, T=5)
    with pytest.raises(ValueError, match=r"xs must have shape \(T, D\) with D = 3"):
        slstm(params, xs[:, :2])
    with pytest.raises(ValueError, match=r"params\['R'\] must have shape \(5, 20\)"):
        slstm(dict(params, R=params["R"][:4]), xs)
    with pytest.raises(TypeError, match=r"stabilise must be a bool"):
        slstm(params, xs, stabilise=1)
    q, k, v, i_pre, f_pre = _mlstm_case(10, T=5)
    with pytest.raises(ValueError, match=r"q and k must have the same shape"):
        mlstm_parallel(q, k[:, :2], v, i_pre, f_pre)
    with pytest.raises(ValueError, match=r"f_pre must have shape \(5,\) \(one per token of k\)"):
        mlstm_recurrent(q, k, v, i_pre, f_pre[:4])
    with pytest.raises(TypeError, match=r"i_pre must be a floating-point array"):
        mlstm_parallel(q, k, v, np.zeros(5, np.int32), f_pre)
    with pytest.raises(TypeError, match=r"H must be an int"):
        init_slstm(jax.random.key(0), 3, 5.0)
