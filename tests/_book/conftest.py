"""Shared fixtures of the tests of the book's machinery (cookbook/_book/)."""

import sys

import pytest


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

