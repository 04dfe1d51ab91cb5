r"""Bayes by backprop
=================

Learn a Gaussian for every weight instead of a single value, by gradient descent on a bound on the
evidence: mean-field variational inference for networks, with the local reparameterisation trick to
keep the gradients quiet. The textbook way to make a network Bayesian when sampling is too slow.

Equation
--------

.. math::

   \begin{aligned}
   q(w) &= \prod_j \mathcal{N}\left(w_j;\, \mu_j, \sigma_j^2\right), \qquad
   \sigma_j = \operatorname{softplus}(\rho_j), \qquad p(w) = \prod_j \mathcal{N}(w_j;\, 0, s^2), \\
   \mathcal{L}(\mu, \rho) &= \sum_{i=1}^{N} \mathbb{E}_{q}\left[-\log p(y_i \mid x_i, w)\right]
     + \sum_j \left[\log \frac{s}{\sigma_j} + \frac{\sigma_j^2 + \mu_j^2}{2 s^2} - \frac12\right], \\
   \text{local reparameterisation:}\quad
   b &= a M + \sqrt{(a \odot a) V} \odot \varepsilon, \qquad \varepsilon \sim \mathcal{N}(0, I)
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`w`, :math:`w_j`, :math:`j`
     - all weights and biases; one of them; its index
     - the leaves of ``params``
     - pytree
   * - :math:`q`, :math:`\mu_j`, :math:`\rho_j`, :math:`\sigma_j`
     - the variational posterior; a weight's mean, raw scale, and standard deviation
     - ``"W_mu"``, ``"W_rho"`` (and ``"b_mu"``, ``"b_rho"``), ``sigma``
     - as the weights
   * - :math:`p(w)`, :math:`s`
     - the prior, independent Gaussians; its standard deviation
     - ``prior_std``
     - scalar
   * - :math:`p(y_i \mid x_i, w)`, :math:`x_i`, :math:`y_i`, :math:`N`, :math:`i`
     - Gaussian likelihood of variance ``noise``; the data and its size; an index
     - ``noise``, ``X``, ``y``, ``N``
     - ``(N, D)``, ``(N,)``
   * - :math:`\mathcal{L}`
     - negative evidence lower bound (the loss; the code divides it by :math:`N`)
     - ``negative_elbo``
     - scalar
   * - :math:`a`, :math:`M`, :math:`V`
     - a layer's input; its weights' means and variances
     - ``a``, ``M``, ``V``
     - ``(D_in,)``, ``(D_in, D_out)``
   * - :math:`b`, :math:`\varepsilon`, :math:`I`
     - the sampled pre-activation; standard normal noise; identity
     - ``b``, ``eps``
     - ``(D_out,)``

Explanation
-----------

The posterior over a network's weights has no closed form. Variational inference picks the member
of a simple family closest to it in KL divergence, which is the same as minimising
:math:`\mathcal{L}`: the expected data misfit under :math:`q` plus the KL divergence from the prior
(minus the evidence, a constant). Blundell et al. :footcite:p:`blundell2015weight` take the family
of independent Gaussians, one per weight, and estimate the expectation by sampling weights
:math:`w = \mu + \sigma \varepsilon`, so that gradients flow to :math:`\mu` and :math:`\rho` by
ordinary backpropagation. The softplus keeps :math:`\sigma` positive. With a Gaussian prior the KL
term is in closed form (the code's simplification of the paper's scale-mixture prior).

Sampling one weight matrix per minibatch makes every example in it share the same noise, and the
gradient's variance does not fall with the batch size. Kingma et al.
:footcite:p:`kingma2015variational` noticed that a layer's pre-activation :math:`b = a w` is itself
Gaussian under :math:`q`, with mean :math:`a M` and variance :math:`(a \odot a) V`, and sample it
directly, independently per example: the *local reparameterisation*. Same distribution for each
example, less gradient noise for the batch (both checked by the tests), and fewer random numbers.

For a linear model and Gaussian noise the optimal mean-field Gaussian is known exactly: its means
are the posterior's and each variance is the inverse of the corresponding diagonal entry of the
posterior precision, smaller than the true marginal variance whenever the weights are correlated.
Mean-field VI under-estimates uncertainty; the tests train on such a model and find both.

.. admonition:: Intuition

   Instead of a committee of fixed experts, one expert whose every opinion comes with error bars,
   who pays a fee (the KL term) for each opinion held more precisely than the prior allows. Only
   opinions that the data pays for become sharp.

Inductive bias
--------------

The factorised Gaussian assumes that the weights are independent a posteriori: it cannot represent
correlations, so it under-estimates the uncertainty along correlated directions, and the KL term
pushes unneeded weights back to the prior, which can under-fit with large networks. Between two
clusters of data the mean-field posterior of a network often stays as sure as on the data
:footcite:p:`foong2019between`. It doubles the parameters and needs several samples per prediction.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.uncertainty.bayes_by_backprop import apply, fit, init, kl_divergence, negative_elbo, predict
>>> params = init(jax.random.key(0), (1, 8, 1))
>>> sorted(params[0])
['W_mu', 'W_rho', 'b_mu', 'b_rho']
>>> x = jnp.array([0.5])
>>> a, b = apply(params, x, jax.random.key(1)), apply(params, x, jax.random.key(2))
>>> bool(a[0] != b[0]), apply(params, x, None).shape  # sampled passes differ; None uses the means
(True, (1,))
>>> q = [{"W_mu": jnp.zeros((1, 1)), "W_rho": jnp.full((1, 1), 0.5413), "b_mu": jnp.zeros(1), "b_rho": jnp.full(1, 0.5413)}]
>>> round(float(kl_divergence(q, prior_std=1.0)), 4)  # softplus(0.5413) = 1: q is the prior
0.0

Trained on a line:

>>> X = jnp.linspace(-1.0, 1.0, 11)[:, None]
>>> y = 2 * X[:, 0]
>>> float(negative_elbo(params, X, y, jax.random.key(3), noise=0.01, prior_std=1.0)) > 0
True
>>> params, losses = fit(params, X, y, jax.random.key(4), noise=0.01, prior_std=1.0, steps=500)
>>> mean, variance = predict(params, x, jax.random.key(5), num_samples=100, noise=0.01)
>>> round(float(mean), 1), bool(losses[-1] < losses[0])
(1.0, True)
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook._memo import cached
from cookbook.optimization.adam import adam

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"apply": ("local",), "kl_divergence": (), "negative_elbo": ("local",), "predict": ("num_samples",),
       "fit": ("steps",)}

_KEYS = ("W_mu", "W_rho", "b_mu", "b_rho")


def init(key, sizes, *, init_std=0.01):
    """Variational parameters for a ReLU MLP of widths ``sizes``: per layer, ``W_mu`` from He
    initialisation, ``b_mu`` zero, and ``W_rho``, ``b_rho`` such that every ``sigma`` is ``init_std``."""
    if not isinstance(sizes, (tuple, list)) or len(sizes) < 2:
        raise ValueError(f"sizes must be (in, hidden..., out), got {sizes!r}")
    sizes = [_checks.size(n, f"sizes[{l}]") for l, n in enumerate(sizes)]
    _checks.positive(init_std, "init_std")
    rho = float(jnp.log(jnp.expm1(init_std)))  # the inverse of softplus
    params = []
    for k, n_in, n_out in zip(jax.random.split(key, len(sizes) - 1), sizes[:-1], sizes[1:]):
        params.append({"W_mu": jax.random.normal(k, (n_in, n_out)) * jnp.sqrt(2.0 / n_in),
                       "W_rho": jnp.full((n_in, n_out), rho), "b_mu": jnp.zeros(n_out), "b_rho": jnp.full(n_out, rho)})
    return params


def _check_params(params):
    """The input width D of a list of layers holding float ``W_mu``, ``W_rho``, ``b_mu``, ``b_rho``."""
    if not isinstance(params, (list, tuple)) or not params:
        raise TypeError(f"params must be a non-empty list of layers, got {type(params).__name__}")
    width = None
    for l, layer in enumerate(params):
        if not isinstance(layer, dict) or sorted(layer) != sorted(_KEYS):
            raise ValueError(f"params[{l}] must be a dict with keys {_KEYS}, got {layer!r}"[:200])
        M = _checks.float_array(layer["W_mu"], f"params[{l}]['W_mu']", ndim=2)
        if width is not None:
            _checks.same_shape(M, f"params[{l}]['W_mu']", (width, M.shape[1]), expected_from="to chain")
        _checks.same_shape(_checks.float_array(layer["W_rho"], f"params[{l}]['W_rho']"), f"params[{l}]['W_rho']", M.shape)
        for name in ("b_mu", "b_rho"):
            _checks.same_shape(_checks.float_array(layer[name], f"params[{l}]['{name}']"), f"params[{l}]['{name}']",
                               M.shape[1:])
        width = M.shape[1]
    return params[0]["W_mu"].shape[0]


def _forward(params, x, key, local):
    keys = [None] * len(params) if key is None else jax.random.split(key, 2 * len(params))
    a = x
    for l, layer in enumerate(params):
        M, V = layer["W_mu"], jax.nn.softplus(layer["W_rho"]) ** 2
        b_mean, b_var = layer["b_mu"], jax.nn.softplus(layer["b_rho"]) ** 2
        if key is None:
            b = a @ M + b_mean  # the posterior means
        elif local:
            eps = jax.random.normal(keys[2 * l], b_mean.shape, a.dtype)
            b = a @ M + b_mean + jnp.sqrt((a * a) @ V + b_var) * eps  # the pre-activation's own Gaussian
        else:
            W = M + jnp.sqrt(V) * jax.random.normal(keys[2 * l], M.shape, a.dtype)
            bias = b_mean + jnp.sqrt(b_var) * jax.random.normal(keys[2 * l + 1], b_mean.shape, a.dtype)
            b = a @ W + bias
        a = jax.nn.relu(b) if l < len(params) - 1 else b
    return a


_forward_jit = jax.jit(_forward, static_argnums=3)  # the public functions check, then run compiled code


def apply(params, x, key, *, local=True):
    """One pass for one input ``x`` (D,) with weights drawn from ``q`` (by sampling pre-activations when
    ``local``, whole weight matrices otherwise); ``key=None`` uses the means. Shape (sizes[-1],)."""
    D = _check_params(params)
    if not isinstance(local, bool):
        raise TypeError(f"local must be True or False, got {local!r}")
    x = _checks.same_shape(_checks.float_array(x, "x", ndim=1, what=" (D,)"), "x", (D,),
                           expected_from="D from params[0]['W_mu']")
    return _forward_jit(params, x, key, local)


def kl_divergence(params, *, prior_std):
    """``KL(q || p)`` between the factorised Gaussian ``params`` and the prior ``N(0, prior_std^2)`` per weight."""
    _check_params(params)
    _checks.positive(prior_std, "prior_std")
    return _kl(params, prior_std)


@jax.jit
def _kl(params, prior_std):
    total = 0.0
    for layer in params:
        for mu, rho in ((layer["W_mu"], layer["W_rho"]), (layer["b_mu"], layer["b_rho"])):
            sigma = jax.nn.softplus(rho)
            total = total + jnp.sum(jnp.log(prior_std / sigma) + (sigma**2 + mu**2) / (2 * prior_std**2) - 0.5)
    return total


def _check_data(params, X, y, noise):
    D = _check_params(params)
    X = _checks.float_array(X, "X", ndim=2, what=" (N, D)")
    _checks.same_shape(X, "X", (X.shape[0], D), expected_from="D from params[0]['W_mu']")
    y = _checks.same_shape(_checks.float_array(y, "y", ndim=1, what=" (N,)"), "y", X.shape[:1], expected_from="N from X")
    _checks.positive(noise, "noise")
    return X, y


def negative_elbo(params, X, y, key, *, noise, prior_std, local=True):
    """``L / N`` for a one-output network on ``X`` (N, D), ``y`` (N,) with Gaussian noise of variance
    ``noise``: one sample of the weights (or of each example's pre-activations) per example."""
    X, y = _check_data(params, X, y, noise)
    _checks.positive(prior_std, "prior_std")
    return _negative_elbo(params, X, y, key, noise, prior_std, local)


@functools.partial(jax.jit, static_argnums=6)
def _negative_elbo(params, X, y, key, noise, prior_std, local):
    N = X.shape[0]
    if local:  # independent pre-activations per example
        pred = jax.vmap(lambda x, k: _forward(params, x, k, True)[0])(X, jax.random.split(key, N))
    else:  # one weight sample shared by the batch, as in the original paper
        pred = jax.vmap(lambda x: _forward(params, x, key, False)[0])(X)
    nll = jnp.sum((y - pred) ** 2 / (2 * noise) + 0.5 * jnp.log(2 * jnp.pi * noise))
    return (nll + _kl(params, prior_std)) / N


def predict(params, x, key, *, num_samples, noise):
    """Monte Carlo mean and variance (two scalars) of a one-output network at ``x`` (D,); the variance
    adds the observation ``noise``."""
    D = _check_params(params)
    x = _checks.same_shape(_checks.float_array(x, "x", ndim=1, what=" (D,)"), "x", (D,),
                           expected_from="D from params[0]['W_mu']")
    num_samples = _checks.size(num_samples, "num_samples", minimum=2)
    _checks.positive(noise, "noise", allow_zero=True)
    return _predict(params, x, key, noise, num_samples)


@functools.partial(jax.jit, static_argnums=4)
def _predict(params, x, key, noise, num_samples):
    samples = jax.vmap(lambda k: _forward(params, x, k, True)[0])(jax.random.split(key, num_samples))
    mean = jnp.mean(samples)
    return mean, noise + jnp.mean((samples - mean) ** 2)


@cached  # a training run that the tests may share with the build (cookbook/_memo.py)
def fit(params, X, y, key, *, noise, prior_std, steps, learning_rate=0.01):
    """Full-batch Adam on :func:`negative_elbo` with the local reparameterisation, a fresh key per step.
    Returns the parameters and the loss before each step, (steps,)."""
    _checks.size(steps, "steps")
    _checks.positive(learning_rate, "learning_rate")
    X, y = _check_data(params, X, y, noise)
    _checks.positive(prior_std, "prior_std")
    return _fit(params, X, y, key, noise, prior_std, learning_rate=_checks.static_number(learning_rate, "learning_rate"),
                steps=steps)


# One compilation per shape and step size, whatever the data. The step size is static so that fit,
# traced under jax.jit with its default, passes its inputs straight to this core.
@functools.partial(jax.jit, static_argnames=("learning_rate", "steps"))
def _fit(params, X, y, key, noise, prior_std, *, learning_rate, steps):
    optimizer = adam(1.0)  # the step size is applied below

    def step(carry, key):
        params, state = carry
        value, grads = jax.value_and_grad(_negative_elbo)(params, X, y, key, noise, prior_std, True)
        updates, state = optimizer.update(grads, state, params)
        return (jax.tree.map(lambda p, u: p + learning_rate * u, params, updates), state), value

    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), jax.random.split(key, steps))
    return params, losses
