r"""Gradient clipping
=================

Cap each gradient entry, or rescale the whole gradient when its norm exceeds a bound, before the
optimiser sees it: the guard against the rare exploding step that would undo hours of training, used
in nearly every recurrent network and transformer.

Equation
--------

.. math::

   \text{by value:}\quad \tilde{g}_j = \min\!\left(\max(g_j, -c),\, c\right)

   \text{by global norm:}\quad \lVert g \rVert = \sqrt{\textstyle\sum_{l} \sum_{j} g_{lj}^{2}}, \qquad
   \tilde{g} = g \cdot \min\!\left(1, \frac{\tau}{\lVert g \rVert}\right)

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`g`, :math:`g_j`, :math:`g_{lj}`
     - the gradient (a pytree); one of its entries; entry :math:`j` of leaf :math:`l`
     - ``updates``
     - like the parameters
   * - :math:`\tilde{g}`, :math:`\tilde{g}_j`
     - the clipped gradient passed on to the next transformation
     - the returned ``updates``
     - like the parameters
   * - :math:`l`, :math:`j`
     - index of a leaf; index of an entry within it
     - (the tree and array axes)
     - integers
   * - :math:`c`
     - the largest absolute value an entry may keep
     - ``max_delta``
     - scalar
   * - :math:`\tau`
     - the largest global norm the gradient may keep
     - ``max_norm``
     - scalar

Explanation
-----------

A deep or recurrent network's loss surface has cliffs: regions where the gradient is suddenly
enormous, because a product of many Jacobians has grown exponentially. One step along such a
gradient throws the parameters far away, and training may never recover.
:footcite:t:`pascanu2013difficulty` proposed the remedy used ever since: keep the direction of the
gradient but bound its length. Rescaling the *whole* gradient (every leaf by the same factor) by
:math:`\tau/\lVert g\rVert` when its global norm exceeds :math:`\tau` leaves ordinary steps untouched
and turns a cliff into a step of length at most :math:`\eta\tau`, in the same direction
:footcite:`pascanu2013difficulty`. Clipping
*by value* bounds each entry separately; it is cruder, because it changes the gradient's direction
(the largest entries are flattened, the small ones not), but it cannot be fooled by one huge leaf.

Both are gradient transformations (``clip_to_global_norm`` is the pure function behind the second)
with the same interface as the optimisers of this chapter
(empty state, ``update`` maps gradients to gradients), so they compose. ``chain`` runs
transformations one after another, each seeing the output of the one before and keeping its own
state in a tuple, as optax's ``chain`` does: ``chain(clip_by_global_norm(1.0), adam(1e-3))`` clips
and then applies Adam, and is itself a transformation.

Clipping before Adam still matters even though Adam normalises the step: a single huge gradient
enters :math:`\hat{v}` and suppresses the steps of that coordinate for hundreds of steps afterwards.

**Numerical traps.** Squaring a float32 entry larger than about :math:`1.8 \times 10^{19}`
overflows, and then the norm is infinite and the "clipped" gradient is zero or NaN (optax's
:func:`optax.clip_by_global_norm` behaves this way). ``global_norm`` divides by the largest
magnitude first and multiplies back afterwards, which gives the same norm for ordinary gradients and
a finite, correct one for huge gradients, so the clipped norm is exactly at the bound (up to one
rounding) whatever came in.

.. admonition:: Intuition

   Clipping by global norm is the speed limiter of a car: in ordinary driving it does nothing,
   and when the driver floors the pedal it caps the speed without turning the wheel. Clipping by
   value is a cruder device that caps each wheel on its own, so a car with one wheel spinning
   fast also changes direction.

Inductive bias
--------------

Clipping assumes that an unusually large gradient is an accident of the landscape (a cliff, a bad
batch) rather than information, and that its direction may be trusted while its length may not.
With a bound set too low it silently becomes normalised gradient descent, every step of length
:math:`\eta\tau`, which changes the effective learning rate.

Example
-------

A gradient of norm 13 is rescaled to norm 1, keeping its direction; a small one passes unchanged:

>>> import jax.numpy as jnp
>>> from cookbook.optimization.gradient_clipping import (
...     clip, clip_by_global_norm, clip_to_global_norm, global_norm)
>>> g = {"w": jnp.array([3.0, 4.0]), "b": jnp.array([12.0])}
>>> float(global_norm(g))
13.0
>>> clipper = clip_by_global_norm(max_norm=1.0)
>>> clipped, _ = clipper.update(g, clipper.init(g))
>>> clipped["w"].round(4), clipped["b"].round(4)
(Array([0.2308, 0.3077], dtype=float32), Array([0.9231], dtype=float32))
>>> clip_to_global_norm(g, max_norm=100.0)["b"]
Array([12.], dtype=float32)
>>> clip(max_delta=3.5).update(g, ())[0]["w"]
Array([3. , 3.5], dtype=float32)
>>> round(float(global_norm({"w": jnp.full(4, 1e30)})) / 1e30, 4)  # a naive sum of squares overflows
2.0
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.optimization.sgd import GradientTransformation, check_hyperparameter

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"clip_to_global_norm": ("max_norm",)}


def global_norm(tree):
    """The Euclidean norm of all the entries of a pytree together, safe from overflow."""
    _check_not_empty(tree)
    return _global_norm_jit(tree)


def _check_not_empty(tree):
    if not jax.tree.leaves(tree):
        raise ValueError("global_norm needs a pytree with at least one array, got an empty tree")


# The public functions check their input in Python, then run a compiled core (a step size or bound
# static, as check_hyperparameter needs it concrete): a repeated call with the same tree of shapes
# reuses one program instead of dispatching a few operations per leaf.
def _global_norm(tree):
    leaves = jax.tree.leaves(tree)
    scale = jnp.max(jnp.stack([jnp.max(jnp.abs(x)).astype(jnp.float32) for x in leaves]))
    safe = jnp.where(scale > 0, scale, 1.0)
    total = sum(jnp.sum(jnp.square(x.astype(jnp.float32) / safe)) for x in leaves)
    return safe * jnp.sqrt(total)


_global_norm_jit = jax.jit(_global_norm)


def _check_updates(updates, params):
    """Float gradients, shaped like ``params`` when they are given."""
    _checks.same_tree(updates, "updates", updates if params is None else params, "params")


def _no_state(params):
    del params
    return ()


def clip(max_delta):
    """Clip every entry of the gradient to ``[-max_delta, max_delta]``."""
    check_hyperparameter("max_delta", max_delta, 0.0, float("inf"))

    def update(updates, state, params=None):
        _check_updates(updates, params)
        return _clip(updates, max_delta=_checks.static_number(max_delta, "max_delta")), state

    return GradientTransformation(_no_state, update)


@functools.partial(jax.jit, static_argnames="max_delta")
def _clip(updates, *, max_delta):
    return jax.tree.map(lambda g: jnp.clip(g, -max_delta, max_delta), updates)


def clip_to_global_norm(updates, max_norm):
    """``updates`` rescaled as one to global norm ``max_norm`` when their norm is larger, else unchanged."""
    _check_updates(updates, None)
    _check_not_empty(updates)
    if _checks.is_concrete(max_norm):
        return _clip_to_global_norm(updates, max_norm=_checks.static_number(max_norm, "max_norm"))
    return _clip_to_global_norm_traced(updates, max_norm)  # a bound traced by an outer jax.jit


def _rescale(updates, max_norm):
    norm = _global_norm(updates)
    factor = jnp.where(norm < max_norm, 1.0, max_norm / jnp.maximum(norm, max_norm))
    return jax.tree.map(lambda g: (g * factor).astype(g.dtype), updates)


_clip_to_global_norm = jax.jit(_rescale, static_argnames="max_norm")
_clip_to_global_norm_traced = jax.jit(_rescale)


def clip_by_global_norm(max_norm):
    """The transformation that applies :func:`clip_to_global_norm` to every gradient."""
    check_hyperparameter("max_norm", max_norm, 0.0, float("inf"))
    if max_norm == 0:
        raise ValueError("max_norm must be positive, got 0")

    def update(updates, state, params=None):
        _check_updates(updates, params)
        return clip_to_global_norm(updates, max_norm), state

    return GradientTransformation(_no_state, update)


def chain(*transforms):
    """Compose transformations left to right; the state is the tuple of their states."""
    if not transforms or not all(isinstance(t, GradientTransformation) for t in transforms):
        raise ValueError(f"chain needs one or more GradientTransformations, got {transforms!r}")

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(updates, state, params=None):
        if len(state) != len(transforms):
            raise ValueError(f"state must hold {len(transforms)} states, one per transformation, got {len(state)}")
        new_state = []
        for t, s in zip(transforms, state):
            updates, s = t.update(updates, s, params)
            new_state.append(s)
        return updates, tuple(new_state)

    return GradientTransformation(init, update)
