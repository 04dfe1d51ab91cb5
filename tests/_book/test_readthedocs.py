"""The build that follows .readthedocs.yaml (cookbook/_book/readthedocs.py): its steps, its environment,
its copy of the checkout, and no network."""

import sys
from pathlib import Path

import pytest
import yaml

from cookbook._book import readthedocs

ROOT = Path(__file__).resolve().parents[2]

def _config():
    return yaml.safe_load((ROOT / ".readthedocs.yaml").read_text())


def test_the_steps_follow_readthedocs_yaml(tmp_path):
    venv, out = tmp_path / "venv", tmp_path / "out"
    plan = readthedocs.steps(_config(), tmp_path, venv, out)
    python = str(venv / "bin" / "python")
    assert [what for what, _, _ in plan] == [
        "upgrade pip and setuptools", "install requirements/lock.txt", "install . (not editable)",
        "post_install: npm ci --no-audit --no-fund", "sphinx build"]
    install = plan[2][1]
    assert install[:3] == [python, "-m", "pip"] and install[-1] == "." and "-e" not in install
    build = plan[-1][1]
    assert build == [python, "-m", "sphinx", "-T", "-W", "--keep-going", "-b", "html", "-d", "_build/doctrees",
                     "-D", "language=en", ".", str(out / "html")]
    assert [network for _, _, network in plan] == [True, True, True, True, False]  # the build is offline


def test_the_steps_refuse_a_configuration_they_do_not_know(tmp_path):
    config = _config()
    config["python"]["install"].append({"method": "setuptools", "path": "."})
    with pytest.raises(ValueError, match="an install entry this check does not know"):
        readthedocs.steps(config, tmp_path, tmp_path, tmp_path)
    config = _config()
    config["build"]["tools"]["python"] = "3.12"
    with pytest.raises(ValueError, match="asks for Python '3.12'; this is 3.11"):
        readthedocs.steps(config, tmp_path, tmp_path, tmp_path)


def test_the_environment_holds_readthedocs_variables_and_nothing_of_this_shell(tmp_path, monkeypatch):
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/somewhere")
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=1")
    env = readthedocs.rtd_environment(tmp_path / "venv", tmp_path / "out")
    assert env["READTHEDOCS"] == "True"
    assert env["READTHEDOCS_CANONICAL_URL"] == "https://deep-learning-cookbook.readthedocs.io/en/latest/"
    assert env["PATH"].startswith(str(tmp_path / "venv" / "bin"))
    assert not any(k.startswith(("JAX_", "XLA_", "COOKBOOK_")) for k in env)


def test_the_copy_holds_what_git_would_hold_and_not_what_it_ignores(tmp_path):
    readthedocs.copy_checkout(ROOT, tmp_path)
    assert (tmp_path / ".readthedocs.yaml").is_file() and (tmp_path / "cookbook" / "_book" / "readthedocs.py").is_file()
    assert (tmp_path / "docs" / "_inventories" / "python-3.11.inv").is_file()
    assert not (tmp_path / ".venv").exists() and not (tmp_path / "_build").exists()


def test_the_build_runs_without_a_network_where_linux_allows_it():
    argv, isolated = readthedocs.offline([sys.executable, "-c", "print(1)"])
    if not isolated:
        pytest.skip("unshare -n is refused on this machine")
    import subprocess

    code = "import socket; socket.create_connection(('pypi.org', 443), timeout=5)"
    cut = subprocess.run(readthedocs.offline([sys.executable, "-c", code])[0], capture_output=True, text=True)
    assert cut.returncode != 0 and ("Errno" in cut.stderr or "gaierror" in cut.stderr)
