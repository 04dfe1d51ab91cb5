r"""Denoising diffusion implicit models
===================================

Sample from a network trained as a DDPM in ten or twenty steps instead of a hundred or a thousand,
by jumping along a subsequence of the steps with an update that needs no fresh noise: the
drop-in sampler for any noise-predicting diffusion model when sampling time matters.

Equation
--------

.. math::

   \hat x_0 = \frac{x_t - \sqrt{1 - \bar\alpha_t}\, \varepsilon_\theta(x_t, t)}{\sqrt{\bar\alpha_t}}, \qquad
   \sigma_t = \eta \sqrt{\frac{1 - \bar\alpha_s}{1 - \bar\alpha_t}}\,
   \sqrt{1 - \frac{\bar\alpha_t}{\bar\alpha_s}}

   x_s = \sqrt{\bar\alpha_s}\, \hat x_0
   + \sqrt{1 - \bar\alpha_s - \sigma_t^2}\; \varepsilon_\theta(x_t, t) + \sigma_t\, z, \qquad
   s < t, \qquad \bar\alpha_0 = 1

   T = \tau_S > \tau_{S-1} > \dots > \tau_1 > \tau_0 = 0

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_t`, :math:`x_s`
     - the point at the current step; at the earlier step that the update jumps to
     - ``xt``; the result of ``ddim_step``
     - ``(D,)``, batched ``(B, D)``
   * - :math:`t`, :math:`s`
     - the current step and the step jumped to, :math:`s < t` (0-based in the code: page
       :math:`t` is index :math:`t - 1`, and :math:`s = 0` is index :math:`-1`)
     - ``t``, ``t_prev``
     - scalar or ``(B,)``
   * - :math:`\bar\alpha_t`
     - the signal variance left after :math:`t` steps, as in :doc:`ddpm`
     - ``alpha_bar[t]``
     - ``(T,)``
   * - :math:`\varepsilon_\theta`, :math:`\theta`
     - the noise predicted by the DDPM network; its parameters
     - ``eps``; ``params``
     - ``(D,)``
   * - :math:`\hat x_0`
     - the clean point that the predicted noise implies
     - ``x0_hat``
     - ``(D,)``
   * - :math:`\eta`
     - how much fresh noise: 0 deterministic (DDIM), 1 as much as DDPM
     - ``eta``
     - scalar
   * - :math:`\sigma_t`
     - the standard deviation of the fresh noise
     - ``sigma``
     - scalar or ``(B,)``
   * - :math:`z`
     - standard normal noise
     - ``noise``
     - ``(D,)``
   * - :math:`\tau_i`, :math:`S`, :math:`T`
     - the subsequence of steps that the sampler visits; its number of jumps; the number of steps of
       the schedule
     - ``ddim_timesteps``; ``num_steps``; the length of ``alpha_bar``
     - ``(S,)``; scalars

Explanation
-----------

A DDPM is trained only through :math:`q(x_t \mid x_0)`, one step at a time, never through the
chain that links the steps. :footcite:t:`song2021denoising` observe that many processes share these
marginals, and give a family of them indexed by :math:`\eta`. Each step of the reverse of one of
them reads as a recipe: guess the clean point :math:`\hat x_0` from the predicted noise, then put
the point back at the noise level of step :math:`s` by mixing the guess with the *same* predicted
noise, plus fresh noise of standard deviation :math:`\sigma_t`. With :math:`\eta = 1` and
:math:`s = t - 1` this is exactly DDPM's ancestral step (the tests check it to float64 precision);
with :math:`\eta = 0` no fresh noise is added and the sampler is a deterministic map from
:math:`x_T` to a sample, a discretisation of the probability-flow ODE of the diffusion
:footcite:`song2021score`.

Because the same network serves every member of the family, nothing needs retraining: jump along a
subsequence :math:`\tau` of the steps, ten instead of a hundred. The deterministic update tolerates
large jumps far better than the stochastic one, which adds at every jump noise meant to be removed
by the many small steps that were skipped.

.. admonition:: Intuition

   Walking down a foggy hill, the ancestral sampler takes small steps and lets itself be jostled at
   each one; the jostles average out only over many steps. DDIM looks at where the path is heading
   (the guess :math:`\hat x_0`), takes one long stride in that direction, and looks again: with no
   jostling, ten long strides end about where a hundred short ones would.

.. plot::

   from cookbook.diffusion.ddim import sampler_quality
   steps, ddim, ddpm, flow, baseline = sampler_quality()
   fig, ax = plt.subplots(figsize=(6, 3.4))
   ax.loglog(steps, ddim, "o-", label="DDIM, η = 0 (DDPM network)")
   ax.loglog(steps, ddpm, "s-", label="DDIM, η = 1: ancestral (DDPM network)")
   ax.loglog(steps, flow, "^-", label="flow matching, Euler")
   ax.axhline(2 * baseline, color="k", ls="--", lw=1, label="twice data against data")
   ax.set(xlabel="network evaluations per sample", ylabel="squared MMD to the data",
          title="two moons, 1000 samples")
   ax.legend(fontsize=7)
   fig.tight_layout()

On the two moons of :doc:`ddpm`, the network of that page sampled by this update with
:math:`\eta = 0` comes within twice the data's own discrepancy in 20 steps; with :math:`\eta = 1`
it needs 50. The velocity field of :doc:`flow_matching`, integrated by Euler steps, needs only 10.

Inductive bias
--------------

DDIM adds no assumption about the data; it changes only how the trained network is used. Its
deterministic form assumes that the predicted noise is accurate enough to be reused without
correction: errors of the network are not washed out by fresh noise, so a poor network degrades
more gracefully under ancestral sampling. Its map from noise to samples is smooth, so nearby
starting points give similar samples, which makes interpolation and inversion possible.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.diffusion.ddim import ddim_sample, ddim_step, ddim_timesteps
>>> from cookbook.diffusion.ddpm import alpha_bar_schedule, denoiser_init, linear_beta_schedule
>>> alpha_bar = alpha_bar_schedule(linear_beta_schedule(100, 1e-3, 0.2))
>>> ddim_timesteps(10, 100)  # the steps visited, 0-based; after the last comes -1, the data
array([ 9, 19, 29, 39, 49, 59, 69, 79, 89, 99], dtype=int32)
>>> x0 = jnp.array([[1.0, -2.0]])
>>> eps = jnp.array([[0.3, 0.5]])
>>> xt = jnp.sqrt(alpha_bar[49]) * x0 + jnp.sqrt(1 - alpha_bar[49]) * eps
>>> ddim_step(xt, eps, 49, -1, alpha_bar)  # with the true noise, one jump lands on the data
Array([[ 1., -2.]], dtype=float32)
>>> params = denoiser_init(jax.random.key(0), 2)
>>> ddim_sample(params, jax.random.key(1), 5, alpha_bar, num_steps=10).shape
(5, 2)

Implementation notes
--------------------

**Measured.** ``sampler_quality`` computes the figure: the squared MMD (``mmd2`` of :doc:`ddpm`)
of 1000 samples to 1000 data points, from the same starting noise for every sampler. With the
network of :doc:`ddpm` (``trained_moons_model``) the deterministic sampler reaches 0.029 with 10
steps and 0.012 with 20, the ancestral one 0.052 and 0.019; the Euler steps on the field of
:doc:`flow_matching` 0.011 and 0.007; two draws of the data are 0.008 apart. The tests assert the
steps at which each crosses twice that baseline.

**Conventions.** ``t`` and ``t_prev`` are 0-based indices into ``alpha_bar``, scalars or one per
row of ``xt``, with ``t_prev = -1`` the data (:math:`\bar\alpha = 1`, no fresh noise). ``noise`` may
be omitted only when ``eta`` is 0. A concrete ``t_prev`` that is not before ``t`` raises an error;
under :func:`jax.jit` it is traced and an index outside the schedule reads NaN, as in :doc:`ddpm`.
``ddim_timesteps`` spaces the visited steps evenly and ends on the last one, :math:`\tau_i =
\lfloor i T / S \rfloor - 1` (the "uniform" choice of the paper; "quadratic" spacing crowds them near
the data).

**Libraries.** ``diffusers.DDIMScheduler`` (``eta`` passed to ``step``) implements the same update;
its ``set_timesteps`` offers "leading", "trailing" and "linspace" spacings, of which "trailing" is
the one here.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks
from cookbook._memo import cached
from cookbook.diffusion.ddpm import (
    _at, _check_params, _net, _rows, _same_as, _schedule, _steps, linear_beta_schedule, mmd2, trained_moons_model,
    two_moons,
)

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"ddim_step": (), "ddim_sample": ("num_samples", "num_steps")}


def ddim_timesteps(num_steps, num_train_steps):
    """The ``num_steps`` steps that the sampler visits, ascending 0-based indices ending on the last
    one of ``num_train_steps``: :math:`\\lfloor i T / S \\rfloor - 1` for i = 1 .. S."""
    S = _checks.size(num_steps, "num_steps")
    T = _checks.size(num_train_steps, "num_train_steps")
    if S > T:
        raise ValueError(f"num_steps must be at most num_train_steps = {T}, got {S}")
    return (np.arange(1, S + 1) * T // S - 1).astype(np.int32)


def _check_eta(eta):
    _checks.positive(eta, "eta", allow_zero=True)
    if _checks.is_concrete(eta) and float(eta) > 1.0:
        raise ValueError(f"eta must lie in [0, 1] (more fresh noise than DDPM has no valid step), got {eta}")


def ddim_step(xt, eps, t, t_prev, alpha_bar, eta=0.0, noise=None):
    """The point at step ``t_prev`` from ``xt`` at step ``t`` and its predicted noise ``eps`` (equation
    12 of Song, Meng and Ermon); ``t_prev = -1`` is the data. ``noise`` is needed when ``eta > 0``."""
    xt = _checks.float_array(xt, "xt")
    eps = _same_as(eps, "eps", xt, "xt")
    alpha_bar = _schedule(alpha_bar, "alpha_bar", minimum=1)
    T = alpha_bar.shape[0]
    t = _steps(t, xt, "xt", "alpha_bar", T)
    t_prev = _checks.int_array(t_prev, "t_prev")
    if t_prev.shape not in ((), t.shape) or (t_prev.ndim and t.ndim == 0):
        raise ValueError(f"t_prev must have the shape of t, {tuple(t.shape)}, or be a scalar, got shape {tuple(t_prev.shape)}")
    _checks.check_range(t_prev, f"t_prev (an index into alpha_bar of length {T}, or -1)", -1, T)
    if _checks.is_concrete((t, t_prev)) and bool(np.any(np.asarray(t_prev) >= np.asarray(t))):
        raise ValueError(f"t_prev must come before t (t_prev < t), got t = {np.asarray(t)} and t_prev = {np.asarray(t_prev)}")
    _check_eta(eta)
    if noise is None:
        if not (_checks.is_concrete(eta) and float(eta) == 0.0):
            raise ValueError(f"noise is needed when eta is not 0, got eta = {eta} and noise = None")
    else:
        noise = _same_as(noise, "noise", xt, "xt")
    return _ddim_step(xt, eps, t, t_prev, alpha_bar, eta, noise)


# The public functions check their input, then run compiled cores like this one: the page's calls,
# the tests' and the jit check's reuse one program per shape instead of dispatching op by op.
@jax.jit
def _ddim_step(xt, eps, t, t_prev, alpha_bar, eta, noise):
    if noise is None:  # eta is 0
        noise = jnp.zeros_like(xt)
    a_t = _at(alpha_bar, t)
    a_prev = jnp.where(t_prev == -1, 1.0, _at(alpha_bar, t_prev))
    sigma = eta * jnp.sqrt((1.0 - a_prev) / (1.0 - a_t)) * jnp.sqrt(1.0 - a_t / a_prev)
    x0_hat = (xt - _rows(jnp.sqrt(1.0 - a_t), xt) * eps) / _rows(jnp.sqrt(a_t), xt)
    # max(0, .) only guards rounding: 1 - a_prev - sigma^2 >= 0 for eta <= 1, and eta > 1 is refused.
    direction = jnp.sqrt(jnp.maximum(1.0 - a_prev - sigma**2, 0.0))
    return _rows(jnp.sqrt(a_prev), xt) * x0_hat + _rows(direction, xt) * eps + _rows(sigma, xt) * noise


def _ddim_loop(params, x, key, alpha_bar, num_steps, eta):
    """The sampler's loop; ``num_steps`` and ``eta`` may be traced (one compilation for the figure)."""
    T = alpha_bar.shape[0]
    keys = jax.random.split(key, T)  # at most T jumps; jump i uses keys[i]

    def jump(j, x):
        i = num_steps - j  # from S down to 1
        t = i * T // num_steps - 1
        t_prev = (i - 1) * T // num_steps - 1
        eps = jax.vmap(_net, in_axes=(None, 0, None))(params, x, (t + 1.0) / T)  # (B, D)
        noise = jax.random.normal(keys[j], x.shape, x.dtype)
        return ddim_step(x, eps, t, t_prev, alpha_bar, eta, noise)

    return jax.lax.fori_loop(0, num_steps, jump, x)


