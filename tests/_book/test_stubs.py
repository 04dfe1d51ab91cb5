"""The stub pages (cookbook/_book/stubs.py): adding a module adds its page, removing it removes the
page, and a stub is rewritten only when its text changes, and made newer when its module is."""

import importlib
import os

from cookbook import _book


def test_adding_a_module_adds_its_page_and_removing_it_removes_the_page(fake_book, tmp_path):
    out = tmp_path / "stubs"
    _book.write_stubs(out, package="fakebook")
    assert sorted(p.name for p in (out / "basics").glob("*.rst")) == ["first.rst", "index.rst", "second.rst"]

    (fake_book / "basics" / "added.py").write_text('"""added"""\n')
    importlib.invalidate_caches()
    _book.write_stubs(out, package="fakebook")
    assert (out / "basics" / "added.rst").read_text() == ".. automodule:: fakebook.basics.added\n"
    assert "chapters/basics/index" in (out / "toctree.txt").read_text()

    (fake_book / "basics" / "added.py").unlink()
    importlib.invalidate_caches()
    _book.write_stubs(out, package="fakebook")
    assert not (out / "basics" / "added.rst").exists()


def test_stubs_are_not_rewritten_when_unchanged(fake_book, tmp_path):
    out = tmp_path / "stubs"
    _book.write_stubs(out, package="fakebook")
    stub = out / "basics" / "first.rst"
    before = stub.stat().st_mtime_ns
    _book.write_stubs(out, package="fakebook")
    assert stub.stat().st_mtime_ns == before


def test_editing_a_module_makes_its_stub_newer_so_figures_are_redrawn(fake_book, tmp_path):
    out = tmp_path / "stubs"
    _book.write_stubs(out, package="fakebook")
    stub = out / "basics" / "first.rst"
    os.utime(stub, (1_000_000, 1_000_000))
    _book.write_stubs(out, package="fakebook")
    assert stub.stat().st_mtime == (fake_book / "basics" / "first.py").stat().st_mtime
    # A module that the recipe imports counts too.
    (fake_book / "basics" / "first.py").write_text('"""first"""\nfrom fakebook.basics.second import x\n')
    os.utime(fake_book / "basics" / "first.py", (2_000_000, 2_000_000))
    os.utime(fake_book / "basics" / "second.py", (3_000_000, 3_000_000))
    os.utime(stub, (1_000_000, 1_000_000))
    _book.write_stubs(out, package="fakebook")
    assert stub.stat().st_mtime == 3_000_000
