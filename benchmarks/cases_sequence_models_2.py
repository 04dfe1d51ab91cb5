"""Growth studies of the sequence-models chapter (second part): Hyena's long convolution by the FFT
against the direct convolution, and the delta rule's recurrent form against its chunked form, both
in the sequence length ``T``.

The FFT convolution should grow as ``T log T`` and the direct one as ``T^2``. The delta rule's two
forms both grow linearly: the recurrence in ``T`` sequential steps of small matrix-vector work, the
chunked form in ``T / C`` sequential steps of matrix products (``C = 64``) after a triangular solve
per chunk, by forward substitution. The chunked form does more arithmetic and buys parallelism
with it, which an accelerator uses more than a CPU does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks.cases import GrowthStudy


def _normal(shape, seed):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def growth_studies() -> list[GrowthStudy]:
    from cookbook.sequence_models import delta_rule, hyena

    D = 64
    sizes = [256, 512, 1024, 2048, 4096]

    def conv_inputs(T):
        decay = jnp.exp(-jnp.arange(T, dtype=jnp.float32)[:, None] / (0.3 * T))  # a long, decaying filter
        return _normal((T, D), 0), decay * _normal((T, D), 1)

    def delta_inputs(T):
        q, k, v = _normal((T, D), 2), _normal((T, D), 3), _normal((T, D), 4)
        k = k / jnp.linalg.norm(k, axis=1, keepdims=True)  # unit keys, as DeltaNet normalises them
        beta = jax.nn.sigmoid(_normal((T,), 5))
        alpha = 0.9 + 0.1 * jax.nn.sigmoid(_normal((T,), 6))
        return q, k, v, beta, alpha

    return [
        GrowthStudy(
            "hyena long convolution in sequence length", "T", sizes, conv_inputs,
            {
                "FFT (padded to 2T)": hyena.fft_conv,
                "direct": hyena.direct_conv,
            },
        ),
        GrowthStudy(
            "gated delta rule in sequence length", "T", sizes, delta_inputs,
            {
                "recurrent": delta_rule.delta_rule_recurrent,
                "chunkwise (C = 64)": lambda q, k, v, b, a: delta_rule.delta_rule_chunkwise(q, k, v, b, a, chunk_size=64),
            },
        ),
    ]
