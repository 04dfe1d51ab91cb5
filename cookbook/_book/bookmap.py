"""The map of the book: which recipe builds on which, read from the import statements of the modules.

A recipe *builds on* another when its code imports it: ``from cookbook.a.b import f``,
``import cookbook.a.b``, ``from cookbook.a import b`` where ``b`` is a module, relative imports, and
imports inside functions alike. Nobody keeps this list by hand; it is read with :mod:`ast` (nothing
is imported to read it). A private helper module (``cookbook/<chapter>/_helper.py``) is no page of
its own, so it is followed through: a recipe that imports a helper builds on every recipe that the
helper imports. A name imported from a chapter package (``from cookbook.transformers import X``) is
followed to the module that the package took ``X`` from. The book's machinery (``cookbook._memo``,
``cookbook._extras``, ``cookbook._book`` and every other private module at the top of the package)
is no recipe and leads to none, and a recipe never builds on itself.

The graph gives every recipe page a *Connections* section (:func:`connection_lines`, added by the
page assembler) and draws the whole book on one page (:func:`map_html`, written when the build
starts).
"""

from __future__ import annotations

import ast
import functools
import html
import importlib.util
import math
import re
from dataclasses import dataclass
from pathlib import Path

from cookbook._book.catalogue import ROOT_PACKAGE, all_recipes, chapters

#: The heading of the section that :func:`connection_lines` adds to a recipe page.
CONNECTIONS = "Connections"
#: Where the stub pages live, as Sphinx names documents (see :mod:`~cookbook._book.stubs`).
CHAPTERS_DOCDIR = "docs/chapters"
#: The map's own page.
MAP_DOCNAME = "docs/map"


# -- Reading the imports -------------------------------------------------------------------------

@dataclass(frozen=True)
class _Module:
    """What one module imports: every reference, and the names its top level binds by importing.

    A reference is ``(module, name)``: ``name`` is the attribute taken from ``module``, or None when
    the module itself is used.
    """

    references: tuple[tuple[str, str | None], ...]
    bindings: dict[str, tuple[str, str | None]]
    title: str


