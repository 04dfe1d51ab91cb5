"""Links into other projects' documentation (Sphinx's intersphinx), with or without a network.

Intersphinx turns a reference such as ``:mod:`doctest``` into a link to the page that documents it,
by reading the other project's inventory (its ``objects.inv``). Every build uses it:

* Python's inventory is kept in the repository (``docs/_inventories/python-3.11.inv``, taken from
  Debian's ``python3.11-doc`` package, 3.11.2), so that links into the Python documentation are the
  same on Read the Docs, on a laptop with no network, and in the tests. It names pages of
  https://docs.python.org/3.11, the Python the book runs on.
* NumPy's and JAX's inventories are fetched only where the build asks for them (on Read the Docs).
  A fetch is tried a few times; a site that does not answer drops that project's links from this
  build and says so, instead of failing it. References into those projects are plain text then,
  as they are in every offline build (``nitpick_ignore_regex`` in ``conf.py`` accepts them).

Nothing here imports Sphinx.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

#: The inventories kept in the repository: name -> (the documentation's address, the file).
KEPT = {"python": ("https://docs.python.org/3.11", Path("docs/_inventories/python-3.11.inv"))}
#: The inventories fetched when the build is online: name -> the documentation's address.
ONLINE = {"numpy": "https://numpy.org/doc/stable", "jax": "https://docs.jax.dev/en/latest"}
#: The first line of every Sphinx inventory (version 2, the format Sphinx writes).
HEADER = b"# Sphinx inventory version 2\n"


def _download(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def fetch(url: str, target: Path, *, attempts: int = 3, timeout: float = 10.0, wait: float = 2.0,
          download: Callable[[str, float], bytes] = _download) -> tuple[Path | None, str]:
    """Fetch ``url/objects.inv`` into ``target``; return ``(target, "")``, or ``(None, why)``.

    A reply that is not a Sphinx inventory (a proxy's error page, say) counts as a failure, as does
    a network error or a timeout; each failure waits ``wait`` seconds, doubled each time, before the
    next of ``attempts`` tries.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    why = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(wait * 2 ** (attempt - 1))
        try:
            data = download(f"{url}/objects.inv", timeout)
        except OSError as error:  # URLError, timeouts and refused connections are OSErrors
            why = f"{type(error).__name__}: {error}"
            continue
        if not data.startswith(HEADER):
            why = f"the reply is not a Sphinx inventory (it begins {data[:40]!r})"
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return target, ""
    return None, why


def mapping(root: Path, *, online: bool, cache_dir: Path, report: Callable[[str], None] = print,
            **fetch_options) -> dict[str, tuple[str, str]]:
    """The ``intersphinx_mapping`` of the build: the kept inventories, and the online ones that came.

    Every value names a local file, so that intersphinx itself never touches the network.
    """
    result = {}
    for name, (url, path) in KEPT.items():
        local = Path(root) / path
        if not local.is_file():
            raise FileNotFoundError(f"the {name} inventory kept in the repository is missing: {local}")
        result[name] = (url, str(local))
    if online:
        for name, url in ONLINE.items():
            local, why = fetch(url, Path(cache_dir) / f"{name}.inv", **fetch_options)
            if local is None:
                report(f"intersphinx: no links into {name} in this build; {url}/objects.inv did not come ({why})")
            else:
                result[name] = (url, str(local))
    return result
