import jax
import numpy as np
import pytest
from scipy.stats import norm

from cookbook.uncertainty._data import GAP, gap_data
from cookbook.uncertainty.deep_ensembles import MIN_VARIANCE, apply, fit, gaussian_nll, init, mixture_moments, predict

_predict_many = jax.jit(jax.vmap(predict, in_axes=(None, 0)))
_members_many = jax.jit(jax.vmap(jax.vmap(apply, in_axes=(None, 0)), in_axes=(0, None)))


def predict_many(params, X):
    """The mixture's means and variances (N,) at the rows of ``X``, as NumPy arrays."""
    return tuple(np.asarray(a) for a in _predict_many(params, X))


def members_many(params, X):
    """Every member's means and variances (M, N) at the rows of ``X``, as NumPy arrays."""
    return tuple(np.asarray(a) for a in _members_many(params, X))


SIZES, MEMBERS, STEPS = (1, 32, 32, 2), 5, 600


@pytest.fixture(scope="module")
def trained():
    x, y = gap_data()
    params = init(jax.random.key(0), SIZES, num_members=MEMBERS)
    params, losses = fit(params, x, y, steps=STEPS)
    return x, y, params, np.asarray(losses)


# ---- The mixture ---------------------------------------------------------------------------------

def test_mixture_moments_match_sampling_from_the_mixture():
    rng = np.random.default_rng(0)
    means, variances = rng.normal(size=7), rng.uniform(0.1, 2.0, 7)
    component = rng.integers(0, 7, 2_000_000)
    samples = rng.normal(means[component], np.sqrt(variances[component]))
    mean, variance = mixture_moments(np.float32(means), np.float32(variances))
    np.testing.assert_allclose(mean, samples.mean(), atol=5e-3)
    np.testing.assert_allclose(variance, samples.var(), rtol=5e-3)
    # The law of total variance, in closed form.
    np.testing.assert_allclose(variance, np.mean(variances + means**2) - np.mean(means) ** 2, rtol=1e-5)


def test_one_member_is_its_own_mixture():
    mean, variance = mixture_moments(np.array([0.3], np.float32), np.array([0.2], np.float32))
    np.testing.assert_allclose([mean, variance], [0.3, 0.2], rtol=1e-6)


def numpy_member(sizes, seed):
    """One member's layers in init's shapes, drawn with NumPy (no sampler compiled per shape)."""
    rng = np.random.default_rng(seed)
    return [{"W": rng.standard_normal((n_in, n_out)).astype(np.float32) * np.float32(np.sqrt(2.0 / n_in)),
             "b": np.zeros(n_out, np.float32)} for n_in, n_out in zip(sizes[:-1], sizes[1:])]


def test_nll_matches_scipy_and_the_variance_has_a_floor():
    params = numpy_member((3, 5, 2), 1)
    X = np.random.default_rng(2).standard_normal((11, 3)).astype(np.float32)
    y = np.random.default_rng(3).standard_normal(11).astype(np.float32)
    stacked = lambda member: [{k: v[None] for k, v in layer.items()} for layer in member]  # noqa: E731 (M = 1)
    mean, variance = members_many(stacked(params), X)
    want = -np.mean(norm.logpdf(y, mean[0], np.sqrt(variance[0]))) - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(gaussian_nll(params, X, y), want, rtol=1e-5)
    # A raw output of -100 gives the floor, not a zero variance.
    params[-1]["b"] = np.array([0.0, -100.0], np.float32)
    params[-1]["W"] = np.zeros_like(params[-1]["W"])
    _, variance = members_many(stacked(params), X)
    np.testing.assert_allclose(variance, MIN_VARIANCE, rtol=1e-3)


# ---- It learns: sure on the data, unsure in the gap ---------------------------------------------------

def test_training_lowers_every_members_loss_and_learns_the_noise(trained):
    x, y, params, losses = trained
    assert losses.shape == (MEMBERS, STEPS)
    assert np.all(losses[:, -1] < losses[:, 0] - 1.0)
    _, variances = members_many(params, np.concatenate([x, np.linspace(-0.5, 0.5, 11, dtype=np.float32)[:, None]]))
    variances = variances[:, : len(x)]
    # The data's noise variance is 0.1 ** 2 = 0.01.
    assert 0.003 < float(np.median(variances)) < 0.03


def test_predictive_variance_is_at_least_three_times_larger_in_the_gap(trained):
    x, y, params, _ = trained
    gap = np.linspace(-0.5, 0.5, 11, dtype=np.float32)[:, None]
    _, var = predict_many(params, np.concatenate([x, gap]))  # one compile for both
    on_data, in_gap = var[: len(x)], var[len(x):]
    ratio = float(in_gap.mean() / on_data.mean())
    assert ratio > 3, ratio
    means, variances = members_many(params, np.concatenate([x, gap]))
    means, variances = means[:, len(x):], variances[:, len(x):]
    assert float(means.var(0).mean()) > float(variances.mean(0).mean())  # disagreement dominates in the gap
    assert GAP[0] < gap.min() and gap.max() < GAP[1]


def test_members_differ_only_because_of_their_initialisation(trained):
    x, y, params, _ = trained
    means, _ = members_many(params, np.concatenate([x, np.linspace(-0.5, 0.5, 11, dtype=np.float32)[:, None]]))
    assert float(means[:, : len(x)].std(0).mean()) < 0.05  # on the data they agree
    same = init(jax.random.key(0), SIZES, num_members=MEMBERS)
    W = np.asarray(same[0]["W"])
    np.testing.assert_array_equal(W, init(jax.random.key(0), SIZES, num_members=MEMBERS)[0]["W"])
    assert not np.allclose(W[0], W[1])


# ---- Bad input ------------------------------------------------------------------------------------

def test_clear_errors_on_bad_input():
    params = [{k: np.stack([v, v + 1]) for k, v in layer.items()} for layer in numpy_member((1, 3, 2), 2)]  # M = 2
    with pytest.raises(ValueError, match="sizes"):
        init(jax.random.key(2), (1, 3, 1), num_members=2)
    with pytest.raises(TypeError, match="num_members"):
        init(jax.random.key(2), (1, 3, 2), num_members=2.0)
    with pytest.raises(ValueError, match="means"):
        mixture_moments(np.ones((2, 2), np.float32), np.ones(2, np.float32))
    with pytest.raises(ValueError, match="variances"):
        mixture_moments(np.ones(2, np.float32), np.ones(3, np.float32))
    with pytest.raises(ValueError, match="y"):
        fit(params, np.ones((5, 1), np.float32), np.ones(4, np.float32), steps=2)
    with pytest.raises(TypeError, match="X"):
        fit(params, np.ones((5, 1), np.int32), np.ones(5, np.float32), steps=2)
    broken = [dict(layer) for layer in params]
    broken[1]["b"] = broken[1]["b"][:1]
    with pytest.raises(ValueError, match="member axis"):
        predict(broken, np.ones(1, np.float32))
