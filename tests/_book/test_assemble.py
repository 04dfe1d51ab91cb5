"""The page assembler (cookbook/_book/assemble.py): a recipe page gains its reading time, its code
before the Example and its references at the end; a chapter page gains its table of contents."""

import importlib
import textwrap

from cookbook import _book


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


def test_a_chapter_page_lists_its_recipes_in_reading_order(fake_book):
    assert _book.chapter_page_lines(["Basics", "======"], "fakebook.basics")[-3:] == ["   second", "   first", ""]
    (fake_book / "basics" / "added.py").write_text('"""added"""\n')
    importlib.invalidate_caches()
    toc = _book.chapter_page_lines(["Basics", "======"], "fakebook.basics")
    assert toc[:2] == ["Basics", "======"] and toc[-4:] == ["   second", "   first", "   added", ""]
