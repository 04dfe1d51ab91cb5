"""The page check: what every recipe page must hold, read mechanically from its module.

``tests/_book/test_check.py`` runs :func:`check_recipe` on every recipe of the book.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from cookbook._book.page import (
    FIRST_READING_MINUTES,
    INTUITION,
    LEGEND_HEADER,
    MACHINE_SECTIONS,
    NOTES_SECTION,
    REQUIRED_SECTIONS,
    WORDS_PER_MINUTE,
    Page,
    _headings,
    first_reading_lines,
    prose_words,
)

#: Notation that is the same on every page (see ``docs/notation.rst``) and so needs no legend row.
STANDARD_SYMBOLS = frozenset(
    {r"\mathbb{R}", r"\mathbb{E}", r"\mathbb{1}", r"\mathbb{N}", r"\mathbb{Z}", r"\mathcal{N}",
     r"\mathcal{U}", r"\pi", "e"}
)

_GREEK = frozenset(
    "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi "
    "omicron pi varpi rho varrho sigma varsigma tau upsilon phi varphi chi psi omega Gamma Delta "
    "Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega ell".split()
)
#: Commands that decorate one symbol and make it a different symbol (``\hat{y}`` is not ``y``).
_DECORATIONS = frozenset(
    "mathbf boldsymbol bm mathcal mathbb mathit hat tilde bar overline vec dot ddot widehat "
    "widetilde".split()
)
#: Commands whose argument is words, not symbols.
_WORDS = frozenset("text textrm textbf mathrm operatorname mathsf mathtt label tag begin end".split())



def _strip_words(tex: str) -> str:
    """Remove the arguments of word commands (``\\text{...}``, ``\\operatorname{...}``)."""
    pattern = re.compile(r"\\(" + "|".join(_WORDS) + r")\*?\s*\{")
    while (m := pattern.search(tex)) is not None:
        depth, j = 1, m.end()
        while j < len(tex) and depth:
            depth += {"{": 1, "}": -1}.get(tex[j], 0)
            j += 1
        tex = tex[: m.start()] + " " + tex[j:]
    return tex


def math_symbols(tex: str) -> set[str]:
    """The symbols of a LaTeX formula: Latin letters, Greek letters, and decorated symbols.

    ``\\hat{y}`` and ``\\mathbf{x}`` count as symbols of their own; subscripts and superscripts count
    as symbols too (``W_{ij}`` names ``W``, ``i`` and ``j``); the arguments of ``\\text``,
    ``\\operatorname`` and ``\\mathrm`` are words and count as nothing; other commands (``\\sum``,
    ``\\log``, ``\\top``) are operators.
    """
    tex = _strip_words(tex)
    symbols = set()
    pos = 0
    token = re.compile(r"\\([A-Za-z]+)\s*(\{\s*(\\?[A-Za-z0-9]+)\s*\}|\s*(\\?[A-Za-z]+))?|\\.|([A-Za-z])")
    while (m := token.search(tex, pos)) is not None:
        command, group, inner, bare, letter = m.group(1), m.group(2), m.group(3), m.group(4), m.group(5)
        pos = m.end()
        if letter:
            symbols.add(letter)
        elif command in _DECORATIONS and (inner or bare):
            arg = inner or bare
            if not group and bare and not bare.startswith("\\"):
                arg = bare[0]  # \hat y: only the next letter is decorated
                pos = m.start(4) + 1
            symbols.add(f"\\{command}{{{arg}}}")
        elif command in _GREEK:
            symbols.add("\\" + command)
            pos = m.end(1)
        elif command:
            pos = m.end(1)
    return symbols




def _math_blocks(lines: list[str]) -> list[str]:
    """The bodies of ``.. math::`` directives and ``:math:`` roles within ``lines``."""
    out, k = [], 0
    while k < len(lines):
        m = re.match(r"(\s*)\.\. math::(.*)$", lines[k])
        if m:
            body, indent = [m.group(2)], len(m.group(1))
            k += 1
            while k < len(lines) and (not lines[k].strip() or len(lines[k]) - len(lines[k].lstrip()) > indent):
                if not lines[k].strip().startswith(":"):  # skip directive options such as :label:
                    body.append(lines[k])
                k += 1
            out.append("\n".join(body))
        else:
            out.extend(re.findall(r":math:`([^`]*)`", lines[k]))
            k += 1
    return out


def _legend_rows(lines: list[str]) -> list[list[str]]:
    """The rows of the first ``list-table`` in ``lines``, each a list of cell texts."""
    rows, inside = [], False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith(".. list-table::"):
            if inside:
                break
            inside = True
        elif not inside:
            continue
        elif stripped.startswith("* - "):
            rows.append([stripped[4:]])
        elif stripped.startswith("- ") and rows:
            rows[-1].append(stripped[2:])
        elif stripped and rows and not stripped.startswith(":"):
            rows[-1][-1] += " " + stripped
    return rows


_PY_WORDS = frozenset(
    "None True False and or not in is if else for lambda len range int float bool tuple list dict "
    "str shape ndim dtype size T".split()
)


def code_names(source: str) -> set[str]:
    """Every name a module's syntax tree holds: functions, classes, arguments, variables, attributes,
    keyword arguments, imported names and the string constants that are identifiers (dict keys)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.keyword) and node.arg:
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
            names.update(node.name.split("."))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            names.add(node.value)
    return names


