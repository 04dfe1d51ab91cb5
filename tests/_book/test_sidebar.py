"""The navigation sidebar of every built page (cookbook/_book/sidebar.py resolves the table of contents
of most pages by moving the current page's mark in the table that Sphinx resolved for a sibling).

Every page's sidebar must list the whole book in the catalogue's order, each link leading to a built
page; the page itself, where it is in the table of contents, is the one entry marked current and
links to ``#``; exactly the lists, items and toggles that hold it are marked current and open.
"""

import html.parser
import os
import posixpath
import urllib.parse
from pathlib import Path

import pytest

from cookbook import _book
from cookbook._book import sidebar

ROOT = Path(__file__).resolve().parents[2]
HTML = Path(os.environ.get("COOKBOOK_HTML", ROOT / "_build" / "html"))
NAV_START, NAV_END = '<nav class="bd-links bd-docs-nav"', "</nav>"


class _Nav(html.parser.HTMLParser):
    """The sidebar's links, each with its classes and the ``ul``, ``li`` and ``details`` around it."""

    def __init__(self):
        super().__init__()
        self.stack, self.links, self.elements = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        node = {"tag": tag, "classes": (attrs.get("class") or "").split(), "open": "open" in attrs,
                "id": len(self.elements), "parent": self.stack[-1]["id"] if self.stack else None}
        if tag in ("ul", "li", "details"):
            self.stack.append(node)
            self.elements.append(node)
        elif tag == "a":
            self.links.append({"href": attrs.get("href"), "classes": node["classes"], "around": list(self.stack)})

    def handle_endtag(self, tag):
        if tag in ("ul", "li", "details"):
            assert self.stack and self.stack[-1]["tag"] == tag, f"unbalanced </{tag}> in the sidebar"
            self.stack.pop()


def _sidebar(page: Path) -> _Nav | None:
    text = page.read_text(encoding="utf-8")
    start = text.find(NAV_START)
    if start < 0:
        return None
    nav = _Nav()
    nav.feed(text[start:text.index(NAV_END, start)])
    return nav


def _pages():
    if not (HTML / "docs" / "index.html").exists():
        if os.environ.get("COOKBOOK_REQUIRE_BROWSER") == "1":
            raise AssertionError(f"the book is not built in {HTML}")
        pytest.skip(f"the book is not built in {HTML} (run `make html`)")
    return sorted(p.relative_to(HTML).as_posix() for p in (HTML / "docs").rglob("*.html"))


def _target(page: str, href: str) -> str:
    return posixpath.normpath(posixpath.join(posixpath.dirname(page), urllib.parse.urlsplit(href).path))


def test_every_sidebar_lists_the_book_and_marks_its_own_page():
    pages = _pages()
    landing = _sidebar(HTML / "docs" / "index.html")
    book = [_target("docs/index.html", link["href"]) for link in landing.links]
    # The catalogue's chapters and recipes, in its order, are the sidebar's second-level entries.
    chapters = [f"docs/chapters/{c}/index.html" for c in _book.chapters()]
    assert [p for p in book if p in chapters] == chapters
    for chapter in _book.chapters():
        recipes = [f"docs/chapters/{chapter}/{r}.html" for r in _book.recipes(f"{_book.ROOT_PACKAGE}.{chapter}")]
        start = book.index(f"docs/chapters/{chapter}/index.html") + 1
        assert book[start:start + len(recipes)] == recipes, f"the sidebar's {chapter} chapter"
    missing = [p for p in book if not (HTML / p).is_file()]
    assert not missing, f"sidebar links to no built page: {missing}"

    problems, checked = [], 0
    for page in pages:
        nav = _sidebar(HTML / page)
        if nav is None:
            continue
        checked += 1
        targets = [page if link["href"] == "#" else _target(page, link["href"]) for link in nav.links]
        if targets != book:
            problems.append(f"{page}: the sidebar's links differ from the landing page's")
            continue
        current = [link for link in nav.links if "current" in link["classes"]]
        if page in book:
            if len(current) != 1 or current[0]["href"] != "#" or targets[nav.links.index(current[0])] != page:
                problems.append(f"{page}: its own entry is not the one current link to '#': {current}")
                continue
            holding = {node["id"] for node in current[0]["around"]}
        else:
            if current or any(link["href"] == "#" for link in nav.links):
                problems.append(f"{page}: outside the table of contents, yet an entry is marked current")
                continue
            holding = set()
        for node in nav.elements:
            # A list or an item is current where it holds the current entry; a toggle is open where
            # the item it belongs to is current (a chapter's own page opens its list of recipes).
            if node["tag"] == "details":
                marked, expected = node["open"], node["parent"] in holding
            else:
                marked, expected = "current" in node["classes"], node["id"] in holding
            if marked != expected:
                problems.append(f"{page}: a {node['tag']} that is {'' if marked else 'not '}current or open, "
                                f"{'away from' if marked else 'around'} the current entry")
            if node["tag"] == "li" and marked and "active" not in node["classes"]:
                problems.append(f"{page}: a current item not marked active")
    assert checked >= len(book), f"only {checked} pages have a sidebar"
    assert not problems, "\n".join(problems[:20])


def test_moving_the_current_mark():
    resolved = ('<ul class="current"><li class="toctree-l2"><a class="reference internal" href="a.html">A</a></li>\n'
             '<li class="toctree-l2 current"><a class="current reference internal" href="#">B</a></li>\n'
             '<li class="toctree-l2"><a class="reference internal" href="c.html">C</a></li></ul>')
    moved = sidebar.move_current(resolved, "b.html", "c.html")
    assert moved == resolved.replace('<li class="toctree-l2 current"><a class="current reference internal" href="#">B',
                                  '<li class="toctree-l2"><a class="reference internal" href="b.html">B').replace(
        '<li class="toctree-l2"><a class="reference internal" href="c.html">C',
        '<li class="toctree-l2 current"><a class="current reference internal" href="#">C')
    assert sidebar.move_current(moved, "c.html", "b.html") == resolved
    # Whatever is not a single current entry and a single plain link to the new page is left to Sphinx.
    assert sidebar.move_current(resolved, "b.html", "b.html") is None
    assert sidebar.move_current(resolved, "b.html", "d.html") is None
    assert sidebar.move_current(resolved.replace(" current\"><a class=\"current", "\"><a class=\""), "b.html", "c.html") is None
    twice = resolved + resolved.replace("c.html", "e.html")
    assert sidebar.move_current(twice, "b.html", "c.html") is None
    first_level = resolved.replace("toctree-l2", "toctree-l1")
    assert sidebar.move_current(first_level, "b.html", "c.html") is None
