r"""The Laplace approximation
=========================

Train a network as usual, then fit a Gaussian to the posterior over its weights at the trained
weights, with the curvature of the loss as precision: uncertainty added after the fact, to a model
that is already trained, for the price of one matrix (the last layer's, in the common cheap form).

Equation
--------

.. math::

   \begin{aligned}
   \theta_{\mathrm{MAP}} &= \arg\min_\theta \sum_{i=1}^{N}
     \frac{\left(y_i - f_\theta(x_i)\right)^2}{2 \sigma^2} + \frac{\lambda}{2} \lVert \theta \rVert^2,
   \qquad J_i = \left.\frac{\partial f_\theta(x_i)}{\partial \theta}\right|_{\theta_{\mathrm{MAP}}}, \\
   H &= \frac{1}{\sigma^2} \sum_{i=1}^{N} J_i^\top J_i + \lambda I, \qquad
   p(\theta \mid \mathcal{D}) \approx \mathcal{N}\left(\theta_{\mathrm{MAP}},\, H^{-1}\right), \\
   p(y \mid x, \mathcal{D}) &\approx \mathcal{N}\left(f_{\theta_{\mathrm{MAP}}}(x),\;
     J(x)\, H^{-1} J(x)^\top + \sigma^2\right)
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`, :math:`x_i`, :math:`y_i`, :math:`\mathcal{D}`
     - an input; training inputs and targets; the training data
     - ``x``, ``X``, ``y``
     - ``(D,)``, ``(N, D)``, ``(N,)``
   * - :math:`f_\theta`, :math:`\theta`
     - the network (an MLP with one linear output); the parameters the posterior is over: all of
       them, or the last layer's
     - ``mlp_apply``, ``theta`` (flattened, chosen by ``subset``)
     - ``(P,)``
   * - :math:`\theta_{\mathrm{MAP}}`
     - the trained (maximum a posteriori) parameters
     - ``params`` after ``fit_map``
     - pytree
   * - :math:`\sigma^2`, :math:`\lambda`
     - observation noise variance; prior precision (weight decay)
     - ``noise``, ``prior_precision``
     - scalars
   * - :math:`J_i`, :math:`J(x)`
     - Jacobian of the output with respect to the parameters; for the last layer, the features
     - ``J``, ``J_x``
     - ``(N, P)``, ``(P,)``
   * - :math:`H`, :math:`I`
     - posterior precision: generalised Gauss–Newton matrix plus prior; identity
     - ``posterior_precision``, ``jnp.eye``
     - ``(P, P)``
   * - :math:`i`, :math:`N`
     - example index; number of examples
     - ``N``
     - scalars
   * - :math:`p`
     - a probability density: the posterior over parameters, the predictive over targets
     - ``predictive`` returns the latter's mean and variance
     - scalar

Explanation
-----------

Near its minimum, any smooth loss is a quadratic bowl, and the exponential of minus a quadratic is
a Gaussian. The Laplace approximation :footcite:p:`mackay1992practical` reads the posterior over
weights off the trained network this way: its mean is the trained weights (with weight decay
:math:`\lambda`, they are the maximum a posteriori weights under a Gaussian prior), its precision
is the loss's curvature there. The exact Hessian of a network is expensive and can be indefinite, so
the generalised Gauss–Newton matrix (GGN) replaces it: linearise the network around
:math:`\theta_{\mathrm{MAP}}` and take the Hessian of the loss of that linear model,
:math:`\sum_i J_i^\top J_i / \sigma^2` for a Gaussian likelihood, which is positive semidefinite.
Predictions then come from the same linearised network, whose output is Gaussian: the mean is the
trained network's, the variance is how much the output moves along the directions the posterior
leaves loose, plus the noise :footcite:p:`daxberger2021laplace`.

For a model that is already linear in its parameters, the GGN is the exact Hessian, the log posterior
is exactly quadratic, and the Laplace approximation is the exact Bayesian posterior (the tests check
this against the closed form of Bayesian linear regression). The *last-layer* form keeps every layer
but the last fixed at its trained value and treats the network as Bayesian linear regression on its
last hidden features: :math:`J(x)` is then those features (and a 1 for the bias), :math:`H` has the
size of the last layer only, and the approximation is exact given the features.

.. admonition:: Intuition

   At the bottom of a valley, the walls tell you how sure you are of where the bottom lies: a
   narrow gorge pins it down, a wide flat basin does not. The Laplace approximation measures the
   walls at the spot the training stopped at and says nothing about other valleys.

Inductive bias
--------------

The Laplace approximation assumes that one Gaussian around one mode describes the posterior: it
sees none of the other modes that :doc:`deep_ensembles` find, and its variance depends on the prior
precision and the noise, which should be tuned (by the marginal likelihood, or on held-out data).
The last-layer form further trusts the learned features: it is uncertain only where the features of
a new input point in directions the training features did not cover, which on the chapter's gap data
is enough (the tests measure the variance in the gap at more than three times that on the data). Its
cost is one :math:`P \times P` matrix: the full-network form is for small networks only.

Example
-------

A linear model (an MLP with no hidden layer): the Laplace posterior is the exact one.

>>> import jax, jax.numpy as jnp
>>> from cookbook.foundations.mlp import init
>>> from cookbook.uncertainty.laplace import fit_map, posterior_precision, predictive
>>> X = jnp.array([[0.0], [1.0], [2.0]])
>>> y = jnp.array([0.1, 0.9, 2.1])
>>> H = posterior_precision(init(jax.random.key(0), (1, 1)), X, noise=0.5, prior_precision=1.0, subset="all")
>>> H  # [[sum x^2, sum x], [sum x, N]] / 0.5 + I, for the weight and the bias
Array([[11.,  6.],
       [ 6.,  7.]], dtype=float32)

A small ReLU network, trained to its MAP, with a last-layer posterior:

>>> params = init(jax.random.key(1), (1, 16, 1))
>>> params, losses = fit_map(params, X, y, noise=0.01, prior_precision=1.0, steps=500)
>>> bool(losses[-1] < losses[0])
True
>>> H = posterior_precision(params, X, noise=0.01, prior_precision=1.0)
>>> H.shape  # 16 weights and the bias of the last layer
(17, 17)
>>> mean, variance = predictive(params, H, jnp.array([1.0]), noise=0.01)
>>> round(float(mean), 1), bool(variance > 0.01)
(0.9, True)
"""

