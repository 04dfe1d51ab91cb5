r"""Stochastic-gradient Langevin dynamics
=====================================

Add Gaussian noise of the right size to each step of minibatch gradient descent on the negative log
posterior, and the iterates stop converging to one point and wander over the posterior instead:
samples of the weights at the cost of training, for models and data too large for exact MCMC.

Equation
--------

.. math::

   \begin{aligned}
   \nabla \tilde{U}(\theta) &= -\nabla \log p(\theta)
     - \frac{N}{n} \sum_{i \in \mathcal{B}} \nabla \log p(y_i \mid x_i, \theta), \\
   \theta_{t+1} &= \theta_t - \frac{\epsilon}{2} \nabla \tilde{U}(\theta_t) + \eta_t, \qquad
   \eta_t \sim \mathcal{N}(0, \epsilon I), \\
   \text{reference:}\quad p(\theta \mid \mathcal{D}) &= \mathcal{N}(m, S), \quad
   S = \left(\lambda I + X^\top X / \sigma^2\right)^{-1}, \quad m = S X^\top y / \sigma^2
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`\theta`, :math:`\theta_t`
     - parameters (here the weights of a linear model); the sample at step :math:`t`
     - ``theta``, row :math:`t` of ``samples``
     - ``(D,)``
   * - :math:`\tilde{U}`
     - minibatch estimate of the negative log posterior (its gradient is ``grad``)
     - ``grad``
     - ``(D,)``
   * - :math:`p(\theta)`, :math:`\lambda`, :math:`I`
     - Gaussian prior :math:`\mathcal{N}(0, \lambda^{-1} I)`; its precision; identity
     - ``prior_precision``, ``jnp.eye``
     - scalar
   * - :math:`p(y_i \mid x_i, \theta)`, :math:`\sigma^2`
     - Gaussian likelihood :math:`\mathcal{N}(x_i^\top \theta, \sigma^2)`; its noise variance
     - ``noise``
     - scalar
   * - :math:`X`, :math:`x_i`, :math:`y`, :math:`y_i`, :math:`\mathcal{D}`
     - inputs and targets, the data
     - ``X``, ``y``
     - ``(N, D)``, ``(N,)``
   * - :math:`N`, :math:`n`, :math:`\mathcal{B}`, :math:`i`
     - data size, batch size, the batch (indices drawn uniformly, with replacement), an index
     - ``N``, ``batch_size``, ``batch``
     - scalars, ``(n,)``
   * - :math:`\epsilon`, :math:`\eta_t`, :math:`t`
     - step size; injected noise; step index
     - ``step_size``, ``eta``
     - scalar, ``(D,)``
   * - :math:`m`, :math:`S`
     - exact posterior mean and covariance of Bayesian linear regression
     - ``mean``, ``cov``
     - ``(D,)``, ``(D, D)``

Explanation
-----------

Langevin dynamics is a random walk that drifts downhill on the energy :math:`U = -\log p(\theta
\mid \mathcal{D})` and is kicked by Gaussian noise; with a step size shrinking to zero, its
stationary distribution is :math:`e^{-U}`, the posterior. Welling and Teh
:footcite:p:`welling2011bayesian` replaced the full gradient with a minibatch estimate (scaled by
:math:`N/n` so that it is unbiased) and noticed that for small steps the injected noise, of variance
:math:`\epsilon`, swamps the minibatch noise, of variance proportional to :math:`\epsilon^2`: the
sampler then needs no Metropolis–Hastings correction, which would need the full data. Early on, the
gradient term dominates and SGLD behaves like stochastic gradient descent towards a mode; later the
noise dominates and it samples.

The code keeps the step size constant, as most practitioners do, rather than decaying it as the
paper's theory asks; the stationary distribution is then biased by :math:`O(\epsilon)`, which the
tests bound on Bayesian linear regression, where the posterior is the Gaussian :math:`\mathcal{N}(m,
S)` in closed form. For a network, :math:`\theta` is the flattened weights and the same
``sgld_step`` applies to the gradient of any minibatch loss. The first samples (the burn-in) are
thrown away and the rest averaged: a prediction averages the model over the samples.

.. admonition:: Intuition

   A ball rolling in a bowl comes to rest at the bottom; the same ball shaken at the right
   temperature keeps moving and spends time at each height in proportion to how likely that height
   is. SGLD is gradient descent with the shaking turned on.

Inductive bias
--------------

SGLD assumes nothing about the shape of the posterior and, unlike :doc:`laplace` or variational
methods, can in principle represent several modes and skewed shapes; in practice it moves slowly
between modes that are far apart and mixes slowly along narrow directions (its step size is limited
by the steepest direction). Its samples are correlated, so many steps give few independent samples,
and it costs a stored copy of the weights per kept sample.

Example
-------

One step by hand: a zero gradient leaves only the noise of variance ``step_size``:

>>> import jax, jax.numpy as jnp
>>> from cookbook.uncertainty.sgmcmc import linear_regression_posterior, sample_linear_regression, sgld_step
>>> theta = sgld_step(jnp.zeros(3), jnp.zeros(3), jax.random.key(0), step_size=0.01)
>>> theta.shape, bool(jnp.all(jnp.abs(theta) < 0.5))
((3,), True)

Bayesian linear regression with 50 points: the exact posterior, and SGLD samples:

>>> X = jax.random.normal(jax.random.key(1), (50, 2))
>>> y = X @ jnp.array([1.0, -2.0]) + 0.5 * jax.random.normal(jax.random.key(2), (50,))
>>> mean, cov = linear_regression_posterior(X, y, noise=0.25, prior_precision=1.0)
>>> mean.round(1)
Array([ 0.9, -2.1], dtype=float32)
>>> samples = sample_linear_regression(X, y, jax.random.key(3), noise=0.25, prior_precision=1.0,
...                                    num_steps=3000, batch_size=10, step_size=1e-3)
>>> samples.shape, samples[1000:].mean(0).round(1)
((3000, 2), Array([ 0.9, -2.1], dtype=float32))
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"sgld_step": (), "linear_regression_posterior": (),
       "sample_linear_regression": ("num_steps", "batch_size")}


def sgld_step(theta, grad, key, *, step_size):
    """One Langevin step from ``theta`` (D,) given ``grad`` (D,), an unbiased estimate of the gradient of
    the negative log posterior: ``theta - step_size / 2 * grad + N(0, step_size I)``."""
    theta = _checks.float_array(theta, "theta", ndim=1, what=" (D,)")
    grad = _checks.same_shape(_checks.float_array(grad, "grad", ndim=1, what=" (D,)"), "grad", theta.shape,
                              expected_from="theta")
    _checks.positive(step_size, "step_size")
    return _sgld_step(theta, grad, key, step_size)


def _sgld(theta, grad, key, step_size):
    eta = jnp.sqrt(step_size) * jax.random.normal(key, theta.shape, theta.dtype)
    return theta - 0.5 * step_size * grad + eta


_sgld_step = jax.jit(_sgld)  # one program, where each operation called eagerly compiled its own


def _check_data(X, y):
    X = _checks.float_array(X, "X", ndim=2, what=" (N, D)")
    y = _checks.float_array(y, "y", ndim=1, what=" (N,)")
    return X, _checks.same_shape(y, "y", X.shape[:1], expected_from="N from X")


def linear_regression_posterior(X, y, *, noise, prior_precision):
    """The exact posterior mean (D,) and covariance (D, D) of the weights of ``y = X theta + noise``,
    with the prior ``N(0, I / prior_precision)`` and Gaussian noise of variance ``noise``."""
    X, y = _check_data(X, y)
    _checks.positive(noise, "noise")
    _checks.positive(prior_precision, "prior_precision")
    return _posterior(X, y, noise, prior_precision)


@jax.jit
def _posterior(X, y, noise, prior_precision):
    D = X.shape[1]
    precision = prior_precision * jnp.eye(D, dtype=X.dtype) + X.T @ X / noise
    L = jnp.linalg.cholesky(precision)
    mean = jax.scipy.linalg.cho_solve((L, True), X.T @ y / noise)
    cov = jax.scipy.linalg.cho_solve((L, True), jnp.eye(D, dtype=X.dtype))
    return mean, cov


def sample_linear_regression(X, y, key, *, noise, prior_precision, num_steps, batch_size, step_size):
    """``num_steps`` SGLD samples (num_steps, D) of the weights of Bayesian linear regression, from
    zero, each step on a batch of ``batch_size`` examples drawn uniformly with replacement."""
    X, y = _check_data(X, y)
    _checks.positive(noise, "noise")
    _checks.positive(prior_precision, "prior_precision")
    _checks.positive(step_size, "step_size")
    num_steps = _checks.size(num_steps, "num_steps")
    batch_size = _checks.size(batch_size, "batch_size")
    N, D = X.shape
    if batch_size > N:
        raise ValueError(f"batch_size must be at most N = {N} (the rows of X), got {batch_size}")
    return _sample(X, y, key, noise, prior_precision, num_steps, batch_size, step_size)


@functools.partial(jax.jit, static_argnums=(5, 6))
def _sample(X, y, key, noise, prior_precision, num_steps, batch_size, step_size):
    N, D = X.shape

    def grad_estimate(theta, batch):
        residual = y[batch] - X[batch] @ theta  # (n,)
        return prior_precision * theta - (N / batch_size) * X[batch].T @ residual / noise  # grad of U~

    def step(theta, key):
        k_batch, k_noise = jax.random.split(key)
        batch = jax.random.randint(k_batch, (batch_size,), 0, N)  # (n,)
        theta = _sgld(theta, grad_estimate(theta, batch), k_noise, step_size)
        return theta, theta

    _, samples = jax.lax.scan(step, jnp.zeros(D, X.dtype), jax.random.split(key, num_steps))
    return samples
