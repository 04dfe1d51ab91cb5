"""Pytest set-up shared by the tests and the doctests of every recipe module."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

from cookbook._book import doctest_setup  # noqa: E402

doctest_setup()


@pytest.fixture(autouse=True)
def _book_numerics():
    """Every test and doctest runs with silent rank promotion turned into an error."""
    doctest_setup()
    yield


def pytest_collection_modifyitems(config, items):
    """Under ``make test``, leave the page examples (module docstrings) to Sphinx's doctest builder.

    ``make test`` runs that builder over every page before pytest and then sets
    ``COOKBOOK_PAGES_DOCTESTED=1``; running the same examples again here would only double their
    time. Function docstring examples, which are not on the pages as examples, always run here, and
    a plain ``pytest`` runs every example.
    """
    if os.environ.get("COOKBOOK_PAGES_DOCTESTED") != "1":
        return
    kept, skipped = [], []
    for item in items:
        module_page = type(item).__name__ == "DoctestItem" and item.name.count(".") == 2 and item.name.startswith("cookbook.")
        (skipped if module_page else kept).append(item)
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = kept
