import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cookbook.sequence_models import linear_recurrence as lr
from cookbook.sequence_models.linear_recurrence import (
    apply,
    combine,
    init,
    linear_scan,
    linear_scan_sequential,
)

TOL = dict(rtol=1e-5, atol=1e-5)  # float32 against a float64 loop
# linear_scan and linear_scan_sequential check their inputs, then run one compiled core each: the tests
# call them as they are (a jax.jit around them would compile a second program for every shape).


def _loop(a, b, h0=None):
    """The recurrence as a Python loop in NumPy (float64 or complex128)."""
    a, b = np.asarray(a, np.complex128), np.asarray(b, np.complex128)
    h = np.zeros(a.shape[1:], np.complex128) if h0 is None else np.asarray(h0, np.complex128)
    out = []
    for a_t, b_t in zip(a, b):
        h = a_t * h + b_t
        out.append(h)
    return np.stack(out)


def _ab(seed, shape, complex_=False):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.3, 1.0, shape)
    b = rng.standard_normal(shape)
    if complex_:
        a = a * np.exp(1j * rng.uniform(0, 2 * np.pi, shape))
        b = b + 1j * rng.standard_normal(shape)
        return a.astype(np.complex64), b.astype(np.complex64)
    return a.astype(np.float32), b.astype(np.float32)


@pytest.mark.parametrize("complex_", [False, True])
def test_both_forms_match_a_numpy_loop_with_and_without_h0(complex_):
    a, b = _ab(0, (11, 3, 5), complex_)
    h0 = (_ab(1, (3, 5), complex_)[1])
    for fn in (linear_scan, linear_scan_sequential):
        np.testing.assert_allclose(fn(a, b), _loop(a, b), **TOL)
        np.testing.assert_allclose(fn(a, b, h0), _loop(a, b, h0), **TOL)
    assert linear_scan(a, b).dtype == (np.complex64 if complex_ else np.float32)


def test_the_operator_is_associative_and_composes_affine_maps():
    rng = np.random.default_rng(2)
    m1, m2, m3 = ((rng.standard_normal(7), rng.standard_normal(7)) for _ in range(3))
    left = combine(combine(m1, m2), m3)
    right = combine(m1, combine(m2, m3))
    np.testing.assert_allclose(left[0], right[0], rtol=1e-12)
    np.testing.assert_allclose(left[1], right[1], rtol=1e-12)
    # (a1 a2 a3, a2 a3 b1 + a3 b2 + b3), the page's expansion; and it is "first map 1, then map 2".
    (a1, b1), (a2, b2), (a3, b3) = m1, m2, m3
    np.testing.assert_allclose(left[1], a2 * a3 * b1 + a3 * b2 + b3, rtol=1e-12)
    h = rng.standard_normal(7)
    a12, b12 = combine(m1, m2)
    np.testing.assert_allclose(a12 * h + b12, a2 * (a1 * h + b1) + b2, rtol=1e-12)


@pytest.mark.parametrize("T", [1000, 1024])
def test_work_is_linear_and_depth_logarithmic(T, monkeypatch):
    # Count the operator's rounds (calls, each on whole slices at once) and its applications
    # (elements combined in all): at most 2 ceil(log2 T) rounds, between T and 2T applications.
    rounds, applications = [0], [0]

    def counting(earlier, later):
        rounds[0] += 1
        applications[0] += earlier[0].shape[0]
        return combine(earlier, later)

    monkeypatch.setattr(lr, "combine", counting)
    jax.eval_shape(linear_scan, jnp.ones((T, 2)), jnp.ones((T, 2)))
    assert rounds[0] <= 2 * math.ceil(math.log2(T))
    assert T <= applications[0] < 2 * T


def test_causality_t_one_and_odd_lengths():
    a, b = _ab(3, (7, 5))
    h = np.asarray(linear_scan(a, b))
    b2 = b.copy()
    b2[4] += 10.0
    h2 = np.asarray(linear_scan(a, b2))
    np.testing.assert_array_equal(h2[:4], h[:4])  # later input, earlier states unchanged
    assert not np.allclose(h2[4:], h[4:])
    a1, b1 = a[:1], b[:1]
    h0 = np.full(5, 2.0, np.float32)
    np.testing.assert_allclose(linear_scan(a1, b1, h0), a1 * h0 + b1, rtol=1e-6)
    np.testing.assert_allclose(linear_scan_sequential(a1, b1, h0), a1 * h0 + b1, rtol=1e-6)


def test_mixed_dtypes_bfloat16_jit_and_vmap():
    a, b = _ab(4, (7, 5))
    _, bc = _ab(4, (7, 5), complex_=True)
    np.testing.assert_allclose(linear_scan(a, bc), _loop(a, bc), **TOL)  # real decay, complex input
    h16 = linear_scan(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16))
    assert h16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(h16, np.float32), _loop(a, b).real, atol=0.05, rtol=0.02)
    batched = jax.jit(jax.vmap(linear_scan, in_axes=(1, 1), out_axes=1))(a, b)  # jit and vmap, one program
    np.testing.assert_allclose(batched, linear_scan(a, b), **TOL)


# ---- The Linear Recurrent Unit ----------------------------------------------------------------------

def _lru_loop(params, x):
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    B = (p["B_re"] + 1j * p["B_im"]) * np.exp(p["gamma_log"])[:, None]
    C = p["C_re"] + 1j * p["C_im"]
    s, ys = np.zeros(lam.shape, np.complex128), []
    for x_t in np.asarray(x, np.float64):
        s = lam * s + B @ x_t
        ys.append((C @ s).real + p["D"] * x_t)
    return np.stack(ys)


