"""The page assembler: the machine-made parts that a recipe or chapter page gets around its docstring.

When autodoc reads a module's docstring (``conf.py`` connects ``autodoc-process-docstring``), a
recipe page gets its reading time under the title, the module's code before its Example, and its
references at the end; a chapter page gets the table of contents of its recipes.
"""

from __future__ import annotations

from pathlib import Path

from cookbook._book.bookmap import connection_lines
from cookbook._book.catalogue import recipes
from cookbook._book.notebooks import notebook_download
from cookbook._book.page import _headings, code_start_line, reading_minutes


def recipe_page_lines(lines: list[str], module_file: Path, srcdir: Path) -> list[str]:
    """The docstring ``lines`` of a recipe with the reading time, code and references added."""
    source = Path(module_file).read_text()
    rel = "/" + Path(module_file).resolve().relative_to(Path(srcdir).resolve()).as_posix()
    lines = list(lines)
    prose, code_minutes = reading_minutes("\n".join(lines), source)
    code = [
        "Code", "----", "",
        f"The module below is the code that runs, tests and builds this page "
        f"(:download:`download {Path(module_file).name} <{rel}>`).", "",
        *notebook_download(module_file, srcdir),  # writes the page's notebook beside its stub
        f".. literalinclude:: {rel}",
        "   :language: python",
        f"   :lines: {code_start_line(source)}-",
        "",
    ]
    heads = _headings(lines)
    at = heads.get("Example", len(lines))
    lines[at:at] = code
    lines += connection_lines(module_file)  # what it builds on and what builds on it, if anything
    lines += ["", "References", "----------", "", ".. footbibliography::", ""]
    # After the title (line 0) and its underline (line 1).
    lines[2:2] = ["", ".. rst-class:: reading-time", "", f"About {prose} min to read the prose and {code_minutes} min the code.", ""]
    return lines


def chapter_page_lines(lines: list[str], chapter: str) -> list[str]:
    """The docstring ``lines`` of a chapter with the toctree of its recipes added."""
    return list(lines) + ["", ".. toctree::", "   :maxdepth: 1", ""] + [f"   {r}" for r in recipes(chapter)] + [""]
