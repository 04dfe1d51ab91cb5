"""The stub pages that Sphinx reads: one ``.. automodule::`` line per chapter and per recipe.

They are written under ``docs/chapters/`` when the build starts (``conf.py``), so that adding a
module adds its page and removing it removes the page.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from cookbook._book.catalogue import ROOT_PACKAGE, chapters, recipes


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
