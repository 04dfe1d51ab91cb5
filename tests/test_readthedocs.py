"""The links into other projects' documentation, and the build that follows .readthedocs.yaml."""

import sys
import urllib.error
from pathlib import Path

import pytest
import yaml
from sphinx.util.inventory import InventoryFile

from cookbook._book import intersphinx, readthedocs

ROOT = Path(__file__).resolve().parents[1]
INVENTORY = b"# Sphinx inventory version 2\n# Project: X\n# Version: 1\n# The remainder ...\n"


# ---- intersphinx ---------------------------------------------------------------------------------

def test_the_kept_python_inventory_is_python_311_and_names_the_doctest_page():
    url, path = intersphinx.KEPT["python"]
    inventory = InventoryFile.loads((ROOT / path).read_bytes(), uri=url)
    item = inventory.data["py:module"]["doctest"]
    assert (item.project_name, item.project_version) == ("Python", "3.11")
    assert item.uri == "https://docs.python.org/3.11/library/doctest.html#module-doctest"
    assert len(inventory.data["py:function"]) > 1000


def test_offline_the_mapping_is_the_kept_inventories_and_nothing_is_fetched(tmp_path):
    def refuse(url, timeout):
        raise AssertionError("an offline build fetched " + url)

    got = intersphinx.mapping(ROOT, online=False, cache_dir=tmp_path, download=refuse)
    assert got == {"python": ("https://docs.python.org/3.11", str(ROOT / intersphinx.KEPT["python"][1]))}


def test_online_each_inventory_that_comes_is_read_from_a_local_copy(tmp_path):
    asked = []

    def download(url, timeout):
        asked.append(url)
        return INVENTORY + url.encode()

    got = intersphinx.mapping(ROOT, online=True, cache_dir=tmp_path, download=download, wait=0)
    assert asked == [f"{u}/objects.inv" for u in intersphinx.ONLINE.values()]
    for name, url in intersphinx.ONLINE.items():
        assert got[name] == (url, str(tmp_path / f"{name}.inv"))
        assert (tmp_path / f"{name}.inv").read_bytes() == INVENTORY + f"{url}/objects.inv".encode()


@pytest.mark.parametrize("failure", ["refused", "timeout", "not an inventory"])
def test_a_site_that_does_not_answer_drops_its_links_and_does_not_fail_the_build(tmp_path, failure):
    calls, said = [], []

    def download(url, timeout):
        calls.append(url)
        if failure == "refused":
            raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
        if failure == "timeout":
            raise TimeoutError("timed out")
        return b"<html>proxy error</html>"

    got = intersphinx.mapping(ROOT, online=True, cache_dir=tmp_path, report=said.append, download=download,
                              attempts=3, wait=0)
    assert set(got) == {"python"}
    assert len(calls) == 3 * len(intersphinx.ONLINE)  # every site was tried three times
    assert len(said) == len(intersphinx.ONLINE) and all("no links into" in s for s in said)
    assert not list(tmp_path.iterdir())


def test_a_site_that_answers_on_the_second_try_is_linked(tmp_path):
    replies = [OSError("reset"), INVENTORY]

    def download(url, timeout):
        reply = replies.pop(0) if replies else INVENTORY
        if isinstance(reply, Exception):
            raise reply
        return reply

    path, why = intersphinx.fetch("https://example.org", tmp_path / "x.inv", download=download, wait=0)
    assert path == tmp_path / "x.inv" and why == ""


def test_fetch_refuses_zero_attempts(tmp_path):
    with pytest.raises(ValueError, match="attempts must be at least 1, got 0"):
        intersphinx.fetch("https://example.org", tmp_path / "x.inv", attempts=0)


def test_a_missing_kept_inventory_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="python inventory kept in the repository is missing"):
        intersphinx.mapping(tmp_path, online=False, cache_dir=tmp_path)


# ---- the Read-the-Docs-like build ----------------------------------------------------------------

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
