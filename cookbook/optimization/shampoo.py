r"""Shampoo and SOAP
================

Precondition each weight matrix's gradient from the left and from the right by the inverse fourth
roots of two small accumulated matrices, one per side: a Kronecker-factored approximation of
full-matrix AdaGrad that captures how the rows and the columns of a layer interact. SOAP runs Adam in
the eigenbasis of those two matrices.

Equation
--------

.. math::

   L_t = L_{t-1} + G_t G_t^\top, \qquad R_t = R_{t-1} + G_t^\top G_t, \qquad L_0 = R_0 = \epsilon I

   W_t = W_{t-1} - \eta\, L_t^{-1/4}\, G_t\, R_t^{-1/4}

   \text{SOAP:}\quad L_t = Q_L \Lambda_L Q_L^\top,\ R_t = Q_R \Lambda_R Q_R^\top, \qquad
   W_t = W_{t-1} - \eta\, Q_L\, \operatorname{Adam}\big(Q_L^\top G_t Q_R\big)\, Q_R^\top

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`W_t`, :math:`G_t`
     - a weight matrix after step :math:`t`; its gradient
     - a leaf of ``params``; of ``grads``
     - ``(m, n)``
   * - :math:`L_t`, :math:`R_t`
     - the left and right statistics: sums of :math:`G G^\top` and :math:`G^\top G`
     - ``state.left``, ``state.right``
     - ``(m, m)``, ``(n, n)``
   * - :math:`\epsilon`, :math:`I`
     - the starting value of both statistics' diagonals; the identity matrix
     - ``eps``; ``jnp.eye``
     - scalar; ``(m, m)`` or ``(n, n)``
   * - :math:`\eta`
     - learning rate
     - ``learning_rate``
     - scalar
   * - :math:`X^{-1/4}`
     - the inverse fourth root of a symmetric positive definite matrix, from its eigenvectors
     - ``inverse_root``
     - like :math:`X`
   * - :math:`Q_L, \Lambda_L`, :math:`Q_R, \Lambda_R`
     - the eigenvectors and eigenvalues of the statistics (SOAP's basis)
     - ``Q_left``, ``Q_right`` (eigenvalues unused)
     - ``(m, m)``, ``(n, n)``
   * - :math:`\operatorname{Adam}(\cdot)`
     - Adam's bias-corrected step, with its moments kept in the rotated basis
     - ``state.mu``, ``state.nu``
     - ``(m, n)``
   * - :math:`t`
     - step number, from 1
     - ``state.count``
     - ``()`` int32

Explanation
-----------

Full-matrix AdaGrad would precondition the flattened gradient :math:`g = \operatorname{vec}(G)` by
:math:`(\sum g g^\top)^{-1/2}`, an :math:`mn \times mn` matrix: out of reach for any real layer.
Shampoo :footcite:`gupta2018shampoo` keeps one :math:`m \times m` statistic for the rows and one
:math:`n \times n` for the columns, and preconditions with :math:`L^{-1/4} \otimes R^{-1/4}`; the
paper shows that :math:`L^{1/2} \otimes R^{1/2}` bounds the full AdaGrad statistic, so the
Kronecker product of the two fourth roots plays the role of the full inverse square root. The
memory is :math:`m^2 + n^2` instead of :math:`(mn)^2`.

A problem whose curvature is itself a Kronecker product, the loss
:math:`\lVert A W B - C \rVert^2` with ill-conditioned :math:`A` and :math:`B` (a linear layer whose
inputs and outputs are both badly scaled), is where the two-sided preconditioner pays: the tests
train it for 200 steps with Shampoo, SOAP and Adam, each at the best of four learning rates: Shampoo
ends more than thirty times lower than Adam; SOAP, whose last steps oscillate at a constant
learning rate, reaches a loss on the way more than twice lower than Adam's.

**Shampoo without memory is Muon.** With only the current gradient,
:math:`(G G^\top)^{-1/4} G (G^\top G)^{-1/4} = U V^\top` for :math:`G = U S V^\top`: the orthogonal
factor that :doc:`muon` approximates with Newton–Schulz (tested).

**SOAP** :footcite:`vyas2025soap` observes that Shampoo is close to Adafactor run in the eigenbasis
of :math:`L` and :math:`R`, and runs Adam there instead: rotate the gradient into the basis, update
Adam's moments, take Adam's step and rotate it back. The eigenvectors are recomputed every few
steps (``precondition_every``); the eigendecomposition is the expensive part of both methods, which
is why practical implementations amortise it over many steps.

.. admonition:: Intuition

   Adam adjusts the step of every single weight on its own, as if each knob of a mixing desk
   had its own sensitivity. Shampoo notices that the knobs are arranged in a grid whose rows share
   an input and whose columns share an output, learns one correction per row direction and one per
   column direction, and combines them: far fewer numbers than one correction for every pair of
   knobs, yet it captures how the knobs interact.

Inductive bias
--------------

Shampoo assumes that a layer's curvature factorises over its input and output sides: that the
correlations between rows of the gradient do not depend on which column one looks at, and vice
versa. Where that holds it is invariant to rotating or rescaling either side's basis (Adam is not);
where it does not, it is an approximation that still captures more than a diagonal.

Example
-------

With a single gradient and no damping, Shampoo's step is the orthogonal factor of the gradient:

>>> import jax, jax.numpy as jnp
>>> from cookbook.optimization.shampoo import shampoo, soap
>>> G = jax.random.normal(jax.random.key(0), (4, 3))
>>> updates, state = shampoo(1.0, eps=1e-12).update({"w": G}, shampoo(1.0, eps=1e-12).init({"w": jnp.zeros((4, 3))}))
>>> U, _, Vt = jnp.linalg.svd(G, full_matrices=False)
>>> bool(jnp.allclose(-updates["w"], U @ Vt, atol=1e-3))
True

Each side is preconditioned by a matrix root, :math:`L^{-1/4}` and :math:`R^{-1/4}`, which
``inverse_root`` computes from the eigendecomposition (here :math:`16^{-1/4} = 0.5`):

>>> from cookbook.optimization.shampoo import inverse_root
>>> inverse_root(jnp.array([[16.0, 0.0], [0.0, 1.0]]), 4)
Array([[0.5, 0. ],
       [0. , 1. ]], dtype=float32)

SOAP runs Adam in the eigenbasis of the same statistics and drives a quadratic to its minimum:

>>> from cookbook.optimization.sgd import run_optimizer
>>> loss = lambda p: jnp.sum((p["w"] - 1.0) ** 2)
>>> path, losses = run_optimizer(loss, {"w": jnp.zeros((3, 2))}, soap(0.1), steps=200)
>>> bool(losses[-1] < 1e-3 * losses[0])
True
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks
from cookbook.optimization.sgd import GradientTransformation, check_hyperparameter, check_update

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"inverse_root": ("p",)}


#: Eigenvalues of a statistic below this fraction of its largest are raised to it (see ``inverse_root``).
RELATIVE_FLOOR = 1e-6


class ShampooState(NamedTuple):
    """The step count and, per matrix, the left and right statistics; for SOAP also the eigenbases and
    Adam's moments in the rotated basis."""

    count: jax.Array
    left: object
    right: object
    Q_left: object = ()
    Q_right: object = ()
    mu: object = ()
    nu: object = ()


