r"""Backpropagation
===============

Compute the gradient of a network's loss with respect to every parameter in one backward sweep
through the layers, by hand for a two-layer network and then with JAX's forward-mode (``jvp``) and
reverse-mode (``vjp``) building blocks: reach for it to understand what :func:`jax.grad` does, what
it costs, and when forward mode is the better tool.

Equation
--------

The forward pass of a two-layer network on one example, with a softmax cross-entropy loss:

.. math::

   a = x W_1 + b_1, \qquad h = \phi(a), \qquad z = h W_2 + b_2, \qquad
   p = \operatorname{softmax}(z), \qquad L = -\log p_y

The backward pass, from the loss back to the input layer:

.. math::

   \delta_2 = \frac{\partial L}{\partial z} = p - \operatorname{onehot}(y), \qquad
   \frac{\partial L}{\partial W_2} = h^\top \delta_2, \qquad
   \frac{\partial L}{\partial b_2} = \delta_2

   \delta_1 = \frac{\partial L}{\partial a} = \left(\delta_2 W_2^\top\right) \odot \phi'(a), \qquad
   \frac{\partial L}{\partial W_1} = x^\top \delta_1, \qquad
   \frac{\partial L}{\partial b_1} = \delta_1

The two modes of automatic differentiation, for a function :math:`f` from :math:`n` inputs to
:math:`m` outputs with Jacobian :math:`J`:

.. math::

   \operatorname{jvp}: (u, v) \mapsto \left(f(u),\ J v\right), \qquad
   \operatorname{vjp}: (u, w) \mapsto \left(f(u),\ w^\top J\right), \qquad
   J = \left[\frac{\partial f_i}{\partial u_j}\right]_{i, j} \in \mathbb{R}^{m \times n}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`
     - one input example (a row vector)
     - ``x``
     - ``(D,)``
   * - :math:`y`
     - its class label
     - ``y``
     - ``()`` integer
   * - :math:`W_1`, :math:`b_1`
     - first-layer weights and bias
     - ``params["W1"]``, ``params["b1"]``
     - ``(D, H)``, ``(H,)``
   * - :math:`a`
     - hidden pre-activation
     - ``cache["a"]``
     - ``(H,)``
   * - :math:`\phi`, :math:`\phi'`
     - hidden nonlinearity (tanh or ReLU) and its derivative
     - ``activation``, ``_ACTIVATIONS``
     - element-wise
   * - :math:`h`
     - hidden activation, stored for the backward pass
     - ``cache["h"]``
     - ``(H,)``
   * - :math:`W_2`, :math:`b_2`
     - second-layer weights and bias
     - ``params["W2"]``, ``params["b2"]``
     - ``(H, K)``, ``(K,)``
   * - :math:`z`
     - logits, one score per class
     - ``z``
     - ``(K,)``
   * - :math:`p`
     - class probabilities
     - ``cache["p"]``
     - ``(K,)``
   * - :math:`L`
     - cross-entropy loss of the example
     - ``loss``
     - ``()``
   * - :math:`\delta_2`, :math:`\delta_1`
     - the error signals: gradients of the loss with respect to :math:`z` and :math:`a`
     - ``delta2``, ``delta1``
     - ``(K,)``, ``(H,)``
   * - :math:`f`
     - any differentiable function of one vector
     - ``f``
     - ``(n,) -> (m,)``
   * - :math:`u`
     - the point where :math:`f` is differentiated
     - ``x`` in ``jacobian_by_jvp``
     - ``(n,)``
   * - :math:`v`
     - a tangent: an input direction, pushed forward
     - ``v``
     - ``(n,)``
   * - :math:`w`
     - a cotangent: a weighting of the outputs, pulled back
     - ``w``
     - ``(m,)``
   * - :math:`J`, :math:`i`, :math:`j`
     - the Jacobian of :math:`f` at :math:`u`, an :math:`m \times n` matrix whose entry in row
       :math:`i` and column :math:`j` is the derivative of output :math:`i` by input :math:`j`
     - the result of ``jacobian_by_jvp``
     - ``(m, n)``
   * - :math:`n`, :math:`m`
     - number of inputs and of outputs of :math:`f`
     - ``x.shape[0]``; ``fx.shape[0]`` in ``jacobian_by_vjp``
     - scalar

Explanation
-----------

**The chain rule, organised.** A network is a composition of simple steps, so its derivative is the
product of the steps' derivatives. Backpropagation :footcite:`rumelhart1986learning` evaluates that
product from the loss end: the *error signal* :math:`\delta` of a layer is the gradient of the loss
with respect to that layer's pre-activation, and each layer turns the signal it receives into (a) the
gradients of its own parameters and (b) the signal for the layer below. For a dense layer
:math:`z = hW + b` the parameter gradient is the outer product of the layer's *input* with its error
signal, :math:`h^\top\delta`; the signal passed down is :math:`\delta W^\top`, which a nonlinearity
then gates element-wise by its slope :math:`\phi'(a)` (:math:`1 - h^2` for tanh, the 0/1 mask
:math:`a > 0` for ReLU).

The softmax and the cross-entropy combine into the remarkably simple signal :math:`p -
\operatorname{onehot}(y)`: predicted minus observed. Computing the two separately and multiplying
their Jacobians gives the same numbers in exact arithmetic, but loses precision when a probability
underflows; the code never forms :math:`\log p` from :math:`p`, it computes :math:`\log p_y = z_y -
\operatorname{logsumexp}(z)` with the maximum logit subtracted before the exponential.

The backward pass needs :math:`x`, :math:`a` (or :math:`h`) and :math:`p` from the forward pass: the
forward pass therefore returns them in a ``cache``. That cache is the price of reverse mode. A label
outside :math:`0, \dots, K - 1` raises a ``ValueError``; under :func:`jax.jit`, where labels are not
known, it makes the loss NaN.

.. admonition:: Intuition

   Picture an assembly line whose product fails inspection at the end. The complaint travels back
   up the line: each station works out how much each of its own knobs contributed to what it
   handed on, keeps that share of the blame (its parameter gradients), and passes the rest upstream,
   translated into the terms of the station before it. No station needs to see the whole line, only
   what it received on the way down and the complaint coming back, which is why one backward sweep
   serves every parameter at once.

**Forward and reverse mode.** Automatic differentiation :footcite:`griewank2008evaluating,baydin2018automatic`
comes in two directions. *Forward mode* (:func:`jax.jvp`) pushes one input direction :math:`v`
through the computation alongside the values and returns :math:`Jv`, one *column* of the Jacobian
when :math:`v` is a basis vector; it costs a small constant times one evaluation of :math:`f` and
stores nothing. *Reverse mode* (:func:`jax.vjp`) runs :math:`f` once, keeps the intermediate values,
and then pulls one output weighting :math:`w` back through the computation in reverse order to
return :math:`w^\top J`, one *row* of the Jacobian. The full Jacobian therefore takes :math:`n` jvps
(``jacobian_by_jvp``, what :func:`jax.jacfwd` does) or :math:`m` vjps (``jacobian_by_vjp``,
what :func:`jax.jacrev` does).

**Why training uses reverse mode.** A loss is a scalar, :math:`m = 1`, and a network has millions of
parameters, :math:`n \gg 1`. Reverse mode gets the whole gradient from *one* vjp with :math:`w = 1`
(``gradient_by_vjp``), for a few times the cost of the forward pass, whatever :math:`n` is;
forward mode needs one jvp per parameter (``gradient_by_jvp``), :math:`n` passes. The
hand-written backward pass above is exactly that one vjp. Forward mode wins in the opposite shape:
few inputs, many outputs (the sensitivity of a whole trajectory to one physical constant), and it
is the building block of Hessian-vector products (forward over reverse).

**The memory cost.** Reverse mode must visit the steps in the opposite order to the one in which they
ran, so every intermediate it needs (the activations, here ``cache``) is stored until the backward
pass reaches it: memory grows with depth times batch size, and for large models the stored
activations, not the parameters, fill the accelerator. *Gradient checkpointing*
(:func:`jax.checkpoint`) trades that memory for time by storing only some activations and
recomputing the rest during the backward pass :footcite:`griewank2008evaluating`.

Inductive bias
--------------

Backpropagation assumes nothing about the data; it assumes about the *model* that every step is
differentiable (almost everywhere: ReLU's kink at zero gets the slope 0 by convention) and that the
loss is a scalar, which is what makes one reverse sweep enough. Its cost, a small constant times a
forward pass, is what makes gradient-based training of large models practical at all; its blind
spot is that a gradient is local, so a step that is right for an infinitesimal move can be wrong for
a large one, and a signal multiplied by many small (or large) slopes vanishes (or explodes) on the
way down, the problem that :doc:`initialization` addresses.

Example
-------

The forward pass keeps what the backward pass needs, and the hand-written gradients equal
:func:`jax.grad`:

>>> import jax, jax.numpy as jnp
>>> from cookbook.foundations.backpropagation import apply, backward, forward, init, loss
>>> k_params, k_x, k_batch = jax.random.split(jax.random.key(0), 3)
>>> params = init(k_params, (4, 5, 3))  # D = 4 inputs, H = 5 hidden units, K = 3 classes
>>> x, y = jax.random.normal(k_x, (4,)), jnp.array(2)
>>> apply(params, x).shape  # the logits z
(3,)
>>> value, cache = forward(params, x, y)
>>> sorted(cache)
['a', 'h', 'p', 'x']
>>> grads = backward(params, cache, y)
>>> reference = jax.jit(jax.grad(loss))(params, x, y)
>>> import numpy as np
>>> {name: bool(np.allclose(grads[name], reference[name], atol=1e-6)) for name in sorted(grads)}
{'W1': True, 'W2': True, 'b1': True, 'b2': True}
>>> round(float(value), 4) == round(float(loss(params, x, y)), 4)
True

``loss_and_grads`` runs both passes; over a batch, the gradient of the mean loss is the mean of the
per-example gradients:

>>> from cookbook.foundations.backpropagation import loss_and_grads, mean_loss_and_grads
>>> value_again, grads_again = loss_and_grads(params, x, y)
>>> bool(np.allclose(grads_again["W1"], grads["W1"]))
True
>>> X, Y = jax.random.normal(k_batch, (6, 4)), jnp.array([0, 1, 2, 0, 1, 2])
>>> mean_value, mean_grads = mean_loss_and_grads(params, X, Y)
>>> mean_grads["W1"].shape
(4, 5)

Forward mode builds the Jacobian column by column, reverse mode row by row:

>>> from cookbook.foundations.backpropagation import jacobian_by_jvp, jacobian_by_vjp
>>> u = jnp.array([1.0, 2.0, 3.0])
>>> jacobian_by_jvp(jnp.cumprod, u)  # f(u) = (u0, u0 u1, u0 u1 u2)
Array([[1., 0., 0.],
       [2., 1., 0.],
       [6., 3., 2.]], dtype=float32)
>>> bool(np.allclose(jacobian_by_vjp(jnp.cumprod, u), [[1, 0, 0], [2, 1, 0], [6, 3, 2]]))  # the same, by rows
True
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "init": ("sizes",),
    "apply": ("activation",),
    "forward": ("activation",),
    "backward": ("activation",),
    "loss": ("activation",),
    "loss_and_grads": ("activation",),
    "mean_loss_and_grads": ("activation",),
    "jacobian_by_jvp": ("f",),
    "jacobian_by_vjp": ("f",),
}

#: Each hidden nonlinearity with its derivative, written in terms of the pre-activation ``a``.
_ACTIVATIONS = {
    "tanh": (jnp.tanh, lambda a: 1.0 - jnp.tanh(a) ** 2),
    "relu": (jax.nn.relu, lambda a: (a > 0).astype(a.dtype)),  # slope 0 at the kink, as jax.nn.relu
}


def _check_activation(activation):
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    return _ACTIVATIONS[activation]


def init(key, sizes):
    """Parameters of a two-layer network with ``sizes = (D, H, K)``, LeCun-scaled normal weights."""
    if not isinstance(sizes, tuple) or len(sizes) != 3:
        raise ValueError(f"sizes must be a tuple (D, H, K) for a two-layer network, got {sizes!r}")
    D, H, K = (_checks.size(n, f"sizes[{i}]") for i, n in enumerate(sizes))
    return _init(key, (D, H, K))


# The public functions check their input in Python, then run a compiled core (sizes, the activation's
# name and the differentiated function f static): the page's examples, the tests and the bad-input
# checks share one program per shape instead of dispatching every operation eagerly.
@functools.partial(jax.jit, static_argnums=1)
def _init(key, sizes):
    D, H, K = sizes
    k_w1, k_w2 = jax.random.split(key)
    return {
        "W1": jax.random.normal(k_w1, (D, H)) / jnp.sqrt(D),
        "b1": jnp.zeros(H),
        "W2": jax.random.normal(k_w2, (H, K)) / jnp.sqrt(H),
        "b2": jnp.zeros(K),
    }


def _check_params(params):
    """The sizes ``(D, H, K)`` of float parameters shaped (D, H), (H,), (H, K), (K,); else an error."""
    W1, W2 = (_checks.float_array(params[n], f"params['{n}']", ndim=2) for n in ("W1", "W2"))
    (D, H), K = W1.shape, W2.shape[1]
    for name, shape in (("b1", (H,)), ("W2", (H, K)), ("b2", (K,))):
        _checks.same_shape(_checks.float_array(params[name], f"params['{name}']"), f"params['{name}']", shape)
    return D, H, K


def _check_example(params, x, y):
    """``x`` (D,) as floats and ``y`` one integer label in [0, K), checked when concrete."""
    D, _, K = _check_params(params)
    x = _checks.same_shape(_checks.float_array(x, "x"), "x", (D,), expected_from="(D,) to match params['W1']")
    y = _checks.int_array(y, "y", ndim=0, what=" (one label)")
    return x, _checks.check_range(y, "y", 0, K)


def apply(params, x, activation="tanh"):
    """Logits (K,) of the network for one example ``x`` (D,): the forward pass without the loss."""
    D, _, _ = _check_params(params)
    x = _checks.same_shape(_checks.float_array(x, "x"), "x", (D,), expected_from="(D,) to match params['W1']")
    _check_activation(activation)
    return _apply(params, x, activation)


@functools.partial(jax.jit, static_argnums=2)
def _apply(params, x, activation):
    phi, _ = _ACTIVATIONS[activation]
    return phi(x @ params["W1"] + params["b1"]) @ params["W2"] + params["b2"]


def forward(params, x, y, activation="tanh"):
    """Loss of one example and the ``cache`` of intermediates that the backward pass needs."""
    x, y = _check_example(params, x, y)
    _check_activation(activation)
    return _forward_jit(params, x, y, activation)


def _forward(params, x, y, activation):
    phi, _ = _ACTIVATIONS[activation]
    a = x @ params["W1"] + params["b1"]  # (H,)
    h = phi(a)
    z = h @ params["W2"] + params["b2"]  # (K,)
    z_max = jax.lax.stop_gradient(z.max())
    log_norm = z_max + jnp.log(jnp.sum(jnp.exp(z - z_max)))  # logsumexp, no overflow
    loss = jnp.where((y >= 0) & (y < z.shape[0]), log_norm - z[y], jnp.nan)  # NaN for a bad label under jit
    p = jnp.exp(z - log_norm)  # softmax(z), from the same stable normaliser
    return loss, {"x": x, "a": a, "h": h, "p": p}


_forward_jit = jax.jit(_forward, static_argnums=3)


def backward(params, cache, y, activation="tanh"):
    """Gradients of the loss for every parameter, from the forward pass's ``cache``, by hand."""
    _check_activation(activation)
    D, H, K = _check_params(params)
    for name, shape in (("x", (D,)), ("a", (H,)), ("h", (H,)), ("p", (K,))):
        _checks.same_shape(_checks.float_array(cache[name], f"cache['{name}']"), f"cache['{name}']", shape)
    y = _checks.check_range(_checks.int_array(y, "y", ndim=0, what=" (one label)"), "y", 0, K)
    return _backward_jit(params, cache, y, activation)


