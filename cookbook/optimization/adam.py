r"""Adam and AMSGrad
================

Keep moving averages of each parameter's gradient and squared gradient, correct their start-up bias,
and step by their ratio: the default optimiser of deep learning, robust to the scale of every
parameter and quick to tune.

Equation
--------

.. math::

   m_t = \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, \qquad
   v_t = \beta_2 v_{t-1} + (1 - \beta_2)\, g_t \odot g_t, \qquad m_0 = v_0 = 0

   \hat{m}_t = \frac{m_t}{1 - \beta_1^t}, \qquad \hat{v}_t = \frac{v_t}{1 - \beta_2^t}, \qquad
   \theta_t = \theta_{t-1} - \eta\, \frac{\hat{m}_t}{\sqrt{\hat{v}_t} + \epsilon}

   \text{AMSGrad:}\quad \tilde{v}_t = \max(\tilde{v}_{t-1}, \hat{v}_t), \qquad
   \theta_t = \theta_{t-1} - \eta\, \frac{\hat{m}_t}{\sqrt{\tilde{v}_t} + \epsilon}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`\theta_t`
     - the parameters after step :math:`t`
     - ``params``
     - like the parameters
   * - :math:`g_t`
     - the gradient at step :math:`t`
     - ``grads``
     - like the parameters
   * - :math:`m_t`, :math:`\hat{m}_t`
     - first moment (moving average of gradients); bias-corrected
     - ``state.mu``; ``mu_hat``
     - like the parameters
   * - :math:`v_t`, :math:`\hat{v}_t`
     - second moment (moving average of squared gradients); bias-corrected
     - ``state.nu``; ``nu_hat``
     - like the parameters
   * - :math:`\tilde{v}_t`
     - AMSGrad's running maximum of :math:`\hat{v}_t`
     - ``state.nu_max``
     - like the parameters
   * - :math:`\beta_1`, :math:`\beta_2`
     - decay rates of the two averages
     - ``b1``, ``b2``
     - scalars in :math:`[0, 1)`
   * - :math:`\eta`
     - learning rate
     - ``learning_rate``
     - scalar
   * - :math:`\epsilon`
     - a small constant added to the root
     - ``eps``
     - scalar
   * - :math:`t`
     - step number, from 1
     - ``state.count``
     - ``()`` int32

Explanation
-----------

Adam :footcite:`kingma2015adam` combines the two ideas before it. The first moment :math:`m_t` is
momentum (:doc:`sgd`) written as an average rather than a sum, and the second moment :math:`v_t` is
RMSProp's average of squared gradients (:doc:`rmsprop`). Their ratio
:math:`\hat{m}_t/\sqrt{\hat{v}_t}` is a signal-to-noise ratio per coordinate: close to
:math:`\pm 1` when the gradient points the same way step after step, close to 0 when it flips sign
at random. So the step size is about :math:`\eta` in each coordinate when the direction is
consistent, whatever the scale of the gradient, and shrinks by itself where the gradient is noise.
That makes :math:`\eta` a bound on how far a parameter moves per step, which is why one learning
rate (:math:`10^{-3}` or :math:`3\times 10^{-4}`) works across so many models.

**Why bias correction.** The averages start at zero, so early on they are too small. Unrolling the
recursion gives :math:`m_t = (1-\beta_1)\sum_{i=1}^{t} \beta_1^{t-i} g_i`. If the gradients are
drawn from a stationary distribution with mean :math:`\mathbb{E}[g]`, then

.. math::

   \mathbb{E}[m_t] = (1-\beta_1)\sum_{i=1}^{t}\beta_1^{t-i}\,\mathbb{E}[g]
   = (1-\beta_1)\,\frac{1-\beta_1^t}{1-\beta_1}\,\mathbb{E}[g] = (1-\beta_1^t)\,\mathbb{E}[g],

a geometric series. Dividing by :math:`1-\beta_1^t` therefore makes :math:`\hat{m}_t` an unbiased
estimate of the mean gradient from the very first step, and the same argument with :math:`g\odot g`
gives :math:`\hat{v}_t`. The correction matters most for :math:`v`: with :math:`\beta_2 = 0.999`,
:math:`1-\beta_2^t` is only about :math:`t/1000` for small :math:`t`, so without it the first
hundred steps would divide by a root far too small and take huge steps. At :math:`t = 1`,
:math:`\hat{m}_1/\sqrt{\hat{v}_1} = g_1/|g_1|`: the first step is a sign step of size :math:`\eta`.

**AMSGrad.** :footcite:t:`reddi2018convergence` built a simple convex problem on which Adam
converges to the *worst* point, because a rare large gradient is forgotten by :math:`v_t` after a
few hundred steps and the step size then grows again. AMSGrad keeps the running maximum of
:math:`\hat{v}_t` (as optax does, of the bias-corrected one), so the per-coordinate step size never
increases; this restores the convergence guarantee, though in practice the two usually train alike.

The figure compares the optimisers of this chapter so far on the Rosenbrock function, 300 steps each
from the same starting point with a learning rate that suits it: plain gradient descent crawls along the
curved valley floor, momentum overshoots and then runs down it, and the adaptive methods take steps
of about :math:`\eta` per coordinate whatever the slope.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.optimization.adam import adam
   from cookbook.optimization.rmsprop import rmsprop
   from cookbook.optimization.sgd import rosenbrock, run_optimizer, sgd
   start = {"x": jnp.array(-1.5), "y": jnp.array(2.0)}
   runs = {"SGD, lr 1e-3": sgd(1e-3), "momentum 0.9, lr 1e-3": sgd(1e-3, momentum=0.9),
           "RMSProp, lr 1e-2": rmsprop(1e-2), "Adam, lr 5e-2": adam(5e-2)}
   x, y = np.meshgrid(np.linspace(-2, 2, 200), np.linspace(-1, 3, 200))
   z = (1 - x) ** 2 + 100 * (y - x**2) ** 2
   fig, ax = plt.subplots(figsize=(6.4, 4.8))
   ax.contour(x, y, np.log10(z + 1e-3), levels=20, cmap="Greys", linewidths=0.6)
   for label, opt in runs.items():
       path, _ = run_optimizer(rosenbrock, start, opt, steps=300)
       px = np.concatenate([[-1.5], np.asarray(path["x"])])
       py = np.concatenate([[2.0], np.asarray(path["y"])])
       line, = ax.plot(px, py, lw=1.2, label=label)
       ax.plot(px[-1], py[-1], "s", color=line.get_color(), ms=6)
   ax.plot([1], [1], "k*", ms=12, label="minimum (1, 1)")
   ax.plot([-1.5], [2.0], "ko", ms=5)
   ax.set(xlabel="x", ylabel="y", xlim=(-2, 2), ylim=(-1, 3),
          title="300 steps on the Rosenbrock function (squares: end points)")
   ax.legend(loc="lower right", fontsize=8)

**Numerical traps.** :math:`\epsilon` is added *outside* the root, as in the paper and in optax;
it bounds the step when :math:`\hat{v}_t` is tiny (a coordinate that has seen almost no gradient)
and must be raised (to about :math:`10^{-6}` or more) when the moments are kept in float16, where
:math:`10^{-8}` rounds to zero (bfloat16 has float32's range and keeps it). The step counter is an integer, and the powers
:math:`\beta^t` are computed in float32 from it.

.. admonition:: Intuition

   Think of steering by a compass that jitters. The first moment is the averaged heading, the
   second the typical size of the readings. When the readings agree, their ratio is near one and
   the walker strides out at full pace; when they scatter around zero, the ratio is small and the
   walker shuffles. Bias correction admits that, after only a few readings, both averages still
   lean towards the zero they started from.

Inductive bias
--------------

Adam assumes a diagonal, slowly drifting geometry: that each coordinate's recent gradient mean and
spread describe it well, and that coordinates need not be coupled. It is invariant to rescaling
each gradient coordinate by a constant, so it is indifferent to the scale of parameters and of the
loss, but not to rotations of the parameter space. Because every coordinate moves at about the
same speed, Adam can generalise worse than well-tuned SGD on some vision tasks, and its implicit
coupling with L2 regularisation is the reason for :doc:`adamw`.

Example
-------

The first step is a sign step of size :math:`\eta`; on a quadratic Adam then homes in:

>>> import jax, jax.numpy as jnp
>>> from cookbook.optimization.adam import adam
>>> from cookbook.optimization.sgd import run_optimizer
>>> opt = adam(learning_rate=0.1)
>>> state = opt.init({"w": jnp.zeros(3)})
>>> updates, state = opt.update({"w": jnp.array([1e-3, -2.0, 50.0])}, state)
>>> updates["w"].round(4)
Array([-0.1,  0.1, -0.1], dtype=float32)
>>> loss = lambda p: jnp.sum((p["w"] - jnp.array([1.0, 2.0, 3.0])) ** 2)
>>> path, losses = run_optimizer(loss, {"w": jnp.zeros(3)}, adam(0.1), steps=300)
>>> path["w"][-1].round(2), bool(losses[-1] < 1e-3 * losses[0])
(Array([1., 2., 3.], dtype=float32), True)
"""

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.optimization.sgd import GradientTransformation, check_hyperparameter, check_update

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {}


