r"""Variational autoencoder
=======================

A latent-variable model trained by maximising a lower bound on the log-likelihood, with an encoder
that guesses each example's latent code: the model to reach for when you want both samples and a
smooth, low-dimensional code for the data.

Equation
--------

.. math::

   \begin{aligned}
   \log p_\theta(x) &\ge \mathcal{L}(x)
     = \mathbb{E}_{q_\phi(z \mid x)}\!\left[\log p_\theta(x \mid z)\right]
       - \operatorname{KL}\!\left(q_\phi(z \mid x) \,\|\, p(z)\right), \\
   z &= \mu_\phi(x) + \sigma_\phi(x) \odot \varepsilon,
     \qquad \varepsilon \sim \mathcal{N}(0, I), \\
   \operatorname{KL} &= \tfrac{1}{2} \sum_{j=1}^{Z}
     \left(\sigma_j^2 + \mu_j^2 - 1 - \log \sigma_j^2\right)
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`
     - one example (a binarised 8 by 8 digit, flattened)
     - ``x``
     - ``(D,)``
   * - :math:`z`
     - its latent code
     - ``z``
     - ``(Z,)``
   * - :math:`p(z)`
     - the prior, a standard Gaussian
     - built into ``gaussian_kl``
     - over ``(Z,)``
   * - :math:`p_\theta(x \mid z)`
     - the decoder: independent Bernoulli pixels with logits from an MLP
     - ``decode``
     - ``(Z,)`` to ``(D,)``
   * - :math:`q_\phi(z \mid x)`
     - the encoder: a Gaussian with diagonal covariance
     - ``encode``
     - ``(D,)`` to ``(Z,)``, ``(Z,)``
   * - :math:`\theta`, :math:`\phi`
     - decoder and encoder weights
     - ``params``
     - dict of arrays
   * - :math:`\mu`, :math:`\sigma^2`
     - mean and variance of :math:`q_\phi(z \mid x)`; the code keeps :math:`\log \sigma^2`
     - ``mu``, ``log_var``
     - ``(Z,)``
   * - :math:`I`
     - the identity matrix, :math:`Z` by :math:`Z`
     - implied by ``jax.random.normal``
     - ``(Z, Z)``
   * - :math:`\varepsilon`
     - standard Gaussian noise
     - ``eps``
     - ``(Z,)``
   * - :math:`\mathcal{L}`
     - the evidence lower bound (ELBO)
     - ``elbo``
     - scalar
   * - :math:`j`, :math:`Z`
     - latent coordinate and the number of them
     - last axis of ``mu``, ``Z``
     - scalar

Explanation
-----------

A model with latent variables, :math:`p_\theta(x) = \int p_\theta(x \mid z)\, p(z)\, dz`, is easy to
sample (draw :math:`z`, decode it) but its likelihood is an integral that no one can compute for a
neural decoder. :footcite:t:`kingma2014auto` and :footcite:t:`rezende2014stochastic` train it with
a bound instead. For any distribution :math:`q(z \mid x)`, :math:`\log p_\theta(x) = \mathcal{L}(x)
+ \operatorname{KL}(q \,\|\, p_\theta(z \mid x))`, and a KL divergence is never negative, so
:math:`\mathcal{L}` is a lower bound that is tight exactly when :math:`q` is the true posterior.
An *encoder* network outputs :math:`q_\phi(z \mid x)` for every :math:`x` at once (amortised
inference), and encoder and decoder are trained together by ascending :math:`\mathcal{L}`: the
decoder to explain the data, the encoder to close the gap.

The first term, the reconstruction, is an expectation over :math:`q_\phi`, which depends on
:math:`\phi`. The *reparameterisation trick* writes the sample as a deterministic, differentiable
function of :math:`\phi` and of noise that does not depend on it (the second line), so the gradient
goes inside the expectation and one sample of :math:`\varepsilon` gives an unbiased gradient of low
variance. The older score-function (REINFORCE) estimator, :math:`\mathbb{E}_q[f(z)\,\nabla_\phi
\log q_\phi(z)]`, has the same expectation but far more variance; the tests compare the two. The
second term has a closed form for two Gaussians (the third line, ``gaussian_kl``), so it needs no
sampling at all.

.. admonition:: Intuition

   The encoder is a translator who writes a short, slightly vague summary of each picture; the
   decoder paints the picture back from it. The KL term is a rule that every summary must read like
   a random one drawn from the prior, so that a summary made up from scratch also paints a plausible
   picture. The noise in :math:`z` stops the translator from hiding the whole picture in the ninth
   decimal place.

*Numerical traps.* The encoder outputs :math:`\log\sigma^2`, not :math:`\sigma`, so the variance is
positive without a constraint and :math:`\log\sigma^2` in the KL is exact. The Bernoulli
log-likelihood is computed from logits, :math:`x\ell - \operatorname{softplus}(\ell)`, never from
probabilities. Where the code departs from the equation: ``elbo`` estimates the expectation with one
sample, as in training, and averaging such estimates gives :math:`\mathcal{L}` itself.

**β-VAE.** Weighting the KL term by :math:`\beta > 1` :footcite:p:`higgins2017beta` gives up
likelihood to press the code towards the factorised prior, which tends to give latent axes that each
change one factor of the data; :math:`\beta = 1` is the bound itself.

Inductive bias
--------------

A VAE assumes that the data lie near a low-dimensional set that one smooth decoder maps a Gaussian
onto, and that the pixels are independent given the code. The first gives a code where nearby
points decode to similar images; the second is why samples look blurry: whatever the code cannot
say, each pixel must guess on its own, and the best guess is an average.

Example
-------

A VAE with 5 latent dimensions on 8 by 8 digits; the bound of a data point, and the KL of a code:

>>> import jax, jax.numpy as jnp
>>> from cookbook.generative.vae import init, elbo, gaussian_kl, reparameterise
>>> params = init(jax.random.key(0), D=64, H=16, Z=5)
>>> x = (jax.random.uniform(jax.random.key(1), (64,)) < 0.3).astype(jnp.float32)
>>> bound = elbo(params, jax.random.key(2), x)
>>> bool(bound < 0.0), bound.shape
(True, ())
>>> float(gaussian_kl(jnp.zeros(5), jnp.zeros(5)))  # q equal to the prior
0.0
>>> round(float(gaussian_kl(jnp.ones(2), jnp.zeros(2))), 3)  # one half of |mu|^2
1.0
>>> reparameterise(jax.random.key(3), jnp.zeros(5), jnp.zeros(5)).shape
(5,)

Implementation notes
--------------------

``fit`` trains with Adam :footcite:p:`kingma2015adam` on minibatches drawn inside one
:func:`jax.lax.scan`. On scikit-learn's digits binarised at half intensity (1500 for training, the
other 297 held out), 300 steps of 32 images with 16 hidden units and 5 latent dimensions raise the
held-out ELBO from about -48 nats per image (untrained, below -45) to about -21 (above -23); the
tests assert both bounds. Write
for one example and batch with :func:`jax.vmap`, as ``fit`` does.
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook._memo import cached

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"gaussian_kl": (), "reparameterise": (), "elbo": ()}

_SHAPES = {  # name: shape in terms of D, H, Z
    "enc_W": ("D", "H"), "enc_b": ("H",), "mu_W": ("H", "Z"), "mu_b": ("Z",),
    "lv_W": ("H", "Z"), "lv_b": ("Z",), "dec_W": ("Z", "H"), "dec_b": ("H",),
    "out_W": ("H", "D"), "out_b": ("D",),
}


def init(key, *, D, H, Z, dtype=jnp.float32):
    """Encoder and decoder weights (one hidden ``tanh`` layer of ``H`` units each) for ``D`` pixels
    and ``Z`` latent dimensions; weights are Gaussian with variance ``1 / fan_in``, biases zero."""
    sizes = (_checks.size(D, "D"), _checks.size(H, "H"), _checks.size(Z, "Z"))
    return _init(key, *sizes, jnp.dtype(dtype))


# The public functions check their input, then run compiled cores like this one: a repeated call
# with the same shapes (the tests', the bad-input replay's) reuses one compilation instead of
# dispatching op by op.
@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _init(key, D, H, Z, dtype):
    sizes = {"D": D, "H": H, "Z": Z}
    keys = dict(zip(_SHAPES, jax.random.split(key, len(_SHAPES))))
    params = {}
    for name, shape in _SHAPES.items():
        shape = tuple(sizes[s] for s in shape)
        if name.endswith("_b"):
            params[name] = jnp.zeros(shape, dtype)
        else:
            params[name] = jax.random.normal(keys[name], shape, dtype) / jnp.sqrt(shape[0]).astype(dtype)
    return params


def _sizes(params):
    """``(D, H, Z)``, after checking that ``params`` has the shapes that ``init`` gives it."""
    if not isinstance(params, dict) or set(params) != set(_SHAPES):
        raise TypeError(f"params must be the dict that init returns, with keys {sorted(_SHAPES)}")
    enc = _checks.float_array(params["enc_W"], "params['enc_W']", ndim=2, what=" (D, H)")
    mu = _checks.float_array(params["mu_W"], "params['mu_W']", ndim=2, what=" (H, Z)")
    sizes = {"D": enc.shape[0], "H": enc.shape[1], "Z": mu.shape[1]}
    for name, shape in _SHAPES.items():
        where = f"params['{name}']"
        _checks.same_shape(_checks.float_array(params[name], where), where,
                           tuple(sizes[s] for s in shape), expected_from="init(key, D=D, H=H, Z=Z)")
    return sizes["D"], sizes["H"], sizes["Z"]


def gaussian_kl(mu, log_var):
    """KL(N(mu, diag exp(log_var)) || N(0, I)), summed over the last axis (any leading axes)."""
    mu = _checks.float_array(mu, "mu", min_ndim=1)
    log_var = _checks.float_array(log_var, "log_var", min_ndim=1)
    _checks.same_shape(log_var, "log_var", mu.shape, expected_from="the shape of mu")
    return _gaussian_kl(mu, log_var)


@jax.jit
def _gaussian_kl(mu, log_var):
    return 0.5 * jnp.sum(jnp.exp(log_var) + mu**2 - 1.0 - log_var, axis=-1)


def reparameterise(key, mu, log_var):
    """A sample ``z = mu + sigma * eps`` of N(mu, diag exp(log_var)), differentiable in both."""
    mu = _checks.float_array(mu, "mu", min_ndim=1)
    log_var = _checks.float_array(log_var, "log_var", min_ndim=1)
    _checks.same_shape(log_var, "log_var", mu.shape, expected_from="the shape of mu")
    return _reparameterise(key, mu, log_var)


@jax.jit
def _reparameterise(key, mu, log_var):
    eps = jax.random.normal(key, mu.shape, mu.dtype)
    return mu + jnp.exp(0.5 * log_var) * eps


def encode(params, x):
    """Mean and log-variance, each (Z,), of q(z | x) for one example ``x`` (D,)."""
    h = jnp.tanh(x @ params["enc_W"] + params["enc_b"])  # (H,)
    return h @ params["mu_W"] + params["mu_b"], h @ params["lv_W"] + params["lv_b"]


def decode(params, z):
    """Bernoulli logits (D,) of p(x | z) for one code ``z`` (Z,)."""
    h = jnp.tanh(z @ params["dec_W"] + params["dec_b"])  # (H,)
    return h @ params["out_W"] + params["out_b"]


def elbo(params, key, x, *, beta=1.0):
    """A one-sample estimate of the ELBO of one example ``x`` (D,) with pixels in [0, 1]; with
    ``beta`` other than 1, the beta-VAE objective (the KL weighted by ``beta``)."""
    D, _, _ = _sizes(params)
    x = _checks.float_array(x, "x", ndim=1, what=" (D,)")
    _checks.same_shape(x, "x", (D,), expected_from="D of params")
    _checks.positive(beta, "beta", allow_zero=True)
    return _elbo(params, key, x, beta)


@jax.jit
def _elbo(params, key, x, beta):
    mu, log_var = encode(params, x)
    z = _reparameterise(key, mu, log_var)
    logits = decode(params, z)  # (D,)
    log_lik = jnp.sum(x * logits - jax.nn.softplus(logits))  # Bernoulli, from logits
    return log_lik - beta * _gaussian_kl(mu, log_var)


def mean_elbo(params, key, X, *, beta=1.0):
    """The ELBO averaged over the rows of ``X`` (N, D), one noise sample per row."""
    X = _checks.float_array(X, "X", ndim=2, what=" (N, D)")
    keys = jax.random.split(key, X.shape[0])
    return jnp.mean(jax.vmap(lambda k, x: elbo(params, k, x, beta=beta))(keys, X))


@cached  # the figure and the tests share this run when the book is built (cookbook/_memo.py)
def fit(params, key, X, *, steps, batch, learning_rate=1e-2, beta=1.0):
    """Adam on minus ``mean_elbo`` over random minibatches of ``batch`` rows of ``X`` (N, D).

    Returns the trained parameters and the minibatch ELBO before each step, shape (steps,).
    """
    D, _, _ = _sizes(params)
    X = _checks.float_array(X, "X", ndim=2, what=" (N, D)")
    _checks.same_shape(X, "X", (X.shape[0], D), expected_from="D of params")
    steps, batch = _checks.size(steps, "steps"), _checks.size(batch, "batch")
    _checks.positive(learning_rate, "learning_rate")
    return _train(params, key, X, steps, batch, learning_rate, beta)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _train(params, key, X, steps, batch, learning_rate, beta):
    b1, b2, tiny = 0.9, 0.999, 1e-8
    zeros = jax.tree.map(jnp.zeros_like, params)

    def step(carry, inputs):
        params, m, v = carry
        t, k = inputs
        k_rows, k_eps = jax.random.split(k)
        rows = jax.random.randint(k_rows, (batch,), 0, X.shape[0])
        value, grads = jax.value_and_grad(mean_elbo)(params, k_eps, X[rows], beta=beta)
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
        scale = learning_rate * jnp.sqrt(1 - b2**t) / (1 - b1**t)
        params = jax.tree.map(lambda p, m, v: p + scale * m / (jnp.sqrt(v) + tiny), params, m, v)  # ascent
        return (params, m, v), value

    inputs = (jnp.arange(1, steps + 1, dtype=jnp.float32), jax.random.split(key, steps))
    (params, _, _), values = jax.lax.scan(step, (params, zeros, zeros), inputs)
    return params, values
