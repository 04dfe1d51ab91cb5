r"""Learning-rate schedules
=======================

Make the learning rate a function of the step (constant, step decay, exponential, cosine, warm-up
then cosine, one-cycle): large steps early to travel, small steps late to settle, and a gentle start
where the first gradients are unreliable.

Equation
--------

.. math::

   \eta_{\text{step}}(t) = \eta_0\, \gamma^{\,\#\{i \,:\, t \ge b_i\}}, \qquad
   \eta_{\text{exp}}(t) = \eta_0\, \gamma^{t/T}

   \eta_{\cos}(t) = \eta_0 \left[ (1 - \alpha)\, \tfrac{1}{2}\left(1 + \cos\frac{\pi \min(t,
   T)}{T}\right) + \alpha \right]

   \eta_{\text{warm}}(t) = \begin{cases}
     \eta_0 + (\eta_{\max} - \eta_0)\, t / W & t < W \\
     \eta_{\cos}(t - W) \text{ from } \eta_{\max} \text{ over } T - W \text{ steps} & t \ge W
   \end{cases}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`t`
     - step number, from 0 for the first update
     - ``step``
     - ``()`` or any shape (element-wise)
   * - :math:`\eta_0`
     - initial learning rate
     - ``init_value``
     - scalar
   * - :math:`\eta_{\max}`
     - peak learning rate after warm-up
     - ``peak_value``
     - scalar
   * - :math:`\gamma`
     - decay factor (per boundary, or per :math:`T` steps)
     - ``scale``, ``decay_rate``
     - scalar
   * - :math:`b_i`, :math:`i`
     - the steps at which step decay multiplies by :math:`\gamma`; their index
     - ``boundaries``
     - tuple of ints
   * - :math:`T`
     - decay length (total steps for cosine)
     - ``transition_steps``, ``decay_steps``
     - int
   * - :math:`W`
     - warm-up length
     - ``warmup_steps``
     - int
   * - :math:`\alpha`
     - the final fraction of :math:`\eta_0` that cosine decay keeps
     - ``alpha``
     - scalar

Explanation
-----------

A constant learning rate is a compromise. Early in training the loss is far from its minimum and
large steps cover ground; late in training the stochastic gradient's noise makes a large step
bounce around the minimum at a distance that grows with :math:`\eta`, so the rate must shrink to
settle. Every schedule here is a function from the step to a learning rate, and each is pure and
jit-able: a schedule is evaluated inside the compiled training step.

* **Constant**: no schedule; the baseline, and right for Adam on short runs.
* **Step decay** (piecewise constant): divide by 10 at fixed epochs, the recipe of the ResNet
  papers. Simple and effective, but the boundaries are hyper-parameters tied to the run length.
* **Exponential decay**: the same factor :math:`\gamma` every :math:`T` steps, smoothly (or in a
  staircase with ``staircase=True``).
* **Cosine decay** :footcite:`loshchilov2017sgdr`: half a cosine from :math:`\eta_0` down to
  :math:`\alpha\eta_0` over :math:`T` steps. It spends long at high rates and then falls fast and
  lands softly, with a single hyper-parameter (the length), which is why it became the default.
* **Linear warm-up then cosine**: at step 0 Adam's second-moment estimate comes from one batch and
  the network's activations are at their least tuned, so large steps can diverge; ramping the rate
  up linearly for a few hundred or thousand steps avoids it :footcite:`goyal2017accurate`. Transformers
  are trained this way.
* **One-cycle** :footcite:`smith2019super`: rise from :math:`\eta_{\max}/25` to :math:`\eta_{\max}`
  over the first 30% of training and fall to :math:`\eta_{\max}/(25\cdot 10^4)` over the rest (both
  by half-cosines, as in :func:`optax.cosine_onecycle_schedule`). The high middle phase acts as a
  regulariser and can train in far fewer steps ("super-convergence").

Every function matches optax's schedule of the same shape (tests compare them at hundreds of
steps). The conventions follow optax: the first update sees step 0; step decay applies its factor
from the boundary step on (:math:`t \ge b_i`); cosine decay holds :math:`\alpha\eta_0` after
:math:`T` steps. ``scheduled`` turns any optimiser of this chapter built with
``learning_rate=1.0`` into one whose updates are multiplied by the schedule at each step, which is
exactly what optax does when a schedule is passed as the learning rate.

.. plot::

   import jax.numpy as jnp
   from cookbook.optimization import schedules as s
   t = jnp.arange(1000)
   curves = {
       "constant": s.constant(t, 1.0),
       "step decay (x0.1 at 400, 700)": s.step_decay(t, 1.0, (400, 700), 0.1),
       "exponential (x0.5 per 200)": s.exponential_decay(t, 1.0, 200, 0.5),
       "cosine": s.cosine_decay(t, 1.0, 1000),
       "warm-up 100 + cosine": s.warmup_cosine_decay(t, 0.0, 1.0, 100, 1000),
       "one-cycle": s.one_cycle(t, 1000, 1.0),
   }
   fig, ax = plt.subplots(figsize=(6.4, 4.0))
   for label, lr in curves.items():
       ax.plot(np.asarray(t), np.asarray(lr), label=label, lw=1.5)
   ax.set(xlabel="step t", ylabel="learning rate / peak", title="Learning-rate schedules over 1000 steps")
   ax.legend(fontsize=8)

**Numerical traps.** Steps are integers; they are converted to float before dividing, so that a
count of millions neither overflows int32 arithmetic nor truncates. Warm-up from exactly 0 makes
the first update zero, which is harmless but wastes a step.

.. admonition:: Intuition

   A schedule is the plan for a long drive: pull out of the car park gently (warm-up), cruise
   fast on the open road, and slow down as the destination nears so as not to overshoot it
   (decay). An older inspiration is annealing in metallurgy: metal cooled slowly settles into a
   low-energy, orderly state, and parameters whose noisy steps shrink slowly settle into a low
   loss.

Inductive bias
--------------

A schedule encodes a belief about the shape of training: that the landscape is explored best with
large steps at first and exploited with small ones at the end, and (for warm-up) that the first
gradients are too unreliable to trust at full strength. A schedule fixed in advance cannot react to
what happens; it assumes that the run length is known and that progress is smooth.

Example
-------

>>> import jax.numpy as jnp
>>> from cookbook.optimization.schedules import (
...     constant, cosine_decay, exponential_decay, one_cycle, step_decay, warmup_cosine_decay)
>>> t = jnp.array([0, 50, 100, 150, 200])
>>> constant(t, 0.1)
Array([0.1, 0.1, 0.1, 0.1, 0.1], dtype=float32)
>>> step_decay(t, 1.0, (100, 150), 0.1)
Array([1.  , 1.  , 0.1 , 0.01, 0.01], dtype=float32)
>>> exponential_decay(t, 1.0, 100, 0.5).round(4)
Array([1.    , 0.7071, 0.5   , 0.3536, 0.25  ], dtype=float32)
>>> cosine_decay(t, 1.0, 200).round(4)
Array([1.    , 0.8536, 0.5   , 0.1464, 0.    ], dtype=float32)
>>> warmup_cosine_decay(t, 0.0, 1.0, 50, 200).round(4)
Array([0.  , 1.  , 0.75, 0.25, 0.  ], dtype=float32)
>>> one_cycle(t, 200, 1.0).round(4)
Array([0.04  , 0.9357, 0.8117, 0.2831, 0.    ], dtype=float32)
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.optimization.sgd import GradientTransformation

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "constant": (),
    "step_decay": ("boundaries",),
    "exponential_decay": ("transition_steps", "staircase"),
    "cosine_decay": ("decay_steps",),
    "warmup_cosine_decay": ("warmup_steps", "decay_steps"),
    "one_cycle": ("transition_steps",),
}


def constant(step, value):
    """The same learning rate at every step (shaped like ``step``)."""
    return jnp.full(jnp.shape(jnp.asarray(step)), value, jnp.float32)


def step_decay(step, init_value, boundaries, scale):
    """``init_value`` multiplied by ``scale`` once for every boundary that ``step`` has reached."""
    boundaries = tuple(_checks.size(b, "boundaries", minimum=0) for b in boundaries)
    if list(boundaries) != sorted(boundaries):
        raise ValueError(f"boundaries must be increasing steps, got {boundaries}")
    step = jnp.asarray(step)
    passed = sum((step >= b).astype(jnp.int32) for b in boundaries) if boundaries else jnp.zeros_like(step)
    return init_value * jnp.asarray(scale, jnp.float32) ** passed


def exponential_decay(step, init_value, transition_steps, decay_rate, staircase=False):
    """``init_value * decay_rate ** (step / transition_steps)``, floored to whole periods if ``staircase``."""
    transition_steps = _checks.size(transition_steps, "transition_steps")
    p = jnp.asarray(step, jnp.float32) / transition_steps
    if staircase:
        p = jnp.floor(p)
    return jnp.where(p <= 0, init_value, init_value * jnp.power(decay_rate, p)).astype(jnp.float32)


def cosine_decay(step, init_value, decay_steps, alpha=0.0):
    """Half a cosine from ``init_value`` to ``alpha * init_value`` over ``decay_steps``, then constant."""
    decay_steps = _checks.size(decay_steps, "decay_steps")
    t = jnp.minimum(jnp.asarray(step, jnp.float32), float(decay_steps))
    cosine = 0.5 * (1 + jnp.cos(jnp.pi * t / decay_steps))
    return init_value * ((1 - alpha) * cosine + alpha)


def warmup_cosine_decay(step, init_value, peak_value, warmup_steps, decay_steps, end_value=0.0):
    """Linear warm-up from ``init_value`` to ``peak_value`` over ``warmup_steps``, then cosine decay
    to ``end_value`` at step ``decay_steps`` (which counts the warm-up)."""
    warmup_steps = _checks.size(warmup_steps, "warmup_steps")
    decay_steps = _checks.size(decay_steps, "decay_steps")
    if not decay_steps > warmup_steps:
        raise ValueError(f"decay_steps must exceed warmup_steps={warmup_steps}, got {decay_steps}")
    t = jnp.asarray(step, jnp.float32)
    warm = init_value + (peak_value - init_value) * jnp.clip(t, 0, warmup_steps) / warmup_steps
    safe_peak = jnp.where(peak_value == 0, 1.0, peak_value)
    alpha = jnp.where(peak_value == 0, 0.0, end_value / safe_peak)  # the fraction of the peak kept at the end
    decay = cosine_decay(t - warmup_steps, peak_value, decay_steps - warmup_steps, alpha)
    return jnp.where(t < warmup_steps, warm, decay)


def _cosine_between(start, end, fraction):
    return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * fraction) + 1)


def one_cycle(step, transition_steps, peak_value, pct_start=0.3, div_factor=25.0, final_div_factor=1e4):
    """Cosine rise from ``peak_value / div_factor`` to the peak over ``pct_start`` of the steps, then
    cosine fall to ``peak_value / (div_factor * final_div_factor)`` at ``transition_steps``."""
    transition_steps = _checks.size(transition_steps, "transition_steps")
    t = jnp.asarray(step, jnp.float32)
    start, low = peak_value / div_factor, peak_value / (div_factor * final_div_factor)
    top = int(pct_start * transition_steps)  # the peak step, an integer as in optax
    rise = _cosine_between(start, peak_value, t / max(top, 1))
    fall = _cosine_between(peak_value, low, (t - top) / max(transition_steps - top, 1))
    return jnp.where(t < top, rise, jnp.where(t < transition_steps, fall, low))


class ScheduledState(NamedTuple):
    """The number of updates made so far, and the wrapped optimiser's state."""

    count: jax.Array
    inner: object


def scheduled(optimizer, schedule):
    """Multiply the updates of ``optimizer`` (built with learning rate 1) by ``schedule(count)``.

    ``count`` is 0 at the first update, as in optax when a schedule is the learning rate.
    """

    def init(params):
        return ScheduledState(jnp.zeros((), jnp.int32), optimizer.init(params))

    def update(grads, state, params=None):
        updates, inner = optimizer.update(grads, state.inner, params)
        eta = schedule(state.count)
        return jax.tree.map(lambda u: u * eta, updates), ScheduledState(state.count + 1, inner)

    return GradientTransformation(init, update)
