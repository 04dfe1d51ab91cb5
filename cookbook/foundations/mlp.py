r"""Multilayer perceptron
=====================

A stack of linear layers with a nonlinearity between them, the simplest neural network and a
universal approximator; reach for it whenever the input is a fixed-length vector and a linear model
is not enough.

Equation
--------

.. math::

   h_0 = x, \qquad
   h_l = \phi\left(h_{l-1} W_l + b_l\right) \quad (l = 1, \dots, L - 1), \qquad
   \hat{y} = h_{L-1} W_L + b_L

   W_l \sim \mathcal{N}\left(0, \frac{g}{n_{l-1}}\right), \qquad b_l = 0

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`
     - one input example
     - ``x``
     - ``(sizes[0],)``
   * - :math:`h_l`
     - the activations of layer :math:`l` (:math:`h_0` is the input)
     - ``h``
     - ``(sizes[l],)``
   * - :math:`W_l`, :math:`b_l`
     - weights and bias of layer :math:`l`
     - ``params[l - 1]["W"]``, ``params[l - 1]["b"]``
     - ``(sizes[l - 1], sizes[l])``, ``(sizes[l],)``
   * - :math:`\phi`
     - the hidden activation, ReLU or tanh
     - ``activation``
     - elementwise
   * - :math:`\hat{y}`
     - the output: linear, no activation
     - ``apply(params, x)``
     - ``(sizes[-1],)``
   * - :math:`l`, :math:`L`
     - layer index; number of weight layers, ``len(sizes) - 1``
     - the position in ``params``; ``len(params)``
     - scalar
   * - :math:`n_{l-1}`
     - fan-in of layer :math:`l`, the width of the layer below
     - ``sizes[l - 1]``
     - scalar
   * - :math:`g`
     - initialisation gain: 2 for ReLU, 1 for tanh and for the output layer
     - ``gain``
     - scalar

Explanation
-----------

Each layer is a linear map followed by an elementwise nonlinearity (see :doc:`activations`).
The nonlinearity is what makes depth worth anything: without it the layers would compose into a
single linear map. A hidden unit :math:`\phi(h w + b)` is a ridge, a bump or a step that varies
along one direction of its input; the next layer adds and bends these pieces, and the last,
linear layer is a linear model (see :doc:`linear_regression`) on the features the network has
built.

.. admonition:: Intuition

   Think of drawing a curve with hinges. A ReLU unit is a hinge: flat on one side of a line
   through the input space, rising on the other. The output layer adds hinges placed at different
   points with different slopes, and enough of them trace any continuous curve, the way a polygon
   with enough sides traces a circle. Deeper layers put hinges on hinges, so the number of pieces
   can grow much faster than the number of units.

**Universal approximation.** One hidden layer is already enough in principle:
:footcite:t:`cybenko1989approximation` proved that finite sums of sigmoids
:math:`\sum_j a_j \sigma(x w_j + b_j)` can approximate any continuous function on a compact set
(a closed, bounded box such as :math:`[-3, 3]`) to any accuracy, and
:footcite:t:`hornik1991approximation` showed that it is the layered architecture, not the particular
activation, that matters: any bounded, non-constant activation will do (and later work extended
this to ReLU). Three caveats keep the theorem from being a recipe. It says such a network *exists*,
not how *wide* it must be: the number of hidden units needed can grow exponentially with the input
dimension. It says nothing about *learnability*: gradient descent from a random start is not
guaranteed to find those weights. And it says nothing about *generalisation*: fitting the training
points is not fitting the function between them. Depth helps with the first caveat: some
functions that a deep network represents compactly need exponentially many units in a shallow one
:footcite:`telgarsky2016benefits`.

**Initialisation.** The weights start random, to break the symmetry between units (with equal
weights every unit of a layer would compute and learn the same thing), and scaled so that the
variance of the activations neither grows nor shrinks from layer to layer: variance
:math:`g / n_{l-1}` for fan-in :math:`n_{l-1}`, with gain :math:`g = 2` for ReLU, which zeroes half
its inputs :footcite:`he2015delving`, and :math:`g = 1` for tanh, which is close to the identity
near zero :footcite:`lecun1998efficient,glorot2010understanding`. Biases start at zero. The
:doc:`initialization` page derives these and shows what goes wrong otherwise.

**Training.** The example minimises the mean squared error by full-batch gradient descent with
heavy-ball momentum :footcite:`polyak1964methods` (each step moves along a running sum of past
gradients, :math:`v \leftarrow 0.9 v + \nabla`, which speeds up travel along the long, shallow
valleys of a network's loss; see :doc:`/docs/chapters/optimization/sgd`), with gradients from
:func:`jax.grad`; the :doc:`backpropagation` and :doc:`training_loop` pages open both up. The
network is written for one example and batched with :func:`jax.vmap`.

.. plot::

   from cookbook.foundations.mlp import apply, fit, init
   import jax, jax.numpy as jnp

   x = jnp.linspace(-3.0, 3.0, 64)[:, None]
   params = init(jax.random.key(0), (1, 32, 32, 1), activation="tanh")
   params, losses = fit(params, x, jnp.sin(x), learning_rate=0.03, steps=1000, activation="tanh")
   grid = jnp.linspace(-6.0, 6.0, 400)[:, None]
   y_hat = jax.vmap(lambda v: apply(params, v, activation="tanh"))(grid)
   fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
   left.plot(grid, jnp.sin(grid), "k--", label="sin(x)")
   left.plot(grid, y_hat, label="MLP, tanh")
   left.plot(x, jnp.sin(x), "k.", ms=3, label="data")
   left.axvspan(-6, -3, color="0.9"); left.axvspan(3, 6, color="0.9")
   left.set(xlabel="x", ylabel="y", ylim=(-1.8, 2.4), title="fit (shaded: outside the data)")
   left.legend(fontsize=7, loc="upper center", ncol=3)
   right.semilogy(losses)
   right.set(xlabel="gradient step", ylabel="training MSE", title="loss")
   fig.tight_layout()

The network matches the sine on the training interval; outside it (shaded) nothing constrains it:
the fit carries on along its last trend while the sine turns back, and the error grows with the
distance from the data. Approximation on a compact set is not extrapolation. (The loss is on a
log scale; the early wiggles are momentum overshooting.)

Inductive bias
--------------

An MLP assumes very little: that the target is a reasonably smooth function of a fixed-length input
vector. It does not know which inputs are near each other in space or time, and treats a permuted
input as a new problem, so it needs far more data than a convolutional or recurrent network on
images or sequences. Trained by gradient descent from small random weights, it is biased towards
simple, low-frequency functions, which it learns first (the "spectral bias"
:footcite:`rahaman2019spectral`); with ReLU it is
piecewise linear and extrapolates linearly, with tanh every unit eventually saturates, so far from the data it tends to a constant.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.foundations.mlp import apply, fit, init, loss
>>> params = init(jax.random.key(0), (1, 32, 32, 1), activation="tanh")
>>> [(layer["W"].shape, layer["b"].shape) for layer in params]
[((1, 32), (32,)), ((32, 32), (32,)), ((32, 1), (1,))]
>>> apply(params, jnp.array([0.5]), activation="tanh").shape
(1,)
>>> x = jnp.linspace(-3.0, 3.0, 64)[:, None]
>>> y = jnp.sin(x)
>>> trained, losses = fit(params, x, y, learning_rate=0.03, steps=1000, activation="tanh")
>>> round(float(losses[0]), 3), round(float(losses[-1]), 5)  # the MSE went down
(1.624, 0.00039)
>>> float(loss(trained, x, y, activation="tanh")) < 1e-3
True
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.foundations.activations import relu, tanh
from cookbook._memo import cached

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"init": ("sizes", "activation"), "apply": ("activation",), "loss": ("activation",),
       "fit": ("steps", "activation")}

_ACTIVATIONS = {"relu": relu, "tanh": tanh}
_GAINS = {"relu": 2.0, "tanh": 1.0}


def _check_activation(activation):
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")


def init(key, sizes, activation="relu"):
    """A list of ``{"W", "b"}`` layers for widths ``sizes = (in, hidden..., out)``.

    Weights are normal with variance ``gain / fan_in`` (He for ReLU, LeCun for tanh; gain 1 for the
    linear output layer), biases zero.
    """
    _check_activation(activation)
    if not isinstance(sizes, (tuple, list)) or len(sizes) < 2:
        raise ValueError(f"sizes must be at least (in, out) with positive widths, got {sizes!r}")
    sizes = tuple(_checks.size(n, f"sizes[{l}]") for l, n in enumerate(sizes))
    keys = jax.random.split(key, len(sizes) - 1)
    params = []
    for l, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
        gain = 1.0 if l == len(sizes) - 2 else _GAINS[activation]
        W = jax.random.normal(k, (n_in, n_out)) * jnp.sqrt(gain / n_in)
        params.append({"W": W, "b": jnp.zeros((n_out,))})
    return params


def _check_params(params):
    """The widths ``(sizes[0], sizes[-1])`` of a list of float ``{"W", "b"}`` layers that chain."""
    return _checks.layers(params)


def apply(params, x, activation="relu"):
    """The network's output for one example ``x`` of shape ``(sizes[0],)``; shape ``(sizes[-1],)``."""
    _check_activation(activation)
    D, _ = _check_params(params)
    x = _checks.same_shape(_checks.float_array(x, "x"), "x", (D,), expected_from="to match params[0]['W']")
    return _apply_jit(params, x, activation=activation)


