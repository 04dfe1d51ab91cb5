"""Which tests have passed with exactly the inputs they have now, so that ``make test`` runs only
the others.

A test's inputs are the files it can read code from, found by reading import statements (no test is
run to find them): its own file, every module of the repository that it imports, and theirs in turn;
for a book-wide check of one recipe (a test parametrised by the recipe's module name), that recipe's
module and what it imports; for the browser's visit to a page, the built page and the book's static
files. To those add the files that every test reads (the pytest set-up, the
book's private modules, ``pyproject.toml`` and the lock file of exact versions), the Python version
and the ``JAX_*`` and ``XLA_*`` variables of the environment. The key of a test is a hash of all of
it; ``make test`` skips a test whose key is the one it had when it last passed, and says how many it
skipped. A test that failed, or that never ran, has no key stored, so it runs.

Tests of the book as a whole (the top-level test files: the benchmarks, the memo, the set-up) and the
tests of the book's machinery (``tests/_book/``: the page check of every recipe, the notebooks, the
map) read too much to list, or read every recipe without importing it, and always run. So does
everything in a fresh clone: the record lives in ``_build/`` (``make clean`` removes it), and
``make test FRESH=1`` ignores it.

A recipe's examples are pytest items too (its module's docstrings), keyed by its module and what
that imports.

``COOKBOOK_PASSED`` names the record; without it nothing is skipped (a plain ``pytest`` runs all).
Pure Python with no JAX.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIABLE = "COOKBOOK_PASSED"
#: Files that every test reads: its set-up (conftest.py loads tests/replay.py to record what a recipe's
#: examples call) and the book's machinery, the dependencies' versions.
EVERY_TEST_READS = ("conftest.py", "tests/conftest.py", "tests/replay.py", "pyproject.toml", "requirements/lock.txt",
                    "cookbook/__init__.py", "cookbook/_checks.py", "cookbook/_memo.py", "cookbook/_passed.py",
                    "benchmarks/results.json",
                    *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "cookbook" / "_book").glob("*.py")))
#: Top-level test files whose tests are keyed per recipe or per page; the others always run.
PER_RECIPE = ("tests/test_replay.py", "tests/browser/test_book_in_browser.py")
HTML = ROOT / "_build" / "html"


def record_path() -> Path | None:
    value = os.environ.get(VARIABLE)
    return Path(value) if value else None


def load() -> dict:
    path = record_path()
    try:
        data = json.loads(path.read_text()) if path else {}
    except (OSError, ValueError):
        data = {}
    return {"tests": data.get("tests", {})}


def save(record: dict) -> None:
    path = record_path()
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=0, sort_keys=True) + "\n")
    tmp.replace(path)


# --------------------------------------------------------------------------------------------
# What a file imports
# --------------------------------------------------------------------------------------------

def _module_file(dotted: str) -> Path | None:
    """The repository file of a dotted module name, or None if it is not one of ours."""
    base = ROOT.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _with_packages(path: Path) -> set[Path]:
    """A module file and the ``__init__.py`` of every package above it (importing it runs them)."""
    files = {path}
    folder = path.parent
    while folder != ROOT and (folder / "__init__.py").is_file():
        files.add(folder / "__init__.py")
        folder = folder.parent
    return files


@lru_cache(maxsize=None)
def _direct_imports(path: Path) -> frozenset[Path]:
    """The repository files that ``path`` imports by name: absolute imports of our packages, relative
    imports, and plain names of helper modules beside the file or in ``tests/``."""
    try:
        tree = ast.parse(path.read_text(), str(path))
    except (OSError, SyntaxError):
        return frozenset()
    package = path.parent
    found: set[Path] = set()

    def add_dotted(dotted: str) -> bool:
        hit = _module_file(dotted)
        if hit is not None:
            found.update(_with_packages(hit))
            return True
        for folder in (package, ROOT / "tests"):  # helper modules found through sys.path
            candidate = folder / (dotted.replace(".", "/") + ".py")
            if candidate.is_file():
                found.add(candidate)
                return True
        return False

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add_dotted(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package folder
                folder = package
                for _ in range(node.level - 1):
                    folder = folder.parent
                stem = ".".join(folder.relative_to(ROOT).parts)
                base = f"{stem}.{node.module}" if node.module else stem
            else:
                base = node.module or ""
            if not add_dotted(base):
                continue
            for alias in node.names:  # ``from package import module``
                add_dotted(f"{base}.{alias.name}")
    found.discard(path)
    return frozenset(found)


@lru_cache(maxsize=None)
def closure(path: Path) -> frozenset[Path]:
    """``path`` and every repository file that it imports, directly or through others."""
    seen, todo = set(), [Path(path)]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(_direct_imports(current) - seen)
    return frozenset(seen)


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _file_hash(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "missing"


@lru_cache(maxsize=None)
def _tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(folder)}\0{_file_hash(path)}\n".encode())
    return h.hexdigest()


def _environment() -> str:
    variables = sorted((k, v) for k, v in os.environ.items()
                       if k.startswith(("JAX_", "XLA_")) and k != "JAX_COMPILATION_CACHE_DIR")
    return repr((sys.version, sys.platform, variables))


def _key(files, extra: str = "") -> str:
    h = hashlib.sha256(_environment().encode())
    for path in sorted({Path(f) for f in files} | {ROOT / f for f in EVERY_TEST_READS}):
        h.update(f"{path.relative_to(ROOT)}\0{_file_hash(path)}\n".encode())
    h.update(extra.encode())
    return h.hexdigest()


def test_key(path: Path, params: dict) -> str | None:
    """The key of one test: the file that defines it (``path``) and its parameters, or None when the
    test always runs."""
    path = Path(path).resolve()
    relative = path.relative_to(ROOT).as_posix()
    top_level = relative.startswith("tests/") and relative.count("/") == 1
    if (top_level or relative.startswith(("tests/browser/", "tests/_book/"))) and relative not in PER_RECIPE:
        return None
    files = set(closure(path))
    name = params.get("name")
    if relative in PER_RECIPE:
        if isinstance(name, str) and name.startswith("cookbook."):
            hit = _module_file(name)
            if hit is None:
                return None
            files |= closure(hit)
        elif "page" in params and relative.startswith("tests/browser/"):
            static = HTML / "_static"
            extra = _tree_hash(static) if static.is_dir() else "no static"
            # The visit reads the page and the static files it loads; the search index is read only
            # by the search test, which always runs.
            return _key(files | {HTML / params["page"]}, extra)
        else:
            return None
    # The record is kept per node id, which names the parameters; their reprs are not used (a
    # function's holds its address, which changes from run to run).
    return _key(files)
