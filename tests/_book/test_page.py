"""Reading a page (cookbook/_book/page.py): its sections, words, code and minutes."""

from cookbook import _book


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


def test_prose_words_skip_math_code_and_options():
    lines = ["Two words :math:`x^2 + y` and :footcite:`a2000b`.", "", ".. math::", "", "   a + b = c",
             "", ">>> 1 + 1", "2", ".. list-table::", "   :header-rows: 1"]
    assert _book.prose_words(lines) == 5  # Two, words, the formula, and, the citation
