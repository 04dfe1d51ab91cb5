"""The notebook of every recipe page (cookbook/_book/notebooks.py): valid, in the page's order, free of
reStructuredText, holding the module's code; a sample of them run end to end in a real kernel; and,
where the book is built, every recipe page links its notebook.

This file sits at the top of ``tests/``, so ``make test`` runs it every time (cookbook/_passed.py keys
only per-recipe test files); that is what lets the last test read the built pages, which it does not
import.
"""

import ast
import doctest
import json
import os
import re
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from cookbook._book import all_recipes, code_start_line
from cookbook._book.bookmap import connection_lines
from cookbook._book.notebooks import METADATA_KEY, NotebookError, notebook_path, recipe_notebook
from cookbook._book.page import Page

ROOT = Path(__file__).resolve().parents[2]
RECIPES = all_recipes()
HTML = Path(os.environ.get("COOKBOOK_HTML", ROOT / "_build" / "html"))
# reStructuredText that must not survive into a markdown cell: a role, a directive, a literal.
REST_LEFT = re.compile(r":[\w:-]+:`|^\s*\.\. [\w-]+::|^\s*\.\. |``", re.M)


def _file(name: str) -> Path:
    return ROOT.joinpath(*name.split(".")).with_suffix(".py")


def _role(cell) -> str | None:
    return cell.metadata.get(METADATA_KEY, {}).get("role")


def _markdown(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "markdown"]


@pytest.fixture(scope="module")
def notebooks():
    return {}


def _notebook(notebooks, name):
    if name not in notebooks:
        notebooks[name] = recipe_notebook(_file(name))
    return notebooks[name]


@pytest.mark.parametrize("name", RECIPES)
def test_notebook_is_valid_and_follows_the_page(name, notebooks):
    nb = _notebook(notebooks, name)
    nbformat.validate(nb)
    nbformat.validate(nbformat.reads(nbformat.writes(nb), as_version=4))  # as written to disk
    source = _file(name).read_text()
    page = Page.from_source(source)
    assert nb.metadata[METADATA_KEY]["module"] == name
    assert [c.cell_type for c in nb.cells[:2]] == ["markdown", "code"] and _role(nb.cells[1]) == "setup"
    assert "jax_num_cpu_devices" in nb.cells[1].source  # before JAX starts: the parallelism chapter

    # The headings, in the page's order: the title, the docstring's sections with Code before Example,
    # and References when the page cites.
    headings = [line for md in _markdown(nb) for line in md.splitlines() if re.match(r"#{1,6} ", line)]
    sections = [s for s in page.order if s != page.lines[0]]
    expected = sections[: sections.index("Example")] + ["Code"] + sections[sections.index("Example"):]
    if connection_lines(_file(name)):
        expected.append("Connections")
    if ":footcite" in source:
        expected.append("References")
    assert headings == [f"# {page.lines[0]}"] + [f"## {s}" for s in expected]

    # The code cells, in order: figures before the Code section's one cell of the module's code, the
    # examples after it, each what the page shows.
    roles = [_role(c) for c in nb.cells if c.cell_type == "code"][1:]
    code_at = roles.index("code")
    assert roles.count("code") == 1 and "example" not in roles[:code_at]
    (code_cell,) = [c for c in nb.cells if _role(c) == "code"]
    assert code_cell.source == "\n".join(source.splitlines()[code_start_line(source) - 1:]).rstrip("\n")
    docstring = ast.get_docstring(ast.parse(source), clean=True)
    shown = [e.source for e in doctest.DocTestParser().get_examples(docstring)]
    run = [c.source + "\n" for c in nb.cells if _role(c) == "example"]
    assert "".join(run) == "".join(shown) and not any(">>>" in c for c in run)
    wants = [e.want for e in doctest.DocTestParser().get_examples(docstring)]
    assert "".join(c.metadata[METADATA_KEY]["expected_output"] for c in nb.cells if _role(c) == "example") == "".join(wants)
    figures = [c.source for c in nb.cells if _role(c) == "figure"]
    assert len(figures) == docstring.count(".. plot::")

    # Markdown only: no reStructuredText left, every inline formula kept with its backslashes.
    markdown = "\n\n".join(_markdown(nb))
    left = [m.group(0) for md in _markdown(nb) for m in REST_LEFT.finditer(md)]
    assert not left, f"reStructuredText left in the markdown of {name}: {left[:5]}"
    for latex in re.findall(r":math:`([^`]*)`", docstring):
        plain = " ".join(latex.split())
        in_table = plain.replace(r"\|", r"\Vert ").replace("|", r"\vert ")
        assert f"${plain}$" in markdown or f"${in_table}$" in markdown, f"{name}: :math:`{latex}` is missing"
    assert docstring.count(".. math::") == markdown.count("$$\n") // 2


