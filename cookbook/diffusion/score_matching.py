r"""Score matching
==============

Learn the gradient of the log-density of noisy data, the score, by asking a network to point from a
noisy sample back towards the clean one, and generate by following the score with Langevin steps
or by integrating the probability-flow ODE: the continuous-time view that unifies DDPM, its
deterministic samplers and flow models.

Equation
--------

.. math::

   L(\theta) = \mathbb{E}_{x, \sigma, \varepsilon}\,
   \big\lVert \sigma\, s_\theta(x + \sigma \varepsilon, \sigma) + \varepsilon \big\rVert^2,
   \qquad s_\theta(\tilde x, \sigma) \approx \nabla_{\tilde x} \log p_\sigma(\tilde x)

   \tilde x \leftarrow \tilde x + \frac{\alpha}{2}\, s_\theta(\tilde x, \sigma) + \sqrt{\alpha}\, z

   \mathrm{d}x = f(x, t)\, \mathrm{d}t + g(t)\, \mathrm{d}w, \qquad
   \frac{\mathrm{d}x}{\mathrm{d}t} = f(x, t) - \tfrac{1}{2}\, g(t)^2\, \nabla_x \log p_t(x)

   \text{VP: } f = -\tfrac{1}{2} \beta(t)\, x,\ g = \sqrt{\beta(t)}, \qquad
   \text{VE: } f = 0,\ g = \sqrt{\mathrm{d}[\sigma(t)^2] / \mathrm{d}t}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`, :math:`\tilde x`
     - a data point; a noisy point
     - ``x``; ``x_noisy``
     - ``(D,)``, batched ``(B, D)``
   * - :math:`\sigma`
     - the noise level (a standard deviation)
     - ``sigma``, drawn from ``sigmas``
     - scalar
   * - :math:`\varepsilon`, :math:`z`, :math:`w`
     - standard normal noise; the noise of a Langevin step; a Brownian motion
     - ``noise``
     - ``(D,)``
   * - :math:`p_\sigma`, :math:`p_t`
     - the data's density blurred by noise of level :math:`\sigma`, or diffused to time :math:`t`
     - ``mixture_score`` computes its score for a Gaussian mixture
     - a density
   * - :math:`s_\theta`, :math:`\theta`
     - the score network; its parameters (the network of :doc:`ddpm`, output divided by
       :math:`\sigma`)
     - ``score``; ``params``
     - ``(D,)``; a list of layers
   * - :math:`L`
     - the denoising score-matching loss, weighted by :math:`\sigma^2`
     - ``dsm_loss``
     - scalar
   * - :math:`\alpha`
     - the Langevin step size
     - ``step_size``
     - scalar
   * - :math:`t`, :math:`f`, :math:`g`
     - the time of the SDE, 0 at the data; its drift; its diffusion coefficient
     - ``t``; ``f``; ``g``
     - scalar; ``(D,)``; scalar
   * - :math:`\beta(t)`
     - the VP noise rate, linear from ``beta_min`` to ``beta_max``
     - ``beta``
     - scalar
   * - :math:`\sigma(t)`
     - the VE noise level, geometric from ``sigma_min`` to ``sigma_max``
     - ``ve_std``
     - scalar

Explanation
-----------

The score :math:`\nabla_x \log p(x)` points uphill on the data density and does not need the
density's normaliser, which is what makes densities hard to learn. It cannot be regressed on
directly, since it is unknown; but the score of the *noisy* data given the clean point is known,
:math:`-\varepsilon / \sigma`, and :footcite:t:`vincent2011connection` showed that regressing on
that target has the same minimiser as regressing on the unknown score of :math:`p_\sigma`. That is
the loss :math:`L`, weighted by :math:`\sigma^2` so that every noise level counts alike; it is the
noise-prediction loss of :doc:`ddpm` with :math:`\varepsilon_\theta = -\sigma s_\theta`.

With a score, Langevin dynamics samples: a step up the score plus noise of the matching size leaves
:math:`p` unchanged, and many steps from anywhere converge to it. In low-density regions the score
is poorly learned and the chain mixes slowly between modes, so :footcite:t:`song2019generative`
anneal: run Langevin at a large :math:`\sigma`, where the blurred modes overlap, then at smaller
ones.

:footcite:t:`song2021score` take the noise levels to a continuum. Data diffused by an SDE has a
reverse-time SDE, and an ODE with the same marginals at every time, the *probability flow*, whose
drift needs only the score. The variance-preserving (VP) SDE is the limit of DDPM, the
variance-exploding (VE) one that of noise levels added without shrinking; both have Gaussian
kernels in closed form (``vp_marginal``, ``ve_std``). DDIM with :math:`\eta = 0` is a
discretisation of the VP probability flow.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.diffusion.score_matching import example_mixture, mixture_score, score, trained_mixture_score

   means, stds, weights = example_mixture()
   params, _ = trained_mixture_score()
   g = jnp.linspace(-3.5, 3.5, 15)
   grid = jnp.stack(jnp.meshgrid(g, g), axis=-1).reshape(-1, 2)
   sigma = jnp.float32(0.3)
   blurred = jnp.sqrt(stds**2 + sigma**2)
   exact = jax.vmap(mixture_score, in_axes=(0, None, None, None))(grid, means, blurred, weights)
   learned = jax.vmap(score, in_axes=(None, 0, None))(params, grid, sigma)
   fig, axes = plt.subplots(1, 2, figsize=(8, 3.8), sharey=True)
   for ax, field, title in zip(axes, (exact, learned), ("exact score of the blurred mixture", "learned by denoising")):
       length = jnp.linalg.norm(field, axis=-1, keepdims=True)
       unit = field / jnp.maximum(length, 1e-6)
       ax.quiver(grid[:, 0], grid[:, 1], unit[:, 0], unit[:, 1], jnp.log1p(length[:, 0]), cmap="viridis")
       ax.plot(means[:, 0], means[:, 1], "r+", ms=12)
       ax.set(title=f"{title}, σ = 0.3", aspect="equal")
   fig.tight_layout()

Arrows show the direction of the score (colour: its size, large far from the modes, marked +) of
the three-component mixture of the tests, exact on the left and learned from samples on the right.

.. admonition:: Intuition

   Hikers lost in fog on a mountain range all carry an altimeter and nothing else: they know which
   way is up, not where the peaks are. Step uphill, stumble a little at random, and the group
   spreads over the mountains in proportion to their bulk. Starting in thick fog (large noise) the
   ranges look like one smooth hill, and each hiker heads for the right range before the fog lifts.

Inductive bias
--------------

The loss assumes only that the data density is smooth enough once blurred; the network's
conditioning on :math:`\sigma` (here through its time features) lets one network serve every noise
level. Learning a gradient field without the constraint that it be a gradient is a choice: the
network's field need not be conservative, and in practice this costs nothing.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.diffusion.score_matching import (dsm_loss, langevin_step, mixture_sample,
...     mixture_score, score, train, vp_marginal, ve_std, vp_probability_flow)
>>> means, stds, weights = jnp.array([[-2.0, 0.0], [2.0, 0.0]]), jnp.array([0.5, 0.5]), jnp.array([0.5, 0.5])
>>> mixture_score(jnp.array([2.5, 0.0]), means, stds, weights)  # back towards the right mode
Array([-2.,  0.], dtype=float32)
>>> x = jnp.array([2.5, 0.0])
>>> langevin_step(x, mixture_score(x, means, stds, weights), 0.01, jnp.zeros(2))
Array([2.49, 0.  ], dtype=float32)
>>> vp_marginal(jnp.float32(1.0))  # at t = 1 the data is gone: mean 0, standard deviation 1
(Array(0.0066, dtype=float32), Array(1., dtype=float32))
>>> float(ve_std(jnp.float32(1.0)))  # VE: noise of the largest level, 50, on top of the data
50.0
>>> vp_probability_flow(x, jnp.float32(0.5), mixture_score(x, means, stds, weights)).shape
(2,)
>>> data = mixture_sample(jax.random.key(0), 256, means, stds, weights)
>>> from cookbook.diffusion.ddpm import denoiser_init
>>> params = denoiser_init(jax.random.key(1), 2)
>>> sigmas = jnp.geomspace(0.05, 3.0, 10)
>>> round(float(dsm_loss(params, data, jax.random.key(2), sigmas)), 1)
1.2
>>> trained, losses = train(params, data, jax.random.key(3), sigmas=sigmas, steps=300)
>>> bool(losses[-100:].mean() < losses[:100].mean())  # the loss has a floor above 0, as for flow matching
True
>>> score(trained, x, jnp.float32(0.5)).shape
(2,)

Implementation notes
--------------------

**The test.** A Gaussian mixture blurred by Gaussian noise is a Gaussian mixture with wider
components, so its score is known exactly at every noise level (``mixture_score``). The tests check
that score against finite differences of the log-density in float64; that Langevin steps, and the
probability-flow ODE integrated backwards from the VP prior, both with that exact score, reach the
mixture; and that a network trained with :math:`L` on samples of the mixture (``trained_mixture_score``,
4000 Adam steps) recovers the exact score of :math:`p_\sigma`: its mean squared error is below 3%
of the mean squared score at levels 0.1, 0.3, 1 and 3 (measured 1.6%, 1.7%, 1.3% and 0.2%).

**Conventions.** Noise levels are drawn uniformly from a list ``sigmas`` of at least two
(noise-conditional score networks); the SDE time ``t`` runs from 0 at the data to 1, with ``beta_min = 0.1``,
``beta_max = 20``, ``sigma_min = 0.01`` and ``sigma_max = 50`` as in :footcite:t:`song2021score`.
The score network is the network of :doc:`ddpm` fed :math:`\log \sigma / 4` as its time, with its
output divided by :math:`\sigma` so that its size at small :math:`\sigma` need not be learned.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks
from cookbook._memo import cached
from cookbook.diffusion.ddpm import _check_data, _check_params, _fit, _net, _rows, denoiser_init
from cookbook.optimization.adam import adam

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "mixture_score": (),
    "mixture_sample": ("num_points",),
    "langevin_step": (),
    "vp_marginal": (),
    "ve_std": (),
    "vp_probability_flow": (),
    "dsm_loss": (),
    "train": ("steps", "batch_size", "learning_rate"),
    "score": (),
}


def _mixture(means, stds, weights):
    means = _checks.float_array(means, "means", ndim=2, what=" (K, D)")
    K = means.shape[0]
    stds = _checks.same_shape(_checks.float_array(stds, "stds"), "stds", (K,), expected_from="one per row of means")
    weights = _checks.same_shape(_checks.float_array(weights, "weights"), "weights", (K,),
                                 expected_from="one per row of means")
    if _checks.is_concrete(weights):  # under jit a NaN or negative weight is traced, and not checked
        _checks.check_no_nan(weights, "weights")
        w = np.asarray(weights, np.float64)
        if w.min() < 0 or abs(w.sum() - 1.0) > 1e-3:
            raise ValueError(f"weights must be non-negative and sum to 1, got {w}")
    return means, stds, weights


def mixture_score(x, means, stds, weights):
    """The exact score :math:`\\nabla_x \\log p(x)` at one point ``x`` (D,) of a mixture of isotropic
    Gaussians with ``means`` (K, D), standard deviations ``stds`` (K,) and ``weights`` (K,) summing to 1.

    The posterior weight of each component is a softmax of its log-density (stable far from every
    mean); the score is their average of :math:`(\\mu_k - x) / s_k^2`.
    """
    means, stds, weights = _mixture(means, stds, weights)
    D = means.shape[1]
    x = _checks.same_shape(_checks.float_array(x, "x"), "x", (D,), expected_from="the dimension of means")
    return _mixture_score(x, means, stds, weights)


@jax.jit  # the public functions check, then run compiled code
def _mixture_score(x, means, stds, weights):
    D = means.shape[1]
    diff = means - x[None, :]  # (K, D)
    log_density = jnp.log(weights) - D * jnp.log(stds) - 0.5 * jnp.sum(diff**2, axis=-1) / stds**2  # (K,)
    responsibility = jax.nn.softmax(log_density)
    return jnp.sum((responsibility / stds**2)[:, None] * diff, axis=0)


def mixture_sample(key, num_points, means, stds, weights):
    """``num_points`` points (num_points, D) drawn from the mixture."""
    num_points = _checks.size(num_points, "num_points")
    means, stds, weights = _mixture(means, stds, weights)
    return _mixture_sample(key, num_points, means, stds, weights)


@functools.partial(jax.jit, static_argnums=1)  # the public functions check, then run compiled code
def _mixture_sample(key, num_points, means, stds, weights):
    k_component, k_noise = jax.random.split(key)
    component = jax.random.choice(k_component, means.shape[0], (num_points,), p=weights)
    noise = jax.random.normal(k_noise, (num_points, means.shape[1]), means.dtype)
    return means[component] + stds[component][:, None] * noise


def langevin_step(x, score, step_size, noise):
    """One step of Langevin dynamics: ``x + step_size / 2 * score + sqrt(step_size) * noise``."""
    x = _checks.float_array(x, "x")
    score = _checks.same_shape(_checks.float_array(score, "score"), "score", x.shape, expected_from="the shape of x")
    noise = _checks.same_shape(_checks.float_array(noise, "noise"), "noise", x.shape, expected_from="the shape of x")
    _checks.positive(step_size, "step_size")
    return _langevin_step(x, score, step_size, noise)


@jax.jit
def _langevin_step(x, score, step_size, noise):
    return x + 0.5 * step_size * score + jnp.sqrt(step_size) * noise


def _time(t):
    t = _checks.float_array(t, "t", ndim=0, what=" (a scalar time)")
    if _checks.is_concrete(t) and not np.isnan(float(t)) and not 0.0 <= float(t) <= 1.0:  # in NumPy: no compiling
        raise ValueError(f"t must lie in [0, 1], got {float(t)}")
    return t


def vp_marginal(t, beta_min=0.1, beta_max=20.0):
    """The VP kernel at time ``t``: :math:`x_t \\sim \\mathcal{N}(m\\, x_0, s^2 I)`, returned as ``(m, s)``
    with :math:`m = e^{-\\frac{1}{2}\\int_0^t \\beta}` and :math:`s^2 = 1 - m^2`."""
    t = _time(t)
    _checks.positive(beta_min, "beta_min")
    _checks.positive(beta_max, "beta_max")
    return _vp_marginal(t, beta_min, beta_max)


@jax.jit
def _vp_marginal(t, beta_min, beta_max):
    integral = beta_min * t + 0.5 * (beta_max - beta_min) * t**2
    m = jnp.exp(-0.5 * integral)
    return m, jnp.sqrt(-jnp.expm1(-integral))  # 1 - m^2 without cancellation at small t


def ve_std(t, sigma_min=0.01, sigma_max=50.0):
    """The VE noise level :math:`\\sigma(t) = \\sigma_{min} (\\sigma_{max} / \\sigma_{min})^t`; the kernel's
    standard deviation is :math:`\\sqrt{\\sigma(t)^2 - \\sigma_{min}^2}`."""
    t = _time(t)
    _checks.positive(sigma_min, "sigma_min")
    _checks.positive(sigma_max, "sigma_max")
    return _ve_std(t, sigma_min, sigma_max)


@jax.jit
def _ve_std(t, sigma_min, sigma_max):
    return sigma_min * (sigma_max / sigma_min) ** t


def vp_probability_flow(x, t, score, beta_min=0.1, beta_max=20.0):
    """The drift of the VP probability-flow ODE, :math:`f - \\frac{1}{2} g^2 \\nabla \\log p_t =
    -\\frac{1}{2}\\beta(t) (x + \\nabla \\log p_t(x))`, given the score at ``x``."""
    x = _checks.float_array(x, "x")
    score = _checks.same_shape(_checks.float_array(score, "score"), "score", x.shape, expected_from="the shape of x")
    t = _time(t)
    return _vp_probability_flow(x, t, score, beta_min, beta_max)


@jax.jit
def _vp_probability_flow(x, t, score, beta_min, beta_max):
    beta = beta_min + t * (beta_max - beta_min)
    f = -0.5 * beta * x
    g = jnp.sqrt(beta)
    return f - 0.5 * g**2 * score


def _sigma_feature(sigma):
    return jnp.log(sigma) / 4.0


def score(params, x, sigma):
    """The network's score :math:`s_\\theta(x, \\sigma)` at one point ``x`` (D,) and noise level ``sigma``."""
    D = _check_params(params)
    x = _checks.same_shape(_checks.float_array(x, "x"), "x", (D,), expected_from="the data dimension of params")
    sigma = _checks.float_array(sigma, "sigma", ndim=0, what=" (a scalar noise level)")
    return _score(params, x, sigma)


