r"""Kolmogorov–Arnold networks
==========================

A network whose edges carry learnable one-dimensional functions (B-splines) and whose nodes only
add: reach for it to fit smooth, low-dimensional functions with few parameters and to read the
learned functions off the edges.

Equation
--------

.. math::

   B_{i,0}(x) = [\,t_i \le x < t_{i+1}\,], \qquad
   B_{i,k}(x) = \frac{x - t_i}{t_{i+k} - t_i} B_{i,k-1}(x)
              + \frac{t_{i+k+1} - x}{t_{i+k+1} - t_{i+1}} B_{i+1,k-1}(x)

   \phi_{qp}(x) = w_{qp}\, \operatorname{silu}(x) + \sum_{i} c_{qpi} B_{i,k}(x), \qquad
   y_q = \sum_{p} \phi_{qp}(x_p)

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`t_i`
     - knot :math:`i`, non-decreasing
     - ``knots``
     - ``(K,)``
   * - :math:`i`
     - index of a knot and of a basis function
     - column of the basis
     - scalar
   * - :math:`k`
     - degree of the spline (3 is cubic)
     - ``order``
     - scalar
   * - :math:`B_{i,k}`
     - B-spline :math:`i` of degree :math:`k`; there are :math:`K - k - 1` of them
     - column :math:`i` of ``bspline_basis``'s result
     - ``(M, K - k - 1)``
   * - :math:`x`, :math:`x_p`
     - a point where the basis is evaluated; input :math:`p` of a layer
     - ``x``
     - ``(M,)``; ``(P,)``
   * - :math:`\phi_{qp}`
     - the learnable function on the edge from input :math:`p` to output :math:`q`
     - ``phi``
     - ``(P, Q)`` functions
   * - :math:`p`, :math:`q`
     - index of an input and of an output of a layer
     - axes of ``coef``
     - scalar
   * - :math:`w_{qp}`
     - weight of the residual silu on an edge
     - ``w_base``
     - ``(P, Q)``
   * - :math:`c_{qpi}`
     - spline coefficient :math:`i` on an edge
     - ``coef``
     - ``(P, Q, K - k - 1)``
   * - :math:`y_q`
     - output :math:`q` of a layer
     - ``y``
     - ``(Q,)``

Explanation
-----------

**B-splines.** The Cox–de Boor recursion :footcite:`cox1972numerical,deboor1972calculating` builds the B-splines
of degree :math:`k` from indicator functions of the knot intervals: each step blends two
neighbours of the degree below with weights that grow linearly across their support. The result
is a basis of piecewise polynomials of degree :math:`k`, each nonzero on only :math:`k + 1`
intervals, non-negative, and summing to 1 on the base interval
:math:`[t_k, t_{K-k-1}]` (a partition of unity). A spline :math:`\sum_i c_i B_{i,k}` is therefore
linear in its coefficients, local (a coefficient moves the curve only near its knots), and has
:math:`k - 1` continuous derivatives at simple knots. Two numerical traps: a repeated knot makes a
denominator zero, and the quotient is then taken as 0 (its basis function vanishes there); and the
right end of the base interval belongs to the last non-empty interval, so that the basis still sums
to 1 there. Outside the base interval the code continues the polynomial pieces of the end
intervals (SciPy's ``extrapolate=True``) rather than dropping to 0, so no input falls in a dead zone.

**The network.** The Kolmogorov–Arnold theorem writes any continuous function of several variables
as sums and compositions of functions of one variable. Liu et al.
:footcite:`liu2025kan` turn this into a layer: every edge from input :math:`p` to output
:math:`q` has its own function :math:`\phi_{qp}`, a spline on a fixed grid plus a silu residual,
and each output is the plain sum of its incoming edges. There are no weight matrices followed by a
fixed activation; the activation itself is learned. A layer of :math:`P` inputs and :math:`Q`
outputs with :math:`G` grid intervals has :math:`PQ(G + k + 1)` parameters. The code uses one grid
of knots for all edges and layers; hidden values outside it use the continued end pieces.

**Grid refinement.** Since a spline on a coarse grid is also a spline on any finer grid that
contains its knots, a trained network can be moved to a finer grid without changing its function
(``refine`` fits the new coefficients by least squares), and training continues with more
resolution, as one would refine a mesh.

.. admonition:: Intuition

   An MLP is an orchestra of identical instruments (one fixed activation) whose loudness is learned;
   a KAN lets each player reshape their own instrument. The theorem's inspiration: every function of
   many variables is a tune played by adding and chaining one-variable melodies.

Inductive bias
--------------

A KAN assumes the target is built from smooth one-dimensional pieces added together and composed,
with structure that a few edges can express (:math:`\exp(\sin \pi x + y^2)` is a sum inside an
exponential). It then fits with far fewer parameters than an MLP and its edges can be read. It
assumes smoothness at the scale of the grid: a function that varies faster than the knot spacing,
or that lies in many dimensions without such structure, is fitted poorly, and each edge costs
:math:`G + k + 1` parameters and a basis evaluation instead of one multiply.

Example
-------

Cubic B-splines on a uniform grid sum to one, and a single spline edge fits
:math:`\sin(\pi x)` by least squares, since it is linear in its coefficients:

>>> import jax, jax.numpy as jnp, numpy as np
>>> from cookbook.niche.kan import apply, bspline_basis, init, refine, uniform_knots
>>> knots = uniform_knots(5, 3)  # 5 intervals on [-1, 1], extended by 3 knots on each side
>>> knots.shape
(12,)
>>> x = np.linspace(-1.0, 1.0, 50, dtype=np.float32)
>>> B = np.asarray(bspline_basis(x, knots, 3))  # NumPy from here: the least squares below is NumPy's
>>> B.shape, bool(np.allclose(B.sum(axis=1), 1.0, atol=1e-6))
((50, 8), True)
>>> c, *_ = np.linalg.lstsq(B, np.sin(np.pi * x))
>>> float(np.abs(B @ c - np.sin(np.pi * x)).max()) < 1e-2
True

A two-layer network [2, 3, 1], and the same network on a grid twice as fine, computing the same
function:

>>> params = init(jax.random.key(0), (2, 3, 1), grid_size=5, order=3)
>>> params[0]["coef"].shape, params[0]["w_base"].shape
((2, 3, 8), (2, 3))
>>> y = apply(params, jnp.array([0.3, -0.5]), knots, 3)
>>> y.shape
(1,)
>>> fine = uniform_knots(10, 3)
>>> finer = refine(params, knots, fine, 3)
>>> finer[0]["coef"].shape
(2, 3, 13)
>>> bool(np.allclose(apply(finer, jnp.array([0.3, -0.5]), fine, 3), y, atol=1e-4))
True

Implementation notes
--------------------

In the tests a [2, 1, 1] network, the shape of :math:`\exp(\sin \pi x + y^2)`, is trained with
Adam for 300 steps on a grid of 5 intervals (held-out root-mean-square error below 0.2), refined to
10 intervals without changing its outputs beyond float32 rounding, and trained 300 steps more: the
held-out error falls below 0.01. The basis is evaluated with ``searchsorted`` and the recursion
unrolled over the degree (a static loop of :math:`k` steps), so the cost per input is
:math:`O(k K)`.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"bspline_basis": ("order",), "apply": ("order",), "refine": ("order",)}


def uniform_knots(grid_size, order, lo=-1.0, hi=1.0):
    """``grid_size`` equal intervals on [lo, hi], extended by ``order`` knots on each side: (G + 2k + 1,)."""
    G = _checks.size(grid_size, "grid_size")
    k = _checks.size(order, "order", minimum=0)
    if not hi > lo:
        raise ValueError(f"hi must be greater than lo, got lo={lo} and hi={hi}")
    h = (hi - lo) / G
    # float32 arithmetic in NumPy (as jnp would do it, without compiling three operations per size)
    return jnp.asarray(np.float32(lo) + np.float32(h) * np.arange(-k, G + k + 1, dtype=np.float32))


def _check_knots(knots, order, name="knots"):
    knots = _checks.float_array(knots, name, ndim=1, what=" (K,)")
    k = _checks.size(order, "order", minimum=0)
    K = knots.shape[0]
    if K < k + 2:
        raise ValueError(f"{name} must hold at least order + 2 = {k + 2} values for one basis function, got {K}")
    if _checks.is_concrete(knots):
        t = np.asarray(knots, np.float64)
        if np.isnan(t).any() or np.any(np.diff(t) < 0):
            raise ValueError(f"{name} must be non-decreasing and free of NaN, got {t.tolist()}")
        if not t[K - k - 1] > t[k]:
            raise ValueError(f"{name} must give a non-empty base interval [{name}[order], {name}[K - order - 1]], "
                             f"got [{t[k]}, {t[K - k - 1]}]")
    return knots, k


def bspline_basis(x, knots, order):
    """The B-spline basis of degree ``order`` on ``knots`` (K,) at points ``x`` (M,): (M, K - order - 1).

    Cox–de Boor, vectorised over the basis functions. Inside the base interval
    [knots[order], knots[K - order - 1]] (right end included) it equals SciPy's
    ``BSpline.design_matrix``; outside, the end intervals' polynomial pieces are continued.
    """
    x = _checks.float_array(x, "x", ndim=1, what=" (M,)")
    knots, k = _check_knots(knots, order)
    return _basis(x, knots, k)


@partial(jax.jit, static_argnums=2)
def _basis(x, knots, k):
    K = knots.shape[0]
    dtype = jnp.result_type(x, knots)
    x, t = x.astype(dtype), knots.astype(dtype)
    # Degree 0: the indicator of the interval that holds x, clipped to the base interval's intervals.
    interval = jnp.searchsorted(t, x, side="right") - 1
    interval = jnp.clip(interval, k, K - k - 2)
    B = jax.nn.one_hot(interval, K - 1, dtype=dtype)  # (M, K - 1)

    def ratio(num, den):
        return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)  # 0/0 at repeated knots -> 0

    for p in range(1, k + 1):
        n = K - p - 1  # basis functions of degree p
        left = ratio(x[:, None] - t[None, :n], (t[p:p + n] - t[:n])[None, :])  # (M, n)
        right = ratio(t[None, p + 1:p + 1 + n] - x[:, None], (t[p + 1:p + 1 + n] - t[1:n + 1])[None, :])
        B = left * B[:, :n] + right * B[:, 1:n + 1]  # (M, n)
    return B


def init(key, sizes, *, grid_size, order, scale=0.1):
    """Layers of a KAN with widths ``sizes`` (P, ..., Q): per layer ``coef`` (P, Q, grid_size + order),
    small normal spline coefficients, and ``w_base`` (P, Q), the silu residual's weights."""
    if not isinstance(sizes, (tuple, list)) or len(sizes) < 2:
        raise ValueError(f"sizes must be a tuple of at least two widths, got {sizes!r}")
    sizes = [_checks.size(s, "sizes") for s in sizes]
    G = _checks.size(grid_size, "grid_size")
    k = _checks.size(order, "order", minimum=0)
    return _init(key, tuple(sizes), G + k, scale)


