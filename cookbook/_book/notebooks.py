"""Notebooks: every recipe page as a Jupyter notebook, written at build time beside its stub.

:func:`recipe_notebook` turns a recipe module into an ``nbformat`` v4 notebook in the page's order:
a note on what the notebook needs and a set-up cell, then the title and the prose sections as
markdown cells, each ``.. plot::`` figure as a code cell that draws it, the module's code (what the
page's *Code* section shows) as one code cell before the *Example*, each ``>>>`` session of the page
as a code cell (prompts stripped; the expected output is kept in the cell's metadata, under
``cookbook.expected_output``, for the tests), the *Implementation notes*, the *Connections* to other
recipes (:mod:`~cookbook._book.bookmap`), and the references.

The docstring is parsed by docutils into a document tree, and the tree is written as Jupyter
markdown: ``:math:`` becomes ``$...$``, ``.. math::`` becomes ``$$...$$`` (several equations in
one ``aligned`` block, a row break in a ``split`` block, as Sphinx's MathJax output does), a
``list-table`` becomes a markdown table, an admonition a block quote, ``:footcite:`` an author-year
citation with a reference list at the end (from ``docs/references.bib``, read with pybtex), ``:doc:``
the linked page's title (a link where the build knows the book's address) and ``:func:`` code.
Only the directives, roles and document nodes named here are known: anything else raises
:class:`NotebookError` with the module and the line, so that a construct never vanishes in silence.

:func:`notebook_download` writes the notebook of a page under ``docs/chapters/`` (only when its text
changed, so that a build stays incremental) and returns the page's ``:download:`` line; the page
assembler (:func:`~cookbook._book.assemble.recipe_page_lines`) calls it. Nothing here imports Sphinx
or JAX.
"""

from __future__ import annotations

import ast
import doctest
import os
import re
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from cookbook._book.bookmap import connection_lines
from cookbook._book.page import _headings, code_start_line

ROOT = Path(__file__).resolve().parents[2]
BIBLIOGRAPHY = ROOT / "docs" / "references.bib"
#: The key of the book's own metadata in a notebook, and in each of its cells.
METADATA_KEY = "cookbook"
#: Where a notebook sits, relative to the book's source folder: beside the stubs.
NOTEBOOK_FOLDER = Path("docs") / "chapters"
#: The Jupyter kernel a notebook names; any Python 3.11 kernel with the package installed runs it.
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}

#: What every notebook needs, before its first cell runs (``{title}`` is the page's title, a link to
#: the page where the build knows the book's address).
NOTE = """\
This notebook is the page {title} of the Deep Learning Cookbook, made from the module \
`{module}`: the page's prose, its figures' code, the module's code and the page's examples, in the \
page's order.

It needs the `cookbook` package and its dependencies. From a clone of the repository, `make html` \
installs them into `.venv` (the repository's README says how); `pip install .` installs the package \
alone, with JAX, and `pip install '.[data]'` adds what the recipes that train on scikit-learn's data \
sets need. The cells that draw figures need matplotlib. Run the cells in order in a fresh kernel: \
the set-up cell below configures JAX before it starts."""

#: The set-up that every page's examples assume (``cookbook._book.runtime.doctest_setup``), written
#: out so that a reader sees it.
SETUP = """\
# The set-up under which the book runs every example (cookbook/_book/runtime.py).
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the printed outputs were computed on the CPU

import jax
import matplotlib.pyplot as plt
import numpy as np

# Eight simulated CPU devices, for the parallelism chapter; one-device programs run as before.
# JAX reads this once, when it starts: run this cell first, in a fresh kernel.
jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_numpy_rank_promotion", "raise")  # no silent broadcasting between ranks
np.set_printoptions(precision=4, suppress=True)

# Show the value of every expression in a cell, as the page's examples print each one.
from IPython import get_ipython

if get_ipython() is not None:
    get_ipython().ast_node_interactivity = "all\""""


class NotebookError(ValueError):
    """A recipe's docstring holds a construct that the notebook writer does not know."""