def test_markdown_of_each_construct(tmp_path):
    """A sample recipe with one of each construct the book uses, written as Jupyter markdown."""
    module = tmp_path / "cookbook" / "sample" / "recipe.py"
    module.parent.mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notation.rst").write_text("Notation\n========\n\nText.\n")
    (tmp_path / "docs" / "references.bib").write_text(
        "@article{smith2020a, author = {Smith, Ann and Jones, Bo and Wu, Chen}, title = {A title},"
        " journal = {J}, year = {2020}}\n@book{doe1999b, author = {Doe, Dan}, title = {B title},"
        " publisher = {P}, year = {1999}}\n")
    module.write_text('r"""' + textwrap.dedent(r"""
        Sample
        ======

        One sentence, with *emphasis*, **strength**, ``code``, :math:`a_i |x|` and a $ sign.

        Equation
        --------

        .. math::

           y = a \\
           z = b

           w = c

        Legend
        ------

        .. list-table::
           :header-rows: 1

           * - Symbol
             - Meaning
           * - :math:`\|x\|`
             - the norm, ``x | y``

        Explanation
        -----------

        As :footcite:t:`smith2020a` show and others confirm :footcite:`doe1999b,smith2020a`; see
        :doc:`/docs/notation` and :func:`~jax.numpy.linalg.norm`.

        .. admonition:: Intuition

           A picture.

        1. first
        2. second

        - a bullet

        .. plot::

           plt.plot([1, 2])

        Example
        -------

        >>> 1 + 1
        2
        """) + '"""\n\nX = 1\n')
    nb = recipe_notebook(module, srcdir=tmp_path)
    md = "\n\n".join(_markdown(nb))
    assert r"with *emphasis*, **strength**, `code`, $a_i |x|$ and a \$ sign." in md
    assert "$$\n\\begin{aligned}\\begin{split}y = a \\\\\nz = b\\end{split} \\\\\nw = c\\end{aligned}\n$$" in md
    assert "| Symbol | Meaning |\n|---|---|\n| $\\Vert x\\Vert $ | the norm, `x \\| y` |" in md
    assert "As Smith et al. (2020) show and others confirm (Doe, 1999; Smith et al., 2020); see *Notation* and `norm()`." in md
    assert "> **Intuition**\n>\n> A picture." in md
    assert "1. first\n2. second" in md and "- a bullet" in md
    assert "## References\n\n- Dan Doe\\. *B title*\\. P, 1999\\.\n- Ann Smith, Bo Jones, and Chen Wu\\." in md
    assert [_role(c) for c in nb.cells if c.cell_type == "code"] == ["setup", "figure", "code", "example"]
    assert [c.source for c in nb.cells if c.cell_type == "code"][1:] == ["plt.plot([1, 2])", "X = 1", "1 + 1"]
    linked = recipe_notebook(module, srcdir=tmp_path, base_url="https://book.example/en/latest/")
    assert "[Notation](https://book.example/en/latest/docs/notation.html)" in "\n".join(_markdown(linked))
    assert linked.cells[0].source.startswith(
        "This notebook is the page [Sample](https://book.example/en/latest/docs/chapters/sample/recipe.html) ")
    assert nb.cells[0].source.startswith("This notebook is the page *Sample* of the Deep Learning Cookbook")


@pytest.mark.parametrize("snippet, message", [
    (".. seealso:: Another page.", "unknown directive 'seealso'"),
    (".. image:: picture.png", "unknown directive 'image'"),
    ("A :ref:`label` here.", "unknown role 'ref'"),
    ("A :footcite:`nobody1900` here.", "cites ['nobody1900']"),
    ("A :doc:`no_such_page` here.", "no page of the book"),
    ("term\n   its definition", "cannot convert a 'definition_list' node"),
    (".. plot:: figure.py", "a plot directive without code"),
])
def test_what_it_cannot_write_is_an_error(tmp_path, snippet, message):
    module = tmp_path / "cookbook" / "sample" / "recipe.py"
    module.parent.mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "references.bib").write_text("")
    module.write_text(f'"""Sample\n======\n\nOne sentence.\n\nEquation\n--------\n\n{snippet}\n"""\n')
    with pytest.raises(NotebookError, match=re.escape(message)) as error:
        recipe_notebook(module, srcdir=tmp_path)
    assert "cookbook.sample.recipe" in str(error.value)