@partial(jax.jit, static_argnums=(1, 2))
def _init(key, sizes, n_basis, scale):
    params = []
    for P, Q in zip(sizes[:-1], sizes[1:]):
        key, k_c, k_w = jax.random.split(key, 3)
        params.append({"coef": scale * jax.random.normal(k_c, (P, Q, n_basis)),
                       "w_base": jax.random.normal(k_w, (P, Q)) / jnp.sqrt(P)})
    return params


def _check_params(params, knots, order):
    if not isinstance(params, (list, tuple)) or not params:
        raise ValueError(f"params must be a non-empty list of layers, got {type(params).__name__}")
    n_basis = knots.shape[0] - order - 1
    width = None
    for n, layer in enumerate(params):
        coef = _checks.float_array(layer["coef"], f"params[{n}]['coef']", ndim=3, what=" (P, Q, n_basis)")
        w = _checks.float_array(layer["w_base"], f"params[{n}]['w_base']", ndim=2, what=" (P, Q)")
        if coef.shape[2] != n_basis:
            raise ValueError(f"params[{n}]['coef'] must have {n_basis} = K - order - 1 coefficients per edge "
                             f"for these knots, got shape {coef.shape}")
        _checks.same_shape(w, f"params[{n}]['w_base']", coef.shape[:2], expected_from="(P, Q) of coef")
        if width is not None and coef.shape[0] != width:
            raise ValueError(f"params[{n}]['coef'] must take {width} inputs from the layer before, got shape {coef.shape}")
        width = coef.shape[1]


