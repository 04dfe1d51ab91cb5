"""Scaling across devices
=======================

A model that trains in a week on one accelerator trains in a day on seven, if the work can be
shared, and a model too large for one accelerator's memory trains only if its parameters are. This
chapter shows how one training step is cut across many devices, with JAX's own tools: a *mesh*
names the devices along one or more axes (``jax.make_mesh((2, 4), ("data", "model"))``), a
``PartitionSpec`` says which axis of an array is split over which axis of the mesh, and
:func:`jax.shard_map` runs one function on every device with that device's shard, talking to the
others through *collectives*: an all-reduce (every device ends with the sum of everyone's
array), an all-gather (everyone ends with everyone's shards side by side), a reduce-scatter (the
sum, but each device keeps only its slice of it) and an all-to-all (every device sends a different
piece to each other device).

Every form of parallelism cuts along one axis of the work, and every page tests that the cut
changes nothing: the outputs, the gradients and a few training steps equal the single-device
computation to a stated tolerance. What the cut buys and what it costs is read from the compiled
program itself, not estimated: the bytes that each device holds (XLA's ``memory_analysis``) and the
number and kind of collectives in its HLO, for 1, 2, 4 and 8 devices.

Read it in order. :doc:`data_parallel` cuts the batch: every device holds the whole model and one
all-reduce of the gradients per step keeps the copies equal. Its measuring tools, ``collectives``
and ``memory_per_device``, serve the whole chapter. :doc:`fsdp` keeps the batch cut and also cuts
what data parallelism repeats on every device: the optimiser state, then the gradients, then the
parameters themselves (ZeRO stages 1 to 3, fully sharded data parallelism), so that the memory
per device falls as :math:`1/N` at the price of gathering the parameters when they are used.
:doc:`tensor_parallel` cuts inside a layer instead: the columns of one weight matrix and the rows
of the next, or the heads of attention, with one all-reduce per layer; on a 2 × 4 mesh it combines
with data parallelism, and an MLP trained that way, or fully sharded over all eight devices,
reproduces the single-device loss curve. The remaining pages cut the depth of the network into
stages that pass micro-batches down a line of devices (:doc:`pipeline_parallel`), a long sequence
into blocks that go round a ring of devices (:doc:`sequence_parallel`) and a mixture of experts
into its experts, with all-to-alls that send each token to its expert's device
(:doc:`expert_parallel`). The last pages trade memory for time without any other device:
:doc:`rematerialization` recomputes activations instead of storing them, and
:doc:`gradient_accumulation` adds the gradients of micro-batches to reach a batch that does not
fit at once, exactly, except where the examples of a batch meet, in batch normalisation.

The forms compete on what each device holds and what it must send. As the pages' tests read them
from the compiled programs:

.. list-table::
   :header-rows: 1

   * - Page
     - What is cut
     - Each device holds
     - Collectives in the compiled program
   * - :doc:`data_parallel`
     - the batch
     - all parameters, gradients and optimiser state
     - one all-reduce per step
   * - :doc:`fsdp` (stage 3)
     - the batch, and parameters, gradients and optimiser state
     - :math:`1/N` of them, plus the gathered parameters while in use
     - one all-gather, one reduce-scatter, one all-reduce of the loss per step
   * - :doc:`tensor_parallel`
     - the weight matrices of each layer, or its heads
     - :math:`1/N` of the weights
     - one all-reduce per layer forward, one backward
   * - :doc:`pipeline_parallel`
     - the layers, into stages
     - :math:`1/N` of the layers
     - one collective permute per tick, in a loop of :math:`m + N - 1` ticks (:math:`m`
       micro-batches), and one all-reduce of the outputs
   * - :doc:`sequence_parallel`
     - the sequence
     - one block of queries, keys and values
     - two collective permutes per step of a ring of :math:`N - 1` steps
   * - :doc:`expert_parallel`
     - the experts
     - :math:`1/N` of the experts
     - two all-to-alls forward
   * - :doc:`gradient_accumulation`
     - the batch, in time
     - the activations of one micro-batch
     - none

**Eight devices on one CPU.** The book's build and its tests present the CPU as eight JAX devices
(``cookbook._book.simulate_devices`` sets ``jax_num_cpu_devices`` before anything computes), so
every page runs, and is tested, on a laptop; a program that uses one device runs as it would on a
one-device machine, so the rest of the book is unaffected. A reader who runs these pages elsewhere
calls ``jax.config.update("jax_num_cpu_devices", 8)`` right after ``import jax``. Simulated devices
share one processor, so they show what is computed, sent and stored, not how fast: timing is the
one thing this chapter cannot measure.
"""

#: The recipes in reading order.
RECIPES = (
    "data_parallel",
    "fsdp",
    "tensor_parallel",
    "pipeline_parallel",
    "sequence_parallel",
    "expert_parallel",
    "rematerialization",
    "gradient_accumulation",
)
