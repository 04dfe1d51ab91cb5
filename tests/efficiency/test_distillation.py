import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cookbook.efficiency.distillation import distillation_loss, soft_cross_entropy, soft_targets
from cookbook.foundations.training_loop import load_digits_split


def _logits(seed, *shape, scale=2.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def test_against_optax_and_float64_numpy():
    z, v = _logits(0, 5, 3, 7), _logits(1, 5, 3, 7)
    y = np.random.default_rng(2).integers(0, 7, (5, 3)).astype(np.int32)
    T, alpha = 3.0, 0.7
    soft = soft_cross_entropy(z, v, T=T)
    got = distillation_loss(z, v, y, T=T, alpha=alpha)
    assert soft.shape == got.shape == (5, 3)
    reference = jax.jit(lambda z, v, y: (optax.softmax_cross_entropy(z / T, jax.nn.softmax(v / T)),
                                         optax.softmax_cross_entropy_with_integer_labels(z, y)))
    soft_optax, hard_optax = reference(z, v, y)
    np.testing.assert_allclose(soft, soft_optax, rtol=1e-5)
    np.testing.assert_allclose(got, alpha * T ** 2 * soft_optax + (1 - alpha) * hard_optax, rtol=1e-5)
    # And against plain float64 NumPy.
    zd, vd = z.astype(np.float64), v.astype(np.float64)
    p = np.exp(vd / T) / np.exp(vd / T).sum(-1, keepdims=True)
    log_q = zd / T - np.log(np.exp(zd / T).sum(-1, keepdims=True))
    log_s = zd - np.log(np.exp(zd).sum(-1, keepdims=True))
    hard = -np.take_along_axis(log_s, y[..., None], -1)[..., 0]
    np.testing.assert_allclose(got, alpha * T ** 2 * -(p * log_q).sum(-1) + (1 - alpha) * hard, rtol=1e-5)
    np.testing.assert_allclose(soft_targets(v, T=T), p, rtol=1e-5, atol=1e-7)
    # alpha = 0 and T = 1: the ordinary cross-entropy.
    np.testing.assert_allclose(distillation_loss(z, v, y, T=1.0, alpha=0.0), hard, rtol=1e-5)


def test_gradient_is_q_minus_p_over_T_and_tends_to_logit_matching():
    N = 7
    z, v = _logits(3, 5, N).astype(np.float64), _logits(4, 5, N).astype(np.float64)
    zc, vc = z - z.mean(-1, keepdims=True), v - v.mean(-1, keepdims=True)  # zero-mean logits
    with jax.enable_x64(True):
        grad = jax.jit(jax.grad(lambda z, v, T: jnp.sum(soft_cross_entropy(z, v, T=T))))
        errors = []
        for T in (1.0, 10.0, 100.0, 1000.0):
            g = np.asarray(grad(zc, vc, T))
            q = np.exp(zc / T) / np.exp(zc / T).sum(-1, keepdims=True)
            p = np.exp(vc / T) / np.exp(vc / T).sum(-1, keepdims=True)
            np.testing.assert_allclose(g, (q - p) / T, rtol=1e-10, atol=1e-14)
            limit = (zc - vc) / (N * T ** 2)
            errors.append(np.abs(g - limit).max() / np.abs(limit).max())
        # Without zero-mean logits the limit is the same with the means removed (softmax ignores shifts).
        g = np.asarray(grad(z, v, 1000.0))
    assert errors[0] > 0.1 and errors[-1] < 5e-3
    for a, b in zip(errors[1:], errors[2:]):  # tenfold T, tenfold smaller error: O(1/T)
        assert 7 < a / b < 13
    np.testing.assert_allclose(g * 1000.0 ** 2, (zc - vc) / N, rtol=0, atol=5e-3 * np.abs(zc - vc).max() / N)


def test_edge_cases():
    z = np.array([[1e4, 0.0, -1e4], [2.0, -1.0, 0.5]], np.float32)
    y = np.array([0, 2], np.int32)
    assert np.all(np.isfinite(distillation_loss(z, z[::-1], y, T=2.0, alpha=0.5)))
    # At a perfect match the soft term is the teacher's entropy (KL = 0).
    p = np.asarray(soft_targets(z, T=2.0), np.float64)
    entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), -1)
    np.testing.assert_allclose(soft_cross_entropy(z, z, T=2.0), entropy, rtol=1e-5, atol=1e-6)
    # bfloat16 logits are computed in float32.
    zb, vb = _logits(5, 2, 3), _logits(6, 2, 3)
    zb, vb = zb.astype(jnp.bfloat16), vb.astype(jnp.bfloat16)  # rounded by NumPy, as jnp.asarray rounds
    got = soft_cross_entropy(zb, vb, T=2.0)
    assert got.dtype == jnp.float32
    zr, vr = zb.astype(np.float32), vb.astype(np.float32)
    np.testing.assert_allclose(got, soft_cross_entropy(zr, vr, T=2.0), rtol=1e-6)


