r"""Elucidating the design space (EDM)
==================================

Parameterise the diffusion by its noise level :math:`\sigma` alone, scale the network's input and
output so that it always sees and predicts unit-variance signals, and sample with Heun's
second-order method on a schedule that crowds the steps at low noise: the recipe of
:footcite:t:`karras2022elucidating` behind many current image models, and a good default for a new
diffusion model.

Equation
--------

.. math::

   D_\theta(x; \sigma) = c_{\text{skip}}(\sigma)\, x
   + c_{\text{out}}(\sigma)\, F_\theta\big(c_{\text{in}}(\sigma)\, x;\ c_{\text{noise}}(\sigma)\big)

   c_{\text{skip}} = \frac{\sigma_d^2}{\sigma^2 + \sigma_d^2}, \quad
   c_{\text{out}} = \frac{\sigma \sigma_d}{\sqrt{\sigma^2 + \sigma_d^2}}, \quad
   c_{\text{in}} = \frac{1}{\sqrt{\sigma^2 + \sigma_d^2}}, \quad
   c_{\text{noise}} = \tfrac{1}{4} \ln \sigma

   L(\theta) = \mathbb{E}_{y, \sigma, n}\, \lambda(\sigma)\, \big\lVert D_\theta(y + n; \sigma) - y \big\rVert^2,
   \quad \lambda = \frac{\sigma^2 + \sigma_d^2}{(\sigma \sigma_d)^2}, \quad
   \ln \sigma \sim \mathcal{N}(P_{\text{mean}}, P_{\text{std}}^2), \quad n \sim \mathcal{N}(0, \sigma^2 I)

   \sigma_i = \Big(\sigma_{\max}^{1/\rho} + \tfrac{i}{N - 1}\big(\sigma_{\min}^{1/\rho}
   - \sigma_{\max}^{1/\rho}\big)\Big)^{\rho}, \quad \sigma_N = 0, \qquad
   \frac{\mathrm{d}x}{\mathrm{d}\sigma} = \frac{x - D_\theta(x; \sigma)}{\sigma}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`y`, :math:`x`
     - a data point; a noisy point
     - ``y``; ``x``
     - ``(D,)``, batched ``(B, D)``
   * - :math:`\sigma`, :math:`\sigma_d`
     - the noise level; the standard deviation of the data
     - ``sigma``; ``sigma_data``
     - scalar
   * - :math:`n`, :math:`I`
     - the noise added, of standard deviation :math:`\sigma`; the identity matrix
     - ``noise``; (implicit)
     - ``(D,)``; ``(D, D)``
   * - :math:`D_\theta`
     - the denoiser: its estimate of the clean point
     - ``denoise``
     - ``(D,)``
   * - :math:`F_\theta`, :math:`\theta`
     - the raw network (that of :doc:`ddpm`); its parameters
     - ``_net``; ``params``
     - ``(D,)``
   * - :math:`c_{\text{skip}}`, :math:`c_{\text{out}}`, :math:`c_{\text{in}}`, :math:`c_{\text{noise}}`
     - the preconditioning: skip connection, output scale, input scale, noise embedding
     - ``preconditioning``
     - scalars
   * - :math:`L`, :math:`\lambda`
     - the training loss; its weight per noise level
     - ``edm_loss``; ``weight``
     - scalar
   * - :math:`P_{\text{mean}}`, :math:`P_{\text{std}}`
     - the mean and spread of the training noise levels, on a log scale
     - ``p_mean``, ``p_std``
     - scalars
   * - :math:`\sigma_i`, :math:`i`, :math:`N`
     - the sampling schedule; a step; the number of steps
     - ``sigma_schedule``; ``i``; ``num_steps``
     - ``(N + 1,)``
   * - :math:`\sigma_{\min}`, :math:`\sigma_{\max}`, :math:`\rho`
     - the schedule's ends and its curvature (7: steps crowd at small :math:`\sigma`)
     - ``sigma_min``, ``sigma_max``, ``rho``
     - scalars

Explanation
-----------

:footcite:t:`karras2022elucidating` separate what earlier papers tied together. Any of the
diffusions of :doc:`score_matching` is, after rescaling, data plus noise of level :math:`\sigma`,
and its probability-flow ODE is the last line above, with the denoiser standing in for the score
(:math:`\nabla \log p = (D - x) / \sigma^2`). Three choices are then free, and each is made on its
own merits.

*Preconditioning.* The network should see inputs and produce targets of unit variance at every
noise level. The input :math:`y + n` has variance :math:`\sigma_d^2 + \sigma^2`, hence
:math:`c_{\text{in}}`; the skip connection :math:`c_{\text{skip}}` passes on as much of :math:`x`
as is the best linear guess of :math:`y`, so the network predicts only the rest, scaled by
:math:`c_{\text{out}}` to unit variance. At low noise it predicts the noise, at high noise the data:
DDPM's :math:`\varepsilon` and the data prediction are the two ends of one interpolation. With
:math:`\lambda` the loss is exactly the unit-weight regression of :math:`F_\theta` on its effective
target, the same at every level.

*Training levels* are log-normal, where the loss can still be reduced (tiny :math:`\sigma` is
trivial, huge :math:`\sigma` hopeless). *Sampling* uses Heun's method, an Euler step followed by a
trapezoidal correction, on a schedule with :math:`\rho = 7` whose steps crowd at small
:math:`\sigma`, where the ODE's curvature is; the last step, to :math:`\sigma = 0`, is a plain Euler
step. A second-order method's error falls as :math:`1/N^2`, so it needs far fewer steps.

.. plot::

   from cookbook.diffusion.edm import sigma_schedule
   fig, ax = plt.subplots(figsize=(6, 3))
   for rho in (1.0, 3.0, 7.0):
       sigmas = sigma_schedule(18, rho=rho)[:-1]
       ax.semilogy(range(18), sigmas, "o-", ms=3, label=f"ρ = {rho:g}")
   ax.set(xlabel="step i", ylabel="σ_i", title="18 levels from 80 to 0.002")
   ax.legend(fontsize=8)
   fig.tight_layout()

With :math:`\rho = 1` the levels are evenly spaced and most steps are spent at large :math:`\sigma`;
with :math:`\rho = 7` they crowd towards the small levels.

.. admonition:: Intuition

   A photographer's light meter: whatever the light (the noise level), the exposure is set so that
   the sensor (the network) sees a well-exposed picture, and the print is scaled back afterwards.
   The network then works in the same conditions at every level instead of learning a hundred
   exposures.

Inductive bias
--------------

The preconditioning assumes that the data's scale :math:`\sigma_d` is known and that a linear
shrinkage is the right first guess at every level; the network learns only the nonlinear
remainder. The schedule and Heun's method assume a smooth ODE whose difficulty lies at low noise.
Nothing here constrains the network; these choices make any network easier to train and sample.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.diffusion.edm import denoise, edm_loss, heun_sample, preconditioning, sigma_schedule, train
>>> from cookbook.diffusion.ddpm import denoiser_init, two_moons
>>> sigma_schedule(4, 0.002, 80.0)  # four levels and the final 0
Array([80.    ,  9.7232,  0.47  ,  0.002 ,  0.    ], dtype=float32)
>>> [round(float(c), 4) for c in preconditioning(jnp.float32(1.0), sigma_data=1.0)]
[0.5, 0.7071, 0.7071, 0.0]
>>> params = denoiser_init(jax.random.key(0), 2)
>>> denoise(params, jnp.zeros(2), jnp.float32(0.5)).shape
(2,)
>>> data = two_moons(jax.random.key(1), 1000)
>>> round(float(edm_loss(params, data, jax.random.key(2))), 1)
1.0
>>> trained, losses = train(params, data, jax.random.key(3), steps=300)
>>> bool(losses[-100:].mean() < losses[:100].mean())
True
>>> heun_sample(trained, jax.random.key(4), 1000, num_steps=10).shape  # 19 network evaluations
(1000, 2)

Implementation notes
--------------------

**Measured.** With the network, data and training length of :doc:`ddpm` (``trained_moons_edm``,
8000 Adam steps), 1000 samples of the Heun sampler with 18 levels (35 network evaluations, the
paper's choice for CIFAR-10) come within twice the data-against-data squared MMD (0.011 against
0.008), and with 10 levels not yet (0.037); the test asserts both. On Gaussian data, where the
denoiser is known exactly, the tests check that Heun's error falls by about four when the number
of steps doubles (0.137 to 0.030 from 16 to 32 levels), and Euler's by about two, ending six times
larger.

**Conventions.** The defaults are the paper's for images (:math:`\sigma_{\min} = 0.002`,
:math:`\sigma_{\max} = 80`, :math:`\rho = 7`, :math:`P_{\text{mean}} = -1.2`,
:math:`P_{\text{std}} = 1.2`), except :math:`\sigma_d = 1`, the scale of the book's standardised
two moons (images in :math:`[-1, 1]` have :math:`\sigma_d = 0.5`). The loss is a mean over points
and coordinates. The stochastic sampler of the paper (its "churn") is not implemented.
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook._memo import cached
from cookbook.diffusion.ddpm import _check_data, _check_params, _fit, _net, _rows, denoiser_init, two_moons
from cookbook.optimization.adam import adam

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "sigma_schedule": ("num_steps",),
    "preconditioning": ("sigma_data",),
    "denoise": ("sigma_data",),
    "edm_loss": ("p_mean", "p_std", "sigma_data"),
    "train": ("steps", "batch_size", "learning_rate", "sigma_data"),
    "heun_sample": ("num_samples", "num_steps", "sigma_data"),
}


def sigma_schedule(num_steps, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """The ``num_steps`` noise levels :math:`\\sigma_i` from ``sigma_max`` down to ``sigma_min``, then 0:
    shape (num_steps + 1,), float32."""
    N = _check_schedule(num_steps, sigma_min, sigma_max, rho)
    # The roots of the ends in Python (in double precision where they are numbers), the rest compiled.
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return _sigma_schedule(hi, lo - hi, rho, N)


def _check_schedule(num_steps, sigma_min, sigma_max, rho):
    N = _checks.size(num_steps, "num_steps", minimum=2)
    for name, value in (("sigma_min", sigma_min), ("sigma_max", sigma_max), ("rho", rho)):
        _checks.positive(value, name)
    if _checks.is_concrete((sigma_min, sigma_max)) and not float(sigma_min) < float(sigma_max):
        raise ValueError(f"sigma_min must be below sigma_max, got {sigma_min} and {sigma_max}")
    return N


# The public functions check their input, then run compiled cores like this one: a repeated call with
# the same shapes (the tests', the bad-input replay's) reuses one compilation instead of dispatching
# op by op, or compiling a fresh lax.scan, each time. sigma_data (and the loss's p_mean and p_std) are
# static, as the Python numbers they are in the training loop.
@functools.partial(jax.jit, static_argnums=3)
def _sigma_schedule(hi, span, rho, N):
    i = jnp.arange(N, dtype=jnp.float32)
    sigmas = (hi + i / (N - 1) * span) ** rho
    return jnp.concatenate([sigmas, jnp.zeros(1)])


def preconditioning(sigma, sigma_data=1.0):
    """``(c_skip, c_out, c_in, c_noise)`` at the noise level ``sigma`` (any shape)."""
    sigma = _checks.float_array(sigma, "sigma")
    _checks.positive(sigma_data, "sigma_data")
    return _preconditioning_jit(sigma, sigma_data=_checks.static_number(sigma_data, "sigma_data"))


def _preconditioning(sigma, sigma_data):
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / jnp.sqrt(total), 1.0 / jnp.sqrt(total), jnp.log(sigma) / 4.0


_preconditioning_jit = jax.jit(_preconditioning, static_argnames="sigma_data")


def _denoise(params, x, sigma, sigma_data):
    c_skip, c_out, c_in, c_noise = _preconditioning(sigma, sigma_data)
    return c_skip * x + c_out * _net(params, c_in * x, c_noise)


def denoise(params, x, sigma, sigma_data=1.0):
    """:math:`D_\\theta(x; \\sigma)` for one point ``x`` (D,) at the scalar level ``sigma``."""
    D = _check_params(params)
    x = _checks.same_shape(_checks.float_array(x, "x"), "x", (D,), expected_from="the data dimension of params")
    sigma = _checks.float_array(sigma, "sigma", ndim=0, what=" (a scalar noise level)")
    _checks.positive(sigma_data, "sigma_data")
    return _denoise_jit(params, x, sigma, sigma_data=_checks.static_number(sigma_data, "sigma_data"))


_denoise_jit = jax.jit(_denoise, static_argnames="sigma_data")


def _edm_loss(params, y, key, p_mean, p_std, sigma_data):
    k_sigma, k_noise = jax.random.split(key)
    sigma = jnp.exp(p_mean + p_std * jax.random.normal(k_sigma, (y.shape[0],), y.dtype))  # (B,)
    noise = _rows(sigma, y) * jax.random.normal(k_noise, y.shape, y.dtype)
    denoised = jax.vmap(_denoise, in_axes=(None, 0, 0, None))(params, y + noise, sigma, sigma_data)  # (B, D)
    weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    return jnp.mean(_rows(weight, y) * (denoised - y) ** 2)


def edm_loss(params, y, key, p_mean=-1.2, p_std=1.2, sigma_data=1.0):
    """:math:`L` on a batch ``y`` (B, D), one log-normal level and one noise per point, averaged over
    points and coordinates."""
    y = _check_data(params, y, "y")
    _checks.positive(p_std, "p_std")
    _checks.positive(sigma_data, "sigma_data")
    return _edm_loss_jit(params, y, key, p_mean=_checks.static_number(p_mean, "p_mean"),
                         p_std=_checks.static_number(p_std, "p_std"),
                         sigma_data=_checks.static_number(sigma_data, "sigma_data"))


_edm_loss_jit = jax.jit(_edm_loss, static_argnames=("p_mean", "p_std", "sigma_data"))


@cached
def train(params, data, key, *, steps, batch_size=128, learning_rate=1e-2, sigma_data=1.0):
    """``steps`` Adam steps on :func:`edm_loss` (the loop of :doc:`ddpm`). Returns the parameters and losses."""
    data = _check_data(params, data, "data")
    steps = _checks.size(steps, "steps")
    batch_size = _checks.size(batch_size, "batch_size")
    _checks.positive(sigma_data, "sigma_data")
    adam(learning_rate)  # its checks of the step size, before anything is traced
    return _train(params, data, key, steps=steps, batch_size=batch_size,
                  learning_rate=_checks.static_number(learning_rate, "learning_rate"),
                  sigma_data=_checks.static_number(sigma_data, "sigma_data"))


@functools.partial(jax.jit, static_argnames=("steps", "batch_size", "learning_rate", "sigma_data"))
def _train(params, data, key, *, steps, batch_size, learning_rate, sigma_data):
    return _fit(params, data, key, steps, batch_size, adam(learning_rate),
                lambda p, y, k: _edm_loss(p, y, k, -1.2, 1.2, sigma_data))


def _heun(denoiser, x, sigmas):
    """Heun's method on dx/dsigma = (x - denoiser(x, sigma)) / sigma through ``sigmas`` (the last 0)."""

    def step(x, i):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        d = (x - denoiser(x, sigma)) / sigma
        x_euler = x + (sigma_next - sigma) * d
        # The correction needs the slope at sigma_next, undefined at 0: the last step stays Euler.
        safe = jnp.where(sigma_next > 0, sigma_next, 1.0)
        d_next = (x_euler - denoiser(x_euler, safe)) / safe
        x_heun = x + (sigma_next - sigma) * 0.5 * (d + d_next)
        return jnp.where(sigma_next > 0, x_heun, x_euler), None

    x, _ = jax.lax.scan(step, x, jnp.arange(sigmas.shape[0] - 1))
    return x