# --------------------------------------------------------------------------------------------
# Citations
# --------------------------------------------------------------------------------------------

@lru_cache(maxsize=4)
def _bibliography(path: Path, mtime: float):
    from pybtex.database import parse_file

    return parse_file(str(path))


def _entries(bib: Path):
    return _bibliography(bib, bib.stat().st_mtime).entries


@lru_cache(maxsize=None)
def _plain(latex: str) -> str:
    from pybtex.backends.plaintext import Backend
    from pybtex.richtext import Text

    return Text.from_latex(latex).render(Backend())


def _authors(entry) -> str:
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_plain(" ".join(p.prelast_names + p.last_names)) for p in people]
    if not names:
        return _plain(entry.fields.get("title", entry.key))
    if len(names) == 1:
        return names[0]
    if len(names) == 2:
        return f"{names[0]} and {names[1]}"
    return f"{names[0]} et al."


def _year(entry) -> str:
    return entry.fields.get("year", "n.d.")


def _cite(keys: list[str], textual: bool, bib: Path) -> str:
    """An author-year citation of ``keys``: "Vaswani et al. (2017)" or "(Vaswani et al., 2017)"."""
    entries = _entries(bib)
    missing = [k for k in keys if k not in entries]
    if missing:
        raise NotebookError(f"cites {missing}, which {bib.name} does not hold")
    if textual:
        return ", ".join(f"{_authors(entries[k])} ({_year(entries[k])})" for k in keys)
    return "(" + "; ".join(f"{_authors(entries[k])}, {_year(entries[k])}" for k in keys) + ")"


@lru_cache(maxsize=1)
def _style():
    from pybtex.style.formatting.plain import Style

    return Style()


def _reference_list(keys: list[str], bib: Path) -> str:
    """The works cited, formatted by pybtex's plain style, as a markdown list."""
    from pybtex.backends.markdown import Backend

    entries, backend = _entries(bib), Backend()
    formatted = _style().format_entries([entries[k] for k in dict.fromkeys(keys)])
    return "\n".join("- " + " ".join(e.text.render(backend).split()) for e in formatted)


# --------------------------------------------------------------------------------------------
# Parsing a docstring with docutils, with the book's directives and roles only
# --------------------------------------------------------------------------------------------

def _docutils():
    from docutils import nodes
    from docutils.parsers.rst import Directive, directives, roles

    return nodes, Directive, directives, roles


def _node_classes():
    """The document nodes that the book's own directives and roles make."""
    nodes = _docutils()[0]

    class plot(nodes.Element):  # noqa: N801 (docutils names nodes in lower case)
        """A figure's code."""

    class display_math(nodes.Element):  # noqa: N801
        """A ``.. math::`` block, whole (docutils would split it at blank lines)."""

    return plot, display_math


_PLOT, _DISPLAY_MATH = None, None


def _directive_table():
    global _PLOT, _DISPLAY_MATH
    nodes, Directive, directives, _ = _docutils()
    from docutils.parsers.rst.directives import admonitions, body, tables

    if _PLOT is None:
        _PLOT, _DISPLAY_MATH = _node_classes()
    plot_node, math_node = _PLOT, _DISPLAY_MATH

    class Plot(Directive):
        has_content = True
        optional_arguments = 1
        option_spec = {name: directives.unchanged for name in (
            "caption", "alt", "align", "width", "height", "scale", "class", "format", "include-source",
            "show-source-link", "nofigs", "context")}

        def run(self):
            if self.arguments or not self.content:
                raise self.error("a plot directive without code (a script file) cannot become a notebook cell")
            node = plot_node(code="\n".join(self.content).strip("\n"), caption=self.options.get("caption", ""))
            node.line = self.lineno
            return [node]

    class Math(Directive):
        has_content = True
        option_spec = {"label": directives.unchanged, "name": directives.unchanged,
                       "class": directives.unchanged, "nowrap": directives.flag}

        def run(self):
            node = math_node(latex="\n".join(self.content), nowrap="nowrap" in self.options)
            node.line = self.lineno
            return [node]

    table = {"math": Math, "plot": Plot, "list-table": tables.ListTable, "admonition": admonitions.Admonition,
             "code-block": body.CodeBlock, "code": body.CodeBlock, "sourcecode": body.CodeBlock}
    for name in ("attention", "caution", "danger", "error", "hint", "important", "note", "tip", "warning"):
        table[name] = getattr(admonitions, name.capitalize())
    return table


