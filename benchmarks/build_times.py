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
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
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


def _recipe_count(clone):
    return len([p for p in (clone / "cookbook").glob("*/*.py") if not p.name.startswith("_")])


def _clone(path):
    """A fresh clone of the committed state that shares this checkout's installed environments."""
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(path)], check=True)
    for shared in (".venv", "node_modules"):
        os.symlink(ROOT / shared, path / shared)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with-test", action="store_true", help="also time `make test`")
    args = parser.parse_args(argv)

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
            build["make_test_s"] = _timed(env_make + ["test"] + cache, clone)
            print(f"make test, cold ({build['recipes']} recipes): {build['make_test_s']:.1f} s", flush=True)
            (clone / "cookbook" / "attention" / "rope.py").touch()
            build["make_test_one_changed_s"] = _timed(env_make + ["test"] + cache, clone)
            print(f"make test, one recipe touched, cache warm: {build['make_test_one_changed_s']:.1f} s", flush=True)
            (clone / "cookbook" / "attention" / "rope.py").touch()
            build["make_check_s"] = _timed(env_make + ["check", "RECIPE=attention/rope"] + cache, clone)
            print(f"make check RECIPE=attention/rope, touched, cache warm: {build['make_check_s']:.1f} s", flush=True)

    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    previous = results.get("build", {})
    if not args.with_test:
        for key in ("recipes", "make_test_s", "make_test_one_changed_s", "make_check_s", "make_test_date"):
            if key in previous:
                build[key] = previous[key]
        build.setdefault("make_test_date", previous.get("date"))
    else:
        build["make_test_date"] = build["date"]
        results.setdefault("history", []).append(
            {"date": build["date"][:10], "recipes": build["recipes"], "make_test_s": round(build["make_test_s"], 1)})
    results["build"] = build
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
