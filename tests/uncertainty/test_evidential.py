import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import gammaln
from scipy.stats import dirichlet, t

from cookbook.uncertainty.evidential import (classification_loss, dirichlet_prediction, evidence_of, fit_classifier, init,
                                             nig_nll, nig_uncertainties)

# classification_loss and dirichlet_prediction check their input and run a compiled core: called
# directly, they share its programs with the page's example (a jax.jit around them compiled more).
loss_jit = classification_loss


def test_kl_term_is_the_kl_of_the_misleading_evidence_from_the_uniform_dirichlet():
    evidence, label = np.array([2.0, 5.0, 1.0], np.float32), 0
    kl = float(loss_jit(evidence, label, kl_weight=1.0) - loss_jit(evidence, label, kl_weight=0.0))
    alpha_tilde = np.array([1.0, 6.0, 2.0])  # the true class's evidence removed
    want = -dirichlet(alpha_tilde).entropy() - gammaln(3)  # the uniform Dirichlet's density is Gamma(K)
    np.testing.assert_allclose(kl, want, rtol=1e-5)
    sure = np.array([7.0, 0.0, 0.0], np.float32)
    assert float(loss_jit(sure, 0, kl_weight=1.0)) - float(loss_jit(sure, 0, kl_weight=0.0)) == pytest.approx(0.0, abs=1e-5)


def test_squared_error_term_is_the_expectation_under_the_dirichlet():
    evidence = np.array([3.0, 0.5, 1.5])
    p = np.random.default_rng(0).dirichlet(evidence + 1, 400_000)
    y = np.array([0.0, 0.0, 1.0])
    want = np.mean(np.sum((y - p) ** 2, axis=1))
    np.testing.assert_allclose(loss_jit(jnp.float32(evidence), 2, kl_weight=0.0), want, rtol=3e-3)


def test_dirichlet_prediction_and_uncertainty():
    probs, u = dirichlet_prediction(np.array([4.0, 0.0, 1.0, 0.0, 0.0], np.float32))
    np.testing.assert_allclose(probs, np.array([5, 1, 2, 1, 1]) / 10, rtol=1e-6)
    np.testing.assert_allclose(u, 5 / 10, rtol=1e-6)


def test_nig_nll_is_the_student_t_and_the_uncertainties_are_the_nig_moments():
    rng = np.random.default_rng(1)
    for gamma, nu, a, beta, z in rng.uniform([-1, 0.5, 1.5, 0.5, -2], [1, 3, 4, 2, 2], (5, 5)):
        scale = np.sqrt(beta * (1 + nu) / (nu * a))
        np.testing.assert_allclose(nig_nll(gamma, nu, a, beta, z), -t.logpdf(z, 2 * a, gamma, scale), rtol=1e-5)
    # Sampling the NIG: sigma^2 ~ InvGamma(a, beta), mu ~ N(gamma, sigma^2 / nu).
    nu, a, beta = 2.0, 4.0, 1.5
    sigma2 = beta / rng.gamma(a, 1.0, 1_000_000)
    mu = rng.normal(0.0, np.sqrt(sigma2 / nu))
    aleatoric, epistemic = nig_uncertainties(nu, a, beta)
    np.testing.assert_allclose(aleatoric, sigma2.mean(), rtol=0.01)
    np.testing.assert_allclose(epistemic, mu.var(), rtol=0.01)


def test_failure_mode_the_likelihood_cannot_tell_epistemic_uncertainty_apart():
    # nu and beta enter the likelihood only through beta (1 + nu) / nu: equal fits, different Var[mu].
    z = np.linspace(-3.0, 3.0, 11, dtype=np.float32)
    nll = jax.jit(jax.vmap(nig_nll, in_axes=(None, None, None, None, 0)))
    first, second = nll(0.2, 1.0, 3.0, 1.0, z), nll(0.2, 4.0, 3.0, 1.6, z)  # 1 * 2 / 1 = 1.6 * 5 / 4
    np.testing.assert_allclose(first, second, rtol=1e-5)
    assert float(nig_uncertainties(1.0, 3.0, 1.0)[1]) == pytest.approx(2.5 * float(nig_uncertainties(4.0, 3.0, 1.6)[1]))


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1], 50)
    X = np.float32(rng.normal(0.0, 0.5, (100, 2)) + np.where(labels[:, None] == 0, -2.0, 2.0) * np.array([1.0, 0.0]))
    params, losses = fit_classifier(init(jax.random.key(0), (2, 16, 16, 2)), X, labels, steps=500)
    return X, labels, params, losses


def test_it_learns_and_the_failure_mode_far_from_the_data(blobs):
    X, labels, params, losses = blobs
    # The evidence and the prediction of a batch as one program (X and 10 X share it); read in NumPy.
    predict = jax.jit(lambda params, X: jax.vmap(dirichlet_prediction)(jax.vmap(evidence_of, in_axes=(None, 0))(params, X)))
    probs, u = map(np.asarray, predict(params, X))
    assert float(np.mean(np.argmax(probs, 1) == labels)) >= 0.98
    on_data = float(u.mean())
    u_far = np.asarray(predict(params, 10 * X)[1])  # ten times farther out
    assert on_data < 0.05, on_data  # measured: 0.032
    assert float(u_far.mean()) < 0.25 * on_data, (float(u_far.mean()), on_data)  # surer where it has seen nothing: 0.004
    assert losses[-1] < losses[0]


def test_clear_errors_on_bad_input():
    with pytest.raises(ValueError, match="label"):
        classification_loss(np.ones(3, np.float32), 3, kl_weight=1.0)
    with pytest.raises(TypeError, match="label"):
        classification_loss(np.ones(3, np.float32), 1.0, kl_weight=1.0)
    with pytest.raises(TypeError, match="evidence"):
        dirichlet_prediction(np.ones(3, np.int32))
    with pytest.raises(ValueError, match="a"):
        nig_uncertainties(1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="nu"):
        nig_nll(0.0, -1.0, 2.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="labels"):
        # The layers in init's shapes, drawn with NumPy: init's samplers would compile for nothing here.
        params = [{"W": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)},
                  {"W": np.ones((3, 2), np.float32), "b": np.zeros(2, np.float32)}]
        fit_classifier(params, np.ones((4, 2), np.float32), np.array([0, 1, 2, 0]), steps=2)
