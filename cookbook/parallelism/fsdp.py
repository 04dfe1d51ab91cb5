r"""Fully sharded data parallelism (ZeRO)
=====================================

Data parallelism in which no device holds a full copy of anything: the optimiser state, the
gradients and finally the parameters are cut into :math:`N` shards, one per device, so that the
memory per device falls as :math:`1/N`; reach for it when the model trains with data parallelism
but its parameters and Adam's moments no longer fit on one device.

Equation
--------

.. math::

   \theta = \left[\theta^{(1)}, \dots, \theta^{(N)}\right], \qquad
   g^{(k)} = \left[\frac{1}{N} \sum_{j=1}^{N} \nabla_\theta L_j\left(\theta\right)\right]^{(k)},

   m^{(k)} \leftarrow \beta_1 m^{(k)} + (1 - \beta_1)\, g^{(k)}, \qquad
   v^{(k)} \leftarrow \beta_2 v^{(k)} + (1 - \beta_2)\, \left(g^{(k)}\right)^2,

   \theta^{(k)} \leftarrow \theta^{(k)}
     - \eta\, \frac{m^{(k)} / (1 - \beta_1^t)}{\sqrt{v^{(k)} / (1 - \beta_2^t)} + \epsilon}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`\theta`
     - all parameters of the model, flattened into one vector and padded to a multiple of
       :math:`N`
     - ``state.params``
     - ``(P,)``
   * - :math:`N`, :math:`k`, :math:`j`
     - number of devices along the data axis; the device that owns a shard; a device whose
       examples contribute
     - ``n``; ``jax.lax.axis_index(axis)``
     - scalars
   * - :math:`\theta^{(k)}`, :math:`g^{(k)}`
     - the :math:`k`-th of :math:`N` equal slices of the parameters, of the gradient
     - ``theta_k``, ``g_k``
     - ``(P / N,)``
   * - :math:`L_j`
     - the mean loss on device :math:`j`'s slice of the batch (as in :doc:`data_parallel`)
     - ``local_loss``
     - scalar
   * - :math:`m^{(k)}`, :math:`v^{(k)}`
     - Adam's first and second moments of the slice :math:`k`
     - ``state.m``, ``state.v`` (``m_k``, ``v_k`` on a device)
     - ``(P / N,)``
   * - :math:`\beta_1`, :math:`\beta_2`, :math:`\epsilon`, :math:`\eta`
     - Adam's decay rates, its guard against division by zero, and the learning rate
     - ``b1``, ``b2``, ``eps``, ``learning_rate``
     - scalars
   * - :math:`t`
     - the number of steps taken, this one included
     - ``state.count``
     - scalar

Explanation
-----------

Data parallelism repeats everything on every device. With Adam in float32, each parameter costs
4 bytes for itself, 4 for its gradient and 8 for the two moments, and only the batch is shared.
ZeRO :footcite:`rajbhandari2020zero` removes the repetition in three stages, each cutting one more
of these into :math:`N` slices, device :math:`k` owning slice :math:`k`:

* **stage 1** shards the optimiser state. Gradients are all-reduced as before; each device
  updates only its slice of the parameters with its slice of :math:`m` and :math:`v`, and an
  *all-gather* gives every device the updated parameters.
* **stage 2** also shards the gradients: a *reduce-scatter* leaves on device :math:`k` only the
  summed slice :math:`g^{(k)}` that it needs. A reduce-scatter followed by an all-gather moves the
  same bytes as one all-reduce (which is usually implemented that way), so stages 1 and 2 cost no
  extra communication.
* **stage 3** shards the parameters too, and is what PyTorch calls fully sharded data parallelism
  (FSDP) :footcite:`zhao2023pytorch`: a device gathers the full parameters just before it uses
  them and drops them afterwards. Here the gradient comes out sharded by itself: the derivative of
  an all-gather is a reduce-scatter, so differentiating the loss with respect to the local slice
  :math:`\theta^{(k)}` through ``jax.lax.all_gather`` gives :math:`g^{(k)}` directly.

Every stage computes the same numbers as data parallelism with Adam; only where they live changes.

.. admonition:: Intuition

   Four flatmates share one cookbook. Rather than each buying the whole book, each keeps a quarter
   of its pages and their own notes in its margins; when they cook, they photocopy the pages they
   need from the others, use them and throw the copies away. Each shelf holds a quarter of the
   book, at the price of a trip to the photocopier before every meal.

The figure reads the bytes that one device holds between steps (the arguments of the compiled
step: parameters, moments and its share of the batch) for a two-layer MLP with 9476 parameters.
Data parallelism (stage 0) holds all of them on every device; stage 1 keeps the parameters whole
and cuts the moments, so its bytes fall towards a third; stage 3 cuts everything, and its bytes
per device fall as :math:`1/N` (the tests assert the points for stage 3 and those at eight devices
exactly).

.. plot::

   from cookbook.parallelism.fsdp import step_memory
   import numpy as np

   devices = [1, 2, 4, 8]
   kib = lambda n, stage: step_memory((32, 256, 4), n, stage=stage)["arguments"] / 1024
   whole = kib(1, 3)  # on one device every stage holds everything: one program measured
   fig, ax = plt.subplots(figsize=(5.2, 3.4))
   ax.plot([1, 8], [whole, kib(8, 0)], "o-", label="data parallel (stage 0)")
   ax.plot(devices, [whole] + [kib(n, 1) for n in devices[1:]], "o-", label="ZeRO stage 1 and 2")
   ax.plot(devices, [kib(n, 3) for n in devices], "o-", label="ZeRO stage 3, FSDP")
   ax.plot(devices, [whole / n for n in devices], "k:", label="1/N")
   ax.set(xscale="log", yscale="log", xlabel="devices N", ylabel="KiB held per device",
          title="state per device between steps (Adam, 9476 parameters)")
   ax.set_xticks(devices, [str(n) for n in devices]); ax.minorticks_off()
   ax.legend(fontsize=8)
   fig.tight_layout()

Gathering the parameters costs communication: per step, stage 3 sends one all-gather of the
parameters and one reduce-scatter of the gradients, which the tests count in the compiled
program (with one all-reduce of the scalar loss), against one all-reduce for data parallelism.

Inductive bias
--------------

Like data parallelism, sharding changes no model and no result: it assumes that the loss is a
mean over examples and that every device runs the same step. It does not cut the activations of a
layer, which grow with the batch and the width; that is what :doc:`tensor_parallel` does.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.foundations.mlp import init as mlp_init
>>> from cookbook.parallelism.fsdp import init, train, unflatten
>>> mesh = jax.make_mesh((8,), ("data",))
>>> params = mlp_init(jax.random.key(0), (3, 7, 2), activation="tanh")  # 44 parameters
>>> state = init(params, mesh, stage=3)  # padded with zeros to 48
>>> state.params.shape, state.params.sharding.shard_shape(state.params.shape)  # 6 on each device
((48,), (6,))
>>> X = jnp.linspace(-1.0, 1.0, 48).reshape(16, 3)
>>> Y = jnp.stack([X.sum(1), X[:, 0] * X[:, 1]], axis=1)
>>> state, losses = train(state, X, Y, mesh, sizes=(3, 7, 2), stage=3, learning_rate=0.05, steps=20)
>>> bool(losses[-1] < losses[0] / 2), int(state.count)
(True, 20)
>>> flat = jax.device_get(state.params)  # the whole vector, gathered to the host
>>> [layer["W"].shape for layer in unflatten(flat, (3, 7, 2))]
[(3, 7), (7, 2)]

Implementation notes
--------------------

* **Measured here** (tests): every stage on 8 devices, and stage 3 on a 2 × 4 mesh sharded over
  both of its axes, follows the single-device Adam of ``optax.adam`` to within :math:`10^{-5}` in
  the loss over twenty steps. The compiled step of data parallelism holds one all-reduce; stage 1
  an all-reduce and an all-gather; stage 3 an all-gather, a reduce-scatter and the all-reduce of
  the loss.
* **Units.** The whole model is one vector here, so stage 3 gathers every parameter at once and the
  gathered model is a temporary as large as the model. Real implementations gather one *unit*
  (a layer, a transformer block) at a time, just before its forward and again before its
  backward, and free it after, so that at most a unit or two is whole at any time; they reduce-
  scatter each unit's gradient as soon as the backward pass has produced it, and overlap all of
  this with computation :footcite:`zhao2023pytorch`. ZeRO stage 2's saving on gradients likewise
  comes from reducing them bucket by bucket during the backward pass; on a single bucket, as
  here, the full local gradient still exists for a moment, and stages 1 and 2 hold the same bytes.
* **In JAX** the same layouts come from :func:`jax.jit` and shardings alone: give the parameters
  and optimiser state a ``NamedSharding`` over the data axis (on a mesh whose axes are of type
  ``AxisType.Auto``) and the compiler partitions a single-device step by itself, gathers
  included. The tests find the same step, by a plan with more collectives than the three
  written here by hand with :func:`jax.shard_map`, which shows where they go.
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from cookbook import _checks
from cookbook.foundations import mlp
from cookbook.parallelism.data_parallel import axis_size, divisible, memory_per_device

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"init": ("mesh", "stage", "axis"), "unflatten": ("sizes",)}

STAGES = (0, 1, 2, 3)


class State(NamedTuple):
    """Flat, padded parameters, Adam's moments and the step count, each placed as its stage says."""
    params: jax.Array  # (P,)
    m: jax.Array  # (P,)
    v: jax.Array  # (P,)
    count: jax.Array  # ()


