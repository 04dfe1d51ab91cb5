import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.special
import scipy.stats
from sklearn.metrics import log_loss, mean_absolute_error, mean_squared_error

from cookbook.foundations.losses import (
    binary_cross_entropy,
    cross_entropy,
    cross_entropy_one_hot,
    huber,
    kl_divergence,
    mae,
    mse,
)


# Test data come from numpy, and a test that compares several losses and references runs them in
# one jitted program: each shape drawn with jax.random, and each eager operation on a new shape,
# costs a compilation of its own.
def _normal(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _softmax(X):
    return scipy.special.softmax(np.asarray(X, np.float64), axis=-1).astype(np.float32)


@pytest.fixture(scope="module")
def regression():
    return 3.0 * _normal(7, 5, seed=0), _normal(7, 5, seed=1)


@pytest.fixture(scope="module")
def classification():
    logits = 4.0 * _normal(11, 5, seed=2)
    labels = np.random.default_rng(3).integers(0, 5, 11).astype(np.int32)
    soft = _softmax(_normal(11, 5, seed=4))
    return logits, labels, soft


def test_mse_and_mae_match_sklearn_and_optax(regression):
    pred, target = regression
    p, t = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    ours_mse, ours_mae, half = jax.jit(lambda a, b: (mse(a, b), mae(a, b), jnp.mean(optax.l2_loss(a, b))))(pred, target)
    np.testing.assert_allclose(ours_mse, mean_squared_error(t, p), rtol=1e-5)
    np.testing.assert_allclose(ours_mae, mean_absolute_error(t, p), rtol=1e-5)
    # optax.l2_loss is half the squared error
    np.testing.assert_allclose(ours_mse, 2.0 * half, rtol=1e-5)


@pytest.mark.parametrize("delta", [0.5, 1.0, 2.0])
def test_huber_matches_optax(regression, delta):
    pred, target = regression
    ours, ref = jax.jit(lambda a, b: (huber(a, b, delta=delta), jnp.mean(optax.huber_loss(a, b, delta=delta))))(pred, target)
    np.testing.assert_allclose(ours, ref, rtol=1e-5)


def test_huber_is_half_mse_inside_delta_and_linear_outside():
    delta = 1.5
    r = np.array([-1.4, -0.3, 0.0, 0.7, 1.5], np.float32)  # |r| <= delta
    far = np.array([2.0, 3.0, 7.0, -5.0], np.float32)
    one = lambda a: huber(a, jnp.zeros(()), delta=delta)

    @jax.jit  # one program for the whole test
    def all_of_it(r, far):
        return huber(r, jnp.zeros(5), delta=delta), mse(r, jnp.zeros(5)), jax.vmap(one)(far), jax.vmap(jax.grad(one))(far)

    inside, squared, per_point, slopes = all_of_it(r, far)
    np.testing.assert_allclose(inside, squared / 2, rtol=1e-6)
    np.testing.assert_allclose(per_point, delta * (np.abs(far) - delta / 2), rtol=1e-6)
    np.testing.assert_allclose(slopes, delta * np.sign(far), rtol=1e-6)  # the pull is capped at delta


def test_binary_cross_entropy_matches_optax_and_sklearn():
    z = np.array([-3.0, -0.5, 0.0, 0.4, 2.5, 6.0, -1.2], np.float32)
    y = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0], np.float32)
    soft = np.array([0.1, 0.9, 0.5, 0.3, 0.7, 1.0, 0.0], np.float32)  # soft labels too
    both = jax.jit(lambda z, y: (binary_cross_entropy(z, y), jnp.mean(optax.sigmoid_binary_cross_entropy(z, y))))
    ours, ref = both(z, y)
    np.testing.assert_allclose(ours, ref, rtol=1e-5)
    probs = 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))
    np.testing.assert_allclose(ours, log_loss(y, probs), rtol=1e-5)
    ours_soft, ref_soft = both(z, soft)
    np.testing.assert_allclose(ours_soft, ref_soft, rtol=1e-5)