def test_bad_input_is_an_error(tmp_path):
    with pytest.raises(NotebookError, match=r"expected the path of a recipe module .*; got .*missing\.py"):
        recipe_notebook(tmp_path / "missing.py")
    with pytest.raises(NotebookError, match="expected the path of a recipe module"):
        recipe_notebook(ROOT / "docs" / "index.rst")


#: Node reads each formula with the book's own MathJax (node_modules, as the browser test does) and
#: prints, as JSON, those that MathJax's TeX input marks as errors.
MATHJAX_CHECK = """
import fs from 'fs';
const [script, formulas, mathjax] = process.argv.slice(1);
const MathJax = (await import(mathjax)).default;
await MathJax.init({loader: {load: ['input/tex']}, startup: {typeset: false}});
const errors = [];
for (const [where, display, tex] of JSON.parse(fs.readFileSync(formulas))) {
  try {
    const mml = await MathJax.tex2mmlPromise(tex, {display});
    const error = mml.match(/<merror[^]*?<\\/merror>/);
    if (error) errors.push([where, tex, error[0]]);
  } catch (e) { errors.push([where, tex, String(e)]); }
}
console.log(JSON.stringify(errors));
"""


def _formulas(markdown: str) -> list[tuple[bool, str]]:
    """The display (``$$``) and inline (``$``) formulas of a markdown cell."""
    display = re.findall(r"^\$\$\n(.*?)\n\$\$$", markdown, re.S | re.M)
    rest = re.sub(r"^\$\$\n.*?\n\$\$$", "", markdown, flags=re.S | re.M)
    rest = re.sub(r"(`+).*?\1", "", rest.replace(r"\$", ""), flags=re.S)  # code spans and escaped signs
    return [(True, f) for f in display] + [(False, f) for f in re.findall(r"\$([^$]+)\$", rest)]


