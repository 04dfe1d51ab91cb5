r"""Double descent
==============

The test error of least squares, as the number of features grows past the number of samples,
rises to a peak where the model can just interpolate the data and then falls again, often below the
best small model: the curve that reconciles the classical bias-variance trade-off with huge models
that fit their training data exactly.

Equation
--------

.. math::

   \begin{aligned}
   \hat\beta &= X_T^{+}\, y \quad (\text{minimum-norm least squares on the first } p \text{ features}), \\
   \mathbb{E}\big[(y_0 - x_0^\top \hat\beta)^2\big] &=
   \begin{cases}
   \big(\|\beta_{\bar T}\|^2 + \sigma^2\big)\Big(1 + \dfrac{p}{n - p - 1}\Big), & p \le n - 2, \\
   \|\beta_T\|^2\Big(1 - \dfrac{n}{p}\Big) & p \ge n + 2 \\
   \qquad + \big(\|\beta_{\bar T}\|^2 + \sigma^2\big)\Big(1 + \dfrac{n}{p - n - 1}\Big), &
   \end{cases}
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`X`, :math:`X_T`
     - the :math:`n` training inputs with all :math:`D` features, and their first :math:`p` columns
     - ``X``
     - ``(n, D)``
   * - :math:`y`, :math:`y_0`
     - training targets :math:`X\beta + \sigma\varepsilon`; a fresh test target
     - ``y``
     - ``(n,)``
   * - :math:`x_0`
     - a fresh test input, :math:`\mathcal{N}(0, I_D)` like the training inputs
     - in words
     - ``(D,)``
   * - :math:`\beta`, :math:`\beta_T`, :math:`\beta_{\bar T}`
     - the true coefficients; those of the :math:`p` features the model sees, and of the rest
     - ``beta``; ``signal_in`` and ``signal_out`` are their squared norms
     - ``(D,)``
   * - :math:`\hat\beta`
     - the fitted coefficients, zero outside the first :math:`p`
     - ``beta_hat``
     - ``(D,)``
   * - :math:`X_T^{+}`
     - the pseudo-inverse: the least-squares fit of smallest norm
     - ``jnp.linalg.pinv``
     - ``(p, n)``
   * - :math:`n`, :math:`p`
     - samples; features used by the model
     - ``n``, ``p``
     - scalars
   * - :math:`\sigma`
     - the noise level of the targets
     - ``noise`` is :math:`\sigma^2`
     - scalar

Explanation
-----------

Classical statistics says that a model with more parameters fits its training data better and, past
some size, generalises worse. :footcite:t:`belkin2019reconciling` observed that this U-shaped curve
is only the first half of the story: past the *interpolation threshold*, where the model has as many
parameters as there are samples and fits them exactly, the test error falls again, for random
features, decision forests and neural networks alike.

Least squares on Gaussian features is the smallest model that shows it, and its curve is known
exactly. Fit the first :math:`p` of :math:`D` features by least squares, taking the solution of
smallest norm when :math:`p > n` leaves many that fit exactly. :footcite:t:`belkin2020two` computed
the expected test error for every :math:`n` and :math:`p` (the equation; ``expected_risk``), and
:footcite:t:`hastie2022surprises` its limit as :math:`n, p \to \infty`. Below the threshold the error
is the part of the signal and noise that the model cannot see, inflated by :math:`n/(n - p - 1)`, the
variance of fitting :math:`p` coefficients to :math:`n` points. At :math:`p = n` the fit must pass
through every noisy point with a matrix :math:`X_T` that is nearly singular, and the error diverges.
Above it, among the many exact fits, the minimum-norm one spreads the signal thinly over all
:math:`p` features, and as :math:`p` grows the noise is spread thinner too: the second descent. The
price is the first term, the part of :math:`\beta_T` that :math:`n` samples cannot pin down in
:math:`p` dimensions. In the figure's setting (:math:`n = 40`, :math:`D = 120` features carrying equal
shares of a signal of norm 1, :math:`\sigma^2 = 0.1`) the error rises from 1.12 with one feature to
the peak, and falls after it to 0.82 with all 120, below every model smaller than the data.

.. admonition:: Intuition

   Drawing a curve through noisy points with a flexible ruler. With too few pegs the ruler cannot
   follow the trend; with exactly as many pegs as points it must pass through every one, noise
   included, and it whips wildly between them. With far more pegs than points there are many curves
   through the points, and choosing the least bent of them smooths the noise away again.

``fit`` computes :math:`\hat\beta` with the pseudo-inverse, and ``sampled_risk`` measures the test
error of fits on independent training sets: for Gaussian test inputs it is exactly
:math:`\|\hat\beta - \beta\|^2 + \sigma^2`, so no test set is drawn. The tests compare its mean over
400 training sets with ``expected_risk`` within four standard errors, away from the threshold where
the variance is infinite.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.theory.double_descent import expected_risk, sampled_risk

   n, D, noise = 40, 120, 0.1
   formula = [expected_risk(n, p, signal_in=p / D, signal_out=1 - p / D, noise=noise) for p in range(1, D + 1)]
   ps = jnp.array([5, 10, 20, 30, 55, 80, 120])  # the example's and the tests' fits
   measured = sampled_risk(jax.random.key(0), jnp.ones(D) / D**0.5, ps, n=n, noise=noise, trials=400).mean(axis=1)
   fig, ax = plt.subplots(figsize=(6, 3.4))
   ax.semilogy(range(1, D + 1), formula, label="exact expected test error")
   ax.semilogy(ps, measured, "o", label="mean of 400 fits")
   ax.axvline(n, color="0.7", ls="--")
   ax.set(xlabel="features p (n = 40 samples)", ylabel="test MSE", ylim=(0.5, 30))
   ax.legend(fontsize=8)
   fig.tight_layout()

Inductive bias
--------------

The second descent depends on the minimum-norm choice among interpolating fits, an implicit
preference of gradient descent started from zero, and on features that each carry a little of the
signal. With a well-chosen ridge penalty the peak disappears, and the best error is then reached with
regularisation rather than size :footcite:p:`hastie2022surprises`.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.theory.double_descent import expected_risk, fit, sampled_risk
>>> round(expected_risk(40, 10, signal_in=0.25, signal_out=0.75, noise=0.1), 4)
1.1431
>>> round(expected_risk(40, 120, signal_in=1.0, signal_out=0.0, noise=0.1), 4)
0.8173
>>> X = jnp.array([[1.0, 0.0, 2.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 2.0, 0.0]])
>>> beta_hat = fit(X, jnp.array([1.0, 2.0, 3.0]), p=4)  # 4 features, 3 samples: interpolates
>>> beta_hat.shape, bool(jnp.allclose(X @ beta_hat, jnp.array([1.0, 2.0, 3.0]), atol=1e-4)), float(beta_hat[4])
((5,), True, 0.0)

400 training sets of 40 samples, fitted with 5 to 120 of the 120 features: the measured means
agree with the formula (1.21, 1.37, 1.92, 3.68, 2.60, 1.21, 0.82) within two standard errors.

>>> beta = jnp.ones(120) / 120**0.5
>>> ps = jnp.array([5, 10, 20, 30, 55, 80, 120])
>>> risks = sampled_risk(jax.random.key(0), beta, ps, n=40, noise=0.1, trials=400)
>>> risks.shape
(7, 400)
>>> risks.mean(axis=1).round(2)
Array([1.22, 1.38, 1.9 , 3.75, 2.56, 1.2 , 0.82], dtype=float32)

Implementation notes
--------------------

``fit`` zeroes the columns past :math:`p` and takes the pseudo-inverse of the whole matrix, which
gives the same coefficients as the pseudo-inverse of :math:`X_T` padded with zeros; so every
:math:`p` has the same shapes and ``sampled_risk`` maps over them with one compilation. The
pseudo-inverse drops singular values below a relative :math:`10 \max(n, D)` machine epsilons, so
right at the threshold, where the smallest singular value approaches zero, the float32 fit is
slightly regularised and its error finite.
"""

