"""A new user's machine: the Makefile finds Python 3.11 and lists its targets, the package says which
extra a function needs, and it has a version."""

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import cookbook
from cookbook._extras import PIP_NAMES, needs_extra

ROOT = Path(__file__).resolve().parents[1]
MAKE = shutil.which("make")
needs_make = pytest.mark.skipif(MAKE is None, reason="make is not installed")


def _make(*args, path=None):
    env = dict(os.environ, **({"PATH": str(path)} if path is not None else {}))
    env.pop("PYTHON", None)
    return subprocess.run([MAKE, "-s", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout


@needs_make
def test_make_help_lists_every_target():
    phony = re.search(r"^\.PHONY:(.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    listed = set(re.findall(r"^make ([\w-]+)", _make("help"), re.M))
    assert set(phony) <= listed, f"make help does not list {sorted(set(phony) - listed)}"


@needs_make
@pytest.mark.parametrize("found", ["python3.11", "python3"])
def test_make_picks_python3_11_where_it_is_installed(tmp_path, found):
    # The commands that make would run to create .venv, on a PATH that holds only `found`.
    (tmp_path / found).symlink_to(sys.executable)
    first = _make("-n", "-B", ".venv/.installed", path=tmp_path).splitlines()[0]
    python = str(tmp_path / found) if found == "python3.11" else "python3"
    assert first.startswith(python + " -c "), first


def test_version():
    assert re.fullmatch(r"\d+\.\d+\.\d+", cookbook.__version__)
    assert cookbook.__version__ == importlib.metadata.version("deep-learning-cookbook")


def test_missing_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # as if scikit-learn were not installed
    from cookbook.diffusion.diffusion_transformer import digits
    from cookbook.foundations.training_loop import load_digits_split

    for load in (digits, load_digits_split):
        with pytest.raises(ModuleNotFoundError, match=r"scikit-learn .*'deep-learning-cookbook\[data\]'"):
            load()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("scikit-learn") for req in extras["data"])


def test_needs_extra_lets_other_errors_through():
    with pytest.raises(ValueError):
        with needs_extra("data"):
            raise ValueError("not an import")


def _imports_outside_needs_extra(tree):
    """Function-level imports of a module that ``PIP_NAMES`` lists, not inside ``with needs_extra``."""
    found = []

    def visit(node, guarded, in_function):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function = True
        if isinstance(node, ast.With) and any(
            isinstance(item.context_expr, ast.Call) and getattr(item.context_expr.func, "id", None) == "needs_extra"
            for item in node.items
        ):
            guarded = True
        if in_function and isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            if any(n.split(".")[0] in PIP_NAMES for n in names) and not guarded:
                found.append(node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child, guarded, in_function)

    visit(tree, False, False)
    return found


def test_every_function_that_imports_an_extra_names_it():
    bare = {}
    for path in sorted((ROOT / "cookbook").rglob("*.py")):
        lines = _imports_outside_needs_extra(ast.parse(path.read_text()))
        if lines:
            bare[str(path.relative_to(ROOT))] = lines
    assert not bare, f"functions import scikit-learn outside `with needs_extra(...)` (file: lines): {bare}"


def test_package_metadata_that_read_the_docs_builds():
    # An SPDX license expression, and the build backend pinned to the version the lock file installs.
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "MIT"
    locked = re.search(r"^setuptools==(\S+)$", (ROOT / "requirements" / "lock.txt").read_text(), re.M).group(1)
    assert meta["build-system"]["requires"] == [f"setuptools=={locked}"]
    assert int(locked.split(".")[0]) >= 77, "setuptools reads an SPDX license expression from 77.0 on"
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "/build/" in ignored or "build/" in ignored, "pip install . leaves build/, which git must ignore"
