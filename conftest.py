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


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected theirs
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
    if os.environ.get("COOKBOOK_PAGES_DOCTESTED") == "1":
        kept, skipped = [], []
        for item in items:
            module_page = type(item).__name__ == "DoctestItem" and item.name.count(".") == 2 and item.name.startswith("cookbook.")
            (skipped if module_page else kept).append(item)
        if skipped:
            config.hook.pytest_deselected(items=skipped)
            items[:] = kept
    _skip_what_passed_before(config, items)


# ---- Tests that passed before with the same inputs (``make test``; see cookbook/_passed.py) --------

def _skip_what_passed_before(config, items):
    """Under ``COOKBOOK_PASSED``, leave out the tests whose key is the one they passed with; give
    every other test its key, which its report carries back to the controller."""
    from cookbook import _passed

    if _passed.record_path() is None:
        return
    record = _passed.load()["tests"]
    kept, skipped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        key = _passed.test_key(item.path, dict(callspec.params) if callspec else {})
        if key is not None and record.get(item.nodeid) == key:
            skipped.append(item)
        else:
            item.user_properties.append(("passed_key", key))
            kept.append(item)
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = kept
    if not hasattr(config, "workerinput") or config.workerinput.get("workerid") == "gw0":
        _passed.record_path().parent.mkdir(parents=True, exist_ok=True)
        _passed.record_path().with_suffix(".skipped").write_text(f"{len(skipped)} {len(skipped) + len(kept)}\n")


_OUTCOMES: dict[str, str | None] = {}  # node id -> its key if every phase passed so far, else None


def _note_outcome(report):
    key = dict(report.user_properties).get("passed_key")
    if report.failed or (report.when == "call" and not report.passed):
        _OUTCOMES[report.nodeid] = None
    elif report.when == "call" and report.nodeid not in _OUTCOMES:
        _OUTCOMES[report.nodeid] = key


# ---- What each recipe costs (printed at the end of ``make test`` by ``benchmarks/costs.py``) --------

_DURATIONS: dict[str, float] = {}  # node id -> seconds of its phases, for the recipes it belongs to


def pytest_runtest_logreport(report):
    """Add each test phase's duration to its test's total (on the controller under xdist too)."""
    from benchmarks.costs import recipe_of_test

    _note_outcome(report)
    if recipe_of_test(report.nodeid) is not None:
        _DURATIONS[report.nodeid] = _DURATIONS.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session):
    import json

    from benchmarks.costs import COSTS, recipe_of_test

    if hasattr(session.config, "workerinput"):
        return  # a worker: its reports reach the controller, which writes the files
    _record_what_passed()
    if not _DURATIONS:
        return
    COSTS.mkdir(parents=True, exist_ok=True)
    durations = dict(_DURATIONS)
    if os.environ.get("COOKBOOK_PASSED"):  # a run that skipped what passed before keeps their times
        try:
            old = json.loads((COSTS / "pytest-tests.json").read_text())
            durations = {**old, **_DURATIONS}
        except (OSError, ValueError):
            pass
    (COSTS / "pytest-tests.json").write_text(json.dumps(durations, indent=0, sort_keys=True) + "\n")
    costs: dict[str, float] = {}
    for nodeid, seconds in durations.items():
        recipe = recipe_of_test(nodeid)
        costs[recipe] = costs.get(recipe, 0.0) + seconds
    (COSTS / "pytest.json").write_text(json.dumps(costs, indent=1, sort_keys=True) + "\n")


def _record_what_passed():
    from cookbook import _passed

    if _passed.record_path() is None or not _OUTCOMES:
        return
    record = _passed.load()
    for nodeid, key in _OUTCOMES.items():
        if key is None:
            record["tests"].pop(nodeid, None)
        else:
            record["tests"][nodeid] = key
    _passed.save(record)


def pytest_terminal_summary(terminalreporter):
    from cookbook import _passed

    path = _passed.record_path()
    if path is None or hasattr(terminalreporter.config, "workerinput"):
        return
    try:
        skipped, total = path.with_suffix(".skipped").read_text().split()
    except (OSError, ValueError):
        return
    if int(skipped):
        terminalreporter.write_line(
            f"{skipped} of {total} tests passed before with the same inputs and were not run again "
            f"(cookbook/_passed.py; `make test FRESH=1` runs them all)")
