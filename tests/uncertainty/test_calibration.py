import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from cookbook.uncertainty.calibration import expected_calibration_error, fit_temperature, reliability_diagram, temperature_nll

# Called directly: each runs one compiled core, shared with the page's examples and the jit check.
ece_jit = expected_calibration_error
diagram_jit = reliability_diagram
fit_jit = fit_temperature


def reference_ece(probs, labels, num_bins):
    """A loop over bins (lo, hi] of float64 edges, the first bin also holding 0."""
    probs = np.asarray(probs, np.float64)
    conf, correct = probs.max(1), (probs.argmax(1) == labels)
    edges = np.linspace(0, 1, num_bins + 1)
    ece = 0.0
    for m in range(num_bins):
        inside = (conf > edges[m]) & (conf <= edges[m + 1])
        if m == 0:
            inside |= conf == 0
        if inside.any():
            ece += inside.sum() / len(conf) * abs(correct[inside].mean() - conf[inside].mean())
    return ece


def random_predictions(seed, N=101, K=7, scale=3.0):
    rng = np.random.default_rng(seed)
    logits = scale * rng.standard_normal((N, K))
    return np.float32(softmax(logits, axis=1)), rng.integers(0, K, N)


# ---- Against a loop --------------------------------------------------------------------------------

@pytest.mark.parametrize("num_bins", [15, 7, 1])
def test_ece_matches_a_loop_over_bins(num_bins):
    probs, labels = random_predictions(num_bins)
    np.testing.assert_allclose(ece_jit(probs, labels, num_bins=num_bins), reference_ece(probs, labels, num_bins),
                               rtol=1e-5, atol=1e-7)


def test_confidences_on_bin_edges_go_to_the_bin_below_and_zero_to_the_first():
    probs = np.float32([[0.5, 0.5], [1.0, 0.0], [0.75, 0.25], [0.0, 0.0]])
    labels = np.array([1, 0, 1, 0])
    conf, acc, count = diagram_jit(probs, labels, num_bins=4)
    # Bin (0.25, 0.5] holds 0.5 (wrong: arg max is class 0); (0.5, 0.75] holds 0.75 (wrong); (0.75, 1]
    # holds 1.0 (right); the zero row joins the first bin (arg max 0 = its label: right).
    np.testing.assert_array_equal(count, [1, 1, 1, 1])
    np.testing.assert_allclose(conf, [0.0, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(acc, [1.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(ece_jit(probs, labels, num_bins=4), reference_ece(probs, labels, 4), atol=1e-7)
    np.testing.assert_allclose(ece_jit(probs, labels, num_bins=4), (1 + 0.5 + 0.75 + 0) / 4)


def test_the_diagram_adds_up_to_the_ece():
    probs, labels = random_predictions(3)
    conf, acc, count = map(np.asarray, diagram_jit(probs, labels, num_bins=15))
    assert int(count.sum()) == 101
    np.testing.assert_allclose(np.sum(count / 101 * np.abs(acc - conf)), ece_jit(probs, labels, num_bins=15), rtol=1e-5)


def test_a_base_rate_predictor_and_a_sure_correct_one_have_zero_ece():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    base_rate = np.tile(np.float32([0.6, 0.3, 0.1]), (10, 1))
    assert float(ece_jit(base_rate, labels, num_bins=15)) < 1e-6
    assert float(ece_jit(np.eye(3, dtype=np.float32)[labels], labels, num_bins=15)) == 0.0


# ---- Temperature ---------------------------------------------------------------------------------

def test_temperature_nll_and_fit_match_scipy():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 5, 77)
    predicted = np.where(rng.random(77) < 0.7, labels, rng.integers(0, 5, 77))  # right about 3 times in 4
    logits = np.float32(rng.standard_normal((77, 5)) + 6 * np.eye(5)[predicted])
    nll = lambda T: -np.mean(log_softmax(np.float64(logits) / T, axis=1)[np.arange(77), labels])
    np.testing.assert_allclose(temperature_nll(logits, labels, 2.5), nll(2.5), rtol=1e-5)
    best = minimize_scalar(nll, bounds=(0.05, 50), method="bounded", options={"xatol": 1e-8}).x
    np.testing.assert_allclose(fit_jit(logits, labels), best, rtol=1e-3)


def test_the_example_temperature_is_the_minimiser():
    logits = np.float32([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [4.0, 0.0]])
    labels = np.array([0, 1, 1, 0])
    # Three right with margin 4, one wrong with margin 4: p = sigmoid(4 / T) solves 3 (1 - p) = p, p = 3/4.
    np.testing.assert_allclose(fit_jit(logits, labels), 4 / np.log(3), rtol=1e-4)


# ---- It works: an over-confident digits classifier ------------------------------------------------

def test_temperature_scaling_halves_the_ece_of_an_over_confident_digits_classifier():
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    train, val, test = order[:300], order[300:1000], order[1000:]
    model = LogisticRegression(C=1e4, max_iter=3000).fit(X[train] / 16, y[train])  # nearly unregularised
    logits = np.float32(model.decision_function(X / 16))
    T = float(fit_jit(logits[val], y[val]))
    probs = lambda t: np.float32(softmax(np.float64(logits[test]) / t, axis=1))
    before, after = float(ece_jit(probs(1.0), y[test], num_bins=15)), float(ece_jit(probs(T), y[test], num_bins=15))
    assert T > 2
    assert 0.93 <= float((logits[test].argmax(1) == y[test]).mean()) < 0.94  # the page: right 93 % of the time
    assert before > 0.04 and after < 0.5 * before  # measured: 0.051, then 0.015 at T = 3.7, (before, after, T)
    assert float(temperature_nll(logits[test], y[test], T)) < float(temperature_nll(logits[test], y[test], 1.0))
    np.testing.assert_array_equal(probs(T).argmax(1), probs(1.0).argmax(1))  # the accuracy does not change


# ---- Bad input --------------------------------------------------------------------------------------

def test_clear_errors_on_bad_input():
    probs, labels = random_predictions(5, N=11, K=3)
    with pytest.raises(TypeError, match="labels"):
        expected_calibration_error(probs, np.float32(labels))
    with pytest.raises(ValueError, match="labels"):
        expected_calibration_error(probs, labels + 3)
    with pytest.raises(ValueError, match="labels"):
        expected_calibration_error(probs, labels[:5])
    with pytest.raises(ValueError, match="probs"):
        expected_calibration_error(probs[0], labels)
    with pytest.raises(TypeError, match="num_bins"):
        expected_calibration_error(probs, labels, num_bins=2.5)
    with pytest.raises(ValueError, match="num_bins"):
        expected_calibration_error(probs, labels, num_bins=0)
    with pytest.raises(ValueError, match="temperature"):
        temperature_nll(probs, labels, -1.0)
