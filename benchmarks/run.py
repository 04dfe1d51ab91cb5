"""Run the benchmark suite and write ``benchmarks/results.json``.

    .venv/bin/python -m benchmarks.run [--quick] [--only NAME] [--out PATH]

Three parts: every recipe that has a twin in a trusted library, timed side by side at several sizes
(:mod:`benchmarks.cases`); the growth of time and memory with size for the recipes whose page makes
a claim about it; and the machine's measured matrix-product peak with the model-FLOPs utilisation of
the book's training steps. The build and test timings come from ``benchmarks/build_times.py``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from benchmarks import cases, harness  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _memory_exponent(sizes, temps):
    """The fitted exponent over the sizes where XLA allocated temporary memory at all.

    XLA may fuse a whole computation into loops that need no temporary buffer (it reports 0);
    with fewer than three sizes left there is nothing to fit.
    """
    kept = [(n, t) for n, t in zip(sizes, temps) if t > 0]
    if len(kept) < 3:
        return None
    return harness.fit_exponent(*zip(*kept))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smallest sizes and few repeats (a smoke run)")
    parser.add_argument("--only", default=None, help="run only the cases whose name contains this")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results.json"))
    args = parser.parse_args(argv)

    started = time.perf_counter()
    out_path = Path(args.out)
    previous = json.loads(out_path.read_text()) if out_path.exists() else {}
    repeats = 5 if args.quick else 25

    print(f"machine: {harness.machine()}", flush=True)
    peak = harness.peak_matmul_flops(n=1024 if args.quick else 2048)
    print(f"peak float32 matmul: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s", flush=True)

    comparisons = []
    for case in cases.comparisons():
        if args.only and args.only not in case.name:
            continue
        sizes = case.sizes[:1] if args.quick else case.sizes
        for size in sizes:
            inputs = case.make(size)
            result = harness.compare(case.recipe, case.twin, inputs, repeats=repeats)
            row = {"name": case.name, "recipe_name": case.recipe_name, "twin_name": case.twin_name,
                   "size": case.describe(size), **result}
            comparisons.append(row)
            print(f"{case.name:<34} {row['size']:<22} recipe {result['recipe']['median_s'] * 1e6:10.1f} us"
                  f"   twin {result['twin']['median_s'] * 1e6:10.1f} us   ratio {result['ratio']:.2f} "
                  f"[{result['ratio_iqr'][0]:.2f}, {result['ratio_iqr'][1]:.2f}]", flush=True)

    growth = []
    for study in cases.growth_studies():
        if args.only and args.only not in study.name:
            continue
        sizes = study.sizes[:3] if args.quick else study.sizes
        for variant, fn in study.variants.items():
            times, temps = [], []
            for size in sizes:
                inputs = study.make(size)
                times.append(harness.time_one(fn, inputs, repeats=5 if args.quick else 7)["median_s"])
                temps.append(harness.compiled_stats(fn, inputs)["temp_bytes"])
            row = {"study": study.name, "variant": variant, "sizes": list(sizes), "size_name": study.size_name,
                   "times_s": times, "temp_bytes": temps,
                   "time_exponent": harness.fit_exponent(sizes, times),
                   "memory_exponent": _memory_exponent(sizes, temps)}
            growth.append(row)
            mem = "n/a" if row["memory_exponent"] is None else f"{row['memory_exponent']:.2f}"
            print(f"{study.name:<28} {variant:<22} time ~ {study.size_name}^{row['time_exponent']:.2f}"
                  f"   temp memory ~ {study.size_name}^{mem}", flush=True)

    utilisation = []
    for step in cases.training_steps():
        if args.only and args.only not in step.name:
            continue
        fn, inputs = step.make()
        flops = harness.compiled_stats(fn, inputs)["flops"]
        seconds = harness.time_one(fn, inputs, repeats=5 if args.quick else 9)["median_s"]
        row = {"name": step.name, "description": step.description, "flops_per_step": flops,
               "step_s": seconds, "flops_per_s": flops / seconds,
               "mfu": flops / seconds / peak["flops_per_s"]}
        utilisation.append(row)
        print(f"{step.name:<28} {flops / 1e6:10.2f} MFLOP/step  {seconds * 1e3:8.2f} ms/step"
              f"   MFU {row['mfu'] * 100:.1f}%", flush=True)

    ratios = [row["ratio"] for row in comparisons]
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": harness.machine(),
        "quick": args.quick,
        "peak_matmul": peak,
        "comparisons": comparisons,
        "summary": {
            "median_ratio": float(sorted(ratios)[len(ratios) // 2]) if ratios else None,
            "geometric_mean_ratio": harness.geometric_mean(ratios) if ratios else None,
            "worst": max(comparisons, key=lambda r: r["ratio"], default=None),
        },
        "growth": growth,
        "utilisation": utilisation,
        "build": previous.get("build", {}),
        "bench_seconds": time.perf_counter() - started,
    }
    for kept in ("history", "recall"):  # written by build_times.py and recall.py, not measured here
        if kept in previous:
            results[kept] = previous[kept]
    out_path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out_path} in {results['bench_seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
