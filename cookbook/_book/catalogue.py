"""The book's table of contents: which chapters and recipes exist, and in what order.

A chapter is a subpackage of :mod:`cookbook`; its ``RECIPES`` names its recipe modules in reading
order, and the package's ``CHAPTERS`` names the chapters. Everything else in the page machinery
asks this module what the book holds.
"""

from __future__ import annotations

import importlib
import pkgutil

ROOT_PACKAGE = "cookbook"


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
