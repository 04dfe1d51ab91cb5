import jax
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.linalg import subspace_angles
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

from cookbook.generative.autoencoder import fit, init, loss, principal_angles, reconstruct

# The functions check their input and then run one compiled core per shape: the tests call them as
# they are, so that the examples, the jit checks and the tests share those programs.
rec = reconstruct
angles_of = principal_angles


def random_params(seed, D, K):
    """Every weight and bias random (init zeroes the biases)."""
    rng = np.random.default_rng(seed)
    shapes = {"W_e": (D, K), "b_e": (K,), "W_d": (K, D), "b_d": (D,)}
    return {name: (0.5 * rng.normal(size=shape)).astype(np.float32) for name, shape in shapes.items()}


def test_principal_angles_match_scipy():
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((11, 3)).astype(np.float32), rng.standard_normal((11, 5)).astype(np.float32)
    got = angles_of(A, B)
    assert got.shape == (3,)
    want = np.sort(subspace_angles(np.asarray(A, np.float64), np.asarray(B, np.float64)))
    np.testing.assert_allclose(got, want, atol=1e-4)
    # They depend on the spans alone: any invertible mixing of the columns leaves them unchanged.
    M = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [1.0, 0.0, 1.0]], np.float32)
    np.testing.assert_allclose(angles_of(A @ M, B), got, atol=1e-4)


def test_a_linear_code_mixed_by_any_invertible_matrix_reconstructs_the_same():
    params = random_params(1, 7, 3)
    M = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [1.0, 0.0, 1.0]], np.float32)
    p = {k: np.asarray(v) for k, v in params.items()}
    mixed = {"W_e": p["W_e"] @ M, "b_e": p["b_e"] @ M, "W_d": np.linalg.inv(M) @ p["W_d"], "b_d": p["b_d"]}
    x = np.linspace(-1.0, 2.0, 7, dtype=np.float32)
    np.testing.assert_allclose(rec(mixed, x, activation="linear"), rec(params, x, activation="linear"),
                               rtol=1e-5, atol=1e-5)
    # With tanh the mixing is visible: only the linear model has this symmetry.
    assert not np.allclose(rec(mixed, x), rec(params, x), atol=1e-3)


def test_tanh_code_is_bounded_and_noise_zero_is_the_plain_squared_error():
    params = random_params(2, 7, 3)
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    x = 10.0 * np.arange(7.0, dtype=np.float32)
    h = np.tanh(x @ p["W_e"] + p["b_e"])  # NumPy float64 reference
    assert np.all(np.abs(h) <= 1.0)
    x_hat = h @ p["W_d"] + p["b_d"]
    np.testing.assert_allclose(rec(params, x, activation="tanh"), x_hat, rtol=1e-5, atol=1e-5)
    got = loss(params, jax.random.key(0), x)  # noise 0 by default
    np.testing.assert_allclose(got, np.sum((x_hat - x) ** 2), rtol=1e-5)


def test_gradients():
    params = random_params(3, 5, 3)
    x = np.array([0.3, -0.7, 1.1, 0.0, 0.5], np.float32)
    check_grads(jax.jit(lambda p, x: loss(p, jax.random.key(4), x, noise=0.3)),
                (params, x), order=1, modes=("rev",), atol=2e-2, rtol=2e-2)


def test_denoising_loss_of_a_linear_autoencoder_is_the_clean_loss_plus_weight_decay():
    # E_eps |W_d^T W_e^T (x + s eps) + ... - x|^2 = |x_hat_0 - x|^2 + s^2 |W_e W_d|_F^2, by sampling.
    params, sigma = random_params(5, 7, 3), 0.6
    x = np.linspace(-1.5, 1.0, 7, dtype=np.float32)
    keys = jax.random.split(jax.random.key(6), 100_000)
    sampled = jax.jit(jax.vmap(lambda k: loss(params, k, x, noise=sigma, activation="linear")))(keys)
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    x64 = np.asarray(x, np.float64)
    clean = np.sum(((x64 @ p["W_e"] + p["b_e"]) @ p["W_d"] + p["b_d"] - x64) ** 2)
    closed = clean + sigma**2 * np.sum((p["W_e"] @ p["W_d"]) ** 2)
    assert float(closed) > float(clean) + 0.1  # the noise term is not negligible here
    np.testing.assert_allclose(np.mean(np.asarray(sampled, np.float64)), closed, rtol=1e-2)


