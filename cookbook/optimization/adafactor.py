r"""Adafactor
=========

Keep only the row and column averages of each weight matrix's squared gradients instead of the full
matrix, and rebuild the second moment from them: Adam-like adaptive steps with memory that grows
with the sum of a matrix's sides instead of their product, for models too large to store Adam's state.

Equation
--------

For a gradient matrix :math:`G_t \in \mathbb{R}^{n \times k}`, with :math:`\mathbf{1}` a vector of ones:

.. math::

   \hat{\beta}_{2t} = 1 - t^{-c}, \qquad
   r_t = \hat{\beta}_{2t}\, r_{t-1} + (1 - \hat{\beta}_{2t})\, \tfrac{1}{k} (G_t^{2} + \epsilon_1)\mathbf{1}_k, \qquad
   s_t = \hat{\beta}_{2t}\, s_{t-1} + (1 - \hat{\beta}_{2t})\, \tfrac{1}{n} \mathbf{1}_n^\top (G_t^{2} + \epsilon_1)

   \hat{V}_t = \frac{r_t\, s_t^\top}{\operatorname{mean}(r_t)}, \qquad
   U_t = \frac{G_t}{\sqrt{\hat{V}_t}}, \qquad
   \theta_t = \theta_{t-1} - \eta\, \frac{U_t}{\max\left(1, \operatorname{RMS}(U_t) / d\right)}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`\theta_t`
     - the parameter matrix after step :math:`t`
     - ``params`` (a leaf)
     - ``(n, k)``
   * - :math:`G_t`
     - its gradient; :math:`G_t^2` is squared element-wise
     - ``grads`` (a leaf)
     - ``(n, k)``
   * - :math:`\mathbf{1}_n`, :math:`\mathbf{1}_k`
     - vectors of ones that sum (here: average) over columns or rows
     - ``jnp.mean(..., axis=...)``
     - ``(n,)``, ``(k,)``
   * - :math:`n`, :math:`k`
     - the matrix's number of rows and columns
     - ``g.shape``
     - scalars
   * - :math:`r_t`
     - row statistics: moving average of each row's mean squared gradient
     - ``state.v_row``
     - ``(n,)``
   * - :math:`s_t`
     - column statistics: moving average of each column's mean squared gradient
     - ``state.v_col``
     - ``(k,)``
   * - :math:`\hat{V}_t`
     - the rank-1 reconstruction of the second moment
     - ``reconstruct(v_row, v_col)``
     - ``(n, k)``
   * - :math:`U_t`
     - the unclipped update
     - ``u``
     - ``(n, k)``
   * - :math:`\hat{\beta}_{2t}`, :math:`c`
     - the increasing decay of the averages; its exponent
     - ``beta``; ``decay_rate``
     - scalar; scalar (0.8)
   * - :math:`\epsilon_1`
     - a tiny constant added to the squared gradient
     - ``eps``
     - scalar (:math:`10^{-30}`)
   * - :math:`d`
     - the clipping threshold on the update's root-mean-square
     - ``clipping_threshold``
     - scalar
   * - :math:`\eta`
     - learning rate
     - ``learning_rate``
     - scalar
   * - :math:`t`
     - step number, from 1
     - ``state.count + 1``
     - ``()`` int32

Explanation
-----------

Adam stores two numbers per parameter, so a model of a billion parameters carries eight gigabytes
of optimiser state in float32. :footcite:t:`shazeer2018adafactor` noticed that the second moment
:math:`V` of a weight matrix is mostly used for its *scale*, and that a rank-1 matrix keeps the
scale of every row and every column. Among all rank-1 non-negative matrices, the one that best
approximates :math:`V` in the generalised Kullback-Leibler (I-)divergence has a closed form: the
outer product of the row sums and the column sums divided by the total sum, which is
:math:`\hat{V} = r s^\top / \operatorname{mean}(r)` in terms of the row and column *means* kept here.
It reproduces the row and column means of :math:`V` exactly, and is exact whenever :math:`V` is
itself rank 1 (for instance when :math:`G` is an outer product :math:`a b^\top`). So for an
:math:`n \times k` matrix the state is :math:`n + k` numbers instead of :math:`nk`: a
:math:`1000 \times 1000` matrix needs 2,000 floats where Adam needs :math:`2 \times 10^6` (the first
moment and the second), as the tests count. Vectors and small matrices are not factored: they keep
the ordinary per-element average. This code, like optax, factors only arrays whose two largest axes
both have at least ``min_dim_size_to_factor`` entries (an array of more than two axes is factored
over its two largest); the default of 128 is optax's :footcite:`deepmind2020jax`, a library
choice, not a threshold of the paper. The code names the statistics as for a matrix with no more rows than columns
(:math:`n \le k`); for a taller matrix ``v_row`` and ``v_col`` swap roles, as they do in optax, and
the reconstruction is the same up to rounding.

Without a first moment, the update :math:`G/\sqrt{\hat{V}}` can be unstable when :math:`\hat{V}` is
stale, so the paper adds two things. *Update clipping* divides the update by
:math:`\max(1, \operatorname{RMS}(U)/d)`, so that no matrix moves by more than :math:`d\eta` on
average per step. And the decay :math:`\hat{\beta}_{2t} = 1 - t^{-0.8}` starts at 0 (the first step
uses only the current gradient, so no bias correction is needed) and rises towards 1, averaging over
a longer and longer history.

**Numerical traps.** :math:`\epsilon_1 = 10^{-30}` (the paper's value) is added to the squared
gradient *before* the averages, so that an all-zero row gives a zero step instead of :math:`0/0`.
It is an ordinary normal number in float32, whose smallest normal number is about
:math:`1.2 \times 10^{-38}`, and in bfloat16, which has float32's range of exponents; in float16,
whose smallest positive number is about :math:`6 \times 10^{-8}`, it rounds to zero and protects
nothing, so float16 statistics need a far larger :math:`\epsilon_1`.

.. admonition:: Intuition

   Think of the noise in a stadium. Instead of a meter at every seat, keep one reading per row
   and one per column, and estimate a seat as its row's reading times its column's, divided by
   the stadium's average. That is exact when loudness is a row effect times a column effect, and
   it costs rows plus columns numbers instead of rows times columns.

Inductive bias
--------------

Adafactor assumes that the scale of a weight's gradients is, to a good approximation, the product of
a factor for its row and a factor for its column (an input unit that is active and an output unit
that is sensitive give large gradients together). That holds well for the weight matrices of
transformers and lets it match Adam's behaviour with almost no memory; a matrix whose gradient
scales do not factor (a few isolated large entries) is given steps too small in their row and
column and too large elsewhere.

Example
-------

Rebuild a rank-1 second moment exactly from its row and column means:

>>> import jax, jax.numpy as jnp
>>> from cookbook.optimization.adafactor import adafactor, reconstruct
>>> V = jnp.outer(jnp.array([1.0, 4.0]), jnp.array([1.0, 2.0, 3.0]))
>>> reconstruct(V.mean(axis=1), V.mean(axis=0))
Array([[ 1.,  2.,  3.],
       [ 4.,  8., 12.]], dtype=float32)

The state of a :math:`1000 \times 1000` matrix, counted without allocating it:

>>> opt = adafactor(learning_rate=1e-2)
>>> state = jax.eval_shape(opt.init, jax.ShapeDtypeStruct((1000, 1000), jnp.float32))
>>> state.v_row.shape, state.v_col.shape, state.v.shape
((1000,), (1000,), (0,))

Implementation notes
--------------------

**Matching optax.** This recipe is :func:`optax.adafactor` with ``multiply_by_parameter_scale=False``
(optax's default multiplies the step by the parameter's RMS, the paper's *relative step size*, which
this recipe leaves out), ``momentum=None`` and ``weight_decay_rate=None``; with those settings the
two agree step for step, as the tests check.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks
from cookbook.optimization.sgd import GradientTransformation, check_hyperparameter

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"reconstruct": ()}


class AdafactorState(NamedTuple):
    """Step count and, per leaf, either the factored statistics or the full average.

    Each of ``v_row``, ``v_col`` and ``v`` has the tree structure of the parameters; a leaf that a
    parameter does not use holds an empty array of shape (0,).
    """

    count: jax.Array
    v_row: object
    v_col: object
    v: object


def reconstruct(v_row, v_col):
    """The rank-1 second moment :math:`r s / \\operatorname{mean}(r)` of a matrix from its row and column means."""
    v_row = _checks.float_array(v_row, "v_row", ndim=1, what=" (n,)")
    v_col = _checks.float_array(v_col, "v_col", ndim=1, what=" (k,)")
    return _reconstruct(v_row, v_col)


@jax.jit  # checked above, then one compiled program per shape instead of three operations
def _reconstruct(v_row, v_col):
    return jnp.outer(v_row, v_col) / jnp.mean(v_row)


def factored_axes(shape, min_dim_size_to_factor):
    """The two largest axes ``(second, largest)`` of ``shape`` if both are big enough to factor, else None."""
    if len(shape) < 2:
        return None
    order = np.argsort(shape)  # ties keep axis order, as in optax
    second, largest = int(order[-2]), int(order[-1])
    if shape[second] < min_dim_size_to_factor:
        return None
    return second, largest


def adafactor(learning_rate, decay_rate=0.8, eps=1e-30, clipping_threshold=1.0, min_dim_size_to_factor=128):
    """Adafactor with factored second moments and update clipping, without momentum or parameter scaling."""
    check_hyperparameter("learning_rate", learning_rate, 0.0, float("inf"))
    check_hyperparameter("decay_rate", decay_rate, 0.0, 1.0, high_open=False)
    check_hyperparameter("clipping_threshold", clipping_threshold, 0.0, float("inf"))
    empty = lambda p: jnp.zeros((0,), p.dtype)

    def init(params):
        def leaf(p):
            axes = factored_axes(p.shape, min_dim_size_to_factor)
            if axes is None:
                return empty(p), empty(p), jnp.zeros_like(p)
            second, largest = axes
            # The statistic that keeps the second axis is a mean over the largest one, and vice versa.
            return jnp.zeros_like(p.sum(axis=largest)), jnp.zeros_like(p.sum(axis=second)), empty(p)

        leaves, treedef = jax.tree.flatten(params)
        v_row, v_col, v = zip(*map(leaf, leaves)) if leaves else ((), (), ())
        unflat = lambda xs: jax.tree.unflatten(treedef, list(xs))
        return AdafactorState(jnp.zeros((), jnp.int32), unflat(v_row), unflat(v_col), unflat(v))

    def update(grads, state, params=None):
        _checks.same_tree(grads, "grads", grads if params is None else params, "params")
        expected = jax.eval_shape(init, grads)  # the statistics that grads of these shapes need
        for name in ("v_row", "v_col", "v"):
            _checks.same_tree(getattr(state, name), f"state.{name}", getattr(expected, name), f"init(grads).{name}")
        t = (state.count + 1).astype(jnp.float32)
        beta = 1.0 - t ** (-decay_rate)

        def leaf(g, v_row, v_col, v):
            g2 = g * g + eps
            axes = factored_axes(g.shape, min_dim_size_to_factor)
            if axes is None:
                v = beta * v + (1.0 - beta) * g2
                u = g * v**-0.5
            else:
                second, largest = axes
                v_row = beta * v_row + (1.0 - beta) * jnp.mean(g2, axis=largest)
                v_col = beta * v_col + (1.0 - beta) * jnp.mean(g2, axis=second)
                kept = second - 1 if second > largest else second  # where ``second`` sits in v_row
                row_factor = (v_row / jnp.mean(v_row, axis=kept, keepdims=True)) ** -0.5
                u = g * jnp.expand_dims(row_factor, largest) * jnp.expand_dims(v_col**-0.5, second)
            u = u / jnp.maximum(1.0, jnp.sqrt(jnp.mean(u * u)) / clipping_threshold)  # update clipping
            return -(u * learning_rate), v_row, v_col, v

        leaves, treedef = jax.tree.flatten(grads)
        rows, cols, vs = (treedef.flatten_up_to(x) for x in (state.v_row, state.v_col, state.v))
        out = [leaf(*args) for args in zip(leaves, rows, cols, vs)]
        unflat = lambda i: jax.tree.unflatten(treedef, [o[i] for o in out])
        return unflat(0), AdafactorState(state.count + 1, unflat(1), unflat(2), unflat(3))

    return GradientTransformation(init, update)
