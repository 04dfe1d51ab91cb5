"""The chapter's shared toy data: one-dimensional regression with a gap in the inputs.

Nothing here is a recipe. Half the inputs lie in [-2.2, -1], half in [1, 2.2]; nothing lies in
between, so a method that knows what it does not know must grow less sure in the gap (-1, 1).
"""

import numpy as np

#: The gap in the inputs: no training input lies strictly between these two values.
GAP = (-1.0, 1.0)


def target(x):
    """The noiseless function behind the data."""
    return np.sin(2.0 * x) + 0.3 * x


def gap_data(n=40, noise=0.1, seed=0):
    """``n`` inputs (n, 1) and targets (n,) in float32: half on each side of :data:`GAP`."""
    rng = np.random.default_rng(seed)
    left = rng.uniform(-2.2, GAP[0], n // 2)
    right = rng.uniform(GAP[1], 2.2, n - n // 2)
    x = np.sort(np.concatenate([left, right]))
    y = target(x) + noise * rng.standard_normal(n)
    return x[:, None].astype(np.float32), y.astype(np.float32)
