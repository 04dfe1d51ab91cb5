import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cookbook.self_supervised.dino import (dino_loss, ema_update, multi_crop_loss, prototype_scores,
                                           teacher_entropies, update_center)
from cookbook.self_supervised.simclr import encode
from ssl_helpers import digits_and_views, knn_of, numpy_encode

loss_jit = jax.jit(dino_loss)
multi_jit = jax.jit(multi_crop_loss)
entropies_jit = jax.jit(teacher_entropies)
scores_jit = jax.jit(prototype_scores)


def numpy_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def numpy_dino(s, t, c, tau_s, tau_t):
    """A float64 loop over the images and the outputs, from the definition."""
    s, t, c = (np.asarray(a, np.float64) for a in (s, t, c))
    N, K = s.shape
    total = 0.0
    for b in range(N):
        p_t = np.exp((t[b] - c) / tau_t)
        p_t /= p_t.sum()
        log_z = np.log(np.sum(np.exp(s[b] / tau_s)))
        for k in range(K):
            total -= p_t[k] * (s[b, k] / tau_s - log_z)
    return total / N


def logits(seed, N=7, K=5):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N, K)).astype(np.float32), rng.standard_normal((N, K)).astype(np.float32),
            rng.standard_normal(K).astype(np.float32))


@pytest.mark.parametrize("tau_s, tau_t", [(0.1, 0.04), (0.5, 0.5), (1.0, 0.2)])
def test_against_a_float64_loop(tau_s, tau_t):
    s, t, c = logits(0)
    np.testing.assert_allclose(loss_jit(s, t, c, tau_s, tau_t), numpy_dino(s, t, c, tau_s, tau_t), rtol=2e-5)


def test_multi_crop_is_the_mean_over_pairs_of_different_views():
    rng = np.random.default_rng(1)
    s = rng.standard_normal((5, 3, 7)).astype(np.float32)  # V = 5 views of N = 3 images, K = 7
    t = rng.standard_normal((2, 3, 7)).astype(np.float32)  # G = 2 teacher views: the first two
    c = rng.standard_normal(7).astype(np.float32)
    pairs = [numpy_dino(s[v], t[g], c, 0.3, 0.1) for g in range(2) for v in range(5) if v != g]
    assert len(pairs) == 8
    np.testing.assert_allclose(multi_jit(s, t, c, 0.3, 0.1), np.mean(pairs), rtol=2e-5)
    # two views: the symmetrised loss of the tests' training loop
    both = multi_jit(s[:2], t, c, 0.3, 0.1)
    np.testing.assert_allclose(both, 0.5 * (loss_jit(s[1], t[0], c, 0.3, 0.1) + loss_jit(s[0], t[1], c, 0.3, 0.1)),
                               rtol=1e-6)


def test_prototype_scores_are_cosines():
    rng = np.random.default_rng(2)
    z, w = rng.standard_normal((7, 3)), rng.standard_normal((3, 11))
    expected = (z / np.linalg.norm(z, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0))
    got = scores_jit(z.astype(np.float32), w.astype(np.float32))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # scale-free: neither the length of an embedding nor of a prototype matters
    np.testing.assert_allclose(scores_jit(3.0 * z.astype(np.float32), 0.5 * w.astype(np.float32)), expected,
                               atol=1e-6)
    # a zero embedding scores zero against every prototype, with a finite gradient
    z = np.ones((7, 3), np.float32)
    z[0] = 0.0
    np.testing.assert_array_equal(scores_jit(z, w.astype(np.float32))[0], np.zeros(11))
    grad = jax.jit(jax.grad(lambda z, w: prototype_scores(z, w).sum()))(z, w.astype(np.float32))
    assert np.isfinite(grad).all()


def test_gradients_reach_only_the_student():
    s, t, c = logits(3, N=3, K=4)
    grads = jax.jit(jax.grad(dino_loss, argnums=(0, 1, 2)))(s, t, c, 0.1, 0.04)
    np.testing.assert_array_equal(grads[1], 0.0)  # exactly zero: a stop-gradient, not a small number
    np.testing.assert_array_equal(grads[2], 0.0)
    # the student's gradient is (P_s - P_t) / (N tau_s)
    expected = (numpy_softmax(s / 0.1) - numpy_softmax((t - c) / 0.04)) / (3 * 0.1)
    np.testing.assert_allclose(grads[0], expected, atol=1e-5)  # no custom gradient: the formula suffices