class AdamState(NamedTuple):
    """The step count and the two moving averages; ``nu_max`` is used by AMSGrad only."""

    count: jax.Array
    mu: object
    nu: object
    nu_max: object


def adam_direction(grads, state, b1, b2, eps, amsgrad):
    """The moments after one more gradient and the direction :math:`\\hat m/(\\sqrt{\\hat v}+\\epsilon)`.

    Shared with :doc:`adamw`. Returns ``(direction, new_state)``; the caller scales the direction.
    """
    count = state.count + 1
    mu = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, grads, state.mu)
    nu = jax.tree.map(lambda g, v: (1 - b2) * g * g + b2 * v, grads, state.nu)
    t = count.astype(jnp.float32)
    mu_hat = jax.tree.map(lambda m: m / (1 - b1**t).astype(m.dtype), mu)
    nu_hat = jax.tree.map(lambda v: v / (1 - b2**t).astype(v.dtype), nu)
    nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu_hat) if amsgrad else state.nu_max
    denom = nu_max if amsgrad else nu_hat
    direction = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu_hat, denom)
    return direction, AdamState(count, mu, nu, nu_max)


def init_adam_state(params, amsgrad):
    zeros = jax.tree.map(jnp.zeros_like, params)
    # AMSGrad needs the running maximum; plain Adam keeps an empty placeholder to save memory.
    nu_max = jax.tree.map(jnp.zeros_like, params) if amsgrad else ()
    return AdamState(jnp.zeros((), jnp.int32), zeros, jax.tree.map(jnp.zeros_like, params), nu_max)


