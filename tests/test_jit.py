"""Every function that a recipe declares jit-able gives the same values under :func:`jax.jit`.

The inputs are the ones the recipe's own examples use: the examples run once with each declared
function wrapped to record its arguments and its (eager) result, and each recorded call with a
distinct signature is then repeated under ``jax.jit`` and its result compared.
"""

import doctest
import functools
import importlib

import jax
import numpy as np
import pytest

from cookbook import _book

RTOL, ATOL = 1e-4, 1e-5  # XLA may fuse and reorder float operations under jit


def _is_traced(tree):
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


def _record_calls(module, monkeypatch):
    calls = {name: [] for name in module.JIT}
    for name in module.JIT:
        fn = getattr(module, name)

        @functools.wraps(fn)
        def recorder(*args, __fn=fn, __name=name, **kwargs):
            out = __fn(*args, **kwargs)
            if not _is_traced((args, kwargs, out)):
                calls[__name].append((args, kwargs, out))  # the eager result, compared below
            return out

        monkeypatch.setattr(module, name, recorder)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    # Function docstrings first (short), then the page's example; each docstring's examples run one
    # at a time in its own namespace, and the replay stops once every declared function was called.
    tests = sorted(doctest.DocTestFinder().find(module), key=lambda t: t.name == module.__name__)
    for test in tests:
        for example in test.examples:
            if all(calls.values()):
                break
            one = doctest.DocTest([example], {}, test.name, test.filename, test.lineno, test.docstring)
            one.globs = test.globs  # shared, so that later examples see what earlier ones defined
            runner.run(one, out=lambda _: None, clear_globs=False)
    monkeypatch.undo()
    return calls


def _signature(args, kwargs, static):
    """What jit compiles for: the shapes and dtypes of the arrays, and the values of the rest."""
    def leaf(x):
        return (x.shape, str(x.dtype)) if isinstance(x, (jax.Array, np.ndarray)) else repr(x)

    dynamic = {k: v for k, v in kwargs.items() if k not in static}
    return repr((jax.tree.map(leaf, (args, dynamic)), {k: kwargs[k] for k in static if k in kwargs}))


def _assert_same(eager, jitted, where):
    eager_leaves, eager_def = jax.tree.flatten(eager)
    jit_leaves, jit_def = jax.tree.flatten(jitted)
    assert eager_def == jit_def, f"{where}: output structure differs under jit"
    for a, b in zip(eager_leaves, jit_leaves):
        a, b = np.asarray(a), np.asarray(b)
        if np.issubdtype(a.dtype, np.inexact):
            np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL, err_msg=where)
        elif jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            np.testing.assert_array_equal(jax.random.key_data(b), jax.random.key_data(a), err_msg=where)
        else:
            np.testing.assert_array_equal(b, a, err_msg=where)


@pytest.mark.parametrize("name", _book.all_recipes())
def test_declared_functions_agree_under_jit(name, monkeypatch):
    module = importlib.import_module(name)
    calls = _record_calls(module, monkeypatch)
    for fn_name, static in module.JIT.items():
        assert calls[fn_name], f"{name}.{fn_name} is declared jit-able but no example calls it"
        fn = getattr(module, fn_name)
        jitted = jax.jit(fn, static_argnames=static)
        # One call per distinct signature (a second call with the same shapes traces nothing new),
        # at most three.
        distinct = {}
        for args, kwargs, eager in calls[fn_name]:
            distinct.setdefault(_signature(args, kwargs, static), (args, kwargs, eager))
        for args, kwargs, eager in list(distinct.values())[:3]:
            _assert_same(eager, jitted(*args, **kwargs), f"{name}.{fn_name}")
