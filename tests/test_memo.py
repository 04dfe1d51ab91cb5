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


def test_xla_flags_and_jax_settings_are_part_of_the_key_and_the_cache_s_place_is_not(monkeypatch):
    args = (jax.random.key(0), jnp.arange(3.0))
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=1")
    before = _memo.cache_key(_train, args, {"steps": 2})
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/elsewhere")
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "7")
    assert _memo.cache_key(_train, args, {"steps": 2}) == before
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=1 --xla_cpu_use_fusion_emitters=false")
    flags = _memo.cache_key(_train, args, {"steps": 2})
    monkeypatch.setenv("JAX_DEFAULT_MATMUL_PRECISION", "highest")
    assert len({before, flags, _memo.cache_key(_train, args, {"steps": 2})}) == 3


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
