"""The map of the book (cookbook/_book/bookmap.py): the graph read from the imports, each page's
Connections section, and the drawing on the map's page."""

import importlib
import os
import re
import sys
from pathlib import Path

import pytest

from cookbook._book import all_recipes, bookmap, recipe_page_lines

ROOT = Path(__file__).resolve().parents[2]


def _file(recipe: str) -> Path:
    return ROOT.joinpath(*recipe.split(".")).with_suffix(".py")


def _short(names):
    return tuple(n.split(".", 1)[1] for n in names)


@pytest.fixture(scope="module")
def graph():
    return bookmap.builds_on()


# -- The real book, against imports read by hand -------------------------------------------------

def test_facts_read_by_hand_from_the_modules(graph):
    # gpt.py imports seven recipes by name, transformer_block through its chapter package
    # (`from cookbook.transformers import transformer_block`), check_params through the private helper
    # transformers/_boundary.py (which imports only the machinery, so it leads to no recipe), and
    # cookbook._checks, which is machinery.
    assert set(_short(graph["cookbook.transformers.gpt"])) == {
        "foundations.losses", "optimization.sgd", "optimization.adam", "normalization.layer_norm",
        "attention.scaled_dot_product", "attention.multi_head", "attention.positional_encoding",
        "transformers.transformer_block"}
    # deep_ensembles.py: mlp twice (init and apply), adam; cookbook._memo is machinery.
    assert _short(graph["cookbook.uncertainty.deep_ensembles"]) == ("foundations.mlp", "optimization.adam")
    # masked_language_model.py: `from cookbook.transformers import transformer_block`, and a name of
    # masked_autoencoder.
    assert _short(graph["cookbook.self_supervised.masked_language_model"]) == (
        "transformers.transformer_block", "self_supervised.masked_autoencoder")
    # ddim.py imports ddpm at the top and flow_matching inside sampler_quality().
    assert _short(graph["cookbook.diffusion.ddim"]) == ("diffusion.ddpm", "diffusion.flow_matching")
    # gaussian_process.py imports only cookbook._checks in its code (the uncertainty._data and the
    # gaussian_process imports of its docstring's figure are no import statements of the module).
    assert graph["cookbook.uncertainty.gaussian_process"] == ()
    users = bookmap.built_on_by(graph)
    assert "cookbook.uncertainty.deep_ensembles" in users["cookbook.foundations.mlp"]
    assert users["cookbook.self_supervised.masked_autoencoder"] == ("cookbook.self_supervised.masked_language_model",)


def test_the_graph_holds_every_recipe_and_only_recipes_and_no_self_edges(graph):
    recipes = all_recipes()
    assert list(graph) == recipes
    order = {r: k for k, r in enumerate(recipes)}
    for recipe, bases in graph.items():
        assert recipe not in bases, f"{recipe} builds on itself"
        assert set(bases) <= set(recipes), f"{recipe} builds on modules that are no recipes: {set(bases) - set(recipes)}"
        assert list(bases) == sorted(bases, key=order.get), f"{recipe}: not in reading order"
    assert sum(map(len, graph.values())) > 100  # the book is a connected web, not a list of islands


def _doc_targets(line: str) -> list[str]:
    return re.findall(r":doc:`[^`<]+ </docs/chapters/([\w/]+)>`", line)


def test_each_page_lists_exactly_the_recipes_of_the_graph(graph):
    users = bookmap.built_on_by(graph)
    with_section = 0
    for recipe in graph:
        lines = bookmap.connection_lines(_file(recipe))
        bases_line = [line for line in lines if line.startswith("This recipe's code builds on")]
        users_line = [line for line in lines if line.endswith("builds on this recipe.")]
        listed_bases = _doc_targets(bases_line[0]) if bases_line else []
        listed_users = _doc_targets(users_line[0]) if users_line else []
        assert listed_bases == ["/".join(b.split(".")[1:]) for b in graph[recipe]], recipe
        assert listed_users == ["/".join(u.split(".")[1:]) for u in users[recipe]], recipe
        if graph[recipe] or users[recipe]:
            with_section += 1
            assert lines[1:3] == ["Connections", "-----------"]
        else:
            assert lines == [], f"{recipe} has no connections, yet its page gets {lines}"
    assert 0 < with_section < len(graph)


