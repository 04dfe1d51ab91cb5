r"""Denoising diffusion probabilistic models
=========================================

Destroy data step by step with Gaussian noise, train a network to predict the noise that was added,
and generate by undoing the steps one at a time: the model behind most image, audio and video
generators, and the place to start for any diffusion or flow model.

Equation
--------

.. math::

   q(x_t \mid x_0) = \mathcal{N}\big(\sqrt{\bar\alpha_t}\, x_0,\ (1 - \bar\alpha_t) I\big), \qquad
   \alpha_t = 1 - \beta_t, \qquad \bar\alpha_t = \prod_{s=1}^{t} \alpha_s

   L(\theta) = \mathbb{E}_{x_0, t, \varepsilon}\,
   \big\lVert \varepsilon - \varepsilon_\theta\big(\sqrt{\bar\alpha_t}\, x_0
   + \sqrt{1 - \bar\alpha_t}\, \varepsilon,\ t\big) \big\rVert^2

   q(x_{t-1} \mid x_t, x_0) = \mathcal{N}(\tilde\mu_t, \tilde\beta_t I), \qquad
   \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\, \beta_t}{1 - \bar\alpha_t}\, x_0
   + \frac{\sqrt{\alpha_t}\, (1 - \bar\alpha_{t-1})}{1 - \bar\alpha_t}\, x_t, \qquad
   \tilde\beta_t = \frac{1 - \bar\alpha_{t-1}}{1 - \bar\alpha_t}\, \beta_t

   x_{t-1} = \tilde\mu_t(\hat x_0, x_t) + \sqrt{\tilde\beta_t}\, z, \qquad
   \hat x_0 = \frac{x_t - \sqrt{1 - \bar\alpha_t}\, \varepsilon_\theta(x_t, t)}{\sqrt{\bar\alpha_t}},
   \qquad x_T \sim \mathcal{N}(0, I)

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_0`
     - a data point (clean)
     - ``x0``
     - ``(D,)``, batched ``(B, D)``
   * - :math:`x_t`, :math:`x_{t-1}`
     - the noisy point after :math:`t` steps; the point one step less noisy
     - ``xt``; the result of ``ancestral_step``
     - ``(D,)``, batched ``(B, D)``
   * - :math:`t`, :math:`s`, :math:`T`
     - a step (1 to :math:`T` on the page, the 0-based index :math:`t - 1` in the code); a step of the
       product; the number of steps
     - ``t``; ``num_steps``
     - scalar or ``(B,)``
   * - :math:`\beta_t`, :math:`\alpha_t`
     - the noise variance added at step :math:`t`; the signal variance kept
     - ``betas[t]``, ``1 - betas[t]``
     - ``(T,)``
   * - :math:`\bar\alpha_t`
     - the signal variance left after :math:`t` steps (:math:`\bar\alpha_0 = 1`)
     - ``alpha_bar[t]``
     - ``(T,)``
   * - :math:`q`
     - the forward (noising) process, fixed, nothing learned
     - ``q_sample``
     - a distribution
   * - :math:`\varepsilon`, :math:`z`
     - standard normal noise: added in training; added at each sampling step
     - ``noise``
     - ``(D,)``
   * - :math:`\varepsilon_\theta`, :math:`\theta`
     - the network that predicts the noise from :math:`x_t` and :math:`t`; its parameters
     - ``denoiser``; ``params``
     - ``(D,)``; a list of layers
   * - :math:`L`
     - the training loss, "simple" form of :footcite:t:`ho2020denoising`
     - ``loss``
     - scalar
   * - :math:`\tilde\mu_t`, :math:`\tilde\beta_t`
     - the mean and variance of the true one-step reverse, given :math:`x_0`
     - ``posterior_mean_variance``
     - ``(D,)``; scalar
   * - :math:`\hat x_0`
     - the clean point that the predicted noise implies
     - ``x0_hat``
     - ``(D,)``
   * - :math:`I`
     - the identity matrix: noise independent in each coordinate
     - (implicit)
     - ``(D, D)``

Explanation
-----------

The forward process adds a little Gaussian noise at each of :math:`T` steps and shrinks the signal
so that the variance stays one; after enough steps nothing of the data is left and :math:`x_T` is
a standard normal :footcite:`sohldickstein2015deep`. Because a sum of Gaussians is Gaussian, the
noisy point at any step has a closed form, :math:`q(x_t \mid x_0)`, so training needs no
simulation: draw a step and a noise, mix them with the data in one line (``q_sample``), and ask the
network which noise was added. That regression, summed over the steps with equal weights, is the
loss :math:`L` :footcite:`ho2020denoising`.

To generate, the process is run backwards. The reverse of one small Gaussian step is nearly
Gaussian, and *given* :math:`x_0` it is exactly the Gaussian :math:`q(x_{t-1} \mid x_t, x_0)` with
the mean and variance above. The network does not know :math:`x_0`, but its noise prediction
implies a guess :math:`\hat x_0`; plugging the guess into the posterior and adding fresh noise of
the posterior's variance gives one step of *ancestral sampling*. At the last step
(:math:`t = 1`, index 0) the variance is zero because :math:`\bar\alpha_0 = 1`, and the sample is
the guess itself.

.. admonition:: Intuition

   A sculptor is shown a block of marble and asked only "which chips were added to the statue?",
   at every stage from a rough block to a nearly finished piece. Having learned to answer that, she
   can start from a raw block and remove a little at a time; each stage only needs a small,
   local correction, which is far easier to learn than the whole statue at once.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.diffusion.ddpm import alpha_bar_schedule, linear_beta_schedule, q_sample, two_moons, trained_moons_model, sample

   betas = linear_beta_schedule(100, 1e-3, 0.2)
   alpha_bar = alpha_bar_schedule(betas)
   x0 = two_moons(jax.random.key(3), 1000)
   noise = jax.random.normal(jax.random.key(4), x0.shape)
   params, _ = trained_moons_model()
   generated = sample(params, jax.random.key(2), 1000, betas)
   fig, axes = plt.subplots(1, 5, figsize=(11, 2.5), sharex=True, sharey=True)
   for ax, t in zip(axes[:4], (0, 9, 19, 99)):
       xt = q_sample(x0, t, noise, alpha_bar)
       ax.plot(xt[:, 0], xt[:, 1], ".", ms=1)
       ax.set_title(f"q(x_t | x_0), t = {t + 1}", fontsize=8)
   axes[4].plot(generated[:, 0], generated[:, 1], ".", ms=1, color="C3")
   axes[4].set_title("100 reverse steps", fontsize=8)
   axes[0].set(xlim=(-3, 3), ylim=(-3, 3))
   fig.tight_layout()

From left to right, two moons dissolve into a standard normal under the forward process; the last
panel is 1000 points that the trained network made from fresh noise.

**The schedule.** :footcite:t:`ho2020denoising` use :math:`T = 1000` and :math:`\beta` rising
linearly from :math:`10^{-4}` to :math:`0.02` (the defaults of ``linear_beta_schedule``), which
leaves :math:`\bar\alpha_T \approx 4 \cdot 10^{-5}`. With fewer steps the ends are scaled up by
:math:`1000 / T`: the examples use :math:`T = 100` and :math:`\beta` from :math:`10^{-3}` to
:math:`0.2`. A schedule whose :math:`\bar\alpha_T` stays large, such as :math:`T = 100` with the
default ends (:math:`\bar\alpha_T \approx 0.36`), never reaches noise, and sampling from
:math:`\mathcal{N}(0, I)` then starts from the wrong place.

**Numerical traps.** :math:`\hat x_0` divides by :math:`\sqrt{\bar\alpha_t}`, about 0.0045 at the
first reverse step of the examples, so an error in the predicted noise is magnified there; the posterior's coefficient of
:math:`x_0` is small by the same factor, so the product stays tame. Image models clip
:math:`\hat x_0` to the pixel range; points in the plane have no range to clip to.

Inductive bias
--------------

The loss assumes nothing about the data beyond that Gaussian noise destroys it gradually; the
network's inductive bias is its own (a small MLP here, a U-Net or transformer for images). What the
Gaussian steps impose is smoothness in time: each step is a small correction, so the model needs
many network evaluations per sample (100 here), the cost that :doc:`ddim` and flow matching cut.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.diffusion.ddpm import (alpha_bar_schedule, denoiser, denoiser_init,
...     linear_beta_schedule, loss, posterior_mean_variance, q_sample, sample, train, two_moons)
>>> betas = linear_beta_schedule(100, 1e-3, 0.2)
>>> alpha_bar = alpha_bar_schedule(betas)
>>> round(float(alpha_bar[-1]), 6)  # nothing of the data is left after 100 steps
2e-05
>>> x0 = two_moons(jax.random.key(0), 5)
>>> noise = jax.random.normal(jax.random.key(1), (5, 2))
>>> t = jnp.array([0, 10, 50, 98, 99])  # one step for each point, 0-based
>>> xt = q_sample(x0, t, noise, alpha_bar)
>>> xt.shape
(5, 2)
>>> mean, variance = posterior_mean_variance(x0, xt, t, betas)
>>> mean.shape, variance.shape, float(variance[0])  # zero variance at the last reverse step
((5, 2), (5,), 0.0)
>>> params = denoiser_init(jax.random.key(2), 2)
>>> data = two_moons(jax.random.key(3), 256)
>>> round(float(loss(params, data, jax.random.key(5), alpha_bar)), 1)  # about 1 before training
1.1
>>> trained, losses = train(params, data, jax.random.key(4), alpha_bar=alpha_bar, steps=300)
>>> bool(losses[-50:].mean() < 0.8 * losses[:50].mean())  # the noise prediction improves
True
>>> denoiser(trained, jnp.zeros(2), jnp.float32(0.5)).shape  # one point at time 0.5
(2,)
>>> sample(trained, jax.random.key(5), 1000, betas).shape  # 100 reverse steps from noise
(1000, 2)

Implementation notes
--------------------

**Quality.** The model of the figure (``trained_moons_model``: a three-layer MLP of width 64,
8000 Adam steps of 128 points) reaches a squared MMD (``mmd2``, Gaussian kernels of widths 0.1, 0.2,
0.5 and 1 summed; :footcite:t:`gretton2012kernel`) to 1000 fresh data points below twice that between
two independent draws of 1000 data points; the test asserts it. The chapter's introduction compares
this sampler with :doc:`ddim` and flow matching at fewer steps.

**Conventions.** Indices are 0-based: ``alpha_bar[i]`` is :math:`\bar\alpha_{i+1}` of the page, and
``posterior_mean_variance`` at ``t = 0`` uses :math:`\bar\alpha = 1` before the first step.
``t`` is a scalar (one step for all points) or a batch ``(B,)`` (one step for each row of ``x0``).
A concrete ``t`` outside the schedule raises an error; under :func:`jax.jit` it is traced, and an
index past either end reads NaN (``jnp.take`` with ``mode="fill"``), never a clamped neighbour.
The variance is returned with the shape of ``t``. The sampler uses :math:`\tilde\beta_t`; the other
choice of :footcite:t:`ho2020denoising`, :math:`\beta_t`, adds a little more noise and is as good
on their images. The network sees the time as :math:`t / T` through sines and cosines of six
frequencies; training uses Adam with its step size decayed along a cosine.

**Libraries.** Hugging Face ``diffusers`` calls the schedule ``DDPMScheduler`` (``beta_schedule=
"linear"``, ``variance_type="fixed_small"`` for :math:`\tilde\beta_t`); it indexes from 0 as here.
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook._memo import cached
from cookbook.optimization.adam import adam

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "linear_beta_schedule": ("num_steps",),
    "alpha_bar_schedule": (),
    "q_sample": (),
    "posterior_mean_variance": (),
    "two_moons": ("num_points", "noise"),
    "denoiser_init": ("data_dim", "hidden"),
    "denoiser": (),
    "loss": (),
    "train": ("steps", "batch_size", "learning_rate"),
    "ancestral_step": (),
    "sample": ("num_samples",),
    "mmd2": ("bandwidths",),
}

_FREQUENCIES = 6  # sines and cosines of the time at pi/2, pi, 2 pi, ..., 16 pi


# ---- The schedule -------------------------------------------------------------------------------

def linear_beta_schedule(num_steps, beta_start=1e-4, beta_end=2e-2):
    """The variances :math:`\\beta` (num_steps,), float32, linearly from ``beta_start`` to ``beta_end``.

    >>> linear_beta_schedule(3, 0.1, 0.3)
    Array([0.1, 0.2, 0.3], dtype=float32)
    """
    num_steps = _checks.size(num_steps, "num_steps")
    for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
        _checks.positive(value, name)
        if _checks.is_concrete(value) and not float(value) < 1.0:
            raise ValueError(f"{name} must lie in (0, 1), got {value}")
    return _linspace(beta_start, beta_end, num_steps)


# The public functions check their input, then run compiled cores like this one: a repeated call with
# the same shapes (the tests', the bad-input replay's) reuses one compilation instead of dispatching
# op by op, or compiling a fresh lax.scan, each time.
@functools.partial(jax.jit, static_argnums=2)
def _linspace(start, stop, num):
    return jnp.linspace(start, stop, num, dtype=jnp.float32)


def _schedule(values, name, minimum=2):
    values = _checks.float_array(values, name, ndim=1, what=" (T,)")
    if values.shape[0] < minimum:
        raise ValueError(f"{name} must hold at least {minimum} steps, got shape {tuple(values.shape)}")
    return values


def alpha_bar_schedule(betas):
    """The signal variance left after each step, :math:`\\bar\\alpha_t = \\prod_{s \\le t} (1 - \\beta_s)`."""
    betas = _schedule(betas, "betas", minimum=1)
    return _alpha_bar(betas)


@jax.jit
def _alpha_bar(betas):
    return jnp.cumprod(1.0 - betas)


def _steps(t, x, x_name, schedule_name, T, *, low=0):
    """``t`` as int indices, a scalar or one per row of ``x``, within ``[low, T)`` when concrete."""
    t = _checks.int_array(t, "t")
    _checks.scalar_or_per_row(t, x, x_name, "step")
    _checks.check_range(t, f"t (an index into {schedule_name} of length {T})", low, T)
    return t


def _at(values, t):
    """``values[t]`` with an index outside ``[0, len)`` giving NaN, never a clamped or wrapped one."""
    T = values.shape[0]
    return jnp.take(values, jnp.where(t < 0, T, t), mode="fill", fill_value=jnp.nan)


def _rows(c, x):
    """A per-row coefficient ``c`` (scalar or (B,)) shaped to multiply ``x`` (B, ...)."""
    return c.reshape(c.shape + (1,) * (x.ndim - c.ndim))


def _same_as(y, name, x, x_name):
    y = _checks.float_array(y, name)
    return _checks.same_shape(y, name, x.shape, expected_from=f"the shape of {x_name}")


# ---- The forward process and its posterior -----------------------------------------------------

def q_sample(x0, t, noise, alpha_bar):
    """A draw of :math:`x_t \\sim q(x_t \\mid x_0)`: :math:`\\sqrt{\\bar\\alpha_t} x_0 + \\sqrt{1 - \\bar\\alpha_t}\\,\\varepsilon`.

    ``t`` is a 0-based index into ``alpha_bar``, a scalar or one per row of ``x0``.
    """
    x0 = _checks.float_array(x0, "x0")
    noise = _same_as(noise, "noise", x0, "x0")
    alpha_bar = _schedule(alpha_bar, "alpha_bar", minimum=1)
    t = _steps(t, x0, "x0", "alpha_bar", alpha_bar.shape[0])
    return _q_sample(x0, t, noise, alpha_bar)


@jax.jit
def _q_sample(x0, t, noise, alpha_bar):
    a = _rows(_at(alpha_bar, t), x0)
    return jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * noise


def posterior_mean_variance(x0, xt, t, betas):
    """The mean (shape of ``x0``) and variance (shape of ``t``) of :math:`q(x_{t-1} \\mid x_t, x_0)`.

    ``t`` is a 0-based index into ``betas``; before the first step :math:`\\bar\\alpha = 1`, so the
    variance at ``t = 0`` is zero and the mean is ``x0``.
    """
    x0 = _checks.float_array(x0, "x0")
    xt = _same_as(xt, "xt", x0, "x0")
    betas = _schedule(betas, "betas", minimum=1)
    t = _steps(t, x0, "x0", "betas", betas.shape[0])
    return _posterior_mean_variance(x0, xt, t, betas)


@jax.jit
def _posterior_mean_variance(x0, xt, t, betas):
    # 1 - alpha_bar from a sum of logs: 1 - cumprod(1 - beta) would lose most digits of a small beta
    # to cancellation in float32 (at t = 0 the mean's weight on x0 came out 0.99983, not 1).
    log_alpha_bar = jnp.cumsum(jnp.log1p(-betas))
    alpha_bar, one_minus = jnp.exp(log_alpha_bar), -jnp.expm1(log_alpha_bar)
    beta_t, a_t, one_minus_t = _at(betas, t), _at(alpha_bar, t), _at(one_minus, t)
    a_prev = jnp.where(t == 0, 1.0, _at(alpha_bar, t - 1))
    one_minus_prev = jnp.where(t == 0, 0.0, _at(one_minus, t - 1))
    coef_x0 = jnp.sqrt(a_prev) * beta_t / one_minus_t
    coef_xt = jnp.sqrt(1.0 - beta_t) * one_minus_prev / one_minus_t
    mean = _rows(coef_x0, x0) * x0 + _rows(coef_xt, x0) * xt
    return mean, one_minus_prev / one_minus_t * beta_t


def ancestral_step(xt, eps, t, betas, noise):
    """One reverse step :math:`x_t \\to x_{t-1}` from a predicted noise ``eps``, with fresh ``noise``.

    >>> betas = linear_beta_schedule(4, 0.1, 0.4)
    >>> ancestral_step(jnp.ones(2), jnp.zeros(2), 0, betas, jnp.ones(2))  # x0_hat = x / sqrt(0.9)
    Array([1.0541, 1.0541], dtype=float32)
    """
    xt = _checks.float_array(xt, "xt")
    eps = _same_as(eps, "eps", xt, "xt")
    noise = _same_as(noise, "noise", xt, "xt")
    betas = _schedule(betas, "betas", minimum=1)
    t = _steps(t, xt, "xt", "betas", betas.shape[0])
    return _ancestral_step(xt, eps, t, betas, noise)


@jax.jit
def _ancestral_step(xt, eps, t, betas, noise):
    a_t = _rows(_at(jnp.cumprod(1.0 - betas), t), xt)
    x0_hat = (xt - jnp.sqrt(1.0 - a_t) * eps) / jnp.sqrt(a_t)
    mean, variance = _posterior_mean_variance(x0_hat, xt, t, betas)
    return mean + _rows(jnp.sqrt(variance), xt) * noise


# ---- The data, the network, the loss ----------------------------------------------------------

def two_moons(key, num_points, noise=0.1):
    """``num_points`` points (num_points, 2) on two interleaved half circles with Gaussian jitter
    ``noise``, centred and scaled to about unit variance per axis (as scikit-learn's ``make_moons``,
    then ``(x - (0.5, 0.25)) / (0.87, 0.5)``)."""
    return _two_moons(key, *_moons_arguments(num_points, noise))


def labelled_two_moons(key, num_points, noise=0.1):
    """``(points, labels)``: the points of ``two_moons`` and the moon of each, 0 (upper) or 1."""
    return _labelled_two_moons_jit(key, *_moons_arguments(num_points, noise))


def _moons_arguments(num_points, noise):
    """The size and the jitter, both static: a call passes its key straight to one compiled core."""
    num_points = _checks.size(num_points, "num_points")
    _checks.positive(noise, "noise", allow_zero=True)
    return num_points, _checks.static_number(noise, "noise")


@functools.partial(jax.jit, static_argnums=(1, 2))
def _two_moons(key, num_points, noise):
    return _labelled_two_moons(key, num_points, noise)[0]


def _labelled_two_moons(key, num_points, noise):
    k_angle, k_moon, k_noise = jax.random.split(key, 3)
    angle = jnp.pi * jax.random.uniform(k_angle, (num_points,))
    upper = jax.random.bernoulli(k_moon, 0.5, (num_points,))
    x = jnp.where(upper, jnp.cos(angle), 1.0 - jnp.cos(angle))
    y = jnp.where(upper, jnp.sin(angle), 0.5 - jnp.sin(angle))
    points = jnp.stack([x, y], axis=-1) + noise * jax.random.normal(k_noise, (num_points, 2))
    points = (points - jnp.array([[0.5, 0.25]])) / jnp.array([[0.87, 0.5]])
    return points, jnp.where(upper, 0, 1).astype(jnp.int32)


_labelled_two_moons_jit = jax.jit(_labelled_two_moons, static_argnums=(1, 2))


def denoiser_init(key, data_dim, hidden=64):
    """A three-layer MLP from a point (data_dim,) and its time features to a vector (data_dim,)."""
    data_dim = _checks.size(data_dim, "data_dim")
    hidden = _checks.size(hidden, "hidden")
    return _denoiser_init(key, data_dim, hidden)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _denoiser_init(key, data_dim, hidden):
    sizes = (data_dim + 2 * _FREQUENCIES, hidden, hidden, hidden, data_dim)
    keys = jax.random.split(key, len(sizes) - 1)
    return [{"W": jax.random.normal(k, (n_in, n_out)) / jnp.sqrt(n_in), "b": jnp.zeros((n_out,))}
            for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:])]


def _check_params(params, name="params"):
    """The data dimension of a denoiser's list of float ``{"W", "b"}`` layers that chain."""
    if not isinstance(params, (list, tuple)) or len(params) < 2:
        raise TypeError(f"{name} must be a list of {{'W', 'b'}} layers from denoiser_init, got {type(params).__name__}")
    D = _checks.layers(params, name)[1]
    _checks.same_shape(params[0]["W"], f"{name}[0]['W']", (D + 2 * _FREQUENCIES, params[0]["W"].shape[1]),
                       expected_from=f"the data dimension {D} of the last layer plus {2 * _FREQUENCIES} time features")
    return D


