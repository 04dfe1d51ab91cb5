r"""The maximal-update parametrisation
==================================

Scale each layer's initialisation and learning rate with the width so that one step of training
changes the network by the same amount at every width; then the best learning rate found on a narrow
network is the best one for a wide network too, which the standard parametrisation does not allow.

Equation
--------

.. math::

   \begin{aligned}
   f(x) &= \operatorname{relu}\big(x W_{\text{in}}\big)\, W_{\text{out}}, \qquad
   W_{\text{in}} \sim \mathcal{N}(0, 1/D), \quad W_{\text{out}} \sim \mathcal{N}(0, s^2), \\
   W &\leftarrow W - \eta\, c_W\, \nabla_W \mathcal{L}, \qquad
   \mathcal{L} = \frac{1}{2N} \sum_{k=1}^{N} \big(f(x_k) - y_k\big)^2, \\
   \text{SP:}\ & s^2 = \tfrac{1}{n},\ c_{\text{in}} = c_{\text{out}} = 1; \qquad
   \text{μP:}\ s^2 = \tfrac{1}{n^2},\ c_{\text{in}} = n,\ c_{\text{out}} = \tfrac{1}{n}, \\
   \eta^\star &= \frac{2N}{\lambda_{\max}\big(\sum_W c_W J_W J_W^\top\big)}:\quad
   \propto 1/n \text{ in SP}, \quad \text{constant in μP}
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`f`, :math:`x`
     - the network and an input
     - ``apply``, ``x``
     - ``(N,)``, ``(N, D)`` for a batch
   * - :math:`W_{\text{in}}`, :math:`W_{\text{out}}`, :math:`W`
     - the hidden and output layers; either of them
     - ``params["W_in"]``, ``params["W_out"]``
     - ``(D, n)``, ``(n,)``
   * - :math:`D`, :math:`n`
     - input features; hidden units (the width)
     - ``D``, ``width``
     - scalars
   * - :math:`s`
     - the output layer's initial scale
     - ``out_scale``
     - scalar
   * - :math:`\eta`, :math:`c_W`
     - the global learning rate; each layer's multiplier
     - ``learning_rate``; ``multipliers``
     - scalars
   * - :math:`\mathcal{L}`, :math:`N`, :math:`k`, :math:`y_k`
     - half the mean squared error over :math:`N` training pairs
     - ``y``
     - ``(N,)``
   * - :math:`J_W`
     - the Jacobian of the outputs at the training inputs with respect to :math:`W`
     - in words
     - ``(N, size of W)``
   * - :math:`\lambda_{\max}`, :math:`\eta^\star`
     - the largest eigenvalue; the largest learning rate at which gradient descent is stable at
       initialisation
     - ``stability_limit``
     - scalars

Explanation
-----------

In the standard parametrisation (SP) every layer is initialised with variance one over its fan-in
and trained with one learning rate. One step of gradient descent then moves the output through the
last layer by :math:`\eta \sum_i h_i^2`, a sum over :math:`n` hidden units: the wider the network,
the larger the step, so the learning rate must shrink as :math:`1/n` to stay stable, and a rate tuned
on a small model diverges on a large one. :footcite:t:`yang2021tensor` asked for the parametrisation
in which every layer's update is as large as possible while staying of order one as
:math:`n \to \infty`, and found it unique: the *maximal-update parametrisation* (μP). For plain
gradient descent on a network with one hidden layer it starts the output layer at variance
:math:`1/n^2` and scales the learning rates by :math:`n` for the input layer and :math:`1/n` for the
output layer (``multipliers``); the hidden features then move by :math:`O(1)` and are learnt, where
the NTK parametrisation (:doc:`ntk`) freezes them.

The effect is measured here on the edge of stability. Gradient descent on the squared error
multiplies the training residual by :math:`I - \tfrac{\eta}{N}\sum_W c_W J_W J_W^\top` each step, so it
is stable at initialisation when :math:`\eta < \eta^\star` (the last line, ``stability_limit``,
computed from the layer-weighted tangent kernel with ``empirical_ntk``). In SP,
:math:`\eta^\star` falls as :math:`1/n`; in μP it tends to a constant. :footcite:t:`yang2022tensor`
turned this into *μTransfer*: tune the learning rate on a narrow proxy, then train the wide model at
the same rate.

.. admonition:: Intuition

   Steering a ship with a crew whose size keeps changing. If every rower pulls as hard as before, a
   crew twice as large turns the ship twice as fast, and the helmsman's feel for the oars is useless
   on the bigger ship. μP tells each rower to pull in proportion to one over the crew's size, so the
   ship answers the helm the same way whatever the crew, and the helmsman trained on a small boat can
   steer a large one.

The tests measure both halves on sampled networks of width 64 and 1024: :math:`\eta^\star` shrinks
14-fold in SP (nearly the ratio of the widths, 16) and changes by 3 % in μP; and the best learning
rate of the narrow network, used on the wide one, makes it diverge in SP while in μP it trains it to
within 20 % of the wide network's own best loss. At its best rate, each μP network's hidden
activations move by the same relative amount (1.6) at both widths; in SP they move less in the
wider network (0.59, then 0.38), on the way to the lazy regime.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.theory.mup import init, train

   x = jax.random.normal(jax.random.key(0), (64, 8))
   y = jnp.sin(2 * x @ jax.random.normal(jax.random.key(1), (8,)) / 8**0.5)
   rates = 2.0 ** jnp.arange(-8.0, 3.0)
   fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
   for ax, parametrization in zip(axes, ("sp", "mup")):
       for k, width in enumerate((64, 1024)):
           params = init(jax.random.key(2), 8, width, parametrization)
           sweep = jax.vmap(lambda r: train(params, x, y, parametrization=parametrization, learning_rate=r, steps=100))
           losses = sweep(rates)[1][:, -1]  # the tests' runs
           ax.loglog(rates, jnp.where(jnp.isfinite(losses), losses, jnp.nan), f"C{k}o-", label=f"width {width}")
       ax.set(title={"sp": "SP", "mup": "μP"}[parametrization], xlabel="learning rate", ylim=(0.01, 1.0))
   axes[0].set_ylabel("training loss after 100 steps")
   axes[0].legend(fontsize=8)
   fig.tight_layout()

Inductive bias
--------------

μP does not change what a network can represent, only how training moves through it: every layer
learns at a rate that does not depend on width, so a wide network learns features as a narrow one
does, only better, instead of falling into the lazy, kernel regime. The price is that its infinite-
width limit is not a kernel method, and its analysis is harder.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.theory.mup import init, apply, multipliers, stability_limit
>>> multipliers(256, "mup"), multipliers(256, "sp")
({'W_in': 256.0, 'W_out': 0.00390625}, {'W_in': 1.0, 'W_out': 1.0})
>>> x = jax.random.normal(jax.random.key(0), (64, 8))
>>> apply(init(jax.random.key(2), 8, 64, "mup"), x).shape
(64,)
>>> for parametrization in ("sp", "mup"):
...     limits = [stability_limit(init(jax.random.key(2), 8, width, parametrization), x, parametrization)
...               for width in (64, 1024)]
...     print(parametrization, [round(float(v), 3) for v in limits])
sp [0.161, 0.012]
mup [3.673, 3.783]

Implementation notes
--------------------

This page keeps to one hidden layer and plain gradient descent, where μP has three numbers. With
hidden layers of width :math:`n \times n` their learning rate is not scaled for SGD; for Adam the
multipliers differ (:math:`1/\text{fan-in}` for hidden and output layers, :footcite:t:`yang2022tensor`,
table 3). The edge of stability is a statement at initialisation: in μP the kernel grows during
training as features are learnt, so training diverges somewhat below :math:`\eta^\star`; in SP a
rate up to about twice :math:`\eta^\star` can still converge after a transient spike of the loss.
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.theory.ntk import empirical_ntk

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"apply": (), "stability_limit": ("parametrization",)}

_PARAMETRIZATIONS = ("sp", "mup")


def _check_parametrization(parametrization):
    if parametrization not in _PARAMETRIZATIONS:
        raise ValueError(f"parametrization must be one of {list(_PARAMETRIZATIONS)}, got {parametrization!r}")


def multipliers(width, parametrization):
    """The learning-rate multipliers of the two layers: ``{"W_in": c_in, "W_out": c_out}``."""
    width = _checks.size(width, "width")
    _check_parametrization(parametrization)
    if parametrization == "mup":
        return {"W_in": float(width), "W_out": 1.0 / width}
    return {"W_in": 1.0, "W_out": 1.0}


def init(key, D, width, parametrization):
    """``{"W_in": (D, n), "W_out": (n,)}``, the output layer at the parametrisation's scale."""
    D, width = _checks.size(D, "D"), _checks.size(width, "width")
    _check_parametrization(parametrization)
    out_scale = 1.0 / width if parametrization == "mup" else width**-0.5
    eps = jax.random.normal(key, (D * width + width,))  # one draw for both layers
    return {"W_in": eps[: D * width].reshape(D, width) / D**0.5, "W_out": eps[D * width :] * out_scale}