@pytest.fixture(scope="module")
def digits():
    return (load_digits().data[:800] / 16.0).astype(np.float32)  # (800, 64), pixels in [0, 1]


def _numpy_reconstruct(params, X):
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    return (np.asarray(X, np.float64) @ p["W_e"] + p["b_e"]) @ p["W_d"] + p["b_d"]


@pytest.fixture(scope="module")
def trained(digits):
    # The plain and the denoising run share one compiled training loop (the noise is traced).
    params0 = init(jax.random.key(0), D=64, K=3)
    plain, values = fit(params0, jax.random.key(1), digits, steps=400, learning_rate=5e-2, activation="linear")
    noisy, _ = fit(params0, jax.random.key(1), digits, steps=400, learning_rate=5e-2, noise=0.5, activation="linear")
    return plain, noisy, values


def test_it_learns_a_linear_autoencoder_spans_the_principal_subspace(digits, trained):
    plain, _, values = trained
    X = np.asarray(digits, np.float64)
    pca = PCA(3).fit(X)
    angles = np.degrees(subspace_angles(np.asarray(plain["W_d"], np.float64).T, pca.components_.T))
    assert angles.max() < 3.0  # about 1.0 degree after 400 steps
    # Its error is PCA's: the variance of the discarded directions.
    pca_error = np.mean(np.sum((pca.inverse_transform(pca.transform(X)) - X) ** 2, axis=1))
    ae_error = np.mean(np.sum((_numpy_reconstruct(plain, X) - X) ** 2, axis=1))
    assert pca_error <= ae_error < 1.01 * pca_error
    assert float(values[0]) > 3 * pca_error  # the untrained error was far above it


def test_it_learns_a_denoising_autoencoder_shrinks_its_map_and_removes_noise(digits, trained):
    plain, noisy, _ = trained
    X, sigma = np.asarray(digits, np.float64), 0.5
    X_noisy = X + sigma * np.random.default_rng(0).normal(size=X.shape)
    norm = lambda p: np.sum((np.asarray(p["W_e"]) @ np.asarray(p["W_d"])) ** 2)  # noqa: E731
    assert norm(noisy) < 0.9 * norm(plain)  # training with noise is weight decay on W_e W_d
    noisy_input_error = np.mean(np.sum((X_noisy - X) ** 2, axis=1))  # about 64 * 0.25 = 16
    denoised_error = np.mean(np.sum((_numpy_reconstruct(noisy, X_noisy) - X) ** 2, axis=1))
    assert denoised_error < noisy_input_error / 3
    # It is better than the plain autoencoder on the objective it was trained for (closed form).
    expected = lambda p: np.mean(np.sum((_numpy_reconstruct(p, X) - X) ** 2, axis=1)) + sigma**2 * norm(p)  # noqa: E731
    assert expected(noisy) < expected(plain)


def test_bad_input_gets_a_clear_error():
    params = random_params(7, 5, 3)
    with pytest.raises(ValueError, match="x"):
        reconstruct(params, np.zeros(7, np.float32))
    with pytest.raises(TypeError, match="x"):
        loss(params, jax.random.key(0), np.zeros(5, np.int32))
    with pytest.raises(ValueError, match="activation"):
        reconstruct(params, np.zeros(5, np.float32), activation="relu")
    with pytest.raises(ValueError, match="noise"):
        loss(params, jax.random.key(0), np.zeros(5, np.float32), noise=-0.1)
    with pytest.raises(ValueError, match="params"):
        reconstruct({**params, "W_d": np.zeros((3, 4), np.float32)}, np.zeros(5, np.float32))
    with pytest.raises(TypeError, match="K"):
        init(jax.random.key(0), D=5, K=2.5)
    with pytest.raises(ValueError, match="B"):
        principal_angles(np.zeros((5, 2), np.float32), np.zeros((7, 2), np.float32))
