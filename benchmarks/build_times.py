"""Wall time of building the book and of running the suite, written into ``benchmarks/results.json``.

    .venv/bin/python -m benchmarks.build_times [--with-test]

The book is built in a fresh clone of the repository's committed state (sharing this checkout's
installed ``.venv`` and ``node_modules``, so that installing is not counted): once cold, from
nothing, and once more after touching one recipe, which is what an author waits for while writing.
``--with-test`` also times ``make test`` in a second fresh clone: the whole suite as CI runs it, from
an empty build folder and an empty compilation cache, less the installation.
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
            build["make_test_s"] = _timed(env_make + ["test"], _clone(Path(tmp) / "book"))
            print(f"make test, cold: {build['make_test_s']:.1f} s", flush=True)

    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    previous = results.get("build", {})
    if not args.with_test and "make_test_s" in previous:
        build["make_test_s"] = previous["make_test_s"]
        build["make_test_date"] = previous.get("make_test_date", previous.get("date"))
    elif args.with_test:
        build["make_test_date"] = build["date"]
    results["build"] = build
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