import functools
import numbers

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"fit": (), "sampled_risk": ("n", "trials")}


def expected_risk(n, p, *, signal_in, signal_out, noise):
    """The expected test error of minimum-norm least squares with ``p`` of the features and ``n``
    samples (Belkin, Hsu and Xu); ``inf`` for n - 1 <= p <= n + 1."""
    n, p = _checks.size(n, "n"), _checks.size(p, "p")
    for name, value in (("signal_in", signal_in), ("signal_out", signal_out), ("noise", noise)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
        _checks.positive(value, name, allow_zero=True)
    seen_noise = signal_out + noise  # what the p features cannot explain acts as noise
    if p <= n - 2:
        return float(seen_noise * (1 + p / (n - p - 1)))
    if p >= n + 2:
        return float(signal_in * (1 - n / p) + seen_noise * (1 + n / (p - n - 1)))
    return float("inf")


def fit(X, y, p):
    """The minimum-norm least-squares coefficients (D,) on the first ``p`` columns of ``X`` (n, D),
    zero for the others. ``p`` may be traced: it only masks columns."""
    X = _checks.float_array(X, "X", ndim=2, what=" (n, D)")
    y = _checks.float_array(y, "y", ndim=1, what=" (n,)")
    _checks.same_shape(y, "y", X.shape[:1], expected_from="(n,) to match X")
    if isinstance(p, numbers.Integral) and not isinstance(p, bool):
        if not 1 <= p <= X.shape[1]:
            raise ValueError(f"p must be in [1, D] = [1, {X.shape[1]}] with D the columns of X, got {p}")
    elif _checks.is_concrete(p) or isinstance(p, (bool, float)):
        raise TypeError(f"p must be an int, got {type(p).__name__} {p!r}")
    return _fit(X, y, p)


@jax.jit  # p is traced: one compilation per shape serves every p
def _fit(X, y, p):
    mask = (jnp.arange(X.shape[1]) < p).astype(X.dtype)  # (D,)
    beta_hat = jnp.linalg.pinv(X * mask[None, :]) @ y
    return beta_hat


def sampled_risk(key, beta, ps, *, n, noise, trials):
    """Test errors (len(ps), trials) of ``fit`` on ``trials`` independent training sets of ``n``
    Gaussian inputs with targets X beta + sqrt(noise) eps, one row per number of features in ``ps``.
    The same training sets serve every p."""
    beta = _checks.float_array(beta, "beta", ndim=1, what=" (D,)")
    ps = _checks.int_array(ps, "ps", ndim=1, what=" (P,)")
    if _checks.is_concrete(ps) and ps.size and not (1 <= int(ps.min()) and int(ps.max()) <= beta.shape[0]):
        raise ValueError(f"ps must lie in [1, D] with D = {beta.shape[0]} the length of beta, "
                         f"got values from {int(ps.min())} to {int(ps.max())}")
    n, trials = _checks.size(n, "n"), _checks.size(trials, "trials")
    noise = _checks.positive(noise, "noise", allow_zero=True)
    return _sampled_risk(key, beta, ps, n, noise, trials)


def _one_set(key, beta, ps, n, noise):
    k_x, k_e = jax.random.split(key)
    X = jax.random.normal(k_x, (n, beta.shape[0]), beta.dtype)
    y = X @ beta + jnp.sqrt(noise) * jax.random.normal(k_e, (n,), beta.dtype)
    beta_hat = jax.vmap(lambda p: fit(X, y, p))(ps)  # (P, D)
    return jnp.sum((beta_hat - beta[None, :]) ** 2, axis=1) + noise  # E[(y0 - x0 beta_hat)^2 | fit]


@functools.partial(jax.jit, static_argnums=(3, 5))
def _sampled_risk(key, beta, ps, n, noise, trials):
    keys = jax.random.split(key, trials)
    return jax.vmap(lambda k: _one_set(k, beta, ps, n, noise), out_axes=1)(keys)  # (P, trials)