def _imported_modules(source: str) -> set[str]:
    """The names under which a module imports other modules or their members (``jnp``, ``lax``)."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update((a.asname or a.name).split(".")[0] for a in node.names)
    return out


def legend_code_names(cell: str) -> list[str]:
    """The identifiers that a legend's "In code" cell names inside its ````literal```` spans.

    A dotted path that starts with an imported module (``jnp.linalg.norm``) is one name, its head;
    words outside literals are prose and name nothing.
    """
    found = []
    for literal in re.findall(r"``(.+?)``", cell):
        for chain in re.findall(r"[A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*", literal):
            found.extend(part.strip() for part in chain.split("."))
    return found


def legend_code_problems(page: "Page", source: str) -> list[str]:
    """The names of the legend's "In code" column that the module does not hold."""
    rows = _legend_rows(page.sections.get("Legend", []))
    if not rows or tuple(c.strip() for c in rows[0]) != LEGEND_HEADER:
        return []
    names, modules = code_names(source), _imported_modules(source)
    missing = []
    for row in rows[1:]:
        if len(row) != len(LEGEND_HEADER):
            continue
        for literal in re.findall(r"``(.+?)``", row[2]):
            for chain in re.findall(r"[A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*", literal):
                parts = [p.strip() for p in chain.split(".")]
                if parts[0] in modules:
                    continue  # a library path such as jnp.linalg.norm
                missing += [p for p in parts if p not in names and p not in _PY_WORDS and p not in missing]
    return missing


