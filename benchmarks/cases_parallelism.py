"""Growth studies of the parallelism chapter: the cost claims of its pages, measured.

Gradient accumulation (:mod:`cookbook.parallelism.gradient_accumulation`) computes the gradient of
a batch of ``B`` examples in ``M`` micro-batches, one after another: the same arithmetic, so its
time should stay about flat in ``M``, while the activations in flight, and so the temporary bytes
of the compiled program, fall about as ``1/M``.

The chapter's other cost claims are about memory per device against the number of devices (FSDP's
parameters and optimiser state fall as ``1/N``). They are read from each compiled program's
*argument* bytes on 1, 2, 4 and 8 simulated devices, asserted exactly in the chapter's tests and
drawn on the FSDP page; they are not growth studies here, since the harness records time and
temporary bytes, and time on devices simulated by one CPU says nothing about real devices.
"""

from __future__ import annotations

import jax

from benchmarks.cases import GrowthStudy


def growth_studies() -> list[GrowthStudy]:
    from cookbook.parallelism import gradient_accumulation

    B, D, F, C = 1024, 64, 512, 16
    micro_batches = [1, 2, 4, 8, 16]

    def inputs(M):
        k_p, k_x, k_y = jax.random.split(jax.random.key(M), 3)
        params = gradient_accumulation.init(k_p, (D, F, C))
        # The micro-batches as a leading axis, so that the variant reads M from a static shape.
        return params, jax.random.normal(k_x, (M, B // M, D)), jax.random.normal(k_y, (M, B // M, C))

    def accumulated(params, X_m, Y_m):
        M = X_m.shape[0]
        return gradient_accumulation.accumulated_grad(params, X_m.reshape(B, D), Y_m.reshape(B, C), micro_batches=M)

    return [
        GrowthStudy(
            f"gradient of a batch of {B} (MLP {D}-{F}-{C}) in the number of micro-batches", "M", micro_batches, inputs,
            {"micro-batches in a scan (gradient_accumulation)": accumulated},
        ),
    ]