def _role_table(context: dict):
    """The book's roles. Docutils hands a role its text with backslashes marked (as null bytes):
    mathematics keeps them, every other role drops them, as Sphinx's roles do."""
    from docutils.utils import unescape

    nodes = _docutils()[0]

    def target_and_title(text):
        m = re.fullmatch(r"\s*(.*?)\s*<([^<>]+)>\s*", text, re.S)
        return (m.group(2), m.group(1)) if m else (text.strip(), None)

    def math(name, rawtext, text, lineno, inliner, options=None, content=None):
        return [nodes.math(rawtext, unescape(text, True))], []

    def code_name(name, rawtext, text, lineno, inliner, options=None, content=None):
        target, title = target_and_title(unescape(text))
        if title is None:
            target = target.lstrip("!")
            title = target.lstrip("~").rsplit(".", 1)[-1] if target.startswith("~") else target
            if name in ("func", "meth", "py:func", "py:meth") and not title.endswith(")"):
                title += "()"
        return [nodes.literal(rawtext, title)], []

    def doc(name, rawtext, text, lineno, inliner, options=None, content=None):
        target, title = target_and_title(unescape(text))
        docname = _resolve_doc(target, context["docname"])
        path = context["srcdir"] / f"{docname}.rst"
        page_title = title or _doc_title(docname, context["srcdir"])
        if page_title is None:
            msg = inliner.reporter.error(f":doc: names {target!r}, which is no page of the book ({path} is missing)",
                                         line=lineno)
            return [inliner.problematic(rawtext, rawtext, msg)], [msg]
        base = context.get("base_url")
        if base:
            return [nodes.reference(rawtext, page_title, refuri=f"{base.rstrip('/')}/{docname}.html")], []
        return [nodes.emphasis(rawtext, page_title)], []

    def footcite(name, rawtext, text, lineno, inliner, options=None, content=None):
        keys = [k.strip() for k in unescape(text).split(",") if k.strip()]
        try:
            words = _cite(keys, name.endswith(":t"), context["bib"])
        except NotebookError as error:
            msg = inliner.reporter.error(str(error), line=lineno)
            return [inliner.problematic(rawtext, rawtext, msg)], [msg]
        context["cited"].extend(keys)
        return [nodes.Text(words)], []

    def title_reference(name, rawtext, text, lineno, inliner, options=None, content=None):
        return [nodes.emphasis(rawtext, unescape(text))], []

    table = {"math": math, "doc": doc, "footcite": footcite, "footcite:t": footcite, "footcite:p": footcite,
             "": title_reference, "title-reference": title_reference, "emphasis": title_reference}
    for name in ("func", "meth", "class", "mod", "data", "attr", "obj", "exc", "const"):
        table[name] = table[f"py:{name}"] = code_name
    return table


def _resolve_doc(target: str, docname: str) -> str:
    if target.startswith("/"):
        return target.lstrip("/").removesuffix(".rst")
    parts = docname.split("/")[:-1]
    for piece in target.removesuffix(".rst").split("/"):
        if piece == "..":
            parts = parts[:-1]
        elif piece not in ("", "."):
            parts.append(piece)
    return "/".join(parts)


def _doc_title(docname: str, srcdir: Path) -> str | None:
    """The title of a page of the book: a recipe's or chapter's docstring title, or an .rst file's."""
    parts = docname.split("/")
    source = None
    if parts[:2] == ["docs", "chapters"] and len(parts) == 4:
        folder = srcdir / "cookbook" / parts[2]
        source = folder / ("__init__.py" if parts[3] == "index" else f"{parts[3]}.py")
        text = ast.get_docstring(ast.parse(source.read_text())) if source.is_file() else None
    else:
        path = srcdir / f"{docname}.rst"
        text = path.read_text() if path.is_file() else None
    if not text:
        return None
    lines = text.splitlines()
    for i in range(len(lines) - 1):
        if lines[i].strip() and re.fullmatch(r"([=#*~-])\1+", lines[i + 1].strip() or "x"):
            return lines[i].strip()
    return None