def _check_params(params):
    W_in = _checks.float_array(params["W_in"], "params['W_in']", ndim=2, what=" (D, n)")
    W_out = _checks.float_array(params["W_out"], "params['W_out']", ndim=1, what=" (n,)")
    _checks.same_shape(W_out, "params['W_out']", W_in.shape[1:], expected_from="(n,) to match params['W_in']")
    return W_in.shape


def apply(params, x):
    """The outputs (N,) on a batch ``x`` (N, D)."""
    D, _ = _check_params(params)
    x = _checks.float_array(x, "x", ndim=2, what=" (N, D)")
    _checks.same_shape(x, "x", (x.shape[0], D), expected_from="(N, D) to match params['W_in']")
    return _apply(params, x)


@jax.jit
def _apply(params, x):
    return jax.nn.relu(x @ params["W_in"]) @ params["W_out"]  # (N,)


def stability_limit(params, x, parametrization):
    """eta* = 2N / lambda_max of the multiplier-weighted tangent kernel at the training inputs ``x``."""
    D, width = _check_params(params)
    x = _checks.float_array(x, "x", ndim=2, what=" (N, D)")
    _checks.same_shape(x, "x", (x.shape[0], D), expected_from="(N, D) to match params['W_in']")
    _check_parametrization(parametrization)
    return _stability_limit(params, x, parametrization)


