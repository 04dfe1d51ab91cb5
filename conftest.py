"""Pytest set-up shared by the tests and the doctests of every recipe module."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

from cookbook._book import doctest_setup  # noqa: E402

doctest_setup()


@pytest.fixture(autouse=True)
def _book_numerics():
    """Every test and doctest runs with silent rank promotion turned into an error."""
    doctest_setup()
    yield
