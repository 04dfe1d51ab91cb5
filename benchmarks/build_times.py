"""Wall time of building the book and of running the suite, written into ``benchmarks/results.json``.

    .venv/bin/python -m benchmarks.build_times [--with-test]

The book is built in a fresh clone of the repository's committed state (sharing this checkout's
installed ``.venv`` and ``node_modules``, so that installing is not counted): once cold, from
nothing, and once more after touching one recipe, which is what an author waits for while writing.
``--with-test`` also times ``make test`` in a second fresh clone: the whole suite as CI runs it, from
an empty build folder and an empty compilation cache, less the installation; then, in the same clone
with the cache kept, ``make test`` again after touching one recipe, and ``make check`` on one
recipe (a contributor's loop). Each run with ``--with-test`` adds a point to ``history``: the cold
``make test`` time against the number of recipes, which the performance page draws.

The machine is a shared virtual machine whose speed changes from hour to hour, so each point also
carries a compile probe, taken just before and just after the cold ``make test``: the milliseconds
that a fresh process takes to compile each of 100 tiny programs with the suite's flags (compiling is
most of what a cold run spends). ``--probe`` prints the probe alone, to check the machine before
measuring.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.json"


def _timed(cmd, cwd):
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout[-5000:])
        raise SystemExit(f"{' '.join(cmd)} failed with exit status {proc.returncode}")
    return seconds


# Compile n tiny programs, each new to the process, and print the milliseconds per program.
_PROBE = """
import sys, time
import jax, jax.numpy as jnp
n = int(sys.argv[1])
jnp.ones(3).block_until_ready()  # the backend starts outside the timing
start = time.perf_counter()
for i in range(n):
    jax.jit(lambda x, i=i: x * 2 + i)(jnp.ones(5)).block_until_ready()
print((time.perf_counter() - start) * 1e3 / n)
"""


def suite_xla_flags(makefile=ROOT / "Makefile"):
    """The XLA flags that the Makefile gives the build and the tests (``export XLA_FLAGS ?= ...``)."""
    m = re.search(r"^export XLA_FLAGS \?= (.*)$", makefile.read_text(), re.MULTILINE)
    if m is None:
        raise ValueError(f"{makefile} sets no XLA_FLAGS with 'export XLA_FLAGS ?= ...'")
    return m.group(1).strip()


def compile_probe_ms(programs=100, python=sys.executable):
    """Milliseconds per program to compile ``programs`` tiny programs in a fresh process, with the
    suite's flags and no compilation cache: how fast this machine compiles at the moment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env |= {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": suite_xla_flags()}
    out = subprocess.run([str(python), "-c", _PROBE, str(programs)], env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def _recipe_count(clone):
    """The recipes of a checkout: ``cookbook/<chapter>/<concept>.py``, neither name private (the
    book's machinery, ``cookbook/_book/``, is a package too)."""
    return len([p for p in (clone / "cookbook").glob("*/*.py")
                if not p.name.startswith("_") and not p.parent.name.startswith("_")])


def _clone(path):
    """A fresh clone of the committed state that shares this checkout's installed environments."""
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(path)], check=True)
    for shared in (".venv", "node_modules"):
        os.symlink(ROOT / shared, path / shared)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with-test", action="store_true", help="also time `make test`")
    parser.add_argument("--probe", action="store_true", help="only print the compile probe (ms per tiny program)")
    args = parser.parse_args(argv)
    if args.probe:
        print(f"compile probe: {compile_probe_ms():.1f} ms per tiny program")
        return 0

    build = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    env_make = ["make", "--no-print-directory", "-o", ".venv/.installed", "-o", "node_modules/.installed"]
    with tempfile.TemporaryDirectory() as tmp:
        clone = _clone(Path(tmp) / "book")
        build["html_cold_s"] = _timed(env_make + ["html"], clone)
        print(f"make html, cold: {build['html_cold_s']:.1f} s", flush=True)
        recipe = clone / "cookbook" / "foundations" / "linear_regression.py"
        recipe.touch()
        build["html_incremental_s"] = _timed(env_make + ["html"], clone)
        print(f"make html, one recipe touched: {build['html_incremental_s']:.1f} s", flush=True)
    if args.with_test:
        with tempfile.TemporaryDirectory() as tmp:  # a second fresh clone: nothing built, nothing cached
            clone = _clone(Path(tmp) / "book")
            cache = ["JAX_COMPILATION_CACHE_DIR=" + str(Path(tmp) / "jax-cache")]
            build["recipes"] = _recipe_count(clone)
            probe = [compile_probe_ms()]
            build["make_test_s"] = _timed(env_make + ["test"] + cache, clone)
            probe.append(compile_probe_ms())
            build["compile_probe_ms"] = [round(ms, 1) for ms in probe]
            print(f"make test, cold ({build['recipes']} recipes): {build['make_test_s']:.1f} s "
                  f"(compile probe {probe[0]:.0f} ms before, {probe[1]:.0f} ms after)", flush=True)
            (clone / "cookbook" / "attention" / "rope.py").touch()
            build["make_test_one_changed_s"] = _timed(env_make + ["test"] + cache, clone)
            print(f"make test, one recipe touched, cache warm: {build['make_test_one_changed_s']:.1f} s", flush=True)
            (clone / "cookbook" / "attention" / "rope.py").touch()
            build["make_check_s"] = _timed(env_make + ["check", "RECIPE=attention/rope"] + cache, clone)
            print(f"make check RECIPE=attention/rope, touched, cache warm: {build['make_check_s']:.1f} s", flush=True)

    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    previous = results.get("build", {})
    if not args.with_test:
        for key in ("recipes", "make_test_s", "compile_probe_ms", "make_test_one_changed_s", "make_check_s",
                    "make_test_date"):
            if key in previous:
                build[key] = previous[key]
        build.setdefault("make_test_date", previous.get("date"))
    else:
        build["make_test_date"] = build["date"]
        results.setdefault("history", []).append(
            {"date": build["date"][:10], "recipes": build["recipes"], "make_test_s": round(build["make_test_s"], 1),
             "compile_probe_ms": build["compile_probe_ms"]})
    results["build"] = build
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
