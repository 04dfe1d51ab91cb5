import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from cookbook.recurrent.rnn import apply, cell, init, input_gradient_norms


def _loop(params, xs, h0):
    """The reference: a Python loop over time, written with numpy in float64."""
    W_x, W_h, b = (np.asarray(params[k], np.float64) for k in ("W_x", "W_h", "b"))
    h, hs = np.asarray(h0, np.float64), []
    for x in np.asarray(xs, np.float64):
        h = np.tanh(x @ W_x + h @ W_h + b)
        hs.append(h)
    return np.stack(hs)


@pytest.mark.parametrize("T, D, H", [(1, 3, 5), (11, 5, 7)])
def test_scan_matches_a_python_loop(T, D, H):
    rng = np.random.default_rng(T)  # inputs and weights drawn in NumPy: no sampler or init to compile per shape
    params = {"W_x": (rng.standard_normal((D, H)) / np.sqrt(D)).astype(np.float32),
              "W_h": (0.9 * rng.standard_normal((H, H)) / np.sqrt(H)).astype(np.float32),
              "b": 0.1 * rng.standard_normal(H).astype(np.float32)}
    xs = rng.standard_normal((T, D)).astype(np.float32)
    h0 = rng.standard_normal(H).astype(np.float32)
    np.testing.assert_allclose(apply(params, xs, h0), _loop(params, xs, h0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(apply(params, xs), _loop(params, xs, np.zeros(H)), rtol=1e-5, atol=1e-5)


def test_one_step_by_hand():
    params = {"W_x": np.array([[1.0], [2.0]], np.float32), "W_h": np.array([[0.5]], np.float32),
              "b": np.array([0.25], np.float32)}
    h = cell(params, np.array([2.0], np.float32), np.array([0.5, -0.5], np.float32))
    np.testing.assert_allclose(h, [np.tanh(0.5 - 1.0 + 1.0 + 0.25)], rtol=1e-6)


def test_init_shapes_and_recurrent_weight_scale():
    params = init(jax.random.key(0), 3, 200, scale=1.7)
    assert params["W_x"].shape == (3, 200) and params["W_h"].shape == (200, 200) and params["b"].shape == (200,)
    # Circular law: the eigenvalues of a Gaussian matrix with variance scale^2 / H fill a disc of radius scale.
    radius = np.abs(np.linalg.eigvals(np.asarray(params["W_h"], np.float64))).max()
    assert 1.5 < radius < 1.9


def test_jit_and_vmap_agree_with_one_at_a_time():
    params = init(jax.random.key(1), 3, 5)
    xs = np.random.default_rng(1).standard_normal((4, 7, 3)).astype(np.float32)
    batched = jax.jit(jax.vmap(apply, in_axes=(None, 0)))(params, xs)
    for i in range(4):
        np.testing.assert_allclose(batched[i], apply(params, xs[i]), rtol=1e-5, atol=1e-6)


def test_gradients_pass_check_grads():
    rng = np.random.default_rng(2)
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), init(jax.random.key(2), 3, 5))
    xs, h0 = rng.standard_normal((7, 3)), rng.standard_normal(5)  # float64, drawn in NumPy
    with jax.enable_x64(True):
        loss = jax.jit(lambda p, xs, h0: jnp.sum(apply(p, xs, h0) ** 2))
        check_grads(loss, (params, xs, h0), order=1, modes=("rev", "fwd"))


def test_bptt_gradient_matches_the_product_of_jacobians():
    # d h_T / d h_t = prod_k diag(1 - h_k^2) W_h^T, applied to d h_t / d x_t = diag(1 - h_t^2) W_x^T.
    params = init(jax.random.key(3), 3, 5, scale=1.2)
    xs = np.random.default_rng(3).standard_normal((6, 3)).astype(np.float32)
    hs = np.asarray(apply(params, xs), np.float64)
    W_x, W_h = np.asarray(params["W_x"], np.float64), np.asarray(params["W_h"], np.float64)
    t = 1
    J = np.diag(1 - hs[t] ** 2) @ W_x.T
    for k in range(t + 1, 6):
        J = np.diag(1 - hs[k] ** 2) @ W_h.T @ J
    jac = jax.jit(jax.jacrev(lambda xs: apply(params, xs)[-1]))(xs)  # (H, T, D)
    np.testing.assert_allclose(jac[:, t, :], J, rtol=1e-4, atol=1e-6)
    norms = jax.jit(input_gradient_norms)(params, xs)
    np.testing.assert_allclose(norms[t], np.linalg.norm(J), rtol=1e-4)


