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


def _xdist_group(item) -> str:
    """The unit that one pytest worker runs whole (``--dist loadgroup``).

    A test module is one unit, as with ``--dist loadfile``, so that what it compiles once serves all
    its tests; but the book-wide checks, which hold one test per recipe, are spread: the jit and the
    bad-input checks of a recipe form a unit (they share its recorded calls), and the browser's
    visits to the pages form two halves, one browser each.
    """
    path = item.nodeid.split("::")[0]
    callspec = getattr(item, "callspec", None)
    if path == "tests/test_replay.py" and callspec is not None:
        return f"replay-{callspec.params['name']}"
    if path == "tests/browser/test_book_in_browser.py":
        index = next(iter(callspec.indices.values())) if callspec is not None else 0
        return f"browser-{index % 2}"
    return path


def pytest_collection_modifyitems(config, items):
    """Group the tests for the workers (see :func:`_xdist_group`); under ``make test``, leave the page
    examples (module docstrings) to Sphinx's doctest builder.

    ``make test`` runs that builder over every page before pytest and then sets
    ``COOKBOOK_PAGES_DOCTESTED=1``; running the same examples again here would only double their
    time. Function docstring examples, which are not on the pages as examples, always run here, and
    a plain ``pytest`` runs every example.
    """
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_xdist_group(item)))
    if os.environ.get("COOKBOOK_PAGES_DOCTESTED") != "1":
        return
    kept, skipped = [], []
    for item in items:
        module_page = type(item).__name__ == "DoctestItem" and item.name.count(".") == 2 and item.name.startswith("cookbook.")
        (skipped if module_page else kept).append(item)
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = kept


# ---- What each recipe costs (printed at the end of ``make test`` by ``benchmarks/costs.py``) --------

_COSTS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    """Add each test phase's duration to its recipe's total (on the controller under xdist too)."""
    from benchmarks.costs import recipe_of_test

    recipe = recipe_of_test(report.nodeid)
    if recipe is not None:
        _COSTS[recipe] = _COSTS.get(recipe, 0.0) + report.duration


def pytest_sessionfinish(session):
    import json

    from benchmarks.costs import COSTS

    if hasattr(session.config, "workerinput") or not _COSTS:
        return  # a worker: its reports reach the controller, which writes the file
    COSTS.mkdir(parents=True, exist_ok=True)
    (COSTS / "pytest.json").write_text(json.dumps(_COSTS, indent=1, sort_keys=True) + "\n")