def adam_moments(state):
    """The state's trees that are shaped like the parameters, by name, for :func:`check_update`."""
    moments = {"state.mu": state.mu, "state.nu": state.nu}
    amsgrad = not (isinstance(state.nu_max, tuple) and len(state.nu_max) == 0)  # plain Adam keeps ()
    return moments | ({"state.nu_max": state.nu_max} if amsgrad else {})


def check_adam_hyperparameters(learning_rate, b1, b2, eps):
    check_hyperparameter("learning_rate", learning_rate, 0.0, float("inf"))
    check_hyperparameter("b1", b1, 0.0, 1.0)
    check_hyperparameter("b2", b2, 0.0, 1.0)
    check_hyperparameter("eps", eps, 0.0, float("inf"))


def adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8, amsgrad=False):
    """Adam with bias correction; ``amsgrad=True`` divides by the running maximum of :math:`\\hat v`."""
    check_adam_hyperparameters(learning_rate, b1, b2, eps)
    hyper = (learning_rate, b1, b2, eps)
    # Called eagerly, update runs one compiled core: the numbers (the usual case) as
    # static arguments, an array as a traced one. Traced (inside a training loop) they run as they are.
    static = all(isinstance(h, numbers.Real) and not isinstance(h, jax.Array) for h in hyper)

    def init(params):
        return init_adam_state(params, amsgrad)

    def update(grads, state, params=None):
        check_update(grads, params, adam_moments(state))
        if _checks.is_concrete((grads, state)):
            if static:
                return _update_static(grads, state, hyper, bool(amsgrad))
            return _update(grads, state, hyper, bool(amsgrad))
        return _adam_update(grads, state, hyper, amsgrad)

    return GradientTransformation(init, update)


def _adam_update(grads, state, hyper, amsgrad):
    learning_rate, b1, b2, eps = hyper
    direction, state = adam_direction(grads, state, b1, b2, eps, amsgrad)
    return jax.tree.map(lambda d: d * -learning_rate, direction), state


_update_static = jax.jit(_adam_update, static_argnums=(2, 3))
_update = jax.jit(_adam_update, static_argnums=3)
