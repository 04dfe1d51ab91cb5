"""Book-wide checks on the calls that each recipe's own examples make (see ``replay.py``).

* **Under jit**: every function that a recipe declares in ``JIT`` gives the same values under
  :func:`jax.jit` as eagerly, on one call per distinct signature (at most three). A function that
  traces to a single call of a compiled core, with its inputs and outputs passed straight through,
  ran that same compiled program eagerly: it is traced under jit, and not compiled a second time.
* **Bad input** (the policy of the contributing page): the first recorded call of each declared
  function is repeated with one argument mutated at a time: a float array given an integer dtype,
  an extra leading axis, a trailing axis of another size, a Python list instead of an array, a NaN
  in a float array, and a float where a static integer (a size) belongs. Each mutated call must
  either raise a ``ValueError`` or ``TypeError`` from the book's own code whose message names the
  argument, or return what is not a silent wrong answer: the unmutated result, a result of other
  shapes (the function answered a different question, visibly), or, for a NaN, a NaN in the result.
  A result of the same shapes with other values, and no NaN to show it, fails. An argument whose
  last axis is a free length (a token sequence of any length) is named in the module's
  ``FREE_LENGTH = {"function": ("argument", ...)}``, and that axis is not resized. A function whose
  example call took over a second (a training run) is spared the list and the NaN, which it would
  only compute again in full.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import replay
from cookbook import _book

RTOL, ATOL = 1e-4, 1e-5  # XLA may fuse and reorder float operations under jit
#: A function whose example call took longer than this (a training run) is given only the mutations
#: that it must refuse outright (an integer dtype, a float where a size belongs), not those that it
#: may accept and then compile and run in full again (a list, a NaN, other shapes): each would cost a
#: whole training run, for no check that the recipe's own tests do not make (they check its shapes).
SLOW_CALL_S, RERUNS = 1.0, ("a Python list", "a NaN", "an extra leading axis", "a trailing axis")
RECIPES = _book.all_recipes()
BOOK = Path(_book.__file__).resolve().parents[1]  # the cookbook package


def _leaves(tree):
    leaves, treedef = jax.tree.flatten(tree)
    out = []
    for leaf in leaves:
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out.append(np.asarray(leaf))
    return out, treedef


def _assert_same(eager, jitted, where):
    eager_leaves, eager_def = _leaves(eager)
    jit_leaves, jit_def = _leaves(jitted)
    assert eager_def == jit_def, f"{where}: output structure differs under jit"
    for a, b in zip(eager_leaves, jit_leaves):
        if np.issubdtype(a.dtype, np.inexact):
            np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL, err_msg=where)
        else:
            np.testing.assert_array_equal(b, a, err_msg=where)


@pytest.mark.parametrize("name", RECIPES)
def test_declared_functions_agree_under_jit(name):
    import importlib

    module = importlib.import_module(name)
    calls = replay.recorded_calls(name)
    for fn_name, static in module.JIT.items():
        assert calls[fn_name], f"{name}.{fn_name} is declared jit-able but no example calls it"
        jitted = jax.jit(getattr(module, fn_name), static_argnames=static)
        # One call per distinct signature (a second call with the same shapes traces nothing new),
        # at most three.
        distinct = {}
        for args, kwargs, eager in calls[fn_name]:
            distinct.setdefault(replay.signature(args, kwargs, static), (args, kwargs, eager))
        for args, kwargs, eager in list(distinct.values())[:3]:
            if _calls_one_compiled_core(jitted, args, kwargs):
                continue  # traced under jit, and by construction the program its eager call ran
            _assert_same(eager, jitted(*args, **kwargs), f"{name}.{fn_name}")


def _calls_one_compiled_core(jitted, args, kwargs):
    """Whether the declared function, traced under jit on this call (which fails if its Python needs
    concrete values), is nothing but one call of a compiled core (a ``jax.jit`` function) that takes
    the function's inputs as they come and returns its outputs as they are.

    Its eager call then ran that same compiled core on the same inputs after the same checks, so its
    values under jit are the eager values by construction, and compiling the core again inside
    another program would only repeat them. A function that computes anything around its core, or
    passes it other inputs, is compiled and compared.
    """
    jaxpr = jitted.trace(*args, **kwargs).jaxpr.jaxpr
    return (len(jaxpr.eqns) == 1 and jaxpr.eqns[0].primitive.name in ("jit", "pjit")
            and list(jaxpr.eqns[0].invars) == list(jaxpr.invars)
            and list(jaxpr.eqns[0].outvars) == list(jaxpr.outvars))


def test_only_a_function_that_passes_straight_through_to_one_compiled_core_skips_the_compile():
    core = jax.jit(lambda x, y: (x * y, x + y))

    def checked(x, y):  # checks in Python, then the core: the program its eager call ran
        if x.shape != y.shape:
            raise ValueError("x and y must have the same shape")
        return core(x, y)

    x, y = jnp.ones(3), jnp.arange(3.0)
    assert _calls_one_compiled_core(jax.jit(checked), (x, y), {})
    assert not _calls_one_compiled_core(jax.jit(lambda x, y: core(y, x)), (x, y), {})  # other inputs
    assert not _calls_one_compiled_core(jax.jit(lambda x, y: core(x, y)[0]), (x, y), {})  # part of it
    assert not _calls_one_compiled_core(jax.jit(lambda x, y: core(2 * x, y)), (x, y), {})  # work around it
    assert not _calls_one_compiled_core(jax.jit(lambda x, y: (x * y, x + y)), (x, y), {})  # no core
    with pytest.raises(jax.errors.ConcretizationTypeError):  # Python that needs values fails the trace
        _calls_one_compiled_core(jax.jit(lambda x, y: core(x, y) if x.sum() > 0 else None), (x, y), {})


# ---- Bad input ---------------------------------------------------------------------------------

def _is_array(x):
    return isinstance(x, (jax.Array, np.ndarray)) and not (
        isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key))


def _is_float_array(x):
    return _is_array(x) and jnp.issubdtype(x.dtype, jnp.floating)


def _to_int32(x):
    """``x.astype(int32)`` as XLA converts: NaN to 0, and values beyond int32's range (an infinite
    best loss, say) to its nearest end; NumPy's cast leaves those undefined."""
    wide = np.nan_to_num(x.astype(np.float64), nan=0.0, posinf=2.0**31 - 1, neginf=-2.0**31)
    return np.clip(wide, -2.0**31, 2.0**31 - 1).astype(np.int32)