def test_lru_matches_a_numpy_loop():
    params = init(jax.random.key(5), 3, 8)  # the shapes of the page's example: one compilation serves both
    x = np.random.default_rng(5).standard_normal((7, 3)).astype(np.float32)
    # apply checks its input and runs one compiled core, the example's program: no jax.jit around it.
    np.testing.assert_allclose(apply(params, x), _lru_loop(params, x), rtol=1e-4, atol=1e-5)


def test_ring_initialisation_and_the_unit_impulse_energy():
    N = 256
    params = init(jax.random.key(6), 2, N, r_min=0.9, r_max=0.999, max_phase=math.pi / 10)
    modulus = np.exp(-np.exp(np.asarray(params["nu_log"], np.float64)))
    phase = np.exp(np.asarray(params["theta_log"], np.float64))
    assert modulus.min() >= 0.9 - 1e-6 and modulus.max() <= 0.999 + 1e-6
    assert phase.min() >= 0 and phase.max() <= math.pi / 10 + 1e-6
    # |lambda|^2 uniform on [0.81, 0.998001] (uniform over the ring's area).
    assert abs(np.mean(modulus**2) - (0.81 + 0.998001) / 2) < 0.015
    # gamma makes the energy of the impulse response, gamma^2 sum_k |lambda|^(2k), equal to 1.
    lam = modulus * np.exp(1j * phase)
    gamma = np.exp(np.asarray(params["gamma_log"], np.float64))
    T = 4000  # |lambda|^(2T) < 0.999^8000 < 4e-4
    impulse = np.zeros((T, N), np.complex64)
    impulse[0] = gamma
    s = linear_scan_sequential(np.broadcast_to(lam, (T, N)).astype(np.complex64), impulse)
    energy = np.sum(np.abs(np.asarray(s, np.complex128)) ** 2, axis=0)
    np.testing.assert_allclose(energy, 1.0, rtol=1e-3)
    assert (energy / gamma**2).max() > 400  # 1 / (1 - |lambda|^2) without gamma: up to 500


def test_lru_learns_a_delay_line():
    # y_t = x_{t-3}: the unit must hold three past inputs. 200 Adam steps of 16 sequences of 16
    # steps bring the held-out MSE from about 4.0 (at initialisation) below 0.01 (measured 2.6e-4).
    T, H, N, delay, steps, batch = 16, 1, 16, 3, 200, 16
    # The sequences drawn with NumPy and given to the training program as arguments: jax.random's
    # sampler inside its scan took about a third of its compile time.
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((steps, batch, T, H)).astype(np.float32)
    held_out = rng.standard_normal((batch, T, H)).astype(np.float32)

    def delayed(x):
        return np.concatenate([np.zeros_like(x[..., :delay, :]), x[..., :-delay, :]], axis=-2)

    def mse(p, x, y):
        return jnp.mean((jax.vmap(apply, in_axes=(None, 0))(p, x) - y) ** 2)

    opt = optax.adam(0.01)

    @jax.jit
    def train(params, xs, ys, x_test, y_test):
        def step(state, batch):
            p, s = state
            grads = jax.grad(mse)(p, *batch)
            updates, s = opt.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), None

        (p, _), _ = jax.lax.scan(step, (params, opt.init(params)), (xs, ys))
        return mse(params, x_test, y_test), mse(p, x_test, y_test)

    before, after = (float(v) for v in train(init(jax.random.key(8), H, N), xs, delayed(xs),
                                               held_out, delayed(held_out)))
    assert before > 0.5
    assert after < 0.01


# ---- Bad input ------------------------------------------------------------------------------------

def test_bad_input_raises_clear_errors():
    a, b = _ab(10, (7, 3))
    with pytest.raises(TypeError, match=r"a must be a floating-point array"):
        linear_scan(np.ones((7, 3), np.int32), b)
    with pytest.raises(TypeError, match=r"b must be a floating-point array"):
        linear_scan_sequential(a, np.ones((7, 3), bool))
    with pytest.raises(ValueError, match=r"a and b must have the same shape \(T, \.\.\.\), got a \(7, 3\) and b \(7, 2\)"):
        linear_scan(a, b[:, :2])
    with pytest.raises(ValueError, match=r"h0 must have the shape of one step of a and b, \(3,\), got \(7, 3\)"):
        linear_scan(a, b, b)
    with pytest.raises(ValueError, match=r"a must have a leading time axis"):
        linear_scan(np.float32(1.0), np.float32(1.0))
    np.testing.assert_allclose(linear_scan(a.tolist(), b.tolist()), linear_scan(a, b), **TOL)  # lists are arrays
    with pytest.raises(ValueError, match=r"need 0 <= r_min < r_max <= 1"):
        init(jax.random.key(0), 3, 5, r_min=0.9, r_max=1.5)
    with pytest.raises(TypeError, match=r"N must be an int"):
        init(jax.random.key(0), 3, 5.0)
    # Parameters in init's shapes drawn with NumPy: init's program for these sizes takes seconds to compile.
    rng = np.random.default_rng(11)
    params = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32),
                          jax.eval_shape(lambda: init(jax.random.key(0), 3, 5)))
    with pytest.raises(ValueError, match=r"x must have shape \(7, 3\)"):
        apply(params, np.ones((7, 4), np.float32))
    with pytest.raises(ValueError, match=r"params\['C_im'\] must have shape \(3, 5\)"):
        apply(params | {"C_im": params["C_im"][:, :2]}, np.ones((7, 3), np.float32))
