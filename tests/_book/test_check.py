"""The page check (cookbook/_book/check.py): every recipe passes it, and each of its rules can fail."""

import importlib
from pathlib import Path

import pybtex.database
import pytest

from cookbook import _book

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "template_samples"
BIB_KEYS = set(pybtex.database.parse_file(ROOT / "docs" / "references.bib").entries)
RECIPES = _book.all_recipes()


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


def test_math_symbols_reads_latex():
    got = _book.math_symbols(r"\hat{y}_i = \operatorname{softmax}(W_{jk} x)^\top + \mathrm{d}\theta \sum_i \log \alpha")
    assert got == {r"\hat{y}", "i", "W", "j", "k", "x", r"\theta", r"\alpha"}
