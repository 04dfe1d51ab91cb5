import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from cookbook.self_supervised.vicreg import covariance_term, invariance_term, variance_term, vicreg_loss
from ssl_helpers import digits_and_views, knn_of, two_view_trainer

# The loss and each term check their input, then run one compiled core: they are called directly (a
# jax.jit around them would compile one more program). The three terms share one program here.
terms_jit = jax.jit(lambda z1, z2: (invariance_term(z1, z2), variance_term(z1), covariance_term(z1)))


def numpy_terms(z1, z2, gamma=1.0, eps=1e-4):
    """The three terms in float64, each from its definition with explicit loops."""
    z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
    N, D = z1.shape
    s = sum(np.sum((z1[b] - z2[b]) ** 2) for b in range(N)) / (N * D)
    v = 0.0
    for j in range(D):
        mean = z1[:, j].sum() / N
        var = sum((z1[b, j] - mean) ** 2 for b in range(N)) / (N - 1)
        v += max(0.0, gamma - np.sqrt(var + eps))
    v /= D
    centred = z1 - z1.mean(0)
    c = 0.0
    for i in range(D):
        for j in range(D):
            if i != j:
                c += (sum(centred[b, i] * centred[b, j] for b in range(N)) / (N - 1)) ** 2
    c /= D
    return s, v, c


def views(seed, N=11, D=5, spread=0.5, scale=0.7):
    rng = np.random.default_rng(seed)
    z1 = (scale * rng.standard_normal((N, D))).astype(np.float32)
    z2 = (z1 + spread * rng.standard_normal((N, D))).astype(np.float32)
    return z1, z2


def test_each_term_against_a_float64_loop():
    z1, z2 = views(0)  # std 0.7 < gamma: the hinge is active in every feature
    s, v, c = numpy_terms(z1, z2)
    got = terms_jit(z1, z2)
    np.testing.assert_allclose(got[0], s, rtol=1e-5)
    np.testing.assert_allclose(got[1], v, rtol=1e-5)
    np.testing.assert_allclose(got[2], c, rtol=1e-5)
    _, v2, c2 = numpy_terms(z2, z1)
    np.testing.assert_allclose(vicreg_loss(z1, z2, 2.0, 3.0, 0.5), 2.0 * s + 3.0 * (v + v2) + 0.5 * (c + c2), rtol=1e-5)
    # the covariance against NumPy's
    cov = np.cov(z1.T.astype(np.float64))
    np.testing.assert_allclose(got[2], (np.sum(cov ** 2) - np.sum(np.diag(cov) ** 2)) / 5, rtol=1e-5)


def test_the_variance_hinge():
    # the penalty of one feature with standard deviation sigma is max(0, gamma - sqrt(sigma^2 + eps))
    base = np.random.default_rng(1).standard_normal((7, 1))
    base = (base - base.mean()) / base.std(ddof=1)  # unbiased std exactly 1
    sigmas = np.array([0.0, 0.3, 0.9, 1.0, 1.5, 4.0])
    z = np.concatenate([s * base for s in sigmas], axis=1).astype(np.float32)  # (7, 6)
    expected = np.mean(np.maximum(0.0, 1.0 - np.sqrt(sigmas ** 2 + 1e-4)))
    np.testing.assert_allclose(variance_term(z), expected, rtol=1e-5)
    np.testing.assert_allclose(variance_term(z[:, 4:]), 0.0, atol=1e-7)  # above gamma: no push at all
    np.testing.assert_allclose(variance_term(z, gamma=2.0), np.mean(np.maximum(0.0, 2.0 - np.sqrt(sigmas ** 2 + 1e-4))),
                               rtol=1e-5)


def test_a_constant_embedding_gets_the_largest_variance_penalty():
    constant = np.full((11, 5), 3.0, np.float32)
    np.testing.assert_allclose(variance_term(constant), 1.0 - np.sqrt(1e-4), rtol=1e-6)  # 0.99
    rng = np.random.default_rng(2)
    for scale in (1e-3, 0.1, 0.5, 2.0):
        z = (scale * rng.standard_normal((11, 5))).astype(np.float32)
        assert float(variance_term(z)) < float(variance_term(constant))
    # and its gradient is finite, pointing every feature towards spreading out
    grad = jax.jit(jax.grad(lambda z: vicreg_loss(z, z)))(constant + 1e-3 * rng.standard_normal((11, 5)).astype(np.float32))
    assert np.isfinite(grad).all() and np.abs(grad).max() > 0


