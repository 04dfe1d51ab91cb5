"""The book's own invariants: every recipe is a complete page, and pages come from modules alone."""

import importlib
import sys
import textwrap
from pathlib import Path

import pybtex.database
import pytest

from cookbook import _book

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = Path(__file__).parent / "template_samples"
BIB_KEYS = set(pybtex.database.parse_file(ROOT / "docs" / "references.bib").entries)
RECIPES = _book.all_recipes()


def test_the_book_has_recipes():
    assert "cookbook.foundations.linear_regression" in RECIPES


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_is_a_complete_page(name):
    module = importlib.import_module(name)
    problems = _book.check_recipe(Path(module.__file__), ROOT / "tests", BIB_KEYS)
    assert not problems, f"{name} " + "; ".join(problems)


def test_no_module_of_the_book_compiles_with_a_warning():
    """An invalid escape such as ``\\log`` in a docstring that is not raw is a DeprecationWarning
    today and a SyntaxWarning from Python 3.12: page docstrings with LaTeX must be raw strings."""
    import warnings

    noisy = []
    for path in sorted((ROOT / "cookbook").rglob("*.py")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            compile(path.read_text(), str(path), "exec")
        noisy += [f"{path.relative_to(ROOT)}: {w.message}" for w in caught
                  if issubclass(w.category, (SyntaxWarning, DeprecationWarning))]
    assert not noisy, noisy


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_declares_its_jit_functions(name):
    module = importlib.import_module(name)
    jit = getattr(module, "JIT", None)
    assert isinstance(jit, dict), f"{name} has no JIT dict naming its jit-able functions"
    for fn, static in jit.items():
        assert callable(getattr(module, fn, None)), f"{name}.JIT names {fn!r}, which is not a function of it"
        assert isinstance(static, tuple), f"{name}.JIT[{fn!r}] must be a tuple of argument names"


@pytest.mark.parametrize("name", _book.chapters())
def test_every_chapter_has_a_titled_introduction(name):
    doc = importlib.import_module(f"cookbook.{name}").__doc__ or ""
    lines = doc.strip().splitlines()
    assert len(lines) > 2 and set(lines[1]) == {"="}, f"cookbook.{name} has no titled docstring"


# ---- The check can fail: one broken sample per rule ------------------------------------------------

@pytest.fixture
def sample_tests_dir(tmp_path):
    """A tests directory in which every sample has its test file."""
    (tmp_path / "template_samples").mkdir()
    for sample in SAMPLES.glob("*.py"):
        (tmp_path / "template_samples" / f"test_{sample.name}").write_text("")
    return tmp_path


def test_the_good_sample_passes(sample_tests_dir):
    assert _book.check_recipe(SAMPLES / "good.py", sample_tests_dir, BIB_KEYS) == []


@pytest.mark.parametrize(
    "sample, expected",
    [
        ("no_docstring", "has no module docstring"),
        ("no_title", "has no title"),
        ("no_sentence", "has no sentence under the title"),
        ("missing_legend", "lacks the section 'Legend'"),
        ("out_of_order", "has its sections out of order"),
        ("no_math_block", "has no '.. math::' block"),
        ("bad_legend_header", "has no legend table with the header row"),
        ("legend_misses_symbol", "misses symbols of its equation: ['b']"),
        ("no_example", "has no '>>>' example"),
        ("no_citation", "cites nothing"),
        ("unknown_citation", "not in the bibliography: ['nobody1999nothing']"),
        ("writes_code_section", "writes a 'Code' section itself"),
    ],
)
def test_each_broken_sample_fails_with_its_reason(sample, expected, sample_tests_dir):
    problems = _book.check_recipe(SAMPLES / f"{sample}.py", sample_tests_dir, BIB_KEYS)
    assert any(expected in p for p in problems), problems


GOOD = (SAMPLES / "good.py").read_text()
_NOTES = "Implementation notes\n--------------------\n\nMeasured figures and library layouts go here, after the code and the example.\n"
_EXAMPLE = "Example\n-------\n\n>>> 1 + 1\n2\n"


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("     - ``w``; ``b``", "     - ``w``; ``bias``", "names what the module does not hold: ['bias']"),
        (".. admonition:: Intuition\n\n   A vote", "A vote", "has no intuition"),
        ("A linear boundary.", "A linear boundary. " + "More words about the boundary. " * 210, "is not short-form"),
        (_EXAMPLE + "\n" + _NOTES, _NOTES + "\n" + _EXAMPLE, "has its 'Implementation notes' before its Example"),
        ("Sample recipe\n=============\n", "Sample recipes\n=============\n", "has a title underline shorter than its title (13 < 14"),
    ],
    ids=["legend_names_missing_code", "no_intuition", "too_long", "notes_before_example", "short_underline"],
)
def test_each_broken_variant_of_the_good_sample_fails_with_its_reason(old, new, expected, sample_tests_dir):
    assert old in GOOD
    broken = sample_tests_dir / "template_samples" / "broken.py"
    broken.write_text(GOOD.replace(old, new))
    (sample_tests_dir / "template_samples" / "test_broken.py").write_text("")
    problems = _book.check_recipe(broken, sample_tests_dir, BIB_KEYS)
    assert any(expected in p for p in problems), problems