@contextmanager
def _book_markup(context: dict):
    """Docutils' directive and role look-ups replaced by the book's tables, for one parse.

    Sphinx replaces the same two functions while it reads a page (to look up its domains' roles), and
    this runs inside that reading; both are restored afterwards, whoever set them.
    """
    nodes, _, directives, roles = _docutils()
    known_directives, known_roles = _directive_table(), _role_table(context)

    def directive(name, language, document):
        found = known_directives.get(name.lower())
        if found is None:
            return None, [document.reporter.error(
                f"unknown directive {name!r}: the notebook writer knows {sorted(known_directives)}")]
        return found, []

    def role(name, language, lineno, reporter):
        found = known_roles.get(name.lower())
        if found is None:
            return None, [reporter.error(
                f"unknown role {name!r}: the notebook writer knows {sorted(k for k in known_roles if k)}",
                line=lineno)]
        return found, []

    saved = directives.directive, roles.role
    directives.directive, roles.role = directive, role
    try:
        yield
    finally:
        directives.directive, roles.role = saved


def _parse(docstring: str, context: dict):
    """The docutils document tree of ``docstring``; every warning or error raises NotebookError."""
    import io

    from docutils.frontend import get_default_settings
    from docutils.parsers.rst import Parser
    from docutils.utils import new_document

    parser = Parser()
    settings = get_default_settings(Parser)
    for key, value in {"doctitle_xform": False, "sectsubtitle_xform": False, "file_insertion_enabled": False,
                       "raw_enabled": False, "report_level": 5, "halt_level": 5, "warning_stream": io.StringIO(),
                       "syntax_highlight": "none"}.items():
        setattr(settings, key, value)
    document = new_document(context["module"], settings)
    problems = []
    document.reporter.attach_observer(lambda msg: problems.append(msg) if msg["level"] >= 2 else None)
    with _book_markup(context):
        parser.parse(docstring, document)
    if problems:
        lines = [f"line {p.get('line', '?')}: {p.astext()}" for p in problems]
        raise NotebookError(f"{context['module']}: the docstring cannot become a notebook:\n  " + "\n  ".join(lines))
    return document


# --------------------------------------------------------------------------------------------
# Writing the tree as markdown and cells
# --------------------------------------------------------------------------------------------

_ESCAPE = re.compile(r"([\\`*_\[\]<>$|])")


def _escape(text: str) -> str:
    return _ESCAPE.sub(r"\\\1", text)


def _code_span(text: str) -> str:
    text = " ".join(text.split("\n"))
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _display_math(latex: str, nowrap: bool) -> str:
    """A ``.. math::`` block as MathJax reads it in Jupyter, as Sphinx's MathJax output writes it."""
    parts = [p.strip("\n") for p in latex.split("\n\n") if p.strip()]
    if nowrap:
        body = [latex.strip()]
    else:
        body = []
        for part in parts:
            part = "\n".join(line.strip() for line in part.splitlines())
            body.append(rf"\begin{{split}}{part}\end{{split}}" if r"\\" in part else part)
        if len(body) > 1:
            body = [r"\begin{aligned}" + " \\\\\n".join(body) + r"\end{aligned}"]
    return "$$\n" + "\n".join(body) + "\n$$"


