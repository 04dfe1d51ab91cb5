"""The calls that a recipe's own examples make, recorded once and replayed by the book-wide checks.

Every function that a module declares in ``JIT`` is wrapped, while its examples run, so that it
records its arguments and its eager result. ``tests/test_replay.py`` repeats those calls under
:func:`jax.jit` and with mutated inputs.

Under ``make test`` the examples run once: pytest runs each recipe's examples (its page's and its
functions' docstrings) inside :func:`recording` (``conftest.py``), in the same worker as the
recipe's replay checks, which then find the calls here. Where they did not run in this process
(a selection with ``-k``), :func:`recorded_calls` runs them itself, function docstrings first, and
stops as soon as every declared function has been called once.
"""

from __future__ import annotations

import contextlib
import doctest
import os
import functools
import importlib
import time

import jax
import numpy as np

_CACHE: dict[str, dict[str, list]] = {}
#: Seconds that the first recorded call of each function took, eagerly: {module: {function: s}}.
SECONDS: dict[str, dict[str, float]] = {}
#: What :func:`recording` kept: {module: {doctest name: ({function: [calls]}, {function: seconds})}}.
_RECORDED: dict[str, dict[str, tuple[dict[str, list], dict[str, float]]]] = {}
#: The calls kept per function: the first, and others only for a signature not yet kept (the jit
#: check compiles one call per signature, at most three).
SIGNATURES_KEPT = 3


def signature(args, kwargs, static) -> str:
    """What jit compiles for: the shapes and dtypes of the arrays, and the values of the rest."""
    def leaf(x):
        return (x.shape, str(x.dtype)) if isinstance(x, (jax.Array, np.ndarray)) else repr(x)

    dynamic = {k: v for k, v in kwargs.items() if k not in static}
    return repr((jax.tree.map(leaf, (args, dynamic)), {k: kwargs[k] for k in static if k in kwargs}))


def _is_traced(tree):
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


@contextlib.contextmanager
def _recorders(name: str, keep):
    """Wrap the declared functions of module ``name``; each eager call is offered to ``keep``."""
    module = importlib.import_module(name)
    originals = {fn: getattr(module, fn) for fn in module.JIT}
    for fn_name, fn in originals.items():

        @functools.wraps(fn)
        def recorder(*args, __fn=fn, __name=fn_name, **kwargs):
            start = time.perf_counter()
            out = __fn(*args, **kwargs)
            if not _is_traced((args, kwargs, out)):
                jax.block_until_ready(out)
                keep(__name, (args, kwargs, out), time.perf_counter() - start)
            return out

        setattr(module, fn_name, recorder)
    try:
        yield module
    finally:
        for fn_name, fn in originals.items():
            setattr(module, fn_name, fn)


@contextlib.contextmanager
def recording(name: str, source: str):
    """Record the calls that the examples run inside this block make to module ``name``'s declared
    functions, as the examples of the docstring ``source`` (a doctest's name)."""
    module = importlib.import_module(name)
    calls: dict[str, list] = {fn: [] for fn in module.JIT}
    seconds: dict[str, float] = {}
    seen: dict[str, set] = {fn: set() for fn in module.JIT}

    def keep(fn_name, call, elapsed):
        args, kwargs, _ = call
        key = signature(args, kwargs, module.JIT[fn_name])
        if key not in seen[fn_name] and len(seen[fn_name]) < SIGNATURES_KEPT:
            seen[fn_name].add(key)
            calls[fn_name].append(call)
            seconds.setdefault(fn_name, elapsed)

    with _recorders(name, keep):
        yield
    _RECORDED.setdefault(name, {})[source] = (calls, seconds)
    _CACHE.pop(name, None)


def _from_recording(name: str):
    """The calls that :func:`recording` kept while pytest ran the module's examples, function
    docstrings first and then the page, as :func:`recorded_calls` itself orders them; None if the
    page's examples did not run in this process or left a declared function uncalled."""
    recorded = _RECORDED.get(name, {})
    if name not in recorded:
        return None
    order = sorted(source for source in recorded if source != name) + [name]
    calls, seconds = {}, {}
    for source in order:
        got, took = recorded[source]
        for fn_name, fn_calls in got.items():
            calls.setdefault(fn_name, []).extend(fn_calls)
            if fn_name in took:
                seconds.setdefault(fn_name, took[fn_name])
    if not all(calls.values()):
        return None
    return calls, seconds


def recorded_calls(name: str) -> dict[str, list[tuple[tuple, dict, object]]]:
    """``{function name: [(args, kwargs, eager result), ...]}`` for the module ``name``."""
    if name in _CACHE:
        return _CACHE[name]
    found = _from_recording(name)
    if found is not None:
        _CACHE[name], SECONDS[name] = found
        return _CACHE[name]
    if os.environ.get("COOKBOOK_REPLAY_RECORDED_ONLY") == "1":  # tests/test_workers.py
        raise RuntimeError(f"the examples of {name} did not run before its replay checks in this worker")
    module = importlib.import_module(name)
    calls = {fn: [] for fn in module.JIT}

    def keep(fn_name, call, elapsed):
        if not calls[fn_name]:
            SECONDS.setdefault(name, {})[fn_name] = elapsed
        calls[fn_name].append(call)

    with _recorders(name, keep):
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
    _CACHE[name] = calls
    return calls