def test_categorical_cross_entropy_matches_optax_and_sklearn(classification):
    logits, labels, soft = classification
    one_hot = np.eye(5, dtype=np.float32)[labels]

    @jax.jit  # ours and optax's, in one program
    def losses(logits, labels, one_hot, soft):
        return {"ours": cross_entropy(logits, labels), "one_hot": cross_entropy_one_hot(logits, one_hot),
                "soft": cross_entropy_one_hot(logits, soft),
                "ref": jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels)),
                "ref_soft": jnp.mean(optax.softmax_cross_entropy(logits, soft))}

    out = losses(logits, labels, one_hot, soft)
    np.testing.assert_allclose(out["ours"], out["ref"], rtol=1e-5)
    np.testing.assert_allclose(out["one_hot"], out["ref"], rtol=1e-5)
    np.testing.assert_allclose(out["soft"], out["ref_soft"], rtol=1e-5)
    probs = scipy.special.softmax(np.asarray(logits, np.float64), axis=-1)
    np.testing.assert_allclose(out["ours"], log_loss(labels, probs, labels=range(5)), rtol=1e-5)


def test_extreme_logits_stay_finite_and_exact():
    z = np.array([-1e4, 1e4, -1e4, 1e4], np.float32)
    y = np.array([0.0, 1.0, 1.0, 0.0], np.float32)  # right, right, wrong, wrong
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], np.float32)
    labels = np.array([0, 0], np.int32)  # right (0), wrong by 2e4
    binary, categorical, grads = jax.jit(lambda z, y, logits, labels: (  # one program
        binary_cross_entropy(z, y), cross_entropy(logits, labels), jax.grad(cross_entropy)(logits, labels)))(z, y, logits, labels)
    np.testing.assert_allclose(binary, (0 + 0 + 1e4 + 1e4) / 4, rtol=1e-6)
    np.testing.assert_allclose(categorical, 1e4, rtol=1e-5)
    assert np.all(np.isfinite(grads))


def test_cross_entropy_with_leading_axes_and_equals_kl_plus_entropy(classification):
    logits, labels, soft = classification
    @jax.jit  # one program for the whole test
    def sides(logits, labels, q):
        return (cross_entropy(logits[3], labels[3]), cross_entropy(logits[3:4], labels[3:4]),
                cross_entropy_one_hot(logits, q), kl_divergence(q, jax.nn.softmax(logits)))

    # a (11,) batch reshaped into no batch: one example
    one, batch_of_one, ce, kl = sides(logits, labels, soft)
    np.testing.assert_allclose(one, batch_of_one, rtol=1e-6)
    # CE(q, softmax z) = KL(q || softmax z) + H(q)
    entropy = np.mean(-np.sum(soft * np.log(soft), axis=-1))
    np.testing.assert_allclose(ce, kl + entropy, rtol=1e-4)


def test_kl_matches_scipy_and_optax():
    p = _softmax(2.0 * _normal(3, 7, seed=5))
    q = _softmax(2.0 * _normal(3, 7, seed=6))
    P, Q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    ours, ref = jax.jit(lambda p, q: (kl_divergence(p, q), jnp.mean(optax.kl_divergence(jnp.log(q), p))))(p, q)
    np.testing.assert_allclose(ours, scipy.special.rel_entr(P, Q).sum(-1).mean(), rtol=1e-4)
    np.testing.assert_allclose(ours, scipy.stats.entropy(P, Q, axis=-1).mean(), rtol=1e-4)
    np.testing.assert_allclose(ours, ref, rtol=1e-4)


def test_kl_is_zero_for_equal_and_nonnegative_otherwise():
    p, q = (_softmax(3.0 * _normal(50, 5, seed=seed)) for seed in (7, 8))
    same, each, pq, qp = jax.jit(lambda p, q: (  # one program
        kl_divergence(p, p), jax.vmap(kl_divergence)(p, q), kl_divergence(p, q), kl_divergence(q, p)))(p, q)
    assert abs(float(same)) < 1e-6
    assert np.all(np.asarray(each) >= 0.0)
    assert float(pq) != pytest.approx(float(qp), rel=1e-3)  # not symmetric