class _Writer:
    """Walks a docutils tree and collects notebook cells in order."""

    def __init__(self, context: dict):
        self.context = context
        self.cells: list[tuple[str, str, dict]] = []  # (kind, source, metadata)
        self.markdown: list[str] = []

    # -- cells --------------------------------------------------------------------------------
    def flush(self):
        text = "\n\n".join(b for b in self.markdown if b.strip())
        if text.strip():
            self.cells.append(("markdown", text, {}))
        self.markdown = []

    def code(self, source: str, role: str, **extra):
        self.flush()
        self.cells.append(("code", source, {"role": role, **extra}))

    # -- errors -------------------------------------------------------------------------------
    def unknown(self, node):
        line = node.line or getattr(node.parent, "line", None) or "?"
        raise NotebookError(
            f"{self.context['module']}, line {line} of its docstring: the notebook writer cannot convert a "
            f"{node.tagname!r} node ({node.astext()[:60]!r}); teach cookbook/_book/notebooks.py to write it")

    # -- inline -------------------------------------------------------------------------------
    def inline(self, node, *, in_table: bool = False) -> str:
        nodes = _docutils()[0]
        out = []
        for child in node.children:
            if isinstance(child, nodes.Text):
                out.append(_escape(str(child).replace("\n", " ")))
            elif isinstance(child, nodes.emphasis):
                out.append(f"*{self.inline(child, in_table=in_table)}*")
            elif isinstance(child, nodes.strong):
                out.append(f"**{self.inline(child, in_table=in_table)}**")
            elif isinstance(child, nodes.literal):
                text = _code_span(child.astext())
                out.append(text.replace("|", r"\|") if in_table else text)
            elif isinstance(child, nodes.math):
                latex = " ".join(child.astext().split())
                if in_table:
                    latex = latex.replace(r"\|", r"\Vert ").replace("|", r"\vert ")
                out.append(f"${latex}$")
            elif isinstance(child, nodes.reference) and child.get("refuri"):
                out.append(f"[{self.inline(child, in_table=in_table)}]({child['refuri']})")
            elif isinstance(child, (nodes.inline, nodes.reference)) and not child.get("refid"):
                out.append(self.inline(child, in_table=in_table))
            elif isinstance(child, (nodes.target,)) and not child.children:
                continue
            else:
                self.unknown(child)
        return "".join(out)

    # -- blocks -------------------------------------------------------------------------------
    def blocks(self, node, *, nested: bool = False, depth: int = 1) -> list[str]:
        """Markdown blocks of ``node``'s children; at the top level (not ``nested``) code cells split
        the markdown, and a section below it is at heading level ``depth``."""
        nodes = _docutils()[0]
        out = []
        for child in node.children:
            if isinstance(child, nodes.section):
                if nested:
                    self.unknown(child)
                self.markdown.extend(out)
                out = []
                self.section(child, depth)
                continue
            if isinstance(child, nodes.title):
                continue
            if isinstance(child, nodes.comment):
                continue  # invisible on the page too
            if not nested and isinstance(child, (_PLOT, nodes.doctest_block)):
                self.markdown.extend(out)
                out = []
                self.code_block(child)
                continue
            out.append(self.block(child))
        if nested:
            return out
        self.markdown.extend(out)
        return []

    def block(self, node) -> str:
        nodes = _docutils()[0]
        if isinstance(node, nodes.paragraph):
            text = self.inline(node)
            return re.sub(r"^(\d+)([.)])(\s)", r"\1\\\2\3", re.sub(r"^([-+#>=])", r"\\\1", text))
        if isinstance(node, _DISPLAY_MATH):
            return _display_math(node["latex"], node["nowrap"])
        if isinstance(node, nodes.math_block):
            return _display_math(node.astext(), False)
        if isinstance(node, (nodes.bullet_list, nodes.enumerated_list)):
            ordered = isinstance(node, nodes.enumerated_list)
            start = node.get("start", 1)
            items = []
            for k, item in enumerate(node.children):
                marker = f"{start + k}. " if ordered else "- "
                body = "\n\n".join(self.blocks(item, nested=True))
                pad = " " * len(marker)
                items.append(marker + body.replace("\n", "\n" + pad).replace("\n" + pad + "\n", "\n\n"))
            return "\n".join(items)
        if isinstance(node, nodes.Admonition):
            title = node.next_node(nodes.title)
            name = title.astext() if title is not None else node.tagname.capitalize()
            body = self.blocks(node, nested=True)
            if node.next_node(_DISPLAY_MATH) is not None or node.next_node(nodes.literal_block) is not None:
                return f"**{_escape(name)}.**\n\n" + "\n\n".join(body)  # a block quote would break them
            text = f"**{_escape(name)}**\n\n" + "\n\n".join(body)
            return "\n".join(("> " + line).rstrip() for line in text.split("\n"))
        if isinstance(node, nodes.block_quote):
            return "\n".join(("> " + line).rstrip() for line in "\n\n".join(self.blocks(node, nested=True)).split("\n"))
        if isinstance(node, nodes.table):
            return self.table(node)
        if isinstance(node, nodes.literal_block):
            text = node.astext()
            fence = "`" * max(3, max((len(m) for m in re.findall(r"`{3,}", text)), default=0) + 1)
            language = next((c for c in node.get("classes", []) if c != "code"), "")
            return f"{fence}{language}\n{text}\n{fence}"
        if isinstance(node, nodes.doctest_block):  # inside a list or an admonition: shown, not run
            return f"```pycon\n{node.astext()}\n```"
        if isinstance(node, _PLOT):
            return f"```python\n{node['code']}\n```"
        self.unknown(node)

    def table(self, node) -> str:
        nodes = _docutils()[0]
        rows = []
        header = 0
        for part in node.findall(lambda n: isinstance(n, (nodes.thead, nodes.tbody))):
            for row in part.children:
                cells = []
                for entry in row.children:
                    pieces = []
                    for child in entry.children:
                        if not isinstance(child, nodes.paragraph):
                            self.unknown(child)
                        pieces.append(self.inline(child, in_table=True))
                    cells.append(" ".join(pieces) or " ")
                rows.append(cells)
            if isinstance(part, nodes.thead):
                header = len(rows)
        if not rows:
            self.unknown(node)
        width = max(len(r) for r in rows)
        rows = [r + [" "] * (width - len(r)) for r in rows]
        if header == 0:
            rows.insert(0, [" "] * width)
            header = 1
        lines = ["| " + " | ".join(r) + " |" for r in rows]
        lines.insert(header, "|" + "|".join(["---"] * width) + "|")
        return "\n".join(lines)

    def code_block(self, node):
        nodes = _docutils()[0]
        if isinstance(node, _PLOT):
            self.code(node["code"], "figure")
            if node["caption"]:
                self.markdown.append(f"*{_escape(node['caption'])}*")
            return
        assert isinstance(node, nodes.doctest_block)
        examples = doctest.DocTestParser().get_examples(node.astext())
        if not examples:
            self.unknown(node)
        source = "".join(e.source for e in examples).rstrip("\n")
        self.code(source, "example", expected_output="".join(e.want for e in examples))

    def section(self, node, depth: int):
        nodes = _docutils()[0]
        title = node.next_node(nodes.title)
        name = title.astext()
        if name == "Example" and depth == 2:
            self.code_section()
        self.flush()
        self.markdown.append("#" * depth + " " + self.inline(title))
        self.blocks(node, depth=depth + 1)
        self.flush()

    def code_section(self):
        """The page's *Code* section, which the page assembler adds before the Example."""
        self.flush()
        module = self.context["module"]
        self.markdown.append(
            f"## Code\n\nThe module `{module}` below its docstring: the code that runs, tests and builds this "
            f"page. Running this cell defines its functions here; the examples import them from the package.")
        self.code(self.context["code"], "code")