def _time_features(s):
    frequencies = jnp.pi * 2.0 ** (jnp.arange(_FREQUENCIES) - 1.0)
    return jnp.concatenate([jnp.sin(s * frequencies), jnp.cos(s * frequencies)])


def _net(params, x, s):
    h = jnp.concatenate([x, _time_features(s).astype(x.dtype)])
    for layer in params[:-1]:
        h = jax.nn.silu(h @ layer["W"] + layer["b"])
    return h @ params[-1]["W"] + params[-1]["b"]


def denoiser(params, x, s):
    """The network's output for one point ``x`` (D,) at time ``s`` in [0, 1] (a scalar): for DDPM,
    the predicted noise :math:`\\varepsilon_\\theta(x_t, t)` with ``s = (t + 1) / T``."""
    D = _check_params(params)
    x = _checks.same_shape(_checks.float_array(x, "x"), "x", (D,), expected_from="the data dimension of params")
    s = _checks.float_array(s, "s", ndim=0, what=" (a scalar time)")
    return _net_jit(params, x, s)


_net_jit = jax.jit(_net)


def _check_data(params, x0, name="x0", params_name="params"):
    D = _check_params(params, params_name)
    x0 = _checks.float_array(x0, name, ndim=2, what=" (B, D)")
    return _checks.same_shape(x0, name, (x0.shape[0], D),
                              expected_from=f"(B, D) with D the data dimension of {params_name}")


