import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

from cookbook.foundations.softmax_regression import (
    apply,
    binary_cross_entropy,
    cross_entropy,
    fit,
    init,
    log_softmax,
    loss,
    predict,
)

# Test data come from numpy, and each test's computation runs as one jitted program where it
# would otherwise run many eager operations: each eager operation on a new shape, and each shape
# drawn with jax.random, costs a compilation of its own.
def _normal(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


_log_softmax = jax.jit(log_softmax)
_predict_all = jax.jit(jax.vmap(predict, in_axes=(None, 0)))


def _params(D, K):
    return {"W": _normal(D, K, seed=1), "b": _normal(K, seed=2)}


def test_log_softmax_matches_jax_nn():
    zs = [5.0 * _normal(*shape) for shape in [(3,), (5, 7), (2, 3, 11)]]  # one, two and three axes
    both = jax.jit(lambda zs: [(log_softmax(z), jax.nn.log_softmax(z)) for z in zs])  # one program for all three
    for z, (ours, ref) in zip(zs, both(zs)):
        assert ours.shape == z.shape
        np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-5)


def test_log_softmax_by_hand():
    # softmax(0, log 3) = (1/4, 3/4)
    np.testing.assert_allclose(_log_softmax(np.array([0.0, np.log(3.0)], np.float32)), np.log([0.25, 0.75]), atol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_cross_entropy_matches_optax_integer_labels_also_at_huge_logits(scale):
    Z = np.float32(scale) * np.sign(_normal(7, 5))  # logits of +-scale
    y = np.random.default_rng(1).integers(0, 5, 7).astype(np.int32)
    ours, ref = jax.jit(lambda Z, y: (jax.vmap(cross_entropy)(Z, y),
                                      optax.softmax_cross_entropy_with_integer_labels(Z, y)))(Z, y)
    assert np.all(np.isfinite(ours))
    # optax forms logsumexp(z) - z_y, two numbers near 1e4 whose float32 spacing is 1e-3
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=2e-3)
    Z64 = np.asarray(Z, np.float64)
    exact = np.log(np.exp(Z64 - Z64.max(1, keepdims=True)).sum(1)) + Z64.max(1) - Z64[np.arange(7), y]
    np.testing.assert_allclose(ours, exact, rtol=1e-6, atol=1e-5)  # ours is exact to float32


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_binary_cross_entropy_matches_optax_at_huge_logits(scale):
    z = np.float32(scale) * np.array([-1.0, -1.0, 1.0, 1.0, 0.3, -0.2], np.float32)
    y = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0], np.float32)
    ours, ref = jax.jit(lambda z, y: (jax.vmap(binary_cross_entropy)(z, y),
                                      optax.sigmoid_binary_cross_entropy(z, y)))(z, y)
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    if scale == 1e4:  # a confidently wrong answer costs |z|, a confidently right one nothing
        np.testing.assert_allclose(ours[:4], [0.0, 1e4, 1e4, 0.0], atol=1e-3)


def test_shift_invariance():
    z = _normal(11)
    shifted = jax.jit(lambda z, c: (log_softmax(z + c), log_softmax(z), cross_entropy(z + c, 4), cross_entropy(z, 4)))
    for c in [-1000.0, 3.0, 1000.0]:
        a, b, ce_a, ce_b = shifted(z, c)
        np.testing.assert_allclose(a, b, atol=1e-4)
        np.testing.assert_allclose(ce_a, ce_b, atol=1e-4)


def test_gradient_is_softmax_minus_one_hot():
    z = 3.0 * _normal(7)
    both = jax.jit(lambda z, label: (jax.grad(cross_entropy)(z, label), jax.nn.softmax(z) - jax.nn.one_hot(label, 7)))
    for label in [0, 4, 6]:
        g, ref = both(z, label)
        np.testing.assert_allclose(g, ref, atol=1e-6)
        assert abs(float(np.asarray(g).sum())) < 1e-6  # the gradient sums to zero: a shift changes nothing


def test_binary_gradient_is_sigmoid_minus_label_and_finite_at_extremes():
    z = np.array([-1e4, -3.0, 0.0, 2.0, 1e4], np.float32)
    both = jax.jit(lambda z, label: (jax.vmap(jax.grad(binary_cross_entropy), in_axes=(0, None))(z, label),
                                     jax.nn.sigmoid(z) - label))
    for label in [0.0, 1.0]:
        g, ref = both(z, label)
        np.testing.assert_allclose(g, ref, atol=1e-6)


def test_two_class_softmax_is_logistic_regression_on_the_logit_difference():
    z = _normal(5, 2)
    y = np.array([0, 1, 1, 0, 1], np.int32)
    softmax_loss, logistic_loss = jax.jit(lambda z, y: (
        jax.vmap(cross_entropy)(z, y), jax.vmap(binary_cross_entropy)(z[:, 1] - z[:, 0], y.astype(jnp.float32))))(z, y)
    np.testing.assert_allclose(softmax_loss, logistic_loss, rtol=1e-5, atol=1e-6)


def test_half_precision_is_accumulated_in_float32_and_cast_back():
    z = np.array([30.0, 0.0, -30.0], jnp.bfloat16)
    out = log_softmax(z)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out).astype(np.float32), [0.0, -30.0, -60.0], atol=0.5)


def test_shapes_and_loss_matches_manual_average():
    params = init(jax.random.key(5), 2, 3)  # the page's sizes: its init and apply programs
    assert params["W"].shape == (2, 3) and params["b"].shape == (3,)
    X = _normal(7, 2)
    y = np.arange(7, dtype=np.int32) % 3
    assert apply(params, X[0]).shape == (3,)
    both = jax.jit(lambda params, X, y: (
        loss(params, X, y), jnp.stack([cross_entropy(apply(params, X[i]), y[i]) for i in range(7)])))
    value, per_example = both(params, X, y)
    np.testing.assert_allclose(value, np.mean(np.asarray(per_example)), rtol=1e-5)


