"""The shape of a recipe page: its sections, its prose, its code, and how long each takes to read.

The stub writer, the page assembler and the page check all read a recipe's docstring through this
module, so that they agree on what a heading, a section and a word are.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass

#: Headings every recipe docstring has, in this order. Other headings may sit between them.
REQUIRED_SECTIONS = ("Equation", "Legend", "Explanation", "Inductive bias", "Example")
#: Headings that the page machinery adds; a docstring must not write them itself.
MACHINE_SECTIONS = ("Code", "Connections", "References")
#: The optional section of measured figures, library layouts and performance notes; it comes after
#: the Example, so that the short-form prose above the code stays short.
NOTES_SECTION = "Implementation notes"
#: The sections whose prose is the page's first reading, from the equation to the inductive bias.
FIRST_READING = ("Equation", "Explanation", "Inductive bias")
#: Reading speed of the book: prose in words a minute, code in lines a minute.
WORDS_PER_MINUTE, LINES_PER_MINUTE = 200, 25
#: The most minutes the first reading (Equation to Inductive bias) may take.
FIRST_READING_MINUTES = 5
#: The title of the admonition that holds a page's intuition, inside its Explanation.
INTUITION = "Intuition"
#: The header row of every legend table.
LEGEND_HEADER = ("Symbol", "Meaning", "In code", "Shape")



def _headings(lines: list[str], underline: str = "-") -> dict[str, int]:
    """Map each heading underlined with ``underline`` to the index of its title line."""
    found = {}
    for i in range(len(lines) - 1):
        title, rule = lines[i].strip(), lines[i + 1].strip()
        if title and rule and set(rule) == {underline} and len(rule) >= len(title) and lines[i] == lines[i].lstrip():
            found.setdefault(title, i)
    return found


def code_start_line(source: str) -> int:
    """The first line (1-based) of a module's source after its docstring and the blank lines after it."""
    tree = ast.parse(source)
    start = 1
    if tree.body and isinstance(tree.body[0], ast.Expr) and isinstance(getattr(tree.body[0], "value", None), ast.Constant):
        start = tree.body[0].end_lineno + 1
    lines = source.splitlines()
    while start <= len(lines) and not lines[start - 1].strip():
        start += 1
    return start


def prose_words(lines: list[str]) -> int:
    """The words a reader reads in reStructuredText ``lines``.

    Inline mathematics and a citation count as one word each; the bodies of ``.. math::`` and
    ``.. plot::`` directives (a formula, the code of a figure) and the ``>>>`` examples count as
    nothing here, and directive options (``:header-rows: 1``) are not words.
    """
    words, k = 0, 0
    while k < len(lines):
        line = lines[k]
        m = re.match(r"(\s*)\.\. (math|plot)::", line)
        if m:
            indent = len(m.group(1))
            k += 1
            while k < len(lines) and (not lines[k].strip() or len(lines[k]) - len(lines[k].lstrip()) > indent):
                k += 1
            continue
        stripped = line.strip()
        if stripped.startswith(">>>"):  # an example and its output, up to the next blank line
            while k < len(lines) and lines[k].strip():
                k += 1
            continue
        if not stripped.startswith(":") and not re.match(r"\.\. [\w-]+::\s*$", stripped):
            text = re.sub(r":[\w:-]+:`[^`]*`", " w ", stripped)
            words += len(re.findall(r"[A-Za-z]+(?:['’-][A-Za-z]+)*|\d+(?:\.\d+)?", text))
        k += 1
    return words


def code_lines(source: str) -> int:
    """The non-blank lines of a module below its docstring: the code on its page."""
    return sum(1 for line in source.splitlines()[code_start_line(source) - 1:] if line.strip())


def first_reading_lines(page: "Page") -> list[str]:
    """The lines of a page from its Equation heading to the end of its Inductive bias section."""
    heads = _headings(page.lines)
    if not all(s in heads for s in FIRST_READING):
        return []
    start, last = heads["Equation"], heads["Inductive bias"]
    later = [i for i in heads.values() if i > last]
    return page.lines[start : min(later, default=len(page.lines))]


def reading_minutes(docstring: str, source: str) -> tuple[int, int]:
    """Minutes to read a page's prose (at :data:`WORDS_PER_MINUTE`) and its code (at
    :data:`LINES_PER_MINUTE`), each rounded up."""
    prose = math.ceil(prose_words(docstring.splitlines()) / WORDS_PER_MINUTE)
    code = math.ceil(code_lines(source) / LINES_PER_MINUTE)
    return max(1, prose), max(1, code)



@dataclass
class Page:
    """A recipe module's docstring, split into the parts the check looks at."""

    lines: list[str]
    sections: dict[str, list[str]]
    order: list[str]

    @classmethod
    def from_source(cls, source: str) -> Page | None:
        doc = ast.get_docstring(ast.parse(source), clean=True)
        if doc is None:
            return None
        lines = doc.splitlines()
        heads = _headings(lines)
        order = sorted(heads, key=heads.get)
        sections = {}
        for k, name in enumerate(order):
            end = heads[order[k + 1]] if k + 1 < len(order) else len(lines)
            sections[name] = lines[heads[name] + 2 : end]
        return cls(lines, sections, order)

