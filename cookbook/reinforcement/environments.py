r"""Environments as pure functions
==============================

An environment written as two pure JAX functions, ``reset(key) -> state`` and ``step(state, action)
-> state``, runs thousands of copies at once under :func:`jax.vmap` and whole episodes inside one
compiled program under :func:`jax.lax.scan`: the way to make a reinforcement-learning experiment run
in seconds, shown on the cart-pole and the pendulum swing-up.

Equation
--------

.. math::

   \begin{aligned}
   \ddot{\theta}_t &= \frac{g \sin\theta_t - \cos\theta_t \,
     \big(F_t + m_{\text{p}} l \, \dot{\theta}_t^2 \sin\theta_t\big) / M}
     {l \, \big(\tfrac{4}{3} - m_{\text{p}} \cos^2\theta_t / M\big)},
     \qquad M = m_{\text{c}} + m_{\text{p}}, \\
   \ddot{x}_t &= \big(F_t + m_{\text{p}} l \,
     (\dot{\theta}_t^2 \sin\theta_t - \ddot{\theta}_t \cos\theta_t)\big) / M, \\
   (x, \dot{x}, \theta, \dot{\theta})_{t+1} &= (x, \dot{x}, \theta, \dot{\theta})_t
     + \tau \, (\dot{x}, \ddot{x}, \dot{\theta}, \ddot{\theta})_t
     && \text{(cart-pole)} \\
   \dot{\theta}_{t+1} &= \operatorname{clip}\Big(\dot{\theta}_t + \tau \,
     \big(\tfrac{3 g}{2 L} \sin\theta_t + \tfrac{3}{m L^2} u_t\big), \pm\omega_{\max}\Big),
     \qquad \theta_{t+1} = \theta_t + \tau \, \dot{\theta}_{t+1}, \\
   r_t &= -\big(\operatorname{wrap}(\theta_t)^2 + 0.1 \, \dot{\theta}_t^2 + 0.001 \, u_t^2\big)
     && \text{(pendulum)}
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`, :math:`\dot{x}`, :math:`\ddot{x}`
     - cart position (m), velocity, acceleration
     - ``x``, ``x_dot``, ``x_acc``
     - scalar
   * - :math:`\theta`, :math:`\dot{\theta}`, :math:`\ddot{\theta}`
     - pole angle from upright (rad), its rate, its acceleration
     - ``theta``, ``theta_dot``, ``theta_acc``
     - scalar
   * - :math:`F_t`
     - force on the cart, :math:`\pm 10` N for action 1 or 0
     - ``force``, ``FORCE``
     - scalar
   * - :math:`g`
     - gravity: 9.8 (cart-pole), 10 (pendulum)
     - ``GRAVITY``, ``PENDULUM_GRAVITY``
     - scalar
   * - :math:`m_{\text{c}}`, :math:`m_{\text{p}}`, :math:`M`
     - masses of the cart (1 kg), the pole (0.1 kg), their sum
     - ``MASS_CART``, ``MASS_POLE``, ``TOTAL_MASS``
     - scalar
   * - :math:`l`
     - half the pole's length, 0.5 m
     - ``HALF_LENGTH``
     - scalar
   * - :math:`m`, :math:`L`
     - the pendulum's mass and length, 1 and 1
     - ``PENDULUM_MASS``, ``PENDULUM_LENGTH``
     - scalar
   * - :math:`\tau`
     - time step: 0.02 s (cart-pole), 0.05 s (pendulum)
     - ``TAU``, ``PENDULUM_TAU``
     - scalar
   * - :math:`u_t`
     - torque, clipped to :math:`[-2, 2]`
     - ``torque``
     - ``(1,)``
   * - :math:`\omega_{\max}`
     - the pendulum's speed limit, 8 rad/s
     - ``MAX_SPEED``
     - scalar
   * - :math:`r_t`
     - reward of the step
     - ``reward``
     - scalar
   * - :math:`t`
     - step count
     - ``time``
     - scalar

Explanation
-----------

A simulator written as a method that mutates an object runs one copy at a time on the host, and a
learner on an accelerator waits for it at every step. Written as pure functions, with the whole
state in a tuple of arrays and randomness only through an explicit key, the environment becomes
just more JAX: :func:`jax.vmap` turns one cart-pole into a batch of cart-poles, :func:`jax.lax.scan`
turns steps into an episode, and :func:`jax.jit` compiles the agent and the world into one program
with nothing crossing back to Python. Training runs that took hours then take seconds
:footcite:p:`lu2022discovered`. Both environments here are checked step for step against gymnax
:footcite:p:`lange2022gymnax`, the JAX port of OpenAI Gym's :footcite:p:`brockman2016openai`.

*The cart-pole* :footcite:p:`barto1983neuronlike`: a pole hinged on a cart that is pushed left or
right with 10 N must stay within 12° of upright while the cart stays within 2.4 m of the centre.
The first lines of the equation are the frictionless dynamics in the form that
:footcite:t:`florian2007correct` derived, as Gym uses them, integrated by explicit Euler steps
(positions move with the old velocities). The reward is 1 for every step taken from a state that had
not failed; an episode ends when the pole or the cart leaves its range, or after 500 steps, so the
best return is 500.

*The pendulum* starts at a random angle and speed and must be swung up and held upright
(:math:`\theta = 0`) with a torque too weak to lift it directly: held from hanging, the largest
torque never lifts it past horizontal, so it must swing back and forth to gain energy. The velocity
is updated first and the angle moves with the new velocity (semi-implicit Euler). The reward
penalises the angle from upright (wrapped to :math:`[-\pi, \pi)`), the speed and the torque; the
episode never fails and is cut after 200 steps. The observation is
:math:`(\cos\theta, \sin\theta, \dot{\theta})`, which does not jump when the angle wraps around.

.. plot::

   import jax, jax.numpy as jnp, numpy as np
   from cookbook.reinforcement.environments import PendulumState, pendulum_step

   def episode(policy):
       def step(state, _):
           state = pendulum_step(state, policy(state))[0]
           return state, state.theta
       hanging = PendulumState(jnp.float32(jnp.pi), jnp.float32(0.0), jnp.int32(0))
       return jax.lax.scan(step, hanging, length=200)[1]

   runs = jax.jit(lambda: (episode(lambda s: jnp.full((1,), 2.0)),
                           episode(lambda s: jnp.where(s.theta_dot >= 0, 2.0, -2.0)[None])))()
   time = np.arange(1, 201) * 0.05
   fig, ax = plt.subplots(figsize=(6, 2.8))
   for theta, label in zip(runs, ["largest torque, held", "largest torque, with the motion"]):
       ax.plot(time, np.cos(theta), lw=1, label=label)
   ax.axhspan(0, 1.05, color="0.93")
   ax.set(xlabel="time (s)", ylabel="height of the tip, cos θ", ylim=(-1.05, 1.05))
   ax.legend(fontsize=7, loc="upper left")
   fig.tight_layout()

From hanging (height −1), a torque held one way only tilts the pendulum, never above the pivot
(shaded); pushing in the direction of its motion pumps energy in, and it swings over the top
(height 1) within the episode: the swing-up a learner must find, and then learn to hold.

.. admonition:: Intuition

   A chess position written on a card is a pure state: give the card and a move to anyone and they
   can write the next card, with no board to keep. A hundred games become a hundred cards side by
   side (``vmap``), a game a stack of cards (``scan``).

*In code.* Each function works on one environment; batch with :func:`jax.vmap`. The step does not
reset: ``done`` says that the episode ended (failed, or reached its step limit), the caller resets
(the example shows how), and a step taken after ``done`` keeps integrating (the cart-pole then pays
0). ``done`` joins two different events: a failure is terminal, but the step limit only truncates,
and a learner that bootstraps should tell them apart by ``state.time``; for the pendulum ``done`` is
always a truncation. *Bad input.* The state must be the state type of its environment with scalar
fields (float angles and positions, an integer step count), a cart-pole action a scalar integer 0 or
1 (its range checked when concrete; under :func:`jax.jit` any action other than 1 pushes left), a
pendulum action a float array of shape ``(1,)``, clipped as Gym does.

Inductive bias
--------------

A pure-function environment assumes that the world is a state of fixed shapes and its step a program
of array operations: no objects that appear and vanish, no Python branches
(:func:`jax.numpy.where` computes both sides), no outside simulator or renderer. Classic control,
grid worlds, board games and rigid-body physics written in JAX fit; an emulator or a real robot does
not. The step count lives in the state so that a time-limited episode stays Markov
:footcite:p:`pardo2018time`.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.reinforcement.environments import (cartpole_reset, cartpole_step,
...                                                  pendulum_reset, pendulum_step)
>>> state, observation = cartpole_reset(jax.random.key(0))
>>> observation.shape, observation.dtype
((4,), dtype('float32'))
>>> state, observation, reward, done = cartpole_step(state, 1)
>>> float(reward), bool(done), int(state.time)
(1.0, False, 1)

Pushing right at every step, the pole tips back past 12° within ten steps (0.2 s); one ``scan`` runs
an episode and ``vmap`` runs eight of them:

>>> def push_right(state, _):
...     state, observation, reward, done = cartpole_step(state, 1)
...     return state, done
>>> def steps_to_fall(key):
...     _, dones = jax.lax.scan(push_right, cartpole_reset(key)[0], length=100)
...     return jnp.argmax(dones) + 1
>>> falls = jax.jit(jax.vmap(steps_to_fall))(jax.random.split(jax.random.key(1), 8))
>>> falls
Array([10,  9, 10,  9,  9,  9, 10,  9], dtype=int32)

Resetting where an episode ended keeps a batch of environments running:

>>> state, observation = pendulum_reset(jax.random.key(2))
>>> state, observation, reward, done = pendulum_step(state, jnp.array([2.0]))
>>> observation.shape, bool(reward <= 0), bool(done)
((3,), True, False)
>>> fresh, _ = pendulum_reset(jax.random.key(3))
>>> state = jax.tree.map(lambda new, old: jnp.where(done, new, old), fresh, state)
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"cartpole_reset": (), "cartpole_step": (), "pendulum_reset": (), "pendulum_step": ()}

# CartPole-v1, as Gym and gymnax define it.
GRAVITY = 9.8
MASS_CART = 1.0
MASS_POLE = 0.1
TOTAL_MASS = MASS_CART + MASS_POLE
HALF_LENGTH = 0.5
POLE_MASS_LENGTH = MASS_POLE * HALF_LENGTH
FORCE = 10.0
TAU = 0.02
THETA_LIMIT = 12 * 2 * math.pi / 360  # 12 degrees, in radians
X_LIMIT = 2.4
CARTPOLE_STEPS = 500

# Pendulum-v1.
PENDULUM_GRAVITY = 10.0
PENDULUM_MASS = 1.0
PENDULUM_LENGTH = 1.0
PENDULUM_TAU = 0.05
MAX_SPEED = 8.0
MAX_TORQUE = 2.0
PENDULUM_STEPS = 200


class CartPoleState(NamedTuple):
    """One cart-pole: float scalars ``x``, ``x_dot``, ``theta``, ``theta_dot``; int32 ``time``."""

    x: jax.Array
    x_dot: jax.Array
    theta: jax.Array
    theta_dot: jax.Array
    time: jax.Array


class PendulumState(NamedTuple):
    """One pendulum: float scalars ``theta`` (0 upright) and ``theta_dot``; int32 ``time``."""

    theta: jax.Array
    theta_dot: jax.Array
    time: jax.Array


def _key(key):
    if isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key must be a single PRNG key, got shape {key.shape} (vmap for a batch)")
        return key
    if isinstance(key, jax.Array) and key.dtype == jnp.uint32 and key.shape == (2,):
        return key  # a raw key from jax.random.PRNGKey
    raise TypeError(f"key must be a PRNG key from jax.random.key, got {_checks._describe(key)}")


def _state(state, kind):
    if not isinstance(state, kind):
        raise TypeError(f"state must be a {kind.__name__} (from the reset function), got {type(state).__name__}")
    fields = {}
    for name, value in state._asdict().items():
        check = _checks.int_array if name == "time" else _checks.float_array
        fields[name] = check(value, f"state.{name}", ndim=0, what=" (a scalar; vmap for a batch)")
    return kind(**fields)


def _cartpole_failed(state):
    """Whether the cart or the pole has left its range (a terminal state)."""
    return (jnp.abs(state.x) > X_LIMIT) | (jnp.abs(state.theta) > THETA_LIMIT)


def _cartpole_observation(state):
    return jnp.stack([state.x, state.x_dot, state.theta, state.theta_dot])  # (4,)


def cartpole_reset(key):
    """A new cart-pole, every coordinate uniform in [-0.05, 0.05]: ``(state, observation (4,))``."""
    return _cartpole_reset(_key(key))


@jax.jit  # one compiled program behind the checks, rather than one per operation when called eagerly
def _cartpole_reset(key):
    x, x_dot, theta, theta_dot = jax.random.uniform(key, (4,), jnp.float32, -0.05, 0.05)
    state = CartPoleState(x, x_dot, theta, theta_dot, jnp.zeros((), jnp.int32))
    return state, _cartpole_observation(state)


def cartpole_step(state, action):
    """One step of 0.02 s pushing left (action 0) or right (action 1).

    Returns ``(state, observation (4,), reward, done)``: the reward is 1 unless ``state`` had already
    failed; ``done`` when the new state has failed or reached 500 steps. No reset.
    """
    state = _state(state, CartPoleState)
    action = _checks.int_array(action, "action", ndim=0, what=" (a scalar 0 or 1; vmap for a batch)")
    _checks.check_range(action, "action", 0, 2)
    return _cartpole_step(state, action)


@jax.jit
def _cartpole_step(state, action):
    x, x_dot, theta, theta_dot, time = state
    force = jnp.where(action == 1, FORCE, -FORCE)
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    # The order of the operations is gymnax's, so that the two agree to the last bit.
    push = (force + POLE_MASS_LENGTH * theta_dot**2 * sin) / TOTAL_MASS
    theta_acc = (GRAVITY * sin - cos * push) / (HALF_LENGTH * (4.0 / 3.0 - MASS_POLE * cos**2 / TOTAL_MASS))
    x_acc = push - POLE_MASS_LENGTH * theta_acc * cos / TOTAL_MASS
    next_state = CartPoleState(x + TAU * x_dot, x_dot + TAU * x_acc, theta + TAU * theta_dot,
                               theta_dot + TAU * theta_acc, time + 1)
    reward = jnp.where(_cartpole_failed(state), 0.0, 1.0).astype(x.dtype)
    done = _cartpole_failed(next_state) | (next_state.time >= CARTPOLE_STEPS)
    return next_state, _cartpole_observation(next_state), reward, done


def _wrap(theta):
    """The angle in [-pi, pi)."""
    return (theta + jnp.pi) % (2 * jnp.pi) - jnp.pi


def _pendulum_observation(state):
    return jnp.stack([jnp.cos(state.theta), jnp.sin(state.theta), state.theta_dot])  # (3,)


def pendulum_reset(key):
    """A new pendulum, angle uniform in [-pi, pi] and rate in [-1, 1]: ``(state, observation (3,))``."""
    return _pendulum_reset(_key(key))


@jax.jit
def _pendulum_reset(key):
    high = jnp.array([jnp.pi, 1.0], jnp.float32)
    theta, theta_dot = jax.random.uniform(key, (2,), jnp.float32, -high, high)
    state = PendulumState(theta, theta_dot, jnp.zeros((), jnp.int32))
    return state, _pendulum_observation(state)


def pendulum_step(state, action):
    """One step of 0.05 s with the torque ``action`` (1,), clipped to [-2, 2].

    Returns ``(state, observation (3,) = (cos, sin, rate), reward, done)``; ``done`` only at 200
    steps (a truncation: the pendulum never fails). No reset.
    """
    state = _state(state, PendulumState)
    action = _checks.same_shape(_checks.float_array(action, "action", ndim=1, what=" (1,)"), "action", (1,))
    return _pendulum_step(state, action)


@jax.jit
def _pendulum_step(state, action):
    theta, theta_dot, time = state
    torque = jnp.clip(action, -MAX_TORQUE, MAX_TORQUE)  # (1,)
    reward = -(_wrap(theta) ** 2 + 0.1 * theta_dot**2 + 0.001 * torque**2)[0]
    gravity = 3 * PENDULUM_GRAVITY / (2 * PENDULUM_LENGTH)
    drive = 3.0 / (PENDULUM_MASS * PENDULUM_LENGTH**2)
    new_theta_dot = theta_dot + (gravity * jnp.sin(theta) + drive * torque) * PENDULUM_TAU  # (1,)
    new_theta_dot = jnp.clip(new_theta_dot, -MAX_SPEED, MAX_SPEED)
    new_theta = theta + new_theta_dot * PENDULUM_TAU
    next_state = PendulumState(new_theta[0], new_theta_dot[0], time + 1)
    done = next_state.time >= PENDULUM_STEPS
    return next_state, _pendulum_observation(next_state), reward, done