def _loss(params, x0, key, alpha_bar):
    k_t, k_noise = jax.random.split(key)
    T = alpha_bar.shape[0]
    t = jax.random.randint(k_t, (x0.shape[0],), 0, T)
    noise = jax.random.normal(k_noise, x0.shape, x0.dtype)
    xt = q_sample(x0, t, noise, alpha_bar)
    eps = jax.vmap(_net, in_axes=(None, 0, 0))(params, xt, (t + 1.0) / T)  # (B, D)
    return jnp.mean((eps - noise) ** 2)


def loss(params, x0, key, alpha_bar):
    """The noise-prediction loss :math:`L` on a batch ``x0`` (B, D): one random step and noise per
    point, the squared error averaged over points and coordinates (so 1 for a network that says 0)."""
    x0 = _check_data(params, x0)
    alpha_bar = _schedule(alpha_bar, "alpha_bar")
    return _loss_jit(params, x0, key, alpha_bar)


_loss_jit = jax.jit(_loss)


@cached  # the page's figure and the tests share this run when the book is built (cookbook/_memo.py)
def train(params, data, key, *, alpha_bar, steps, batch_size=128, learning_rate=1e-2):
    """``steps`` Adam steps on :func:`loss`, each on ``batch_size`` rows of ``data`` (N, D) drawn with
    replacement, the step size decayed from ``learning_rate`` to 0 along a cosine.

    Returns the trained parameters and the loss of each step, shape (steps,).
    """
    data = _check_data(params, data, "data")
    alpha_bar = _schedule(alpha_bar, "alpha_bar")
    steps = _checks.size(steps, "steps")
    batch_size = _checks.size(batch_size, "batch_size")
    adam(learning_rate)  # its checks of the step size, before anything is traced
    return _train(params, data, key, alpha_bar, learning_rate, steps, batch_size)


