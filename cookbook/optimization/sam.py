r"""Sharpness-aware minimisation (SAM)
===================================

Take each gradient not where the parameters are but at the worst point of a small ball around them,
so that training prefers minima where the loss stays low across the whole ball: flat minima, which
tend to generalise better. It costs a second gradient per step and wraps any optimiser.

Equation
--------

.. math::

   \min_w\; \max_{\lVert \epsilon \rVert_2 \le \rho} L(w + \epsilon), \qquad
   \hat\epsilon(w) = \rho\, \frac{\nabla L(w)}{\lVert \nabla L(w) \rVert_2}

   g_\text{SAM} = \nabla L(w)\big|_{w + \hat\epsilon(w)}, \qquad
   w \leftarrow w - \eta\, g_\text{SAM} \quad \text{(or any optimiser fed } g_\text{SAM}\text{)}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`w`
     - the parameters
     - ``params``
     - a pytree
   * - :math:`L`, :math:`\nabla L`
     - the training loss; its gradient
     - ``loss_fn``; ``grad_fn``
     - ``()``; like the parameters
   * - :math:`\epsilon`, :math:`\hat\epsilon(w)`
     - a perturbation of the weights; the worst one to first order
     - ``sam_perturbation``'s result
     - like the parameters
   * - :math:`\rho`
     - the radius of the ball
     - ``rho``
     - scalar
   * - :math:`\lVert\cdot\rVert_2`
     - the Euclidean norm over all leaves together
     - ``norm``
     - scalar
   * - :math:`g_\text{SAM}`
     - the gradient at the perturbed weights
     - ``sam_gradient``'s result
     - like the parameters
   * - :math:`\eta`
     - learning rate of the optimiser that takes the step
     - (the optimiser's own)
     - scalar

Explanation
-----------

Two minima of the same training loss can differ in width. In a sharp one, a small change of the
weights (the change that new data amounts to) raises the loss a lot; in a flat one it barely
matters. SAM :footcite:`foret2021sam` minimises the largest loss within a ball of radius
:math:`\rho` around the weights, which is low only where the whole neighbourhood is low.

The inner maximum is solved to first order: :math:`L(w+\epsilon) \approx L(w) + \epsilon^\top \nabla
L(w)` is largest on the ball at :math:`\epsilon` along the gradient, of length :math:`\rho`. So one
step of SAM is one ascent step of fixed length, a second gradient there, and a descent step from the
original weights with that second gradient. The gradient of :math:`\hat\epsilon(w)` itself (a
Hessian term) is dropped, as in the paper, which found it made no difference but to the cost.

The measured effect is on the curvature. Gradient descent with step :math:`\eta` on a network drifts
to where the top eigenvalue of the Hessian, the sharpness, sits at the stability limit
:math:`2/\eta` (the edge of stability :footcite:`cohen2021edgeofstability`); SAM, at the same step
and the same training loss, settles where the sharpness is far lower. In the figure, a small
network trained with :math:`\eta = 0.5` ends with a sharpness within 20 % of :math:`2/\eta = 4` under
gradient descent, and under half of that with SAM (:math:`\rho = 0.1`), at a training loss within
10 % of gradient descent's.

.. plot::

   import jax
   from cookbook.optimization.sam import moons_sharpness_run
   losses, sharp = moons_sharpness_run()
   fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2))
   for name in ("gradient descent", "SAM, rho = 0.1"):
       axes[0].plot(np.asarray(losses[name]), label=name)
       axes[1].plot(np.asarray(sharp[name]), label=name)
   axes[1].axhline(2 / 0.5, color="k", lw=0.8, ls="--", label="2 / learning rate")
   axes[0].set(xlabel="step", ylabel="training loss", yscale="log")
   axes[1].set(xlabel="step", ylabel="top Hessian eigenvalue")
   axes[1].legend(fontsize=8)
   fig.tight_layout()

.. admonition:: Intuition

   A hiker looking for a place to pitch a tent at night does not stop at the lowest point under
   their feet: they check a few steps around and walk on until the ground is low everywhere within
   reach. A tent in a narrow ditch is low but wet when the water moves (the test data); a broad
   hollow stays dry.

Inductive bias
--------------

SAM assumes that flatness in weight space predicts generalisation, which holds often but not
always: the measure depends on how the weights are scaled (rescaling the layers of a ReLU network
changes the sharpness and not the function), which is what adaptive variants address. The radius
:math:`\rho` is a hyperparameter that sets which minima count as flat.

Example
-------

On a quadratic the perturbation points along the gradient with length :math:`\rho`, and SAM's
gradient is the gradient at the perturbed point:

>>> import jax, jax.numpy as jnp
>>> from cookbook.optimization.sam import sam_gradient, sam_perturbation
>>> loss_fn = lambda w: 0.5 * jnp.sum(jnp.array([1.0, 4.0]) * w["w"] ** 2)
>>> w = {"w": jnp.array([3.0, 1.0])}
>>> sam_perturbation(jax.grad(loss_fn)(w), 0.5)["w"]
Array([0.3, 0.4], dtype=float32)
>>> sam_gradient(jax.grad(loss_fn), w, 0.5)["w"]
Array([3.3, 5.6], dtype=float32)

Implementation notes
--------------------

optax builds SAM as ``optax.contrib.sam(optimizer, adv_optimizer, opaque_mode=True)`` with the
ascent ``optax.chain(optax.contrib.normalize(), optax.sgd(rho))``; the tests follow it step for step
with plain SGD. Where the gradient is exactly zero this page takes no ascent step, where optax's
normalisation divides by zero. In practice the ascent is taken per mini-batch (or per shard of
one, "m-sharpness"), which the paper found to matter; ``sharpness`` here is power iteration on
Hessian-vector products, exact up to its iteration count, and costs two gradients per iteration.
"""

