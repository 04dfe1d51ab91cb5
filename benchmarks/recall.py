"""Multi-query associative recall against state size: every mixer of the sequence-models chapter,
and attention, trained under one budget; written into ``benchmarks/results.json`` under ``recall``.

    .venv/bin/python -m benchmarks.recall [--quick]

Each mixer sits in the same harness (``cookbook.sequence_models.associative_recall``: a token-shift
embedding, two pre-norm residual blocks holding the mixer alone, an output head) at the widths
``WIDTHS``, is trained with the same Adam steps on fresh MQAR batches, and is scored by its token
accuracy on held-out sequences. The page of that recipe draws the result against the state each
mixer carries per layer. ``make bench`` runs it after ``benchmarks.run``.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

from benchmarks import harness  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.json"

TASK = {"n_pairs": 8, "n_keys": 32, "n_values": 32}  # 24 tokens: 8 pairs, then the 8 keys again
WIDTHS = (8, 16, 32)
BUDGET = {"steps": 400, "batch": 32, "learning_rate": 1e-2, "layers": 2, "held_out": 512}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one width, 50 steps (a smoke run; not written)")
    parser.add_argument("--only", default=None, help="run only this mixer; its rows replace the recorded ones")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)

    from cookbook.sequence_models import associative_recall as ar

    task = functools.partial(ar.mqar, **TASK)
    vocab = 1 + TASK["n_keys"] + TASK["n_values"]
    T = 3 * TASK["n_pairs"]
    widths = WIDTHS[:1] if args.quick else WIDTHS
    budget = dict(BUDGET, steps=50) if args.quick else BUDGET
    started = time.perf_counter()
    rows = []
    for mixer in ar.MIXERS:
        if args.only and mixer != args.only:
            continue
        for D in widths:
            t0 = time.perf_counter()
            _, accuracy = ar.train(jax.random.key(0), mixer, task, vocab=vocab, D=D, **budget)
            accuracy = float(accuracy)
            seconds = time.perf_counter() - t0
            rows.append({"mixer": mixer, "D": D, "state": ar.state_size(mixer, D=D, T=T),
                         "accuracy": accuracy, "seconds": seconds})
            print(f"{mixer:<12} D = {D:<3} state {rows[-1]['state']:>6}   accuracy {accuracy:.3f}   {seconds:.0f} s",
                  flush=True)
    if args.quick:
        return 0
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    if args.only and "recall" in results:  # keep the other mixers' rows, in their order
        rows = [row for row in results["recall"]["rows"] if row["mixer"] != args.only] + rows
        rows.sort(key=lambda row: (list(ar.MIXERS).index(row["mixer"]), row["D"]))
    results["recall"] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": harness.machine(),
        "task": dict(TASK, T=T, vocab=vocab),
        "budget": budget,
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote the recall study into {out} in {results['recall']['seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