@functools.partial(jax.jit, static_argnums=(4, 5, 6))  # the step size too: adam checks it
def _train(params, data, key, alpha_bar, learning_rate, steps, batch_size):
    return _fit(params, data, key, steps, batch_size, adam(learning_rate),
                lambda p, x0, k: _loss(p, x0, k, alpha_bar))


def _fit(params, data, key, steps, batch_size, optimizer, batch_loss):
    """The training loop that the chapter's models share: Adam, a cosine decay, one ``lax.scan``."""

    def step(carry, inputs):
        params, state = carry
        k, i = inputs
        k_rows, k_loss = jax.random.split(k)
        batch = data[jax.random.randint(k_rows, (batch_size,), 0, data.shape[0])]
        value, grads = jax.value_and_grad(batch_loss)(params, batch, k_loss)
        updates, state = optimizer.update(grads, state, params)
        decay = 0.5 * (1.0 + jnp.cos(jnp.pi * i / steps))
        params = jax.tree.map(lambda p, u: p + decay * u, params, updates)
        return (params, state), value

    inputs = (jax.random.split(key, steps), jnp.arange(steps))
    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), inputs)
    return params, losses


# ---- Sampling and its measure ------------------------------------------------------------------

def sample(params, key, num_samples, betas):
    """``num_samples`` points (num_samples, D) by ancestral sampling from :math:`x_T \\sim \\mathcal{N}(0, I)`
    through every step of ``betas``, one ``lax.scan`` step each."""
    _check_params(params)
    num_samples = _checks.size(num_samples, "num_samples")
    betas = _schedule(betas, "betas")
    return _sample(params, key, betas, num_samples)