import functools

import jax
import jax.flatten_util
import jax.numpy as jnp

from cookbook import _checks
from cookbook._memo import cached
from cookbook.optimization.sgd import check_hyperparameter
from cookbook._extras import needs_extra

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"sam_perturbation": ("rho",)}


def global_norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)))


def sam_perturbation(grads, rho):
    """:math:`\\hat\\epsilon = \\rho\\, g / \\lVert g \\rVert_2` over all leaves together (zero where ``g`` is)."""
    check_hyperparameter("rho", rho, 0.0, float("inf"))
    grads = jax.tree.map(lambda g: _checks.float_array(g, "grads"), grads)
    return _sam_perturbation(grads, rho=_checks.static_number(rho, "rho"))


def _perturbation(grads, rho):
    norm = global_norm(grads)
    scale = jnp.where(norm > 0, rho / jnp.where(norm > 0, norm, 1.0), 0.0)
    return jax.tree.map(lambda g: (scale * g).astype(g.dtype), grads)


# The public functions check their input in Python, then run a compiled core (rho static, as
# check_hyperparameter needs it concrete): a repeated call with the same tree of shapes reuses one
# program instead of dispatching a few operations per leaf.
_sam_perturbation = jax.jit(_perturbation, static_argnames="rho")


@functools.partial(jax.jit, static_argnames="rho")
def _perturbed(params, grads, *, rho):
    """``params + ε̂``: the point of the ball where SAM takes its gradient."""
    return jax.tree.map(jnp.add, params, _perturbation(grads, rho))


def sam_gradient(grad_fn, params, rho=0.05):
    """The gradient at the first-order worst point of the ball: ``grad_fn(params + ε̂)``."""
    if not callable(grad_fn):
        raise TypeError(f"grad_fn must be a function of params, got {type(grad_fn).__name__}")
    grads = grad_fn(params)
    _checks.same_tree(grads, "grad_fn(params)", params, "params")
    check_hyperparameter("rho", rho, 0.0, float("inf"))
    grads = jax.tree.map(lambda g: _checks.float_array(g, "grads"), grads)
    return grad_fn(_perturbed(params, grads, rho=_checks.static_number(rho, "rho")))


def sharpness(loss_fn, params, *, iterations=50, key=None):
    """The top eigenvalue of the Hessian of ``loss_fn`` at ``params``, by power iteration on
    Hessian-vector products (the largest in magnitude, which at a minimum is the largest)."""
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise ValueError(f"iterations must be a positive int, got {iterations!r}")
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    def hvp(v):
        return jax.flatten_util.ravel_pytree(jax.jvp(jax.grad(loss_fn), (params,), (unravel(v),))[1])[0]

    key = jax.random.key(0) if key is None else key
    v = jax.random.normal(key, flat.shape, flat.dtype)

    def step(v, _):
        w = hvp(v)
        return w / jnp.linalg.norm(w), None

    v, _ = jax.lax.scan(step, v / jnp.linalg.norm(v), length=iterations)
    return v @ hvp(v)


@cached  # the page's figure and the tests share this run when the book is built (cookbook/_memo.py)
def moons_sharpness_run(rhos=(0.0, 0.1), *, learning_rate=0.5, steps=600, every=50):
    """Train a 2-32-32-1 tanh network on 200 noisy two-moons points with gradient descent fed the
    plain gradient (``rho`` = 0) or SAM's; return the training losses per step and the sharpness
    every ``every`` steps, keyed "gradient descent" and "SAM, rho = ...". Shared by the figure and
    the tests."""
    with needs_extra("data"):  # scikit-learn: pip install 'deep-learning-cookbook[data]'
        from sklearn.datasets import make_moons

    X, y = make_moons(200, noise=0.2, random_state=0)
    X, y = jnp.asarray(X, jnp.float32), jnp.asarray(y, jnp.float32)
    sizes = (2, 32, 32, 1)
    keys = jax.random.split(jax.random.key(0), len(sizes) - 1)
    params0 = [
        {"w": jax.random.normal(k, (a, b)) / jnp.sqrt(a), "b": jnp.zeros(b)}
        for k, a, b in zip(keys, sizes[:-1], sizes[1:])
    ]

    def loss_fn(params):
        h = X
        for layer in params[:-1]:
            h = jnp.tanh(h @ layer["w"] + layer["b"][None, :])
        z = (h @ params[-1]["w"] + params[-1]["b"][None, :])[:, 0]
        return jnp.mean(jnp.logaddexp(0.0, z) - y * z)

    def train(rho):
        grad_fn = jax.grad(loss_fn)

        def chunk(params, _):
            def step(params, _):
                g = sam_gradient(grad_fn, params, rho) if rho else grad_fn(params)
                return jax.tree.map(lambda p, d: p - learning_rate * d, params, g), loss_fn(params)

            params, losses = jax.lax.scan(step, params, length=every)
            return params, (losses, sharpness(loss_fn, params, iterations=30))

        _, (losses, sharp) = jax.lax.scan(chunk, params0, length=steps // every)
        return losses.reshape(-1), sharp

    runs = jax.jit(lambda: [train(rho) for rho in rhos])()
    names = ["gradient descent" if rho == 0 else f"SAM, rho = {rho}" for rho in rhos]
    return {n: r[0] for n, r in zip(names, runs)}, {n: r[1] for n, r in zip(names, runs)}
