"""How ``make test`` hands tests to its workers, and how a recipe's examples serve its replay checks.

This file sits below ``tests/`` rather than beside the book-wide checks, so that ``make test`` keys it
like a recipe's tests (by what it imports and the files every test reads, conftest.py and
tests/replay.py among them; see cookbook/_passed.py) instead of running its two-worker run every time.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("book_conftest", ROOT / "conftest.py")
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)  # the repository's own conftest.py (tests/ has another)
work_unit = _conftest.work_unit
replay = _conftest._replay()  # tests/replay.py, the module the replay checks use


def test_a_test_module_is_one_unit_and_a_recipes_examples_join_its_replay_checks():
    assert work_unit("tests/attention/test_rope.py::test_a") == "tests/attention/test_rope.py"
    assert work_unit("tests/attention/test_rope.py::test_b[2]") == "tests/attention/test_rope.py"
    rope = {work_unit(n) for n in ("cookbook/attention/rope.py::cookbook.attention.rope",
                                   "cookbook/attention/rope.py::cookbook.attention.rope.apply_rope",
                                   "tests/test_replay.py::test_declared_functions_agree_under_jit[cookbook.attention.rope]",
                                   "tests/test_replay.py::test_bad_input_gets_a_clear_error[cookbook.attention.rope]")}
    assert rope == {"replay-cookbook.attention.rope"}
    assert work_unit("tests/test_replay.py::test_bad_input_gets_a_clear_error[cookbook.attention.alibi]") \
        == "replay-cookbook.attention.alibi"
    # A chapter's introduction and its private helpers are not recipes: each is its own unit.
    assert work_unit("cookbook/attention/__init__.py::cookbook.attention") == "cookbook/attention/__init__.py"
    assert work_unit("cookbook/transformers/_boundary.py::x") == "cookbook/transformers/_boundary.py"


def test_the_browsers_visits_are_spread_over_two_halves():
    from cookbook import _book

    pages = ["docs/chapters/" + "/".join(n.split(".")[1:]) + ".html" for n in _book.all_recipes()]
    halves = [work_unit(f"tests/browser/test_book_in_browser.py::test_recipe_page[{p}]") for p in pages]
    assert set(halves) == {"browser-0", "browser-1"}
    assert 0.3 < halves.count("browser-0") / len(halves) < 0.7
    assert work_unit("tests/browser/test_book_in_browser.py::test_landing_page") == "browser-0"


def test_recorded_calls_put_the_function_examples_first_then_the_page():
    name = "cookbook.fake.recipe"
    page_call, fn_call = ((np.ones(2),), {}, 1.0), ((np.ones(3),), {}, 2.0)
    replay._RECORDED[name] = {name: ({"f": [page_call]}, {"f": 0.5}),
                              f"{name}.f": ({"f": [fn_call]}, {"f": 0.25})}
    try:
        calls, seconds = replay._from_recording(name)
        assert calls["f"] == [fn_call, page_call] and seconds == {"f": 0.25}
        # A declared function that no recorded example called: the recording is not used.
        replay._RECORDED[name][name][0]["g"] = []
        assert replay._from_recording(name) is None
        # Without the page's own examples (a run with -k that left them out), neither.
        del replay._RECORDED[name][name]
        assert replay._from_recording(name) is None
    finally:
        replay._RECORDED.pop(name, None)


def test_a_signature_names_shapes_dtypes_and_static_values():
    a = replay.signature((np.zeros((2, 3), np.float32),), {"n": 4}, static=("n",))
    assert a == replay.signature((np.ones((2, 3), np.float32),), {"n": 4}, static=("n",))
    assert a != replay.signature((np.zeros((2, 4), np.float32),), {"n": 4}, static=("n",))
    assert a != replay.signature((np.zeros((2, 3), np.float32),), {"n": 5}, static=("n",))


def test_under_make_test_the_replay_checks_use_the_calls_the_examples_recorded():
    # Two workers, one recipe's examples and its replay checks, and a test module: each unit runs on
    # one worker, the examples before the checks, and the checks find the recorded calls (the
    # fallback that would run the examples again is turned into an error).
    env = {**os.environ, "COOKBOOK_REPLAY_RECORDED_ONLY": "1"}
    env.pop("COOKBOOK_PASSED", None)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider",
         "cookbook/normalization/rms_norm.py", "tests/normalization/test_rms_norm.py",
         "tests/test_replay.py", "-k", "rms_norm"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    ran = re.findall(r"\[(gw\d)\] \[\s*\d+%\] PASSED (\S+)", out.stdout)
    workers: dict[str, set] = {}
    for worker, nodeid in ran:
        workers.setdefault(work_unit(nodeid), set()).add(worker)
    assert set(workers) == {"replay-cookbook.normalization.rms_norm", "tests/normalization/test_rms_norm.py"}, ran
    assert all(len(w) == 1 for w in workers.values()), workers
    order = [n for _, n in ran if work_unit(n) == "replay-cookbook.normalization.rms_norm"]
    assert order[0].startswith("cookbook/") and order[-1].startswith("tests/test_replay.py"), order
