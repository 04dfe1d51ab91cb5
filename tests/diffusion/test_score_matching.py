import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate
from scipy.special import logsumexp

from cookbook.diffusion.ddpm import mmd2
from cookbook.diffusion.score_matching import (
    dsm_loss,
    example_mixture,
    langevin_step,
    mixture_sample,
    mixture_score,
    score,
    trained_mixture_score,
    ve_std,
    vp_marginal,
    vp_probability_flow,
)

_mmd2 = jax.jit(mmd2)
_sample = jax.jit(mixture_sample, static_argnums=1)
_scores = jax.jit(jax.vmap(mixture_score, in_axes=(0, None, None, None)))  # (B, D) points
_learned = jax.jit(jax.vmap(score, in_axes=(None, 0, None)))  # one program for the four levels


def _log_density(x, means, stds, weights):
    D = means.shape[1]
    d2 = ((x[None, :] - means) ** 2).sum(-1)
    return logsumexp(np.log(weights) - D * np.log(stds) - 0.5 * D * np.log(2 * np.pi) - 0.5 * d2 / stds**2)


def test_mixture_score_matches_finite_differences_of_the_log_density_in_float64():
    rng = np.random.default_rng(0)
    means, stds, weights = rng.standard_normal((5, 3)), np.array([0.3, 0.5, 0.7, 1.1, 0.9]), np.full(5, 0.2)
    h = 1e-5
    with jax.enable_x64(True):
        for x in rng.standard_normal((7, 3)) * 2:
            expected = [(_log_density(x + h * e, means, stds, weights) - _log_density(x - h * e, means, stds, weights)) / (2 * h)
                        for e in np.eye(3)]
            np.testing.assert_allclose(mixture_score(x, means, stds, weights), expected, rtol=1e-7, atol=1e-7)


def test_mixture_score_is_finite_and_exact_far_from_every_mean():
    means, stds, weights = example_mixture()
    far = np.float32([1e3, -1e3])
    out = np.asarray(mixture_score(far, means, stds, weights))
    assert np.isfinite(out).all()
    # far away the widest component dominates: score = (mu - x) / s^2 of the component of std 0.5
    np.testing.assert_allclose(out, (np.asarray(means)[1] - far) / 0.25, rtol=1e-5)


def test_vp_and_ve_kernels_match_their_integrals():
    for t in (0.0, 0.3, 1.0):
        m, s = vp_marginal(jnp.float32(t))
        integral = integrate.quad(lambda u: 0.1 + u * (20.0 - 0.1), 0, t)[0]
        np.testing.assert_allclose([m, s], [np.exp(-0.5 * integral), np.sqrt(1 - np.exp(-integral))], rtol=1e-5, atol=1e-7)
        # VE: sigma(t)^2 - sigma_min^2 is the integral of g^2 = d sigma^2 / dt
        dsig2 = lambda u: 0.01**2 * 2 * np.log(50 / 0.01) * (50 / 0.01) ** (2 * u)
        np.testing.assert_allclose(float(ve_std(jnp.float32(t))) ** 2 - 1e-4, integrate.quad(dsig2, 0, t)[0], rtol=1e-4, atol=1e-9)


def test_vp_kernel_matches_simulating_the_forward_sde():
    rng = np.random.default_rng(1)
    x, x0, n = np.full(40_000, 2.0), 2.0, 400
    for k in range(n):  # Euler-Maruyama on dx = -beta/2 x dt + sqrt(beta) dw up to t = 0.5
        beta = 0.1 + (k / n * 0.5) * 19.9
        x = x - 0.5 * beta * x * (0.5 / n) + np.sqrt(beta * 0.5 / n) * rng.standard_normal(x.shape)
    m, s = vp_marginal(jnp.float32(0.5))
    assert abs(x.mean() - float(m) * x0) < 0.02 and abs(x.std() - float(s)) < 0.02  # 4 standard errors


def _blurred(m, s):
    """The mixture diffused by the VP kernel (m, s): means scaled by m, variances m^2 s_k^2 + s^2."""
    means, stds, weights = example_mixture()
    return m * means, jnp.sqrt(m**2 * stds**2 + s**2), weights


@pytest.fixture(scope="module")
def reference():
    means, stds, weights = example_mixture()
    return _sample(jax.random.key(10), 1000, means, stds, weights), _sample(jax.random.key(11), 1000, means, stds, weights)


def test_probability_flow_with_the_exact_score_carries_the_prior_to_the_mixture(reference):
    data, other = reference

    @jax.jit
    def flow(x):
        ts = jnp.linspace(1.0, 1e-3, 501)

        def step(x, tt):
            t, t_next = tt
            m, s = vp_marginal(t)
            grad = _scores(x, *_blurred(m, s))
            drift = jax.vmap(vp_probability_flow, in_axes=(0, None, 0))(x, t, grad)
            return x + (t_next - t) * drift, None

        return jax.lax.scan(step, x, (ts[:-1], ts[1:]))[0]

    out = flow(jax.random.normal(jax.random.key(12), (1000, 2)))
    # measured: 0.0063 against 0.0050 for data against data
    assert float(_mmd2(out, data)) < 2 * float(_mmd2(other, data))