def module_code(source: str) -> str:
    """The code of a recipe page's *Code* section: the module's source below its docstring."""
    return "\n".join(source.splitlines()[code_start_line(source) - 1:]).rstrip("\n")


def recipe_notebook(module_file: Path, *, srcdir: Path = ROOT, bib: Path | None = None, base_url: str | None = None):
    """The notebook of the recipe page of ``module_file`` (``cookbook/<chapter>/<recipe>.py``).

    ``srcdir`` is the book's source folder (for ``:doc:`` titles), ``bib`` the BibTeX file
    (``docs/references.bib`` under it by default), ``base_url`` the book's address for ``:doc:``
    links (plain titles without one). Raises :class:`NotebookError` on a construct it cannot write.
    """
    import nbformat
    from nbformat import v4

    module_file, srcdir = Path(module_file), Path(srcdir)
    if module_file.suffix != ".py" or not module_file.is_file():
        raise NotebookError(f"expected the path of a recipe module (cookbook/<chapter>/<recipe>.py); got {module_file}")
    chapter, recipe = module_file.parent.name, module_file.stem
    module = f"{module_file.parent.parent.name}.{chapter}.{recipe}"
    source = module_file.read_text()
    docstring = ast.get_docstring(ast.parse(source), clean=True)
    if not docstring:
        raise NotebookError(f"{module} has no docstring, so no page to make a notebook of")
    # The Connections section that the page assembler adds after the docstring, when there is one.
    docstring += "\n\n" + "\n".join(connection_lines(module_file))
    context = {"module": module, "docname": f"docs/chapters/{chapter}/{recipe}", "srcdir": srcdir,
               "bib": Path(bib) if bib else srcdir / "docs" / "references.bib", "base_url": base_url,
               "cited": [], "code": module_code(source)}
    tree = _parse(docstring, context)
    writer = _Writer(context)
    nodes = _docutils()[0]
    sections = [c for c in tree.children if isinstance(c, nodes.section)]
    if len(sections) != 1 or any(not isinstance(c, (nodes.section, nodes.comment)) for c in tree.children):
        raise NotebookError(f"{module}: expected one title (underlined with '=') over the whole docstring")
    title = sections[0].next_node(nodes.title).astext()
    writer.section(sections[0], 1)
    if "Example" not in _headings(docstring.splitlines()):
        writer.code_section()
    if context["cited"]:
        writer.markdown.append("## References\n\n" + _reference_list(context["cited"], context["bib"]))
        writer.flush()

    nb = v4.new_notebook()
    nb.metadata.update({"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"},
                        METADATA_KEY: {"module": module}})
    page = f"*{_escape(title)}*"
    if base_url:
        page = f"[{_escape(title)}]({base_url.rstrip('/')}/{context['docname']}.html)"
    nb.cells.append(v4.new_markdown_cell(NOTE.format(title=page, module=module), id="note"))
    nb.cells.append(v4.new_code_cell(SETUP, id="setup", metadata={METADATA_KEY: {"role": "setup"}}))
    for k, (kind, text, meta) in enumerate(writer.cells):
        if kind == "markdown":
            nb.cells.append(v4.new_markdown_cell(text, id=f"md-{k}"))
        else:
            nb.cells.append(v4.new_code_cell(text, id=f"{meta['role']}-{k}", metadata={METADATA_KEY: meta}))
    nbformat.validate(nb)
    return nb


