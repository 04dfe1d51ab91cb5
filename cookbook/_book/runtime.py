"""What every process that runs the book's code sets up: the build, Sphinx's doctests and pytest.

It presents the CPU as several JAX devices, sets the doctest flags, keeps JAX's compilation cache
safe between processes, and releases compiled programs before a long run exhausts the process's
memory mappings.
"""

from __future__ import annotations

from pathlib import Path


def doctest_setup() -> None:
    """The set-up shared by Sphinx's doctest builder and pytest's doctests."""
    import os

    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import numpy as np

    simulate_devices()
    jax.config.update("jax_numpy_rank_promotion", "raise")
    np.set_printoptions(precision=4, suppress=True)
    _atomic_compilation_cache_writes()
    release_compiled_programs()


# The parallelism chapter shards its arrays over this many devices. On a machine with one CPU, XLA
# can present the CPU as several devices; a program that uses one device compiles and runs as it
# would with one, so the rest of the book is unaffected.
SIMULATED_DEVICES = 8


def simulate_devices(count: int = SIMULATED_DEVICES) -> None:
    """Present the CPU as ``count`` JAX devices, if JAX has not started its CPU backend yet.

    JAX reads ``jax_num_cpu_devices`` once, when its first computation starts the backend; after that
    this does nothing (the process keeps the devices it started with). The book's build (``conf.py``)
    and its tests (``conftest.py``) call it before anything computes. A reader who runs the
    parallelism chapter's code elsewhere calls ``jax.config.update("jax_num_cpu_devices", 8)``
    right after ``import jax``.
    """
    import jax
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return
    if jax.config.jax_num_cpu_devices < count:
        jax.config.update("jax_num_cpu_devices", count)


# How many memory mappings this process may hold (Linux's vm.max_map_count), read once; None where
# there is no /proc to tell.
_MAX_MAPS: list[int | None] = []
_MAPS_CHECKED_AT = [float("-inf")]


def _memory_mappings() -> int | None:
    try:
        with open("/proc/self/maps", "rb") as f:
            return f.read().count(b"\n")
    except OSError:
        return None


def release_compiled_programs(*, fraction: float = 0.5, every_s: float = 5.0) -> bool:
    """Drop JAX's in-memory caches of compiled programs when this process holds many of them.

    Every program that XLA compiles for the CPU stays loaded for the life of the process (JAX keeps
    it for the next call with the same shapes) and holds about three memory mappings. Linux caps the
    mappings of one process (``vm.max_map_count``, 65530 by default); a long run that compiles tens
    of thousands of programs, as a pytest worker does across the book's tests and bad-input replays,
    reaches the cap, the next mapping fails inside XLA's compiler, and the process dies of a
    segmentation fault. When the mappings pass ``fraction`` of the cap, this clears JAX's caches
    (``jax.clear_caches``), which unloads the programs; later calls compile again, or read the
    persistent compilation cache. Counting the mappings reads ``/proc/self/maps`` (about 30 ms at
    30 000 of them), so it is done at most once every ``every_s`` seconds. Returns whether it cleared.
    """
    import gc
    import time

    now = time.monotonic()
    if now - _MAPS_CHECKED_AT[0] < every_s:
        return False
    _MAPS_CHECKED_AT[0] = now
    if not _MAX_MAPS:
        try:
            _MAX_MAPS.append(int(Path("/proc/sys/vm/max_map_count").read_text()))
        except (OSError, ValueError):
            _MAX_MAPS.append(None)
    mappings = _memory_mappings()
    if _MAX_MAPS[0] is None or mappings is None or mappings < fraction * _MAX_MAPS[0]:
        return False
    import jax

    jax.clear_caches()
    gc.collect()
    return True


def _atomic_compilation_cache_writes() -> None:
    """Make JAX's persistent compilation cache write each entry whole or not at all.

    Its file cache (JAX 0.10, without eviction) writes an entry in place, so a second process that
    compiles the same program (two pytest workers, or Sphinx's doctest builder beside them) can read
    a half-written file, and XLA may abort the process while deserialising it. (A worker that died
    while deserialising an entry, in a ``make test`` run, is more likely to have met the mapping cap
    of :func:`release_compiled_programs`; the race is real either way.) Writing to a temporary file
    and renaming it over the entry's name, which is
    atomic on one file system, leaves readers either no entry or a whole one. The cache with eviction
    enabled locks instead, but scans the whole folder on every write, which is far slower here.
    """
    import os

    from jax._src import lru_cache

    if getattr(lru_cache.LRUCache.put, "atomic", False):
        return
    original = lru_cache.LRUCache.put

    def put(self, key: str, value: bytes) -> None:
        if not key or self.eviction_enabled:
            return original(self, key, value)
        path = os.fspath(self.path / f"{key}{lru_cache._CACHE_SUFFIX}")
        if os.path.exists(path):
            return
        temporary = f"{path}.{os.getpid()}.partial"
        with open(temporary, "wb") as f:
            f.write(value)
        os.replace(temporary, path)

    put.atomic = True
    lru_cache.LRUCache.put = put
