r"""Liquid time-constant networks
=============================

Recurrent cells whose neurons have a time constant that changes with the input, stepped by a
stable semi-implicit solver, and their closed-form successor that needs no solver at all: reach for
them to model irregularly sampled time series with small, continuous-time recurrent networks.

Equation
--------

.. math::

   \frac{\mathrm{d}x}{\mathrm{d}t} = -\Big[\frac{1}{\tau} + f(x, I)\Big] \odot x + f(x, I) \odot A,
   \qquad f(x, I) = \sigma(x W_x + I W_I + b)

   x_{t+\Delta} = \frac{x_t + \Delta\, f(x_t, I_t) \odot A}{1 + \Delta \big[1/\tau + f(x_t, I_t)\big]}

   \text{CfC:}\quad
   x(t) = \sigma\big(-F\, t\big) \odot G + \big[1 - \sigma(-F\, t)\big] \odot H

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`, :math:`x_t`
     - hidden state of the :math:`N` neurons; its value at time :math:`t`
     - ``x``
     - ``(N,)``
   * - :math:`I`, :math:`I_t`
     - input
     - ``inputs``
     - ``(D,)``
   * - :math:`t`, :math:`\Delta`
     - time; the step of the solver (or the time elapsed, for the CfC)
     - ``dt``; ``t``
     - scalar
   * - :math:`\tau`
     - each neuron's base time constant, positive
     - ``params["tau"]``
     - ``(N,)``
   * - :math:`f`, :math:`\sigma`
     - the positive gate that adds to the decay rate and pulls towards :math:`A`; the logistic sigmoid
     - ``gate``, ``jax.nn.sigmoid``
     - ``(N,)``
   * - :math:`W_x`, :math:`W_I`, :math:`b`
     - recurrent and input weights and bias of the gate
     - ``params["W_x"]``, ``params["W_i"]``, ``params["b"]``
     - ``(N, N)``, ``(D, N)``, ``(N,)``
   * - :math:`A`
     - each neuron's reversal potential: the value the gate pulls it towards
     - ``params["A"]``
     - ``(N,)``
   * - :math:`F`, :math:`G`, :math:`H`
     - the CfC's three heads of :math:`(x, I)`: a rate, and the two states the cell moves between
     - ``F``, ``G``, ``H``
     - ``(N,)``

Explanation
-----------

A leaky neuron relaxes towards its input with a fixed time constant :math:`\tau`. A **liquid
time-constant** (LTC) neuron :footcite:`hasani2021liquid` adds a nonnegative, input-dependent gate
:math:`f` both to its decay rate and as a drive towards a fixed level :math:`A`, like a synapse
that opens a conductance towards a reversal potential. Its effective time constant
:math:`1 / (1/\tau + f)` therefore changes with the input: the neuron reacts fast when the gate is
open and remembers long when it is closed. Because the state is a convex combination of itself,
:math:`0` and :math:`A` over each small step, it stays between :math:`\min(0, A, x_0)` and
:math:`\max(0, A, x_0)`.

The equation is stiff when the gate is large, and explicit Euler then overshoots and diverges.
The **fused solver** treats the decay implicitly and the drive explicitly, with :math:`f` taken at
the start of the step, which gives the division in the second line. Each factor is positive, so the
new state is a weighted average of the old state and :math:`A` and stays bounded at any step size:
the tests take steps of 100 where Euler leaves the bounds. It is a first-order method: against a
fine Euler integration (10 000 steps) over one unit of time, halving the step of the fused solver
about halves its error (the tests see a ratio above 1.7, and an error below 0.02 at 40 steps).

**Closed-form continuous-time** (CfC) cells :footcite:`hasani2022closed` drop the solver: an
approximate solution of the LTC equation suggests a state that moves from one learned target to
another with a time-dependent sigmoid gate. Three small heads :math:`F, G, H` of the current state
and input replace :math:`f, \tau, A`; the time elapsed since the last observation enters only
through :math:`\sigma(-F t)`, so one evaluation handles any gap between irregular samples. At
:math:`t = 0` the state is the average of :math:`G` and :math:`H`; as :math:`t` grows with a
positive rate :math:`F` it moves to :math:`H` (the tests check both).

.. admonition:: Intuition

   An LTC neuron is a room with a door to the outside: heat leaks through the walls at a fixed rate,
   and when the input opens the door the temperature rushes towards the outside temperature
   :math:`A`. How fast the room forgets depends on how wide the door is open. The CfC skips
   simulating the heat flow and writes down where the temperature will be after any given time.

Inductive bias
--------------

Both cells assume that the hidden dynamics are continuous in time, stable, and driven by the input
through a gate; the LTC's bounded state and input-dependent time constants suit sensor and control
signals, and the explicit time of the CfC suits irregular sampling without resampling. They are
small, causal recurrent networks: like any such network they process a sequence step by step and
cannot look ahead, and the LTC needs several solver steps per input where a gated recurrent unit
needs one evaluation, a cost the CfC avoids.

Example
-------

One fused LTC step and one CfC step, for 3 neurons and 2 inputs; an enormous step stays bounded:

>>> import jax, jax.numpy as jnp
>>> from cookbook.niche.liquid import cfc_step, init_cfc, init_ltc, ltc_step
>>> params = init_ltc(jax.random.key(0), n_inputs=2, n_hidden=3)
>>> x = jnp.zeros(3)
>>> inputs = jnp.array([1.0, -1.0])
>>> ltc_step(params, x, inputs, 0.1).shape
(3,)
>>> big = ltc_step(params, x, inputs, 1e4)  # nearly the fixed point of the frozen gate
>>> bool(jnp.all(jnp.abs(big) <= jnp.abs(params["A"])))
True
>>> cfc = init_cfc(jax.random.key(1), n_inputs=2, n_hidden=3)
>>> cfc_step(cfc, x, inputs, 0.5).shape
(3,)

Implementation notes
--------------------

Implementations run several fused steps per input sample (the ``ncps`` library 6 by default), with
the gate recomputed at each; ``ltc_step`` is one of them, and a sequence is a ``lax.scan`` over
inputs and their time gaps. The ``ncps`` gate is a sum of sigmoid synapses with their own reversal
potentials, one per pair of neurons; this page keeps one gate and one :math:`A` per neuron, the
same form of dynamics with fewer parameters. The CfC here uses single-layer heads on :math:`(x, I)`; the paper shares a small
backbone network between them. Libraries: ``ncps`` (PyTorch and Keras) implements both cells with
wirings inspired by the nematode's nervous system.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"ltc_step": (), "cfc_step": ()}


def init_ltc(key, *, n_inputs, n_hidden):
    """LTC parameters ``{"W_x": (N, N), "W_i": (D, N), "b": (N,), "A": (N,), "tau": (N,)}``."""
    D, N = _checks.size(n_inputs, "n_inputs"), _checks.size(n_hidden, "n_hidden")
    return _init_ltc(key, D, N)


@partial(jax.jit, static_argnums=(1, 2))
def _init_ltc(key, D, N):
    k_x, k_i, k_a = jax.random.split(key, 3)
    return {"W_x": jax.random.normal(k_x, (N, N)) / np.sqrt(N), "W_i": jax.random.normal(k_i, (D, N)) / np.sqrt(D),
            "b": jnp.zeros(N), "A": jax.random.normal(k_a, (N,)), "tau": jnp.ones(N)}


def init_cfc(key, *, n_inputs, n_hidden):
    """CfC parameters: a weight (D + N, N) and a bias (N,) for each head, ``F``, ``G`` and ``H``."""
    D, N = _checks.size(n_inputs, "n_inputs"), _checks.size(n_hidden, "n_hidden")
    return _init_cfc(key, D, N)


@partial(jax.jit, static_argnums=(1, 2))
def _init_cfc(key, D, N):
    keys = jax.random.split(key, 3)
    return {name: {"W": jax.random.normal(k, (D + N, N)) / np.sqrt(D + N), "b": jnp.zeros(N)}
            for name, k in zip(("F", "G", "H"), keys)}


def _state_and_inputs(x, inputs, N, D):
    x = _checks.same_shape(_checks.float_array(x, "x", ndim=1, what=" (N,)"), "x", (N,), expected_from="N from params")
    inputs = _checks.same_shape(_checks.float_array(inputs, "inputs", ndim=1, what=" (D,)"), "inputs", (D,),
                                expected_from="D from params")
    return x, inputs


def _check_ltc(params, x, inputs):
    if not isinstance(params, dict) or set(params) != {"W_x", "W_i", "b", "A", "tau"}:
        raise TypeError("params must be the dict of init_ltc, with keys 'W_x', 'W_i', 'b', 'A', 'tau'")
    W_i = _checks.float_array(params["W_i"], "params['W_i']", ndim=2, what=" (D, N)")
    D, N = W_i.shape
    shapes = {"W_x": (N, N), "b": (N,), "A": (N,), "tau": (N,)}
    for name, shape in shapes.items():
        _checks.same_shape(_checks.float_array(params[name], f"params['{name}']"), f"params['{name}']", shape,
                           expected_from="N from params['W_i'] (D, N)")
    if _checks.is_concrete(params["tau"]) and not bool(np.all(np.asarray(params["tau"]) > 0)):
        raise ValueError("params['tau'] must be positive (time constants)")
    return _state_and_inputs(x, inputs, N, D)


def gate(params, x, inputs):
    """The LTC gate ``f = sigmoid(x W_x + inputs W_i + b)`` (N,), in (0, 1)."""
    return jax.nn.sigmoid(x @ params["W_x"] + inputs @ params["W_i"] + params["b"])


def ltc_field(params, x, inputs):
    """The LTC's right-hand side ``dx/dt`` (N,): ``-(1/tau + f) x + f A``."""
    x, inputs = _check_ltc(params, x, inputs)
    return _field(params, x, inputs)


