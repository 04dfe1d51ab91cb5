"""Checks at a recipe's boundary: the book's policy on bad input, in one place.

Nothing here is a recipe. Every check raises a ``ValueError`` or ``TypeError`` whose message names
the argument, says what was expected and shows what came (the policy of the contributing page):

* shapes, dtypes and static arguments are checked always, at the boundary, before any work;
* values known only at run time (a label's range, a position, a NaN where a choice is made) are
  checked when they are concrete, with :func:`check_range` and :func:`check_no_nan`; under
  :func:`jax.jit` they are traced and these two checks do nothing (the page says what happens then).

An array argument may come as an array or as something :func:`jax.numpy.asarray` reads (a list, a
NumPy array): the checks return it as a JAX array.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np


def _describe(x) -> str:
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"{type(x).__name__} of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"[:120]


def _as_array(x, name: str):
    if type(x) is np.ndarray and x.dtype.kind in "biufc":
        # The same array as jnp.asarray gives (dtype canonicalised, uncommitted, not weakly typed),
        # placed without compiling: under JAX 0.10, jnp.asarray of a NumPy array compiles an identity
        # program for each new shape and dtype.
        return jax.device_put(x)
    if isinstance(x, jax.Array) or isinstance(x, np.ndarray):
        return jnp.asarray(x)
    if isinstance(x, (list, tuple, numbers.Number)) and not isinstance(x, bool):
        try:
            return jnp.asarray(x)
        except (TypeError, ValueError) as error:
            raise TypeError(f"{name} must be an array, got a {type(x).__name__} that is not one: {error}") from None
    raise TypeError(f"{name} must be an array, got {_describe(x)}")


def _check_ndim(x, name: str, ndim, min_ndim, what: str):
    if ndim is not None and x.ndim not in (ndim if isinstance(ndim, tuple) else (ndim,)):
        raise ValueError(f"{name} must have {ndim} axes{what}, got shape {tuple(x.shape)}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} axes{what}, got shape {tuple(x.shape)}")


def float_array(x, name: str, *, ndim=None, min_ndim=None, what: str = ""):
    """``x`` as a floating-point JAX array; a ``TypeError`` for an integer or boolean dtype.

    ``ndim`` (an int or a tuple of ints) or ``min_ndim`` fix its number of axes; ``what`` is a
    phrase such as ``" (T, D)"`` that the message shows after the expected count.
    """
    x = _as_array(x, name)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype} "
                        f"(cast it with .astype(jnp.float32) if it holds real values)")
    _check_ndim(x, name, ndim, min_ndim, what)
    return x


def adjacency_array(x, name: str = "adjacency"):
    """A dense adjacency matrix as a float32 (or wider float) JAX array of two axes.

    Adjacency matrices are often written with booleans or integers (0/1, or edge counts), which
    convert to floats exactly, so they are accepted and converted; a weighted graph passes floats.
    """
    x = _as_array(x, name)
    if jnp.issubdtype(x.dtype, jnp.bool_) or jnp.issubdtype(x.dtype, jnp.integer):
        x = x.astype(jnp.float32)
    elif not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a real array (bool, integer or float), got dtype {x.dtype}")
    _check_ndim(x, name, 2, None, " (N, N)")
    return x


def layers(params, name: str = "params"):
    """``(in_width, out_width)`` of a non-empty list of float ``{"W", "b"}`` dense layers that chain
    (``W`` (n_in, n_out), ``b`` (n_out,)): the parameters of the book's multilayer perceptrons."""
    if not isinstance(params, (list, tuple)) or not params:
        raise TypeError(f"{name} must be a non-empty list of {{'W', 'b'}} layers, got {type(params).__name__}")
    width = None
    for l, layer in enumerate(params):
        W = float_array(layer["W"], f"{name}[{l}]['W']", ndim=2)
        if width is not None:
            same_shape(W, f"{name}[{l}]['W']", (width, W.shape[1]), expected_from="to chain")
        same_shape(float_array(layer["b"], f"{name}[{l}]['b']"), f"{name}[{l}]['b']", W.shape[1:])
        width = W.shape[1]
    return params[0]["W"].shape[0], width


def scalar_or_per_row(t, x, x_name: str, unit: str):
    """A ``ValueError`` unless ``t`` is a scalar or has one entry per row of ``x`` (named ``x_name``);
    ``unit`` says what an entry is ("step", "time")."""
    if t.ndim == 1 and x.ndim >= 1:
        if t.shape[0] != x.shape[0]:
            raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},) (one {unit} for each row of "
                             f"{x_name}, of shape {tuple(x.shape)}), got shape {tuple(t.shape)}")
    elif t.ndim != 0:
        raise ValueError(f"t must be a scalar or have shape (B,) (one {unit} for each row of {x_name}, "
                         f"of shape {tuple(x.shape)}), got shape {tuple(t.shape)}")
    return t