def _apply(params, x, activation):
    phi = _ACTIVATIONS[activation]
    h = x
    for layer in params[:-1]:
        h = phi(h @ layer["W"] + layer["b"])  # (sizes[l],)
    return h @ params[-1]["W"] + params[-1]["b"]  # linear output


# apply and loss check their input, then hand it straight to a compiled core: called eagerly, each
# layer's operations would compile one by one for every new shape.
_apply_jit = jax.jit(_apply, static_argnames="activation")


def _check_data(params, X, Y):
    """``X`` (N, sizes[0]) and ``Y`` (N, sizes[-1]) as float arrays, matched to the layers."""
    D, out = _check_params(params)
    X = _checks.float_array(X, "X", ndim=2, what=" (N, in)")
    _checks.same_shape(X, "X", (X.shape[0], D), expected_from="(N, in) to match params[0]['W']")
    Y = _checks.float_array(Y, "Y", ndim=2, what=" (N, out)")
    return X, _checks.same_shape(Y, "Y", (X.shape[0], out), expected_from="(N, out) to match X and params[-1]['W']")


def loss(params, X, Y, activation="relu"):
    """Mean squared error over a data set ``X`` (N, sizes[0]), ``Y`` (N, sizes[-1])."""
    _check_activation(activation)
    X, Y = _check_data(params, X, Y)
    return _loss_jit(params, X, Y, activation=activation)


