"""What each recipe costs the suite: its tests, its page's examples and the build of its page.

    .venv/bin/python -m benchmarks.costs [--top 10]

``make test`` prints this table at its end, so that no recipe quietly takes a minute. It reads what
the last run wrote under ``_build/costs/``:

* ``pytest-tests.json``: seconds of pytest time (set-up, call and tear-down, summed over workers) per
  test, written by the plugin in ``conftest.py``. A recipe's share is its test file, the examples of
  its page (its module's docstring: the *examples* column) and of its functions, and its part of the
  book-wide checks (page check, jit check, bad input, the browser's visit to its page);
* ``read-*.tsv``: seconds that the html build spent reading each page (its figures are drawn then),
  written by the hooks in ``conf.py``, one file per process.

Pure Python with no JAX.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COSTS = ROOT / "_build" / "costs"


def recipe_of_test(nodeid: str) -> str | None:
    """The recipe (``chapter.concept``) that a pytest node id belongs to, or None."""
    m = re.search(r"\[cookbook\.(\w+)\.(\w+)[\]-]", nodeid)  # a book-wide check parametrised by recipe
    if m:
        return f"{m.group(1)}.{m.group(2)}"
    m = re.search(r"[\[-]docs/chapters/(\w+)/(\w+)\.html\]", nodeid)  # the browser's visit to a page
    if m and m.group(2) != "index":
        return f"{m.group(1)}.{m.group(2)}"
    m = re.match(r"tests/(\w+)/test_(\w+)\.py::", nodeid) or re.match(r"cookbook/(\w+)/(\w+)\.py::", nodeid)
    if m and not m.group(2).startswith("_") and (ROOT / "cookbook" / m.group(1) / f"{m.group(2)}.py").is_file():
        return f"{m.group(1)}.{m.group(2)}"
    return None


def recipe_of_page(docname: str) -> str | None:
    m = re.fullmatch(r"docs/chapters/(\w+)/(\w+)", docname)
    return f"{m.group(1)}.{m.group(2)}" if m and m.group(2) != "index" else None


def _read_tsv(pattern: str) -> dict[str, float]:
    """The latest seconds recorded for each recipe's page (an incremental build re-reads only the
    pages that changed, so older files still hold the others)."""
    latest = {}
    for path in sorted(COSTS.glob(pattern), key=lambda p: p.stat().st_mtime):
        for line in path.read_text().splitlines():
            docname, _, seconds = line.rpartition("\t")
            recipe = recipe_of_page(docname)
            if recipe:
                latest[recipe] = float(seconds)
    return latest


def is_page_example(nodeid: str) -> bool:
    """Whether a pytest node id runs a recipe page's examples (its module docstring)."""
    m = re.fullmatch(r"cookbook/(\w+)/(\w+)\.py::cookbook\.(\w+)\.(\w+)", nodeid)
    return bool(m) and m.group(1, 2) == m.group(3, 4)


def table(top: int = 10) -> list[tuple[str, float, float, float]]:
    """``(recipe, seconds of its tests, of its page's examples, of its page's build)``, costliest first."""
    path = COSTS / "pytest-tests.json"
    per_test = json.loads(path.read_text()) if path.exists() else {}
    tests_s: dict[str, float] = {}
    examples_s: dict[str, float] = {}
    for nodeid, seconds in per_test.items():
        recipe = recipe_of_test(nodeid)
        if recipe is not None:
            into = examples_s if is_page_example(nodeid) else tests_s
            into[recipe] = into.get(recipe, 0.0) + seconds
    read_s = _read_tsv("read-*.tsv")
    recipes = set(tests_s) | set(examples_s) | set(read_s)
    rows = [(r, tests_s.get(r, 0.0), examples_s.get(r, 0.0), read_s.get(r, 0.0)) for r in recipes]
    rows.sort(key=lambda row: -(row[1] + row[2] + row[3]))
    return rows[:top] if top else rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=10, help="how many recipes to show (0: all)")
    args = parser.parse_args(argv)
    rows = table(args.top)
    if not rows:
        print(f"No costs recorded under {COSTS}: run `make test` first.")
        return 0
    print(f"The {len(rows)} most expensive recipes (seconds; pytest time is summed over its workers):")
    print(f"  {'recipe':40s} {'tests':>7s} {'examples':>9s} {'page build':>11s} {'total':>7s}")
    for recipe, tests, examples, build in rows:
        print(f"  {recipe:40s} {tests:7.1f} {examples:9.1f} {build:11.1f} {tests + examples + build:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