@jax.jit
def _score(params, x, sigma):
    return _net(params, x, _sigma_feature(sigma)) / sigma


def _dsm_loss(params, x, key, sigmas):
    k_sigma, k_noise = jax.random.split(key)
    sigma = jax.random.choice(k_sigma, sigmas, (x.shape[0],))  # (B,)
    noise = jax.random.normal(k_noise, x.shape, x.dtype)
    x_noisy = x + _rows(sigma, x) * noise
    out = jax.vmap(_net, in_axes=(None, 0, 0))(params, x_noisy, _sigma_feature(sigma))  # sigma * s_theta, (B, D)
    return jnp.mean((out + noise) ** 2)


_dsm_loss_jit = jax.jit(_dsm_loss)


def _sigmas(sigmas):
    sigmas = _checks.float_array(sigmas, "sigmas", ndim=1, what=" (L,)")
    if sigmas.shape[0] < 2:  # a network conditioned on the level needs levels to tell apart
        raise ValueError(f"sigmas must hold at least 2 noise levels, got shape {tuple(sigmas.shape)}")
    if _checks.is_concrete(sigmas) and sigmas.size and not bool(np.all(np.asarray(sigmas) > 0)):  # in NumPy: no compiling
        raise ValueError(f"sigmas must be positive, got {sigmas}")
    return sigmas