def check_page(source: str) -> list[str]:
    """What a recipe module's docstring lacks to be a book page; an empty list if nothing.

    The check is mechanical, so that it can run on every module on every build:

    * a title (underlined with ``=``) and a sentence under it;
    * the sections :data:`REQUIRED_SECTIONS`, in that order (others may sit between them), and
      none of :data:`MACHINE_SECTIONS`, which the page machinery adds;
    * a ``.. math::`` block under *Equation*;
    * a ``list-table`` under *Legend* whose header is :data:`LEGEND_HEADER`, whose rows have four
      cells, and whose first column names, in ``:math:`` roles, every symbol (by
      :func:`math_symbols`) of the Equation section other than :data:`STANDARD_SYMBOLS`;
    * at least one ``>>>`` example under *Example*.
    """
    page = Page.from_source(source)
    if page is None:
        return ["has no module docstring"]
    problems = []
    lines = page.lines
    if len(lines) < 2 or not lines[0].strip() or set(lines[1].strip()) != {"="}:
        problems.append("has no title: the docstring must begin with a title underlined with '='")
    elif len(lines[1].strip()) < len(lines[0].strip()):
        problems.append(f"has a title underline shorter than its title ({len(lines[1].strip())} < "
                        f"{len(lines[0].strip())} characters), which Sphinx warns about")
    elif not "".join(lines[2 : (min(_headings(lines).values(), default=len(lines)))]).strip():
        problems.append("has no sentence under the title saying what the idea is and when to use it")
    for name in MACHINE_SECTIONS:
        if name in page.sections:
            problems.append(f"writes a '{name}' section itself; the page machinery adds it")
    missing = [s for s in REQUIRED_SECTIONS if s not in page.sections]
    for name in missing:
        problems.append(f"lacks the section '{name}'")
    present = [s for s in page.order if s in REQUIRED_SECTIONS]
    expected = [s for s in REQUIRED_SECTIONS if s in page.sections]
    if present != expected:
        problems.append(f"has its sections out of order: {present}, expected {expected}")
    if "Equation" in page.sections:
        equation = page.sections["Equation"]
        if not any(line.strip().startswith(".. math::") for line in equation):
            problems.append("has no '.. math::' block in its Equation section")
        eq_symbols = set().union(*map(math_symbols, _math_blocks(equation))) - STANDARD_SYMBOLS
        if "Legend" in page.sections:
            rows = _legend_rows(page.sections["Legend"])
            if not rows or tuple(c.strip() for c in rows[0]) != LEGEND_HEADER:
                problems.append(f"has no legend table with the header row {list(LEGEND_HEADER)}")
            else:
                bad = [r[0] for r in rows[1:] if len(r) != len(LEGEND_HEADER)]
                if bad:
                    problems.append(f"has legend rows without exactly four cells: {bad}")
                named = set().union(*(math_symbols(t) for r in rows[1:] for t in _math_blocks([r[0]])))
                unnamed = sorted(eq_symbols - named)
                if unnamed:
                    problems.append(f"has a legend that misses symbols of its equation: {unnamed}")
    if "Example" in page.sections and not any(l.strip().startswith(">>>") for l in page.sections["Example"]):
        problems.append("has no '>>>' example in its Example section")
    missing_names = legend_code_problems(page, source)
    if missing_names:
        problems.append(
            f"has a legend whose 'In code' column names what the module does not hold: {missing_names} "
            "(write a cell that is not a variable in words, outside ``literals``)")
    if "Explanation" in page.sections and not any(
        re.match(rf"\s*\.\. admonition:: {INTUITION}\b", l) for l in page.sections["Explanation"]
    ):
        problems.append(f"has no intuition: add a '.. admonition:: {INTUITION}' to its Explanation")
    first = first_reading_lines(page)
    if first:
        words = prose_words(first)
        if words > FIRST_READING_MINUTES * WORDS_PER_MINUTE:
            problems.append(
                f"is not short-form: {words} words from Equation to Inductive bias read in more than "
                f"{FIRST_READING_MINUTES} min (at most {FIRST_READING_MINUTES * WORDS_PER_MINUTE}); move "
                f"measured figures and library notes to '{NOTES_SECTION}' after the Example")
    if NOTES_SECTION in page.sections and "Example" in page.sections and page.order.index(
        NOTES_SECTION) < page.order.index("Example"):
        problems.append(f"has its '{NOTES_SECTION}' before its Example; they follow the code and the Example")
    return problems


def citations(source: str) -> set[str]:
    """The bibliography keys that a module cites with ``:footcite:`` or ``:cite:`` roles."""
    doc = ast.get_docstring(ast.parse(source), clean=True) or ""
    keys = set()
    for group in re.findall(r":(?:foot)?cite(?::[a-z]+)?:`([^`]+)`", doc):
        keys.update(k.strip() for k in group.split(","))
    return keys


def check_recipe(module_file: Path, tests_dir: Path, bib_keys: set[str]) -> list[str]:
    """Everything :func:`check_page` checks, plus a resolvable citation and a test file."""
    module_file = Path(module_file)
    source = module_file.read_text()
    problems = check_page(source)
    cited = citations(source)
    if not cited:
        problems.append("cites nothing: add a :footcite: to the bibliography")
    unknown = sorted(cited - set(bib_keys))
    if unknown:
        problems.append(f"cites keys that are not in the bibliography: {unknown}")
    test_file = Path(tests_dir) / module_file.parent.name / f"test_{module_file.stem}.py"
    if not test_file.exists():
        problems.append(f"has no test file {test_file}")
    return problems
