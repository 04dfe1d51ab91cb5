"""Temporary memory of memory-efficient attention, forward and backward, against the direct form.

    .venv/bin/python -m benchmarks.attention_memory

Self-attention with T = S, D = 64 and key blocks of 64, at S = 256 ... 4096. Each figure is XLA's
own account of the compiled program (``memory_analysis().temp_size_in_bytes``), so nothing runs
and the figures do not depend on the machine's load. The exponent is the least-squares slope on a
log-log scale, ``temp ~ S**p``; the memory-efficient page quotes these figures.
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks import harness  # noqa: E402
from cookbook.attention.memory_efficient import memory_efficient_attention  # noqa: E402
from cookbook.attention.scaled_dot_product import scaled_dot_product_attention  # noqa: E402

SIZES = (256, 512, 1024, 2048, 4096)
D, BLOCK = 64, 64


def variants():
    efficient = lambda q, k, v: memory_efficient_attention(q, k, v, causal=True, block_size=BLOCK)  # noqa: E731
    causal = lambda q, k, v: scaled_dot_product_attention(  # noqa: E731
        q, k, v, jnp.tril(jnp.ones((q.shape[0], k.shape[0]), bool)))
    gradient = lambda f: jax.grad(lambda q, k, v: jnp.sum(f(q, k, v) ** 2), argnums=(0, 1, 2))  # noqa: E731
    return {"direct, forward": causal, "memory-efficient, forward": efficient,
            "direct, gradient": gradient(causal), "memory-efficient, gradient": gradient(efficient)}


def temp_bytes(fn, S):
    x = jax.ShapeDtypeStruct((S, D), jnp.float32)
    return jax.jit(fn).lower(x, x, x).compile().memory_analysis().temp_size_in_bytes


def main():
    print(f"temporary memory in MB (10^6 bytes), T = S, D = {D}, block {BLOCK}, causal, float32")
    print(f"{'':28}" + "".join(f"{'S=' + str(S):>10}" for S in SIZES) + "   exponent   per doubling")
    for name, fn in variants().items():
        temps = [temp_bytes(fn, S) for S in SIZES]
        ratios = [b / a for a, b in zip(temps, temps[1:])]
        print(f"{name:<28}" + "".join(f"{t / 1e6:10.2f}" for t in temps)
              + f"   S^{harness.fit_exponent(SIZES, temps):.2f}   " + " ".join(f"{r:.2f}" for r in ratios))


if __name__ == "__main__":
    main()
