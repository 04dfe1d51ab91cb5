"""Timing and memory measurements for the benchmark suite.

Every measurement jits the function, compiles it on the given inputs, and then times it with the
result blocked on, so that neither compilation nor JAX's asynchronous dispatch is counted. Two
functions that are compared are timed interleaved (recipe, twin, twin, recipe, ...), so that a
change of machine load during the run falls on both alike.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def _run(fn, args, number):
    start = time.perf_counter()
    for _ in range(number):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / number


def _calibrate(fn, args, target_s=0.02):
    """How many calls make one timing sample last about ``target_s`` seconds."""
    once = max(_run(fn, args, 1), 1e-7)
    return max(1, min(10_000, int(target_s / once)))


def _summary(samples):
    q1, median, q3 = np.percentile(samples, [25, 50, 75])
    return {"median_s": float(median), "iqr_s": float(q3 - q1), "samples": len(samples)}


def compare(recipe, twin, args, *, repeats=25, static_argnums=()):
    """Median time of the jitted ``recipe`` and ``twin`` on ``args``, measured interleaved.

    The ratio is the median of the ratios of the two samples of each repeat, taken back to back, so
    that a slow moment of the machine falls on both sides of one ratio; ``ratio_iqr`` is the
    inter-quartile range of those per-repeat ratios.
    """
    fns = [jax.jit(recipe, static_argnums=static_argnums), jax.jit(twin, static_argnums=static_argnums)]
    for fn in fns:  # compile, and warm the caches
        jax.block_until_ready(fn(*args))
        jax.block_until_ready(fn(*args))
    number = min(_calibrate(fn, args) for fn in fns)
    samples = ([], [])
    for r in range(repeats):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for i in order:
            samples[i].append(_run(fns[i], args, number))
    ratios = np.asarray(samples[0]) / np.asarray(samples[1])
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    return {"recipe": _summary(samples[0]), "twin": _summary(samples[1]),
            "ratio": float(median), "ratio_iqr": [float(q1), float(q3)]}


def time_one(fn, args, *, repeats=9):
    """Median time of the jitted ``fn`` on ``args``."""
    fn = jax.jit(fn)
    jax.block_until_ready(fn(*args))
    number = _calibrate(fn, args)
    return _summary([_run(fn, args, number) for _ in range(repeats)])


def compiled_stats(fn, args):
    """XLA's own account of a jitted function: its FLOPs and its temporary and output bytes."""
    compiled = jax.jit(fn).lower(*args).compile()
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    memory = compiled.memory_analysis()
    return {
        "flops": float(cost.get("flops", float("nan"))) if cost else float("nan"),
        "temp_bytes": int(getattr(memory, "temp_size_in_bytes", -1)) if memory is not None else -1,
        "output_bytes": int(getattr(memory, "output_size_in_bytes", -1)) if memory is not None else -1,
    }


def fit_exponent(sizes, values):
    """The exponent ``p`` of the least-squares fit ``value ~ c * size**p`` on a log-log scale."""
    x, y = np.log(np.asarray(sizes, float)), np.log(np.maximum(np.asarray(values, float), 1e-30))
    return float(np.polyfit(x, y, 1)[0])


def peak_matmul_flops(n=2048, repeats=7):
    """Measured float32 matrix-product throughput of this machine, in FLOP/s (2 n^3 per product)."""
    k_a, k_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(k_a, (n, n), jnp.float32)
    b = jax.random.normal(k_b, (n, n), jnp.float32)
    stats = time_one(lambda a, b: a @ b, (a, b), repeats=repeats)
    return {"n": n, "median_s": stats["median_s"], "flops_per_s": 2 * n**3 / stats["median_s"]}


def machine():
    """What the figures were measured on."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
    }


def geometric_mean(values):
    values = [v for v in values if v > 0 and math.isfinite(v)]
    return float(math.exp(statistics.fmean(map(math.log, values)))) if values else float("nan")