def _module_path(name: str, root_dir: Path) -> Path | None:
    """The file of book module ``name`` (``root.a.b``) under the package folder ``root_dir``."""
    parts = name.split(".")[1:]
    base = root_dir.joinpath(*parts)
    for candidate in (base.with_suffix(".py") if parts else None, base / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _statements(body: list, top: bool = True):
    """Every statement in ``body`` and in the blocks below it (imports are statements, so only these
    need reading), each with whether it runs when the module is imported: not inside a function or
    a class."""
    for node in body:
        yield node, top
        inner = top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            for child in getattr(node, field, ()):
                if isinstance(child, ast.stmt):
                    yield from _statements([child], inner)
                else:  # an except clause or a match case, whose statements are its body
                    yield from _statements(child.body, inner)


class _Reader:
    """Reads the book's modules under ``root_dir`` (the package ``root``) once each, on demand."""

    def __init__(self, root: str, root_dir: Path):
        self.root, self.root_dir = root, root_dir
        self._modules: dict[str, _Module | None] = {}

    def exists(self, name: str) -> bool:
        return _module_path(name, self.root_dir) is not None

    def _is_book(self, name: str | None) -> bool:
        return name is not None and name.split(".")[0] == self.root

    def _absolute(self, node: ast.ImportFrom, name: str, is_package: bool) -> str | None:
        if not node.level:
            return node.module
        parts = name.split(".")
        base = parts if is_package else parts[:-1]
        base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
        if not base:
            return None
        return ".".join(base + ([node.module] if node.module else []))

    def module(self, name: str) -> _Module | None:
        if name not in self._modules:
            self._modules[name] = self._read(name)
        return self._modules[name]

    def _read(self, name: str) -> _Module | None:
        path = _module_path(name, self.root_dir)
        if path is None:
            return None
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        references, bindings = [], {}
        for node, top in _statements(tree.body):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if self._is_book(alias.name):
                        references.append((alias.name, None))
                        if alias.asname and top:
                            bindings[alias.asname] = (alias.name, None)
            elif isinstance(node, ast.ImportFrom):
                source = self._absolute(node, name, is_package)
                if not self._is_book(source):
                    continue
                for alias in node.names:
                    if alias.name == "*":
                        ref = (source, None)
                    elif self.exists(f"{source}.{alias.name}"):
                        ref = (f"{source}.{alias.name}", None)
                    else:
                        ref = (source, alias.name)
                    references.append(ref)
                    if alias.name != "*" and top:
                        bindings[alias.asname or alias.name] = ref
        doc = (ast.get_docstring(tree) or "").strip()
        return _Module(tuple(references), bindings, doc.splitlines()[0].strip() if doc else name.rsplit(".", 1)[-1])


def _is_machinery(name: str) -> bool:
    """``root._anything`` and all below it: the book's machinery, never a recipe."""
    parts = name.split(".")
    return len(parts) > 1 and parts[1].startswith("_")


def _reach(reader: _Reader, recipes: frozenset[str], module: str, name: str | None, seen: set) -> set[str]:
    """The recipes that using ``name`` of ``module`` (or the whole module) leads to."""
    if _is_machinery(module):
        return set()
    if module in recipes:
        return {module}
    if (module, name) in seen:
        return set()
    seen.add((module, name))
    info = reader.module(module)
    if info is None:
        return set()
    if name is not None and name in info.bindings:  # a re-exported name: follow it to its origin
        return _reach(reader, recipes, *info.bindings[name], seen)
    found = set()
    for ref in info.references:  # a helper or a package used as a whole: everything it imports
        found |= _reach(reader, recipes, *ref, seen)
    return found


def _root_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        raise ValueError(f"expected an importable package name, got {package!r}")
    return Path(spec.origin).parent


def _stamp(package: str) -> tuple:
    """The modification times of every file of ``package``: the graph is read again when one changes."""
    return tuple(sorted((str(p), p.stat().st_mtime_ns) for p in _root_dir(package).rglob("*.py")))


@functools.lru_cache(maxsize=8)
def _read_book(package: str, stamp: tuple) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """The graph, and the title of every chapter and recipe (the first line of its docstring)."""
    names = all_recipes(package)
    order = {r: k for k, r in enumerate(names)}
    recipes = frozenset(names)
    reader = _Reader(package, _root_dir(package))
    graph = {}
    for recipe in names:
        found = set()
        for ref in reader.module(recipe).references:
            found |= _reach(reader, recipes, *ref, set())
        found.discard(recipe)
        graph[recipe] = tuple(sorted(found, key=order.get))
    titles = {name: reader.module(name).title for name in names + [f"{package}.{c}" for c in chapters(package)]}
    return graph, titles


def builds_on(package: str = ROOT_PACKAGE) -> dict[str, tuple[str, ...]]:
    """Every recipe of ``package`` (in reading order) and the recipes it builds on (in reading order)."""
    return dict(_read_book(package, _stamp(package))[0])


def built_on_by(graph: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """The same graph turned round: every recipe and the recipes that build on it, in reading order."""
    users = {r: [] for r in graph}
    for recipe, bases in graph.items():  # graph is in reading order, so each list is too
        for base in bases:
            users[base].append(recipe)
    return {r: tuple(u) for r, u in users.items()}


# -- The section on each recipe page -------------------------------------------------------------

def docname(recipe: str) -> str:
    """The Sphinx document of a recipe's page: ``root.chapter.recipe`` -> ``docs/chapters/chapter/recipe``."""
    return "/".join([CHAPTERS_DOCDIR, *recipe.split(".")[1:]])


def _module_name(module_file: Path) -> tuple[str, str] | None:
    """The package and the dotted name of a module file, read from the ``__init__.py`` files above it."""
    path = Path(module_file).resolve()
    parts, folder = [path.stem], path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    return (parts[0], ".".join(parts)) if len(parts) > 1 else None


def short_title(title: str) -> str:
    """A recipe's title up to its colon, if it has one: "Muon: momentum orthogonalised..." -> "Muon"."""
    return title.split(":")[0].strip() if ":" in title else title


def _links(recipes, titles: dict[str, str]) -> str:
    def escaped(text):
        return re.sub(r"([\\`<>])", r"\\\1", text)

    links = [f":doc:`{escaped(short_title(titles[r]))} </{docname(r)}>`" for r in recipes]
    return links[0] if len(links) == 1 else ", ".join(links[:-1]) + " and " + links[-1]


def section_lines(bases: tuple[str, ...], users: tuple[str, ...], titles: dict[str, str]) -> list[str]:
    """The reStructuredText of a page's Connections section, each recipe linked under its short
    title (``titles`` holds the full ones); no lines when the page has no connections."""
    if not bases and not users:
        return []
    lines = ["", CONNECTIONS, "-" * len(CONNECTIONS), ""]
    if bases:
        lines += [f"This recipe's code builds on {_links(bases, titles)}.", ""]
    if users:
        lines += [f"The code of {_links(users, titles)} builds on this recipe.", ""]
    lines += [f"The :doc:`map of the book </{MAP_DOCNAME}>` shows every recipe and its connections.", ""]
    return lines


def connection_lines(module_file: Path) -> list[str]:
    """The Connections section of the recipe in ``module_file``, or no lines when it is no recipe of
    a book or has no connections."""
    found = _module_name(module_file)
    if found is None:
        return []
    package, name = found
    graph, titles = _read_book(package, _stamp(package))
    if name not in graph:
        return []
    return section_lines(graph[name], built_on_by(graph)[name], titles)


def connection_table(package: str = ROOT_PACKAGE) -> dict[str, tuple[str, ...]]:
    """Every recipe page's docname and the lines of its Connections section: a page whose lines
    change must be read again even when its own module did not change (``conf.py`` asks)."""
    graph, titles = _read_book(package, _stamp(package))
    users = built_on_by(graph)
    return {docname(r): tuple(section_lines(graph[r], users[r], titles)) for r in graph}


# -- The map page --------------------------------------------------------------------------------

#: The map's geometry, in pixels of the drawing: chapter boxes in COLUMNS columns, in reading order
#: row by row, one recipe a line inside its chapter's box; edges run through the gutters and margin.
COLUMNS, BOX_WIDTH, GUTTER, MARGIN = 3, 232, 48, 44
HEADER, NODE_HEIGHT, NODE_GAP, PAD, ROW_GAP = 30, 20, 5, 8, 24
#: The room for a label, in pixels of 12-pixel text; a longer title is cut (its node clips what
#: a wider font would still push out), and shown whole when pointed at.
LABEL_WIDTH = 200
#: The longest line of a chapter's title; a longer title takes two lines (HEADER_LINE apart).
CHAPTER_CHARS, HEADER_LINE = 27, 16


def _text_width(text: str) -> float:
    """About how wide ``text`` is in a 12-pixel sans-serif font, in pixels (a generous guess)."""
    narrow, wide = set("iljtfrI.,:;'!|()[] -"), set("mwMW")
    return sum(4.5 if c in narrow else 10.5 if c in wide else 8.5 if c.isupper() else 7.0 for c in text)


def _label(title: str) -> str:
    short = short_title(title)
    if _text_width(short) <= LABEL_WIDTH:
        return short
    while _text_width(short + "…") > LABEL_WIDTH:
        short = short[:-1]
    return short.rstrip() + "…"


def _title_lines(title: str) -> tuple[str, ...]:
    """A chapter's title in at most two lines of :data:`CHAPTER_CHARS`, broken between words."""
    lines = [""]
    for word in title.split():
        if lines[-1] and len(lines[-1]) + 1 + len(word) > CHAPTER_CHARS:
            lines.append(word)
        else:
            lines[-1] = f"{lines[-1]} {word}".strip()
    if len(lines) > 2:
        lines = [lines[0], " ".join(lines[1:])]
    if len(lines[-1]) > CHAPTER_CHARS:
        lines[-1] = lines[-1][: CHAPTER_CHARS - 1].rstrip() + "…"
    return tuple(lines)


def _ident(recipe: str) -> str:
    """The id of a recipe's node: ``root.chapter_name.recipe_name`` -> ``bm-chapter-name--recipe-name``."""
    return "bm-" + "--".join(re.sub(r"[^a-z0-9]+", "-", part.lower()) for part in recipe.split(".")[1:])


@dataclass(frozen=True)
class _Box:
    x: float
    y: float
    height: float
    title: tuple[str, ...]  # its lines


def layout(package: str = ROOT_PACKAGE) -> tuple[dict[str, _Box], dict[str, tuple[float, float]], float, float]:
    """Where everything goes: each chapter's box, each recipe node's top-left corner, and the size
    of the drawing. A pure function of the book's chapters and recipes: the same book, the same map."""
    graph, titles = _read_book(package, _stamp(package))
    by_chapter = {c: [r for r in graph if r.split(".")[1] == c] for c in chapters(package)}
    boxes, nodes = {}, {}
    y, names = 0.0, list(by_chapter)
    for start in range(0, len(names), COLUMNS):
        row = names[start : start + COLUMNS]
        lines = {c: _title_lines(titles[f"{package}.{c}"]) for c in row}
        header = {c: HEADER + (len(lines[c]) - 1) * HEADER_LINE for c in row}
        heights = [header[c] + max(len(by_chapter[c]), 1) * (NODE_HEIGHT + NODE_GAP) - NODE_GAP + PAD for c in row]
        for k, chapter in enumerate(row):
            x = MARGIN + k * (BOX_WIDTH + GUTTER)
            boxes[chapter] = _Box(x, y, max(heights), lines[chapter])
            for j, recipe in enumerate(by_chapter[chapter]):
                nodes[recipe] = (x + PAD, y + header[chapter] + j * (NODE_HEIGHT + NODE_GAP))
        y += max(heights) + ROW_GAP
    width = MARGIN + COLUMNS * BOX_WIDTH + (COLUMNS - 1) * GUTTER + PAD
    return boxes, nodes, width, y - ROW_GAP + 1


def _rounded(points: list[tuple[float, float]], radius: float = 8.0) -> str:
    """A path through ``points`` in straight runs, each corner rounded off."""
    out = [f"M{points[0][0]:.1f},{points[0][1]:.1f}"]
    for (ax, ay), (bx, by), (cx, cy) in zip(points, points[1:], points[2:]):
        into, out_of = math.dist((ax, ay), (bx, by)), math.dist((bx, by), (cx, cy))
        r = min(radius, into / 2, out_of / 2)
        if r < 0.5:
            out.append(f"L{bx:.1f},{by:.1f}")
            continue
        p = (bx + (ax - bx) * r / into, by + (ay - by) * r / into)
        q = (bx + (cx - bx) * r / out_of, by + (cy - by) * r / out_of)
        out.append(f"L{p[0]:.1f},{p[1]:.1f} Q{bx:.1f},{by:.1f} {q[0]:.1f},{q[1]:.1f}")
    out.append(f"L{points[-1][0]:.1f},{points[-1][1]:.1f}")
    return " ".join(out)


def _edge_path(user: tuple[float, float], base: tuple[float, float], base_box: _Box, lane: int) -> str:
    """The line from a recipe's node to the node of a recipe it builds on.

    Nodes in the same column are joined by an arc out into the gutter on their left, wider the
    farther apart they are. Otherwise the line leaves the side of the node that faces the other
    column, runs up or down the gutter next to it (in one of a few ``lane``s, so that lines to
    different recipes stay apart) and enters the other node from the side; a line that must pass a
    column in between crosses it in the gap between the rows of boxes, next to the base's box.
    """
    node_width = BOX_WIDTH - 2 * PAD
    (ux, uy), (bx, by) = user, base
    uy, by = uy + NODE_HEIGHT / 2, by + NODE_HEIGHT / 2
    if ux == bx:
        bulge = PAD + 6 + min(GUTTER - 14, abs(by - uy) * 0.05)
        c = ux - bulge * 4 / 3  # a cubic's apex lies 3/4 of the way to its control points
        return f"M{ux:.1f},{uy:.1f} C{c:.1f},{uy:.1f} {c:.1f},{by:.1f} {bx:.1f},{by:.1f}"
    step = 1 if bx > ux else -1
    start = ux + node_width if step > 0 else ux
    end = bx if step > 0 else bx + node_width
    offset = 4 * lane
    near_user = start + step * (PAD + GUTTER / 2) + offset  # the middle of the gutter beside the user
    near_base = end - step * (PAD + GUTTER / 2) + offset
    if abs(near_user - near_base) < GUTTER:  # neighbouring columns share one gutter
        return _rounded([(start, uy), (near_user, uy), (near_user, by), (end, by)])
    top = base_box.y - ROW_GAP / 2
    crossing = top if top > 0 else base_box.y + base_box.height + ROW_GAP / 2
    return _rounded([(start, uy), (near_user, uy), (near_user, crossing), (near_base, crossing),
                     (near_base, by), (end, by)])


_STYLE = """
.bd-main .bd-content .bd-article-container:has(.bookmap) { max-width: 100%; }  /* the map takes the empty margin too */
.bd-main .bd-content .bd-article-container:has(.bookmap) article p { max-width: 45em; }  /* but the prose keeps its width */
.bookmap { overflow-x: auto; margin: 1rem 0; }
.bookmap svg { display: block; margin: 0 auto; width: 100%; min-width: 40rem; height: auto; font-family: var(--pst-font-family-base); }
.bookmap .bm-chapter rect { fill: var(--pst-color-on-background); stroke: var(--pst-color-border); }
.bookmap .bm-chapter text { fill: var(--pst-color-text-base); font-weight: 600; font-size: 13px; }
.bookmap .bm-chapter a:hover text, .bookmap .bm-chapter a:focus text { fill: var(--pst-color-link-hover); text-decoration: underline; }
.bookmap .bm-edge { fill: none; stroke: var(--pst-color-text-muted); stroke-width: 1; opacity: 0.45; }
.bookmap .bm-node rect { fill: var(--pst-color-surface); stroke: var(--pst-color-border); }
.bookmap .bm-node text { fill: var(--pst-color-text-base); font-size: 12px; }
.bookmap a { text-decoration: none; }
.bookmap .bm-node:hover text, .bookmap .bm-node:focus text { text-decoration: underline; }
.bookmap .bm-node.bm-alone text { fill: var(--pst-color-text-muted); }
.bookmap .bm-node:hover rect, .bookmap .bm-node:focus rect, .bookmap .bm-node.bm-self rect { stroke: var(--pst-color-text-base); stroke-width: 2; }
.bookmap .bm-active .bm-edge { opacity: 0.08; }
.bookmap .bm-active .bm-edge.bm-base { stroke: var(--pst-color-primary); stroke-width: 2; opacity: 1; }
.bookmap .bm-active .bm-edge.bm-user { stroke: var(--pst-color-secondary); stroke-width: 2; opacity: 1; }
.bookmap .bm-node.bm-base rect { fill: color-mix(in srgb, var(--pst-color-primary) 18%, var(--pst-color-surface)); stroke: var(--pst-color-primary); }
.bookmap .bm-node.bm-user rect { fill: color-mix(in srgb, var(--pst-color-secondary) 18%, var(--pst-color-surface)); stroke: var(--pst-color-secondary); }
.bookmap-legend .bm-swatch { display: inline-block; width: 1.6em; height: 0.25em; vertical-align: middle; margin: 0 0.3em; }
.bookmap-legend .bm-swatch.bm-base { background: var(--pst-color-primary); }
.bookmap-legend .bm-swatch.bm-user { background: var(--pst-color-secondary); }
"""

# Pointing at a recipe (or moving the keyboard's focus onto it) marks the edges and the nodes of the
# recipes it builds on and of those that build on it; without JavaScript the map is the same, unmarked.
_SCRIPT = """
(function () {
  const svg = document.currentScript.previousElementSibling.querySelector("svg");
  const marked = () => svg.querySelectorAll(".bm-base, .bm-user, .bm-self");
  function show(node) {
    svg.classList.add("bm-active");
    node.classList.add("bm-self");
    for (const edge of svg.querySelectorAll(".bm-edge")) {
      const other = edge.dataset.user === node.id ? edge.dataset.base
                  : edge.dataset.base === node.id ? edge.dataset.user : null;
      if (other === null) continue;
      const kind = edge.dataset.user === node.id ? "bm-base" : "bm-user";
      edge.classList.add(kind);
      edge.parentNode.appendChild(edge);  // drawn over the other lines (still under the nodes)
      svg.getElementById(other).classList.add(kind);
    }
  }
  function hide() {
    svg.classList.remove("bm-active");
    for (const el of marked()) el.classList.remove("bm-base", "bm-user", "bm-self");
  }
  for (const node of svg.querySelectorAll(".bm-node")) {
    node.addEventListener("mouseenter", () => { hide(); show(node); });
    node.addEventListener("focus", () => { hide(); show(node); });
    node.addEventListener("mouseleave", hide);
    node.addEventListener("blur", hide);
  }
})();
"""


def _relative_href(doc: str) -> str:
    """The address of document ``doc`` from the map's page, in the HTML build."""
    base = MAP_DOCNAME.rsplit("/", 1)[0] + "/"
    return (doc[len(base):] if doc.startswith(base) else "../" * MAP_DOCNAME.count("/") + doc) + ".html"


def map_html(package: str = ROOT_PACKAGE) -> str:
    """The map of the book as HTML to paste into its page: a legend, an SVG drawing and a small
    script, with nothing to fetch from anywhere."""
    graph = builds_on(package)
    users = built_on_by(graph)
    boxes, nodes, width, height = layout(package)
    titles = _read_book(package, _stamp(package))[1]
    out = [f"<style>{_STYLE}</style>",
           '<p class="bookmap-legend">Each box is a chapter and each line in it a recipe, linked to its page; '
           'a line joins a recipe to each recipe it builds on. Point at a recipe to see the recipes it builds on'
           '<span class="bm-swatch bm-base"></span>and those that build on it<span class="bm-swatch bm-user"></span>.</p>',
           '<div class="bookmap">',
           f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
           f'width="{width:.0f}" height="{height:.0f}" style="max-width: {width:.0f}px" role="group" aria-label="Map of the book: '
           f'{len(graph)} recipes in {len(boxes)} chapters, {sum(map(len, graph.values()))} connections">']
    for chapter, box in boxes.items():
        doc = f"{CHAPTERS_DOCDIR}/{chapter}/index"
        lines = "".join(f'<tspan x="{box.x + PAD:.0f}" y="{box.y + HEADER - 10 + k * HEADER_LINE:.0f}">{html.escape(line)}</tspan>'
                        for k, line in enumerate(box.title))
        out.append(f'<g class="bm-chapter"><rect x="{box.x:.0f}" y="{box.y:.0f}" width="{BOX_WIDTH}" '
                   f'height="{box.height:.0f}" rx="6"/><a href="{html.escape(_relative_href(doc))}">'
                   f'<title>{html.escape(titles[f"{package}.{chapter}"])}</title><text>{lines}</text></a></g>')
    lanes = {recipe: k % 5 - 2 for k, recipe in enumerate(graph)}
    out.append('<g class="bm-edges">')
    for user, bases in graph.items():
        for base in bases:
            out.append(f'<path class="bm-edge" data-user="{_ident(user)}" data-base="{_ident(base)}" '
                       f'd="{_edge_path(nodes[user], nodes[base], boxes[base.split(".")[1]], lanes[base])}"/>')
    out.append("</g>")
    for recipe, (x, y) in nodes.items():
        title = titles[recipe]
        alone = "" if graph[recipe] or users[recipe] else " bm-alone"
        count = f"builds on {len(graph[recipe])}, built on by {len(users[recipe])}"
        out.append(f'<a class="bm-node{alone}" id="{_ident(recipe)}" href="{html.escape(_relative_href(docname(recipe)))}" '
                   f'aria-label="{html.escape(title)} ({count})"><title>{html.escape(title)} ({count})</title>'
                   f'<svg x="{x:.0f}" y="{y:.0f}" width="{BOX_WIDTH - 2 * PAD}" height="{NODE_HEIGHT}">'
                   f'<rect x="0.5" y="0.5" width="{BOX_WIDTH - 2 * PAD - 1}" height="{NODE_HEIGHT - 1}" rx="4"/>'
                   f'<text x="6" y="{NODE_HEIGHT - 6}">{html.escape(_label(title))}</text></svg></a>')
    out += ["</svg>", "</div>", f"<script>{_SCRIPT}</script>", ""]
    return "\n".join(out)


def write_map(path: Path, package: str = ROOT_PACKAGE) -> bool:
    """Write the map's HTML to ``path`` if it changed (so that Sphinx reads its page again only then);
    say whether it did."""
    text = map_html(package)
    path = Path(path)
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True
