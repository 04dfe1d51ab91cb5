"""Boundary checks shared by the transformer recipes (not a recipe).

:func:`check_params` compares a parameter tree with the shapes that the recipe's ``init`` makes for
  the sizes read from the tree itself, so that a leaf of the wrong shape or an integer dtype is a
  clear error that names it instead of a silent broadcast.
"""

from __future__ import annotations

import functools

import jax

from cookbook import _checks


@functools.lru_cache(maxsize=64)
def _expected(init, sizes: tuple):
    return jax.eval_shape(lambda: init(jax.random.key(0), **dict(sizes)))


def check_params(params, init, **sizes):
    """A ``ValueError`` or ``TypeError`` naming ``params[...]`` unless ``params`` has the structure,
    the leaf shapes and floating dtypes of ``init(key, **sizes)``; returns ``params``."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be the dict that init returns, got {type(params).__name__}")
    what = "init(" + ", ".join(f"{k}={v}" for k, v in sizes.items()) + ")"
    return _checks.same_tree(params, "params", _expected(init, tuple(sizes.items())), what)