def ddim_sample(params, key, num_samples, alpha_bar, num_steps, eta=0.0):
    """``num_samples`` points (num_samples, D) from the DDPM noise predictor ``params`` in ``num_steps``
    jumps along :func:`ddim_timesteps`, with fresh noise scaled by ``eta``."""
    D = _check_params(params)
    num_samples = _checks.size(num_samples, "num_samples")
    alpha_bar = _schedule(alpha_bar, "alpha_bar")
    ddim_timesteps(num_steps, alpha_bar.shape[0])  # checks num_steps
    _check_eta(eta)
    return _ddim_sample(params, key, num_samples, alpha_bar, num_steps, eta)


@functools.partial(jax.jit, static_argnums=(2, 4))
def _ddim_sample(params, key, num_samples, alpha_bar, num_steps, eta):
    D = params[-1]["W"].shape[1]
    k_start, k_jumps = jax.random.split(key)
    x = jax.random.normal(k_start, (num_samples, D))
    return _ddim_loop(params, x, k_jumps, alpha_bar, num_steps, eta)


@cached
def sampler_quality(steps=(1, 2, 5, 10, 20, 50, 100), num_samples=1000):
    """The chapter's comparison: the squared MMD to 1000 data points of ``num_samples`` samples of
    DDIM (eta 0 and 1, the DDPM network) and of Euler on the flow-matching field, for each number of
    network evaluations in ``steps``; and the data-against-data baseline."""
    from cookbook.diffusion.flow_matching import _euler, trained_moons_flow

    ddpm_params, _ = trained_moons_model()
    flow_params, _ = trained_moons_flow()
    alpha_bar = jnp.cumprod(1.0 - linear_beta_schedule(100, 1e-3, 0.2))
    data = jax.jit(two_moons, static_argnums=1)(jax.random.key(3), 1000)
    other = jax.jit(two_moons, static_argnums=1)(jax.random.key(4), 1000)

    @jax.jit
    def scores(num_steps):
        x = jax.random.normal(jax.random.key(5), (num_samples, 2))
        key = jax.random.key(6)
        deterministic = _ddim_loop(ddpm_params, x, key, alpha_bar, num_steps, 0.0)
        ancestral = _ddim_loop(ddpm_params, x, key, alpha_bar, num_steps, 1.0)
        velocity = lambda y, t: jax.vmap(_net, in_axes=(None, 0, None))(flow_params, y, t)
        flow = _euler(velocity, x, num_steps)
        return jnp.stack([mmd2(deterministic, data), mmd2(ancestral, data), mmd2(flow, data)])

    table = np.stack([np.asarray(scores(jnp.int32(k))) for k in steps])
    return np.array(steps), table[:, 0], table[:, 1], table[:, 2], float(jax.jit(mmd2)(other, data))
