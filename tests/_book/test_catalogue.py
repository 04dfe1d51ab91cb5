"""The table of contents (cookbook/_book/catalogue.py): which chapters and recipes exist, in what order."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from cookbook import _book

ROOT = Path(__file__).resolve().parents[2]


def test_the_book_has_recipes():
    assert "cookbook.foundations.linear_regression" in _book.all_recipes()


@pytest.mark.parametrize("name", _book.chapters())
def test_every_chapter_has_a_titled_introduction(name):
    doc = importlib.import_module(f"cookbook.{name}").__doc__ or ""
    lines = doc.strip().splitlines()
    assert len(lines) > 2 and set(lines[1]) == {"="}, f"cookbook.{name} has no titled docstring"


def test_undeclared_modules_follow_the_declared_order_and_private_ones_are_not_recipes(fake_book):
    assert _book.chapters("fakebook") == ["basics"]
    assert _book.recipes("fakebook.basics") == ["second", "first"]
    (fake_book / "basics" / "added.py").write_text('"""added"""\n')
    importlib.invalidate_caches()
    assert _book.recipes("fakebook.basics") == ["second", "first", "added"]
    assert _book.all_recipes("fakebook") == ["fakebook.basics.second", "fakebook.basics.first", "fakebook.basics.added"]
    assert _book.is_recipe("fakebook.basics.first", package="fakebook")
    assert not _book.is_recipe("fakebook.basics._private", package="fakebook")
    assert _book.is_chapter("fakebook.basics", package="fakebook")
    assert not _book.is_chapter("fakebook.basics.first", package="fakebook")


def test_a_declared_recipe_that_does_not_exist_is_an_error(fake_book):
    (fake_book / "basics" / "first.py").unlink()
    importlib.invalidate_caches()
    with pytest.raises(ValueError, match=r"fakebook.basics.RECIPES declares \['first'\]"):
        _book.recipes("fakebook.basics")


def test_the_page_machinery_imports_neither_jax_nor_sphinx():
    # conf.py and the tests read the book's shape before anything computes: importing the machinery
    # must not start JAX (which would fix the device count) nor pull in Sphinx.
    code = "import sys, cookbook._book; print(sorted(m for m in ('jax', 'sphinx') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