@functools.partial(jax.jit, static_argnums=3)
def _sample(params, key, betas, num_samples):
    D, T = params[-1]["W"].shape[1], betas.shape[0]
    k_start, k_steps = jax.random.split(key)
    x = jax.random.normal(k_start, (num_samples, D))

    def step(x, inputs):
        t, k = inputs
        eps = jax.vmap(_net, in_axes=(None, 0, None))(params, x, (t + 1.0) / T)  # (B, D)
        return ancestral_step(x, eps, t, betas, jax.random.normal(k, x.shape)), None

    x, _ = jax.lax.scan(step, x, (jnp.arange(T - 1, -1, -1), jax.random.split(k_steps, T)))
    return x


def mmd2(x, y, bandwidths=(0.1, 0.2, 0.5, 1.0)):
    """The squared maximum mean discrepancy between point sets ``x`` (N, D) and ``y`` (M, D), with a
    sum of Gaussian kernels :math:`e^{-\\lVert a - b \\rVert^2 / 2h^2}` over the ``bandwidths`` h (the
    biased estimate, diagonal included, so two samples of one distribution give a small positive number).

    >>> points = jnp.array([[0.0, 0.0], [1.0, 0.0]])
    >>> float(mmd2(points, points)), float(mmd2(points, points + 1.0)) > 0
    (0.0, True)
    """
    x = _checks.float_array(x, "x", ndim=2, what=" (N, D)")
    y = _checks.float_array(y, "y", ndim=2, what=" (M, D)")
    _checks.same_shape(y, "y", (y.shape[0], x.shape[1]), expected_from="(M, D) with D as in x")
    for h in bandwidths:
        _checks.positive(h, "bandwidths")
    return _mmd2(x, y, tuple(bandwidths))


@functools.partial(jax.jit, static_argnums=2)
def _mmd2(x, y, bandwidths):
    def kernel(a, b):
        d2 = jnp.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)  # (N, M)
        return sum(jnp.exp(-d2 / (2.0 * h * h)) for h in bandwidths)

    return jnp.mean(kernel(x, x)) + jnp.mean(kernel(y, y)) - 2.0 * jnp.mean(kernel(x, y))


@cached
def trained_moons_model():
    """The model of the page's figure and of the chapter's comparison: the denoiser trained for 8000
    steps on 4096 points of :func:`two_moons` with 100 steps from :math:`\\beta = 10^{-3}` to 0.2."""
    alpha_bar = alpha_bar_schedule(linear_beta_schedule(100, 1e-3, 0.2))
    data = jax.jit(two_moons, static_argnums=1)(jax.random.key(7), 4096)
    params = denoiser_init(jax.random.key(0), 2)  # the program of the page's example
    return train.uncached(params, data, jax.random.key(1), alpha_bar=alpha_bar, steps=8000)
