"""Pytest set-up shared by the tests and the doctests of every recipe module."""

import functools
import os
import re
import zlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

from cookbook._book import doctest_setup  # noqa: E402

doctest_setup()


@pytest.fixture(autouse=True)
def _book_numerics():
    """Every test and doctest runs with silent rank promotion turned into an error."""
    doctest_setup()
    yield


def work_unit(nodeid: str) -> str:
    """The unit of tests that one pytest worker runs whole under ``make test`` (``--dist loadgroup``).

    A test module is one unit, as with ``--dist loadfile``, so that what it compiles once serves all
    its tests; but the book-wide checks, which hold one test per recipe, are spread: a recipe's
    examples (its page's and its functions', collected from its module) and its jit and bad-input
    checks form a unit, in that order (the examples record the calls that the checks replay), and
    the browser's visits to the pages form two halves, one browser each. It reads the node id
    alone, because pytest-xdist's scheduler, which asks, sees no more.
    """
    path = nodeid.split("::")[0]
    if path == "tests/test_replay.py":
        m = re.search(r"\[(cookbook\.\w+\.\w+)\]$", nodeid)
        if m:
            return f"replay-{m.group(1)}"
    m = re.fullmatch(r"cookbook/(\w+)/(\w+)\.py", path)
    if m and not m.group(2).startswith("_"):
        return f"replay-cookbook.{m.group(1)}.{m.group(2)}"
    if path == "tests/browser/test_book_in_browser.py":
        m = re.search(r"\[(.+)\]$", nodeid)
        return f"browser-{zlib.crc32(m.group(1).encode()) % 2}" if m else "browser-0"
    return path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under ``--dist loadgroup``, hand each worker whole units (:func:`work_unit`). (pytest-xdist
    3.8's own loadgroup writes a test's group into an attribute that pytest 9.2 no longer reads, so
    with these versions it would hand out every test on its own.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class BookUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return BookUnits(config, log)


def _recipe_of_examples(item) -> str | None:
    """The recipe module (``cookbook.chapter.concept``) whose docstring examples ``item`` runs, if it
    is such a doctest of a recipe that declares functions for the replay checks (``JIT``)."""
    if type(item).__name__ != "DoctestItem" or not item.name.startswith("cookbook."):
        return None
    from cookbook import _book

    name = ".".join(item.name.split(".")[:3])
    if not _book.is_recipe(name):
        return None
    import importlib

    return name if getattr(importlib.import_module(name), "JIT", None) else None


def _replay():
    """``tests/replay.py``, imported once under the name the replay checks import it by."""
    import importlib.util
    import sys
    from pathlib import Path

    if "replay" not in sys.modules:
        path = Path(__file__).resolve().parent / "tests" / "replay.py"
        spec = importlib.util.spec_from_file_location("replay", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["replay"] = module
        spec.loader.exec_module(module)
    return sys.modules["replay"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Run a recipe's examples with its declared functions recording their calls (tests/replay.py),
    so that its replay checks need not run the examples a second time."""
    recipe = _recipe_of_examples(item)
    if recipe is None:
        return (yield)
    # A recorded call may hold a function that the examples defined (a loss as a lambda over their
    # arrays), which reads the examples' names when it runs: keep them, instead of letting doctest
    # clear them when the examples end.
    item.runner.run = functools.partial(type(item.runner).run, item.runner, clear_globs=False)
    try:
        with _replay().recording(recipe, item.name):
            return (yield)
    finally:
        del item.runner.run


def pytest_collection_finish(session):
    """Move what collection made (the imported libraries, the book, the test items) out of Python's
    garbage collector's view: it lives as long as the session, and each full collection would
    otherwise walk all of it again (a few per cent of a test run's time)."""
    import gc

    gc.collect()
    gc.freeze()


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected theirs
def pytest_collection_modifyitems(config, items):
    """Under ``COOKBOOK_PAGES_DOCTESTED=1`` (``make check``, which has just run the page's examples under
    Sphinx's doctest builder), leave out the page examples (module docstrings).

    Function docstring examples, which are not on the pages as examples, always run here, and
    ``make test`` and a plain ``pytest`` run every example.
    """
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

    from benchmarks.costs import COSTS

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