def test_a_recipe_without_a_test_file_fails(tmp_path):
    problems = _book.check_recipe(SAMPLES / "good.py", tmp_path, BIB_KEYS)
    assert any("has no test file" in p for p in problems), problems


def test_every_citation_role_counts():
    source = '"""T\n=\n\n:footcite:t:`a2000x` and :footcite:`b2001y, c2002z` and :cite:p:`d2003w`.\n"""\n'
    assert _book.citations(source) == {"a2000x", "b2001y", "c2002z", "d2003w"}


def test_legend_code_names_reads_literals_and_skips_words():
    source = "import jax.numpy as jnp\n\ndef f(x, params):\n    h = jnp.tanh(x @ params['W'])\n    return h.mean()\n"
    assert _book.legend_code_problems(_page_with_cells(["``x``", "``params['W']``", "``jnp.linalg.norm(h)``",
                                                        "the loop index (not a variable)"]), source) == []
    assert _book.legend_code_problems(_page_with_cells(["``x[..., t, :]``", "``params['b']``"]), source) == ["t", "b"]


def _page_with_cells(cells):
    rows = "".join(f"   * - :math:`a`\n     - m\n     - {c}\n     - s\n" for c in cells)
    doc = "T\n=\n\ns.\n\nLegend\n------\n\n.. list-table::\n   :header-rows: 1\n\n" \
          "   * - Symbol\n     - Meaning\n     - In code\n     - Shape\n" + rows
    return _book.Page.from_source(f'r"""{doc}"""\n')


def test_prose_words_skip_math_code_and_options():
    lines = ["Two words :math:`x^2 + y` and :footcite:`a2000b`.", "", ".. math::", "", "   a + b = c",
             "", ">>> 1 + 1", "2", ".. list-table::", "   :header-rows: 1"]
    assert _book.prose_words(lines) == 5  # Two, words, the formula, and, the citation


def test_math_symbols_reads_latex():
    got = _book.math_symbols(r"\hat{y}_i = \operatorname{softmax}(W_{jk} x)^\top + \mathrm{d}\theta \sum_i \log \alpha")
    assert got == {r"\hat{y}", "i", "W", "j", "k", "x", r"\theta", r"\alpha"}


# ---- Adding a module alone adds a page -------------------------------------------------------------

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


