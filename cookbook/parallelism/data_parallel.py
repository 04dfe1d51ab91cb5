r"""Data parallelism
================

Copy the model to every device, give each device its own slice of the batch, and average the
gradients with one all-reduce before every step: the first thing to reach for when one device is
too slow and the model still fits on it.

Equation
--------

.. math::

   L_k(\theta) = \frac{N}{B} \sum_{i \in \mathcal{B}_k} \ell\left(f_\theta(x_i), y_i\right),
   \qquad
   g = \frac{1}{N} \sum_{k=1}^{N} \nabla_\theta L_k(\theta),
   \qquad
   \theta \leftarrow \theta - \eta\, g

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`\theta`
     - the parameters, the same copy on every device
     - ``params``
     - a list of ``{"W", "b"}`` layers
   * - :math:`N`, :math:`k`
     - number of devices along the data axis; a device's position on it
     - ``n``; ``jax.lax.axis_index(axis)``
     - scalars
   * - :math:`B`
     - the (global) batch size; each device holds :math:`B / N` examples
     - ``X.shape[0]``
     - scalar
   * - :math:`\mathcal{B}_k`
     - the examples that device :math:`k` holds
     - ``X_k``, ``Y_k``
     - ``(B / N, D)``, ``(B / N, C)``
   * - :math:`x_i`, :math:`y_i`
     - one example and its target
     - rows of ``X``, ``Y``
     - ``(D,)``, ``(C,)``
   * - :math:`i`
     - the index of an example
     - a row
     - scalar
   * - :math:`f_\theta`, :math:`\ell`
     - the model (a tanh MLP) and the loss of one example (squared error)
     - ``mlp.apply``, ``mlp.loss``
     - ``(D,) -> (C,)``; scalar
   * - :math:`L_k`
     - the mean loss on device :math:`k`'s examples
     - ``local_loss``
     - scalar
   * - :math:`g`
     - the gradient of the whole batch, the same on every device after the all-reduce
     - ``grads``
     - like ``params``
   * - :math:`\eta`
     - the learning rate
     - ``learning_rate``
     - scalar

Explanation
-----------

The loss of a batch is a mean over its examples, and a gradient is linear, so the gradient of the
batch is the mean of the gradients of any equal-sized parts of it. Data parallelism
:footcite:`dean2012large,li2020pytorch` uses exactly this: each of the :math:`N` devices computes
:math:`\nabla L_k` on its own :math:`B / N` examples, independently and at the same time, and an
*all-reduce* (every device sends its vector and receives the sum) turns the :math:`N` partial
gradients into the batch's gradient on every device. Every device then takes the same step from
the same parameters, so the copies never drift apart and never need to be sent again. The result
is the single-device step on the whole batch, up to the order of floating-point additions
(the tests find the two within :math:`10^{-6}`); with a fixed batch per device, :math:`N` devices
process :math:`N` times the batch in the time of one, and the learning rate is then usually scaled
with the batch :footcite:`goyal2017accurate`.

.. admonition:: Intuition

   A teacher with a pile of 400 exams hands 100 to each of four assistants with the same marking
   scheme. Each sums the marks of their pile; the four sums, added, give the class average, and
   every assistant is told it. Nobody had to read every exam, and everyone ends up knowing the
   same number.

The code is written with :func:`jax.shard_map`: inside it, one function runs on every device with
that device's slice of the arrays (``in_specs`` say which axis is split over which mesh axis,
``P()`` means replicated), and collectives such as :func:`jax.lax.pmean` name the mesh axis they
reduce over. Each device's parameters are first marked as *varying* over the data axis
(``jax.lax.pcast``), so that differentiating gives each device its own local gradient, and the
mean over devices is the one explicit ``pmean``. (Without that mark, JAX knows the parameters are
the same on every device and inserts the all-reduce into the backward pass itself.) XLA then
merges the all-reduces of every gradient array and of the loss into one: the compiled step holds
exactly one collective, whatever :math:`N` is, as the tests read from its HLO with
``collectives``.

What does not shrink is the memory: every device holds the whole model, its gradients and its
optimiser state, so a model that does not fit on one device does not fit on :math:`N` either.
Per device, ``memory_per_device`` reads from the compiled program that the parameters take the
same bytes for every :math:`N` and only the batch's share falls as :math:`1/N`. The next page,
:doc:`fsdp`, shards the rest.

Inductive bias
--------------

Data parallelism changes no model and no result; it assumes only that the loss is a mean of
independent per-example terms, so that the batch can be cut anywhere. Layers that couple the
examples of a batch break that assumption: a batch normalisation that computes its statistics on
each device's slice sees :math:`B/N` examples, not :math:`B`, and trains a slightly different
model (see :doc:`gradient_accumulation`).

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.foundations.mlp import init
>>> from cookbook.parallelism.data_parallel import grad, train
>>> mesh = jax.make_mesh((4,), ("data",))
>>> params = init(jax.random.key(0), (3, 5, 2), activation="tanh")
>>> X = jnp.linspace(-1.0, 1.0, 24).reshape(8, 3)
>>> Y = jnp.stack([X.sum(1), X[:, 0] * X[:, 1]], axis=1)
>>> value, grads = grad(params, X, Y, mesh)
>>> [g["W"].shape for g in grads], grads[0]["W"].sharding.is_fully_replicated  # on every device
([(3, 5), (5, 2)], True)
>>> trained, losses = train(params, X, Y, mesh, learning_rate=0.1, steps=20)
>>> bool(losses[-1] < losses[0] / 2), bool(jnp.allclose(losses[0], value))
(True, True)

Implementation notes
--------------------

* **Measured here.** For the MLP of the tests and :math:`N = 8`, the compiled step holds one
  all-reduce and no other collective; the loss curve of twenty steps on eight devices matches the
  single-device curve within :math:`10^{-6}`.
* **In practice** the all-reduce of the gradients is cut into buckets that start while the backward
  pass is still running, so that communication hides behind computation
  :footcite:`li2020pytorch`; XLA schedules collectives asynchronously for the same reason.
  PyTorch calls the idea ``DistributedDataParallel``; in JAX it is nothing more than a batch
  sharded over a mesh axis, either by hand as here or by :func:`jax.jit` from the shardings of its
  inputs.
* **Devices.** The book runs on eight simulated CPU devices (see the chapter's introduction); a
  script calls ``jax.config.update("jax_num_cpu_devices", 8)`` right after ``import jax``.
"""

