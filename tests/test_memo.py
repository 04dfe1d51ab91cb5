"""The disk cache of training runs (``cookbook/_memo.py``): a hit returns what the run returned, and
anything the result depends on makes a new key."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook import _memo

CALLS = []


@_memo.cached
def _train(key, x, *, steps):
    CALLS.append(steps)
    noise = jax.random.normal(key, x.shape)
    return {"w": x * steps + noise}, jnp.arange(steps, dtype=jnp.float32)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(_memo.ENV, str(tmp_path))
    CALLS.clear()
    return tmp_path


def test_equal_arguments_hit_the_cache_and_return_the_same_values(cache):
    x = jnp.arange(3.0)
    first = _train(jax.random.key(0), x, steps=2)
    second = _train(jax.random.key(0), x, steps=2)
    assert CALLS == [2] and len(list(cache.glob("*.pkl"))) == 1
    assert isinstance(second[0]["w"], jax.Array)
    np.testing.assert_array_equal(second[0]["w"], first[0]["w"])
    np.testing.assert_array_equal(second[1], first[1])


def test_any_changed_argument_is_a_new_entry(cache):
    x = jnp.arange(3.0)
    _train(jax.random.key(0), x, steps=2)
    _train(jax.random.key(1), x, steps=2)  # another key
    _train(jax.random.key(0), x + 1, steps=2)  # other data
    _train(jax.random.key(0), x, steps=3)  # another static argument
    assert CALLS == [2, 2, 2, 3] and len(list(cache.glob("*.pkl"))) == 4


def test_the_source_is_part_of_the_key(monkeypatch):
    args = (jax.random.key(0), jnp.arange(3.0))
    before = _memo.cache_key(_train, args, {"steps": 2})
    monkeypatch.setattr(_memo, "_module_sources", lambda name, seen: [b"edited source"])
    assert _memo.cache_key(_train, args, {"steps": 2}) != before


def test_without_the_variable_or_under_jit_it_simply_runs(cache, monkeypatch):
    x = jnp.arange(3.0)
    jax.jit(_train, static_argnames="steps")(jax.random.key(0), x, steps=4)
    assert CALLS == [4] and not list(cache.glob("*.pkl"))
    monkeypatch.delenv(_memo.ENV)
    _train(jax.random.key(0), x, steps=5)
    _train(jax.random.key(0), x, steps=5)
    assert CALLS == [4, 5, 5]


def test_the_book_modules_a_recipe_imports_are_part_of_its_key():
    sources = _memo._module_sources("cookbook.convolution.unet", set())
    names = {s.decode() for s in sources[::2]}
    # unet imports conv2d and lenet's adam_step; lenet imports more in turn, and _memo itself counts.
    assert {"cookbook.convolution.unet", "cookbook.convolution.conv2d", "cookbook.convolution.lenet"} <= names


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
    from cookbook._book import runtime as _book

    if _book._memory_mappings() is None:
        pytest.skip("no /proc/self/maps on this system")
    functions = [jax.jit(lambda x, i=i: x + i) for i in range(20)]
    for i, f in enumerate(functions):
        f(np.ones(i + 1, np.float32)).block_until_ready()
    before = _book._memory_mappings()
    assert all(f._cache_size() == 1 for f in functions)
    # Under the threshold nothing is cleared, and a check within every_s seconds does not count again.
    assert not _book.release_compiled_programs(fraction=1.0, every_s=0.0)
    assert not _book.release_compiled_programs(fraction=0.0, every_s=3600.0)
    assert all(f._cache_size() == 1 for f in functions)
    monkeypatch.setattr(_book, "_MAPS_CHECKED_AT", [float("-inf")])
    assert _book.release_compiled_programs(fraction=0.0, every_s=0.0)
    assert all(f._cache_size() == 0 for f in functions)
    assert _book._memory_mappings() < before - 20  # about three mappings per program came back


_ONE_PROGRAM = """
import jax, jax.numpy as jnp, numpy as np
from cookbook.attention.scaled_dot_product import scaled_dot_product_attention
x = np.random.default_rng(3).normal(size=(5, 7, 4)).astype(np.float32)
print(jax.device_count(), np.asarray(scaled_dot_product_attention(x, x, x)).tobytes().hex())
"""


def test_the_book_sees_eight_devices_and_single_device_results_do_not_change():
    """The suite presents the CPU as 8 devices (for the parallelism chapter); a recipe that uses one
    device gives the same bits as in a process that has only one."""
    import os
    import subprocess
    import sys

    from cookbook import _book

    assert jax.device_count() == _book.SIMULATED_DEVICES == 8
    here = {}
    exec(_ONE_PROGRAM.replace("print(", "here['out'] = ("), {"here": here})
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "1"}
    alone = subprocess.run([sys.executable, "-c", _ONE_PROGRAM], capture_output=True, text=True,
                           env=env, check=True).stdout.split()
    assert alone[0] == "1"
    assert here["out"][0] == 8 and here["out"][1] == alone[1]
