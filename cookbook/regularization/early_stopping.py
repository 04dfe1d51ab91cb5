r"""Early stopping
==============

Watch the validation loss during training and stop once it has failed to improve for a set number
of evaluations (the *patience*), keeping the best parameters seen; reach for it in nearly every
training run, as the cheapest regulariser and a guard against wasted compute.

Equation
--------

.. math::

   v^\star_t =
   \begin{cases} v_t & \text{if } v_t < v^\star_{t-1} - \delta \\ v^\star_{t-1} & \text{otherwise} \end{cases}
   \qquad
   c_t =
   \begin{cases} 0 & \text{if } v_t < v^\star_{t-1} - \delta \\ c_{t-1} + 1 & \text{otherwise} \end{cases}

   \text{stop at the first } t \text{ with } c_t \ge P, \qquad v^\star_{-1} = +\infty, \quad c_{-1} = 0

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`t`
     - index of an evaluation (0-based), not of a training step
     - ``state.step`` (evaluations counted, up to the stop)
     - ``()`` int32
   * - :math:`v_t`
     - validation loss at evaluation :math:`t`
     - ``val_loss``
     - ``()``
   * - :math:`v^\star_t`
     - best validation loss so far
     - ``state.best_loss``
     - ``()``
   * - :math:`c_t`
     - evaluations since the last improvement
     - ``state.bad_steps``
     - ``()`` int32
   * - :math:`\delta`
     - smallest decrease that counts as an improvement
     - ``min_delta``
     - scalar :math:`\ge 0`
   * - :math:`P`
     - patience: evaluations without improvement before stopping
     - ``patience``
     - int :math:`\ge 1`

Explanation
-----------

A large network trained long enough first learns the patterns shared by the training and the
validation data, then starts to memorise the training set: its training loss keeps falling while
its validation loss bottoms out and rises. Stopping at the bottom keeps the model that generalises
best. The rule here is the usual *patience* rule :footcite:`prechelt1998early`: remember the best
validation loss :math:`v^\star`, count the evaluations since it last improved, and stop when the
count reaches :math:`P`. Because validation losses are noisy, one bad evaluation should not end
training, hence the patience; and because tiny improvements may be noise too, a decrease smaller
than :math:`\delta` does not count (and does not move :math:`v^\star`). The state also keeps the
parameters of the best evaluation, which are the ones to use, not the last ones, which are
:math:`P` evaluations past the optimum.

**Why it regularises.** For a linear model trained by gradient descent from zero, the number of
steps plays the role of an inverse weight decay: the directions with large curvature are fitted
first and the poorly determined ones last, so stopping early leaves the latter near zero, much as
ridge regression shrinks them (compare :doc:`weight_decay`) :footcite:`goodfellow2016deep`. In
general it limits how far the parameters can travel from their initialisation.

**A pure state machine, in JAX.** ``init`` builds the state and ``update`` maps
``(state, val_loss)`` to a new state, with no hidden memory and no Python branching on values: the
choices are :func:`jax.numpy.where` selections. This is a design choice with a reason: the rule can
then run *inside* a compiled training loop (under :func:`jax.jit`, in a :func:`jax.lax.scan`, or
as the condition of a :func:`jax.lax.while_loop` via ``state.should_stop``), without pulling each
validation loss back to the host. A plain Python class would be simpler to read but would force a
device-to-host copy at every evaluation and could not live inside a compiled loop. Once
``should_stop`` is set, ``update`` returns the state unchanged, so a loop that cannot exit (a
``scan`` of fixed length) simply freezes the result. A NaN loss is an error when it is concrete (a
stopping decision should not be made on it in silence); under :func:`jax.jit` it cannot be checked
and is never an improvement, so a diverging run stops after :math:`P` evaluations. The rule is the same as Keras's ``EarlyStopping``
callback with ``mode="min"``: an improvement is a loss below the best by more than ``min_delta``.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.regularization.early_stopping import replay
   t = jnp.arange(80)
   train = 2.0 * jnp.exp(-t / 12.0) + 0.1
   val = train + 0.0004 * t**2 + 0.03 * jax.random.normal(jax.random.key(0), (80,))
   states = replay(val, patience=10)
   stop = int(jnp.argmax(states.should_stop))
   best = int(states.best_step[stop])
   fig, ax = plt.subplots(figsize=(6.5, 3.8))
   ax.plot(t, train, label="training loss")
   ax.plot(t, val, label="validation loss")
   ax.axvline(best, color="g", ls="--", label=f"best evaluation ({best})")
   ax.axvline(stop, color="r", ls=":", label=f"stop, patience 10 ({stop})")
   ax.set_xlabel("evaluation $t$")
   ax.set_ylabel("loss")
   ax.legend()
   fig.tight_layout()

.. admonition:: Intuition

   Early stopping is taking the cake out of the oven by watching it rather than the clock: you
   check it every so often, remember when it looked best, and once it has looked no better for
   several checks in a row, you stop and serve the best version, not the last one. The patience
   is how many disappointing checks you tolerate before deciding the peak has passed.

Inductive bias
--------------

Early stopping assumes that the validation set is drawn like the test data and that the validation
curve has one broad minimum, after which it does not come down again. The patience is a bet on how
long noise can hide an improvement. Deep networks sometimes break the assumption ("double
descent": the validation loss can rise and then fall again with longer training), and learning rate
schedules that decay to zero make the curve keep improving until the end; there, a larger patience
or simply keeping the best checkpoint of a full run is safer.

Example
-------

>>> import jax.numpy as jnp
>>> from cookbook.regularization.early_stopping import init, replay, update
>>> state = init()
>>> for loss in [1.0, 0.8, 0.81, 0.79, 0.9, 0.85]:
...     state = update(state, jnp.array(loss), patience=2, min_delta=0.02)
>>> # stopped after evaluation 3 (the fourth), then frozen: 0.9 and 0.85 were not counted
>>> int(state.step), round(float(state.best_loss), 2), int(state.best_step), bool(state.should_stop)
(4, 0.8, 1, True)
>>> states = replay(jnp.array([1.0, 0.8, 0.81, 0.79, 0.9, 0.85]), patience=2, min_delta=0.02)
>>> states.bad_steps  # 0.79 improves on 0.8 by less than min_delta: not an improvement
Array([0, 0, 1, 2, 2, 2], dtype=int32)
>>> states.should_stop
Array([False, False, False,  True,  True,  True], dtype=bool)
>>> params = {"w": jnp.zeros(2)}
>>> state = update(init(params), jnp.array(0.5), {"w": jnp.ones(2)}, patience=3)
>>> state.best_params["w"]  # the parameters of the best evaluation are kept
Array([1., 1.], dtype=float32)
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"init": (), "update": (), "replay": ()}


class EarlyStoppingState(NamedTuple):
    """What the rule remembers between evaluations."""

    step: jax.Array  #: evaluations seen so far
    best_loss: jax.Array  #: best validation loss so far (inf before the first)
    best_step: jax.Array  #: index of the best evaluation (-1 before the first)
    bad_steps: jax.Array  #: evaluations since the last improvement
    should_stop: jax.Array  #: True once bad_steps has reached the patience; then the state is frozen
    best_params: Any = None  #: parameters of the best evaluation, if ``init`` was given parameters


def _check_rule(patience, min_delta):
    if not isinstance(patience, jax.core.Tracer):
        _checks.size(patience, "patience")
    if not isinstance(min_delta, jax.core.Tracer) and np.any(np.asarray(min_delta) < 0):
        raise ValueError(f"min_delta must be >= 0, got {min_delta}")


def init(params=None):
    """The state before the first evaluation; pass ``params`` to keep a copy of the best parameters."""
    return EarlyStoppingState(
        step=jnp.zeros((), jnp.int32),
        best_loss=jnp.full((), jnp.inf, jnp.float32),
        best_step=jnp.full((), -1, jnp.int32),
        bad_steps=jnp.zeros((), jnp.int32),
        should_stop=jnp.zeros((), bool),
        best_params=params,
    )


def update(state, val_loss, params=None, *, patience, min_delta=0.0):
    """The state after one more validation loss; ``params`` are the parameters that gave it.

    An improvement is ``val_loss < best_loss - min_delta``. Once ``should_stop`` is True the state no
    longer changes. ``params`` must be given if and only if ``init`` was given parameters.
    """
    _check_rule(patience, min_delta)
    if (params is None) != (state.best_params is None):
        raise ValueError("params must be passed to update if and only if they were passed to init")
    if params is not None:
        _checks.same_tree(params, "params", state.best_params, "state.best_params")
    val_loss = _checks.float_array(val_loss, "val_loss", ndim=0, what=" (a scalar)").astype(jnp.float32)
    _checks.check_no_nan(val_loss, "val_loss")  # under jit a NaN is simply no improvement
    improved = val_loss < state.best_loss - min_delta  # False for NaN: a diverging run is no improvement
    bad_steps = jnp.where(improved, 0, state.bad_steps + 1)
    new = EarlyStoppingState(
        step=state.step + 1,
        best_loss=jnp.where(improved, val_loss, state.best_loss),
        best_step=jnp.where(improved, state.step, state.best_step),
        bad_steps=bad_steps,
        should_stop=bad_steps >= patience,
        best_params=None if params is None else jax.tree.map(
            lambda new, old: jnp.where(improved, new, old), params, state.best_params),
    )
    # Once stopped, stay stopped: every field keeps its value.
    return jax.tree.map(lambda old, new: jnp.where(state.should_stop, old, new), state, new)


def replay(val_losses, *, patience, min_delta=0.0):
    """Run the rule over a whole curve of validation losses (T,); returns the T states, stacked."""
    val_losses = _checks.check_no_nan(_checks.float_array(val_losses, "val_losses", ndim=1, what=" (T,)"), "val_losses")

    def step(state, val_loss):
        state = update(state, val_loss, patience=patience, min_delta=min_delta)
        return state, state

    _, states = jax.lax.scan(step, init(), val_losses)
    return states
