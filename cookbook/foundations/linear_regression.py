r"""Linear regression
=================

Fit a straight line (a hyperplane, in many dimensions) to data by least squares, in closed form or
by gradient descent: the first model to try on any regression problem, and the yardstick for
every model after it.

Equation
--------

.. math::

   \hat{y}_i = x_i w + b, \qquad
   L(w, b) = \frac{1}{N} \sum_{i=1}^{N} \left(\hat{y}_i - y_i\right)^2

   \theta^\star = \operatorname*{arg\,min}_{\theta} \lVert \tilde{X} \theta - y \rVert^2
   = (\tilde{X}^\top \tilde{X})^{-1} \tilde{X}^\top y, \qquad
   \theta \leftarrow \theta - \eta \nabla_\theta L

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_i`
     - features of example :math:`i`
     - ``x``, a row of ``X``
     - ``(D,)``
   * - :math:`y_i`, :math:`y`
     - target of example :math:`i`; all targets
     - ``y``
     - ``()``; ``(N,)``
   * - :math:`\hat{y}_i`
     - prediction for example :math:`i`
     - ``predict(params, x)``
     - ``()``
   * - :math:`w`
     - weights
     - ``params["w"]``
     - ``(D,)``
   * - :math:`b`
     - bias (intercept)
     - ``params["b"]``
     - ``()``
   * - :math:`\theta`
     - weights and bias stacked, :math:`[w; b]`
     - ``theta``
     - ``(D + 1,)``
   * - :math:`\tilde{X}`
     - the design matrix: the inputs with a column of ones appended
     - ``X_tilde``
     - ``(N, D + 1)``
   * - :math:`L`
     - mean squared error over the data set
     - ``mse_loss``
     - ``()``
   * - :math:`N`, :math:`i`
     - number of examples; index of an example
     - ``N``; a row of ``X``
     - scalar
   * - :math:`\eta`
     - learning rate
     - ``learning_rate``
     - scalar

Explanation
-----------

The model predicts each target as a weighted sum of the features plus a constant. Appending a
feature that is always 1 folds the bias into the weights, so the whole data set is predicted at once
by :math:`\tilde{X}\theta`, and the loss is the squared length of the residual
:math:`\tilde{X}\theta - y`, divided by :math:`N`.

.. admonition:: Intuition

   Tie every data point to the line with a vertical spring. A spring stretched by :math:`r` stores
   energy proportional to :math:`r^2`, so the line comes to rest where the total energy, the sum of
   squared residuals, is least: there the springs' pulls on the line balance, up against down and
   turning left against turning right, which is exactly what the normal equations say.

**Closed form.** The loss is a convex quadratic in :math:`\theta`, so its minimum is where its
gradient :math:`\frac{2}{N}\tilde{X}^\top(\tilde{X}\theta - y)` vanishes: the *normal equations*
:math:`\tilde{X}^\top\tilde{X}\,\theta = \tilde{X}^\top y`. Geometrically, :math:`\tilde{X}\theta^\star`
is the orthogonal projection of :math:`y` onto the space spanned by the columns of
:math:`\tilde{X}`: the residual is perpendicular to every feature. The method goes back to Legendre
and Gauss :footcite:`legendre1805nouvelles`; :footcite:t:`hastie2009elements` (chapter 3) treat it
in depth.

*Numerical trap.* Forming :math:`\tilde{X}^\top\tilde{X}` squares the condition number of the
problem, so nearly collinear features lose twice as many digits as they need to. The code solves the
least-squares problem directly with :func:`jax.numpy.linalg.lstsq` (a singular value decomposition),
which also returns the minimum-norm solution when features are exactly collinear and the inverse
does not exist.

**Gradient descent.** The same minimum is reached by repeatedly stepping against the gradient. On a
quadratic the iteration converges for any :math:`0 < \eta < 2/\lambda_{\max}`, where
:math:`\lambda_{\max}` is the largest eigenvalue of the Hessian :math:`\frac{2}{N}\tilde{X}^\top
\tilde{X}`, and its speed is set by the ratio of the largest to the smallest eigenvalue: features on
very different scales make a long narrow valley that gradient descent crosses slowly, which is why
features are standardised first. Gradient descent is the method that scales to every later model in
this book, where no closed form exists.

**Probabilistic reading.** Minimising squared error is maximum-likelihood estimation when the
targets are the linear prediction plus Gaussian noise of fixed variance :footcite:`bishop2006pattern`.

Inductive bias
--------------

The model assumes the target changes by the same amount for the same change in a feature, wherever
that change happens, and that features add up without interacting. When that holds it needs very
little data (one parameter per feature) and extrapolates gracefully; when it does not, no amount of
data helps: a line cannot fit a parabola, unless the features themselves are made nonlinear
(polynomials, or the learned features of a neural network, whose last layer is exactly this model).
Squared error assumes symmetric noise with light tails, so a few outliers pull the fit strongly
(see the Huber loss in :doc:`losses`).

Example
-------

Recover a known line from noisy samples, in closed form and by gradient descent:

>>> import jax, jax.numpy as jnp
>>> from cookbook.foundations.linear_regression import (
...     fit_closed_form, fit_gradient_descent, mse_loss, predict)
>>> k_x, k_noise = jax.random.split(jax.random.key(0))
>>> X = jax.random.normal(k_x, (100, 2))
>>> y = X @ jnp.array([2.0, -1.0]) + 0.5 + 0.01 * jax.random.normal(k_noise, (100,))
>>> params = fit_closed_form(X, y)
>>> params["w"].round(2), params["b"].round(2)
(Array([ 2., -1.], dtype=float32), Array(0.5, dtype=float32))
>>> predict(params, jnp.array([1.0, 1.0])).round(2)  # 2 - 1 + 0.5
Array(1.5, dtype=float32)
>>> gd_params, losses = fit_gradient_descent(X, y, learning_rate=0.1, steps=200)
>>> bool(losses[-1] < 1e-3 < losses[0])
True
>>> float(mse_loss(gd_params, X, y) - mse_loss(params, X, y)) < 1e-6
True
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"predict": (), "mse_loss": (), "fit_closed_form": (), "fit_gradient_descent": ("steps",)}


def _check_data(X, y, D=None):
    """``X`` (N, D) and ``y`` (N,) as float arrays; ``D`` fixed by the weights when given."""
    X = _checks.float_array(X, "X", ndim=2, what=" (N, D)")
    if D is not None:
        _checks.same_shape(X, "X", (X.shape[0], D), expected_from="(N, D) to match params['w']")
    y = _checks.same_shape(_checks.float_array(y, "y"), "y", X.shape[:1], expected_from="(N,) to match X")
    return X, y


def _check_params(params):
    """The number of features ``D`` of float parameters ``w`` (D,) and ``b`` ()."""
    w = _checks.float_array(params["w"], "params['w']", ndim=1, what=" (D,)")
    _checks.float_array(params["b"], "params['b']", ndim=0, what=" (a scalar)")
    return w.shape[0]


def predict(params, x):
    """Prediction for one example ``x`` of shape (D,): ``x @ w + b``, a scalar."""
    D = _check_params(params)
    x = _checks.same_shape(_checks.float_array(x, "x"), "x", (D,), expected_from="like params['w']")
    return _predict_jit(params, x)


def _predict(params, x):
    return x @ params["w"] + params["b"]


# predict and mse_loss check their input, then hand it straight to a compiled core: eagerly, each of
# their few operations would compile on its own for every new shape.
_predict_jit = jax.jit(_predict)


def mse_loss(params, X, y):
    """Mean squared error of ``params`` over a data set ``X`` (N, D), ``y`` (N,)."""
    X, y = _check_data(X, y, _check_params(params))
    return _mse_loss_jit(params, X, y)


def _mse_loss(params, X, y):
    y_hat = jax.vmap(_predict, in_axes=(None, 0))(params, X)  # (N,)
    return jnp.mean((y_hat - y) ** 2)


_mse_loss_jit = jax.jit(_mse_loss)


def fit_closed_form(X, y):
    """Least-squares weights and bias, solved without forming ``X.T @ X``."""
    return _solve(*_check_data(X, y))


@jax.jit  # one compilation per shape of X, not one per operation of the solver
def _solve(X, y):
    N, D = X.shape
    X_tilde = jnp.concatenate([X, jnp.ones((N, 1), X.dtype)], axis=1)  # (N, D + 1)
    theta, *_ = jnp.linalg.lstsq(X_tilde, y)  # minimum-norm solution, stable when ill-conditioned
    return {"w": theta[:D], "b": theta[D]}


def fit_gradient_descent(X, y, *, learning_rate, steps, params=None):
    """Full-batch gradient descent on the mean squared error, from zeros unless ``params`` is given.

    Returns the final parameters and the loss before each step, shape (steps,).
    """
    X, y = _check_data(X, y)
    _checks.size(steps, "steps")
    _checks.positive(learning_rate, "learning_rate")
    if params is not None:
        _check_data(X, y, _check_params(params))
    return _descend(X, y, learning_rate, params, steps)


@functools.partial(jax.jit, static_argnums=4)  # one compilation per shape and step count, any learning rate
def _descend(X, y, learning_rate, params, steps):
    if params is None:  # the zeros are made here, so that fit_gradient_descent only hands over its input
        params = {"w": jnp.zeros(X.shape[1], X.dtype), "b": jnp.zeros((), X.dtype)}

    def step(params, _):
        loss, grads = jax.value_and_grad(_mse_loss)(params, X, y)
        params = jax.tree.map(lambda p, g: p - learning_rate * g, params, grads)
        return params, loss

    return jax.lax.scan(step, params, length=steps)