import functools

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from cookbook import _checks
from cookbook._memo import cached
from cookbook.foundations.mlp import apply as mlp_apply
from cookbook.optimization.adam import adam

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"posterior_precision": ("subset",), "predictive": ("subset",), "fit_map": ("steps",)}

_SUBSETS = ("last_layer", "all")


def _check_params(params):
    """The input width D of a list of float ``{"W", "b"}`` layers with one output."""
    if not isinstance(params, (list, tuple)) or not params:
        raise TypeError(f"params must be a non-empty list of {{'W', 'b'}} layers, got {type(params).__name__}")
    for l, layer in enumerate(params):
        _checks.float_array(layer["W"], f"params[{l}]['W']", ndim=2)
        _checks.float_array(layer["b"], f"params[{l}]['b']", ndim=1)
    if jnp.shape(params[-1]["W"])[-1] != 1:
        raise ValueError(f"params[-1]['W'] must have one output (scalar regression), got shape {jnp.shape(params[-1]['W'])}")
    return jnp.shape(params[0]["W"])[0]


def _check_data(params, X, y=None):
    D = _check_params(params)
    X = _checks.float_array(X, "X", ndim=2, what=" (N, D)")
    _checks.same_shape(X, "X", (X.shape[0], D), expected_from="D from params[0]['W']")
    if y is None:
        return X
    y = _checks.float_array(y, "y", ndim=1, what=" (N,)")
    return X, _checks.same_shape(y, "y", X.shape[:1], expected_from="N from X")


def _check_subset(subset):
    if subset not in _SUBSETS:
        raise ValueError(f"subset must be one of {_SUBSETS}, got {subset!r}")


def _output_of_theta(params, subset):
    """The flattened parameters ``theta`` that the posterior is over, and ``f(theta, x)``, a scalar."""
    if subset == "all":
        theta, unravel = ravel_pytree(params)
        return theta, lambda t, x: mlp_apply(unravel(t), x)[0]
    theta, unravel = ravel_pytree(params[-1])  # the last layer's W (H, 1) and b (1,)
    return theta, lambda t, x: mlp_apply(list(params[:-1]) + [unravel(t)], x)[0]


