"""The record of what passed (cookbook/_passed.py): what a test's key covers, and a run that skips."""

import os
import subprocess
import sys

from cookbook import _passed

ROOT = _passed.ROOT


def _names(files):
    return {p.relative_to(ROOT).as_posix() for p in files}


def test_a_tests_inputs_are_what_it_imports_directly_and_through_others():
    files = _names(_passed.closure(ROOT / "tests" / "self_supervised" / "test_vicreg.py"))
    # the recipe, the module it borrows from, the packages above them, and the tests' helper modules
    assert {"cookbook/self_supervised/vicreg.py", "cookbook/self_supervised/simclr.py",
            "cookbook/self_supervised/__init__.py", "cookbook/__init__.py",
            "tests/self_supervised/ssl_helpers.py"} <= files
    assert "cookbook/self_supervised/byol.py" not in files
    # imports between recipes are followed: the Wasserstein GAN takes its networks from the GAN page
    assert "cookbook/generative/gan.py" in _names(_passed.closure(ROOT / "cookbook" / "generative" / "wasserstein_gan.py"))


def test_a_key_changes_with_any_file_it_covers_and_with_the_flags(monkeypatch):
    path, params = ROOT / "tests" / "generative" / "test_wasserstein_gan.py", {}
    before = _passed.test_key(path, params)
    assert before == _passed.test_key(path, params)
    real = _passed._file_hash

    def edited(target):
        def file_hash(p):
            return "edited" if p == ROOT / target else real(p)
        return file_hash

    for target in ("cookbook/generative/gan.py", "requirements/lock.txt", "cookbook/_checks.py"):
        monkeypatch.setattr(_passed, "_file_hash", edited(target))
        assert _passed.test_key(path, params) != before, target
    monkeypatch.setattr(_passed, "_file_hash", edited("cookbook/generative/vae.py"))  # not imported
    assert _passed.test_key(path, params) == before
    monkeypatch.setattr(_passed, "_file_hash", real)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=true")
    assert _passed.test_key(path, params) != before


def test_book_wide_tests_are_keyed_per_recipe_or_always_run():
    replay = ROOT / "tests" / "test_replay.py"
    gan = _passed.test_key(replay, {"name": "cookbook.generative.gan"})
    vae = _passed.test_key(replay, {"name": "cookbook.generative.vae"})
    assert gan and vae and gan != vae
    # The tests of the book's machinery (tests/_book/) read every recipe at run time, not by an import:
    # keyed by their imports, they would be skipped after a recipe changed. They always run.
    assert _passed.test_key(ROOT / "tests" / "_book" / "test_check.py", {"name": "cookbook.generative.gan"}) is None
    assert _passed.test_key(ROOT / "tests" / "_book" / "test_notebooks.py", {"name": "cookbook.generative.gan"}) is None
    assert _passed.test_key(ROOT / "tests" / "test_memo.py", {}) is None


def test_a_test_that_passed_is_not_run_again_until_an_input_changes(tmp_path):
    record = tmp_path / "passed.json"
    env = {**os.environ, "COOKBOOK_PASSED": str(record)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:randomly",
               "tests/foundations/test_losses.py", "-k", "test_huber_is_half_mse_inside_delta_and_linear_outside"]

    def run():
        out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        assert out.returncode in (0, 5), out.stdout + out.stderr  # 5: every test deselected
        return out.stdout

    assert "1 passed" in run()
    second = run()
    assert "passed" not in second.splitlines()[-1] and "1 of 1 tests passed before" in second
    # (that an edited input gives another key, which runs the test again, is checked above)
