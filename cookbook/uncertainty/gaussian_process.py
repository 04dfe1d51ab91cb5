r"""Gaussian process regression
===========================

A Gaussian process puts a prior on functions rather than on weights and, for Gaussian noise, gives
the exact posterior at any input in closed form: the reference that every approximate method of this
chapter is measured against, and the method to reach for when the data has at most a few thousand
points.

Equation
--------

.. math::

   \begin{aligned}
   k(\mathbf{x}, \mathbf{x}') &= \sigma_{\mathrm{f}}^2
     \exp\!\left(-\frac{\lVert \mathbf{x} - \mathbf{x}' \rVert^2}{2 \ell^2}\right),
   \qquad K_y = K + \sigma_{\mathrm{n}}^2 I = L L^\top, \\
   \boldsymbol{\mu}_* &= K_*^\top K_y^{-1} \mathbf{y}, \qquad
   \Sigma_* = K_{**} - K_*^\top K_y^{-1} K_*, \\
   \log p(\mathbf{y} \mid X) &= -\tfrac12 \mathbf{y}^\top K_y^{-1} \mathbf{y}
     - \textstyle\sum_i \log L_{ii} - \tfrac{N}{2} \log 2\pi
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`X`, :math:`\mathbf{x}`, :math:`\mathbf{x}'`
     - training inputs; any two inputs
     - ``x_train``, ``x1``, ``x2``
     - ``(N, D)``, ``(D,)``
   * - :math:`\mathbf{y}`
     - training targets
     - ``y_train``
     - ``(N,)``
   * - :math:`k`
     - the kernel (covariance function), here the squared exponential (RBF)
     - ``rbf_kernel``
     - scalar per pair
   * - :math:`\sigma_{\mathrm{f}}^2`, :math:`\ell`, :math:`\sigma_{\mathrm{n}}^2`
     - signal variance, lengthscale, noise variance (the hyperparameters)
     - ``variance``, ``lengthscale``, ``noise``
     - scalars
   * - :math:`K`, :math:`K_*`, :math:`K_{**}`
     - kernel between training inputs, training and test inputs, test inputs
     - ``K``, ``K_star``, ``K_star_star``
     - ``(N, N)``, ``(N, M)``, ``(M, M)``
   * - :math:`K_y`, :math:`L`, :math:`I`
     - covariance of the noisy targets, its Cholesky factor, the identity
     - ``K_y``, ``L``, ``jnp.eye``
     - ``(N, N)``
   * - :math:`\boldsymbol{\mu}_*`, :math:`\Sigma_*`
     - posterior mean and covariance of the noiseless function at the test inputs
     - ``mean``, ``cov``
     - ``(M,)``, ``(M, M)``
   * - :math:`N`, :math:`i`
     - number of training points; index of a diagonal entry
     - ``N``
     - scalars
   * - :math:`p(\mathbf{y} \mid X)`
     - marginal likelihood: the probability of the targets with the function integrated out
     - ``log_marginal_likelihood``
     - scalar

Explanation
-----------

A Gaussian process :footcite:p:`rasmussen2006gaussian` says that the values of an unknown function
at any finite set of inputs are jointly Gaussian, with covariance given by the kernel :math:`k`. The
squared-exponential kernel says that nearby inputs have nearly equal values: :math:`\ell` is how far
apart two inputs must be before their values are roughly independent, :math:`\sigma_{\mathrm{f}}^2`
is how far the function strays from zero. Observations add independent Gaussian noise of variance
:math:`\sigma_{\mathrm{n}}^2`. Then the training targets and the function at the test inputs are
jointly Gaussian too, and conditioning one block of a Gaussian on another gives the posterior in
closed form: the mean is a weighted sum of kernels centred on the training points, and the covariance
is the prior's minus what the data explained. ``posterior`` returns the covariance of the function
:math:`f`; the predictive covariance of a new noisy target adds :math:`\sigma_{\mathrm{n}}^2 I`.

The same Gaussian integral gives the marginal likelihood, the probability of the targets with every
function weighed by its prior. Its first term rewards fit, its second (:math:`\tfrac12 \log |K_y|`)
punishes a prior so flexible that it could have explained any data: Occam's razor in one formula.
Maximising it by gradient ascent chooses the hyperparameters (``fit_hyperparameters``, which works on
their logarithms so that they stay positive).

**Numerics.** :math:`K_y^{-1}` is never formed: one Cholesky factorisation :math:`K_y = L L^\top`
(:math:`O(N^3)`) serves the mean, the covariance and :math:`\log |K_y| = 2 \sum_i \log L_{ii}`, with
triangular solves for the rest. The noise keeps :math:`K_y` well conditioned; without it (``noise =
0``) the RBF kernel matrix of close inputs is numerically singular in float32, and the factorisation
returns NaN.

.. admonition:: Intuition

   A Gaussian process is a rubber sheet pinned near the data. Where the pins are close, the sheet
   cannot move; halfway between two pins it can wobble; far from all of them it hangs wherever the
   prior lets it, with the prior's full spread. How stiff the sheet is, is the lengthscale.

On the chapter's data, with a gap in the inputs, the posterior does exactly what the approximate
methods of the later pages try to imitate: tight on the data, wide in the gap.

.. plot::

   import jax
   import numpy as np
   from cookbook.uncertainty._data import gap_data, target
   from cookbook.uncertainty.gaussian_process import posterior

   x, y = gap_data()
   grid = np.linspace(-3.0, 3.0, 200, dtype=np.float32)[:, None]
   mean, cov = jax.jit(posterior)(x, y, grid, lengthscale=0.5, variance=1.0, noise=0.01)
   mean, std = np.asarray(mean), np.sqrt(np.clip(np.diag(cov), 0.0, None))
   fig, ax = plt.subplots(figsize=(6, 3))
   ax.fill_between(grid[:, 0], mean - 2 * std, mean + 2 * std, alpha=0.3, label="mean ± 2 std")
   ax.plot(grid[:, 0], mean, label="posterior mean")
   ax.plot(grid[:, 0], target(grid[:, 0]), "k--", lw=1, label="true function")
   ax.plot(x[:, 0], y, "k.", ms=4, label="data")
   ax.axvspan(-1.0, 1.0, color="0.93", zorder=0)
   ax.set(xlabel="x", ylabel="f(x)")
   ax.legend(fontsize=7, ncol=2, loc="lower right")
   fig.tight_layout()

Inductive bias
--------------

A Gaussian process assumes what its kernel says: with the RBF kernel, a smooth (infinitely
differentiable) function that varies on one lengthscale everywhere and in every input direction,
reverting to the prior mean of zero away from the data. Everything else (periodicity, trends,
different scales per input) has to be written into the kernel. In exchange it needs no training
beyond three numbers, and its uncertainty is calibrated whenever the data really is such a function.
The price is the :math:`O(N^3)` factorisation and :math:`O(N^2)` memory, which limit exact inference to
a few thousand points, and a kernel on raw distances, which suits images and text poorly.

Example
-------

Three points on a line; the posterior at a training input and far away:

>>> import jax.numpy as jnp
>>> from cookbook.uncertainty.gaussian_process import fit_hyperparameters, log_marginal_likelihood, posterior, rbf_kernel
>>> x = jnp.array([[-1.0], [0.0], [1.0]])
>>> y = jnp.array([-0.5, 0.2, 0.9])
>>> rbf_kernel(x, x, lengthscale=1.0, variance=2.0)[0]
Array([2.    , 1.2131, 0.2707], dtype=float32)
>>> mean, cov = posterior(x, y, jnp.array([[0.0], [9.0]]), lengthscale=1.0, variance=1.0, noise=0.01)
>>> mean.round(3), jnp.diag(cov).round(3)  # near the data: the target, sure; far: the prior
(Array([0.2, 0. ], dtype=float32), Array([0.01, 1.  ], dtype=float32))
>>> round(float(log_marginal_likelihood(x, y, lengthscale=1.0, variance=1.0, noise=0.01)), 3)
-2.853

Maximising the marginal likelihood by gradient ascent raises it:

>>> fitted, history = fit_hyperparameters(x, y, steps=200)
>>> bool(history[-1] > history[0]), sorted(fitted)
(True, ['lengthscale', 'noise', 'variance'])

Implementation notes
--------------------

scikit-learn's ``GaussianProcessRegressor`` with the kernel ``ConstantKernel(variance) *
RBF(lengthscale)`` and ``alpha = noise`` computes the same posterior and marginal likelihood; the tests
compare the two in float64 (``optimizer=None`` keeps its hyperparameters fixed), and compare the
hyperparameters found here by 200 Adam steps with those of its L-BFGS optimiser, by the marginal
likelihood they reach. GPyTorch and GPJax add sparse and variational approximations for large
:math:`N`; for the cubic cost, see inducing-point methods.
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"rbf_kernel": (), "posterior": (), "log_marginal_likelihood": (), "fit_hyperparameters": ("steps", "learning_rate", "lengthscale", "variance", "noise")}
#: Arguments whose last axis may take any size: the input dimension D of the training inputs, which
#: nothing else fixes where there are no test inputs.
FREE_LENGTH = {"log_marginal_likelihood": ("x_train",), "fit_hyperparameters": ("x_train",)}


def _inputs(x, name):
    return _checks.float_array(x, name, ndim=2, what=" (N, D)")


def _hyper(lengthscale, variance, noise):
    _checks.positive(lengthscale, "lengthscale")
    _checks.positive(variance, "variance")
    _checks.positive(noise, "noise", allow_zero=True)


def _kernel(x1, x2, lengthscale, variance):
    squared = jnp.sum((x1[:, None, :] - x2[None, :, :]) ** 2, axis=-1)  # (N, M)
    return variance * jnp.exp(-0.5 * squared / lengthscale**2)


def rbf_kernel(x1, x2, *, lengthscale, variance):
    """The squared-exponential kernel matrix between ``x1`` (N, D) and ``x2`` (M, D): shape (N, M)."""
    x1, x2 = _inputs(x1, "x1"), _inputs(x2, "x2")
    _checks.same_shape(x2, "x2", (x2.shape[0], x1.shape[1]), expected_from="D from x1")
    _checks.positive(lengthscale, "lengthscale")
    _checks.positive(variance, "variance")
    return _kernel_jit(x1, x2, lengthscale=lengthscale, variance=variance)


# The public functions check their input, then hand it as it comes to a compiled core like this one
# (the hyperparameters traced, so that one program serves every value): called eagerly, each of their
# operations would compile on its own for every new shape, and the fit's lax.scan at every call.
_kernel_jit = jax.jit(_kernel)


def _training_data(x_train, y_train):
    x_train = _inputs(x_train, "x_train")
    y_train = _checks.float_array(y_train, "y_train", ndim=1, what=" (N,)")
    _checks.same_shape(y_train, "y_train", (x_train.shape[0],), expected_from="N from x_train")
    return x_train, y_train


def _factor(x_train, lengthscale, variance, noise):
    """The Cholesky factor ``L`` of ``K_y = K + noise I``."""
    N = x_train.shape[0]
    K = _kernel(x_train, x_train, lengthscale, variance)
    K_y = K + noise * jnp.eye(N, dtype=K.dtype)
    return jnp.linalg.cholesky(K_y)


def posterior(x_train, y_train, x_test, *, lengthscale, variance, noise):
    """Posterior mean (M,) and covariance (M, M) of the noiseless function at ``x_test`` (M, D), given
    ``x_train`` (N, D) and ``y_train`` (N,), a zero-mean prior with the RBF kernel and Gaussian noise
    of variance ``noise``."""
    x_train, y_train = _training_data(x_train, y_train)
    x_test = _inputs(x_test, "x_test")
    _checks.same_shape(x_test, "x_test", (x_test.shape[0], x_train.shape[1]), expected_from="D from x_train")
    _hyper(lengthscale, variance, noise)
    return _posterior(x_train, y_train, x_test, lengthscale=lengthscale, variance=variance, noise=noise)


@jax.jit
def _posterior(x_train, y_train, x_test, lengthscale, variance, noise):
    L = _factor(x_train, lengthscale, variance, noise)
    K_star = _kernel(x_train, x_test, lengthscale, variance)  # (N, M)
    K_star_star = _kernel(x_test, x_test, lengthscale, variance)  # (M, M)
    alpha = jax.scipy.linalg.cho_solve((L, True), y_train)  # K_y^-1 y, (N,)
    V = jax.scipy.linalg.solve_triangular(L, K_star, lower=True)  # L^-1 K_*, (N, M)
    mean = K_star.T @ alpha
    cov = K_star_star - V.T @ V
    return mean, cov


def log_marginal_likelihood(x_train, y_train, *, lengthscale, variance, noise):
    """``log p(y | X)`` of the targets ``y_train`` (N,) at ``x_train`` (N, D) under the RBF prior and
    Gaussian noise: a scalar, differentiable in the hyperparameters."""
    x_train, y_train = _training_data(x_train, y_train)
    _hyper(lengthscale, variance, noise)
    return _log_marginal_likelihood_jit(x_train, y_train, lengthscale=lengthscale, variance=variance, noise=noise)


def _log_marginal_likelihood(x_train, y_train, lengthscale, variance, noise):
    N = x_train.shape[0]
    L = _factor(x_train, lengthscale, variance, noise)
    alpha = jax.scipy.linalg.cho_solve((L, True), y_train)
    return -0.5 * y_train @ alpha - jnp.sum(jnp.log(jnp.diag(L))) - 0.5 * N * jnp.log(2 * jnp.pi)


_log_marginal_likelihood_jit = jax.jit(_log_marginal_likelihood)


def fit_hyperparameters(x_train, y_train, *, steps, learning_rate=0.05, lengthscale=1.0, variance=1.0, noise=0.1):
    """Maximise :func:`log_marginal_likelihood` over the logarithms of the three hyperparameters with
    Adam, from the given starting values.

    Returns a dict of the fitted ``lengthscale``, ``variance`` and ``noise``, and the log marginal
    likelihood before each step, shape (steps,).
    """
    x_train, y_train = _training_data(x_train, y_train)
    steps = _checks.size(steps, "steps")
    _checks.positive(learning_rate, "learning_rate")
    _hyper(lengthscale, variance, noise)
    _checks.positive(noise, "noise")  # its logarithm is the parameter: zero has none
    static = {name: _checks.static_number(value, name) for name, value in
              (("learning_rate", learning_rate), ("lengthscale", lengthscale), ("variance", variance), ("noise", noise))}
    return _fit_hyperparameters(x_train, y_train, steps=steps, **static)


# The step size and the starting values are static, as the Python numbers they are.
@functools.partial(jax.jit, static_argnames=("steps", "learning_rate", "lengthscale", "variance", "noise"))
def _fit_hyperparameters(x_train, y_train, *, steps, learning_rate, lengthscale, variance, noise):
    dtype = y_train.dtype
    log_theta = jnp.log(jnp.array([lengthscale, variance, noise], dtype))

    def objective(log_theta):
        ell, var, sigma2 = jnp.exp(log_theta)
        return _log_marginal_likelihood(x_train, y_train, ell, var, sigma2)

    b1, b2, eps = 0.9, 0.999, 1e-8

    def step(carry, t):
        log_theta, m, v = carry
        value, grad = jax.value_and_grad(objective)(log_theta)
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad**2
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        log_theta = log_theta + learning_rate * m_hat / (jnp.sqrt(v_hat) + eps)  # ascent
        return (log_theta, m, v), value

    zeros = jnp.zeros_like(log_theta)
    (log_theta, _, _), history = jax.lax.scan(step, (log_theta, zeros, zeros), jnp.arange(1, steps + 1, dtype=dtype))
    ell, var, sigma2 = jnp.exp(log_theta)
    return {"lengthscale": ell, "variance": var, "noise": sigma2}, history
