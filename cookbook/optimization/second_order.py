r"""Second-order methods: Newton, Hessian-vector products and conjugate gradient
==============================================================================

Use the curvature of the loss, not only its slope, to choose both the direction and the length of a
step: Newton's method, made affordable for many parameters by Hessian-vector products and the
conjugate-gradient solver, for small or well-conditioned problems where a few exact steps beat
thousands of cheap ones.

Equation
--------

.. math::

   L(\theta + \delta) \approx L(\theta) + g^\top \delta + \tfrac{1}{2} \delta^\top H \delta
   \quad\Rightarrow\quad \theta \leftarrow \theta - H^{-1} g

   H v = \frac{\partial}{\partial \varepsilon} \nabla L(\theta + \varepsilon v) \Big|_{\varepsilon = 0},
   \qquad
   \text{CG:}\ \ \alpha_k = \frac{r_k^\top r_k}{p_k^\top H p_k},\ \
   \delta_{k+1} = \delta_k + \alpha_k p_k,\ \
   r_{k+1} = r_k - \alpha_k H p_k,\ \
   p_{k+1} = r_{k+1} + \frac{r_{k+1}^\top r_{k+1}}{r_k^\top r_k} p_k

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`\theta`
     - the parameters
     - ``x`` (a vector) or ``params`` (a pytree)
     - ``(n,)`` or any pytree
   * - :math:`L`
     - the loss, twice differentiable
     - ``f``
     - ``()``
   * - :math:`g`
     - the gradient :math:`\nabla L(\theta)`
     - ``g``
     - ``(n,)``
   * - :math:`H`
     - the Hessian :math:`\nabla^2 L(\theta)`, never formed by the CG path
     - ``jax.hessian(f)(x)``
     - ``(n, n)``
   * - :math:`\delta`, :math:`\delta_k`
     - the step; its CG estimate after :math:`k` iterations (the solution of :math:`H\delta = -g`)
     - ``delta``
     - ``(n,)``
   * - :math:`v`
     - any direction to multiply by the Hessian
     - ``v``
     - like :math:`\theta`
   * - :math:`\varepsilon`
     - the size of the perturbation along :math:`v` (differentiated, never chosen)
     - (inside :func:`jax.jvp`)
     - scalar
   * - :math:`r_k`, :math:`p_k`
     - CG's residual :math:`-g - H\delta_k` and search direction
     - ``r``, ``p``
     - ``(n,)``
   * - :math:`\alpha_k`, :math:`k`
     - CG's step length along :math:`p_k`; its iteration
     - ``alpha``; the loop counter
     - scalars

Explanation
-----------

**Newton's method** fits a quadratic to the loss at the current point (its second-order Taylor
expansion) and jumps to that quadratic's minimum, :math:`\delta = -H^{-1} g`
:footcite:`nocedal2006numerical`. Where gradient descent needs a learning rate and is slowed by a
large ratio between the Hessian's largest and smallest eigenvalues (a long thin valley), Newton's
step is already the right length in every eigendirection: it divides each component of the gradient
by its own curvature. On a quadratic the model is exact and one step lands on the minimum whatever
the conditioning; near a minimum of a smooth function convergence is *quadratic* (the number of
correct digits doubles every step), which is why Newton solves the Rosenbrock function in a handful
of steps where gradient descent needs thousands. Newton is also invariant to any linear
reparametrisation of :math:`\theta`, which no first-order method is.

**Why full Newton does not scale.** For :math:`n` parameters the Hessian has :math:`n^2` entries
and solving with it costs :math:`O(n^3)`. A model with :math:`10^8` parameters would need
:math:`4 \times 10^{16}` bytes for :math:`H` in float32 and about :math:`10^{24}` operations per
solve. Far from a minimum the Hessian is also indefinite (saddle points, concave regions), and the
raw Newton step then moves *towards* a maximum or a saddle; practical variants add damping
(:math:`H + \lambda I`), line searches or trust regions.

**Hessian-vector products.** What the Newton step needs is not :math:`H` itself but its action on
vectors. :math:`Hv` is the directional derivative of the gradient along :math:`v`, so forward-mode
differentiation of the reverse-mode gradient (:func:`jax.jvp` of :func:`jax.grad`) computes it
exactly, at the cost of a few gradient evaluations and with :math:`O(n)` memory
:footcite:`pearlmutter1994fast`. The tests check it against the explicit :func:`jax.hessian` times
:math:`v`.

**Conjugate gradient** :footcite:`hestenes1952methods` solves :math:`H\delta = -g` for a symmetric
positive-definite :math:`H` using only products :math:`Hp`. Each iteration minimises the quadratic
model along a new direction that is :math:`H`-conjugate to all previous ones
(:math:`p_i^\top H p_j = 0`), so in exact arithmetic it finishes in at most :math:`n` iterations, and
far fewer when the eigenvalues cluster; stopping early gives a truncated Newton step that still
respects the curvature. Combining the two gives *Hessian-free* optimisation
:footcite:`martens2010deep`: Newton's step with :math:`O(n)` memory.

**Numerical traps.** CG assumes a positive-definite matrix; on an indefinite Hessian
:math:`p^\top H p` can be zero or negative and the iteration breaks down. The code then stops and
returns the step built so far, or, if the very first direction :math:`p_0 = -g` already has
non-positive curvature, the steepest-descent step :math:`-g` itself, which still lowers the loss
for a small enough step, where the step built so far would be zero: the rule of truncated CG
:footcite:`steihaug1983conjugate,nocedal2006numerical`. Practical Hessian-free methods use the
Gauss-Newton matrix instead, which is positive semi-definite. In floating point the search
directions slowly lose their conjugacy, so on an ill-conditioned system CG may need more than
:math:`n` iterations, and a relative residual much below :math:`10^{-6}` is out of reach in float32;
the code therefore stops at a relative tolerance and a maximum number of iterations.

.. admonition:: Intuition

   Gradient descent reads only the slope: a walker who knows which way is down but not how far
   away the bottom is. Newton's method also reads the curvature, fits a bowl to the ground
   underfoot and jumps to the bowl's lowest point; on a field that really is a bowl it arrives in
   one jump. Conjugate gradient makes that jump without drawing the whole bowl, probing its shape
   along one new direction at a time.

Inductive bias
--------------

Newton's method assumes that the loss is locally well described by a quadratic and that the
quadratic is convex where we stand. Where that holds (near a minimum, in convex problems such as
logistic regression) it is the fastest method there is; where it does not (far from a minimum, in
the saddle-filled landscapes of deep networks, or with noisy mini-batch curvature) it needs damping
and safeguards, and first-order methods with momentum are usually cheaper per unit of progress.

Example
-------

One Newton step solves a badly conditioned quadratic exactly; the CG version needs only
Hessian-vector products:

>>> import jax, jax.numpy as jnp
>>> from cookbook.optimization.second_order import conjugate_gradient, hvp, newton_cg_step, newton_step
>>> A = jnp.diag(jnp.array([1.0, 10.0, 1000.0]))
>>> f = lambda x: 0.5 * x @ A @ x - jnp.array([1.0, 1.0, 1.0]) @ x
>>> x = newton_step(f, jnp.zeros(3))
>>> x, jnp.linalg.solve(A, jnp.ones(3))
(Array([1.   , 0.1  , 0.001], dtype=float32), Array([1.   , 0.1  , 0.001], dtype=float32))
>>> newton_cg_step(f, jnp.zeros(3), max_steps=3)
Array([1.   , 0.1  , 0.001], dtype=float32)
>>> hvp(f, jnp.zeros(3), jnp.array([1.0, 1.0, 1.0]))
Array([   1.,   10., 1000.], dtype=float32)
>>> from jax.tree_util import Partial
>>> conjugate_gradient(Partial(jnp.matmul, A), jnp.ones(3), max_steps=3)
Array([1.   , 0.1  , 0.001], dtype=float32)

Implementation notes
--------------------

**Compiling once.** ``hvp``, ``newton_step`` and ``newton_cg_step`` take the loss ``f`` as a
static argument, so they compile once per function object: define the loss once and reuse it, since
a new ``lambda`` at every call compiles again at every call. ``conjugate_gradient`` takes
``matvec`` as an ordinary argument instead, a :class:`jax.tree_util.Partial` whose arrays are
traced: ``Partial(jnp.matmul, A)`` with a new ``A`` of the same shape reuses the compiled solver
(the tests count the traces). Libraries: :func:`jax.scipy.sparse.linalg.cg` is a CG solver with the
same interface, and :func:`jax.hessian` forms the full Hessian for small problems.
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "hvp": ("f",),
    "newton_step": ("f",),
    "conjugate_gradient": ("max_steps",),
    "newton_cg_step": ("f", "max_steps"),
}


def _check_loss(f, params, name):
    """A ``ValueError`` naming ``name`` unless ``f(params)`` is a scalar (traced, never run)."""
    try:
        out = jax.eval_shape(f, params)
    except (TypeError, ValueError) as error:
        raise ValueError(f"f cannot take {name} of shape {jax.tree.map(jnp.shape, params)}: {error}") from None
    if jnp.shape(out) != ():
        raise ValueError(f"f must map {name} to a scalar loss, got an output of shape {jnp.shape(out)}")


# The loss ``f`` is static: these functions compile once per function object, so define the loss
# once and reuse it (a new ``lambda`` at every call would compile again at every call).
@partial(jax.jit, static_argnames=("f",))
def hvp(f, params, v):
    """The Hessian of ``f`` at ``params`` times ``v`` (a pytree like ``params``), by forward-over-reverse."""
    _checks.same_tree(params, "params", params, "params")  # float parameters
    _checks.same_tree(v, "v", params, "params")
    _check_loss(f, params, "params")
    return jax.jvp(jax.grad(f), (params,), (v,))[1]


@partial(jax.jit, static_argnames=("f",))
def newton_step(f, x):
    """One full Newton step from the vector ``x``: forms the (n, n) Hessian and solves with it."""
    x = _checks.float_array(x, "x", ndim=1, what=" (n,)")
    _check_loss(f, x, "x")
    g = jax.grad(f)(x)
    H = jax.hessian(f)(x)  # (n, n): the memory that does not scale
    return x - jnp.linalg.solve(H, g)


def conjugate_gradient(matvec, b, *, max_steps, tol=1e-6):
    """Solve ``A x = b`` for symmetric positive-definite ``A`` given only ``matvec(v) = A v``.

    Stops after ``max_steps`` iterations, when the residual norm falls below ``tol * |b|``, or when
    the curvature along the search direction is not positive (``A`` is not positive definite
    there): then it returns the iterate so far, or ``b`` itself if that happens at the first
    iteration, as truncated CG does. ``matvec`` is an argument, not a constant: pass the matrix
    through :class:`jax.tree_util.Partial` (``Partial(jnp.matmul, A)``) and a new ``A`` of the same
    shape reuses the compiled solver; a plain function compiles once per function object.
    """
    b = _checks.float_array(b, "b", ndim=1, what=" (n,)")
    max_steps = _checks.size(max_steps, "max_steps")
    matvec = matvec if isinstance(matvec, Partial) else Partial(matvec)
    try:
        out = jax.eval_shape(matvec, b)
    except (TypeError, ValueError) as error:
        raise ValueError(f"matvec cannot take b of shape {b.shape}: {error}") from None
    if out.shape != b.shape:
        raise ValueError(f"matvec must map b of shape {b.shape} to that shape, got {out.shape}")
    return _conjugate_gradient(matvec, b, max_steps, tol)


@partial(jax.jit, static_argnames=("max_steps",))
def _conjugate_gradient(matvec, b, max_steps, tol):
    b_norm = jnp.linalg.norm(b)

    def keep_going(carry):
        k, x, r, p, rr, curved = carry
        # Written as "not converged" so that a NaN keeps going and shows in the result.
        return (k < max_steps) & ~(jnp.sqrt(rr) <= tol * b_norm) & curved

    def iteration(carry):
        k, x, r, p, rr, _ = carry
        Ap = matvec(p)
        pAp = p @ Ap
        curved = pAp > 0
        alpha = jnp.where(curved, rr / jnp.where(curved, pAp, 1.0), 0.0)
        # Non-positive curvature: keep the iterate so far; at the first iteration that is zero, so
        # take the steepest-descent direction b of the model instead (Steihaug's rule).
        x = jnp.where(curved, x + alpha * p, jnp.where(k == 0, b, x))
        r = r - alpha * Ap
        rr_new = r @ r
        p = r + (rr_new / jnp.where(rr > 0, rr, 1.0)) * p
        return k + 1, x, r, p, rr_new, curved

    x0 = jnp.zeros_like(b)
    start = (0, x0, b, b, b @ b, jnp.array(True))  # r0 = b - A x0 = b
    return jax.lax.while_loop(keep_going, iteration, start)[1]


@partial(jax.jit, static_argnames=("f", "max_steps"))
def newton_cg_step(f, x, *, max_steps, tol=1e-6):
    """A Newton step from the vector ``x`` with the linear system solved by CG on Hessian-vector products."""
    x = _checks.float_array(x, "x", ndim=1, what=" (n,)")
    _check_loss(f, x, "x")
    g = jax.grad(f)(x)
    delta = conjugate_gradient(lambda v: hvp(f, x, v), -g, max_steps=max_steps, tol=tol)
    return x + delta