def mutations(value, static: bool, free_length: bool = False):
    """``(what, mutated value)`` for each mutation that applies to an argument's ``value``.

    ``free_length`` marks an argument whose last axis is a length that the function takes at any
    size (a token sequence): another size there is another valid input, so it is not tried.
    """
    if _is_array(value):
        # Built with NumPy on the host and then placed on the device as JAX arrays: with jax.numpy each
        # mutation would be an eager operation compiled for this shape (1,635 programs in a cold run).
        x = np.array(value)
        if jnp.issubdtype(x.dtype, jnp.floating):
            yield "an integer dtype", jax.device_put(_to_int32(x))
        if x.ndim >= 1 and x.size:
            yield "an extra leading axis", jax.device_put(np.stack([x, x]))
            other = x[..., :1] if x.shape[-1] > 1 else np.concatenate([x, x], axis=-1)
            if not free_length:
                yield f"a trailing axis of size {other.shape[-1]} instead of {x.shape[-1]}", jax.device_put(other)
            if x.size <= 4096:
                yield "a Python list", x.tolist()
        if jnp.issubdtype(x.dtype, jnp.floating) and x.size:
            nan = x.copy()
            nan[(0,) * x.ndim] = np.nan
            yield "a NaN", jax.device_put(nan)
    elif static and isinstance(value, int) and not isinstance(value, bool):
        yield "a float where an integer belongs", value + 0.5
    elif isinstance(value, (dict, tuple, list)):
        # A pytree (parameters, gradients, an optimiser's state): its first float leaf, mutated.
        leaves, treedef = jax.tree.flatten(value)
        first = next((i for i, leaf in enumerate(leaves) if _is_float_array(leaf)), None)
        if first is None:
            return
        path = jax.tree_util.keystr(jax.tree_util.tree_leaves_with_path(value)[first][0])
        for what, leaf in mutations(leaves[first], False):
            if what != "a Python list":
                yield f"{what} at {path}", jax.tree.unflatten(treedef, leaves[:first] + [leaf] + leaves[first + 1:])


