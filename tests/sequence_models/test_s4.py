import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.signal

from cookbook.sequence_models.s4 import (
    apply,
    apply_recurrent,
    causal_conv,
    discretize,
    hippo_legs,
    init,
    kernel,
)

# apply and apply_recurrent check their inputs and then run a compiled core: called directly, they share
# its programs with the page's example (no jax.jit around them to compile again).
conv_form, recurrent_form = apply, apply_recurrent


def test_hippo_legs_matches_the_formula_entry_by_entry():
    N = 7
    A, B = hippo_legs(N)
    assert A.shape == (N, N) and B.shape == (N,)
    for n in range(N):
        assert B[n] == pytest.approx(math.sqrt(2 * n + 1), rel=1e-6)
        for k in range(N):
            expected = -math.sqrt(2 * n + 1) * math.sqrt(2 * k + 1) if n > k else (-(n + 1) if n == k else 0.0)
            assert A[n, k] == pytest.approx(expected, rel=1e-6, abs=0.0)


def test_hippo_legs_is_stable_and_normal_plus_low_rank():
    A, _ = hippo_legs(11)
    A = np.asarray(A, np.float64)
    np.testing.assert_allclose(np.sort(np.linalg.eigvals(A).real), -np.arange(11, 0, -1), rtol=1e-6)  # triangular
    P = np.sqrt(np.arange(11) + 0.5)
    S = A + np.outer(P, P) + 0.5 * np.eye(11)
    np.testing.assert_allclose(S, -S.T, atol=1e-5)  # A + P P^T = -I/2 + skew-symmetric
    np.testing.assert_allclose(np.linalg.eigvals(A + np.outer(P, P)).real, -0.5, atol=1e-5)


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_discretisation_matches_scipy_cont2discrete(method):
    A, B = hippo_legs(7)
    C = np.random.default_rng(0).standard_normal((1, 7))
    step = 0.1
    Ad, Bd, *_ = scipy.signal.cont2discrete((np.asarray(A, np.float64), np.asarray(B, np.float64)[:, None], C,
                                             np.zeros((1, 1))), step, method=method)
    A_bar, B_bar = discretize(A, B, step, method)
    np.testing.assert_allclose(A_bar, Ad, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(B_bar, Bd[:, 0], rtol=1e-5, atol=1e-6)


def test_zoh_handles_a_singular_matrix_and_the_two_methods_converge():
    A = np.array([[0.0, 1.0], [0.0, 0.0]], np.float32)  # singular: A^-1 does not exist, the block expm does
    A_bar, B_bar = discretize(A, np.array([0.0, 1.0], np.float32), 0.5)
    np.testing.assert_allclose(A_bar, [[1.0, 0.5], [0.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(B_bar, [0.125, 0.5], atol=1e-6)  # double integrator: (s^2 / 2, s)
    A, B = hippo_legs(7)  # the size of the test above: its two programs serve here too
    gaps = [float(np.abs(np.asarray(discretize(A, B, s)[0]) - np.asarray(discretize(A, B, s, "bilinear")[0])).max())
            for s in (0.1, 0.01)]
    assert gaps[1] < gaps[0] / 100  # a tenth of the step, under a hundredth of the gap (third order)


def _numpy_conv(u, K):
    T = len(u)
    return np.stack([sum(K[l] * u[k - l] for l in range(k + 1)) for k in range(T)])


def _numpy_kernel(params, T):
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    step = np.exp(p["log_step"])[:, None]
    A = -np.exp(p["log_A_re"]) + 1j * p["A_im"]
    A_bar = np.exp(step * A)
    CB = (p["C_re"] + 1j * p["C_im"]) * (A_bar - 1) / A
    return np.stack([2 * (CB * A_bar**l).sum(axis=1).real for l in range(T)])  # (T, H)


def test_kernel_convolution_and_recurrence_agree():
    k_p, k_u = jax.random.split(jax.random.key(1))
    params = init(k_p, 3, 5)  # the page's shapes: one compilation serves both
    u = np.asarray(jax.random.normal(k_u, (11, 3)), np.float64)
    K = _numpy_kernel(params, 11)
    np.testing.assert_allclose(kernel(params, 11), K, rtol=1e-4, atol=1e-5)
    expected = _numpy_conv(u, K) + u * np.asarray(params["D"])
    np.testing.assert_allclose(conv_form(params, u.astype(np.float32)), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(recurrent_form(params, u.astype(np.float32)), expected, rtol=1e-4, atol=1e-5)
    # FFT convolution against the direct sum, and causality.
    np.testing.assert_allclose(causal_conv(u[:, 0], K[:, 0]), _numpy_conv(u[:, 0], K[:, 0]), rtol=1e-4, atol=1e-5)
    u2 = u.copy()
    u2[6:] += 5.0
    np.testing.assert_allclose(conv_form(params, u2.astype(np.float32))[:6], expected[:6], rtol=1e-4, atol=1e-5)


def test_dense_hippo_recurrence_equals_its_kernel():
    # The dense (non-diagonal) case: K_l = C A_bar^l B_bar, convolved, equals the discrete recurrence.
    A, B = hippo_legs(7)  # N = 7 as in the discretisation tests: the same program
    A_bar, B_bar = (np.asarray(a, np.float64) for a in discretize(A, B, 0.05))
    C = np.random.default_rng(2).standard_normal(7)
    u = np.random.default_rng(3).standard_normal(7)
    K = np.array([C @ np.linalg.matrix_power(A_bar, l) @ B_bar for l in range(7)])
    x, ys = np.zeros(7), []
    for u_k in u:
        x = A_bar @ x + B_bar * u_k
        ys.append(C @ x)
    np.testing.assert_allclose(causal_conv(u.astype(np.float32), K.astype(np.float32)), ys, rtol=1e-4, atol=1e-5)


def test_initialisation_one_step_and_bfloat16():
    params = init(jax.random.key(4), 3, 5, step_min=0.01, step_max=0.1)
    step = np.exp(np.asarray(params["log_step"]))
    assert np.all((step >= 0.01 - 1e-7) & (step <= 0.1 + 1e-7))
    A = -np.exp(np.asarray(params["log_A_re"])) + 1j * np.asarray(params["A_im"])
    np.testing.assert_allclose(A[1], -0.5 + 1j * np.pi * np.arange(5), rtol=1e-6)  # S4D-Lin
    u = np.random.default_rng(5).standard_normal((1, 3)).astype(np.float32)
    K0 = np.asarray(kernel(params, 1))[0]
    np.testing.assert_allclose(apply(params, u), u * (K0 + np.asarray(params["D"])), rtol=1e-5, atol=1e-6)
    params = init(jax.random.key(1), 3, 5)
    u = jax.random.normal(jax.random.key(6), (11, 3))
    y16 = conv_form(params, u.astype(jnp.bfloat16))
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y16, np.float32), conv_form(params, u), atol=0.05, rtol=0.02)


def test_s4d_learns_a_moving_average():
    # Target: the mean of the last five inputs, a filter that a time-invariant layer represents well.
    # 150 Adam steps on 16 sequences of 32 steps bring the held-out MSE below a tenth of its start.
    T, H, N, steps, batch = 32, 1, 16, 150, 16

    def data(key):
        u = jax.random.normal(key, (batch, T, H))
        padded = jnp.concatenate([jnp.zeros((batch, 4, H)), u], axis=1)
        return u, sum(padded[:, i:i + T] for i in range(5)) / 5

    def mse(p, u, y):
        return jnp.mean((jax.vmap(apply, in_axes=(None, 0))(p, u) - y) ** 2)

    opt = optax.adam(0.02)

    @jax.jit
    def train(params, key):
        def step(state, k):
            p, s = state
            updates, s = opt.update(jax.grad(mse)(p, *data(k)), s, p)
            return (optax.apply_updates(p, updates), s), None

        (p, _), _ = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, steps))
        held_out = data(jax.random.key(99))
        return mse(params, *held_out), mse(p, *held_out)

    before, after = (float(v) for v in train(init(jax.random.key(7), H, N), jax.random.key(8)))
    assert after < 0.1 * before
    assert after < 0.05


def test_bad_input_raises_clear_errors():
    A, B = hippo_legs(3)
    with pytest.raises(TypeError, match=r"N must be an int"):
        hippo_legs(3.0)
    with pytest.raises(ValueError, match=r"N must be at least 1"):
        hippo_legs(0)
    with pytest.raises(ValueError, match=r"method must be 'zoh' or 'bilinear', got 'euler'"):
        discretize(A, B, 0.1, "euler")
    with pytest.raises(ValueError, match=r"step must be positive"):
        discretize(A, B, -0.1)
    with pytest.raises(ValueError, match=r"B must have shape \(3,\)"):
        discretize(A, np.ones(4, np.float32), 0.1)
    with pytest.raises(ValueError, match=r"A must have shape \(3, 3\)"):
        discretize(np.ones((3, 4), np.float32), B, 0.1)
    with pytest.raises(ValueError, match=r"K must have shape \(5,\)"):
        causal_conv(np.ones(5, np.float32), np.ones(4, np.float32))
    params = init(jax.random.key(1), 3, 5)
    with pytest.raises(ValueError, match=r"u must have shape \(11, 3\)"):
        apply(params, np.ones((11, 4), np.float32))
    with pytest.raises(TypeError, match=r"u must be a floating-point array"):
        apply_recurrent(params, np.ones((11, 3), np.int32))
    with pytest.raises(ValueError, match=r"params\['C_re'\] must have shape \(3, 5\)"):
        apply(params | {"C_re": params["C_re"][:2]}, np.ones((11, 3), np.float32))
    with pytest.raises(ValueError, match=r"step_max must exceed step_min"):
        init(jax.random.key(0), 3, 5, step_min=0.1, step_max=0.01)
    with pytest.raises(TypeError, match=r"T must be an int"):
        kernel(params, 11.0)