def apply(params, x, knots, order):
    """The KAN on one input ``x`` (P,): each layer sums its edges' functions. Batch with :func:`jax.vmap`."""
    x = _checks.float_array(x, "x", ndim=1, what=" (P,)")
    knots, k = _check_knots(knots, order)
    _check_params(params, knots, k)
    _checks.same_shape(x, "x", params[0]["coef"].shape[:1], expected_from="P of params[0]['coef']")
    return _apply(params, x, knots, k)


@partial(jax.jit, static_argnums=3)
def _apply(params, x, knots, k):
    for layer in params:
        B = _basis(x, knots, k)  # (P, n_basis)
        phi = jnp.einsum("pn,pqn->pq", B, layer["coef"]) + layer["w_base"] * jax.nn.silu(x)[:, None]  # (P, Q)
        y = phi.sum(axis=0)  # (Q,)
        x = y
    return y


def refine(params, knots, new_knots, order, num_points=None):
    """The same network on ``new_knots``: each edge's spline refitted by least squares at
    ``num_points`` points spread over the new base interval (3 per coefficient by default).

    Exact (to rounding) when the new knots contain the old ones, as on a grid twice as fine.
    """
    knots, k = _check_knots(knots, order)
    new_knots, _ = _check_knots(new_knots, order, "new_knots")
    _check_params(params, knots, k)
    n_new = new_knots.shape[0] - k - 1
    M = _checks.size(3 * n_new if num_points is None else num_points, "num_points", minimum=n_new)
    return _refine(params, knots, new_knots, k, M)


@partial(jax.jit, static_argnums=(3, 4))
def _refine(params, knots, new_knots, k, M):
    x = jnp.linspace(new_knots[k], new_knots[-k - 1], M)
    old_B = _basis(x, knots, k)  # (M, n_old)
    new_B = _basis(x, new_knots, k)  # (M, n_new)
    fit = jnp.linalg.pinv(new_B) @ old_B  # (n_new, n_old): old coefficients -> new ones
    return [{"coef": jnp.einsum("mn,pqn->pqm", fit, layer["coef"]), "w_base": layer["w_base"]} for layer in params]
