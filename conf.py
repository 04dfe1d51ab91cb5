"""Sphinx configuration of the Deep Learning Cookbook.

The book's pages come from the ``cookbook`` package: :mod:`cookbook._book` writes a stub page per
chapter and recipe under ``docs/chapters/`` when the build starts, and adds the machine-made parts of
each page (reading time, code, references) when autodoc reads a module's docstring.
"""

import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import cookbook  # noqa: E402
from cookbook import _book  # noqa: E402
from cookbook._book import intersphinx  # noqa: E402

_book.simulate_devices()  # before any page computes: the parallelism chapter needs 8 devices

project = "Deep Learning Cookbook"
author = "The Deep Learning Cookbook authors"
copyright = "2026, " + author
release = cookbook.__version__

root_doc = "docs/index"
include_patterns = ["docs/**"]
exclude_patterns = ["docs/_static/**", "docs/_templates/**"]
templates_path = ["docs/_templates"]
html_static_path = ["docs/_static", "_build/assets"]

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "sphinxcontrib.bibtex",
    "matplotlib.sphinxext.plot_directive",
    "sphinx_copybutton",
]

# -- Pages from modules --------------------------------------------------------------------------
# The modules that shape every page (cookbook/_book): when their code changes, every page is read
# again, as Sphinx does for any changed configuration value of this kind (see setup below), so that
# no page, notebook or connections list is left as the old code made it.
PAGE_MACHINERY = ("catalogue", "stubs", "page", "assemble", "notebooks", "bookmap")
cookbook_page_machinery = hashlib.sha256(
    b"".join((ROOT / "cookbook" / "_book" / f"{name}.py").read_bytes() for name in PAGE_MACHINERY)).hexdigest()
autodoc_default_options = {"members": False}
autodoc_member_order = "bysource"
nitpicky = True
# Links into other projects' documentation: Python's inventory is kept in the repository, so every
# build links to it; NumPy's and JAX's are fetched on Read the Docs only, and a site that does not
# answer drops its links from that build instead of failing it (cookbook/_book/intersphinx.py).
# References into projects with no inventory stay plain text.
nitpick_ignore_regex = [(r"py:.*", r"(jax|jaxlib|numpy|optax|flax|scipy|sklearn|matplotlib)(\..*)?")]
extensions.append("sphinx.ext.intersphinx")
intersphinx_mapping = intersphinx.mapping(ROOT, online=bool(os.environ.get("READTHEDOCS")),
                                          cache_dir=ROOT / "_build" / "inventories")

# -- Examples: the same set-up and flags as pytest (see pyproject.toml) --------------------------
doctest_global_setup = "from cookbook._book import doctest_setup\ndoctest_setup()"
import doctest as _doctest  # noqa: E402

doctest_default_flags = _doctest.ELLIPSIS | _doctest.NORMALIZE_WHITESPACE
doctest_test_doctest_blocks = "default"

# -- Mathematics with no network -----------------------------------------------------------------
# MathJax 4 and its font come from npm (package.json, pinned in package-lock.json) and are served
# from the built book itself, so that equations typeset on Read the Docs and offline alike.
MATHJAX_STATIC = ROOT / "_build" / "assets"
MATHJAX_STATIC.mkdir(parents=True, exist_ok=True)
mathjax_path = "mathjax/tex-chtml.js"
# A display equation wider than the text column is broken over lines at its operators (MathJax 4's
# line breaking), so that it fits a laptop's column and reads on a phone; mathjax-reflow.js breaks
# it again when the column's width changes. The lines are kept to 98% of the column, because a glyph
# may reach a pixel or two past its box, which would show a scroll bar. An equation that has no place
# to break (a wide matrix) scrolls sideways in its own box.
mathjax4_config = {
    "loader": {"paths": {"fonts": "[mathjax]/fonts"}},
    "options": {"menuOptions": {"settings": {"enrich": False}}},
    "output": {"displayOverflow": "linebreak", "linebreaks": {"inline": True, "width": "98%"}},
}

# -- Citations -----------------------------------------------------------------------------------
bibtex_bibfiles = ["docs/references.bib"]
bibtex_default_style = "plain"
bibtex_reference_style = "author_year"
bibtex_foot_reference_style = "foot"


def _register_pybtex_plugins():
    """Hand pybtex its plugins once, instead of at every citation.

    pybtex finds a plugin (a style, a name format, a sorting) by reading the entry points of every
    installed package each time it is asked, about 3.4 ms a time, and a build of the book asks 2,030
    times (each footnote citation formats its entry with a fresh style, which asks for four). Its
    ``register_plugin`` keeps a plugin in memory, where pybtex looks first: each plugin that the
    installed packages declare is registered once, as the same class the entry point loads.
    """
    from importlib.metadata import entry_points

    import pybtex.plugin

    declared = entry_points()
    for group in sorted(declared.groups):
        if group.split(".suffixes")[0].split(".aliases")[0] not in pybtex.plugin._DEFAULT_PLUGINS:
            continue
        for entry in declared.select(group=group):
            try:
                plugin = entry.load()
            except ImportError:  # left to pybtex, which fails only if a page asks for it
                continue
            pybtex.plugin.register_plugin(group, entry.name, plugin, force=True)


_register_pybtex_plugins()

# -- Figures drawn at build time -----------------------------------------------------------------
plot_formats = [("png", 100)]
plot_html_show_source_link = False
plot_html_show_formats = False
plot_include_source = False
plot_pre_code = "import numpy as np\nimport matplotlib.pyplot as plt\nfrom cookbook._book import doctest_setup\ndoctest_setup()"
plot_rcparams = {"figure.facecolor": "white", "savefig.facecolor": "white", "figure.dpi": 100}

