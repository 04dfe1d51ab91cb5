import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cookbook.regularization.label_smoothing import optimal_logit_gap, smooth_labels, smoothed_cross_entropy

RNG = np.random.default_rng(0)


def _batch(B=5, K=7, scale=3.0):
    logits = (scale * RNG.standard_normal((B, K))).astype(np.float32)
    labels = np.eye(K, dtype=np.float32)[RNG.integers(0, K, B)]  # one-hot, as NumPy arrays
    return logits, labels


@jax.jit
def _optax(logits, labels, alpha):
    """optax's smoothed targets and its cross-entropy against them, as one program."""
    q = optax.smooth_labels(labels, alpha)
    return q, optax.softmax_cross_entropy(logits, q)


# The gradient of the summed loss, one program for the (5, 7) batch (alpha traced).
_loss_grad = jax.jit(jax.grad(lambda z, labels, alpha: smoothed_cross_entropy(z, labels, alpha).sum()))


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.35, 1.0])
def test_matches_optax(alpha):
    logits, labels = _batch()
    q = smooth_labels(labels, alpha)
    q_ref, ref = _optax(logits, labels, alpha)
    np.testing.assert_allclose(q, q_ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(smoothed_cross_entropy(logits, labels, alpha), ref, rtol=1e-5, atol=1e-6)


def test_alpha_zero_is_plain_cross_entropy():
    logits, labels = _batch()
    ref = -np.sum(labels * np.log(_softmax(logits.astype(np.float64))), axis=-1)  # log-softmax in NumPy
    np.testing.assert_allclose(smoothed_cross_entropy(logits, labels, 0.0), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(smoothed_cross_entropy(logits, labels, 0.0), _optax(logits, labels, 0.0)[1], rtol=1e-5)


def test_smoothed_targets_by_hand_and_sum_to_one():
    q = smooth_labels(np.float32([1.0, 0.0, 0.0, 0.0, 0.0]), 0.5)
    np.testing.assert_allclose(q, [0.6, 0.1, 0.1, 0.1, 0.1], rtol=1e-6)
    _, labels = _batch()
    np.testing.assert_allclose(np.asarray(smooth_labels(labels, 0.3)).sum(-1), np.ones(5), rtol=1e-6)


def test_gradient_is_softmax_minus_smoothed_target():
    logits, labels = _batch()
    g = _loss_grad(logits, labels, 0.2)
    np.testing.assert_allclose(g, _softmax(logits.astype(np.float64)) - np.asarray(smooth_labels(labels, 0.2)), atol=1e-6)


@pytest.mark.parametrize("alpha", [0.1, 0.3])
def test_the_analytic_gap_is_a_stationary_point_with_the_loss_equal_to_the_target_entropy(alpha):
    _, labels = _batch()  # (5, 7)
    gap = optimal_logit_gap(alpha, 7)
    shift = (np.arange(5.0)[:, None] * np.ones((1, 7))).astype(np.float32)  # any shift of a row: same minimum
    z = np.asarray(gap) * labels + shift
    g = _loss_grad(z, labels, alpha)
    np.testing.assert_allclose(g, np.zeros((5, 7)), atol=1e-6)
    q = np.asarray(smooth_labels(labels, alpha), np.float64)
    np.testing.assert_allclose(smoothed_cross_entropy(z, labels, alpha), -np.sum(q * np.log(q), -1), rtol=1e-5)


@pytest.mark.parametrize("alpha, K", [(0.1, 3), (0.1, 10), (0.3, 7)])
def test_the_gap_formula(alpha, K):
    np.testing.assert_allclose(optimal_logit_gap(alpha, K), np.log((1 - alpha + alpha / K) / (alpha / K)), rtol=1e-6)


def test_gradient_descent_from_zero_reaches_the_stated_gap():
    alpha = 0.1
    _, labels = _batch()
    loss_grad = jax.grad(lambda z: smoothed_cross_entropy(z, labels, alpha).sum())

    def step(z, _):
        return z - 2.0 * loss_grad(z), None

    z, _ = jax.lax.scan(step, np.zeros((5, 7), np.float32), length=3000)
    z, y = np.asarray(z), labels.astype(bool)
    gaps = z[y][:, None] - z[~y].reshape(5, 6)  # true logit minus each other logit
    np.testing.assert_allclose(gaps, np.full((5, 6), float(optimal_logit_gap(alpha, 7))), rtol=1e-3)


def test_hard_targets_have_no_finite_gap():
    assert np.isinf(float(optimal_logit_gap(0.0, 10)))
    # and the hard loss keeps decreasing as the gap grows
    _, labels = _batch()
    losses = [float(np.asarray(smoothed_cross_entropy(g * labels, labels, 0.0))[0]) for g in (5.0, 10.0, 20.0)]
    assert losses[0] > losses[1] > losses[2] >= 0


def test_huge_logits_stay_finite_and_low_precision_is_accumulated_in_float32():
    logits, labels = _batch(scale=1e4)
    out = smoothed_cross_entropy(logits, labels, 0.1)
    assert np.all(np.isfinite(np.asarray(out)))
    np.testing.assert_allclose(out, _optax(logits, labels, 0.1)[1], rtol=1e-5)
    logits16, _ = _batch(scale=3.0)
    out16 = smoothed_cross_entropy(logits16.astype(jnp.bfloat16), labels, 0.1)
    assert out16.dtype == jnp.bfloat16
    ref16 = smoothed_cross_entropy(logits16.astype(jnp.bfloat16).astype(jnp.float32), labels, 0.1)
    np.testing.assert_allclose(np.asarray(out16, np.float32), ref16, rtol=1e-2)


def test_jit_and_vmap_agree():
    logits, labels = _batch()
    per_example = jax.vmap(smoothed_cross_entropy, in_axes=(0, 0, None))(logits, labels, 0.1)
    np.testing.assert_allclose(per_example, smoothed_cross_entropy(logits, labels, 0.1), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(smoothed_cross_entropy)(logits, labels, 0.1), per_example, rtol=1e-5)


@pytest.mark.parametrize("alpha", [-0.1, 1.2])
def test_alpha_outside_unit_interval_raises(alpha):
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\], got"):
        smooth_labels(np.eye(7, dtype=np.float32), alpha)


def test_shape_mismatch_and_one_class_raise():
    with pytest.raises(ValueError, match=r"same shape \(\.\.\., K\), got \(5, 7\) and \(5, 3\)"):
        smoothed_cross_entropy(np.zeros((5, 7), np.float32), np.zeros((5, 3), np.float32), 0.1)
    with pytest.raises(ValueError, match="num_classes must be at least 2, got 1"):
        optimal_logit_gap(0.1, 1)


def test_the_gaps_stated_on_the_page():
    # The page said "about 6.8 for alpha = 0.1, K = 10"; that is K = 100. This fails on the old text.
    from cookbook.regularization import label_smoothing

    assert round(float(optimal_logit_gap(0.1, 10)), 1) == 4.5
    assert round(float(optimal_logit_gap(0.1, 100)), 1) == 6.8
    page = " ".join(label_smoothing.__doc__.split())
    assert "about 4.5 for :math:`\\alpha = 0.1` and :math:`K = 10`, 6.8 for :math:`K = 100`" in page


def test_bad_input_gets_a_clear_error():
    with pytest.raises(TypeError, match=r"logits must be a floating-point array, got dtype int32"):
        smoothed_cross_entropy(np.zeros((5, 7), np.int32), np.eye(7, dtype=np.float32)[:5], 0.1)
    with pytest.raises(TypeError, match=r"num_classes must be an int"):
        optimal_logit_gap(0.1, 10.5)
    # Lists are read as arrays.
    np.testing.assert_allclose(smooth_labels([0.0, 1.0], 0.2), [0.1, 0.9], rtol=1e-6)