def test_adding_a_module_adds_its_page(fake_book, tmp_path):
    out = tmp_path / "stubs"
    _book.write_stubs(out, package="fakebook")
    assert _book.recipes("fakebook.basics") == ["second", "first"]
    assert sorted(p.name for p in (out / "basics").glob("*.rst")) == ["first.rst", "index.rst", "second.rst"]

    (fake_book / "basics" / "added.py").write_text('"""added"""\n')
    importlib.invalidate_caches()
    _book.write_stubs(out, package="fakebook")
    # Undeclared modules follow the declared order; the stub and the chapter's toctree gain the page.
    assert _book.recipes("fakebook.basics") == ["second", "first", "added"]
    assert (out / "basics" / "added.rst").read_text() == ".. automodule:: fakebook.basics.added\n"
    toc = _book.chapter_page_lines(["Basics", "======"], "fakebook.basics")
    assert toc[-4:] == ["   second", "   first", "   added", ""]
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


def test_a_declared_recipe_that_does_not_exist_is_an_error(fake_book):
    (fake_book / "basics" / "first.py").unlink()
    importlib.invalidate_caches()
    with pytest.raises(ValueError, match=r"fakebook.basics.RECIPES declares \['first'\]"):
        _book.recipes("fakebook.basics")


def test_the_page_gains_code_before_the_example_and_references_at_the_end(tmp_path):
    module = tmp_path / "demo.py"
    module.write_text(textwrap.dedent('''\
        """Demo
        ====

        Sentence.

        Example
        -------

        >>> 1
        1
        """

        def f():
            return 1
        '''))
    doc = ["Demo", "====", "", "Sentence.", "", "Example", "-------", "", ">>> 1", "1"]
    lines = _book.recipe_page_lines(doc, module, tmp_path)
    text = "\n".join(lines)
    assert text.index("About 1 min to read the prose and 1 min the code.") < text.index("Code\n----") < text.index("Example\n-------")
    assert ".. literalinclude:: /demo.py" in text and ":lines: 13-" in text
    assert text.rstrip().endswith(".. footbibliography::")


def test_editing_a_module_makes_its_stub_newer_so_figures_are_redrawn(fake_book, tmp_path):
    import os

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


def test_the_page_machinery_imports_neither_jax_nor_sphinx():
    # conf.py and the tests read the book's shape before anything computes: importing the machinery
    # must not start JAX (which would fix the device count) nor pull in Sphinx.
    import subprocess

    code = "import sys, cookbook._book; print(sorted(m for m in ('jax', 'sphinx') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


# ---- Reading a page: sections, words, code, minutes (cookbook/_book/page.py) ------------------------

_SHORT_PAGE = '''r"""Title
=====

What it is.

Equation
--------

.. math::

   y = W x

Explanation
-----------

Five words of prose here.

Inductive bias
--------------

Two more.

Example
-------

>>> 1 + 1
2
"""

import jax


def f(x):
    return x
'''


def test_code_starts_after_the_docstring_and_its_blank_lines():
    lines = _SHORT_PAGE.splitlines()
    start = _book.code_start_line(_SHORT_PAGE)
    assert lines[start - 1] == "import jax"
    assert _book.code_lines(_SHORT_PAGE) == 3  # import, def, return


def test_first_reading_runs_from_the_equation_to_the_end_of_the_inductive_bias():
    page = _book.Page.from_source(_SHORT_PAGE)
    first = _book.first_reading_lines(page)
    assert first[0] == "Equation" and [line for line in first if line.strip()][-1] == "Two more."
    assert not any(">>>" in line for line in first)
    # The formula, the example and directive lines count as no words.
    assert _book.prose_words(first) == len("Equation Explanation Five words of prose here Inductive bias Two more".split())


def test_reading_minutes_round_up_and_are_at_least_one():
    doc = " ".join(["word"] * (_book.WORDS_PER_MINUTE + 1))
    source = "\n".join(f"x{i} = {i}" for i in range(_book.LINES_PER_MINUTE * 2))
    assert _book.reading_minutes(doc, source) == (2, 2)
    assert _book.reading_minutes("", "x = 1") == (1, 1)
