r"""Weight decay
============

Add :math:`\tfrac{\lambda}{2}\lVert w \rVert^2` to the loss so that every step pulls the weights a
little towards zero: the default regulariser of almost every network, and in closed form the ridge
regression of a linear model; reach for it whenever a model has more freedom than its data can pin
down.

Equation
--------

.. math::

   L_\lambda(w) = \tfrac{1}{2} \lVert X w - y \rVert^2 + \tfrac{\lambda}{2} \lVert w \rVert^2,
   \qquad
   w^\star_\lambda = \left(X^\top X + \lambda I\right)^{-1} X^\top y,
   \qquad
   \lambda = \frac{\sigma^2}{\tau^2}

   w \leftarrow w - \eta \left(\nabla L_0(w) + \lambda w\right)
   = (1 - \eta \lambda)\, w - \eta \nabla L_0(w)

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`X`
     - inputs (design matrix), one example per row
     - ``X``
     - ``(N, D)``
   * - :math:`y`
     - targets
     - ``y``
     - ``(N,)``
   * - :math:`w`, :math:`w^\star_\lambda`
     - weights; the minimiser of the penalised loss (the ridge solution)
     - ``w``; ``ridge(X, y, weight_decay)``
     - ``(D,)``
   * - :math:`L_\lambda`, :math:`L_0`
     - loss with the penalty; the data loss alone (:math:`\lambda = 0`)
     - ``ridge_loss``
     - ``()``
   * - :math:`\lambda`
     - weight decay (penalty strength); ``alpha`` in scikit-learn's ``Ridge``
     - ``weight_decay``
     - scalar, :math:`\ge 0`
   * - :math:`I`
     - identity matrix
     - (never formed: the SVD adds :math:`\lambda` to each :math:`s_k^2`)
     - ``(D, D)``
   * - :math:`\sigma`
     - standard deviation of the noise on the targets
     - (Bayesian reading)
     - scalar
   * - :math:`\tau`
     - standard deviation of the Gaussian prior on each weight
     - (Bayesian reading)
     - scalar
   * - :math:`\eta`
     - learning rate
     - ``learning_rate``
     - scalar

Explanation
-----------

The penalty :math:`\tfrac{\lambda}{2}\lVert w\rVert^2` charges the model for large weights, so among
the weights that explain the data about equally well it picks the small ones. Its gradient is
:math:`\lambda w`, so a gradient step multiplies the weights by :math:`1 - \eta\lambda` before the
usual step: the weights *decay* geometrically unless the data keep pushing them up, which is where
the name comes from :footcite:`krogh1992simple`. For a linear model the penalised loss is still a
quadratic, and setting its gradient :math:`X^\top(Xw - y) + \lambda w` to zero gives the ridge
solution :math:`w^\star_\lambda` in closed form :footcite:`hoerl1970ridge`. Adding
:math:`\lambda I` makes the matrix invertible even when :math:`X^\top X` is not (more features than
examples, or collinear features), which was ridge regression's original purpose.

**What it shrinks.** Write :math:`X = U \operatorname{diag}(s) V^\top` (the singular value
decomposition). Least squares gives the coordinate :math:`u_k^\top y / s_k` along the direction
:math:`v_k`; ridge multiplies it by :math:`s_k^2 / (s_k^2 + \lambda)`. Directions the data pin down
well (large :math:`s_k`) are almost untouched; directions the data barely see (small :math:`s_k`),
where least squares would divide by a tiny number and amplify the noise, are shrunk almost to zero
:footcite:`hastie2009elements`. The code computes the solution this way, from the SVD, without
forming :math:`X^\top X` (which would square the condition number); at :math:`\lambda = 0` it returns
the minimum-norm least-squares solution. The norm :math:`\lVert w^\star_\lambda\rVert` falls
monotonically as :math:`\lambda` grows, since every factor does.

**The Bayesian reading.** Suppose the targets are :math:`y = Xw + \varepsilon` with Gaussian noise of
standard deviation :math:`\sigma`, and, before seeing data, each weight is believed to be drawn from
a Gaussian with mean 0 and standard deviation :math:`\tau`. The negative log posterior is then
:math:`\frac{1}{2\sigma^2}\lVert Xw - y\rVert^2 + \frac{1}{2\tau^2}\lVert w\rVert^2` plus a
constant; multiplying by :math:`\sigma^2` gives :math:`L_\lambda` with
:math:`\lambda = \sigma^2/\tau^2`. So the ridge solution is the maximum a posteriori (MAP) estimate
under a Gaussian prior :footcite:`bishop2006pattern`: strong decay is a confident belief that
weights are small (small :math:`\tau`) or that the targets are noisy (large :math:`\sigma`).

**Scaling conventions.** This page sums the squared errors, as scikit-learn's ``Ridge`` does, so its
``alpha`` is exactly :math:`\lambda`. Deep-learning code usually *averages* the loss over a batch of
:math:`N` examples; the same solution then needs a decay of :math:`\lambda/N`, which is why the
values used in practice (``1e-4`` to ``0.1``) look small.

**Decoupled decay.** For plain stochastic gradient descent, adding :math:`\lambda w` to the gradient
and shrinking the weights by :math:`1-\eta\lambda` directly are the same update (the last line of
the equation). Under an adaptive optimiser such as Adam they are not: the L2 gradient is divided
by the running gradient scale like every other gradient, so weights with large gradients are
hardly decayed at all. Applying the decay directly to the weights, outside the adaptive
rescaling, is *decoupled weight decay* :footcite:`loshchilov2019decoupled` (:doc:`/docs/chapters/optimization/adamw`, in the
optimisation chapter). In practice biases and normalisation scales are usually excluded from
the decay: pass ``l2_penalty`` only the weights to be decayed.

Figure: a polynomial of degree 15 fitted to 12 noisy points has more coefficients than points, so
without decay it passes (nearly, in float32) through every point and swings wildly between them; growing
:math:`\lambda` trades that variance for bias until the curve flattens towards zero.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.regularization.weight_decay import polynomial_features, ridge
   k_x, k_e = jax.random.split(jax.random.key(0))
   x = jnp.sort(jax.random.uniform(k_x, (12,), minval=-1.0, maxval=1.0))
   y = jnp.sin(jnp.pi * x) + 0.2 * jax.random.normal(k_e, (12,))
   grid = jnp.linspace(-1.0, 1.0, 300)
   fig, ax = plt.subplots(figsize=(6.5, 4))
   for lam in [0.0, 1e-4, 1e-2, 1.0, 10.0]:
       w = ridge(polynomial_features(x, 15), y, lam)
       ax.plot(grid, polynomial_features(grid, 15) @ w, label=f"$\\lambda$ = {lam:g}")
   ax.plot(grid, jnp.sin(jnp.pi * grid), "k:", label="true curve")
   ax.scatter(x, y, color="k", zorder=3, label="12 noisy points")
   ax.set_ylim(-2.5, 2.5)
   ax.set_xlabel("x")
   ax.set_ylabel("fitted polynomial of degree 15")
   ax.legend(fontsize=8, ncol=2)
   fig.tight_layout()

.. admonition:: Intuition

   Weight decay is a leash: every weight is tied to zero by an elastic band, and only a steady
   pull from the data keeps it away. A weight that the data care about strains against the band
   and stays large; a weight that only fits noise gets little consistent pull and is drawn back.
   The Bayesian reading says the same thing: the band is the prior belief that weights are small,
   and its stiffness is how firmly that belief is held.

Inductive bias
--------------

Weight decay assumes that the function behind the data is *smooth*: that small weights, which make
outputs change slowly with the inputs, are a priori more likely than large ones. It is isotropic: it
shrinks every weight by the same factor, whatever the units of the input it multiplies, so features
should be standardised first, or the decay will punish a feature measured in millimetres more than
the same feature measured in metres. In a network followed by a normalisation layer, the scale of
the weights before it no longer changes the function at all; there, decay mainly raises the
effective learning rate, a different role from the one its Bayesian reading describes.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.regularization.weight_decay import (
...     decoupled_sgd_step, fit_ridge_gradient_descent, l2_penalty, l2_sgd_step, ridge)
>>> X = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
>>> y = jnp.array([1.0, 2.0, 3.0])
>>> ridge(X, y, 0.0).round(3)  # least squares
Array([1., 2.], dtype=float32)
>>> ridge(X, y, 1.0).round(3)  # pulled towards zero
Array([0.875, 1.375], dtype=float32)
>>> from cookbook.regularization.weight_decay import ridge_loss
>>> float(ridge_loss(ridge(X, y, 1.0), X, y, 1.0)) < float(ridge_loss(ridge(X, y, 0.0), X, y, 1.0))  # 1.8125 < 2.5
True
>>> w, losses = fit_ridge_gradient_descent(X, y, 1.0, learning_rate=0.2, steps=200)
>>> w.round(3)  # gradient descent on the penalised loss reaches the closed form
Array([0.875, 1.375], dtype=float32)
>>> float(l2_penalty({"w": jnp.array([3.0, 4.0])}, 0.1))  # 0.1 / 2 * 25
1.25
>>> params, grads = {"w": jnp.array([3.0, 4.0])}, {"w": jnp.array([1.0, -1.0])}
>>> l2_sgd_step(params, grads, learning_rate=0.5, weight_decay=0.1)["w"]
Array([2.35, 4.3 ], dtype=float32)
>>> decoupled_sgd_step(params, grads, learning_rate=0.5, weight_decay=0.1)["w"]  # the same for SGD
Array([2.35, 4.3 ], dtype=float32)
>>> from cookbook.regularization.weight_decay import polynomial_features
>>> polynomial_features(jnp.array([2.0, -1.0]), 3)  # the features of the figure below
Array([[ 1.,  2.,  4.,  8.],
       [ 1., -1.,  1., -1.]], dtype=float32)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "ridge_loss": (),
    "ridge": (),
    "fit_ridge_gradient_descent": ("steps",),
    "l2_sgd_step": (),
    "decoupled_sgd_step": (),
    "polynomial_features": ("degree",),
}


def _check_decay(weight_decay):
    if not isinstance(weight_decay, jax.core.Tracer) and np.min(np.asarray(weight_decay)) < 0:  # checked when concrete
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")


def _check_data(X, y):
    X = _checks.float_array(X, "X", ndim=2, what=" (N, D)")
    y = _checks.same_shape(_checks.float_array(y, "y"), "y", (X.shape[0],), expected_from="(N,), N from X")
    return X, y


def l2_penalty(params, weight_decay):
    """``weight_decay / 2`` times the sum of squares of every leaf of the pytree ``params``."""
    _check_decay(weight_decay)
    return _l2_penalty_jit(params, weight_decay)


# Each public function checks its input in Python, then hands it as it comes to a compiled core (the
# decay and the step size traced), so that a repeated call with the same shapes (the examples', the
# tests', the jit and bad-input checks') reuses one program instead of compiling each small operation.
def _l2_penalty(params, weight_decay):
    return 0.5 * weight_decay * sum(jnp.sum(jnp.square(p)) for p in jax.tree.leaves(params))


_l2_penalty_jit = jax.jit(_l2_penalty)


def ridge_loss(w, X, y, weight_decay):
    """Penalised squared error ``0.5 * |X w - y|^2 + weight_decay / 2 * |w|^2`` (sums, not means)."""
    X, y = _check_data(X, y)
    w = _checks.same_shape(_checks.float_array(w, "w"), "w", (X.shape[1],), expected_from="(D,), D from X")
    _check_decay(weight_decay)
    return _ridge_loss_jit(w, X, y, weight_decay)


def _ridge_loss(w, X, y, weight_decay):
    return 0.5 * jnp.sum(jnp.square(X @ w - y)) + _l2_penalty(w, weight_decay)


_ridge_loss_jit = jax.jit(_ridge_loss)


def ridge(X, y, weight_decay):
    """Closed-form ridge weights ``(X^T X + weight_decay I)^{-1} X^T y``, computed from the SVD of ``X``.

    No intercept: centre the data, or append a column of ones (whose weight is then decayed too).
    At ``weight_decay = 0`` this is the minimum-norm least-squares solution.
    """
    X, y = _check_data(X, y)
    _check_decay(weight_decay)
    return _ridge(X, y, weight_decay)


@jax.jit
def _ridge(X, y, weight_decay):
    U, s, Vt = jnp.linalg.svd(X, full_matrices=False)  # (N, R), (R,), (R, D)
    cutoff = jnp.finfo(X.dtype).eps * max(X.shape) * s[0]  # numpy's pinv cut-off for s = 0 directions
    safe = jnp.where(s > cutoff, s**2 + weight_decay, 1.0)
    shrink = jnp.where(s > cutoff, s / safe, 0.0)  # s / (s^2 + lambda): 1/s shrunk by s^2 / (s^2 + lambda)
    return Vt.T @ (shrink * (U.T @ y))


def fit_ridge_gradient_descent(X, y, weight_decay, *, learning_rate, steps, w=None):
    """Full-batch gradient descent on :func:`ridge_loss` from zeros (or ``w``); returns ``w`` and the losses."""
    X, y = _check_data(X, y)
    _check_decay(weight_decay)
    steps = _checks.size(steps, "steps")
    return _fit(X, y, weight_decay, learning_rate, w, steps=steps)


@functools.partial(jax.jit, static_argnames="steps")
def _fit(X, y, weight_decay, learning_rate, w, *, steps):
    if w is None:
        w = jnp.zeros(X.shape[1], X.dtype)

    def step(w, _):
        loss, grad = jax.value_and_grad(_ridge_loss)(w, X, y, weight_decay)
        return w - learning_rate * grad, loss

    return jax.lax.scan(step, w, length=steps)


def _check_step(params, grads, weight_decay):
    _checks.same_tree(grads, "grads", params, "params")
    _checks.same_tree(params, "params", grads, "grads")  # float parameters too
    _check_decay(weight_decay)


def l2_sgd_step(params, grads, *, learning_rate, weight_decay):
    """One SGD step on the data loss plus the L2 penalty: ``params - lr * (grads + wd * params)``."""
    _check_step(params, grads, weight_decay)
    return _l2_sgd_step(params, grads, learning_rate, weight_decay)


@jax.jit
def _l2_sgd_step(params, grads, learning_rate, weight_decay):
    return jax.tree.map(lambda p, g: p - learning_rate * (g + weight_decay * p), params, grads)


def decoupled_sgd_step(params, grads, *, learning_rate, weight_decay):
    """One SGD step with the decay applied to the weights directly: ``(1 - lr * wd) * params - lr * grads``."""
    _check_step(params, grads, weight_decay)
    return _decoupled_sgd_step(params, grads, learning_rate, weight_decay)


@jax.jit
def _decoupled_sgd_step(params, grads, learning_rate, weight_decay):
    return jax.tree.map(lambda p, g: (1.0 - learning_rate * weight_decay) * p - learning_rate * g, params, grads)


def polynomial_features(x, degree):
    """Powers ``x**0, ..., x**degree`` of each entry of ``x`` (N,), shape (N, degree + 1)."""
    x = _checks.float_array(x, "x", ndim=1, what=" (N,)")
    degree = _checks.size(degree, "degree", minimum=0)
    return _polynomial_features(x, degree)


@functools.partial(jax.jit, static_argnums=1)
def _polynomial_features(x, degree):
    return x[:, None] ** jnp.arange(degree + 1)[None, :]
