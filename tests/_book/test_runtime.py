"""What every process that runs the book's code sets up (cookbook/_book/runtime.py): eight devices that
leave single-device results unchanged, the doctest flags, whole compilation-cache entries, and compiled
programs released before the memory mappings run out."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from cookbook._book import runtime


def test_the_doctest_set_up_is_in_force():
    # conftest.py calls doctest_setup before anything computes: rank promotion raises, and NumPy
    # prints four decimals, which every page's printed figures assume.
    assert jax.config.jax_numpy_rank_promotion == "raise"
    assert np.get_printoptions()["precision"] == 4 and np.get_printoptions()["suppress"]
    with pytest.raises(ValueError, match="jax_numpy_rank_promotion=.raise."):
        jax.numpy.ones((2, 3)) + jax.numpy.ones(3)


def test_the_compilation_cache_writes_whole_entries(tmp_path):
    # doctest_setup (run by conftest) replaces JAX's in-place write by a write-and-rename, so that a
    # second process never reads a half-written entry.
    from jax._src import lru_cache

    assert getattr(lru_cache.LRUCache.put, "atomic", False)
    cache = lru_cache.LRUCache(str(tmp_path), max_size=-1)
    cache.put("k", b"value")
    assert cache.get("k") == b"value"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k-cache"]  # no temporary file is left
    cache.put("k", b"other")  # an existing entry is kept, as before
    assert cache.get("k") == b"value"


def test_compiled_programs_are_released_past_a_share_of_the_mapping_cap(monkeypatch):
    # Each loaded CPU program holds memory mappings; past a share of vm.max_map_count the caches are
    # cleared, which unloads the programs and gives their mappings back.
    if runtime._memory_mappings() is None:
        pytest.skip("no /proc/self/maps on this system")
    functions = [jax.jit(lambda x, i=i: x + i) for i in range(20)]
    for i, f in enumerate(functions):
        f(np.ones(i + 1, np.float32)).block_until_ready()
    before = runtime._memory_mappings()
    assert all(f._cache_size() == 1 for f in functions)
    # Under the threshold nothing is cleared, and a check within every_s seconds does not count again.
    assert not runtime.release_compiled_programs(fraction=1.0, every_s=0.0)
    assert not runtime.release_compiled_programs(fraction=0.0, every_s=3600.0)
    assert all(f._cache_size() == 1 for f in functions)
    monkeypatch.setattr(runtime, "_MAPS_CHECKED_AT", [float("-inf")])
    assert runtime.release_compiled_programs(fraction=0.0, every_s=0.0)
    assert all(f._cache_size() == 0 for f in functions)
    assert runtime._memory_mappings() < before - 20  # about three mappings per program came back


_ONE_PROGRAM = """
import jax, jax.numpy as jnp, numpy as np
from cookbook.attention.scaled_dot_product import scaled_dot_product_attention
x = np.random.default_rng(3).normal(size=(5, 7, 4)).astype(np.float32)
print(jax.device_count(), np.asarray(scaled_dot_product_attention(x, x, x)).tobytes().hex())
"""


def test_the_book_sees_eight_devices_and_single_device_results_do_not_change():
    """The suite presents the CPU as 8 devices (for the parallelism chapter); a recipe that uses one
    device gives the same bits as in a process that has only one."""
    assert jax.device_count() == runtime.SIMULATED_DEVICES == 8
    here = {}
    exec(_ONE_PROGRAM.replace("print(", "here['out'] = ("), {"here": here})
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "1"}
    alone = subprocess.run([sys.executable, "-c", _ONE_PROGRAM], capture_output=True, text=True,
                           env=env, check=True).stdout.split()
    assert alone[0] == "1"
    assert here["out"][0] == 8 and here["out"][1] == alone[1]
