r"""The neural tangent kernel
=========================

Gradient descent moves a network's output at one input by the gradient it takes at another, weighted
by the neural tangent kernel; when the layers are wide that kernel stays fixed during training, and the
network learns exactly like kernel regression: the tool to predict what a wide network will learn
before training it.

Equation
--------

.. math::

   \begin{aligned}
   \Theta(x, y) &= \sum_p \frac{\partial f(x)}{\partial \theta_p} \frac{\partial f(y)}{\partial \theta_p},
   \qquad z^{(l+1)} = \sigma_b\, b^{(l+1)} + \frac{\sigma_w}{\sqrt{n}}\, \phi\big(z^{(l)}\big) W^{(l+1)}, \\
   \Theta^{(1)} &= K^{(1)}, \qquad
   \Theta^{(l+1)} = K^{(l+1)} + \sigma_w^2\, \dot{E}^{(l)}\, \Theta^{(l)}, \qquad
   \dot{E}^{(l)} = \mathbb{E}\big[\phi'(u)\phi'(v)\big] = \frac{\pi - \arccos\rho^{(l)}}{2\pi}, \\
   f_t(x) &= f_0(x) + \Theta(x, X)\, \Theta(X, X)^{-1}
            \big(I - (I - \eta\, \Theta(X, X))^t\big) \big(Y - f_0(X)\big)
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`\Theta`
     - the tangent kernel, empirical (a sampled network) or analytic (the wide limit)
     - ``empirical_ntk``, ``ntk_kernel``; ``theta`` in the recursion
     - ``(N1, N2)``
   * - :math:`x`, :math:`y`
     - two inputs, rows of ``x1`` and ``x2``
     - ``x1``, ``x2``
     - ``(N1, D)``, ``(N2, D)``
   * - :math:`f`, :math:`f_t`
     - the network's output; after :math:`t` steps of gradient descent
     - ``apply_fn``, ``apply``
     - ``(N,)``
   * - :math:`\theta_p`, :math:`p`
     - the parameters, all of them, and their index
     - ``params``
     - a pytree
   * - :math:`z^{(l)}`, :math:`l`
     - preactivations of layer :math:`l`
     - ``z``
     - ``(N, n)``
   * - :math:`W^{(l)}`, :math:`b^{(l)}`
     - weights and biases, standard normal at initialisation
     - ``layer["W"]``, ``layer["b"]``
     - ``(n, n)``, ``(n,)``
   * - :math:`\sigma_w`, :math:`\sigma_b`
     - the scales of weights and biases, outside the parameters
     - ``sigma_w2``, ``sigma_b2`` (their squares)
     - scalars
   * - :math:`n`
     - width of a layer (its fan-in, in the formula)
     - ``n``
     - scalar
   * - :math:`\phi`, :math:`\phi'`
     - ReLU and its derivative, the step
     - ``jax.nn.relu``
     - elementwise
   * - :math:`K^{(l)}`
     - the NNGP kernel of layer :math:`l` (previous page)
     - ``k12``, ``k11``, ``k22``
     - ``(N1, N2)``
   * - :math:`u`, :math:`v`, :math:`\rho^{(l)}`
     - preactivations of one unit at :math:`x` and :math:`y`, and their correlation
     - ``rho``
     - ``(N1, N2)``
   * - :math:`\dot{E}^{(l)}`
     - the expected product of derivatives
     - ``e_dot``
     - ``(N1, N2)``
   * - :math:`X`, :math:`Y`
     - training inputs and targets
     - ``x``, ``y``
     - ``(N, D)``, ``(N,)``
   * - :math:`\eta`, :math:`t`
     - learning rate; number of steps
     - ``learning_rate``, ``steps``
     - scalars
   * - :math:`I`
     - the identity matrix
     - in words
     - ``(N, N)``

Explanation
-----------

One step of gradient descent on the loss :math:`\tfrac12 \sum_i (f(x_i) - y_i)^2` changes each
parameter by :math:`-\eta \sum_i (f(x_i) - y_i)\, \partial f(x_i)/\partial\theta_p`, and so, to first
order, the output at any input :math:`x` by :math:`-\eta \sum_i \Theta(x, x_i) (f(x_i) - y_i)`: the
tangent kernel :math:`\Theta` is how much a push at :math:`x_i` moves the function at :math:`x`.
``empirical_ntk`` computes it for any network from its Jacobian.

:footcite:t:`jacot2018neural` showed that in the *NTK parametrisation* (the scales :math:`\sigma_w /
\sqrt{n}` outside the standard-normal parameters, ``init`` and ``apply``) the kernel of a random
network converges, as the widths grow, to a deterministic kernel with the recursion of the second
line (``ntk_kernel``), built on the NNGP kernel :math:`K` of :doc:`nngp`: each layer adds its own
parameters' contribution :math:`K^{(l+1)}` and passes the deeper ones' through the derivative of the
activation. They also showed that it stays constant during training. Each weight then moves by
:math:`O(1/\sqrt{n})`, too little to change the features, but there are :math:`n^2` of them and
together they move the output by :math:`O(1)`: *lazy training* :footcite:p:`chizat2019lazy`. The
network is then its own linearisation around initialisation :footcite:p:`lee2019wide`, and
gradient descent solves a linear recursion, :math:`f_{t+1}(X) = f_t(X) - \eta\,\Theta(X,
X)(f_t(X) - Y)`, whose solution at any input is the third line (``lazy_prediction``). After many steps
it is kernel regression with :math:`\Theta`, started from the random :math:`f_0`.

.. admonition:: Intuition

   A wide network is a huge crowd of people each pushing a heavy cart a tiny bit. No one moves far,
   so the layout of the crowd (the features) stays as it was, yet together they move the cart
   wherever they are told. Because nobody moves far, the effect of the next push is the same as the
   effect of the first: the kernel does not change.

The tests measure all of it on sampled networks: the mean of the empirical kernel over 40 networks
of width 256 agrees with ``ntk_kernel`` within a few standard errors; a network of width 2048 trained
for 300 steps follows ``lazy_prediction`` to within 3 % of the targets' scale, and one of width 32
strays more than five times as far; the weights move less, relative to their size, as the width
grows, about as :math:`1/\sqrt{n}`.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.theory.ntk import init, apply, train, empirical_ntk, lazy_prediction

   gamma = jnp.linspace(0.0, 2 * jnp.pi, 7)[:-1] + 0.3
   x, y = jnp.stack([jnp.cos(gamma), jnp.sin(gamma)], 1), jnp.sin(2 * gamma)
   grid = jnp.linspace(0.0, 2 * jnp.pi, 60)
   x_grid = jnp.stack([jnp.cos(grid), jnp.sin(grid)], 1)
   fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
   for ax, n in zip(axes, (32, 2048)):
       params = init(jax.random.key(0), (2, n, 1))
       trained, _ = train(params, x, y, learning_rate=0.2, steps=300)
       lazy = lazy_prediction(empirical_ntk(apply, params, x_grid, x), empirical_ntk(apply, params, x, x),
                              apply(params, x_grid), apply(params, x), y, learning_rate=0.2, steps=300)
       ax.plot(grid, apply(trained, x_grid), label="trained network")
       ax.plot(grid, lazy, "--", label="kernel prediction")
       ax.plot(gamma, y, "k.", ms=8, label="training points")
       ax.set(title=f"width {n}", xlabel="angle of the input on the circle")
   axes[0].legend(fontsize=8)
   fig.tight_layout()

Inductive bias
--------------

In the lazy regime the network's inductive bias is its tangent kernel: it fits the data with the
smoothest function in the kernel's norm, and its features are fixed at initialisation. This is
also the limit of the theory: networks that learn useful features leave the lazy regime, which the
NTK parametrisation makes impossible at infinite width (the pages on finite width and on the
maximal-update parametrisation take that up).

Example
-------

The kernel of a random network, against the wide limit:

>>> import jax, jax.numpy as jnp
>>> from cookbook.theory.ntk import init, apply, empirical_ntk, ntk_kernel
>>> x = jnp.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
>>> ntk_kernel(x, x, depth=1).round(2)
Array([[2.  , 1.1 , 0.32],
       [1.1 , 2.  , 1.46],
       [0.32, 1.46, 2.  ]], dtype=float32)
>>> params = init(jax.random.key(0), (2, 4096, 1))
>>> empirical_ntk(apply, params, x, x).round(2)
Array([[1.99, 1.09, 0.32],
       [1.09, 2.02, 1.48],
       [0.32, 1.48, 2.06]], dtype=float32)

Training moves the output at once by :math:`-\eta\,\Theta\,(f - Y)` to first order:

>>> from cookbook.theory.ntk import train, lazy_prediction
>>> y = jnp.array([1.0, -1.0, 0.5])
>>> trained, losses = train(params, x, y, learning_rate=0.1, steps=1)
>>> step = apply(trained, x) - apply(params, x)
>>> predicted = -0.1 * empirical_ntk(apply, params, x, x) @ (apply(params, x) - y)
>>> bool(jnp.allclose(step, predicted, atol=2e-3))
True
>>> theta = empirical_ntk(apply, params, x, x)
>>> f1 = lazy_prediction(theta, theta, apply(params, x), apply(params, x), y, learning_rate=0.1, steps=1)
>>> bool(jnp.allclose(f1, apply(params, x) + predicted, atol=1e-5))
True

Implementation notes
--------------------

``empirical_ntk`` takes any ``apply_fn(params, x)`` that maps a batch ``(N, D)`` to outputs
``(N,)``; it builds the two Jacobians with ``jax.jacrev`` and sums their products over every leaf
of ``params``, which costs memory :math:`N P` for :math:`P` parameters. The Neural Tangents
library :footcite:p:`novak2020neural` offers cheaper contractions (through Jacobian-vector products)
and the analytic kernels of many architectures; :footcite:t:`arora2019exact` compute them for
convolutional networks. ``lazy_prediction`` diagonalises :math:`\Theta(X, X) = V \Lambda V^\top`
and applies :math:`(1 - (1 - \eta\lambda)^t)/\lambda` to each eigenvalue, which tends to
:math:`\eta t` as :math:`\lambda \to 0`: no inverse of a singular kernel is ever formed.
``train`` is plain full-batch gradient descent on :math:`\tfrac12 \sum_i (f(x_i) - y_i)^2`, in a
``jax.lax.scan``.
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.theory.nngp import relu_expectation

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"empirical_ntk": ("apply_fn",), "ntk_kernel": ("depth",), "apply": (),
       "train": ("steps",), "lazy_prediction": ("steps",)}


def _same_features(x1, x2):
    x1 = _checks.float_array(x1, "x1", ndim=2, what=" (N1, D)")
    x2 = _checks.float_array(x2, "x2", ndim=2, what=" (N2, D)")
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"x1 and x2 must have the same number of features D, got x1 {x1.shape} and x2 {x2.shape}")
    return x1, x2


def empirical_ntk(apply_fn, params, x1, x2):
    """Theta (N1, N2): the sum over every parameter of d f(x1_i)/d theta times d f(x2_j)/d theta.

    ``apply_fn(params, x)`` maps a batch ``x`` (N, D) to outputs (N,).
    """
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be a function apply_fn(params, x) -> (N,), got {type(apply_fn).__name__}")
    x1, x2 = _same_features(x1, x2)
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        _checks.float_array(leaf, f"params{jax.tree_util.keystr(path)}")
    for name, x in (("x1", x1), ("x2", x2)):
        out = jax.eval_shape(apply_fn, params, x)
        if getattr(out, "shape", None) != (x.shape[0],):
            raise ValueError(f"apply_fn must map {name} of shape {x.shape} to outputs of shape ({x.shape[0]},), "
                             f"got {getattr(out, 'shape', type(out).__name__)}")
    return _empirical_ntk(apply_fn, params, x1, x2)


@functools.partial(jax.jit, static_argnums=0)  # compiled once per function and shapes, even eagerly
def _empirical_ntk(apply_fn, params, x1, x2):
    J1 = jax.jacrev(apply_fn)(params, x1)  # leaves (N1, *leaf shape)
    J2 = jax.jacrev(apply_fn)(params, x2)
    N1, N2 = x1.shape[0], x2.shape[0]
    products = [a.reshape(N1, -1) @ b.reshape(N2, -1).T for a, b in zip(jax.tree.leaves(J1), jax.tree.leaves(J2))]
    return sum(products, jnp.zeros((N1, N2), x1.dtype))


def init(key, sizes):
    """Standard-normal ``{"W", "b"}`` layers for widths ``sizes = (D, n..., 1)`` (NTK parametrisation:
    the scales are applied by ``apply``)."""
    if not isinstance(sizes, (tuple, list)) or len(sizes) < 2:
        raise ValueError(f"sizes must be (D, hidden widths..., 1), got {sizes!r}")
    sizes = tuple(_checks.size(n, f"sizes[{l}]") for l, n in enumerate(sizes))
    if sizes[-1] != 1:
        raise ValueError(f"sizes must end with 1 (one output), got {sizes!r}")
    return _init(key, sizes)


@functools.partial(jax.jit, static_argnums=1)  # one program per sizes, the eager draw's values bit for bit
def _init(key, sizes):
    eps = jax.random.normal(key, (sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:])),))  # one draw
    params, start = [], 0
    for a, b in zip(sizes[:-1], sizes[1:]):
        params.append({"W": eps[start : start + a * b].reshape(a, b), "b": eps[start + a * b : start + a * b + b]})
        start += a * b + b
    return params


def _check_params(params):
    """The input width D of a list of float ``{"W", "b"}`` layers that chain and end in one output."""
    D, width = _checks.layers(params)
    if width != 1:
        raise ValueError(f"params[-1]['W'] must have one output column, got shape {params[-1]['W'].shape}")
    return D


def apply(params, x, sigma_w2=2.0, sigma_b2=0.0):
    """The outputs (N,) of a ReLU network in the NTK parametrisation on a batch ``x`` (N, D)."""
    D = _check_params(params)
    x = _checks.float_array(x, "x", ndim=2, what=" (N, D)")
    _checks.same_shape(x, "x", (x.shape[0], D), expected_from="(N, D) to match params[0]['W']")
    sigma_w2 = _checks.positive(sigma_w2, "sigma_w2")
    sigma_b2 = _checks.positive(sigma_b2, "sigma_b2", allow_zero=True)
    return _apply(params, x, sigma_w2, sigma_b2)


@jax.jit
def _apply(params, x, sigma_w2, sigma_b2):
    h = x
    for layer in params:
        n = h.shape[1]
        z = jnp.sqrt(sigma_b2) * layer["b"][None, :] + jnp.sqrt(sigma_w2 / n) * (h @ layer["W"])  # (N, width)
        h = jax.nn.relu(z)
    return z[:, 0]


def ntk_kernel(x1, x2, *, depth, sigma_w2=2.0, sigma_b2=0.0):
    """The wide-limit tangent kernel (N1, N2) of a ReLU network with ``depth`` hidden layers."""
    x1, x2 = _same_features(x1, x2)
    depth = _checks.size(depth, "depth", minimum=0)
    sigma_w2 = _checks.positive(sigma_w2, "sigma_w2")
    sigma_b2 = _checks.positive(sigma_b2, "sigma_b2", allow_zero=True)
    return _ntk(x1, x2, depth, sigma_w2, sigma_b2)


@jax.jit  # depth is a loop count, so one compilation serves every depth
def _ntk(x1, x2, depth, sigma_w2, sigma_b2):
    D = x1.shape[1]
    k11 = sigma_b2 + sigma_w2 * jnp.sum(x1 * x1, axis=1) / D  # (N1,)
    k22 = sigma_b2 + sigma_w2 * jnp.sum(x2 * x2, axis=1) / D  # (N2,)
    k12 = sigma_b2 + sigma_w2 * (x1 @ x2.T) / D  # (N1, N2)

    def layer(_, state):
        k11, k12, k22, theta = state
        a, c = jnp.broadcast_to(k11[:, None], k12.shape), jnp.broadcast_to(k22[None, :], k12.shape)
        norm = jnp.sqrt(a * c)
        rho = jnp.clip(k12 / jnp.where(norm > 0, norm, 1.0), -1.0, 1.0)
        e_dot = (jnp.pi - jnp.arccos(rho)) / (2 * jnp.pi)  # E[step(u) step(v)]
        k12 = sigma_b2 + sigma_w2 * relu_expectation(a, k12, c)
        theta = k12 + sigma_w2 * e_dot * theta
        return sigma_b2 + sigma_w2 * k11 / 2, k12, sigma_b2 + sigma_w2 * k22 / 2, theta

    return jax.lax.fori_loop(0, depth, layer, (k11, k12, k22, k12))[3]


def _check_data(params, x, y):
    D = _check_params(params)
    x = _checks.float_array(x, "x", ndim=2, what=" (N, D)")
    _checks.same_shape(x, "x", (x.shape[0], D), expected_from="(N, D) to match params[0]['W']")
    y = _checks.float_array(y, "y", ndim=1, what=" (N,)")
    return x, _checks.same_shape(y, "y", (x.shape[0],), expected_from="(N,) to match x")


def train(params, x, y, *, learning_rate, steps, sigma_w2=2.0, sigma_b2=0.0):
    """Full-batch gradient descent on 0.5 * sum((f(x) - y)^2); the parameters and the loss before
    each step (steps,)."""
    x, y = _check_data(params, x, y)
    steps = _checks.size(steps, "steps")
    learning_rate = _checks.positive(learning_rate, "learning_rate")
    return _train(params, x, y, learning_rate, steps, sigma_w2, sigma_b2)


@functools.partial(jax.jit, static_argnums=4)
def _train(params, x, y, learning_rate, steps, sigma_w2, sigma_b2):
    def loss(p):
        return 0.5 * jnp.sum((_apply(p, x, sigma_w2, sigma_b2) - y) ** 2)

    def step(p, _):
        value, grads = jax.value_and_grad(loss)(p)
        return jax.tree.map(lambda a, g: a - learning_rate * g, p, grads), value

    return jax.lax.scan(step, params, length=steps)


def lazy_prediction(theta_test, theta_train, f0_test, f0_train, y, *, learning_rate, steps):
    """f_t at the test inputs (M,) of the linearised network after ``steps`` steps of gradient descent,
    from the kernels Theta(test, train) (M, N) and Theta(train, train) (N, N) and the outputs at
    initialisation."""
    theta_train = _checks.float_array(theta_train, "theta_train", ndim=2, what=" (N, N)")
    N = theta_train.shape[0]
    _checks.same_shape(theta_train, "theta_train", (N, N), expected_from="square")
    theta_test = _checks.float_array(theta_test, "theta_test", ndim=2, what=" (M, N)")
    M = theta_test.shape[0]
    _checks.same_shape(theta_test, "theta_test", (M, N), expected_from="(M, N) to match theta_train")
    f0_test = _checks.same_shape(_checks.float_array(f0_test, "f0_test"), "f0_test", (M,), expected_from="(M,)")
    f0_train = _checks.same_shape(_checks.float_array(f0_train, "f0_train"), "f0_train", (N,), expected_from="(N,)")
    y = _checks.same_shape(_checks.float_array(y, "y"), "y", (N,), expected_from="(N,) to match theta_train")
    steps = _checks.size(steps, "steps", minimum=0)
    learning_rate = _checks.positive(learning_rate, "learning_rate")
    return _lazy(theta_test, theta_train, f0_test, f0_train, y, learning_rate, steps)


@jax.jit  # steps is traced here: one compilation serves every number of steps
def _lazy(theta_test, theta_train, f0_test, f0_train, y, learning_rate, steps):
    lam, V = jnp.linalg.eigh(theta_train)  # Theta(X, X) = V diag(lam) V^T
    tiny = jnp.finfo(theta_train.dtype).eps * jnp.max(jnp.abs(lam))
    safe = jnp.where(jnp.abs(lam) > tiny, lam, 1.0)
    gain = jnp.where(jnp.abs(lam) > tiny, (1 - (1 - learning_rate * lam) ** steps) / safe, learning_rate * steps)
    return f0_test + theta_test @ (V @ (gain * (V.T @ (y - f0_train))))