@jax.jit
def _field(params, x, inputs):
    f = gate(params, x, inputs)
    return -(1 / params["tau"] + f) * x + f * params["A"]


def ltc_step(params, x, inputs, dt):
    """One step of the fused (semi-implicit Euler) solver, of size ``dt`` > 0: the new state (N,)."""
    x, inputs = _check_ltc(params, x, inputs)
    dt = _checks.positive(dt, "dt")
    return _ltc_step(params, x, inputs, dt)


@jax.jit
def _ltc_step(params, x, inputs, dt):
    f = gate(params, x, inputs)  # taken at the start of the step
    return (x + dt * f * params["A"]) / (1 + dt * (1 / params["tau"] + f))


def cfc_step(params, x, inputs, t):
    """The CfC state (N,) a time ``t`` >= 0 after the state ``x`` (N,) with input ``inputs`` (D,)."""
    if not isinstance(params, dict) or set(params) != {"F", "G", "H"}:
        raise TypeError("params must be the dict of init_cfc, with heads 'F', 'G', 'H'")
    W = _checks.float_array(params["F"]["W"], "params['F']['W']", ndim=2, what=" (D + N, N)")
    N = W.shape[1]
    for head in ("F", "G", "H"):
        _checks.same_shape(_checks.float_array(params[head]["W"], f"params['{head}']['W']"),
                           f"params['{head}']['W']", W.shape, expected_from="params['F']['W']")
        _checks.same_shape(_checks.float_array(params[head]["b"], f"params['{head}']['b']"),
                           f"params['{head}']['b']", (N,), expected_from="N from params['F']['W']")
    if W.shape[0] <= N:
        raise ValueError(f"params['F']['W'] must have shape (D + N, N) with D >= 1, got {tuple(W.shape)}")
    x, inputs = _state_and_inputs(x, inputs, N, W.shape[0] - N)
    t = _checks.positive(t, "t", allow_zero=True)
    return _cfc_step(params, x, inputs, t)


@jax.jit
def _cfc_step(params, x, inputs, t):
    z = jnp.concatenate([x, inputs])  # (N + D,)
    F = z @ params["F"]["W"] + params["F"]["b"]
    G = jnp.tanh(z @ params["G"]["W"] + params["G"]["b"])
    H = jnp.tanh(z @ params["H"]["W"] + params["H"]["b"])
    gate_t = jax.nn.sigmoid(-F * t)  # the only place where time enters
    return gate_t * G + (1 - gate_t) * H
