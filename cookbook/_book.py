"""The machinery that turns the package into a book.

Nothing here is a recipe. This module finds the chapters and recipes, writes the stub pages that
Sphinx reads, adds the machine-made parts of each recipe page (reading time, code, references),
and checks that every recipe page has the shape that the book promises. It imports neither Sphinx
nor JAX, so that ``conf.py`` and the tests can both use it cheaply.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import math
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path

ROOT_PACKAGE = "cookbook"

#: Headings every recipe docstring has, in this order. Other headings may sit between them.
REQUIRED_SECTIONS = ("Equation", "Legend", "Explanation", "Inductive bias", "Example")
#: Headings that the page machinery adds; a docstring must not write them itself.
MACHINE_SECTIONS = ("Code", "References")
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


# --------------------------------------------------------------------------------------------
# Finding chapters and recipes
# --------------------------------------------------------------------------------------------

def _declared_then_found(declared, found, what):
    missing = [name for name in declared if name not in found]
    if missing:
        raise ValueError(f"{what} declares {missing}, but no such module exists; found {sorted(found)}")
    return list(declared) + sorted(name for name in found if name not in declared)


def chapters(package: str = ROOT_PACKAGE) -> list[str]:
    """The chapter subpackages of ``package``, in the order its ``CHAPTERS`` declares.

    Chapters that exist but are not declared follow, in alphabetical order, so that a new chapter
    is never lost from the book.
    """
    pkg = importlib.import_module(package)
    found = {m.name for m in pkgutil.iter_modules(pkg.__path__) if m.ispkg and not m.name.startswith("_")}
    return _declared_then_found(getattr(pkg, "CHAPTERS", ()), found, f"{package}.CHAPTERS")


def recipes(chapter: str) -> list[str]:
    """The recipe modules of the chapter package ``chapter``, in the order its ``RECIPES`` declares.

    A module that exists but is not declared follows the declared ones, in alphabetical order: adding
    a module alone adds its page.
    """
    pkg = importlib.import_module(chapter)
    found = {m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.ispkg and not m.name.startswith("_")}
    return _declared_then_found(getattr(pkg, "RECIPES", ()), found, f"{chapter}.RECIPES")


def all_recipes(package: str = ROOT_PACKAGE) -> list[str]:
    """Every recipe module of the book, as dotted names, in reading order."""
    return [f"{package}.{c}.{r}" for c in chapters(package) for r in recipes(f"{package}.{c}")]


def is_recipe(name: str, package: str = ROOT_PACKAGE) -> bool:
    parts = name.split(".")
    return len(parts) == 3 and parts[0] == package and not any(p.startswith("_") for p in parts)


def is_chapter(name: str, package: str = ROOT_PACKAGE) -> bool:
    parts = name.split(".")
    return len(parts) == 2 and parts[0] == package and not parts[1].startswith("_")


# --------------------------------------------------------------------------------------------
# Stub pages
# --------------------------------------------------------------------------------------------

def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _module_file(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(spec.origin) if spec is not None and spec.origin else None


def _source_mtime(name: str) -> float:
    """The newest modification time of a recipe module and of the book modules it imports.

    Figures on a page are drawn by the plot directive, which re-draws them only when the *page*
    is newer than the pictures. A stub page never changes when its module does, so the stub is given
    this time instead: editing a recipe, or a recipe that it imports, re-draws its figures.
    """
    path = _module_file(name)
    if path is None:
        return 0.0
    newest = path.stat().st_mtime
    root = name.split(".")[0]
    for dep in set(re.findall(rf"\b(?:from|import)\s+({root}(?:\.\w+)+)", path.read_text())):
        dep_path = _module_file(dep) if dep != name else None
        if dep_path is not None:
            newest = max(newest, dep_path.stat().st_mtime)
    return newest


def _touch_to(path: Path, mtime: float) -> None:
    if mtime > path.stat().st_mtime:
        os.utime(path, (mtime, mtime))


def write_stubs(outdir: Path, package: str = ROOT_PACKAGE) -> list[Path]:
    """Write one stub page per chapter and per recipe under ``outdir``; return the stub paths.

    A stub is rewritten only when its text changes (otherwise every build is a full rebuild), and
    stubs of modules that no longer exist are removed. ``outdir/toctree.txt`` holds the toctree of
    the chapters, for the landing page to include.
    """
    outdir = Path(outdir)
    written = []
    toc = [".. toctree::", "   :maxdepth: 1", "   :caption: Chapters", ""]
    for chapter in chapters(package):
        written.append(outdir / chapter / "index.rst")
        _write_if_changed(written[-1], f".. automodule:: {package}.{chapter}\n")
        toc.append(f"   chapters/{chapter}/index")
        for recipe in recipes(f"{package}.{chapter}"):
            written.append(outdir / chapter / f"{recipe}.rst")
            _write_if_changed(written[-1], f".. automodule:: {package}.{chapter}.{recipe}\n")
            _touch_to(written[-1], _source_mtime(f"{package}.{chapter}.{recipe}"))
    _write_if_changed(outdir / "toctree.txt", "\n".join(toc) + "\n")
    for stale in set(outdir.rglob("*.rst")) - set(written):
        stale.unlink()
    return written


# --------------------------------------------------------------------------------------------
# The machine-made parts of a page
# --------------------------------------------------------------------------------------------

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
        f".. literalinclude:: {rel}",
        "   :language: python",
        f"   :lines: {code_start_line(source)}-",
        "",
    ]
    heads = _headings(lines)
    at = heads.get("Example", len(lines))
    lines[at:at] = code
    lines += ["", "References", "----------", "", ".. footbibliography::", ""]
    # After the title (line 0) and its underline (line 1).
    lines[2:2] = ["", f".. rst-class:: reading-time", "", f"About {prose} min to read the prose and {code_minutes} min the code.", ""]
    return lines


def chapter_page_lines(lines: list[str], chapter: str) -> list[str]:
    """The docstring ``lines`` of a chapter with the toctree of its recipes added."""
    return list(lines) + ["", ".. toctree::", "   :maxdepth: 1", ""] + [f"   {r}" for r in recipes(chapter)] + [""]


# --------------------------------------------------------------------------------------------
# The page check
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Doctests
# --------------------------------------------------------------------------------------------

def doctest_setup() -> None:
    """The set-up shared by Sphinx's doctest builder and pytest's doctests."""
    import os

    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import numpy as np

    simulate_devices()
    jax.config.update("jax_numpy_rank_promotion", "raise")
    np.set_printoptions(precision=4, suppress=True)
    _atomic_compilation_cache_writes()
    release_compiled_programs()


# The parallelism chapter shards its arrays over this many devices. On a machine with one CPU, XLA
# can present the CPU as several devices; a program that uses one device compiles and runs as it
# would with one, so the rest of the book is unaffected.
SIMULATED_DEVICES = 8


def simulate_devices(count: int = SIMULATED_DEVICES) -> None:
    """Present the CPU as ``count`` JAX devices, if JAX has not started its CPU backend yet.

    JAX reads ``jax_num_cpu_devices`` once, when its first computation starts the backend; after that
    this does nothing (the process keeps the devices it started with). The book's build (``conf.py``)
    and its tests (``conftest.py``) call it before anything computes. A reader who runs the
    parallelism chapter's code elsewhere calls ``jax.config.update("jax_num_cpu_devices", 8)``
    right after ``import jax``.
    """
    import jax
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return
    if jax.config.jax_num_cpu_devices < count:
        jax.config.update("jax_num_cpu_devices", count)


# How many memory mappings this process may hold (Linux's vm.max_map_count), read once; None where
# there is no /proc to tell.
_MAX_MAPS: list[int | None] = []
_MAPS_CHECKED_AT = [float("-inf")]


def _memory_mappings() -> int | None:
    try:
        with open("/proc/self/maps", "rb") as f:
            return f.read().count(b"\n")
    except OSError:
        return None


def release_compiled_programs(*, fraction: float = 0.5, every_s: float = 5.0) -> bool:
    """Drop JAX's in-memory caches of compiled programs when this process holds many of them.

    Every program that XLA compiles for the CPU stays loaded for the life of the process (JAX keeps
    it for the next call with the same shapes) and holds about three memory mappings. Linux caps the
    mappings of one process (``vm.max_map_count``, 65530 by default); a long run that compiles tens
    of thousands of programs, as a pytest worker does across the book's tests and bad-input replays,
    reaches the cap, the next mapping fails inside XLA's compiler, and the process dies of a
    segmentation fault. When the mappings pass ``fraction`` of the cap, this clears JAX's caches
    (``jax.clear_caches``), which unloads the programs; later calls compile again, or read the
    persistent compilation cache. Counting the mappings reads ``/proc/self/maps`` (about 30 ms at
    30 000 of them), so it is done at most once every ``every_s`` seconds. Returns whether it cleared.
    """
    import gc
    import time

    now = time.monotonic()
    if now - _MAPS_CHECKED_AT[0] < every_s:
        return False
    _MAPS_CHECKED_AT[0] = now
    if not _MAX_MAPS:
        try:
            _MAX_MAPS.append(int(Path("/proc/sys/vm/max_map_count").read_text()))
        except (OSError, ValueError):
            _MAX_MAPS.append(None)
    mappings = _memory_mappings()
    if _MAX_MAPS[0] is None or mappings is None or mappings < fraction * _MAX_MAPS[0]:
        return False
    import jax

    jax.clear_caches()
    gc.collect()
    return True


def _atomic_compilation_cache_writes() -> None:
    """Make JAX's persistent compilation cache write each entry whole or not at all.

    Its file cache (JAX 0.10, without eviction) writes an entry in place, so a second process that
    compiles the same program (two pytest workers, or Sphinx's doctest builder beside them) can read
    a half-written file, and XLA may abort the process while deserialising it. (A worker that died
    while deserialising an entry, in a ``make test`` run, is more likely to have met the mapping cap
    of :func:`release_compiled_programs`; the race is real either way.) Writing to a temporary file
    and renaming it over the entry's name, which is
    atomic on one file system, leaves readers either no entry or a whole one. The cache with eviction
    enabled locks instead, but scans the whole folder on every write, which is far slower here.
    """
    import os

    from jax._src import lru_cache

    if getattr(lru_cache.LRUCache.put, "atomic", False):
        return
    original = lru_cache.LRUCache.put

    def put(self, key: str, value: bytes) -> None:
        if not key or self.eviction_enabled:
            return original(self, key, value)
        path = os.fspath(self.path / f"{key}{lru_cache._CACHE_SUFFIX}")
        if os.path.exists(path):
            return
        temporary = f"{path}.{os.getpid()}.partial"
        with open(temporary, "wb") as f:
            f.write(value)
        os.replace(temporary, path)

    put.atomic = True
    lru_cache.LRUCache.put = put