# One compiled program per shape and parametrisation (the kernel's closure, built inside, would
# otherwise make empirical_ntk compile again at every call).
@functools.partial(jax.jit, static_argnums=2)
def _stability_limit(params, x, parametrization):
    c = multipliers(params["W_in"].shape[1], parametrization)
    # W = sqrt(c) u: the kernel with respect to u weighs each layer's J J^T by its multiplier.
    u = {k: params[k] / c[k] ** 0.5 for k in params}
    theta = empirical_ntk(lambda u, x: _apply({k: u[k] * c[k] ** 0.5 for k in u}, x), u, x, x)  # (N, N)
    return 2 * x.shape[0] / jnp.linalg.eigvalsh(theta)[-1]


def train(params, x, y, *, parametrization, learning_rate, steps):
    """Gradient descent on half the mean squared error with the layers' multipliers; the parameters
    and the loss before each step (steps,)."""
    D, width = _check_params(params)
    x = _checks.float_array(x, "x", ndim=2, what=" (N, D)")
    _checks.same_shape(x, "x", (x.shape[0], D), expected_from="(N, D) to match params['W_in']")
    y = _checks.same_shape(_checks.float_array(y, "y", ndim=1), "y", x.shape[:1], expected_from="(N,) to match x")
    learning_rate = _checks.positive(learning_rate, "learning_rate")
    steps = _checks.size(steps, "steps")
    c = multipliers(width, parametrization)
    return _train(params, x, y, learning_rate, jnp.array(c["W_in"]), jnp.array(c["W_out"]), steps)


@functools.partial(jax.jit, static_argnums=6)  # multipliers and rate traced: one compilation per shape
def _train(params, x, y, learning_rate, c_in, c_out, steps):
    c = {"W_in": c_in, "W_out": c_out}

    def loss(p):
        return 0.5 * jnp.mean((_apply(p, x) - y) ** 2)

    def step(p, _):
        value, grads = jax.value_and_grad(loss)(p)
        return {k: p[k] - learning_rate * c[k] * grads[k] for k in p}, value

    return jax.lax.scan(step, params, length=steps)