def _loss(params, X, Y, activation):
    Y_hat = jax.vmap(_apply, in_axes=(None, 0, None))(params, X, activation)  # (N, out)
    return jnp.mean((Y_hat - Y) ** 2)


_loss_jit = jax.jit(_loss, static_argnames="activation")


@cached  # the page's figure and the tests share this run when the book is built (cookbook/_memo.py)
def fit(params, X, Y, *, learning_rate, steps, momentum=0.9, activation="relu"):
    """Full-batch gradient descent with heavy-ball momentum on :func:`loss`.

    Returns the final parameters and the loss before each step, shape (steps,).
    """
    _check_activation(activation)
    X, Y = _check_data(params, X, Y)
    _checks.size(steps, "steps")
    _checks.positive(learning_rate, "learning_rate")
    if isinstance(momentum, jax.core.Tracer):
        return _fit_traced_momentum(params, X, Y, learning_rate, momentum, steps, activation)
    try:
        momentum = float(momentum)
    except (TypeError, ValueError):
        raise TypeError(f"momentum must be a real number, got {momentum!r}"[:200]) from None
    return _fit_jit(params, X, Y, learning_rate, momentum, steps, activation)


# The checks run in Python and the loop is one compiled program per set of shapes: run eagerly, the
# scan would trace and compile again at every call (its step is a new closure each time). A number
# momentum is a constant of the program, so that the core takes fit's array inputs as they come (a
# jax.jit around fit compiles nothing more); a traced momentum runs in a second core that traces it.
def _fit(params, X, Y, learning_rate, momentum, steps, activation):
    velocity = jax.tree.map(jnp.zeros_like, params)

    def step(carry, _):
        params, velocity = carry
        value, grads = jax.value_and_grad(_loss)(params, X, Y, activation)
        velocity = jax.tree.map(lambda v, g: momentum * v + g, velocity, grads)
        params = jax.tree.map(lambda p, v: p - learning_rate * v, params, velocity)
        return (params, velocity), value

    (params, _), losses = jax.lax.scan(step, (params, velocity), length=steps)
    return params, losses


_fit_jit = jax.jit(_fit, static_argnums=(4, 5, 6))
_fit_traced_momentum = jax.jit(_fit, static_argnums=(5, 6))
