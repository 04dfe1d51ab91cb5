"""The calls that a recipe's own examples make, recorded once and replayed by the book-wide checks.

The examples of a module (function docstrings first, then the page's example) run once with each
function that the module declares in ``JIT`` wrapped so that it records its arguments and its
eager result. ``tests/test_replay.py`` repeats those calls under :func:`jax.jit` and with mutated
inputs. The replay stops as soon as every declared function has been called once.
"""

from __future__ import annotations

import doctest
import functools
import importlib
import time

import jax

_CACHE: dict[str, dict[str, list]] = {}
#: Seconds that the first recorded call of each function took, eagerly: {module: {function: s}}.
SECONDS: dict[str, dict[str, float]] = {}


def _is_traced(tree):
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


def recorded_calls(name: str) -> dict[str, list[tuple[tuple, dict, object]]]:
    """``{function name: [(args, kwargs, eager result), ...]}`` for the module ``name``."""
    if name in _CACHE:
        return _CACHE[name]
    module = importlib.import_module(name)
    calls = {fn: [] for fn in module.JIT}
    originals = {fn: getattr(module, fn) for fn in module.JIT}
    for fn_name, fn in originals.items():

        @functools.wraps(fn)
        def recorder(*args, __fn=fn, __name=fn_name, **kwargs):
            start = time.perf_counter()
            out = __fn(*args, **kwargs)
            if not _is_traced((args, kwargs, out)):
                jax.block_until_ready(out)
                if not calls[__name]:
                    SECONDS.setdefault(name, {})[__name] = time.perf_counter() - start
                calls[__name].append((args, kwargs, out))
            return out

        setattr(module, fn_name, recorder)
    try:
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        # Function docstrings first (short), then the page's example; each docstring's examples run
        # one at a time in its own namespace, and the replay stops once every function was called.
        tests = sorted(doctest.DocTestFinder().find(module), key=lambda t: t.name == module.__name__)
        for test in tests:
            for example in test.examples:
                if all(calls.values()):
                    break
                one = doctest.DocTest([example], {}, test.name, test.filename, test.lineno, test.docstring)
                one.globs = test.globs  # shared, so that later examples see what earlier ones defined
                runner.run(one, out=lambda _: None, clear_globs=False)
    finally:
        for fn_name, fn in originals.items():
            setattr(module, fn_name, fn)
    _CACHE[name] = calls
    return calls
