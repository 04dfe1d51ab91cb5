r"""Pipeline parallelism
====================

Cut a deep network into consecutive stages, one per device, and feed the batch through them in
micro-batches, so that the stages work on different micro-batches at the same time: the way to
train a model whose layers do not fit on one device, at the price of an idle *bubble* while the
pipeline fills and drains.

Equation
--------

:math:`p` stages :math:`f_1, \dots, f_p` and :math:`m` micro-batches :math:`x^{(1)}, \dots,
x^{(m)}`; at tick :math:`\tau` stage :math:`j` runs micro-batch :math:`i = \tau - j + 1`:

.. math::

   h_j^{(i)} = f_j\big(h_{j-1}^{(i)}\big), \quad h_0^{(i)} = x^{(i)}, \qquad
   y^{(i)} = h_p^{(i)}, \qquad
   \text{ticks} = m + p - 1 \ \text{(forward)}

   \text{bubble} = \frac{p (m + p - 1) - p m}{p (m + p - 1)} = \frac{p - 1}{m + p - 1}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`p`, :math:`j`
     - number of stages (devices along the mesh axis); index of a stage
     - ``p``; ``stage``
     - scalar
   * - :math:`m`, :math:`i`
     - number of micro-batches; index of one
     - ``num_microbatches``
     - scalar
   * - :math:`f_j`
     - stage :math:`j`: :math:`L/p` consecutive layers of the network, on device :math:`j`
     - ``run_stage`` with the stage's slice of ``params``
     - ``(L/p, D, D)`` weights
   * - :math:`x^{(i)}`
     - micro-batch :math:`i` of the input, :math:`B/m` rows
     - ``microbatches[i]``
     - ``(B/m, D)``
   * - :math:`h_j^{(i)}`
     - activation of micro-batch :math:`i` after stage :math:`j`, sent to stage :math:`j + 1`
     - ``h``
     - ``(B/m, D)``
   * - :math:`y^{(i)}`
     - output of micro-batch :math:`i`
     - ``outputs[i]``
     - ``(B/m, D)``
   * - :math:`\tau`
     - tick of the pipeline's clock
     - ``tick``
     - scalar

Explanation
-----------

A network too deep for one device can be cut by depth: device :math:`j` holds layers
:math:`(j-1)L/p + 1` to :math:`jL/p` and passes its output to device :math:`j + 1`. Run naively,
one batch at a time, only one device works at any moment. GPipe :footcite:`huang2019gpipe` splits
the batch into :math:`m` micro-batches: while stage 2 works on the first micro-batch, stage 1
already starts the second, and after :math:`p - 1` ticks all stages are busy. The forward pass of
all micro-batches takes :math:`m + p - 1` ticks instead of :math:`m`, the backward pass likewise
in reverse, so with forward and backward steps of equal length each device is idle for a fraction
:math:`(p - 1)/(m + p - 1)` of the time: the bubble, small when :math:`m \gg p`. The gradient is
the sum over micro-batches, the same as the whole batch's.

.. admonition:: Intuition

   An assembly line: one car takes as long to build as ever, but once the line is full, a car
   leaves every tick. The bubble is the start of the shift, when the last stations wait for the
   first car, and its end, when the first stations have nothing left to do.

**Schedules.** GPipe runs all :math:`m` forward steps, then all backward steps, so every stage
holds the activations of all :math:`m` micro-batches at the peak. The one-forward-one-backward
(1F1B) schedule of PipeDream :footcite:`narayanan2019pipedream` starts the backward step of a
micro-batch as soon as the last stage has finished its forward step, and then alternates: after a
warm-up of :math:`p - j` forward steps, stage :math:`j` does one backward for each new forward.
The bubble is the same, but stage :math:`j` never holds more than :math:`p - j + 1` micro-batches'
activations, independent of :math:`m`. ``schedule`` simulates both on a clock where forward and
backward steps take one tick, and the tests measure from the table the bubble fraction and the
activations each stage holds.

.. plot::

   from cookbook.parallelism.pipeline_parallel import schedule, bubble_fraction
   fig, axes = plt.subplots(2, 1, figsize=(7, 3.2), sharex=True)
   for ax, kind in zip(axes, ("gpipe", "1f1b")):
       table = schedule(4, 6, kind=kind)
       ax.imshow(np.sign(table.T), cmap="coolwarm_r", vmin=-1.5, vmax=1.5, aspect="auto")
       for (t, j), v in np.ndenumerate(table):
           if v:
               ax.text(t, j, abs(v), ha="center", va="center", fontsize=7)
       ax.set_yticks(range(4), [f"stage {j + 1}" for j in range(4)], fontsize=7)
       ax.set_title(f"{kind}: bubble {bubble_fraction(table):.3f} (blue forward, red backward)", fontsize=8)
   axes[1].set_xlabel("tick")
   plt.tight_layout()

**On devices.** ``apply`` runs the forward pass with :func:`jax.shard_map`: each device holds its
stage's layers, and a loop of :math:`m + p - 1` ticks runs the stage and passes its output to the
next device with one ``jax.lax.ppermute``; the last stage's outputs are summed onto every device
with one ``psum`` (the others contribute zeros). Differentiating it gives the GPipe backward pass:
the same loop in reverse, sending gradients to the previous stage. The tests read exactly one
collective permute, in a loop of :math:`m + p - 1` trips, and one all-reduce from the compiled
forward program, and check outputs and gradients against the sequential network.

Inductive bias
--------------

None: the pipelined network computes the function and the gradients of the sequential one (the
tests compare them). The assumption is about the model's shape: a chain of stages of similar
cost (the slowest stage sets the tick), with small activations between them, and a batch large
enough to split into many more micro-batches than there are stages.

Example
-------

Eight layers on four stages (two layers each), a batch of 12 rows in 3 micro-batches:

>>> import jax, jax.numpy as jnp
>>> from cookbook.parallelism.pipeline_parallel import apply, schedule, bubble_fraction
>>> from cookbook.parallelism.rematerialization import init, layer
>>> mesh = jax.make_mesh((4,), ("stage",), devices=jax.devices()[:4])
>>> k_p, k_x = jax.random.split(jax.random.key(0))
>>> params = init(k_p, depth=8, width=5)
>>> x = jax.random.normal(k_x, (12, 5))
>>> y = apply(params, x, mesh, axis="stage", num_microbatches=3)
>>> sequential, _ = jax.lax.scan(layer, x, (params["W"], params["b"]))
>>> y.shape, bool(jnp.allclose(y, sequential, atol=1e-6))
((12, 5), True)
>>> table = schedule(4, 3, kind="1f1b")  # ticks x stages: +i forward, -i backward of micro-batch i
>>> table.shape, bubble_fraction(table), (4 - 1) / (3 + 4 - 1)
((12, 4), 0.5, 0.5)

Implementation notes
--------------------

**Interleaved stages.** Megatron-LM's interleaved 1F1B gives each device several non-adjacent
stages, which divides the bubble by their number at the cost of more sends; zero-bubble schedules
split the backward step into its input and weight gradients to fill the remaining holes.

**What the device program does not show.** Simulated devices share one processor, so the overlap
that the schedule promises is not visible in time; the schedule table is the measurement. The
device program runs GPipe (forward loop, then its transpose); 1F1B on devices needs the forward
and backward steps of different micro-batches in one loop, written by hand.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from cookbook import _checks
from cookbook.parallelism.data_parallel import axis_size, divisible
from cookbook.parallelism.rematerialization import layer

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"apply": ("mesh", "axis", "num_microbatches")}

#: The schedules that :func:`schedule` simulates.
KINDS = ("gpipe", "1f1b")


def _stage_order(stage, p, m, kind):
    """The steps of one stage in the order it runs them: +i forward, -i backward of micro-batch i."""
    if kind == "gpipe":
        return [i for i in range(1, m + 1)] + [-i for i in range(1, m + 1)]
    warmup = min(p - stage - 1, m)  # stage is 0-based here
    order = list(range(1, warmup + 1))
    for i in range(1, m - warmup + 1):
        order += [warmup + i, -i]
    return order + [-i for i in range(m - warmup + 1, m + 1)]


def schedule(num_stages, num_microbatches, *, kind="gpipe"):
    """Simulate a pipeline schedule where every step takes one tick. Returns a table (ticks, p) of
    ints: ``+i`` where a stage runs the forward step of micro-batch ``i`` (1-based), ``-i`` its
    backward step, 0 where it is idle. A step runs as soon as its stage is free and its input is
    ready: the forward of stage j after that of stage j - 1, the backward after that of stage j + 1
    (for the last stage, after its own forward)."""
    p, m = _checks.size(num_stages, "num_stages"), _checks.size(num_microbatches, "num_microbatches")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    orders = [_stage_order(stage, p, m, kind) for stage in range(p)]
    done = {}  # (stage, step) -> tick at which it ran
    rows, tick = [], 0
    while any(orders):
        row = []
        for stage, order in enumerate(orders):
            step = order[0] if order else 0
            if step > 0:
                ready = stage == 0 or done.get((stage - 1, step), tick) < tick
            elif step < 0:
                before = (stage + 1, step) if stage < p - 1 else (stage, -step)
                ready = done.get(before, tick) < tick
            else:
                ready = False
            row.append(step if ready else 0)
        for stage, step in enumerate(row):
            if step:
                done[(stage, step)] = tick
                orders[stage].pop(0)
        rows.append(row)
        tick += 1
    return np.array(rows, dtype=np.int32)


def _check_table(table):
    table = np.asarray(table)
    if table.ndim != 2 or not np.issubdtype(table.dtype, np.integer):
        raise ValueError(f"table must be a (ticks, stages) integer table from schedule, got {table.dtype} {table.shape}")
    return table


def bubble_fraction(table):
    """The share of (tick, stage) slots of a ``schedule`` table in which a stage is idle."""
    table = _check_table(table)
    return float(np.mean(table == 0))


def activations_held(table):
    """For each stage, the most micro-batches whose activations it holds at once: forward steps run
    and not yet matched by their backward step. Shape (p,)."""
    table = _check_table(table)
    held = np.cumsum(table > 0, axis=0) - np.cumsum(table < 0, axis=0)  # (ticks, p)
    return held.max(axis=0)


def apply(params, x, mesh, *, axis="stage", num_microbatches):
    """The tanh stack of ``rematerialization.init`` (weights (L, D, D)) on inputs x (B, D), its L
    layers cut into one stage of L/p consecutive layers per device along ``axis`` of ``mesh`` and the
    batch into ``num_microbatches`` micro-batches, run as a GPipe forward pass. Returns (B, D),
    replicated on every device."""
    if not isinstance(axis, str):
        raise TypeError(f"axis must be the name of one mesh axis (a str), got {axis!r}")
    p = axis_size(mesh, axis)
    if not isinstance(params, dict) or set(params) != {"W", "b"}:
        raise TypeError(f"params must be the dict {{'W', 'b'}} of rematerialization.init, got {type(params).__name__}")
    W = _checks.float_array(params["W"], "params['W']", ndim=3, what=" (L, D, D)")
    L, D, _ = W.shape
    _checks.same_shape(W, "params['W']", (L, D, D), expected_from="(L, D, D)")
    b = _checks.same_shape(_checks.float_array(params["b"], "params['b']"), "params['b']", (L, D),
                           expected_from="(L, D), with L and D from params['W']")
    x = _checks.float_array(x, "x", ndim=2, what=f" (B, D) = (B, {D})")
    _checks.same_shape(x, "x", (x.shape[0], D), expected_from="(B, D), with D from params['W']")
    m = _checks.size(num_microbatches, "num_microbatches")
    divisible(L, p, "params['W']", f"depth L (axis 0; mesh axis {axis!r})")
    if x.shape[0] % m:
        raise ValueError(f"x must have a batch size divisible by num_microbatches = {m}, got {x.shape[0]}")
    return _apply({"W": W, "b": b}, x, mesh, axis, m)


@functools.partial(jax.jit, static_argnames=("mesh", "axis", "num_microbatches"))
def _apply(params, x, mesh, axis, num_microbatches):
    p, m = mesh.shape[axis], num_microbatches
    B, D = x.shape
    microbatches = x.astype(jnp.float32).reshape(m, B // m, D)
    forward = [(j, j + 1) for j in range(p - 1)]  # stage j sends to stage j + 1; stage 0 gets zeros

    def on_device(W, b, microbatches):  # (L/p, D, D), (L/p, D): this stage's layers
        stage = jax.lax.axis_index(axis)

        def run_stage(h):
            return jax.lax.scan(layer, h, (W, b))[0]

        def tick_step(carry, tick):
            received, outputs = carry
            first = microbatches[jnp.minimum(tick, m - 1)]  # stage 0 reads micro-batch `tick`
            h = run_stage(jnp.where(stage == 0, first, received))  # (B/m, D)
            done = tick - (p - 1)  # the micro-batch that leaves the last stage now
            keep = (stage == p - 1) & (done >= 0)
            outputs = outputs.at[jnp.maximum(done, 0)].add(jnp.where(keep, h, 0.0))
            return (jax.lax.ppermute(h, axis, forward), outputs), None

        start = jnp.zeros((B // m, D)), jnp.zeros((m, B // m, D))
        start = jax.lax.pcast(start, axis, to="varying")
        (_, outputs), _ = jax.lax.scan(tick_step, start, jnp.arange(m + p - 1))
        return jax.lax.psum(outputs, axis)  # only the last stage's are not zero

    put = lambda a, spec: jax.device_put(a, NamedSharding(mesh, spec))
    outputs = jax.shard_map(on_device, mesh=mesh, in_specs=(P(axis), P(axis), P()), out_specs=P())(
        put(params["W"], P(axis)), put(params["b"], P(axis)), put(microbatches, P()))
    return outputs.reshape(B, D).astype(x.dtype)