def test_no_gradient_reaches_the_teacher_network():
    """Through the networks: the loss's gradient with respect to the teacher's parameters is zero."""
    rng = np.random.default_rng(4)
    net = {"W": rng.standard_normal((9, 5)).astype(np.float32), "prototypes": rng.standard_normal((5, 7)).astype(np.float32)}
    teacher = jax.tree.map(lambda a: a + 0.1, net)
    views = rng.standard_normal((2, 3, 9)).astype(np.float32)  # two views of N = 3 inputs of 9 features

    def scores(params):
        return jnp.stack([prototype_scores(jnp.tanh(v @ params["W"]), params["prototypes"]) for v in views])

    def loss(student, teacher):
        return multi_crop_loss(scores(student), scores(teacher), jnp.zeros(7), 0.5, 0.1)

    g_student, g_teacher = jax.jit(jax.grad(loss, argnums=(0, 1)))(net, teacher)
    assert all(np.abs(g).max() > 0 for g in jax.tree.leaves(g_student))
    assert all(np.all(np.asarray(g) == 0.0) for g in jax.tree.leaves(g_teacher))


def test_the_center_and_the_teacher_are_moving_averages():
    _, t, c = logits(5)
    np.testing.assert_allclose(update_center(c, t, 0.9), 0.9 * c + 0.1 * t.mean(0), rtol=1e-6)
    np.testing.assert_allclose(update_center(c, t, 0.0), t.mean(0), rtol=1e-6)
    # repeated updates towards fixed scores (or a fixed student) close the gap at the rate m^n
    center, teacher, student = c, {"w": c}, {"w": t[0]}
    for _ in range(4):
        center = update_center(center, t, 0.5)
        teacher = ema_update(teacher, student, 0.5)
    np.testing.assert_allclose(center - t.mean(0), 0.5 ** 4 * (c - t.mean(0)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(teacher["w"] - t[0], 0.5 ** 4 * (c - t[0]), rtol=1e-4, atol=1e-6)


def test_sharpening_centring_and_the_entropies():
    _, t, c = logits(6, N=11, K=5)
    per_image = [float(entropies_jit(t, c, tau)[0]) for tau in (2.0, 0.5, 0.1, 0.04)]
    assert all(a > b for a, b in zip(per_image, per_image[1:]))  # a colder teacher, a sharper target
    K = 5
    # the two collapses, as the detector reads them
    uniform = entropies_jit(np.ones((11, K), np.float32), np.zeros(K, np.float32), 0.04)
    np.testing.assert_allclose(uniform, [np.log(K), np.log(K)], rtol=1e-6)
    one_output = np.zeros((11, K), np.float32)
    one_output[:, 2] = 1.0  # output 2 wins for every image
    np.testing.assert_allclose(entropies_jit(one_output, np.zeros(K, np.float32), 0.04), [0.0, 0.0], atol=1e-6)
    # centring by the scores' mean removes the winner: the same scores now give the uniform distribution
    np.testing.assert_allclose(entropies_jit(one_output, one_output.mean(0), 0.04), [np.log(K), np.log(K)],
                               rtol=1e-6)
    # a score added to one output for every image is removed by a centre that has absorbed it
    shifted = t + np.array([4.0, 0, 0, 0, 0], np.float32)
    np.testing.assert_allclose(loss_jit(t, shifted, c + np.array([4.0, 0, 0, 0, 0], np.float32), 0.1, 0.04),
                               loss_jit(t, t, c, 0.1, 0.04), rtol=1e-5)


def test_edge_cases():
    s, t, c = logits(7)
    assert np.isfinite(loss_jit(1e4 * s, 1e4 * t, c, 0.1, 1e-3))  # huge scores, a tiny temperature
    got = loss_jit(jnp.asarray(s, jnp.bfloat16), jnp.asarray(t, jnp.bfloat16), jnp.asarray(c, jnp.bfloat16), 1.0, 0.5)
    assert got.dtype == jnp.float32  # computed in float32, within the rounding of the bfloat16 inputs
    np.testing.assert_allclose(got, numpy_dino(s, t, c, 1.0, 0.5), rtol=2e-2)
    np.testing.assert_allclose(loss_jit(s[:1], t[:1], c, 1.0, 0.5), numpy_dino(s[:1], t[:1], c, 1.0, 0.5), rtol=1e-5)


def test_bad_input():
    s, t, c = logits(8)
    with pytest.raises(ValueError, match="teacher_logits"):
        dino_loss(s, t[:3], c)
    with pytest.raises(ValueError, match="center"):
        dino_loss(s, t, c[:3])
    with pytest.raises(TypeError, match="student_logits"):
        dino_loss(s.astype(np.int32), t, c)
    with pytest.raises(ValueError, match="teacher_temperature"):
        teacher_entropies(t, c, 0.0)
    with pytest.raises(ValueError, match="student_temperature"):
        dino_loss(s, t, c, -1.0)
    with pytest.raises(ValueError, match="momentum"):
        update_center(c, t, 1.5)
    with pytest.raises(ValueError, match="teacher_logits"):
        multi_crop_loss(s[None], t[None], c)  # one view: no pair of different views
    with pytest.raises(ValueError, match="teacher_logits"):
        multi_crop_loss(np.stack([s, s]), np.stack([t, t, t]), c)  # more teacher views than views
    with pytest.raises(ValueError, match="prototypes"):
        prototype_scores(s, t)  # (7, 5) against (7, 5): D = 5 rows expected


# ---- It learns: DINO on scikit-learn's digits, no labels ----------------------------------------

K, TAU_S = 32, 0.5


@pytest.fixture(scope="module")
def digits_runs():
    """The SimCLR page's 64-128-8 MLP as backbone with K = 32 prototypes, trained by DINO for 400
    Adam steps on batches of 64 (tau_s =
    0.5, tau_t = 0.04, teacher decay 0.996, centre momentum 0.9), and the same run without
    centring and without sharpening (tau_t = tau_s). One compiled lax.scan loop serves all three;
    the views and starting weights are the chapter's shared ones; embeddings read with NumPy."""
    X, y, encoder0, all_views = digits_and_views(B=64)
    params0 = {"encoder": encoder0,
               "prototypes": np.random.default_rng(1).standard_normal((8, K)).astype(np.float32)}
    opt = optax.adam(3e-3)
    embed = jax.vmap(encode, in_axes=(None, 0))

    def scores(params, views):  # (2, B, 8, 8) -> (2, B, K)
        return jnp.stack([prototype_scores(embed(params["encoder"], v), params["prototypes"]) for v in views])

    @jax.jit
    def train(params, all_views, centring, teacher_temperature):
        def step(carry, v):
            student, teacher, center, state = carry
            t = scores(teacher, v)
            value, grads = jax.value_and_grad(
                lambda p: multi_crop_loss(scores(p, v), t, center, TAU_S, teacher_temperature))(student)
            updates, state = opt.update(grads, state, student)
            student = optax.apply_updates(student, updates)
            center = centring * update_center(center, t.reshape(-1, K), 0.9)
            return (student, ema_update(teacher, student, 0.996), center, state), value
        carry = (params, params, jnp.zeros(K), opt.init(params))
        (_, teacher, center, _), losses = jax.lax.scan(step, carry, all_views)
        return teacher, center, losses

    def evaluate(params, center, teacher_temperature):
        params = jax.tree.map(np.asarray, params)
        accuracy, z = knn_of(params["encoder"], X, y)
        w = params["prototypes"]
        s = (z / np.linalg.norm(z, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0))  # (1000, K)
        h_image, h_mean = entropies_jit(s.astype(np.float32), np.asarray(center, np.float32), teacher_temperature)
        return {"knn": accuracy, "entropy per image": float(h_image), "entropy of the mean": float(h_mean),
                "spread": float(s.std(axis=0).mean())}

    runs = {"untrained": evaluate(params0, np.zeros(K), 0.04)}
    for name, centring, tau_t in [("dino", 1.0, 0.04), ("no centring", 0.0, 0.04), ("no sharpening", 1.0, TAU_S)]:
        teacher, center, losses = train(params0, all_views, centring, tau_t)
        runs[name] = evaluate(teacher, center, tau_t) | {"losses": np.asarray(losses)}
    return runs


def test_dino_learns_digits_without_labels(digits_runs):
    dino, untrained = digits_runs["dino"], digits_runs["untrained"]
    assert dino["losses"][-20:].mean() < dino["losses"][:20].mean() - 0.3
    # 0.77 against 0.69 here; 0.82 and 0.83 for two other draws of the prototypes
    assert dino["knn"] >= untrained["knn"] + 0.05, (dino["knn"], untrained["knn"])
    # a healthy teacher: confident for each digit, many outputs used over the digits
    assert dino["entropy per image"] < 0.5 * np.log(K), dino
    assert dino["entropy of the mean"] > 0.6 * np.log(K), dino
    assert dino["spread"] > 0.1, dino


def test_without_centring_one_output_wins(digits_runs):
    run = digits_runs["no centring"]
    assert run["entropy of the mean"] < 0.1, run  # the same output for every digit
    assert run["spread"] < 0.05, run


def test_without_sharpening_the_teacher_is_uniform(digits_runs):
    run = digits_runs["no sharpening"]
    assert run["entropy per image"] > 0.99 * np.log(K), run  # the uniform guess for every digit
    assert run["spread"] < 0.05, run
