r"""Consistency models
==================

Train a network to map any point on a probability-flow trajectory straight to the trajectory's
end, so that one network evaluation turns noise into a sample: diffusion-quality generation in one
or two steps, distilled here from the Heun sampler of :doc:`edm`.

Equation
--------

.. math::

   f_\theta(x, \sigma) = c_{\text{skip}}(\sigma)\, x + c_{\text{out}}(\sigma)\, F_\theta(c_{\text{in}}(\sigma)\, x;\ \sigma),
   \qquad c_{\text{skip}} = \frac{\sigma_d^2}{(\sigma - \epsilon)^2 + \sigma_d^2}, \quad
   c_{\text{out}} = \frac{\sigma_d (\sigma - \epsilon)}{\sqrt{\sigma^2 + \sigma_d^2}}

   L(\theta) = \mathbb{E}_{n, y, z}\, \big\lVert f_\theta(y + \sigma_{n+1} z,\ \sigma_{n+1})
   - f_{\theta^-}(\hat x_n,\ \sigma_n) \big\rVert^2, \qquad
   \hat x_n = \operatorname{Heun}_{\phi}(y + \sigma_{n+1} z;\ \sigma_{n+1} \to \sigma_n)

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`f_\theta`, :math:`\theta`
     - the consistency function: the end of the trajectory through :math:`x` at level :math:`\sigma`;
       its parameters
     - ``consistency_function``; ``params``
     - ``(D,)``
   * - :math:`F_\theta`
     - the raw network (that of :doc:`ddpm`)
     - ``_net``
     - ``(D,)``
   * - :math:`x`, :math:`y`, :math:`z`
     - a noisy point; a data point; standard normal noise
     - ``x``; ``y``; ``noise``
     - ``(D,)``
   * - :math:`\sigma`, :math:`\sigma_d`, :math:`\epsilon`
     - the noise level; the data's standard deviation; the smallest level, where :math:`f` is the identity
     - ``sigma``; ``_SIGMA_DATA``; ``_EPS``
     - scalars
   * - :math:`c_{\text{skip}}`, :math:`c_{\text{out}}`, :math:`c_{\text{in}}`
     - the preconditioning of :doc:`edm`, shifted so that :math:`c_{\text{out}}(\epsilon) = 0`
     - ``c_skip``, ``c_out``, ``c_in``
     - scalars
   * - :math:`\sigma_n`, :math:`n`
     - the levels of the discretised trajectory (the :math:`\rho` schedule of :doc:`edm`); an index
     - ``sigmas``; ``n``
     - ``(N,)``
   * - :math:`L`, :math:`\theta^-`
     - the consistency-distillation loss; the parameters of the target, held constant (no gradient)
     - ``distillation_loss``; ``jax.lax.stop_gradient(params)``
     - scalar
   * - :math:`\hat x_n`, :math:`\phi`
     - one Heun step of the teacher's probability-flow ODE; the teacher's parameters (an :doc:`edm` model)
     - ``x_prev``; ``teacher``
     - ``(D,)``

Explanation
-----------

The probability-flow ODE of :doc:`score_matching` and :doc:`edm` carries every noisy point along a
deterministic trajectory to a sample. A *consistency function* maps every point of a trajectory to
that trajectory's end :footcite:`song2023consistency`; with it, a sample is one evaluation at the
largest noise level. It is characterised by two properties: it is the identity at the smallest
level :math:`\epsilon`, and it takes the same value at any two points of one trajectory.

The first property holds *by construction*: :math:`c_{\text{skip}}(\epsilon) = 1` and
:math:`c_{\text{out}}(\epsilon) = 0`, so :math:`f_\theta(x, \epsilon) = x` exactly, whatever the
network. The second is learned: take a noisy point at level :math:`\sigma_{n+1}`, move it one step
down its trajectory with the teacher's ODE solver, and ask that the function agree at the two
points, the target side held fixed. Agreement between neighbours, anchored at :math:`\epsilon`,
propagates along the whole trajectory. Distillation uses a trained diffusion model as the teacher;
consistency *training* replaces the solver step by the same noise at both levels and needs no
teacher. On the two moons, one evaluation of the distilled model comes within twice the data's own
discrepancy, where the teacher's Heun sampler needs more than 19 (:doc:`edm`).

.. admonition:: Intuition

   Every raindrop on a mountain ends in some lake. A guide who has watched the water for long
   enough can, from any spot and without following the stream, point at the lake it will reach;
   she learns it by checking that her answer at one spot agrees with her answer a little way
   downstream, and at the shore the answer is the spot itself.

Inductive bias
--------------

The model assumes a teacher whose trajectories are worth copying, and that the map from noise to
sample is smooth enough for one network to represent in one evaluation; where the trajectories
bend sharply, a one-step model blurs, and a second step (add noise, map again) recovers part of the
quality.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.diffusion.consistency_models import consistency_function, distillation_loss, distill, sample
>>> from cookbook.diffusion.ddpm import denoiser_init, two_moons
>>> params = denoiser_init(jax.random.key(0), 2)
>>> x = jnp.array([0.3, -1.2])
>>> consistency_function(params, x, jnp.float32(0.002))  # the identity at the smallest level, exactly
Array([ 0.3, -1.2], dtype=float32)
>>> data = two_moons(jax.random.key(1), 1000)
>>> teacher = denoiser_init(jax.random.key(2), 2)
>>> float(distillation_loss(params, teacher, data, jax.random.key(3))) > 0
True
>>> trained, losses = distill(params, teacher, data, jax.random.key(4), steps=100)
>>> sample(trained, jax.random.key(5), 1000, num_steps=1).shape  # one network evaluation per sample
(1000, 2)

Implementation notes
--------------------

**Measured.** Distilled for 4000 steps from the two-moons model of :doc:`edm` (``trained_moons_edm``),
starting from its parameters, with :math:`N = 18` levels (``distilled_moons``). The squared MMD of
1000 samples to the data is 0.014 with one network evaluation and 0.010 with two (two draws of the
data: 0.008); the teacher's own Heun sampler with two levels (three evaluations) is at 0.50, and
its parameters used as a consistency function before distillation at 2.0. The tests assert these.

**Conventions.** :math:`\epsilon = 0.002`, :math:`\sigma_{\max} = 80`, :math:`\sigma_d = 1` as in
:doc:`edm`; the distance is the squared Euclidean one (the paper also uses LPIPS for images); the
target network is the current one without gradient, as in the improved recipe of
:footcite:t:`song2024improved`, rather than an exponential moving average. Multistep sampling
alternates a jump to the data with fresh noise at a lower level.
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook._memo import cached
from cookbook.diffusion.ddpm import _check_data, _check_params, _fit, _net, _rows, two_moons
from cookbook.diffusion.edm import _denoise, sigma_schedule, trained_moons_edm
from cookbook.optimization.adam import adam

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "consistency_function": (),
    "distillation_loss": ("num_levels",),
    "distill": ("steps", "num_levels", "batch_size", "learning_rate"),
    "sample": ("num_samples", "num_steps"),
}

_EPS, _SIGMA_MAX, _SIGMA_DATA = 0.002, 80.0, 1.0


def _f(params, x, sigma):
    sd2 = _SIGMA_DATA**2
    c_skip = sd2 / ((sigma - _EPS) ** 2 + sd2)
    c_out = _SIGMA_DATA * (sigma - _EPS) / jnp.sqrt(sigma**2 + sd2)
    c_in = 1.0 / jnp.sqrt(sigma**2 + sd2)
    return c_skip * x + c_out * _net(params, c_in * x, jnp.log(sigma) / 4.0)


def consistency_function(params, x, sigma):
    """:math:`f_\\theta(x, \\sigma)` for one point ``x`` (D,) at the scalar level ``sigma`` >= 0.002."""
    D = _check_params(params)
    x = _checks.same_shape(_checks.float_array(x, "x"), "x", (D,), expected_from="the data dimension of params")
    sigma = _checks.float_array(sigma, "sigma", ndim=0, what=" (a scalar noise level)")
    return _f_jit(params, x, sigma)


# The public functions check their input, then run compiled cores like this one: a repeated call
# with the same shapes (the tests', the bad-input replay's) reuses one compilation instead of
# dispatching op by op, or compiling a fresh lax.scan, each time.
_f_jit = jax.jit(_f)


def _levels(num_levels):
    return jnp.flip(sigma_schedule(num_levels, _EPS, _SIGMA_MAX)[:-1])  # ascending, eps .. sigma_max


def _distillation_loss(params, teacher, y, key, sigmas):
    k_n, k_noise = jax.random.split(key)
    B = y.shape[0]
    n = jax.random.randint(k_n, (B,), 0, sigmas.shape[0] - 1)
    sigma, sigma_next = sigmas[n], sigmas[n + 1]  # (B,)
    noise = jax.random.normal(k_noise, y.shape, y.dtype)
    x_next = y + _rows(sigma_next, y) * noise
    denoise = jax.vmap(_denoise, in_axes=(None, 0, 0, None))
    d = (x_next - denoise(teacher, x_next, sigma_next, _SIGMA_DATA)) / _rows(sigma_next, y)
    x_euler = x_next + _rows(sigma - sigma_next, y) * d
    d_prev = (x_euler - denoise(teacher, x_euler, sigma, _SIGMA_DATA)) / _rows(sigma, y)
    x_prev = x_next + _rows(sigma - sigma_next, y) * 0.5 * (d + d_prev)  # one Heun step down
    f = jax.vmap(_f, in_axes=(None, 0, 0))
    online = f(params, x_next, sigma_next)
    target = f(jax.lax.stop_gradient(params), jax.lax.stop_gradient(x_prev), sigma)
    return jnp.mean((online - target) ** 2)


def distillation_loss(params, teacher, y, key, num_levels=18):
    """:math:`L` on a batch ``y`` (B, D): one pair of neighbouring levels and one noise per point."""
    y = _check_data(params, y, "y")
    _check_data(teacher, y, "y", "teacher")
    num_levels = _checks.size(num_levels, "num_levels", minimum=2)
    return _distillation_loss_jit(params, teacher, y, key, num_levels)


@functools.partial(jax.jit, static_argnums=4)
def _distillation_loss_jit(params, teacher, y, key, num_levels):
    return _distillation_loss(params, teacher, y, key, _levels(num_levels))


@cached
def distill(params, teacher, data, key, *, steps, num_levels=18, batch_size=128, learning_rate=1e-3):
    """``steps`` Adam steps on :func:`distillation_loss` (the loop of :doc:`ddpm`)."""
    data = _check_data(params, data, "data")
    _check_data(teacher, data, "data", "teacher")
    steps = _checks.size(steps, "steps")
    num_levels = _checks.size(num_levels, "num_levels", minimum=2)
    batch_size = _checks.size(batch_size, "batch_size")
    adam(learning_rate)  # its checks of the step size, before anything is traced
    return _distill(params, teacher, data, key, steps, num_levels, batch_size, learning_rate)


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _distill(params, teacher, data, key, steps, num_levels, batch_size, learning_rate):
    sigmas = _levels(num_levels)
    return _fit(params, data, key, steps, batch_size, adam(learning_rate),
                lambda p, y, k: _distillation_loss(p, teacher, y, k, sigmas))


def sample(params, key, num_samples, num_steps=1):
    """``num_samples`` points: a jump from noise of level 80 to the data, then ``num_steps - 1`` times
    fresh noise at a level halfway down the schedule (on a log scale) and another jump."""
    D = _check_params(params)
    num_samples = _checks.size(num_samples, "num_samples")
    num_steps = _checks.size(num_steps, "num_steps")
    return _sample(params, key, D, num_samples, num_steps)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _sample(params, key, D, num_samples, num_steps):
    keys = jax.random.split(key, num_steps)
    f = jax.vmap(_f, in_axes=(None, 0, None))
    x = f(params, _SIGMA_MAX * jax.random.normal(keys[0], (num_samples, D)), jnp.float32(_SIGMA_MAX))
    for k in range(1, num_steps):  # a Python loop: num_steps is small and static
        sigma = jnp.float32(_SIGMA_MAX ** (1.0 - k / num_steps) * _EPS ** (k / num_steps))
        noisy = x + jnp.sqrt(sigma**2 - _EPS**2) * jax.random.normal(keys[k], x.shape)
        x = f(params, noisy, sigma)
    return x


@cached
def distilled_moons(steps=4000):
    """The consistency model of the tests, distilled from ``trained_moons_edm`` and started from it."""
    teacher, _ = trained_moons_edm()
    data = jax.jit(two_moons, static_argnums=1)(jax.random.key(7), 4096)
    return jax.jit(distill.uncached, static_argnames=("steps", "num_levels", "batch_size", "learning_rate"))(
        teacher, teacher, data, jax.random.key(30), steps=steps)