import functools
import math
import re
from collections import Counter

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from cookbook import _checks
from cookbook.foundations import mlp

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"grad": ("mesh", "axis"), "train": ("mesh", "axis", "steps")}

#: The kinds of collective that :func:`collectives` counts in a compiled program.
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_COLLECTIVE = re.compile(r"\s(" + "|".join(COLLECTIVES) + r")(?:-start)?\(")


def axis_size(mesh, axis, name="axis"):
    """The number of devices along ``axis`` (a mesh axis name, or a tuple of names) of ``mesh``."""
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh (from jax.make_mesh), got {type(mesh).__name__}")
    names = axis if isinstance(axis, tuple) else (axis,)
    for a in names:
        if not isinstance(a, str) or a not in mesh.shape:
            raise ValueError(f"{name} must name axes of the mesh {dict(mesh.shape)}, got {axis!r}")
    return math.prod(mesh.shape[a] for a in names)


def divisible(length, n, name, what):
    """A ``ValueError`` unless ``length`` (the size of ``name``'s ``what``) is a multiple of ``n``."""
    if length % n:
        raise ValueError(f"{name} must have a {what} divisible by the {n} devices that share it, got {length}")


def _check(params, X, Y, mesh, axis):
    n = axis_size(mesh, axis)
    X, Y = mlp._check_data(params, X, Y)
    divisible(X.shape[0], n, "X", "batch size")
    return X, Y, n