def inverse_root(X, p):
    """:math:`X^{-1/p}` of a symmetric positive semi-definite matrix, from its eigendecomposition in
    float32. Eigenvalues below a millionth of the largest are raised to it: float32's ``eigh`` cannot
    resolve them (it returns some as negative), and their roots would blow the step up."""
    X = _checks.float_array(X, "X", ndim=2, what=" (m, m)")
    if X.shape[0] != X.shape[1]:
        raise ValueError(f"X must be square, got shape {X.shape}")
    _checks.size(p, "p", minimum=1)
    return _inverse_root(X, p)


@partial(jax.jit, static_argnums=1)  # one program per shape, where eagerly it dispatched a dozen
def _inverse_root(X, p):
    values, vectors = jnp.linalg.eigh(X.astype(jnp.float32))
    floor = jnp.maximum(RELATIVE_FLOOR * jnp.max(values), jnp.finfo(jnp.float32).tiny)
    return (vectors * jnp.maximum(values, floor)[None, :] ** (-1.0 / p)) @ vectors.T


def _check_matrices(params):
    for leaf in jax.tree.leaves(params):
        if jnp.ndim(leaf) != 2:
            raise ValueError(f"shampoo and soap precondition matrices; got a leaf of shape {jnp.shape(leaf)} "
                             "(reshape it to a matrix, or train it with another optimiser)")


def _check_statistics(grads, params, state):
    """``grads`` are float matrices shaped like ``params`` (when given) and the statistics are square
    with the sides of the gradients."""
    # Shapes to compare with, built in NumPy (an eager jnp.zeros would compile for every shape).
    sides = jax.tree.map(lambda L, R: np.zeros((jnp.shape(L)[0], jnp.shape(R)[0])), state.left, state.right)
    _checks.same_tree(grads, "grads", params if params is not None else sides,
                      "params" if params is not None else "the sides of state.left and state.right")
    for name, stats, axis in [("state.left", state.left, 0), ("state.right", state.right, 1)]:
        like = jax.tree.map(lambda g: np.zeros((jnp.shape(g)[axis], jnp.shape(g)[axis])), grads)
        _checks.same_tree(stats, name, like, f"the gradients' {'rows' if axis == 0 else 'columns'}")


def _eye(n, scale=1.0):
    """``scale * jnp.eye(n)``, the same values built in NumPy: no program compiled per side."""
    dtype = jax.dtypes.canonicalize_dtype(float)
    return jnp.asarray(np.asarray(scale, dtype) * np.eye(n, dtype=dtype))


def _zeros_like(w):
    return jnp.asarray(np.zeros(jnp.shape(w), jnp.result_type(w)))  # jnp.zeros_like, built in NumPy