def dsm_loss(params, x, key, sigmas):
    """The denoising score-matching loss :math:`L` on a batch ``x`` (B, D), one level from ``sigmas``
    (L,) and one noise per point, averaged over points and coordinates."""
    x = _check_data(params, x, "x")
    return _dsm_loss_jit(params, x, key, _sigmas(sigmas))


@cached
def train(params, data, key, *, sigmas, steps, batch_size=128, learning_rate=1e-2):
    """``steps`` Adam steps on :func:`dsm_loss` (the loop of :doc:`ddpm`). Returns the parameters and losses."""
    data = _check_data(params, data, "data")
    sigmas = _sigmas(sigmas)
    steps = _checks.size(steps, "steps")
    batch_size = _checks.size(batch_size, "batch_size")
    adam(learning_rate)  # checks the step size here, before it is a static argument of the core
    return _train(params, data, key, sigmas, steps=steps, batch_size=batch_size,
                  learning_rate=_checks.static_number(learning_rate, "learning_rate"))


@functools.partial(jax.jit, static_argnames=("steps", "batch_size", "learning_rate"))
def _train(params, data, key, sigmas, *, steps, batch_size, learning_rate):
    return _fit(params, data, key, steps, batch_size, adam(learning_rate),
                lambda p, x, k: _dsm_loss(p, x, k, sigmas))


def example_mixture():
    """The mixture of the tests: three isotropic Gaussians in the plane."""
    means = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]], np.float32)
    stds, weights = np.array([0.3, 0.5, 0.4], np.float32), np.array([0.3, 0.5, 0.2], np.float32)
    return jax.device_put((means, stds, weights))  # float32 JAX arrays, placed without compiling a conversion


@cached
def trained_mixture_score(steps=4000):
    """A score network trained with :func:`dsm_loss` on 4096 points of :func:`example_mixture`, with ten
    noise levels from 0.1 to 3."""
    means, stds, weights = example_mixture()
    data = jax.jit(mixture_sample, static_argnums=1)(jax.random.key(0), 4096, means, stds, weights)
    params = denoiser_init(jax.random.key(1), 2)  # runs the page's program (the same weights as under jit)
    sigmas = jnp.geomspace(0.1, 3.0, 10)
    return jax.jit(train.uncached, static_argnames=("steps", "batch_size", "learning_rate"))(
        params, data, jax.random.key(2), sigmas=sigmas, steps=steps)
