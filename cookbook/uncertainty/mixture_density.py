r"""Mixture density networks
========================

A network that outputs the weights, means and widths of a mixture of Gaussians instead of one
number, so that it can say "either this or that": the model to reach for when one input has several
right answers (inverse problems, the next position of a pen, the future of a trajectory).

Equation
--------

.. math::

   \begin{aligned}
   \left(z^{\alpha}, z^{\mu}, z^{\sigma}\right) &= f_\theta(x), \qquad
   \alpha_k = \operatorname{softmax}(z^{\alpha})_k, \quad \mu_k = z^{\mu}_k, \quad
   \sigma_k = \operatorname{softplus}(z^{\sigma}_k) + \sigma_{\min}, \\
   p(y \mid x) &= \sum_{k=1}^{K} \alpha_k\, \mathcal{N}\left(y;\, \mu_k, \sigma_k^2\right), \\
   -\log p(y \mid x) &= -\operatorname{logsumexp}_k \left[\log \alpha_k - \log \sigma_k
     - \tfrac12 \log 2\pi - \frac{(y - \mu_k)^2}{2 \sigma_k^2}\right]
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`, :math:`y`
     - an input and a scalar target
     - ``x``, ``y``
     - ``(D,)``, scalar
   * - :math:`f_\theta`, :math:`\theta`
     - an MLP with :math:`3K` outputs; its parameters
     - ``apply``, ``params``
     - pytree
   * - :math:`z^{\alpha}`, :math:`z^{\mu}`, :math:`z^{\sigma}`
     - the three blocks of the network's output
     - ``z_alpha``, ``z_mu``, ``z_sigma``
     - ``(K,)`` each
   * - :math:`\alpha_k`, :math:`\mu_k`, :math:`\sigma_k`, :math:`k`, :math:`K`
     - weight, mean and standard deviation of component :math:`k`; the number of components
     - ``log_weights`` (their logarithms), ``means``, ``scales``, ``num_components``
     - ``(K,)``
   * - :math:`\sigma_{\min}`
     - floor on the widths, :math:`10^{-3}`
     - ``MIN_SCALE``
     - scalar
   * - :math:`p(y \mid x)`
     - the predicted density of the target
     - ``log_likelihood`` (its logarithm)
     - scalar

Explanation
-----------

Least squares makes a network predict the conditional *mean* of the target. When an input has
several right answers, the mean lies between them and is itself a wrong answer: a robot arm told to
reach a point that it can reach with the elbow up or down, and trained by least squares, learns to
bend the elbow halfway. Bishop :footcite:p:`bishop1994mixture` let the network output a whole
conditional density instead, a mixture of :math:`K` Gaussians, and trained it by maximum likelihood.
The softmax makes the weights positive and sum to one; the softplus makes the widths positive.

The mixture's negative log-likelihood is computed in log space: the log of each weighted component
is formed first and combined by ``logsumexp``, which subtracts the largest before exponentiating, so
that a target many widths from every component gives a large but finite loss instead of
:math:`\log 0`. The floor :math:`\sigma_{\min}` (a departure from the paper, which uses an
exponential) stops a component from collapsing onto one training point, where the likelihood is
unbounded.

.. admonition:: Intuition

   Asked where a friend will be at noon, you would not answer "halfway between the office and the
   gym"; you would say "70 % at the office, 30 % at the gym". A mixture density network answers the
   second way.

Predictions are densities: their mean and variance follow from the law of total variance, as for
:doc:`deep_ensembles`, but the point of the model is that the mean may be a poor summary. On
Bishop's inverted sine, the tests find all three branches of the target at an input where the data
has three.

Inductive bias
--------------

The network assumes the conditional density is a mixture of at most :math:`K` Gaussians whose
parameters vary smoothly with the input. Too few components merge modes; too many are harmless
(the spare weights go to zero) but the likelihood surface gets more local optima, and the widths
describe the data's noise (aleatoric uncertainty) only: a mixture density network is as sure of
itself far from the data as on it, unless combined with an ensemble or a Bayesian treatment.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.uncertainty.mixture_density import apply, fit, init, log_likelihood, negative_log_likelihood
>>> params = init(jax.random.key(0), (1, 16), num_components=3)
>>> log_weights, means, scales = apply(params, jnp.array([0.5]))
>>> log_weights.shape, round(float(jnp.exp(log_weights).sum()), 4)
((3,), 1.0)

Two equal components at -1 and 1 of width 0.5, and a target at 1:

>>> round(float(log_likelihood(jnp.log(jnp.array([0.5, 0.5])), jnp.array([-1.0, 1.0]), jnp.array([0.5, 0.5]), 1.0)), 4)
-0.9186
>>> float(log_likelihood(jnp.zeros(1), jnp.zeros(1), jnp.ones(1), 1e4)) > -1e9  # far away, finite
True

Trained briefly on two-valued data:

>>> X = jnp.repeat(jnp.linspace(0.0, 1.0, 20), 2)[:, None]
>>> y = jnp.tile(jnp.array([1.0, -1.0]), 20) * X[:, 0]
>>> bool(negative_log_likelihood(params, X, y) > 0)
True
>>> params, losses = fit(params, X, y, steps=300)
>>> bool(losses[-1] < losses[0])
True
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook._memo import cached
from cookbook.foundations.mlp import apply as mlp_apply
from cookbook.foundations.mlp import init as mlp_init
from cookbook.optimization.adam import adam

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"apply": (), "log_likelihood": (), "negative_log_likelihood": (), "fit": ("steps",)}

#: The floor added to every component's standard deviation.
MIN_SCALE = 1e-3


def init(key, sizes, *, num_components):
    """A tanh MLP of widths ``sizes + (3 num_components,)`` (the hidden widths after the input width)."""
    num_components = _checks.size(num_components, "num_components")
    if not isinstance(sizes, (tuple, list)) or len(sizes) < 1:
        raise ValueError(f"sizes must be (D, hidden...), got {sizes!r}")
    return mlp_init(key, tuple(sizes) + (3 * num_components,), activation="tanh")


def _check_params(params):
    """(D, K) of an MLP whose output has 3 K units."""
    if not isinstance(params, (list, tuple)) or not params:
        raise TypeError(f"params must be a non-empty list of {{'W', 'b'}} layers, got {type(params).__name__}")
    for l, layer in enumerate(params):
        _checks.float_array(layer["W"], f"params[{l}]['W']", ndim=2)
        _checks.float_array(layer["b"], f"params[{l}]['b']", ndim=1)
    out = jnp.shape(params[-1]["W"])[1]
    if out % 3:
        raise ValueError(f"params[-1]['W'] must have 3 K outputs (weights, means, widths), got shape "
                         f"{jnp.shape(params[-1]['W'])}")
    return jnp.shape(params[0]["W"])[0], out // 3


def apply(params, x):
    """The mixture at one input ``x`` (D,): log-weights, means and standard deviations, (K,) each."""
    D, _ = _check_params(params)
    x = _checks.same_shape(_checks.float_array(x, "x", ndim=1, what=" (D,)"), "x", (D,),
                           expected_from="D from params[0]['W']")
    return _apply(params, x)


# The public functions check their input, then run these compiled cores: a repeated call with the
# same shapes reuses one compilation instead of dispatching (or, for fit, compiling) afresh.
@jax.jit
def _apply(params, x):
    K = params[-1]["W"].shape[1] // 3
    z = mlp_apply(params, x, activation="tanh")  # (3K,)
    z_alpha, z_mu, z_sigma = z[:K], z[K:2 * K], z[2 * K:]
    log_weights = jax.nn.log_softmax(z_alpha)
    means = z_mu
    scales = jax.nn.softplus(z_sigma) + MIN_SCALE
    return log_weights, means, scales


def log_likelihood(log_weights, means, scales, y):
    """``log p(y)`` of a scalar ``y`` under the mixture ``(log_weights, means, scales)``, (K,) each."""
    log_weights = _checks.float_array(log_weights, "log_weights", ndim=1, what=" (K,)")
    means = _checks.same_shape(_checks.float_array(means, "means", ndim=1), "means", log_weights.shape,
                               expected_from="K from log_weights")
    scales = _checks.same_shape(_checks.float_array(scales, "scales", ndim=1), "scales", log_weights.shape,
                                expected_from="K from log_weights")
    y = _checks.float_array(y, "y", ndim=0, what=" (a scalar)")
    return _log_likelihood(log_weights, means, scales, y)


@jax.jit
def _log_likelihood(log_weights, means, scales, y):
    log_components = (log_weights - jnp.log(scales) - 0.5 * jnp.log(2 * jnp.pi)
                      - 0.5 * ((y - means) / scales) ** 2)  # (K,)
    return jax.nn.logsumexp(log_components)  # the largest is subtracted inside


def _check_data(params, X, y):
    D, _ = _check_params(params)
    X = _checks.float_array(X, "X", ndim=2, what=" (N, D)")
    _checks.same_shape(X, "X", (X.shape[0], D), expected_from="D from params[0]['W']")
    y = _checks.float_array(y, "y", ndim=1, what=" (N,)")
    return X, _checks.same_shape(y, "y", X.shape[:1], expected_from="N from X")


def negative_log_likelihood(params, X, y):
    """Mean ``-log p(y_i | x_i)`` over ``X`` (N, D), ``y`` (N,)."""
    X, y = _check_data(params, X, y)
    return _negative_log_likelihood(params, X, y)


@jax.jit
def _negative_log_likelihood(params, X, y):
    per_example = jax.vmap(lambda x, t: _log_likelihood(*_apply(params, x), t))(X, y)  # (N,)
    return -jnp.mean(per_example)


@cached  # a training run that the tests may share with the build (cookbook/_memo.py)
def fit(params, X, y, *, steps, learning_rate=0.01):
    """Full-batch Adam on :func:`negative_log_likelihood`. Returns the parameters and the loss before
    each step, (steps,)."""
    X, y = _check_data(params, X, y)
    _checks.size(steps, "steps")
    _checks.positive(learning_rate, "learning_rate")
    return _fit(params, X, y, _checks.static_number(learning_rate, "learning_rate"), steps)


# learning_rate is static (a Python float): under jax.jit, fit then only forwards its arrays to this
# core, and the jit check reuses its compilation instead of compiling the training loop again.
@functools.partial(jax.jit, static_argnums=(3, 4))
def _fit(params, X, y, learning_rate, steps):
    optimizer = adam(1.0)  # the step size is applied below

    def step(carry, _):
        params, state = carry
        value, grads = jax.value_and_grad(_negative_log_likelihood)(params, X, y)
        updates, state = optimizer.update(grads, state, params)
        return (jax.tree.map(lambda p, u: p + learning_rate * u, params, updates), state), value

    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), length=steps)
    return params, losses