def _raised_here(error):
    """Whether ``error`` was raised by the book's own code (its innermost frame is in ``cookbook``)."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(BOOK)


_UNDECIDED = object()


def _verdict_from_shapes(arg, mutated_call, expected):
    """The verdict that tracing alone gives (``jax.eval_shape``: nothing compiles and nothing runs),
    or ``_UNDECIDED`` where only values can tell.

    The call's inputs are closed over, so they stay concrete and the book's checks on them run as
    they do eagerly; only what the function computes from them is traced. A clear error from those
    checks, or a result of other shapes than the unmutated call's, is the verdict the eager call
    would get. Anything else (a result of the same shapes, whose values must be compared; an error
    that only tracing raises, such as a Python ``if`` on a computed value) is left to the eager call.
    """
    try:
        got = jax.eval_shape(mutated_call)
    except (ValueError, TypeError) as error:
        clear = _raised_here(error) and re.search(rf"(?<![\w.]){re.escape(arg)}(?!\w)", str(error))
        return None if clear else _UNDECIDED
    except Exception:  # noqa: BLE001 - left to the eager call, which judges it
        return _UNDECIDED
    got_leaves, got_def = jax.tree.flatten(got)
    want_leaves, want_def = _leaves(expected)
    if got_def != want_def or any(a.shape != b.shape for a, b in zip(got_leaves, want_leaves)):
        return None  # other shapes: visibly a different answer
    return _UNDECIDED


def _verdict(arg, what, mutated_call, expected):
    """None if the mutated call behaved (a clear error or no silent wrong answer), else why not."""
    quick = _verdict_from_shapes(arg, mutated_call, expected)
    if quick is not _UNDECIDED:
        return quick
    try:
        got = mutated_call()
    except (ValueError, TypeError) as error:
        if not _raised_here(error):
            frame = traceback.extract_tb(error.__traceback__)[-1]
            return f"raised {type(error).__name__} from {Path(frame.filename).name}:{frame.lineno}, " \
                   f"not from the book's own check: {str(error)[:160]!r}"
        if not re.search(rf"(?<![\w.]){re.escape(arg)}(?!\w)", str(error)):
            return f"raised {type(error).__name__} without naming {arg!r}: {str(error)[:160]!r}"
        return None
    except Exception as error:  # noqa: BLE001 - any other error is not a clear one
        return f"raised {type(error).__name__} (expected ValueError or TypeError naming {arg!r}): {str(error)[:160]!r}"
    got_leaves, got_def = _leaves(got)
    want_leaves, want_def = _leaves(expected)
    if got_def != want_def or any(a.shape != b.shape for a, b in zip(got_leaves, want_leaves)):
        return None  # other shapes: visibly a different answer
    if all(_close(a, b) for a, b in zip(got_leaves, want_leaves)):
        return None
    if what.startswith("a NaN") and any(np.issubdtype(a.dtype, np.inexact) and np.isnan(a).any() for a in got_leaves):
        return None
    return "returned a result of the same shapes with other values, in silence"


def _close(a, b):
    if a.dtype != b.dtype:
        return False
    if np.issubdtype(a.dtype, np.inexact):
        return np.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True)
    return np.array_equal(a, b)


def bad_input_failures(name):
    """The mutated calls of recipe ``name`` that failed the policy, and the number tried."""
    import importlib

    module = importlib.import_module(name)
    free = getattr(module, "FREE_LENGTH", {})
    failures, tried = [], 0
    for fn_name, static in module.JIT.items():
        calls = replay.recorded_calls(name)[fn_name]
        if not calls:
            continue
        fn = getattr(module, fn_name)
        args, kwargs, expected = calls[0]
        bound = inspect.signature(fn).bind(*args, **kwargs)
        for arg, value in list(bound.arguments.items()):
            for what, mutated in mutations(value, arg in static, arg in free.get(fn_name, ())):
                if replay.SECONDS.get(name, {}).get(fn_name, 0.0) > SLOW_CALL_S and what.startswith(RERUNS):
                    continue  # a training run: a list or a NaN would only run it all again
                tried += 1
                changed = bound.arguments.copy()
                changed[arg] = mutated
                call = inspect.BoundArguments(bound.signature, changed)
                problem = _verdict(arg, what, lambda: fn(*call.args, **call.kwargs), expected)
                if problem:
                    failures.append(f"{fn_name}({arg}= {what}) {problem}")
    return failures, tried


@contextlib.contextmanager
def _without_persistent_compilation_cache():
    """Compile the mutated calls without JAX's persistent cache: they are one-off programs worth
    nothing to a later run, and writing them would only fill the cache (thousands of entries)."""
    from jax._src import compilation_cache

    with compilation_cache._cache_initialized_mutex:
        saved = compilation_cache._cache_checked, compilation_cache._cache_used
        compilation_cache._cache_checked, compilation_cache._cache_used = True, False
    try:
        yield
    finally:
        with compilation_cache._cache_initialized_mutex:
            compilation_cache._cache_checked, compilation_cache._cache_used = saved


@pytest.mark.parametrize("name", RECIPES)
def test_bad_input_gets_a_clear_error(name):
    with _without_persistent_compilation_cache():
        failures, _ = bad_input_failures(name)
    assert not failures, f"{name}:\n  " + "\n  ".join(failures)


def test_the_integer_mutation_converts_as_jax_does():
    import ml_dtypes

    for x in (np.array([np.inf, -np.inf, np.nan, 1.7, -1.7, 3e9, -3e9, 2.0**31], np.float32),
              np.array([np.inf, 2.5, -7.9], ml_dtypes.bfloat16)):
        np.testing.assert_array_equal(_to_int32(x), np.asarray(jnp.asarray(x).astype(jnp.int32)))