def test_annealed_langevin_with_the_exact_score_reaches_the_mixture(reference):
    data, other = reference
    means, stds, weights = example_mixture()
    levels = np.geomspace(3.0, 0.01, 10).astype(np.float32)

    @jax.jit
    def chain(x, key):
        x = 3.0 * x  # a standard normal start made wider inside the program, not by an eager multiply
        def level(x, inputs):
            sigma, k = inputs
            step = 0.1 * (0.3**2 + sigma**2)  # a tenth of the narrowest blurred component's variance

            def one(x, kk):
                grad = _scores(x, means, jnp.sqrt(stds**2 + sigma**2), weights)
                return langevin_step(x, grad, step, jax.random.normal(kk, x.shape)), None

            return jax.lax.scan(one, x, jax.random.split(k, 100))[0], None

        return jax.lax.scan(level, x, (levels, jax.random.split(key, 10)))[0]

    out = chain(jax.random.normal(jax.random.key(13), (1000, 2)), jax.random.key(14))  # the flow's draw program
    # measured: 0.0064 against 0.0050 for data against data
    assert float(_mmd2(out, data)) < 2 * float(_mmd2(other, data))


@pytest.fixture(scope="module")
def trained():
    return trained_mixture_score()


@pytest.mark.parametrize("sigma", [0.1, 0.3, 1.0, 3.0])
def test_it_learns_the_exact_score_of_the_blurred_mixture(trained, sigma):
    params, losses = trained
    means, stds, weights = example_mixture()
    blurred = np.sqrt(np.asarray(stds) ** 2 + np.float32(sigma) ** 2)  # float32, as in jnp
    x = _sample(jax.random.key(9), 1000, means, blurred, weights)
    exact = np.asarray(_scores(x, means, blurred, weights))
    learned = np.asarray(_learned(params, x, np.float32(sigma)))
    # measured: 1.6%, 1.7%, 1.3%, 0.2% of the mean squared score
    assert float(np.mean(np.sum((learned - exact) ** 2, -1)) / np.mean(np.sum(exact**2, -1))) < 0.03


def test_the_loss_at_the_exact_score_is_its_minimum_over_a_rescaled_score():
    # L at the exact score of p_sigma beats L at the score scaled by 0.8 or 1.2 (one level, many points)
    means, stds, weights = example_mixture()
    sigma = 0.5
    rng = np.random.default_rng(15)  # points of the mixture drawn in NumPy: no sampler to compile
    component = rng.choice(3, 20000, p=np.asarray(weights))
    x = (np.asarray(means)[component] + np.asarray(stds)[component, None] * rng.standard_normal((20000, 2))).astype(np.float32)
    noise = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    noisy = x + sigma * noise
    exact = np.asarray(_scores(noisy, means, np.sqrt(np.asarray(stds) ** 2 + np.float32(sigma) ** 2), weights))
    losses = [np.mean((sigma * c * exact + noise) ** 2) for c in (0.8, 1.0, 1.2)]
    assert losses[1] < min(losses[0], losses[2])


def _ones(*shape):  # NumPy inputs: the checks raise before any computation, and nothing compiles
    return np.ones(shape, np.float32)


def _zeros(*shape):
    return np.zeros(shape, np.float32)


@pytest.mark.parametrize("call, match", [
    (lambda: mixture_score(_ones(3), _ones(2, 2), _ones(2), _ones(2) / 2), r"x must have shape \(2,\)"),
    (lambda: mixture_score(_ones(2), _ones(2, 2), _ones(3), _ones(2) / 2), r"stds must have shape \(2,\)"),
    (lambda: vp_marginal(jnp.float32(1.5)), r"t must lie in \[0, 1\]"),
    (lambda: mixture_sample(jax.random.key(0), 5, _ones(2, 2), _ones(2), np.float32([0.5, 0.6])),
     r"weights must be non-negative and sum to 1"),
    (lambda: mixture_sample(jax.random.key(0), 5, _ones(2, 2), _ones(2), np.float32([np.nan, 0.5])),
     r"weights holds NaN"),
    (lambda: langevin_step(_ones(2), _ones(3), 0.1, _ones(2)), r"score must have shape \(2,\)"),
    (lambda: langevin_step(_ones(2), _ones(2), -0.1, _ones(2)), r"step_size must be positive"),
    (lambda: dsm_loss([{"W": _zeros(14, 2), "b": _zeros(2)}, {"W": _zeros(2, 2), "b": _zeros(2)}],
                      _ones(3, 2), jax.random.key(0), np.float32([0.1, -1.0])), r"sigmas must be positive"),
    (lambda: dsm_loss([{"W": _zeros(14, 2), "b": _zeros(2)}, {"W": _zeros(2, 2), "b": _zeros(2)}],
                      _ones(3, 2), jax.random.key(0), np.float32([0.1])), r"sigmas must hold at least 2 noise levels"),
])
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_integer_input_raises_type_error():
    with pytest.raises(TypeError, match="means must be a floating-point array"):
        mixture_score(_ones(2), np.ones((2, 2), np.int32), _ones(2), _ones(2) / 2)
