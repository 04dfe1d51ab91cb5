"""A content-addressed disk cache for the book's deterministic training runs.

Nothing here is a recipe. Several pages train a small model at build time to draw a figure, and
their tests check claims about the very same run (same data, same keys, same steps). With the
environment variable ``COOKBOOK_TRAIN_CACHE`` set to a folder (``make`` sets it to
``_build/trained``), a function decorated with :func:`cached` stores its result there the first
time and returns the stored result whenever it is called again with equal arguments, in any
process: the model that a figure trained is the model that the test checks, trained once.

The key of an entry is a hash of everything the result depends on: the source of the function's
module and of every book module it imports (transitively), the JAX and NumPy versions, the
backend, the ``XLA_*`` and ``JAX_*`` variables of the environment but those that only place the
compilation cache (XLA's flags change the last bits of float32 results, and so a trained model), and
the arguments (arrays by shape, dtype and bytes; random keys by their data; other values by
``repr``). Editing any of these makes a new key, so an entry can never be stale. Without
the variable, or when an argument is traced (under :func:`jax.jit`), the function simply runs.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import os
import pickle
from pathlib import Path

ENV = "COOKBOOK_TRAIN_CACHE"


def _imported_book_modules(source: str, root: str) -> set[str]:
    """The book modules that ``source`` imports: ``import a.b``, ``from a.b import c`` (``a.b``, and
    ``a.b.c`` when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == root)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == root:
            found.add(node.module)
            for alias in node.names:
                try:
                    if importlib.util.find_spec(f"{node.module}.{alias.name}") is not None:
                        found.add(f"{node.module}.{alias.name}")
                except ModuleNotFoundError:
                    pass
    return found


def _module_sources(name: str, seen: set[str]) -> list[bytes]:
    """The name and source of module ``name`` and of every book module it imports, transitively."""
    if name in seen:
        return []
    seen.add(name)
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return []
    source = Path(spec.origin).read_bytes()
    out = [name.encode(), source]
    for dep in sorted(_imported_book_modules(source.decode(), name.split(".")[0])):
        out += _module_sources(dep, seen)
    return out


def _digest_value(h, value) -> None:
    import jax
    import numpy as np

    leaves, treedef = jax.tree.flatten(value)
    h.update(repr(treedef).encode())
    for leaf in leaves:
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        if isinstance(leaf, (jax.Array, np.ndarray)):
            array = np.asarray(leaf)
            h.update(f"{array.shape}{array.dtype}".encode())
            h.update(np.ascontiguousarray(array).tobytes())
        else:
            h.update(repr(leaf).encode())


def _environment() -> str:
    """The variables that may change what a run computes: XLA's flags and JAX's settings, less the
    compilation cache's place and thresholds (a cached program is the program compiled)."""
    return repr(sorted((k, v) for k, v in os.environ.items() if k.startswith(("XLA_", "JAX_"))
                       and not k.startswith(("JAX_COMPILATION_CACHE_", "JAX_PERSISTENT_CACHE_"))))


def cache_key(fn, args: tuple, kwargs: dict) -> str:
    import jax
    import numpy as np

    h = hashlib.sha256()
    for part in _module_sources(fn.__module__, set()):
        h.update(part)
    h.update(f"{fn.__qualname__}|jax {jax.__version__}|numpy {np.__version__}|{jax.default_backend()}".encode())
    h.update(_environment().encode())
    _digest_value(h, (args, dict(sorted(kwargs.items()))))
    return h.hexdigest()[:32]


def _storable(tree) -> bool:
    import jax
    import numpy as np

    return all(
        isinstance(leaf, (jax.Array, np.ndarray, int, float, bool))
        and not (isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key))
        for leaf in jax.tree.leaves(tree)
    )


def cached(fn):
    """Decorate a deterministic function whose result (a pytree of arrays) may be stored on disk."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import jax
        import jax.numpy as jnp

        folder = os.environ.get(ENV)
        traced = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((args, kwargs)))
        if not folder or traced:
            return fn(*args, **kwargs)
        path = Path(folder) / f"{fn.__module__}.{fn.__qualname__}-{cache_key(fn, args, kwargs)}.pkl"
        if path.exists():
            import numpy as np

            stored = pickle.loads(path.read_bytes())
            return jax.tree.map(lambda x: jnp.asarray(x) if isinstance(x, np.ndarray) else x, stored)
        out = fn(*args, **kwargs)
        if _storable(out):
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(pickle.dumps(jax.device_get(out)))
            partial.replace(path)  # atomic: a reader never sees half an entry
        return out

    wrapper.uncached = fn
    return wrapper