@pytest.fixture(scope="module")
def figure_run():
    """The page's figure: T = 40 inputs, H = 32, key 0, recurrent scales 0.5, 1 and 2; one program for
    the three norms (input_gradient_norms runs a compiled core; scale is not a static argument)."""
    k_p, k_x = jax.random.split(jax.random.key(0))
    T = 40
    xs = 0.1 * jax.random.normal(k_x, (T, 4))
    params = {s: init(k_p, 4, 32, scale=s) for s in (0.5, 1.0, 2.0)}
    norms = {s: np.asarray(input_gradient_norms(p, xs)) for s, p in params.items()}
    return T, params, norms


def test_gradients_vanish_for_small_and_explode_for_large_recurrent_weights(figure_run):
    T, params, norms = figure_run
    small, large = norms[0.5], norms[2.0]
    # Vanishing: below the bound ||W_h||^(T-t) ||W_x||, with ||.|| the spectral norm.
    W_h_norm, W_x_norm = (np.linalg.norm(np.asarray(params[0.5][k], np.float64), 2) for k in ("W_h", "W_x"))
    assert float(small[0]) < 1e-6 * float(small[-1])
    assert float(small[0]) <= W_h_norm**(T - 1) * W_x_norm * np.sqrt(4)  # Frobenius <= sqrt(rank) * spectral
    # Exploding: the first input moves the last state far more than the last input does.
    assert float(large[0]) > 100 * float(large[-1])


def test_large_inputs_stay_finite():
    params = init(jax.random.key(4), 3, 5, scale=3.0)
    hs = apply(params, np.full((5, 3), 1e30, np.float32))
    assert np.all(np.isfinite(hs)) and np.all(np.abs(hs) <= 1.0)


def test_bad_shapes_raise_clear_errors():
    params = init(jax.random.key(5), 3, 5)
    with pytest.raises(ValueError, match=r"xs must have shape \(T, D\) with D = 3, got shape \(7, 4\)"):
        apply(params, np.ones((7, 4), np.float32))
    with pytest.raises(ValueError, match=r"xs must have shape \(T, D\)"):
        apply(params, np.ones((3,), np.float32))
    with pytest.raises(ValueError, match=r"h must have shape \(H,\) = \(5,\), got shape \(4,\)"):
        apply(params, np.ones((7, 3), np.float32), np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"x must have shape \(D,\) = \(3,\)"):
        cell(params, np.zeros(5, np.float32), np.ones(2, np.float32))


def test_the_figure_numbers(figure_run):
    # The page's figure (T = 40, H = 32, key 0): at scale 0.5 the gradient falls by about two per
    # step; at scale 1 it stays of the same order; at scale 2 it grows by orders of magnitude, but
    # more slowly than 2^(T - t).
    T, _, norms = figure_run
    per_step = (norms[0.5][-1] / norms[0.5][0]) ** (1 / (T - 1))
    assert 1.7 < per_step < 2.3
    assert norms[1.0].min() > 0.1 * norms[1.0].max()
    growth = norms[2.0][0] / norms[2.0][-1]
    assert 1e3 < growth < 2.0 ** (T - 1)


@pytest.mark.parametrize("D, H, error", [(3, -5, ValueError), (0, 5, ValueError), (3, 5.0, TypeError)])
def test_init_rejects_bad_sizes(D, H, error):
    with pytest.raises(error, match=r"(D|H) must be"):
        init(jax.random.key(9), D, H)


def test_bad_arrays_raise_clear_errors_and_lists_are_accepted():
    params = init(jax.random.key(10), 3, 5)
    xs = np.random.default_rng(11).standard_normal((7, 3)).astype(np.float32)
    with pytest.raises(TypeError, match=r"xs must be a floating-point array"):
        apply(params, xs.astype(np.int32))
    with pytest.raises(TypeError, match=r"x must be a floating-point array"):
        cell(params, np.zeros(5, np.float32), np.ones(3, np.int32))
    W_h = np.asarray(params["W_h"])  # reshaped and cast in NumPy
    with pytest.raises(ValueError, match=r"params\['W_h'\] must have shape \(5, 5\)"):
        apply(params | {"W_h": W_h[None]}, xs)
    with pytest.raises(TypeError, match=r"params\['W_h'\] must be a floating-point array"):
        apply(params | {"W_h": W_h.astype(np.int32)}, xs)
    np.testing.assert_allclose(apply(params, np.asarray(xs).tolist()), apply(params, xs), rtol=1e-6)