def _check_stage(stage):
    if isinstance(stage, bool) or stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES} (0 is plain data parallelism), got {stage!r}")
    return stage


def _specs(stage, axis):
    """The ``PartitionSpec`` of each field of :class:`State` at a stage."""
    shard, whole = P(axis), P()
    return State(params=shard if stage == 3 else whole, m=whole if stage == 0 else shard,
                 v=whole if stage == 0 else shard, count=whole)


def padded_size(sizes, n):
    """The number of parameters of an MLP of widths ``sizes``, rounded up to a multiple of ``n``."""
    count = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    return -(-count // n) * n


def _check_sizes(sizes):
    if not isinstance(sizes, tuple) or len(sizes) < 2:
        raise ValueError(f"sizes must be a tuple of at least two widths (in, out), got {sizes!r}")
    return tuple(_checks.size(s, f"sizes[{l}]") for l, s in enumerate(sizes))


def unflatten(flat, sizes):
    """The MLP's ``{"W", "b"}`` layers of widths ``sizes`` from the first entries of ``flat``."""
    sizes = _check_sizes(sizes)
    flat = _checks.float_array(flat, "flat", ndim=1, what=" (P,)")
    needed = padded_size(sizes, 1)
    if flat.shape[0] < needed:
        raise ValueError(f"flat must hold at least {needed} entries for sizes {sizes}, got {flat.shape[0]}")
    return _unflatten(flat, sizes)


@functools.partial(jax.jit, static_argnames=("sizes",))
def _unflatten(flat, sizes):
    sharding = jax.typeof(flat).sharding
    if isinstance(sharding, NamedSharding) and any(a is not None for a in sharding.spec):
        flat = jax.reshard(flat, NamedSharding(sharding.mesh, P()))  # gather the shards first
    layers, start = [], 0
    for a, b in zip(sizes[:-1], sizes[1:]):
        W = flat[start:start + a * b].reshape(a, b)
        layers.append({"W": W, "b": flat[start + a * b:start + a * b + b]})
        start += a * b + b
    return layers


def init(params, mesh, *, stage=3, axis="data"):
    """A :class:`State` for MLP ``params``: their flat vector, padded with zeros to a multiple of the
    devices along ``axis``, zero moments, and each field placed on the mesh as ``stage`` says."""
    _check_stage(stage)
    axis_size(mesh, axis)
    mlp._check_params(params)
    state = _init(params, axis_size(mesh, axis))
    return jax.tree.map(lambda a, spec: jax.device_put(a, NamedSharding(mesh, spec)), state, _specs(stage, axis))


@functools.partial(jax.jit, static_argnames=("n",))
def _init(params, n):
    flat = jnp.concatenate([jnp.concatenate([layer["W"].ravel(), layer["b"]]) for layer in params])
    flat = jnp.pad(flat, (0, -(-flat.shape[0] // n) * n - flat.shape[0]))  # (P,), P a multiple of N
    return State(params=flat, m=jnp.zeros_like(flat), v=jnp.zeros_like(flat), count=jnp.zeros((), jnp.int32))


def _adam(theta_k, g_k, m_k, v_k, t, learning_rate, b1=0.9, b2=0.999, eps=1e-8):
    m_k = b1 * m_k + (1 - b1) * g_k
    v_k = b2 * v_k + (1 - b2) * g_k ** 2
    step = learning_rate * (m_k / (1 - b1 ** t)) / (jnp.sqrt(v_k / (1 - b2 ** t)) + eps)
    return theta_k - step, m_k, v_k


def _on_device(state, X_k, Y_k, *, sizes, stage, learning_rate, axis):
    """One step on one device, with that device's slices of the state and of the batch."""
    n = jax.lax.axis_size(axis)
    k = jax.lax.axis_index(axis)

    def local_loss(theta):  # L_k of the device's examples, at the full parameters theta (P,)
        return mlp.loss(unflatten(theta, sizes), X_k, Y_k, activation="tanh")

    t = (state.count + 1).astype(jnp.float32)
    if stage == 3:
        def sharded_loss(theta_k):  # gather the parameters for use; the gradient is reduce-scattered
            return local_loss(jax.lax.all_gather(theta_k, axis, tiled=True)) / n

        value, g_k = jax.value_and_grad(sharded_loss)(state.params)
        value = jax.lax.psum(value, axis)
        theta_k, m_k, v_k = _adam(state.params, g_k, state.m, state.v, t, learning_rate)
        return State(theta_k, m_k, v_k, state.count + 1), value

    value, g = jax.value_and_grad(local_loss)(state.params)  # this device's gradient, not yet summed
    if stage == 0:
        value, g = jax.lax.pmean((value, g), axis)  # all-reduce: the whole gradient everywhere
        theta, m, v = _adam(state.params, g, state.m, state.v, t, learning_rate)
        return State(theta, m, v, state.count + 1), value
    s = state.params.shape[0] // n
    if stage == 1:
        value, g = jax.lax.pmean((value, g), axis)
        g_k = jax.lax.dynamic_slice_in_dim(g, k * s, s)  # this device's slice of it
    else:  # stage 2: reduce-scatter, each device receives only its summed slice
        value = jax.lax.pmean(value, axis)
        g_k = jax.lax.psum_scatter(g, axis, tiled=True) / n
    theta_k = jax.lax.dynamic_slice_in_dim(state.params, k * s, s)
    theta_k, m_k, v_k = _adam(theta_k, g_k, state.m, state.v, t, learning_rate)
    theta = jax.lax.all_gather(theta_k, axis, tiled=True)  # the updated parameters, everywhere
    return State(theta, m_k, v_k, state.count + 1), value


def _check(state, X, Y, mesh, sizes, stage, axis):
    _check_stage(stage)
    n = axis_size(mesh, axis)
    sizes = _check_sizes(sizes)
    if not isinstance(state, State):
        raise TypeError(f"state must be an fsdp.State (from fsdp.init), got {type(state).__name__}")
    Pn = padded_size(sizes, n)
    for name in ("params", "m", "v"):
        _checks.same_shape(_checks.float_array(getattr(state, name), f"state.{name}"), f"state.{name}", (Pn,),
                           expected_from=f"the parameters of sizes {sizes} padded to a multiple of {n}")
    X = _checks.float_array(X, "X", ndim=2, what=" (B, D)")
    _checks.same_shape(X, "X", (X.shape[0], sizes[0]), expected_from="(B, sizes[0])")
    Y = _checks.float_array(Y, "Y", ndim=2, what=" (B, C)")
    _checks.same_shape(Y, "Y", (X.shape[0], sizes[-1]), expected_from="(B, sizes[-1]) to match X")
    divisible(X.shape[0], n, "X", "batch size")
    return X, Y


@functools.partial(jax.jit, static_argnames=("mesh", "sizes", "stage", "axis", "steps"))
def _train(state, X, Y, learning_rate, mesh, sizes, stage, axis, steps):
    specs = _specs(stage, axis)
    state = jax.tree.map(lambda a, spec: jax.device_put(a, NamedSharding(mesh, spec)), state, specs)
    X, Y = (jax.device_put(a, NamedSharding(mesh, P(axis))) for a in (X, Y))

    def run(state, X_k, Y_k):
        def step(state, _):
            return _on_device(state, X_k, Y_k, sizes=sizes, stage=stage, learning_rate=learning_rate, axis=axis)
        if steps == 1:  # one step, without a loop around it (what the memory figures compile)
            state, value = step(state, None)
            return state, value[None]
        return jax.lax.scan(step, state, length=steps)

    # check_vma=False: the collectives are all written out, none is inserted by differentiation
    return jax.shard_map(run, mesh=mesh, in_specs=(specs, P(axis), P(axis)), out_specs=(specs, P()),
                         check_vma=False)(state, X, Y)


def train(state, X, Y, mesh, *, sizes, stage=3, learning_rate, steps, axis="data"):
    """``steps`` steps of Adam on the MLP of widths ``sizes`` with the state sharded as ``stage``
    says (0: data parallel, 1: moments, 2: and gradients, 3: and parameters) over the mesh axis
    ``axis`` (a name or a tuple of names), as one program. Returns the new state and the loss
    before each step, shape (steps,)."""
    X, Y = _check(state, X, Y, mesh, sizes, stage, axis)
    _checks.size(steps, "steps")
    _checks.positive(learning_rate, "learning_rate")
    return _train(state, X, Y, learning_rate, mesh, sizes, stage, axis, steps)


@functools.cache
def step_program(sizes, n, *, stage, batch=8, axis="data"):
    """The compiled program of one step of :func:`train` for an MLP of widths ``sizes`` on the first
    ``n`` devices, with a batch of ``batch`` examples (compiled, never run; kept for the next call)."""
    _check_stage(stage)
    sizes = _check_sizes(sizes)
    n = _checks.size(n, "n")
    if n > jax.device_count():
        raise ValueError(f"n must be at most the {jax.device_count()} devices present, got {n}")
    mesh = jax.make_mesh((n,), (axis,))
    placed = lambda shape, dtype, spec: jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))
    specs = _specs(stage, axis)
    state = State(*(placed((padded_size(sizes, n),), jnp.float32, spec) for spec in specs[:3]),
                  placed((), jnp.int32, specs.count))
    X = placed((batch, sizes[0]), jnp.float32, P(axis))
    Y = placed((batch, sizes[-1]), jnp.float32, P(axis))
    return _train.lower(state, X, Y, 0.01, mesh, sizes, stage, axis, 1).compile()


def step_memory(sizes, n, *, stage, batch=8):
    """:func:`~cookbook.parallelism.data_parallel.memory_per_device` of :func:`step_program`."""
    return memory_per_device(step_program(sizes, n, stage=stage, batch=batch))