def _statistics(params, eps):
    left = jax.tree.map(lambda w: _eye(w.shape[0], eps), params)
    right = jax.tree.map(lambda w: _eye(w.shape[1], eps), params)
    return left, right


def shampoo(learning_rate, eps=1e-6):
    """Shampoo for a pytree of matrices: ``W -= lr L^{-1/4} G R^{-1/4}``, statistics summed from ``eps I``."""
    check_hyperparameter("learning_rate", learning_rate, 0.0, float("inf"))
    check_hyperparameter("eps", eps, 0.0, float("inf"))

    def init(params):
        _check_matrices(params)
        return ShampooState(jnp.zeros((), jnp.int32), *_statistics(params, eps))

    def update(grads, state, params=None):
        _check_statistics(grads, params, state)
        return _shampoo_update(grads, state, learning_rate)

    return GradientTransformation(init, update)


# The updates run as one compiled program per shape, the hyperparameters as arguments (every
# optimiser of a shape shares it), where eagerly each product, eigendecomposition and moment was an
# operation of its own.
@jax.jit
def _shampoo_update(grads, state, learning_rate):
    left = jax.tree.map(lambda L, G: L + G @ G.T, state.left, grads)
    right = jax.tree.map(lambda R, G: R + G.T @ G, state.right, grads)
    updates = jax.tree.map(lambda L, G, R: -learning_rate * _inverse_root(L, 4) @ G @ _inverse_root(R, 4),
                           left, grads, right)
    return updates, ShampooState(state.count + 1, left, right)


def soap(learning_rate, b1=0.95, b2=0.95, eps=1e-8, precondition_every=10, stat_decay=0.95):
    """SOAP: Adam in the eigenbasis of Shampoo's statistics (kept as moving averages with ``stat_decay``),
    the basis recomputed every ``precondition_every`` steps. When the basis changes, the first
    moment is carried into the new one (exactly: it is linear in the gradients); the second moment
    is kept as it is, a simplification."""
    check_hyperparameter("learning_rate", learning_rate, 0.0, float("inf"))
    for name, value in [("b1", b1), ("b2", b2), ("stat_decay", stat_decay)]:
        check_hyperparameter(name, value, 0.0, 1.0)
    check_hyperparameter("eps", eps, 0.0, float("inf"))
    _checks.size(precondition_every, "precondition_every", minimum=1)

    def init(params):
        _check_matrices(params)
        left, right = jax.tree.map(_zeros_like, _statistics(params, 1.0))
        zeros = jax.tree.map(_zeros_like, params)
        return ShampooState(jnp.zeros((), jnp.int32), left, right,
                            jax.tree.map(lambda w: _eye(w.shape[0]), params),
                            jax.tree.map(lambda w: _eye(w.shape[1]), params), zeros, jax.tree.map(_zeros_like, params))

    def update(grads, state, params=None):
        check_update(grads, params, {"state.mu": state.mu, "state.nu": state.nu})
        _check_statistics(grads, params, state)
        return _soap_update(grads, state, learning_rate, b1, b2, eps, precondition_every, stat_decay, decay)

    decay = (1 - b1, 1 - b2, 1 - stat_decay)  # computed here, as the numbers they are
    return GradientTransformation(init, update)


@jax.jit
def _soap_update(grads, state, learning_rate, b1, b2, eps, precondition_every, stat_decay, decay):
    one_minus_b1, one_minus_b2, one_minus_stat_decay = decay
    count = state.count + 1
    t = count.astype(jnp.float32)
    left = jax.tree.map(lambda L, G: stat_decay * L + one_minus_stat_decay * G @ G.T, state.left, grads)
    right = jax.tree.map(lambda R, G: stat_decay * R + one_minus_stat_decay * G.T @ G, state.right, grads)
    refresh = (count - 1) % precondition_every == 0

    def basis(S, Q):
        return jnp.where(refresh, jnp.linalg.eigh(S)[1], Q)

    Q_left = jax.tree.map(basis, left, state.Q_left)
    Q_right = jax.tree.map(basis, right, state.Q_right)
    rotated = jax.tree.map(lambda Ql, G, Qr: Ql.T @ G @ Qr, Q_left, grads, Q_right)
    # The first moment is linear in the gradients, so it is carried into a new basis exactly.
    carried = jax.tree.map(lambda m, Ol, Or, Ql, Qr: Ql.T @ (Ol @ m @ Or.T) @ Qr,
                           state.mu, state.Q_left, state.Q_right, Q_left, Q_right)
    mu = jax.tree.map(lambda m, g: b1 * m + one_minus_b1 * g, carried, rotated)
    nu = jax.tree.map(lambda v, g: b2 * v + one_minus_b2 * g * g, state.nu, rotated)
    step = jax.tree.map(lambda m, v: (m / (1 - b1**t)) / (jnp.sqrt(v / (1 - b2**t)) + eps), mu, nu)
    updates = jax.tree.map(lambda Ql, s, Qr: -learning_rate * Ql @ s @ Qr.T, Q_left, step, Q_right)
    return updates, ShampooState(count, left, right, Q_left, Q_right, mu, nu)