def notebook_path(module_file: Path, srcdir: Path) -> Path:
    """Where the notebook of a recipe is written: beside its stub, ``docs/chapters/<chapter>/<recipe>.ipynb``."""
    module_file = Path(module_file)
    return Path(srcdir) / NOTEBOOK_FOLDER / module_file.parent.name / f"{module_file.stem}.ipynb"


def write_notebook(module_file: Path, srcdir: Path) -> Path:
    """Write the notebook of a recipe under ``srcdir``, only if its text changed; return its path."""
    import nbformat

    path = notebook_path(module_file, srcdir)
    text = nbformat.writes(recipe_notebook(module_file, srcdir=srcdir,
                                           base_url=os.environ.get("READTHEDOCS_CANONICAL_URL") or None))
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(text)
        temporary.replace(path)
    return path


def notebook_download(module_file: Path, srcdir: Path) -> list[str]:
    """Write a recipe's notebook (:func:`write_notebook`) and return the reST lines of the page's
    link to it, for the page's *Code* section."""
    path = write_notebook(module_file, srcdir)
    rel = "/" + path.resolve().relative_to(Path(srcdir).resolve()).as_posix()
    return [f"This page is also a Jupyter notebook, whose cells run its figures, its code and its examples: "
            f":download:`Download notebook <{rel}>`.", ""]
