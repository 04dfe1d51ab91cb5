"""The navigation sidebar of the book's pages: the table of contents resolved once per chapter.

The theme draws each page's sidebar from the book's whole table of contents, which Sphinx resolves
for that page (it copies the table, marks the page and its ancestors as current and writes each link
relative to the page). That is work in proportion to the book for every page, so in proportion to
the square of the book for a build. Writing the 197 pages of the 171-recipe book (``sphinx -a`` on
one process, the pages already read) took 32.8 CPU seconds with the theme's own sidebar, 23.0 with
this module and 14.2 with the sidebar collapsed to the current chapter, which would hide the others.

Two pages in the same folder with the same parent in the table of contents (two recipes of one
chapter) have the same resolved table but for their own entry, which is marked current and links to
``#``. So the first such page's table is resolved by Sphinx, and each later one is that table with
the mark moved from the first page's entry to its own (:func:`move_current`). The move is made only
where both entries have the one form Sphinx gives a page without children below the first level;
anything else (a chapter's own page, the pages of the first level, a page outside the table of
contents) is resolved by Sphinx as before. The theme then draws its sidebar from the table, as it
would have. The built HTML was the same, byte for byte, on every page with and without this module;
``tests/_book/test_sidebar.py`` checks the sidebar of every built page against the catalogue.

Nothing here imports Sphinx; :func:`share_sidebars` is called from ``conf.py`` with Sphinx's objects.
"""

from __future__ import annotations

import posixpath
import re

# A page's own entry, as Sphinx 9 writes it in a resolved table for a page without children, marked
# as the current page and unmarked. Only entries below the first level (a chapter's recipes) are
# moved: the first level's pages sit in different lists (the book's pages, the chapters, the pages
# about it), and the list that holds the current page is marked too.
_CURRENT = re.compile(r'<li class="(toctree-l[2-9]) current"><a class="current reference internal" href="#">')
_CURRENT_FORM = r'<li class="\1 current"><a class="current reference internal" href="#">'


def _entry(href: str) -> re.Pattern:
    return re.compile(r'<li class="(toctree-l[2-9])"><a class="reference internal" href="' + re.escape(href) + '">')


def move_current(html: str, old_href: str, new_href: str) -> str | None:
    """``html``, a table resolved for the page that ``old_href`` names, made ``new_href``'s.

    The entry marked as current becomes a plain link to ``old_href``, and the plain link to
    ``new_href`` becomes the current entry. Both hrefs are relative to the folder of the two pages.
    Returns None unless ``html`` holds exactly one current entry, and, once it is unmarked, exactly
    one plain link to ``new_href``: then Sphinx must resolve the table for the page itself.
    """
    if old_href == new_href or len(_CURRENT.findall(html)) != 1:
        return None
    neutral = _CURRENT.sub(lambda m: f'<li class="{m.group(1)}"><a class="reference internal" href="{old_href}">', html)
    entry = _entry(new_href)
    if len(entry.findall(neutral)) != 1:
        return None
    return entry.sub(_CURRENT_FORM, neutral)


class _Shared:
    """Per process: each table resolved, under its arguments, folder and parent, and for which page;
    and each page's parent in the table of contents (forgotten when Sphinx's environment changes)."""

    def __init__(self):
        self.env_id = None
        self.parents: dict[str, str] = {}
        self.resolved: dict[tuple, tuple[str, str]] = {}

    def parent(self, env, docname: str) -> str | None:
        if self.env_id != id(env):
            self.env_id, self.resolved = id(env), {}
            self.parents = {child: parent for parent, children in env.toctree_includes.items() for child in children}
        return self.parents.get(docname)


_SHARED = _Shared()


def share_sidebars(app, pagename: str, context: dict) -> None:
    """Wrap the page's ``toctree`` (Sphinx's template function, which the theme calls to draw the
    sidebar) so that the table is resolved once per folder and parent, and moved for the other pages
    (see the module's text)."""
    resolve = context.get("toctree")
    if resolve is None:
        return
    parent = _SHARED.parent(app.env, pagename)

    def toctree(**kwargs):
        if parent is None:
            return resolve(**kwargs)
        key = (repr(sorted(kwargs.items())), posixpath.dirname(pagename), parent)
        if key in _SHARED.resolved:
            first, html = _SHARED.resolved[key]
            moved = move_current(html, app.builder.get_relative_uri(pagename, first),
                                 app.builder.get_relative_uri(first, pagename))
            if moved is not None:
                return moved
        html = resolve(**kwargs)
        if key not in _SHARED.resolved and len(_CURRENT.findall(html)) == 1:
            _SHARED.resolved[key] = (pagename, html)
        return html

    context["toctree"] = toctree