# -- HTML ----------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = project
html_css_files = ["cookbook.css"]
html_js_files = ["mathjax-reflow.js"]
html_favicon = "docs/_static/favicon.svg"
html_context = {"default_mode": "auto"}
html_additional_pages = {"index": "redirect.html"}  # the book starts at docs/index.html
# On Read the Docs, every page names its canonical address (<link rel="canonical">), so that search
# engines send readers to the default version rather than to a copy.
html_baseurl = os.environ.get("READTHEDOCS_CANONICAL_URL", "")
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
}
copybutton_exclude = ".linenos, .gp, .go"


def _copy_mathjax(app):
    """Assemble MathJax's browser files and its CommonHTML font under ``_build/assets/mathjax``."""
    if app.builder.format != "html":
        return
    modules = ROOT / "node_modules"
    if not (modules / "mathjax" / "tex-chtml.js").exists():
        raise RuntimeError("MathJax is missing from node_modules: run `npm ci` (`make html` does).")
    target = MATHJAX_STATIC / "mathjax"
    stamp = target / ".version"
    version = (modules / "mathjax" / "package.json").read_text() + (
        modules / "@mathjax" / "mathjax-newcm-font" / "package.json").read_text()
    if stamp.exists() and stamp.read_text() == version:
        return
    shutil.rmtree(target, ignore_errors=True)
    keep = shutil.ignore_patterns("*svg*", "mml-*", "tex-mml-*", "node-main*", "*.md", "*.mts", "*.cjs")
    shutil.copytree(modules / "mathjax", target, ignore=keep)
    font = modules / "@mathjax" / "mathjax-newcm-font"
    shutil.copytree(font / "chtml", target / "fonts" / "mathjax-newcm-font" / "chtml")
    shutil.copy2(font / "chtml.js", target / "fonts" / "mathjax-newcm-font" / "chtml.js")
    shutil.copy2(font / "package.json", target / "fonts" / "mathjax-newcm-font" / "package.json")
    stamp.write_text(version)


def _write_stubs(app):
    from benchmarks import report

    _book.write_stubs(Path(app.srcdir) / "docs" / "chapters")
    report.write(ROOT / "benchmarks" / "results.json", ROOT / "docs" / "chapters" / "performance_tables.txt")


def _write_map(app):
    from cookbook._book import bookmap

    bookmap.write_map(Path(app.srcdir) / "docs" / "chapters" / "map.html")  # docs/map.rst includes it


def _pages_with_new_connections(app, env, added, changed, removed):
    """Recipe pages whose Connections section changed although their module did not (a recipe that
    starts to import another changes the other's page too): Sphinx reads them again."""
    from cookbook._book import bookmap

    old, env.cookbook_connections = getattr(env, "cookbook_connections", {}), bookmap.connection_table()
    return [doc for doc, lines in env.cookbook_connections.items() if old.get(doc) != lines and doc not in added | changed]


def _add_page_parts(app, what, name, obj, options, lines):
    if what != "module":
        return
    if _book.is_recipe(name):
        lines[:] = _book.recipe_page_lines(lines, Path(obj.__file__), Path(app.srcdir))
    elif _book.is_chapter(name):
        lines[:] = _book.chapter_page_lines(lines, name)


# -- What each page costs (printed at the end of ``make test`` by ``benchmarks/costs.py``) ----------
_read_started = {}


def _cost_file(kind):
    from benchmarks.costs import COSTS

    COSTS.mkdir(parents=True, exist_ok=True)
    return COSTS / f"{kind}-{os.getpid()}.tsv"


def _start_reading(app, docname, source):
    _read_started[docname] = time.perf_counter()


def _done_reading(app, doctree):
    docname = app.env.docname
    if docname in _read_started:
        with _cost_file("read").open("a") as f:
            f.write(f"{docname}\t{time.perf_counter() - _read_started.pop(docname):.3f}\n")


def _share_sidebars(app, pagename, templatename, context, doctree):
    from cookbook._book import sidebar

    sidebar.share_sidebars(app, pagename, context)


def _write_with_every_process(app):
    """Write the pages with as many processes as ``-j`` gives, not one fewer.

    Sphinx 9 reads with ``-j`` processes but writes with ``-j`` minus one, keeping the main process
    for loading each chunk's doctrees; on two cores ``-j 2`` wrote the 197 pages with a single
    process while the main one waited (writing every page, ``-a`` with the doctrees current: 17.8 s
    wall with one writer, 11.4 s with two, in December 2026). The pages written are the same, byte
    for byte, as with ``-j 1`` and ``-j 3``. Reading stays at ``-j``: ``-j 3`` would read with three
    processes on two cores, and a cold build took as long as with ``-j 2``.
    """
    write_parallel = getattr(app.builder, "_write_parallel", None)
    if write_parallel is None:  # a builder, or a Sphinx, without it: nothing to change
        return

    def with_every_process(docnames, nproc):
        return write_parallel(docnames, nproc=min(nproc + 1, app.parallel))

    app.builder._write_parallel = with_every_process


def setup(app):
    app.add_config_value("cookbook_page_machinery", "", "env")
    app.connect("source-read", _start_reading)
    app.connect("doctree-read", _done_reading)
    app.connect("builder-inited", _write_stubs)
    app.connect("builder-inited", _write_map)
    app.connect("env-get-outdated", _pages_with_new_connections)
    app.connect("builder-inited", _copy_mathjax)
    app.connect("builder-inited", _write_with_every_process)
    app.connect("autodoc-process-docstring", _add_page_parts)
    # Before the theme's handlers (priority 500), which draw the sidebar through the page's toctree.
    app.connect("html-page-context", _share_sidebars, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