def test_bad_input():
    z, v, y = _logits(7, 3, 5), _logits(8, 3, 5), np.array([0, 1, 4], np.int32)
    with pytest.raises(ValueError, match="teacher_logits"):
        soft_cross_entropy(z, v[:, :4], T=2.0)
    with pytest.raises(TypeError, match="student_logits"):
        distillation_loss(z.astype(np.int32), v, y, T=2.0, alpha=0.5)
    with pytest.raises(ValueError, match="labels"):
        distillation_loss(z, v, np.array([0, 1, 5], np.int32), T=2.0, alpha=0.5)
    with pytest.raises(TypeError, match="labels"):
        distillation_loss(z, v, y.astype(np.float32), T=2.0, alpha=0.5)
    with pytest.raises(ValueError, match="labels"):
        distillation_loss(z, v, y[:2], T=2.0, alpha=0.5)
    with pytest.raises(ValueError, match="T"):
        soft_targets(z, T=0.0)
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(z, v, y, T=2.0, alpha=1.5)


# ---- It learns: dark knowledge ------------------------------------------------------------------

STEPS, HIDDEN, LEARNING_RATE, THREE = 200, 32, 0.02, 3


def _mlp_init(key, sizes=(64, HIDDEN, 10)):
    keys = jax.random.split(key, len(sizes) - 1)
    return [{"W": jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a), "b": jnp.zeros(b)}
            for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def _mlp(params, X):
    h = X
    for layer in params[:-1]:
        h = jax.nn.relu(h @ layer["W"] + layer["b"][None, :])
    return h @ params[-1]["W"] + params[-1]["b"][None, :]


_mlp_jit = jax.jit(_mlp)  # one program per input shape, rather than each layer's operations eagerly


@jax.jit
def _train(key, X, teacher_logits, y, weight, T, alpha):
    """Full-batch Adam on the weighted mean distillation loss; T and alpha traced (one compilation)."""
    def loss(params):
        per_example = distillation_loss(_mlp(params, X), teacher_logits, y, T=T, alpha=alpha)
        return jnp.sum(weight * per_example) / jnp.sum(weight)

    params = _mlp_init(key)
    opt = optax.adam(LEARNING_RATE)

    def step(carry, _):
        params, state = carry
        updates, state = opt.update(jax.grad(loss)(params), state)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), length=STEPS)
    return params


@pytest.fixture(scope="module")
def dark_knowledge():
    """A teacher on all digits; students that never see a 3, from its soft targets at T = 4 and at T = 1."""
    X, X_test, y, y_test = load_digits_split()
    k_teacher, k_student = jax.random.split(jax.random.key(0))
    ones = np.ones(y.shape, np.float32)
    teacher = _train(k_teacher, X, np.zeros((y.shape[0], 10), np.float32), y, ones, 1.0, 0.0)
    v = _mlp_jit(teacher, X)
    no_three = (np.asarray(y) != THREE).astype(np.float32)  # weight 0: the student never sees a 3

    def score(params):
        pred = np.asarray(_mlp_jit(params, X_test)).argmax(-1)
        three = np.asarray(y_test) == THREE
        return float((pred == np.asarray(y_test)).mean()), float((pred[three] == THREE).mean())

    return {"teacher": score(teacher),
            "soft_T4": score(_train(k_student, X, v, y, no_three, 4.0, 1.0)),
            "soft_T1": score(_train(k_student, X, v, y, no_three, 1.0, 1.0))}


def test_student_recognises_a_class_it_never_saw_from_soft_targets(dark_knowledge):
    teacher_acc, _ = dark_knowledge["teacher"]
    acc_t4, threes_t4 = dark_knowledge["soft_T4"]
    acc_t1, threes_t1 = dark_knowledge["soft_T1"]
    assert teacher_acc > 0.95
    assert threes_t4 > 0.8 and acc_t4 > 0.94  # the page's "over 80 %" of the 3s, never seen
    assert threes_t1 < 0.1 and acc_t1 < 0.9  # "fewer than 10 %" at T = 1, where soft targets are near one-hot