def _local_grads(params, X_k, Y_k, axis):
    """On one device: the loss and gradient of its slice, averaged over the devices (an all-reduce)."""
    params = jax.lax.pcast(params, axis, to="varying")  # each device differentiates its own copy

    def local_loss(params):
        return mlp.loss(params, X_k, Y_k, activation="tanh")  # L_k, a mean over B / N examples

    value, grads = jax.value_and_grad(local_loss)(params)
    return jax.lax.pmean((value, grads), axis)  # g = (1 / N) sum_k grad L_k, on every device


def _placed(mesh, axis, params, X, Y):
    """The parameters replicated, the batch split along ``axis``."""
    put = lambda a, spec: jax.device_put(a, NamedSharding(mesh, spec))
    return jax.tree.map(lambda a: put(a, P()), params), put(X, P(axis)), put(Y, P(axis))


@functools.partial(jax.jit, static_argnames=("mesh", "axis"))
def _grad(params, X, Y, mesh, axis):
    params, X, Y = _placed(mesh, axis, params, X, Y)
    step = jax.shard_map(lambda p, x, y: _local_grads(p, x, y, axis), mesh=mesh,
                         in_specs=(P(), P(axis), P(axis)), out_specs=P())
    return step(params, X, Y)


def grad(params, X, Y, mesh, *, axis="data"):
    """The loss and gradient of the MLP's mean squared error on the batch ``X`` (B, D), ``Y`` (B, C),
    computed data-parallel over the mesh axis ``axis`` (a name or a tuple of names); B must be a
    multiple of the number of devices along it. Returns ``(loss, grads)``, replicated."""
    X, Y, _ = _check(params, X, Y, mesh, axis)
    return _grad(params, X, Y, mesh, axis)


@functools.partial(jax.jit, static_argnames=("mesh", "axis", "steps"))
def _train(params, X, Y, learning_rate, mesh, axis, steps):
    params, X, Y = _placed(mesh, axis, params, X, Y)

    def on_device(params, X_k, Y_k):
        def step(params, _):
            value, grads = _local_grads(params, X_k, Y_k, axis)
            return jax.tree.map(lambda p, g: p - learning_rate * g, params, grads), value

        return jax.lax.scan(step, params, length=steps)

    return jax.shard_map(on_device, mesh=mesh, in_specs=(P(), P(axis), P(axis)),
                         out_specs=(P(), P()))(params, X, Y)


def train(params, X, Y, mesh, *, learning_rate, steps, axis="data"):
    """``steps`` steps of gradient descent with data-parallel gradients (:func:`grad`), run as one
    program on the mesh. Returns the parameters and the loss before each step, shape (steps,)."""
    X, Y, _ = _check(params, X, Y, mesh, axis)
    _checks.size(steps, "steps")
    _checks.positive(learning_rate, "learning_rate")
    return _train(params, X, Y, learning_rate, mesh, axis, steps)


def collectives(compiled):
    """How many collectives of each kind (:data:`COLLECTIVES`) a compiled program holds, read from
    its HLO text (``jax.jit(f).lower(...).compile()``); kinds that do not occur are left out."""
    if not isinstance(compiled, jax.stages.Compiled):
        raise TypeError(f"compiled must be a jax.stages.Compiled (jax.jit(f).lower(...).compile()), "
                        f"got {type(compiled).__name__}")
    return dict(Counter(m.group(1) for m in map(_COLLECTIVE.search, compiled.as_text().splitlines()) if m))


def memory_per_device(compiled):
    """The bytes that one device holds for a compiled program, from XLA's ``memory_analysis``: its
    ``arguments``, its ``outputs`` and the ``temporaries`` it allocates while it runs."""
    if not isinstance(compiled, jax.stages.Compiled):
        raise TypeError(f"compiled must be a jax.stages.Compiled (jax.jit(f).lower(...).compile()), "
                        f"got {type(compiled).__name__}")
    stats = compiled.memory_analysis()
    return {"arguments": int(stats.argument_size_in_bytes), "outputs": int(stats.output_size_in_bytes),
            "temporaries": int(stats.temp_size_in_bytes)}
