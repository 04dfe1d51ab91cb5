"""The packages that some recipes need beyond JAX, and the extra of the package that installs them.

``pip install deep-learning-cookbook`` installs JAX alone. A function that loads a data set shipped
with scikit-learn imports it inside :func:`needs_extra`, so that without it the error says what to
install instead of only ``No module named 'sklearn'``::

    with needs_extra("data"):
        from sklearn.datasets import load_digits
"""

from __future__ import annotations

import contextlib

DISTRIBUTION = "deep-learning-cookbook"
#: The name a module is installed under, where it differs from the name it is imported as.
PIP_NAMES = {"sklearn": "scikit-learn"}


@contextlib.contextmanager
def needs_extra(extra: str):
    """Turn a missing module imported inside the block into an error that names the extra to install."""
    try:
        yield
    except ModuleNotFoundError as error:
        top = (error.name or "").split(".")[0]
        package = PIP_NAMES.get(top, top)
        raise ModuleNotFoundError(
            f"{package} is not installed; this function needs the '{extra}' extra of the cookbook: "
            f"pip install '{DISTRIBUTION}[{extra}]' (or, from a clone, pip install -e '.[{extra}]')",
            name=error.name,
        ) from error