def posterior_precision(params, X, *, noise, prior_precision, subset="last_layer"):
    """The GGN posterior precision ``H`` (P, P) at the trained ``params`` for inputs ``X`` (N, D):
    over the last layer's weights and bias (``subset="last_layer"``) or over all parameters (``"all"``),
    flattened in the order of :func:`jax.flatten_util.ravel_pytree`."""
    _check_subset(subset)
    X = _check_data(params, X)
    _checks.positive(noise, "noise")
    _checks.positive(prior_precision, "prior_precision", allow_zero=True)
    return _precision(params, X, noise, prior_precision, subset)


# The public functions check their input, then run compiled cores like this one: the page's calls,
# the tests' and the jit check's reuse one program per shape instead of dispatching op by op.
@functools.partial(jax.jit, static_argnums=4)
def _precision(params, X, noise, prior_precision, subset):
    theta, f = _output_of_theta(params, subset)
    J = jax.vmap(jax.grad(f), in_axes=(None, 0))(theta, X)  # (N, P)
    P = theta.shape[0]
    return J.T @ J / noise + prior_precision * jnp.eye(P, dtype=J.dtype)


def predictive(params, precision, x, *, noise, subset="last_layer"):
    """Mean and variance (two scalars) of ``y`` at one input ``x`` (D,) under the linearised network and
    the Laplace posterior of precision ``precision`` (P, P); the variance includes the ``noise``."""
    _check_subset(subset)
    D = _check_params(params)
    x = _checks.same_shape(_checks.float_array(x, "x", ndim=1, what=" (D,)"), "x", (D,),
                           expected_from="D from params[0]['W']")
    _checks.positive(noise, "noise", allow_zero=True)
    theta = jax.eval_shape(lambda p: _output_of_theta(p, subset)[0], params)
    precision = _checks.float_array(precision, "precision", ndim=2, what=" (P, P)")
    _checks.same_shape(precision, "precision", (theta.shape[0],) * 2, expected_from=f"P for subset={subset!r}")
    return _predictive(params, precision, x, noise, subset)


@functools.partial(jax.jit, static_argnums=4)
def _predictive(params, precision, x, noise, subset):
    theta, f = _output_of_theta(params, subset)
    mean, J_x = jax.value_and_grad(f)(theta, x)  # scalar, (P,)
    L = jnp.linalg.cholesky(precision)
    v = jax.scipy.linalg.solve_triangular(L, J_x, lower=True)  # L^-1 J(x)^T
    return mean, v @ v + noise  # J H^-1 J^T + sigma^2


@cached  # the chapter's figure and the tests share this run when the book is built (cookbook/_memo.py)
def fit_map(params, X, y, *, noise, prior_precision, steps, learning_rate=0.01):
    """Train ``params`` to the MAP: full-batch Adam on the squared error over ``2 noise`` plus
    ``prior_precision / 2`` times the squared norm of all parameters, divided by N. Returns the
    parameters and the loss before each step, (steps,)."""
    X, y = _check_data(params, X, y)
    _checks.positive(noise, "noise")
    _checks.positive(prior_precision, "prior_precision", allow_zero=True)
    _checks.size(steps, "steps")
    _checks.positive(learning_rate, "learning_rate")
    return _fit_map(params, X, y, noise, prior_precision,
                    learning_rate=_checks.static_number(learning_rate, "learning_rate"), steps=steps)


# The step size is static, as it was when this loop ran eagerly with it as a constant: fit_map traced
# under jax.jit with its default then passes its inputs straight to this core.
@functools.partial(jax.jit, static_argnames=("learning_rate", "steps"))
def _fit_map(params, X, y, noise, prior_precision, *, learning_rate, steps):
    N = X.shape[0]

    def loss(params):
        pred = jax.vmap(mlp_apply, in_axes=(None, 0))(params, X)[:, 0]  # (N,)
        squared_norm = sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(params))
        return (jnp.sum((y - pred) ** 2) / (2 * noise) + 0.5 * prior_precision * squared_norm) / N

    optimizer = adam(1.0)  # the step size is applied below

    def step(carry, _):
        params, state = carry
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = optimizer.update(grads, state, params)
        return (jax.tree.map(lambda p, u: p + learning_rate * u, params, updates), state), value

    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), length=steps)
    return params, losses