def _backward(params, cache, y, activation):
    _, phi_prime = _ACTIVATIONS[activation]
    K = params["b2"].shape[0]
    delta2 = cache["p"] - jax.nn.one_hot(y, K, dtype=cache["p"].dtype)  # (K,) dL/dz
    delta1 = (delta2 @ params["W2"].T) * phi_prime(cache["a"])  # (H,) dL/da
    return {
        "W1": jnp.outer(cache["x"], delta1),  # (D, H) = x^T delta1
        "b1": delta1,
        "W2": jnp.outer(cache["h"], delta2),  # (H, K) = h^T delta2
        "b2": delta2,
    }


_backward_jit = jax.jit(_backward, static_argnums=3)


def loss(params, x, y, activation="tanh"):
    """Cross-entropy loss of one example: the function that :func:`jax.grad` differentiates."""
    x, y = _check_example(params, x, y)
    _check_activation(activation)
    return _loss(params, x, y, activation)


@functools.partial(jax.jit, static_argnums=3)
def _loss(params, x, y, activation):
    return _forward(params, x, y, activation)[0]


def loss_and_grads(params, x, y, activation="tanh"):
    """Loss and hand-written gradients for one example: forward pass, then backward pass."""
    x, y = _check_example(params, x, y)
    _check_activation(activation)
    return _loss_and_grads(params, x, y, activation)


