import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.diffusion.ddpm import mmd2
from cookbook.diffusion.guidance import (
    cfg_combine,
    classifier_guidance,
    conditional_denoiser,
    conditional_init,
    guided_sample,
    labelled_moons,
    loss,
    trained_moons_guidance,
)

ALPHA_BAR = np.cumprod(1.0 - np.linspace(1e-3, 0.2, 100))


def _rng(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def test_the_combinations_match_their_closed_forms_in_float64():
    a, b, g = _rng(0, 5, 3), _rng(1, 5, 3), _rng(2, 5, 3)
    with jax.enable_x64(True):
        np.testing.assert_allclose(cfg_combine(a, b, 2.5), 3.5 * a - 2.5 * b, rtol=1e-14)
        np.testing.assert_allclose(cfg_combine(a, b, 0.0), a, rtol=1e-14)  # w = 0: the conditional model
        np.testing.assert_allclose(classifier_guidance(a, g, ALPHA_BAR[50], 3.0), a - 3.0 * np.sqrt(1 - ALPHA_BAR[50]) * g,
                                   rtol=1e-14)


# Two classes, each an isotropic Gaussian, diffused to step t of the schedule: everything is exact.
MEANS, STDS, PRIOR = np.array([[-2.0, 0.0], [1.5, 1.0]]), np.array([0.4, 0.7]), np.array([0.3, 0.7])


def mixture_score(x, means, stds, weights):
    """The exact score of a mixture of isotropic Gaussians at x, in NumPy (float64)."""
    diff = means - x[None, :]  # (K, D)
    log_density = np.log(weights) - means.shape[1] * np.log(stds) - 0.5 * np.sum(diff**2, axis=-1) / stds**2
    responsibility = np.exp(log_density - log_density.max())
    responsibility /= responsibility.sum()
    return np.sum((responsibility / stds**2)[:, None] * diff, axis=0)


def _exact(x, t, c):
    a = ALPHA_BAR[t]
    means, stds = np.sqrt(a) * MEANS, np.sqrt(a * STDS**2 + 1 - a)
    eps = lambda m, s, w: -np.sqrt(1 - a) * mixture_score(x, m, s, w)  # eps = -sqrt(1 - abar) score
    eps_uncond = eps(means, stds, PRIOR)
    eps_cond = eps(means[c:c + 1], stds[c:c + 1], np.ones(1))
    return eps_uncond, eps_cond, _grad_log_posterior(x, means, stds, c), a


@jax.jit  # one program for every step and class, not one per operation
@jax.grad
def _grad_log_posterior(y, means, stds, c):
    """The gradient in y of log p_t(c | y), by Bayes' rule over the two components."""
    logits = jnp.log(PRIOR) - 2 * jnp.log(stds) - 0.5 * jnp.sum((y[None] - means) ** 2, -1) / stds**2
    return jax.nn.log_softmax(logits)[c]


@pytest.mark.parametrize("t", [0, 50, 99])
def test_classifier_guidance_at_scale_one_is_the_conditional_model(t):
    with jax.enable_x64(True):
        for c, x in ((0, np.array([0.3, -0.2])), (1, np.array([-1.0, 1.5]))):
            eps_uncond, eps_cond, grad, a = _exact(x, t, c)
            np.testing.assert_allclose(classifier_guidance(eps_uncond, grad, a, 1.0), eps_cond, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("w", [0.0, 1.0, 4.0])
def test_classifier_free_guidance_is_classifier_guidance_at_scale_one_plus_w(w):
    with jax.enable_x64(True):
        eps_uncond, eps_cond, grad, a = _exact(np.array([0.5, 0.5]), 30, 1)
        np.testing.assert_allclose(cfg_combine(eps_cond, eps_uncond, w), classifier_guidance(eps_uncond, grad, a, 1.0 + w),
                                   rtol=1e-10, atol=1e-12)


def test_the_label_reaches_the_network_and_the_empty_label_is_its_own():
    params = conditional_init(jax.random.key(0), 3, 4, hidden=7)
    assert params[0]["W"].shape == (3 + 5 + 12, 7)
    x, s = _rng(3, 3).astype(np.float32), np.float32(0.3)
    outs = [np.asarray(conditional_denoiser(params, x, s, c)) for c in range(5)]
    assert all(np.max(np.abs(outs[i] - outs[j])) > 1e-4 for i in range(5) for j in range(i))
    with pytest.raises(ValueError, match=r"label must lie in \[0, 5\)"):
        conditional_denoiser(params, x, s, 5)


def test_labelled_moons_labels_each_moon():
    points, labels = map(np.asarray, labelled_moons(jax.random.key(0), 2000))  # the fixture's size: one program
    # the first moon (label 0) is the upper one: its points lie higher on average
    assert points[labels == 0, 1].mean() > points[labels == 1, 1].mean() + 1.0
    assert 0.4 < labels.mean() < 0.6


@pytest.fixture(scope="module")
def trade_off():
    params, _ = trained_moons_guidance()
    alpha_bar = ALPHA_BAR.astype(np.float32)
    points, labels = labelled_moons(jax.random.key(3), 2000)

    first_moon = np.asarray(points)[np.asarray(labels) == 0]  # about 1000 points, picked in NumPy

    @jax.jit
    def scores(x):
        d = jnp.sum((x[:, None] - points[None]) ** 2, -1)  # (1000, 2000)
        own = jnp.min(jnp.where(labels[None] == 0, d, jnp.inf), axis=1)
        other = jnp.min(jnp.where(labels[None] != 0, d, jnp.inf), axis=1)
        return jnp.mean(own < other), mmd2(x, first_moon)

    labels_0 = np.zeros(1000, np.int32)  # the example's shapes: its program
    return {w: [float(v) for v in scores(guided_sample(params, jax.random.key(5), labels_0, alpha_bar, w=w))]
            for w in (0.0, 1.0, 4.0)}


def test_guidance_trades_diversity_for_fidelity(trade_off):
    # measured: nearer their own moon 0.985, 1.0, 1.0; squared MMD to the moon's data 0.017, 0.19, 0.70
    (acc0, mmd0), (acc1, mmd1), (acc4, mmd4) = trade_off[0.0], trade_off[1.0], trade_off[4.0]
    assert 0.95 < acc0 < acc1 and acc1 > 0.995 and acc4 > 0.995
    assert mmd0 < 0.03 < 0.1 < mmd1 < mmd4


@pytest.mark.parametrize("call, match", [
    (lambda p: cfg_combine(_ones(3), _ones(2), 1.0), r"eps_uncond must have shape \(3,\)"),
    (lambda p: cfg_combine(_ones(3), _ones(3), -1.0), "w must be non-negative"),
    (lambda p: classifier_guidance(_ones(3), _ones(3), _ones(3), 1.0), "alpha_bar_t must have 0 axes"),
    (lambda p: loss(p, _ones(3, 2), np.array([0, 1, 2], np.int32), jax.random.key(0), _ones(10) / 2), r"labels must lie in \[0, 2\)"),
    (lambda p: loss(p, _ones(3, 2), np.array([0, 1], np.int32), jax.random.key(0), _ones(10) / 2), r"labels must have shape \(3,\)"),
    (lambda p: guided_sample(p, jax.random.key(0), np.array([0, 1], np.int32), _ones(10) / 2, 1.0, num_steps=11), "num_steps must be at most"),
])
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call(_zero_params())


def test_float_labels_raise_type_error():
    with pytest.raises(TypeError, match="labels must be an integer array"):
        loss(_zero_params(), _ones(3, 2), np.zeros(3, np.float32), jax.random.key(0), _ones(10) / 2)


def _ones(*shape):  # in NumPy: a jnp.ones would compile a program for each shape
    return np.ones(shape, np.float32)


def _zero_params():
    return [{"W": np.zeros((17, 5), np.float32), "b": np.zeros(5, np.float32)},
            {"W": np.zeros((5, 2), np.float32), "b": np.zeros(2, np.float32)}]
