"""Links into other projects' documentation (cookbook/_book/intersphinx.py): the kept Python inventory
offline, fetched inventories online, and a site that does not answer."""

import urllib.error
from pathlib import Path

import pytest
from sphinx.util.inventory import InventoryFile

from cookbook._book import intersphinx

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = b"# Sphinx inventory version 2\n# Project: X\n# Version: 1\n# The remainder ...\n"


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