def test_the_covariance_term_sums_the_off_diagonal():
    z1, _ = views(3, N=64, D=3, scale=1.0)
    # a diagonal covariance (features rescaled independently) costs nothing beyond the sample noise
    whiten = np.linalg.cholesky(np.linalg.inv(np.cov(z1.T)))  # L with L^T cov L = I
    decorrelated = ((z1 - z1.mean(0)) @ whiten).astype(np.float32)
    np.testing.assert_allclose(covariance_term(decorrelated), 0.0, atol=1e-8)
    # one feature copied into all D slots: every off-diagonal entry equals its variance
    copied = np.tile(z1[:, :1], (1, 3))
    var = np.var(z1[:, 0].astype(np.float64), ddof=1)
    np.testing.assert_allclose(covariance_term(copied), 3 * 2 * var ** 2 / 3, rtol=1e-5)


def test_invariances():
    z1, z2 = views(4)
    base = float(vicreg_loss(z1, z2))
    perm = np.random.default_rng(5).permutation(len(z1))
    np.testing.assert_allclose(vicreg_loss(z1[perm], z2[perm]), base, rtol=1e-5)  # batch order
    np.testing.assert_allclose(vicreg_loss(z2, z1), base, rtol=1e-5)  # the two views swapped
    np.testing.assert_allclose(vicreg_loss(z1 + 3.0, z2 + 3.0), base, rtol=1e-4)  # a common shift
    assert float(vicreg_loss(z1[perm], z2)) > base  # but images paired wrongly are not


def test_gradients():
    z1, z2 = views(6, N=7, D=3)
    with jax.enable_x64(True):
        check_grads(jax.jit(lambda a, b: vicreg_loss(a, b, 1.0, 2.0, 3.0)),
                    (np.float64(z1), np.float64(z2)), order=1, modes=["rev"])


def test_edge_cases():
    z1, z2 = views(7)
    s, v, c = numpy_terms(z1, z2)
    # N = 2, the smallest batch with a variance
    assert np.isfinite(vicreg_loss(z1[:2], z2[:2]))
    # bfloat16 input: computed in float32
    got = terms_jit(z1.astype(jnp.bfloat16), z2.astype(jnp.bfloat16))
    assert all(g.dtype == jnp.float32 for g in got)
    np.testing.assert_allclose(got, (s, v, c), rtol=3e-2, atol=1e-2)


def test_bad_input():
    z1, z2 = views(8)
    with pytest.raises(ValueError, match="z2"):
        vicreg_loss(z1, z2[:3])
    with pytest.raises(ValueError, match="two rows"):
        variance_term(z1[:1])
    with pytest.raises(ValueError, match="z"):
        covariance_term(z1[0])
    with pytest.raises(TypeError, match="z1"):
        invariance_term(z1.astype(np.int32), z2)
    with pytest.raises(ValueError, match="var_weight"):
        vicreg_loss(z1, z2, var_weight=-1.0)
    with pytest.raises(ValueError, match="two features"):
        covariance_term(z1[:, :1])
    with pytest.raises(ValueError, match="gamma"):
        variance_term(z1, gamma=0.0)


# ---- It learns: VICReg on scikit-learn's digits, no labels --------------------------------------

@pytest.fixture(scope="module")
def digits_runs():
    """The SimCLR page's 64-128-8 MLP (its ``encode`` and ``augment``) trained with VICReg at
    lambda = mu = nu = 25, once as is and once without the variance term (mu = 0), by one compiled
    lax.scan loop; starting weights and batches drawn with NumPy, embeddings read with NumPy."""
    X, y, params0, all_views = digits_and_views()
    train = two_view_trainer(lambda z1, z2, var_weight: vicreg_loss(z1, z2, 25.0, var_weight, 25.0))

    def evaluate(params):
        return knn_of(params, X, y)

    runs = {"untrained": evaluate(params0) + (None,)}
    for var_weight in (25.0, 0.0):
        params, losses = train(params0, all_views, var_weight)
        runs[var_weight] = evaluate(params) + (np.asarray(losses),)
    return runs


def test_vicreg_learns_digits_without_labels(digits_runs):
    trained_accuracy, _, losses = digits_runs[25.0]
    untrained_accuracy = digits_runs["untrained"][0]
    assert losses[-20:].mean() < losses[:20].mean() - 5.0
    assert trained_accuracy >= 0.85, trained_accuracy  # 0.90 to 0.92 over draws of the views
    assert trained_accuracy >= untrained_accuracy + 0.10, (trained_accuracy, untrained_accuracy)


def test_without_the_variance_term_the_embedding_collapses(digits_runs):
    # the collapse detector: the smallest standard deviation of a feature over the training digits
    assert digits_runs[25.0][1].std(0).min() > 0.5
    assert digits_runs[0.0][1].std(0).min() < 0.05