def test_every_formula_of_the_notebooks_reads_in_mathjax(notebooks, tmp_path):
    """Every formula of every notebook goes through MathJax's TeX input (the version the book serves)
    without an error: what the conversion does to ``:math:`` and ``.. math::`` (bars in tables, split
    and aligned blocks) stays valid TeX for Jupyter's MathJax."""
    import shutil
    import subprocess

    node, mathjax = shutil.which("node"), ROOT / "node_modules" / "mathjax" / "node-main.mjs"
    if node is None or not mathjax.exists():
        if os.environ.get("COOKBOOK_REQUIRE_BROWSER") == "1":
            raise AssertionError("node and node_modules/mathjax are needed (make html installs them)")
        pytest.skip("node or node_modules/mathjax is missing (make html installs them)")
    formulas = [[name, display, tex] for name in RECIPES for md in _markdown(_notebook(notebooks, name))
                for display, tex in _formulas(md)]
    assert len(formulas) > 10 * len(RECIPES)
    formulas.append(["a formula known to be wrong", False, r"\frac{1}{"])  # shows that the check can fail
    (tmp_path / "formulas.json").write_text(json.dumps(formulas))
    (tmp_path / "check.mjs").write_text(MATHJAX_CHECK)
    run = subprocess.run([node, str(tmp_path / "check.mjs"), str(tmp_path / "formulas.json"), mathjax.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    errors = json.loads(run.stdout)
    assert [where for where, _, _ in errors[-1:]] == ["a formula known to be wrong"]
    assert not errors[:-1], "\n".join(f"{where}: {tex!r}: {error}" for where, tex, error in errors[:10])


def test_the_formula_finder_sees_display_and_inline_math_only():
    assert _formulas("a $x$ and `$y$` and \\$5\n\n$$\n\\frac{1}{2}\n$$") == [(True, "\\frac{1}{2}"), (False, "x")]


# --------------------------------------------------------------------------------------------
# A sample, run in a real kernel
# --------------------------------------------------------------------------------------------

#: Three cheap notebooks of three chapters, one of which needs the eight simulated devices.
EXECUTED = ["cookbook.foundations.linear_regression", "cookbook.normalization.rms_norm",
            "cookbook.parallelism.data_parallel"]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.fixture(scope="module")
def kernel_manager(tmp_path_factory):
    """A kernel that runs this interpreter (the project's environment), declared in a private
    kernelspec folder, so that no installed Jupyter set-up is needed or used."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    folder = tmp_path_factory.mktemp("kernels")
    (folder / "cookbook").mkdir()
    (folder / "cookbook" / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "cookbook (this environment)", "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(folder)], ensure_native_kernel=False)
    return lambda: KernelManager(kernel_name="cookbook", kernel_spec_manager=specs)


def _printed(cell) -> str:
    out = []
    for output in cell.outputs:
        if output.output_type == "stream" and output.name == "stdout":
            out.append(output.text)
        elif output.output_type == "execute_result":
            out.append(output.data["text/plain"] + "\n")
        elif output.output_type == "error":
            raise AssertionError(f"{output.ename}: {output.evalue}\n" + "\n".join(output.traceback))
    return "".join(out)


@pytest.mark.parametrize("name", EXECUTED)
def test_notebook_runs_and_prints_what_the_page_shows(name, kernel_manager, tmp_path):
    from nbclient import NotebookClient

    nb = recipe_notebook(_file(name))
    # The kernel starts from the environment, less the shared compilation cache (a kernel would write
    # to it without the atomic writes of cookbook/_book/runtime.py); PYTHONPATH finds this checkout.
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    km = kernel_manager()
    client = NotebookClient(nb, km=km, timeout=300, allow_errors=True, resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute(env=env)
    finally:  # a client given its kernel manager leaves the kernel running
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    checker = doctest.OutputChecker()
    examples = [c for c in nb.cells if _role(c) == "example"]
    assert examples and all(c.execution_count for c in nb.cells if c.cell_type == "code")
    for cell in [c for c in nb.cells if c.cell_type == "code" and _role(c) != "example"]:
        _printed(cell)  # no error
    for cell in examples:
        want, got = cell.metadata[METADATA_KEY]["expected_output"], _printed(cell)
        example = doctest.Example(cell.source, want)
        assert checker.check_output(want, got, FLAGS), checker.output_difference(example, got, FLAGS)
    if name.startswith("cookbook.parallelism."):
        devices = next(c for c in nb.cells if _role(c) == "setup")
        assert not any(o.output_type == "error" for o in devices.outputs)


# --------------------------------------------------------------------------------------------
# The built book links each notebook
# --------------------------------------------------------------------------------------------

def test_built_pages_link_their_notebooks():
    """Each built recipe page links its notebook under ``_downloads``, and the file is there and is
    the notebook of that recipe. ``make test`` builds the book first (and sets
    ``COOKBOOK_REQUIRE_BROWSER=1``, which makes a missing build fail); a bare pytest skips this when
    the book is not built."""
    if not (HTML / "docs" / "index.html").exists():
        if os.environ.get("COOKBOOK_REQUIRE_BROWSER") == "1":
            raise AssertionError(f"the book is not built in {HTML}")
        pytest.skip(f"the book is not built in {HTML} (run `make html`)")
    problems = []
    for name in RECIPES:
        page = HTML / "docs" / "chapters" / Path(*name.split(".")[1:]).with_suffix(".html")
        stem = name.rsplit(".", 1)[1]
        links = re.findall(rf'<a class="reference download internal" download="" href="([^"]*/{stem}\.ipynb)"',
                           page.read_text())
        if len(links) != 1:
            problems.append(f"{page.relative_to(HTML)}: {len(links)} links to {stem}.ipynb")
            continue
        target = (page.parent / links[0]).resolve()
        if not target.is_file():
            problems.append(f"{page.relative_to(HTML)}: {links[0]} is missing")
            continue
        nb = nbformat.read(target, as_version=4)
        if nb.metadata.get(METADATA_KEY, {}).get("module") != name:
            problems.append(f"{page.relative_to(HTML)}: {links[0]} is not the notebook of {name}")
    assert not problems, "\n".join(problems)


def test_notebook_path_is_beside_the_stub():
    path = notebook_path(ROOT / "cookbook" / "attention" / "rope.py", ROOT)
    assert path == ROOT / "docs" / "chapters" / "attention" / "rope.ipynb"
