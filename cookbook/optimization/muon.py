r"""Muon: momentum orthogonalised by Newton–Schulz
===============================================

Keep a momentum for each weight matrix, replace it by the nearest matrix whose singular values are
all about one, and step along that: an optimiser for the hidden matrices of a network that trains
them in fewer steps than AdamW at the same cost per step.

Equation
--------

.. math::

   M_t = \beta M_{t-1} + (1-\beta)\, G_t, \qquad
   \tilde M_t = \beta\, \frac{M_t}{1-\beta^{t+1}} + (1-\beta)\, \frac{G_t}{1-\beta^{t}}

   X_0 = \frac{\tilde M_t}{\lVert \tilde M_t \rVert_F}, \qquad
   X_{k+1} = a X_k + b\, (X_k X_k^\top) X_k + c\, (X_k X_k^\top)^2 X_k, \qquad
   O_t = X_5 \approx U V^\top

   W_t = W_{t-1} - \eta \left( \sqrt{\max(1, d_\text{out}/d_\text{in})}\; O_t
   + \lambda\, W_{t-1} \right)

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`W_t`
     - a weight matrix after step :math:`t` (input axis first)
     - a two-dimensional leaf of ``params``
     - :math:`(d_\text{in}, d_\text{out})`
   * - :math:`G_t`
     - its gradient
     - a leaf of ``grads``
     - :math:`(d_\text{in}, d_\text{out})`
   * - :math:`M_t`
     - the momentum (a moving average of gradients)
     - ``state.mu``
     - :math:`(d_\text{in}, d_\text{out})`
   * - :math:`\tilde M_t`
     - the Nesterov look-ahead of the momentum, bias-corrected
     - ``lookahead``
     - :math:`(d_\text{in}, d_\text{out})`
   * - :math:`\beta`
     - the momentum's decay rate
     - ``beta``
     - scalar in :math:`[0, 1)`
   * - :math:`X_k`
     - the Newton–Schulz iterate, wide side last
     - ``X``
     - :math:`(\min, \max)` of the matrix's sides
   * - :math:`\lVert \cdot \rVert_F`
     - the Frobenius norm, the root of the sum of squared entries
     - ``jnp.linalg.norm``
     - scalar
   * - :math:`a, b, c`
     - the quintic's coefficients, 3.4445, −4.7750, 2.0315
     - ``NS_COEFFICIENTS``
     - three scalars
   * - :math:`O_t`, :math:`U V^\top`
     - the orthogonalised momentum; the polar factor it approximates (:math:`\tilde M_t = U S V^\top`)
     - ``newton_schulz``'s result
     - :math:`(d_\text{in}, d_\text{out})`
   * - :math:`d_\text{in}`, :math:`d_\text{out}`
     - the matrix's input and output sizes
     - ``d_in``, ``d_out``
     - integers
   * - :math:`\eta`, :math:`\lambda`
     - learning rate; weight decay
     - ``learning_rate``, ``weight_decay``
     - scalars
   * - :math:`t`
     - step number, from 1
     - ``state.count``
     - ``()`` int32

Explanation
-----------

Adam scales each coordinate of the gradient on its own. But a weight matrix acts on vectors as a
whole, and its gradient in a network is typically close to low rank: a few directions dominate, and
an update along it mostly pushes the matrix further along the directions it already favours. Muon
:footcite:`jordan2024muon` keeps the directions of the momentum (its singular vectors :math:`U` and
:math:`V`) and discards their strengths (the singular values :math:`S`), stepping along
:math:`U V^\top`. Every direction the momentum has found then moves the same amount, and the rare
directions are no longer drowned out by the common ones. The step is the steepest descent under the
spectral norm, the norm that bounds how much a matrix can stretch any input
:footcite:`bernstein2024oldoptimizer`.

**Newton–Schulz instead of an SVD.** The odd polynomial :math:`p(s) = a s + b s^3 + c s^5` applied to
the matrix as in the equation acts on the singular values alone: :math:`X = U S V^\top` becomes
:math:`U p(S) V^\top`, with the same singular vectors, because :math:`X X^\top X = U S^3 V^\top`. Dividing by
the Frobenius norm first puts every singular value in :math:`[0, 1]`, and the coefficients are chosen
to make the slope at zero steep (3.4445), so small singular values grow fast. They do not converge
to exactly one: five steps send every normalised singular value between 0.01 and 1 into
:math:`[0.68, 1.14]`, which trains as well and costs only ten matrix products. The iterate is kept
wide (:math:`X X^\top` is the small Gram matrix), so a tall matrix is transposed before and after.

**The rest.** The momentum is Nesterov's: the step looks one average ahead. The factor
:math:`\sqrt{\max(1, d_\text{out}/d_\text{in})}` scales the update of a matrix that widens its input,
whose orthogonal factor has entries too small otherwise. Muon is for matrices only: vectors (biases,
gains) have no singular values to equalise, and the common practice, followed here and by optax, is
to train them with AdamW (with the same Nesterov look-ahead); practitioners also give embeddings and
the output layer to AdamW :footcite:`liu2025muonscalable`, which the ``matrix`` argument lets a
caller decide.

.. admonition:: Intuition

   Imagine a choir where a few loud voices carry the tune. Turning up the whole choir (a larger
   learning rate) makes the loud voices louder still; Muon instead sets every voice to the same
   volume, so the quiet parts finally get heard. Newton–Schulz is the sound engineer's quick fix:
   five passes of a fader curve that lifts quiet voices and holds loud ones near one, close enough
   to equal without measuring each voice exactly (an SVD).

Inductive bias
--------------

Muon assumes that a parameter is a linear map whose singular directions are what matter, and that
equal progress along all of them is a better default than progress in proportion to the gradient's
strength. It is not invariant to rescaling coordinates (Adam is) but is invariant to rotations of
the input and output spaces (Adam is not). It does not apply to vectors or scalars, and for a
convolution kernel or a tensor of heads the caller must say which axes form the matrix.

Example
-------

Five Newton–Schulz steps leave the singular vectors alone and bring the singular values near one:

>>> import jax, jax.numpy as jnp
>>> from cookbook.optimization.muon import muon, newton_schulz
>>> G = jax.random.normal(jax.random.key(0), (7, 4))
>>> O = newton_schulz(G)
>>> O.shape, bool(jnp.all(jnp.abs(jnp.linalg.svd(O, compute_uv=False) - 1) < 0.35))
((7, 4), True)
>>> from cookbook.optimization.sgd import run_optimizer
>>> target = jnp.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
>>> loss = lambda p: jnp.sum((p["w"] - target) ** 2) + jnp.sum((p["b"] - 1.0) ** 2)
>>> path, losses = run_optimizer(loss, {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}, muon(0.02), steps=400)
>>> bool(losses[-1] < 1e-3 * losses[0])
True

Implementation notes
--------------------

``optax.contrib.muon`` is the same optimiser: the tests follow it step for step over 100 steps on a
matrix-and-vector pytree, and ``newton_schulz`` equals its ``orthogonalize_via_newton_schulz``. It
divides by :math:`\lVert \tilde M_t \rVert_F + 10^{-8}`, as here; the bias corrections are optax's
too (the published Muon omits them, a difference that fades after a few tens of steps). The test
file trains the same small network on scikit-learn's digits with Muon and with AdamW and checks that
Muon reaches AdamW's held-out accuracy in no more steps. Each step costs
:math:`5 \times 3` products of matrices with the sides of :math:`W`, small next to a forward and
backward pass over a batch of tokens.
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.optimization.sgd import GradientTransformation, check_hyperparameter, check_update

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"newton_schulz": ("steps",)}

#: The quintic's coefficients (a, b, c) of Jordan et al. (2024), also optax's defaults.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)

#: Added to the Frobenius norm before dividing by it, as optax does.
EPS = 1e-8


class MuonState(NamedTuple):
    """The step count, the momentum of every leaf, and AdamW's second moment of the non-matrix ones
    (``()`` in the place of a matrix, which needs none)."""

    count: jax.Array
    mu: object
    nu: object


def newton_schulz(G, steps=5):
    """The quintic Newton–Schulz iteration on ``G / ‖G‖_F``: about ``U Vᵀ`` for ``G = U S Vᵀ``."""
    G = _checks.float_array(G, "G")
    if G.ndim != 2:
        raise ValueError(f"G must be a matrix (two axes), got shape {G.shape}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    return orthogonalise(G, steps)


@partial(jax.jit, static_argnames="steps")
def orthogonalise(G, steps):
    """``newton_schulz`` after its checks, compiled once per shape."""
    a, b, c = NS_COEFFICIENTS
    transposed = G.shape[0] > G.shape[1]
    X = G.T if transposed else G  # keep the wide side last, so X Xᵀ is the small Gram matrix
    X = X / (jnp.linalg.norm(X) + EPS)

    def step(_, X):
        A = X @ X.T
        return a * X + (b * A + c * A @ A) @ X

    X = jax.lax.fori_loop(0, steps, step, X)
    return X.T if transposed else X


def is_matrix(leaf):
    """The default choice of which leaves Muon trains: every two-dimensional one."""
    return leaf.ndim == 2


def muon(learning_rate, beta=0.95, ns_steps=5, weight_decay=0.0, *, adam_b1=0.9, adam_b2=0.999, eps=1e-8,
         matrix=is_matrix):
    """Muon for the leaves where ``matrix(leaf)`` is true, Nesterov Adam for the others.

    ``weight_decay`` applies to the matrices, as in optax's ``muon``; the other leaves get none.
    """
    check_hyperparameter("learning_rate", learning_rate, 0.0, float("inf"))
    for name, value in [("beta", beta), ("adam_b1", adam_b1), ("adam_b2", adam_b2)]:
        check_hyperparameter(name, value, 0.0, 1.0)
    check_hyperparameter("weight_decay", weight_decay, 0.0, float("inf"))
    check_hyperparameter("eps", eps, 0.0, float("inf"))
    if not isinstance(ns_steps, int) or isinstance(ns_steps, bool) or ns_steps < 0:
        raise ValueError(f"ns_steps must be a non-negative int, got {ns_steps!r}")

    def init(params):
        for leaf in jax.tree.leaves(params):
            if matrix(leaf) and jnp.ndim(leaf) != 2:
                raise ValueError(f"muon trains matrices only; matrix() chose a leaf of shape {jnp.shape(leaf)}")
        mu = jax.tree.map(jnp.zeros_like, params)
        nu = jax.tree.map(lambda p: () if matrix(p) else jnp.zeros_like(p), params)
        return MuonState(jnp.zeros((), jnp.int32), mu, nu)

    def update(grads, state, params=None):
        if weight_decay and params is None:
            raise ValueError(f"muon's update needs params for weight_decay={weight_decay}, got params=None")
        check_update(grads, params, {"state.mu": state.mu})
        count = state.count + 1
        t = count.astype(jnp.float32)
        flat_g, treedef = jax.tree.flatten(grads)
        flat_p = treedef.flatten_up_to(params) if params is not None else [None] * len(flat_g)
        updates, mu, nu = [], [], []
        for g, m, v, p in zip(flat_g, treedef.flatten_up_to(state.mu), treedef.flatten_up_to(state.nu), flat_p):
            b1 = beta if matrix(g) else adam_b1
            m = b1 * m + (1 - b1) * g
            # Nesterov: one more step of the average, each part bias-corrected for its own age.
            lookahead = b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t)
            if matrix(g):
                d_in, d_out = g.shape
                step = newton_schulz(lookahead, ns_steps) * max(1.0, d_out / d_in) ** 0.5
                step = step + weight_decay * p if weight_decay else step
            else:
                v = adam_b2 * v + (1 - adam_b2) * g * g
                step = lookahead / (jnp.sqrt(v / (1 - adam_b2**t)) + eps)
            updates.append(-learning_rate * step)
            mu.append(m)
            nu.append(v)
        return treedef.unflatten(updates), MuonState(count, treedef.unflatten(mu), treedef.unflatten(nu))

    return GradientTransformation(init, update)