def test_kl_zero_probabilities():
    p = jnp.array([0.5, 0.5, 0.0])
    q = jnp.array([0.5, 0.5, 0.0])  # 0 log(0 / 0) = 0 as well
    assert float(kl_divergence(p, q)) == 0.0
    np.testing.assert_allclose(kl_divergence(p, jnp.array([0.25, 0.25, 0.5])), np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(
        kl_divergence(p, jnp.array([0.25, 0.25, 0.5])),
        scipy.special.rel_entr([0.5, 0.5, 0.0], [0.25, 0.25, 0.5]).sum(), rtol=1e-6)
    gp, gq = jax.grad(kl_divergence, argnums=(0, 1))(p, q)
    assert np.all(np.isfinite(gp)) and np.all(np.isfinite(gq))
    assert float(kl_divergence(jnp.array([0.5, 0.5]), jnp.array([1.0, 0.0]))) == np.inf  # q misses mass of p


@pytest.mark.parametrize(
    "fn, args, match",
    [
        (mse, (np.ones(3, np.float32), np.ones(5, np.float32)), r"prediction and target must have the same shape, got \(3,\) and \(5,\)"),
        (huber, (np.ones((3, 1), np.float32), np.ones(3, np.float32)), r"got \(3, 1\) and \(3,\)"),
        (binary_cross_entropy, (np.ones(3, np.float32), np.ones(7, np.float32)), r"logits and labels"),
        (cross_entropy, (np.ones((3, 5), np.float32), np.ones(5, np.int32)), r"labels must have shape .* = \(3,\), got \(5,\)"),
        (cross_entropy_one_hot, (np.ones((3, 5), np.float32), np.ones((3, 7), np.float32)), r"logits and targets"),
        (kl_divergence, (np.ones(5, np.float32) / 5, np.ones(7, np.float32) / 7), r"p and q must have the same shape"),
    ],
)
def test_bad_shapes_raise_clear_errors(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)


# ---- Labels outside the classes, float labels and empty batches (each was silent before) --------

LOGITS = jnp.array([[2.0, 0.0, -2.0], [0.0, 1.0, 0.0]])


@pytest.mark.parametrize("labels", [[0, -1], [0, 3]])
def test_cross_entropy_rejects_labels_outside_the_classes(labels):
    # -1 used to wrap around to the loss of class K - 1, and K used to give NaN.
    with pytest.raises(ValueError, match=r"labels \(classes of the 3 logits\) must lie in \[0, 3\)"):
        cross_entropy(LOGITS, jnp.array(labels))


def test_cross_entropy_under_jit_gives_nan_for_an_invalid_label_not_another_class():
    jitted = jax.jit(cross_entropy)
    assert np.isnan(float(jitted(LOGITS, jnp.array([0, -1]))))
    assert np.isnan(float(jitted(LOGITS, jnp.array([0, 3]))))
    np.testing.assert_allclose(jitted(LOGITS, jnp.array([0, 2])), cross_entropy(LOGITS, jnp.array([0, 2])), rtol=1e-6)


def test_cross_entropy_rejects_float_labels():
    # 1.7 used to be truncated to class 1 in silence.
    with pytest.raises(TypeError, match=r"labels must be an integer array, got dtype float32"):
        cross_entropy(LOGITS, jnp.array([0.0, 1.7]))


def test_cross_entropy_rejects_an_empty_batch():
    # The mean of no examples used to be NaN.
    with pytest.raises(ValueError, match=r"labels must hold at least one example"):
        cross_entropy(jnp.zeros((0, 3)), jnp.zeros((0,), jnp.int32))


@pytest.mark.parametrize("fn, args, name", [
    (mse, (jnp.array([1, 2, 3]), jnp.ones(3)), "prediction"),
    (cross_entropy, (jnp.array([[1, 2, 3]]), jnp.array([0])), "logits"),
    (kl_divergence, (jnp.ones(3) / 3, jnp.array([0, 1, 0])), "q"),
])
def test_integer_arrays_where_floats_belong_raise_type_errors(fn, args, name):
    with pytest.raises(TypeError, match=rf"{name} must be a floating-point array"):
        fn(*args)


def test_lists_are_accepted():
    np.testing.assert_allclose(mse([0.5, 1.0, 5.0], [0.0, 1.0, 1.0]), 16.25 / 3, rtol=1e-6)
    np.testing.assert_allclose(cross_entropy([[0.0, 0.0]], [1]), np.log(2.0), rtol=1e-6)


def test_the_numbers_on_the_page():
    # one point ten units off costs as much as a hundred points one unit off
    assert float(mse(jnp.array([10.0]), jnp.zeros(1))) == 100 * float(mse(jnp.array([1.0]), jnp.zeros(1)))
    r = np.array([-2.0, 0.5, 3.0], np.float32)
    np.testing.assert_allclose(jax.jit(jax.vmap(jax.grad(lambda a: mse(a, jnp.zeros(())))))(r), 2 * r)  # gradient 2r
    # cross-entropy of a confidently wrong logit grows linearly: slope -> 1 per unit of logit
    z = np.array([-50.0, -60.0], np.float32)
    slopes = jax.jit(jax.vmap(jax.grad(lambda a: binary_cross_entropy(a, jnp.ones(())))))(z)
    np.testing.assert_allclose(slopes, -1.0, atol=1e-6)
