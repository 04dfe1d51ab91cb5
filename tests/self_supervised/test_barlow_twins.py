import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from cookbook.self_supervised.barlow_twins import EPS, barlow_twins_loss, cross_correlation
from ssl_helpers import digits_and_views, knn_of, two_view_trainer

# barlow_twins_loss and cross_correlation check their input, then run one compiled core each: the
# tests call them as they are (a jax.jit around them would compile a second program per shape).


def numpy_barlow_twins(z1, z2, lam):
    """A float64 loop over the entries of C, written from the definition."""
    z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
    N, D = z1.shape
    a = (z1 - z1.mean(0)) / np.sqrt(z1.var(0) + EPS)
    b = (z2 - z2.mean(0)) / np.sqrt(z2.var(0) + EPS)
    c = np.zeros((D, D))
    for i in range(D):
        for j in range(D):
            c[i, j] = sum(a[n, i] * b[n, j] for n in range(N)) / N
    loss = 0.0
    for i in range(D):
        for j in range(D):
            loss += (1.0 - c[i, i]) ** 2 if i == j else lam * c[i, j] ** 2
    return c, loss


def views(seed, N=11, D=5, spread=0.5):
    rng = np.random.default_rng(seed)
    z1 = rng.standard_normal((N, D)).astype(np.float32)
    z2 = (z1 + spread * rng.standard_normal((N, D))).astype(np.float32)
    return z1, z2


@pytest.mark.parametrize("lam", [0.0, 0.2, 3.0])
def test_against_a_float64_loop(lam):
    z1, z2 = views(0)
    c, reference = numpy_barlow_twins(z1, z2, lam)
    np.testing.assert_allclose(cross_correlation(z1, z2), c, atol=2e-6)
    np.testing.assert_allclose(barlow_twins_loss(z1, z2, lam), reference, rtol=2e-5)


def test_correlations_lie_in_minus_one_one_and_match_numpy():
    z1, z2 = views(1, N=7, D=3)
    c = np.asarray(cross_correlation(z1, z2))
    assert np.abs(c).max() <= 1.0
    # with EPS negligible, C is the Pearson correlation between the features of the two views
    np.testing.assert_allclose(c, np.corrcoef(z1.T, z2.T)[:3, 3:], atol=1e-4)


def test_invariances():
    z1, z2 = views(2)
    base = float(barlow_twins_loss(z1, z2, 0.2))
    perm = np.random.default_rng(3).permutation(len(z1))
    np.testing.assert_allclose(barlow_twins_loss(z1[perm], z2[perm], 0.2), base, rtol=1e-5)  # batch order
    np.testing.assert_allclose(barlow_twins_loss(z2, z1, 0.2), base, rtol=1e-5)  # views swapped: C transposed
    scale, shift = np.array([3.0, 0.5, 2.0, 7.0, 1.5], np.float32), np.float32(4.0)
    np.testing.assert_allclose(barlow_twins_loss(scale * z1 + shift, z2, 0.2), base, rtol=1e-4)  # per-feature affine
    # but a mismatched order of the two views (images paired wrongly) is not ignored
    assert float(barlow_twins_loss(z1[perm], z2, 0.2)) > base + 1.0


def test_collapse_and_copied_features():
    z1, z2 = views(4, N=64)
    D = z1.shape[1]
    constant = np.ones_like(z1)
    np.testing.assert_allclose(barlow_twins_loss(constant, constant, 0.2), D, rtol=1e-6)  # the largest invariance term
    copied = np.tile(z1[:, :1], (1, D))  # dimensional collapse: a perfect diagonal, every off-diagonal entry 1
    np.testing.assert_allclose(barlow_twins_loss(copied, copied, 0.2), 0.2 * D * (D - 1), rtol=1e-4)
    assert float(barlow_twins_loss(z1, z1, 0.2)) < 0.2 * 0.5  # distinct features of one view: nearly the identity


def test_gradients():
    z1, z2 = views(5, N=7, D=3)
    with jax.enable_x64(True):
        check_grads(jax.jit(lambda a, b: barlow_twins_loss(a, b, 0.3)),
                    (z1.astype(np.float64), z2.astype(np.float64)), order=1, modes=["rev"])


def test_edge_cases():
    z1, z2 = views(6)
    # a constant feature: finite loss and finite gradients
    flat = z1.copy()
    flat[:, 0] = 2.0
    assert np.isfinite(barlow_twins_loss(flat, z2, 0.2))
    grads = jax.jit(jax.grad(barlow_twins_loss, argnums=(0, 1)))(flat, z2, 0.2)
    assert all(np.isfinite(g).all() for g in grads)
    # bfloat16 input: computed in float32, within the rounding of the inputs
    _, reference = numpy_barlow_twins(z1, z2, 0.2)
    got = barlow_twins_loss(z1.astype(jnp.bfloat16), z2.astype(jnp.bfloat16), 0.2)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, reference, rtol=3e-2, atol=3e-2)


def test_bad_input():
    z1, z2 = views(7)
    with pytest.raises(ValueError, match="z2"):
        barlow_twins_loss(z1, z2[:3])
    with pytest.raises(ValueError, match="z1"):
        barlow_twins_loss(z1[0], z2[0])
    with pytest.raises(TypeError, match="z1"):
        cross_correlation(z1.astype(np.int32), z2)
    with pytest.raises(ValueError, match="off_diagonal_weight"):
        barlow_twins_loss(z1, z2, -0.1)


# ---- It learns: Barlow Twins on scikit-learn's digits, no labels --------------------------------

@pytest.fixture(scope="module")
def digits_runs():
    """The SimCLR page's 64-128-8 MLP (its ``encode`` and ``augment``) trained with this loss, once
    with the redundancy term (lambda = 1) and once without it (lambda = 0), by one compiled
    lax.scan loop; starting weights and batches drawn with NumPy, embeddings read with NumPy."""
    X, y, params0, all_views = digits_and_views()
    train = two_view_trainer(barlow_twins_loss)

    def evaluate(params):
        return knn_of(params, X, y, standardise=True)  # standardised, as the loss sees each feature

    runs = {"untrained": evaluate(params0) + (None,)}
    for lam in (1.0, 0.0):
        params, losses = train(params0, all_views, lam)
        runs[lam] = evaluate(params) + (np.asarray(losses),)
    return runs


def mean_abs_off_diagonal_correlation(z):
    c = np.corrcoef(z.T)
    D = len(c)
    return (np.abs(c).sum() - D) / (D * (D - 1))


def test_barlow_twins_learns_digits_without_labels(digits_runs):
    trained_accuracy, _, losses = digits_runs[1.0]
    untrained_accuracy = digits_runs["untrained"][0]
    assert losses[-20:].mean() < losses[:20].mean() - 2.5
    assert trained_accuracy >= 0.83, trained_accuracy  # 0.85 to 0.87 over draws of the views
    assert trained_accuracy >= untrained_accuracy + 0.10, (trained_accuracy, untrained_accuracy)


def test_without_the_redundancy_term_the_features_correlate(digits_runs):
    # the collapse detector: the mean absolute correlation between different features of the
    # training embeddings; the invariance term alone lets the features repeat one another
    assert mean_abs_off_diagonal_correlation(digits_runs[1.0][1]) < 0.25  # 0.07 to 0.14 over draws of the views
    assert mean_abs_off_diagonal_correlation(digits_runs[0.0][1]) > 0.9
