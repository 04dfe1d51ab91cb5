import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.efficiency.lora import dora_apply, dora_magnitude, init, lora_apply, merge, num_params

STEPS = 100


def _random(seed, *shapes):
    """Gaussian float32 arrays from NumPy (no compilation spent on making test data)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


# The functions run one compiled core each and are called as they are (a jax.jit around them
# compiled a second program per shape); their outputs are read in NumPy.


def test_against_float64_numpy_over_leading_axes():
    D_in, D_out, r, alpha = 7, 5, 3, 2.5
    x, W, A, B = _random(0, (2, 11, D_in), (D_in, D_out), (D_in, r), (r, D_out))
    xd, Wd, Ad, Bd = (np.asarray(a, np.float64) for a in (x, W, A, B))
    expected = xd @ Wd + (alpha / r) * (xd @ Ad) @ Bd
    np.testing.assert_allclose(lora_apply(x, W, A, B, alpha=alpha), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(merge(W, A, B, alpha=alpha), Wd + (alpha / r) * Ad @ Bd, rtol=1e-5, atol=1e-6)


def test_merged_equals_unmerged_and_unmerging_returns_the_base():
    x, W, A, B = _random(1, (11, 5), (5, 7), (5, 3), (3, 7))
    W_merged = np.asarray(merge(W, A, B, alpha=4.0))
    np.testing.assert_allclose(x @ W_merged, lora_apply(x, W, A, B, alpha=4.0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(merge(W_merged, A, -B, alpha=4.0), W, rtol=1e-5, atol=1e-5)


def test_zero_B_at_initialisation_gives_the_base_layer_exactly():
    W, x = _random(2, (11, 3), (7, 11))
    A, B = init(jax.random.key(2), 11, 3, 5)
    assert A.shape == (11, 5) and B.shape == (5, 3) and not np.any(np.asarray(B))
    assert float(np.std(np.asarray(A))) > 0.1  # A random, so the gradient reaching B is not zero
    np.testing.assert_array_equal(lora_apply(x, W, A, B, alpha=1.0), jax.jit(jnp.matmul)(x, W))
    np.testing.assert_array_equal(merge(W, A, B, alpha=1.0), W)


def test_parameter_count():
    assert num_params(512, 512, 4) == 4096 and 512 * 512 == 262144
    assert round(100 * num_params(512, 512, 4) / (512 * 512), 1) == 1.6  # the page's 1.6 %
    A, B = jax.eval_shape(lambda key: init(key, 11, 7, 3), jax.random.key(0))  # init's shapes, nothing drawn
    assert A.size + B.size == num_params(11, 7, 3) == 3 * (11 + 7)


def test_gradients_flow_only_to_A_and_B_and_match_the_closed_form():
    x, W, A, B, g = _random(3, (11, 7), (7, 5), (7, 3), (3, 5), (11, 5))
    alpha, r = 2.0, 3

    def loss(A, B):  # W is closed over: frozen, only A and B are differentiated
        return jnp.sum(lora_apply(x, W, A, B, alpha=alpha) * g)

    # At initialisation (B = 0) only B receives a gradient; with A = 0 as well nothing would move.
    grads = jax.jit(lambda A, B: (jax.grad(loss, argnums=(0, 1))(A, B), jax.grad(loss, argnums=(0, 1))(A, 0 * B),
                                  jax.grad(loss, argnums=(0, 1))(0 * A, 0 * B)))
    (dA, dB), (dA0, dB0), (dA00, dB00) = jax.tree.map(np.asarray, grads(A, B))
    s = alpha / r
    xd, Ad, Bd, gd = (np.asarray(a, np.float64) for a in (x, A, B, g))
    np.testing.assert_allclose(dA, s * xd.T @ gd @ Bd.T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dB, s * (xd @ Ad).T @ gd, rtol=1e-4, atol=1e-4)
    assert not np.any(dA0) and float(np.abs(dB0).max()) > 0.1
    assert not np.any(dA00) and not np.any(dB00)


def _fit(steps=STEPS, lr=0.1):
    """Fit rank-1 and rank-2 adapters on a frozen W to targets from W + Delta, Delta of rank 2.

    The inputs have orthonormal columns, so the loss is ||s A B - Delta||_F^2 and the best rank-r
    adapter is the truncated SVD of Delta (Eckart-Young). One compilation trains both.
    """
    D_in, D_out, N = 11, 7, 13
    k_x, k_u, k_v, k_w, k_a = jax.random.split(jax.random.key(4), 5)
    X, _ = jnp.linalg.qr(jax.random.normal(k_x, (N, D_in)))  # (N, D_in), X^T X = I
    U, V = jax.random.normal(k_u, (D_in, 2)), jax.random.normal(k_v, (2, D_out))
    delta = (U * jnp.array([[1.0, 0.5]])) @ V / 2
    W = jax.random.normal(k_w, (D_in, D_out))
    Y = X @ (W + delta)
    out = {}
    for r in (1, 2):
        def loss(AB, r=r):
            return jnp.sum((lora_apply(X, W, *AB, alpha=float(r)) - Y) ** 2)

        def step(AB, _, loss=loss):
            value, grads = jax.value_and_grad(loss)(AB)
            return jax.tree.map(lambda p, g: p - lr * g, AB, grads), value

        AB, losses = jax.lax.scan(step, init(k_a, D_in, D_out, r), None, length=steps)
        out[r] = (losses, loss(AB))
    return out, delta


@pytest.fixture(scope="module")
def fits():
    return jax.tree.map(np.asarray, jax.jit(_fit)())  # read in NumPy


def test_rank_two_adapter_recovers_a_rank_two_update(fits):
    (losses, final), _ = fits[0][2], None
    assert float(final) < 1e-4 * float(losses[0])


def test_rank_one_adapter_reaches_the_truncated_svd_bound_and_not_below(fits):
    (losses, final), delta = fits[0][1], fits[1]
    sigma = np.linalg.svd(np.asarray(delta, np.float64), compute_uv=False)
    bound = sigma[1] ** 2  # the best rank-1 approximation leaves the second singular value
    assert bound > 0.05 * float(losses[0])
    assert bound * (1 - 1e-4) <= float(final) <= bound * 1.01


def test_bfloat16():
    x, W, A, B = _random(5, (5, 7), (7, 3), (7, 2), (2, 3))
    expected = lora_apply(x, W, A, B, alpha=2.0)
    got = lora_apply(*(a.astype(jnp.bfloat16) for a in (x, W, A, B)), alpha=2.0)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float32), expected, rtol=0.05, atol=0.1)


def test_bad_input():
    x, W, A, B = _random(6, (3, 7), (7, 5), (7, 2), (2, 5))
    with pytest.raises(ValueError, match="B"):
        lora_apply(x, W, A, B.T, alpha=1.0)
    with pytest.raises(ValueError, match="A"):
        merge(W, A[:5], B, alpha=1.0)
    with pytest.raises(ValueError, match="x"):
        lora_apply(x[:, :5], W, A, B, alpha=1.0)
    with pytest.raises(TypeError, match="W"):
        merge(W.astype(np.int32), A, B, alpha=1.0)
    with pytest.raises(ValueError, match="alpha"):
        merge(W, A, B, alpha=-1.0)
    with pytest.raises(TypeError, match="r"):
        init(jax.random.key(0), 7, 5, 2.0)


def test_dora_against_float64_and_its_magnitude_direction_split():
    x, W, A, B, m = _random(7, (11, 7), (7, 5), (7, 3), (3, 5), (5,))
    m = np.abs(m) + np.float32(0.5)
    alpha, r = 2.0, 3
    xd, Wd, Ad, Bd, md = (np.asarray(a, np.float64) for a in (x, W, A, B, m))
    V = Wd + (alpha / r) * Ad @ Bd
    expected = xd @ (V / np.linalg.norm(V, axis=0) * md)
    np.testing.assert_allclose(dora_apply(x, W, A, B, m, alpha=alpha), expected, rtol=1e-4, atol=1e-4)
    # Only the direction of each column of V counts: scaling W and B together changes nothing.
    np.testing.assert_allclose(dora_apply(x, 3 * W, A, 3 * B, m, alpha=alpha), expected, rtol=1e-4, atol=1e-4)
    # At the initial magnitudes and B = 0 it is the base layer.
    np.testing.assert_allclose(dora_apply(x, W, A, 0 * B, dora_magnitude(W), alpha=alpha), xd @ Wd, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dora_magnitude(W), np.linalg.norm(Wd, axis=0), rtol=1e-6)
    with pytest.raises(ValueError, match="m"):
        dora_apply(x, W, A, B, m[:3], alpha=alpha)