def test_jit_and_vmap_agree():
    params = _params(2, 3)  # the page's sizes: its apply program
    X = _normal(11, 2)
    batched = jax.vmap(apply, in_axes=(None, 0))(params, X)
    np.testing.assert_allclose(batched, X.astype(np.float64) @ params["W"] + params["b"][None, :], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jit(apply)(params, X[2]), apply(params, X[2]), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)  # shipped with scikit-learn: 1797 8x8 images, 10 classes
    return (X / 16.0).astype(np.float32), y.astype(np.int32)  # NumPy: sliced on the host


def test_fits_digits_to_stated_accuracy(digits):
    X, y = digits
    X_train, y_train = X[:1200], y[:1200]  # the last 597 digits are held out
    params, losses = jax.jit(fit, static_argnames="steps")(
        {"W": np.zeros((64, 10), np.float32), "b": np.zeros(10, np.float32)},  # the loss is convex: any start will do
        X_train, y_train, learning_rate=0.5, steps=300)
    correct = np.asarray(_predict_all(params, X)) == y  # all 1797 digits in one program
    losses = np.asarray(losses)
    assert losses[-1] < 0.25 < 2.0 < losses[0]
    assert float(np.mean(correct[:1200])) >= 0.95  # measured 0.966
    assert float(np.mean(correct[1200:])) >= 0.88  # measured 0.903 on the 597 held-out digits


def test_binary_model_separates_separable_data():
    X = _normal(101, 3)
    y = (X @ np.array([1.0, -2.0, 0.5], np.float32) + 0.3 > 0).astype(np.int32)
    params = {"W": np.zeros((3, 1), np.float32), "b": np.zeros(1, np.float32)}
    params, losses = fit(params, X, y, learning_rate=1.0, steps=200)
    predictions = np.asarray(_predict_all(params, X))
    assert float(np.mean(predictions == y)) >= 0.98
    losses = np.asarray(losses)
    assert losses[-1] < 0.1 < losses[0]


def test_bad_shapes_raise_clear_errors():
    params = _params(3, 5)
    with pytest.raises(ValueError, match=r"x must have shape \(3,\)"):
        apply(params, np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"y must have shape \(7,\) \(\(N,\) to match X\), got shape \(6,\)"):
        loss(params, np.ones((7, 3), np.float32), np.zeros(6, np.int32))
    with pytest.raises(ValueError, match=r"X must have shape \(7, 3\)"):
        loss(params, np.ones((7, 2), np.float32), np.zeros(7, np.int32))
    with pytest.raises(ValueError, match=r"z must have 1 axes \(K,\): the logits of one example"):
        cross_entropy(np.ones((2, 5), np.float32), 0)
    with pytest.raises(ValueError, match=r"num_classes must be at least 1"):
        init(jax.random.key(0), 3, 0)
    with pytest.raises(ValueError, match=r"params\['b'\] must have shape \(5,\)"):
        apply(dict(params, b=np.zeros(4, np.float32)), np.ones(3, np.float32))


@pytest.mark.parametrize("label", [-1, 5])
def test_labels_outside_the_classes_raise_eagerly_and_give_nan_under_jit(label):
    params = _params(3, 5)
    with pytest.raises(ValueError, match=r"label \(a class of the 5 logits in z\) must lie in \[0, 5\)"):
        cross_entropy(np.zeros(5, np.float32), label)
    with pytest.raises(ValueError, match=r"y must lie in \[0, 5\)"):
        loss(params, np.ones((2, 3), np.float32), np.array([0, label], np.int32))
    assert np.isnan(float(jax.jit(cross_entropy)(np.zeros(5, np.float32), label)))  # not another class's loss


@pytest.mark.parametrize("call, name", [
    (lambda: log_softmax(np.arange(3, dtype=np.int32)), "z"),
    (lambda: cross_entropy(np.zeros(3, np.float32), 1.0), "label"),
    (lambda: apply(_params(3, 5), np.arange(3, dtype=np.int32)), "x"),
    (lambda: loss(_params(3, 5), np.ones((2, 3), np.float32), np.array([0.0, 1.0], np.float32)), "y"),
    (lambda: init(jax.random.key(0), 2.5, 3), "in_features"),
])
def test_wrong_types_raise_type_errors(call, name):
    with pytest.raises(TypeError, match=rf"{name} must be"):
        call()


def test_predict_refuses_nan_logits():
    params = _params(3, 5)
    with pytest.raises(ValueError, match=r"logits of params and x holds NaN"):
        predict(params, np.array([np.nan, 0.0, 0.0], np.float32))


def test_the_numbers_on_the_page():
    p = np.exp(_log_softmax(np.array([1.0, 0.0], np.float32)))
    np.testing.assert_allclose(p[0] / p[1], np.e, rtol=1e-6)  # one point ahead: e = 2.7 times the share
    z = np.array([0.3, -1.2], np.float32)  # a two-class softmax is the sigmoid of the difference
    np.testing.assert_allclose(p := np.exp(_log_softmax(z))[1], 1 / (1 + np.exp(-(z[1] - z[0]))), rtol=1e-6)
    with np.errstate(over="ignore", under="ignore"):  # the float32 thresholds the page quotes
        assert np.isinf(np.exp(np.float32(88.73))) and np.isfinite(np.exp(np.float32(88.72)))
        assert np.exp(np.float32(-104.0)) == 0.0 and np.exp(np.float32(-103.0)) > 0.0
