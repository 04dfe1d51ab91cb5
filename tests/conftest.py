"""Set-up shared by the tests: which files are not collected, and the fake book that the tests of the
book's machinery (tests/_book/) build their pages from. (One conftest.py for all of tests/: pytest
imports each conftest.py under its base name, and a second one would clash with this.)"""

import sys

import pytest

# The broken sample modules are read as text by the page check, never imported or collected.
collect_ignore_glob = ["template_samples/*"]


@pytest.fixture
def fake_book(tmp_path, monkeypatch):
    pkg = tmp_path / "fakebook"
    (pkg / "basics").mkdir(parents=True)
    (pkg / "__init__.py").write_text("CHAPTERS = ('basics',)\n")
    (pkg / "basics" / "__init__.py").write_text('"""Basics\n======\n\nIntro."""\nRECIPES = ("second", "first")\n')
    for name in ("first", "second", "_private"):
        (pkg / "basics" / f"{name}.py").write_text(f'"""{name}"""\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    yield pkg
    for mod in [m for m in sys.modules if m == "fakebook" or m.startswith("fakebook.")]:
        del sys.modules[mod]
