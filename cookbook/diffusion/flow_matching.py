r"""Flow matching
=============

Learn a velocity field that carries noise to data along straight lines, by regressing a network on
the velocity of each line, and generate by integrating the field as an ordinary differential
equation: the simplest way to train a continuous-time generator, and the one to reach for when few
sampling steps matter.

Equation
--------

.. math::

   x_t = \big(1 - (1 - \sigma_{\min})\, t\big)\, x_0 + t\, x_1, \qquad
   u_t = x_1 - (1 - \sigma_{\min})\, x_0, \qquad x_0 \sim \mathcal{N}(0, I),\ x_1 \sim p_{\text{data}}

   L(\theta) = \mathbb{E}_{t \sim \mathcal{U}[0, 1],\, x_0,\, x_1}\,
   \big\lVert v_\theta(x_t, t) - u_t \big\rVert^2

   \frac{\mathrm{d}x}{\mathrm{d}t} = v_\theta(x, t), \qquad
   x_{k+1} = x_k + h\, v_\theta(x_k, k h), \qquad h = \frac{1}{K}, \qquad k = 0, \dots, K - 1

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_0`, :math:`x_1`
     - a noise point (the start of a line); a data point (its end)
     - ``x0``; ``x1``
     - ``(D,)``, batched ``(B, D)``
   * - :math:`t`
     - the time along the path, 0 at the noise and 1 at the data
     - ``t``
     - scalar or ``(B,)``
   * - :math:`x_t`, :math:`x`
     - the point at time :math:`t` on the line; the state of the ODE
     - ``xt``; ``x``
     - ``(D,)``
   * - :math:`\sigma_{\min}`
     - the width left around the data point at :math:`t = 1` (0: the line ends on it)
     - ``sigma_min``
     - scalar
   * - :math:`u_t`
     - the velocity of the conditional path, :math:`\mathrm{d} x_t / \mathrm{d} t`, constant along a line
     - ``ut``
     - ``(D,)``
   * - :math:`v_\theta`, :math:`\theta`
     - the learned velocity field; its parameters (the network of :doc:`ddpm`)
     - ``_net`` (the network of :doc:`ddpm`); ``params``
     - ``(D,)``; a list of layers
   * - :math:`L`
     - the conditional flow-matching loss
     - ``loss``
     - scalar
   * - :math:`K`, :math:`h`, :math:`k`
     - the number of Euler steps; their size; a step
     - ``num_steps``; ``h``; ``k``
     - scalars
   * - :math:`I`
     - the identity matrix: noise independent in each coordinate
     - (implicit)
     - ``(D, D)``
   * - :math:`p_{\text{data}}`
     - the distribution of the data
     - ``data``
     - samples ``(N, D)``

Explanation
-----------

Pick a noise point and a data point and join them with a straight line; a particle that moves along
it at constant speed is at :math:`x_t` at time :math:`t` with velocity :math:`u_t`. Many lines pass
through any point :math:`x` at time :math:`t`, and the *average* of their velocities there defines
a single field :math:`v(x, t)` whose flow carries the whole noise distribution to the whole data
distribution :footcite:`lipman2023flow`. That average is what a least-squares regression onto the
line velocities learns: the loss :math:`L` has the same gradient as a regression onto the unknown
field itself, so training needs only pairs of points, a random time, and one line of arithmetic
(``conditional_ot_path``). No noise schedule, no posterior, no simulation during training.

Generation integrates :math:`dx/dt = v_\theta(x, t)` from :math:`t = 0` to 1 with any ODE solver;
the examples use :math:`K` Euler steps. Each conditional path is straight, but the learned field is
not (lines cross, and the field follows their average), so a few steps leave an error that
rectified flow :footcite:`liu2023flow` reduces by straightening the field itself.

.. admonition:: Intuition

   Imagine the crowd leaving a stadium for the car parks, each person walking straight to a car
   chosen at random. Standing at one spot at one moment you see people pass in many directions;
   their average direction is the "traffic" at that spot. Learn the traffic everywhere, and you can
   send a new crowd from the stands and it will fill the car parks in the same proportions, though
   no one in it knows which car they are heading for.

Each path is the optimal-transport map from :math:`\mathcal{N}(0, I)` to
:math:`\mathcal{N}(x_1, \sigma_{\min}^2 I)` (hence the name), one choice among the *stochastic
interpolants* :math:`x_t = a(t) x_0 + b(t) x_1` of :footcite:t:`albergo2023building`, which
include the variance-preserving path of :doc:`ddpm` (:math:`a = \sqrt{1 - \bar\alpha}`,
:math:`b = \sqrt{\bar\alpha}`). With :math:`\sigma_{\min} = 0` it is the interpolant of
:footcite:t:`liu2023flow` as well.

Inductive bias
--------------

The model assumes that data is reached from Gaussian noise by a smooth, deterministic flow; the
straight conditional paths favour fields that are nearly constant in time, which few solver steps
integrate well. The velocity network brings its own bias (a small MLP here). The flow is invertible,
so it cannot create a point mass or a gap in the support exactly, only approach one.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.diffusion.flow_matching import conditional_ot_path, euler_sample, loss, train
>>> from cookbook.diffusion.ddpm import denoiser_init, two_moons
>>> x0 = jnp.zeros((3, 2))
>>> x1 = jnp.ones((3, 2))
>>> xt, ut = conditional_ot_path(x0, x1, jnp.array([0.0, 0.5, 1.0]))
>>> xt[:, 0], ut[:, 0]  # none, half and all of the way along a unit line, at speed 1
(Array([0. , 0.5, 1. ], dtype=float32), Array([1., 1., 1.], dtype=float32))
>>> params = denoiser_init(jax.random.key(0), 2)
>>> data = two_moons(jax.random.key(1), 1000)
>>> round(float(loss(params, data, jax.random.key(2))), 1)  # before training
2.0
>>> trained, losses = train(params, data, jax.random.key(3), steps=300)
>>> bool(losses[-100:].mean() < losses[:100].mean())  # lines cross, so the loss never reaches 0
True
>>> euler_sample(trained, jax.random.key(4), 1000, num_steps=20).shape  # 20 Euler steps from noise
(1000, 2)

Implementation notes
--------------------

**Quality.** The network and training of :doc:`ddpm` (a three-layer MLP of width 64, 8000 Adam
steps of 128 points, ``trained_moons_flow``) reach, with 20 Euler steps, a squared MMD to 1000
fresh data points below twice that between two independent draws of the data; the test asserts it.
The chapter's introduction draws the quality of each sampler against its number of steps.

**Conventions.** The names follow :footcite:t:`lipman2023flow`: :math:`x_0` is the noise and
:math:`x_1` the data (some libraries and papers swap them, and then integrate from 1 to 0).
``t`` is a scalar (one time for all points) or a batch ``(B,)`` (one time for each row); a concrete
``t`` outside :math:`[0, 1]` raises an error. The loss is a mean over points and coordinates.
``sigma_min`` defaults to 0, the straight line that ends exactly on the data.

**Libraries.** ``torchcfm`` calls this ``ConditionalFlowMatcher`` (with its ``sigma`` the noise
around the whole path rather than at its end), and Stable Diffusion 3 trains with the same
straight path under the name rectified flow.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks
from cookbook._memo import cached
from cookbook.diffusion.ddpm import _check_data, _check_params, _fit, _net, _rows, denoiser_init, two_moons
from cookbook.optimization.adam import adam

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "conditional_ot_path": ("sigma_min",),
    "loss": ("sigma_min",),
    "train": ("steps", "batch_size", "learning_rate", "sigma_min"),
    "euler_sample": ("num_samples", "num_steps"),
}


def _times(t, x, x_name):
    """``t`` as float times, a scalar or one per row of ``x``, within [0, 1] when concrete."""
    t = _checks.float_array(t, "t")
    _checks.scalar_or_per_row(t, x, x_name, "time")
    if _checks.is_concrete(t) and t.size:
        values = np.asarray(t)
        if not np.isnan(values).any() and (values.min() < 0 or values.max() > 1):
            raise ValueError(f"t must lie in [0, 1], got values from {values.min()} to {values.max()}")
    return t


def conditional_ot_path(x0, x1, t, sigma_min=0.0):
    """The point ``xt`` and velocity ``ut`` at time ``t`` on the straight path from the noise ``x0``
    to the data ``x1``; ``t`` is a scalar or one time per row of ``x0``."""
    x0 = _checks.float_array(x0, "x0")
    x1 = _checks.same_shape(_checks.float_array(x1, "x1"), "x1", x0.shape, expected_from="the shape of x0")
    t = _times(t, x0, "x0")
    _checks.positive(sigma_min, "sigma_min", allow_zero=True)
    return _path_jit(x0, x1, t, sigma_min=_checks.static_number(sigma_min, "sigma_min"))


def _path(x0, x1, t, sigma_min):
    t = _rows(t.astype(x0.dtype), x0)
    xt = (1.0 - (1.0 - sigma_min) * t) * x0 + t * x1
    ut = x1 - (1.0 - sigma_min) * x0
    return xt, ut


# The public functions check their input, then hand it straight to a compiled core (sigma_min static,
# the Python number it is in the training loop): eagerly, each operation would compile on its own
# for every new shape, and the training and sampling loops again at every call.
_path_jit = jax.jit(_path, static_argnames="sigma_min")


def _loss(params, x1, key, sigma_min):
    k_noise, k_t = jax.random.split(key)
    x0 = jax.random.normal(k_noise, x1.shape, x1.dtype)
    t = jax.random.uniform(k_t, (x1.shape[0],), x1.dtype)
    xt, ut = _path(x0, x1, t, sigma_min)
    v = jax.vmap(_net, in_axes=(None, 0, 0))(params, xt, t)  # (B, D)
    return jnp.mean((v - ut) ** 2)


def loss(params, x1, key, sigma_min=0.0):
    """The conditional flow-matching loss :math:`L` on a batch of data ``x1`` (B, D): one noise point
    and one time per data point, the squared error averaged over points and coordinates."""
    x1 = _check_data(params, x1, "x1")
    _checks.positive(sigma_min, "sigma_min", allow_zero=True)
    return _loss_jit(params, x1, key, sigma_min=_checks.static_number(sigma_min, "sigma_min"))


_loss_jit = jax.jit(_loss, static_argnames="sigma_min")


@cached  # the page's tests and the chapter's figure share this run when the book is built
def train(params, data, key, *, steps, batch_size=128, learning_rate=1e-2, sigma_min=0.0):
    """``steps`` Adam steps on :func:`loss`, each on ``batch_size`` rows of ``data`` (N, D), the step
    size decayed along a cosine (the loop of :doc:`ddpm`). Returns the parameters and the losses."""
    data = _check_data(params, data, "data")
    steps = _checks.size(steps, "steps")
    batch_size = _checks.size(batch_size, "batch_size")
    _checks.positive(sigma_min, "sigma_min", allow_zero=True)
    adam(learning_rate)  # its checks of the step size, before anything is traced
    return _train(params, data, key, steps=steps, batch_size=batch_size,
                  learning_rate=_checks.static_number(learning_rate, "learning_rate"),
                  sigma_min=_checks.static_number(sigma_min, "sigma_min"))


@functools.partial(jax.jit, static_argnames=("steps", "batch_size", "learning_rate", "sigma_min"))
def _train(params, data, key, *, steps, batch_size, learning_rate, sigma_min):
    return _fit(params, data, key, steps, batch_size, adam(learning_rate),
                lambda p, x1, k: _loss(p, x1, k, sigma_min))


def _euler(velocity, x, num_steps):
    """Integrate ``dx/dt = velocity(x, t)`` (x batched) from t = 0 to 1 in ``num_steps`` Euler steps."""
    h = 1.0 / num_steps

    def step(k, x):
        return x + h * velocity(x, k * h)

    # A Python int makes this a scan; a traced one (the chapter's figure, one compilation for every
    # number of steps) a while loop.
    return jax.lax.fori_loop(0, num_steps, step, x)


def euler_sample(params, key, num_samples, num_steps):
    """``num_samples`` points (num_samples, D): noise carried to data by ``num_steps`` Euler steps of
    the learned velocity field."""
    _check_params(params)
    num_samples = _checks.size(num_samples, "num_samples")
    num_steps = _checks.size(num_steps, "num_steps")
    return _euler_sample(params, key, num_samples=num_samples, num_steps=num_steps)


@functools.partial(jax.jit, static_argnames=("num_samples", "num_steps"))
def _euler_sample(params, key, *, num_samples, num_steps):
    D = params[-1]["W"].shape[1]
    velocity = lambda x, t: jax.vmap(_net, in_axes=(None, 0, None))(params, x, t)  # (B, D)
    return _euler(velocity, jax.random.normal(key, (num_samples, D)), num_steps)


@cached
def trained_moons_flow():
    """The velocity field of the chapter's comparison: the network, data and training of
    ``cookbook.diffusion.ddpm.trained_moons_model``, with the flow-matching loss."""
    data = jax.jit(two_moons, static_argnums=1)(jax.random.key(7), 4096)
    params = denoiser_init(jax.random.key(0), 2)  # the program of the page's example (the same weights)
    return jax.jit(train.uncached, static_argnames=("steps", "batch_size", "learning_rate"))(
        params, data, jax.random.key(1), steps=8000)
