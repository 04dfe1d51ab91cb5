"""The machinery that turns the package into a book.

Nothing here is a recipe. Each job has its own module:

* :mod:`~cookbook._book.catalogue` finds the chapters and their recipes, in reading order;
* :mod:`~cookbook._book.stubs` writes the stub page that Sphinx reads for each of them;
* :mod:`~cookbook._book.page` reads a recipe's docstring: its sections, words and reading time;
* :mod:`~cookbook._book.assemble` adds the machine-made parts of a page (reading time, code,
  references) when autodoc reads a module;
* :mod:`~cookbook._book.bookmap` reads which recipe builds on which from the modules' imports: each
  page's Connections section and the map of the book;
* :mod:`~cookbook._book.notebooks` writes each recipe page as a Jupyter notebook, which the page
  links;
* :mod:`~cookbook._book.check` checks that every recipe page has the shape the book promises;
* :mod:`~cookbook._book.sidebar` resolves the table of contents of the sidebar once per chapter
  rather than once per page;
* :mod:`~cookbook._book.runtime` sets up every process that runs the book's code (devices, doctest
  flags, the compilation cache).

None of them imports Sphinx, and only :mod:`~cookbook._book.runtime` imports JAX (inside its
functions), so that ``conf.py`` and the tests can use them cheaply. The names below are re-exported
so that ``from cookbook._book import check_recipe`` reads the same wherever it is used.
"""

from cookbook._book.assemble import chapter_page_lines, recipe_page_lines
from cookbook._book.catalogue import ROOT_PACKAGE, all_recipes, chapters, is_chapter, is_recipe, recipes
from cookbook._book.check import (
    STANDARD_SYMBOLS,
    check_page,
    check_recipe,
    citations,
    code_names,
    legend_code_names,
    legend_code_problems,
    math_symbols,
)
from cookbook._book.page import (
    FIRST_READING,
    FIRST_READING_MINUTES,
    INTUITION,
    LEGEND_HEADER,
    LINES_PER_MINUTE,
    MACHINE_SECTIONS,
    NOTES_SECTION,
    REQUIRED_SECTIONS,
    WORDS_PER_MINUTE,
    Page,
    code_lines,
    code_start_line,
    first_reading_lines,
    prose_words,
    reading_minutes,
)
from cookbook._book.runtime import (
    SIMULATED_DEVICES,
    doctest_setup,
    release_compiled_programs,
    simulate_devices,
)
from cookbook._book.stubs import write_stubs

__all__ = [name for name in dir() if not name.startswith("_") and name not in {"annotations"}]