def _loss_and_grads_one(params, x, y, activation):
    value, cache = _forward(params, x, y, activation)
    return value, _backward(params, cache, y, activation)


_loss_and_grads = jax.jit(_loss_and_grads_one, static_argnums=3)


def mean_loss_and_grads(params, X, y, activation="tanh"):
    """Mean loss over a batch ``X`` (B, D), ``y`` (B,) and its gradients, by ``vmap`` of one example."""
    D, _, K = _check_params(params)
    X = _checks.float_array(X, "X", ndim=2, what=" (B, D)")
    _checks.same_shape(X, "X", (X.shape[0], D), expected_from="(B, D) to match params['W1']")
    y = _checks.same_shape(_checks.int_array(y, "y"), "y", X.shape[:1], expected_from="(B,) to match X")
    _checks.check_range(y, "y", 0, K)
    _check_activation(activation)
    return _mean_loss_and_grads(params, X, y, activation)


@functools.partial(jax.jit, static_argnums=3)
def _mean_loss_and_grads(params, X, y, activation):
    values, grads = jax.vmap(_loss_and_grads_one, in_axes=(None, 0, 0, None))(params, X, y, activation)
    return values.mean(), jax.tree.map(lambda g: g.mean(axis=0), grads)


def _check_vector(x):
    return _checks.float_array(x, "x", ndim=1, what=" (a vector of shape (n,))")