def int_array(x, name: str, *, ndim=None, min_ndim=None, what: str = ""):
    """``x`` as an integer JAX array (labels, token ids, positions); a ``TypeError`` otherwise."""
    x = _as_array(x, name)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {x.dtype}")
    _check_ndim(x, name, ndim, min_ndim, what)
    return x


def same_shape(x, name: str, expected: tuple, *, expected_from: str = ""):
    """A ``ValueError`` unless ``x.shape == expected``."""
    if tuple(x.shape) != tuple(expected):
        source = f" ({expected_from})" if expected_from else ""
        raise ValueError(f"{name} must have shape {tuple(expected)}{source}, got shape {tuple(x.shape)}")
    return x


def queries_keys_values(q, k, v):
    """Queries and keys (T, Dk) and values (T, Dv) of one sequence, as float arrays, and T."""
    q = float_array(q, "q", ndim=2, what=" (T, Dk)")
    k = float_array(k, "k", ndim=2, what=" (T, Dk)")
    v = float_array(v, "v", ndim=2, what=" (T, Dv)")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape (T, Dk), got q {q.shape} and k {k.shape}")
    T = k.shape[0]
    if v.shape[0] != T:
        raise ValueError(f"v must have shape (T, Dv) with T = {T} as k, got v {v.shape} and k {k.shape}")
    return q, k, v, T


def size(value, name: str, *, minimum: int = 1):
    """A static size or count: a Python ``int`` (not a bool or a float) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int of at least {minimum}, got {_describe(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def positive(value, name: str, *, allow_zero: bool = False):
    """A real hyperparameter (a rate, an epsilon, a temperature) that must be positive."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, jax.core.Tracer) or (hasattr(value, "shape") and not value.shape):
            return value
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'non-negative' if allow_zero else 'positive'}, got {value}")
    return value


def static_number(value, name: str) -> float:
    """A hyperparameter that a compiled loop is built for (a static argument of its core), as a
    Python float: a traced value is refused by name, and a 0-d array becomes hashable."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"{name} must be a concrete number: the compiled loop is built for each value "
                        f"of it, so it cannot be traced; got a traced {value.aval}")
    return float(value)


def is_concrete(x) -> bool:
    """Whether ``x`` holds values now (it is not traced by :func:`jax.jit` or :func:`jax.vmap`)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(x))


def check_range(x, name: str, low: int, high: int):
    """When ``x`` is concrete, a ``ValueError`` unless every entry lies in ``[low, high)``."""
    if is_concrete(x) and x.size:
        values = np.asarray(x)  # NumPy, so that a concrete array closed over by a traced function works too
        lo, hi = int(values.min()), int(values.max())
        if lo < low or hi >= high:
            raise ValueError(f"{name} must lie in [{low}, {high}), got values from {lo} to {hi}")
    return x


def check_no_nan(x, name: str):
    """When ``x`` is concrete, a ``ValueError`` if it holds a NaN (where a NaN would be turned into
    a plausible but wrong discrete answer, such as a sampled token or a stopping decision)."""
    if is_concrete(x) and bool(np.isnan(np.asarray(x)).any()):
        raise ValueError(f"{name} holds NaN; expected finite values")
    return x


def same_tree(tree, name: str, like, like_name: str):
    """A ``ValueError`` unless ``tree`` has the structure and the leaf shapes of ``like``
    (gradients shaped like the parameters, for instance)."""
    got, got_def = jax.tree.flatten(tree)
    want, want_def = jax.tree.flatten(like)
    if got_def != want_def:
        raise ValueError(f"{name} must have the structure of {like_name}: expected {want_def}, got {got_def}")
    for path_leaf, a, b in zip(jax.tree_util.tree_leaves_with_path(like), got, want):
        if jnp.shape(a) != jnp.shape(b):
            where = jax.tree_util.keystr(path_leaf[0])
            raise ValueError(f"{name}{where} must have the shape of {like_name}{where}, "
                             f"{tuple(jnp.shape(b))}, got {tuple(jnp.shape(a))}")
        if not jnp.issubdtype(jnp.result_type(a), jnp.floating):
            where = jax.tree_util.keystr(path_leaf[0])
            raise TypeError(f"{name}{where} must be a floating-point array, got dtype {jnp.result_type(a)}")
    return tree
