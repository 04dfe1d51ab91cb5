r"""RealNVP: affine coupling flows
==============================

An invertible network whose Jacobian determinant costs one sum, so that the exact likelihood of
the data follows from the change of variables: the model to reach for when you need an exact
density and fast sampling from the same network.

Equation
--------

.. math::

   \begin{aligned}
   y &= m \odot x + (1 - m) \odot \left(x \odot e^{s(m \odot x)} + t(m \odot x)\right), \\
   \log \left|\det \frac{\partial y}{\partial x}\right| &= \sum_{i=1}^{D} (1 - m_i)\, s_i(m \odot x), \\
   \log p(x) &= \log \mathcal{N}\!\left(f(x); 0, I\right)
     + \sum_{k=1}^{L} \log \left|\det \frac{\partial y_k}{\partial y_{k-1}}\right|
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`, :math:`y`
     - input and output of one coupling layer (the data, for the first layer)
     - ``x``, ``y``
     - ``(D,)``
   * - :math:`m`
     - binary mask; the coordinates it keeps pass unchanged and condition the others; it
       alternates from layer to layer
     - ``masks`` (row :math:`k`)
     - ``(D,)``
   * - :math:`s`, :math:`t`
     - log-scale and shift, outputs of a small network of the kept coordinates
     - ``s``, ``t``
     - ``(D,)``
   * - :math:`f`
     - the whole flow, data to latent
     - ``forward``
     - ``(D,)`` to ``(D,)``
   * - :math:`y_k`
     - output of layer :math:`k`; :math:`y_0 = x` and :math:`y_L = f(x) = z`
     - carry of the scan in ``forward``
     - ``(D,)``
   * - :math:`p(x)`
     - the model's density of the data
     - ``log_prob`` (its logarithm)
     - scalar
   * - :math:`I`
     - the identity matrix: a standard Gaussian base distribution
     - ``log_prob``
     - ``(D, D)``
   * - :math:`i`, :math:`D`
     - coordinate and the number of them
     - ``dim``
     - scalar
   * - :math:`k`, :math:`L`
     - layer and the number of layers
     - ``num_layers``
     - scalar

Explanation
-----------

If :math:`f` is invertible and :math:`z = f(x)` is a standard Gaussian, the density of :math:`x` is
the Gaussian's density at :math:`f(x)` times the factor by which :math:`f` stretches volume, the
absolute Jacobian determinant. A general network makes that determinant cost :math:`O(D^3)` and
its inverse unknown. :footcite:t:`dinh2017density` choose layers where both are free. An *affine
coupling layer* splits the coordinates with a mask: the kept half passes through unchanged and
feeds a network that outputs a scale and a shift for the other half. The Jacobian is then
triangular (no output depends on a coordinate that the layer changes, except its own), its
diagonal holds 1 for the kept coordinates and :math:`e^{s_i}` for the changed ones, so the
log-determinant is the sum of the log-scales (the second line). The inverse is as cheap, since the
kept half is still there to recompute :math:`s` and :math:`t`: :math:`x = (y - t) \odot e^{-s}`
on the changed coordinates. The networks :math:`s` and :math:`t` need never be inverted, so they can
be anything. Alternating the mask lets every coordinate be changed in some layer; the likelihood of
the stack is the base density at :math:`z` plus the log-determinants of all layers (the third
line), which ``fit`` maximises directly.

.. admonition:: Intuition

   A coupling layer is a card trick with two hands: one hand stays still while the other is
   stretched and slid by an amount that depends only on what the still hand holds. Because the
   still hand is untouched, the move can always be undone, and the stretch is easy to measure.
   Swap hands and repeat, and any shuffle can be built up.

*Numerical traps.* An unbounded :math:`s` can make :math:`e^s` overflow early in training; here
:math:`s` goes through :math:`\tanh`, so each layer scales each coordinate by a factor between
:math:`e^{-1}` and :math:`e`, a departure from the equation that many libraries share. The output
weights of :math:`s` and :math:`t` start at zero, so an untrained flow is the identity.

Inductive bias
--------------

A flow assumes that the data are a smooth, invertible deformation of a Gaussian of the same
dimension. It therefore keeps every dimension, cannot compress, and finds it hard to tear the
Gaussian's single connected mass into separate clusters (such as the two moons): it can only
stretch a thin bridge between them, where some probability leaks.

Example
-------

A flow of 4 coupling layers on 3 coordinates; it inverts exactly and starts as the identity:

>>> import jax, jax.numpy as jnp
>>> from cookbook.generative.realnvp import init, forward, inverse, log_prob
>>> params = init(jax.random.key(0), dim=3, num_layers=4, hidden=8)
>>> x = jnp.array([0.5, -1.0, 2.0])
>>> z, log_det = forward(params, x)
>>> bool(jnp.allclose(z, x)), float(log_det)
(True, 0.0)
>>> params = jax.tree.map(lambda p: p + 0.3, params)  # any weights
>>> z, log_det = forward(params, x)
>>> float(jnp.max(jnp.abs(inverse(params, z) - x))) < 1e-5
True
>>> log_prob(params, x).shape
()

Implementation notes
--------------------

``forward`` and ``inverse`` run the layers with one :func:`jax.lax.scan` over weights stacked on a
leading axis of length :math:`L`; they take one example and are batched with :func:`jax.vmap`.
``fit`` trains by full-batch Adam :footcite:p:`kingma2015adam` inside one scan. On two moons
(scikit-learn's ``make_moons``, noise 0.05, standardised, 512 points to train on and 512 held out),
4 layers of 16 hidden units trained for 200 steps reach a held-out negative log-likelihood of about
1.36 nats against 2.70 for the best-fitting Gaussian; the test asserts a gap of at least 1 nat. Distrax builds the same layer
as ``distrax.MaskedCoupling`` with a ``distrax.ScalarAffine`` bijector; the tests match the two.
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook._memo import cached

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"forward": (), "inverse": (), "log_prob": ()}

_SHAPES = {"W1": ("L", "D", "H"), "b1": ("L", "H"), "W_s": ("L", "H", "D"), "b_s": ("L", "D"),
           "W_t": ("L", "H", "D"), "b_t": ("L", "D")}


def init(key, *, dim, num_layers, hidden, dtype=jnp.float32):
    """Weights of ``num_layers`` coupling layers on ``dim`` coordinates, each conditioner with one
    ``tanh`` layer of ``hidden`` units; the output weights are zero, so the flow starts as the identity."""
    sizes = {"D": _checks.size(dim, "dim"), "L": _checks.size(num_layers, "num_layers"),
             "H": _checks.size(hidden, "hidden")}
    return _init(key, sizes["D"], sizes["L"], sizes["H"], jnp.dtype(dtype))


# Each public function checks its arguments in Python, then runs one module-level jitted program
# (operation by operation, every operation would compile on its own for each new shape).
@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _init(key, D, L, H, dtype):
    sizes = {"D": D, "L": L, "H": H}
    shape = lambda name: tuple(sizes[s] for s in _SHAPES[name])  # noqa: E731
    W1 = jax.random.normal(key, shape("W1"), dtype) / jnp.sqrt(D).astype(dtype)
    return {"W1": W1, **{name: jnp.zeros(shape(name), dtype) for name in _SHAPES if name != "W1"}}


def _sizes(params):
    """``(L, D, H)``, after checking that ``params`` has the shapes that ``init`` gives it."""
    if not isinstance(params, dict) or set(params) != set(_SHAPES):
        raise TypeError(f"params must be the dict that init returns, with keys {sorted(_SHAPES)}")
    W1 = _checks.float_array(params["W1"], "params['W1']", ndim=3, what=" (L, D, H)")
    sizes = dict(zip("LDH", W1.shape))
    for name, shape in _SHAPES.items():
        where = f"params['{name}']"
        _checks.same_shape(_checks.float_array(params[name], where), where, tuple(sizes[s] for s in shape),
                           expected_from="init(key, dim=D, num_layers=L, hidden=H)")
    return W1.shape


def _masks(L, D, dtype):
    """Row k keeps the coordinates i with i + k even: the masks alternate from layer to layer."""
    return ((jnp.arange(L)[:, None] + jnp.arange(D)[None, :]) % 2 == 0).astype(dtype)  # (L, D)


def _scale_shift(layer, m, x):
    """Log-scale ``s`` and shift ``t`` (each (D,), zero where ``m`` keeps) from the kept coordinates."""
    h = jnp.tanh((m * x) @ layer["W1"] + layer["b1"])  # (H,)
    s = (1 - m) * jnp.tanh(h @ layer["W_s"] + layer["b_s"])
    t = (1 - m) * (h @ layer["W_t"] + layer["b_t"])
    return s, t


def _check_point(params, x, name):
    _, D, _ = _sizes(params)
    x = _checks.float_array(x, name, ndim=1, what=" (D,)")
    _checks.same_shape(x, name, (D,), expected_from="dim of params")
    return x


def forward(params, x):
    """The latent ``z = f(x)`` (D,) of one example ``x`` (D,) and ``log |det df/dx|``, a scalar."""
    return _forward(params, _check_point(params, x, "x"))


@jax.jit
def _forward(params, x):
    masks = _masks(*params["W1"].shape[:2], x.dtype)

    def layer_step(carry, inputs):
        y, log_det = carry
        layer, m = inputs
        s, t = _scale_shift(layer, m, y)
        return (y * jnp.exp(s) + t, log_det + jnp.sum(s)), None

    (z, log_det), _ = jax.lax.scan(layer_step, (x, jnp.zeros((), x.dtype)), (params, masks))
    return z, log_det


def inverse(params, z):
    """The example ``x = f^{-1}(z)`` (D,) of one latent ``z`` (D,): the layers undone in reverse."""
    return _inverse(params, _check_point(params, z, "z"))


@jax.jit
def _inverse(params, z):
    masks = _masks(*params["W1"].shape[:2], z.dtype)

    def layer_step(y, inputs):
        layer, m = inputs
        s, t = _scale_shift(layer, m, y)  # m * y is the same before and after the layer
        return (y - t) * jnp.exp(-s), None

    x, _ = jax.lax.scan(layer_step, z, (params, masks), reverse=True)
    return x


def log_prob(params, x):
    """The exact log-density of one example ``x`` (D,) under the flow with a standard Gaussian base."""
    return _log_prob(params, _check_point(params, x, "x"))


@jax.jit
def _log_prob(params, x):
    z, log_det = _forward(params, x)
    return -0.5 * jnp.sum(z**2) - 0.5 * z.shape[0] * jnp.log(2 * jnp.pi) + log_det


def sample(params, key, num):
    """``num`` samples (num, D): standard Gaussian draws mapped through ``inverse``."""
    _sizes(params)  # checks params
    return _sample(params, key, _checks.size(num, "num"))


@functools.partial(jax.jit, static_argnums=2)
def _sample(params, key, num):
    z = jax.random.normal(key, (num, params["W1"].shape[1]), params["W1"].dtype)
    return jax.vmap(_inverse, in_axes=(None, 0))(params, z)


@cached  # a figure and the tests share this run when the book is built (cookbook/_memo.py)
def fit(params, X, *, steps, learning_rate=1e-2):
    """Full-batch Adam on the mean negative log-likelihood of the rows of ``X`` (N, D).

    Returns the trained parameters and the mean negative log-likelihood before each step, (steps,).
    """
    _, D, _ = _sizes(params)
    X = _checks.float_array(X, "X", ndim=2, what=" (N, D)")
    _checks.same_shape(X, "X", (X.shape[0], D), expected_from="dim of params")
    steps = _checks.size(steps, "steps")
    _checks.positive(learning_rate, "learning_rate")
    return _train(params, X, steps, learning_rate)


def _nll(params, X):
    return -jnp.mean(jax.vmap(log_prob, in_axes=(None, 0))(params, X))  # the checks run once, at tracing


@functools.partial(jax.jit, static_argnums=(2,))
def _train(params, X, steps, learning_rate):
    b1, b2, tiny = 0.9, 0.999, 1e-8
    zeros = jax.tree.map(jnp.zeros_like, params)

    def step(carry, t):
        params, m, v = carry
        value, grads = jax.value_and_grad(_nll)(params, X)
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
        scale = learning_rate * jnp.sqrt(1 - b2**t) / (1 - b1**t)
        params = jax.tree.map(lambda p, m, v: p - scale * m / (jnp.sqrt(v) + tiny), params, m, v)
        return (params, m, v), value

    (params, _, _), values = jax.lax.scan(step, (params, zeros, zeros), jnp.arange(1, steps + 1, dtype=jnp.float32))
    return params, values