def jacobian_by_jvp(f, x):
    """The Jacobian (m, n) of ``f`` at ``x`` (n,), column by column: one jvp per input direction."""
    return _compiled(_jacobian_by_jvp, f)(f, _check_vector(x))


def _compiled(core, f):
    """``core`` compiled for this ``f`` (static: one program per function and shape), or as it is
    where ``f`` cannot be a static argument (it is not hashable)."""
    try:
        hash(f)
    except TypeError:
        return core
    return _JITTED[core]


def _jacobian_by_jvp(f, x):
    basis = jnp.eye(x.shape[0], dtype=x.dtype)  # row j is the direction e_j
    column = lambda v: jax.jvp(f, (x,), (v,))[1]  # J v, shape (m,)
    return jax.vmap(column, out_axes=1)(basis)  # (m, n): the columns side by side


def jacobian_by_vjp(f, x):
    """The Jacobian (m, n) of ``f`` at ``x`` (n,), row by row: one forward pass, one vjp per output."""
    return _compiled(_jacobian_by_vjp, f)(f, _check_vector(x))


def _jacobian_by_vjp(f, x):
    fx, pullback = jax.vjp(f, x)  # runs f once and stores what the backward pass needs
    if fx.ndim != 1:  # known when f is traced, before anything runs
        raise ValueError(f"f must return a vector of shape (m,), got shape {fx.shape}")
    row = lambda w: pullback(w)[0]  # w^T J, shape (n,)
    return jax.vmap(row)(jnp.eye(fx.shape[0], dtype=fx.dtype))  # (m, n): the rows stacked


_JITTED = {core: jax.jit(core, static_argnums=0) for core in (_jacobian_by_jvp, _jacobian_by_vjp)}


def gradient_by_jvp(f, x):
    """Gradient of a scalar ``f`` at ``x`` (n,) by forward mode: ``n`` jvps, one per coordinate.

    A Python loop on purpose, so that each of the ``n`` passes is a separate call (and can be
    counted); ``jacobian_by_jvp`` batches them with ``vmap`` instead.
    """
    x = _check_vector(x)
    basis = jnp.eye(x.shape[0], dtype=x.dtype)
    return jnp.stack([jax.jvp(f, (x,), (basis[j],))[1] for j in range(x.shape[0])])


def gradient_by_vjp(f, x):
    """Gradient of a scalar ``f`` at ``x`` (n,) by reverse mode: one forward pass and one vjp."""
    x = _check_vector(x)
    fx, pullback = jax.vjp(f, x)
    if fx.shape != ():
        raise ValueError(f"f must return a scalar for a gradient, got shape {fx.shape}")
    return pullback(jnp.ones_like(fx))[0]