def heun_sample(params, key, num_samples, num_steps, sigma_min=0.002, sigma_max=80.0, rho=7.0, sigma_data=1.0):
    """``num_samples`` points (num_samples, D) by Heun's method through :func:`sigma_schedule`, from
    noise of level ``sigma_max``: ``2 num_steps - 1`` network evaluations."""
    _check_params(params)
    num_samples = _checks.size(num_samples, "num_samples")
    N = _check_schedule(num_steps, sigma_min, sigma_max, rho)
    _checks.positive(sigma_data, "sigma_data")
    sizes = dict(num_samples=num_samples, num_steps=N, sigma_data=_checks.static_number(sigma_data, "sigma_data"))
    if not _checks.is_concrete((sigma_min, sigma_max, rho)):  # traced by an outer jit: arguments of a second core
        return _heun_sample_traced(params, key, sigma_min, sigma_max, rho, **sizes)
    # Numbers: the schedule is built inside the one compiled core, which takes params and key as they come.
    return _heun_sample(params, key, sigma_min=float(sigma_min), sigma_max=float(sigma_max), rho=float(rho), **sizes)


@functools.partial(jax.jit, static_argnames=("sigma_min", "sigma_max", "rho", "num_samples", "num_steps", "sigma_data"))
def _heun_sample(params, key, *, sigma_min, sigma_max, rho, num_samples, num_steps, sigma_data):
    return _heun_sample_traced(params, key, sigma_min, sigma_max, rho, num_samples=num_samples,
                               num_steps=num_steps, sigma_data=sigma_data)


@functools.partial(jax.jit, static_argnames=("num_samples", "num_steps", "sigma_data"))
def _heun_sample_traced(params, key, sigma_min, sigma_max, rho, *, num_samples, num_steps, sigma_data):
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    sigmas = _sigma_schedule(hi, lo - hi, rho, num_steps)
    D = params[-1]["W"].shape[1]
    denoiser = lambda x, s: jax.vmap(_denoise, in_axes=(None, 0, None, None))(params, x, s, sigma_data)  # (B, D)
    return _heun(denoiser, sigmas[0] * jax.random.normal(key, (num_samples, D)), sigmas)


@cached
def trained_moons_edm():
    """The EDM of the tests: the network, data and training length of ``trained_moons_model``."""
    data = jax.jit(two_moons, static_argnums=1)(jax.random.key(7), 4096)
    params = denoiser_init(jax.random.key(0), 2)  # the program of the page's example
    return train.uncached(params, data, jax.random.key(1), steps=8000)  # one compiled core