def test_the_section_comes_after_the_code_and_before_the_references():
    recipe = "cookbook.uncertainty.deep_ensembles"
    doc = importlib.import_module(recipe).__doc__.splitlines()
    text = "\n".join(recipe_page_lines(doc, _file(recipe), ROOT))
    assert text.index("\nCode\n----") < text.index("\nConnections\n-----------") < text.index("\nReferences\n----------")
    assert ":doc:`Multilayer perceptron </docs/chapters/foundations/mlp>`" in text


def test_a_module_outside_any_book_has_no_connections(tmp_path):
    lonely = tmp_path / "lonely.py"
    lonely.write_text('"""Lonely"""\n')
    assert bookmap.connection_lines(lonely) == []


def test_a_package_that_does_not_exist_is_a_clear_error():
    with pytest.raises(ValueError, match="expected an importable package name, got 'no_such_book'"):
        bookmap.builds_on("no_such_book")


# -- A small fake book with every kind of import -------------------------------------------------

FAKE = {
    "__init__.py": "CHAPTERS = ('basics', 'advanced')\n",
    "_machinery.py": "from mapbook.basics.first import x  # machinery leads to no recipe\n",
    "basics/__init__.py": '"""Basics\n======\n"""\nRECIPES = ("first", "second")\n',
    "basics/first.py": '"""First: the base"""\nx = 1\n',
    "basics/second.py": '"""Second"""\ny = 2\n\n\ndef f():\n    import mapbook.basics.first\n    return mapbook.basics.first.x\n',
    "basics/_helper.py": '"""A helper"""\nfrom mapbook.basics.first import x as h\n',
    "basics/_loop.py": "from mapbook.basics import _helper\nfrom mapbook.basics import _loop\n",
    # The chapter package re-exports a name of second (and nothing of first).
    "advanced/__init__.py": '"""Advanced\n========\n"""\nfrom mapbook.basics.second import y as public\nRECIPES = ("third", "fourth", "fifth", "sixth")\n',
    "advanced/third.py": '"""Third"""\nfrom mapbook.advanced import public\nfrom mapbook.basics import _helper\n',
    "advanced/fourth.py": '"""Fourth"""\nfrom . import third\nfrom mapbook import _machinery\nfrom mapbook.advanced.fourth import z\nz = 0\n',
    "advanced/fifth.py": '"""Fifth"""\nfrom mapbook.basics._loop import h\n',
    "advanced/sixth.py": '"""Sixth"""\nimport mapbook._machinery\n',
}


@pytest.fixture
def fake(tmp_path, monkeypatch):
    for name, text in FAKE.items():
        path = tmp_path / "mapbook" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / "mapbook"
    for mod in [m for m in sys.modules if m == "mapbook" or m.startswith("mapbook.")]:
        del sys.modules[mod]


def test_a_fake_book_gives_the_graph_its_imports_say(fake):
    graph = {k.split(".", 1)[1]: _short(v) for k, v in bookmap.builds_on("mapbook").items()}
    assert graph == {
        "basics.first": (),
        "basics.second": ("basics.first",),  # an import inside a function
        # a name re-exported by the chapter package leads to second only; the helper leads to first
        "advanced.third": ("basics.first", "basics.second"),
        # a relative import; the machinery and the module's import of itself count for nothing
        "advanced.fourth": ("advanced.third",),
        # a helper that imports a helper (and itself) leads to what that helper imports
        "advanced.fifth": ("basics.first",),
        "advanced.sixth": (),
    }
    users = {k.split(".", 1)[1]: _short(v) for k, v in bookmap.built_on_by(bookmap.builds_on("mapbook")).items()}
    assert users["basics.first"] == ("basics.second", "advanced.third", "advanced.fifth")
    assert users["advanced.sixth"] == ()


def test_the_fake_books_pages_link_their_connections(fake):
    lines = bookmap.connection_lines(fake / "advanced" / "third.py")
    # linked under their titles up to the colon
    assert "This recipe's code builds on :doc:`First </docs/chapters/basics/first>` and :doc:`Second </docs/chapters/basics/second>`." in lines
    assert "The code of :doc:`Fourth </docs/chapters/advanced/fourth>` builds on this recipe." in lines
    assert bookmap.connection_lines(fake / "advanced" / "sixth.py") == []
    assert bookmap.connection_lines(fake / "basics" / "_helper.py") == []  # a helper has no page


