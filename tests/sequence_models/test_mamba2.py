import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.sequence_models.mamba2 import segsum, ssd_chunked, ssd_quadratic, ssd_recurrent

TOL = dict(rtol=1e-4, atol=1e-4)  # float32 against a float64 loop
# The three forms check their inputs, then run one compiled core each: the tests call them as they are
# (a jax.jit around them would compile a second program per shape), at the page's shapes where they can.


def _inputs(seed, T=11, H=3, P=5, N=7):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, H, P))
    log_a = -rng.uniform(0.0, 1.0, (T, H))
    B, C = rng.standard_normal((T, N)), rng.standard_normal((T, N))
    return tuple(z.astype(np.float32) for z in (x, log_a, B, C))


def _loop(x, log_a, B, C):
    x, a, B, C = np.asarray(x, np.float64), np.exp(np.asarray(log_a, np.float64)), np.asarray(B, np.float64), np.asarray(C, np.float64)
    T, H, P = x.shape
    h = np.zeros((H, B.shape[1], P))
    ys = []
    for t in range(T):
        h = a[t][:, None, None] * h + B[t][None, :, None] * x[t][:, None, :]
        ys.append(np.einsum("n,hnp->hp", C[t], h))
    return np.stack(ys)


def test_the_three_forms_match_a_numpy_loop_with_t_not_a_multiple_of_the_chunk():
    args = _inputs(0)  # T = 11, the page's shapes
    expected = _loop(*args)
    np.testing.assert_allclose(ssd_recurrent(*args), expected, **TOL)
    np.testing.assert_allclose(ssd_quadratic(*args), expected, **TOL)
    for Q in (1, 4, 16):  # one step per chunk, 11 = 2 * 4 + 3, one chunk longer than T
        np.testing.assert_allclose(ssd_chunked(*args, chunk_size=Q), expected, **TOL)


def test_t_one_and_causality():
    args = _inputs(1, T=1)
    for y in (ssd_recurrent(*args), ssd_quadratic(*args), ssd_chunked(*args, chunk_size=4)):
        np.testing.assert_allclose(y, _loop(*args), **TOL)
    x, log_a, B, C = _inputs(0)
    x2 = x.copy()
    x2[6:] += 5.0
    y, y2 = (np.asarray(ssd_chunked(z, log_a, B, C, chunk_size=4)) for z in (x, x2))
    np.testing.assert_allclose(y2[:6], y[:6], **TOL)


def test_segsum_builds_the_decay_mask_and_keeps_float32_precision():
    log_a = np.log(np.array([0.5, 0.25, 0.8, 1.0], np.float32))
    L = np.exp(np.asarray(segsum(log_a)))
    a = np.exp(log_a)
    for i in range(4):
        for j in range(4):
            assert L[i, j] == pytest.approx(np.prod(a[j + 1:i + 1]) if i >= j else 0.0, rel=1e-6)
    # After a long prefix the running sum is large, and the difference of two running sums loses the
    # small segments; the segment sums do not.
    long = np.concatenate([np.full(2000, -5.0), np.full(8, -1e-4)]).astype(np.float32)
    S = np.asarray(segsum(long))
    running = np.cumsum(long)  # float32
    exact = -1e-4 * 3  # the sum over (2004, 2007]
    assert abs(S[2007, 2004] - exact) < 1e-9
    assert abs((running[2007] - running[2004]) - exact) > 1e-4  # the naive way is off by over 30 %


def test_the_mask_is_semiseparable_and_the_matrix_has_rank_at_most_n_below_the_diagonal():
    x, log_a, B, C = _inputs(2, T=11, N=3)
    L = np.exp(np.asarray(segsum(log_a[:, 0]), np.float64))
    M = L * (C @ B.T)
    for cut in (3, 6, 9):
        assert np.linalg.matrix_rank(L[cut:, :cut], tol=1e-6) == 1  # a block below the diagonal
        assert np.linalg.matrix_rank(M[cut:, :cut], tol=1e-6) <= 3
    assert np.linalg.matrix_rank(M, tol=1e-6) == 11  # the whole matrix is not low rank


def test_without_decay_it_is_causal_linear_attention():
    x, log_a, B, C = _inputs(3)
    zero = np.zeros_like(log_a)
    scores = np.tril(C @ B.T)  # queries C, keys B, values x, no softmax, no normalisation
    expected = np.einsum("ij,jhp->ihp", scores, x)
    np.testing.assert_allclose(ssd_chunked(x, zero, B, C, chunk_size=4), expected, rtol=1e-4, atol=1e-3)


def test_gradients_of_the_forms_agree_and_bfloat16():
    args = tuple(jnp.asarray(z) for z in _inputs(4, T=7, H=2, P=3, N=5))
    loss = lambda f: (lambda *a: jnp.sum(jnp.sin(f(*a))))
    # Each gradient as one compiled program (forward and backward), not eager operations around the cores.
    g_rec = jax.jit(jax.grad(loss(ssd_recurrent), argnums=(0, 1, 2, 3)))(*args)
    g_chunk = jax.jit(jax.grad(loss(lambda *a: ssd_chunked(*a, chunk_size=3)), argnums=(0, 1, 2, 3)))(*args)
    for a, b in zip(g_rec, g_chunk):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    args = _inputs(0)
    y16 = ssd_chunked(*(z.astype(jnp.bfloat16) for z in args), chunk_size=4)
    assert y16.dtype == jnp.bfloat16
    scale = np.abs(_loop(*args)).max()
    np.testing.assert_allclose(np.asarray(y16, np.float32), _loop(*args), atol=0.03 * scale)


def test_bad_input_raises_clear_errors():
    x, log_a, B, C = _inputs(5)
    with pytest.raises(ValueError, match=r"log_a must have shape \(11, 3\)"):
        ssd_recurrent(x, log_a[:, :2], B, C)
    with pytest.raises(ValueError, match=r"C must have shape \(11, 7\)"):
        ssd_quadratic(x, log_a, B, C[:, :6])
    with pytest.raises(ValueError, match=r"B must have shape \(11, 7\)"):
        ssd_chunked(x, log_a, B[:10], C, chunk_size=4)
    with pytest.raises(ValueError, match=r"x must have 3 axes"):
        ssd_recurrent(x[:, 0], log_a, B, C)
    with pytest.raises(TypeError, match=r"chunk_size must be an int"):
        ssd_chunked(x, log_a, B, C, chunk_size=4.0)
    with pytest.raises(ValueError, match=r"chunk_size must be at least 1"):
        ssd_chunked(x, log_a, B, C, chunk_size=0)
    with pytest.raises(TypeError, match=r"log_a must be a floating-point array"):
        segsum(np.arange(3))