def test_a_new_import_changes_the_other_pages_section(fake):
    before = bookmap.connection_table("mapbook")
    sixth = fake / "advanced" / "sixth.py"
    sixth.write_text('"""Sixth"""\nfrom mapbook.advanced.fourth import z\n')
    os.utime(sixth, ns=(sixth.stat().st_mtime_ns + 10**9,) * 2)
    after = bookmap.connection_table("mapbook")
    changed = {doc for doc in after if after[doc] != before[doc]}
    # conf.py asks Sphinx to read these pages again, though fourth.py itself did not change
    assert changed == {"docs/chapters/advanced/fourth", "docs/chapters/advanced/sixth"}


def test_the_fake_books_map(fake):
    page = bookmap.map_html("mapbook")
    assert page == bookmap.map_html("mapbook")  # the same book, the same drawing
    nodes = re.findall(r'<a class="bm-node[^"]*" id="([\w-]+)" href="([^"]+)"', page)
    assert [href for _, href in nodes] == [
        "chapters/basics/first.html", "chapters/basics/second.html", "chapters/advanced/third.html",
        "chapters/advanced/fourth.html", "chapters/advanced/fifth.html", "chapters/advanced/sixth.html"]
    assert re.findall(r'<a href="([^"]+)"><title>', page) == ["chapters/basics/index.html", "chapters/advanced/index.html"]
    edges = re.findall(r'data-user="([\w-]+)" data-base="([\w-]+)"', page)
    assert sorted(edges) == sorted([
        ("bm-basics--second", "bm-basics--first"), ("bm-advanced--third", "bm-basics--first"),
        ("bm-advanced--third", "bm-basics--second"), ("bm-advanced--fourth", "bm-advanced--third"),
        ("bm-advanced--fifth", "bm-basics--first")])
    assert ">First</text>" in page and "<title>First: the base (builds on 0, built on by 3)</title>" in page
    assert 'class="bm-node bm-alone" id="bm-advanced--sixth"' in page


# -- The drawing of the real book ----------------------------------------------------------------

def test_the_map_draws_every_recipe_inside_its_chapter_without_overlaps(graph):
    boxes, nodes, width, height = bookmap.layout()
    assert list(nodes) == list(graph)
    node_width = bookmap.BOX_WIDTH - 2 * bookmap.PAD
    for recipe, (x, y) in nodes.items():
        box = boxes[recipe.split(".")[1]]
        assert box.x <= x and x + node_width <= box.x + bookmap.BOX_WIDTH, recipe
        assert box.y <= y and y + bookmap.NODE_HEIGHT <= box.y + box.height, recipe
    rects = [(b.x, b.y, b.x + bookmap.BOX_WIDTH, b.y + b.height) for b in boxes.values()]
    for i, a in enumerate(rects):
        for b in rects[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], f"chapter boxes overlap: {a} {b}"
        assert 0 <= a[0] and a[2] <= width and 0 <= a[1] and a[3] <= height
    assert width <= 900  # about the text column; a narrower window scrolls the map in its own box
    assert len({bookmap._ident(r) for r in graph}) == len(graph)  # each node's id is its own


def test_the_map_uses_the_themes_colours_only():
    # Light and dark mode alike: every colour is one of the theme's variables, none is written out.
    colours = re.findall(r"(?:fill|stroke|background|color)\s*:\s*([^;]+);", bookmap._STYLE)
    assert colours and all(re.fullmatch(r"none|var\(--pst-color-[\w-]+\)|color-mix\(in srgb, var\(--pst-color-[\w-]+\) \d+%, "
                                        r"var\(--pst-color-[\w-]+\)\)", c.strip()) for c in colours), colours
    page = bookmap.map_html()
    assert not re.search(r"#[0-9a-fA-F]{3,6}\b|\b(?:black|white|rgb)\b", page)
    # Offline: the script is inline, and no address leads off the built book.
    assert "<script>" in page and not re.search(r'\b(?:src|href)="(?:[a-z]+:)?//', page)


def test_the_map_file_is_rewritten_only_when_it_changes(tmp_path):
    target = tmp_path / "map.html"
    assert bookmap.write_map(target) is True
    assert bookmap.write_map(target) is False
    assert target.read_text().count('class="bm-node') == len(all_recipes())


def test_a_title_with_markup_characters_is_escaped_in_its_link():
    lines = bookmap.section_lines(("book.ch.odd",), (), {"book.ch.odd": "Odd `quotes` <and> brackets: more"})
    assert lines[4] == r"This recipe's code builds on :doc:`Odd \`quotes\` \<and\> brackets </docs/chapters/ch/odd>`."
