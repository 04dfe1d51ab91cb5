r"""Softmax regression
==================

Classify by scoring each class with a linear function and turning the scores into probabilities
with the sigmoid (two classes, logistic regression) or the softmax (many classes): the first model
to try on any classification problem, and the last layer of almost every classifier network.

Equation
--------

.. math::

   z = x W + b, \qquad
   \operatorname{softmax}(z)_k = \frac{e^{z_k}}{\sum_{j=1}^{K} e^{z_j}}, \qquad
   \log \operatorname{softmax}(z)_k = z_k - m - \log \sum_{j=1}^{K} e^{z_j - m}, \quad
   m = \max_j z_j

   \ell(z, y) = -\log \operatorname{softmax}(z)_y, \qquad
   L(W, b) = \frac{1}{N} \sum_{i=1}^{N} \ell(x_i W + b, y_i), \qquad
   \nabla_z \ell = \operatorname{softmax}(z) - \mathbf{e}_y

   \text{binary } (K = 1):\quad p = \sigma(z), \qquad
   \ell(z, y) = -y \log \sigma(z) - (1 - y) \log(1 - \sigma(z))
   = \max(z, 0) - y z + \log\left(1 + e^{-|z|}\right)

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`, :math:`x_i`
     - features of one example; of example :math:`i`
     - ``x``, a row of ``X``
     - ``(D,)``
   * - :math:`W`
     - weights, one column per class
     - ``params["W"]``
     - ``(D, K)``
   * - :math:`b`
     - biases, one per class
     - ``params["b"]``
     - ``(K,)``
   * - :math:`z`, :math:`z_k`, :math:`z_j`
     - the logits (unnormalised log-probabilities); the logit of class :math:`k` or :math:`j`
     - ``apply(params, x)``
     - ``(K,)``
   * - :math:`k`, :math:`j`
     - class indices
     - positions along the last axis of ``z``
     - scalar
   * - :math:`K`
     - number of classes (1 for the binary model with one logit)
     - ``num_classes``
     - scalar
   * - :math:`m`
     - the largest logit, subtracted before exponentiating
     - ``m``
     - ``()``
   * - :math:`y`, :math:`y_i`
     - the true class (an integer; 0 or 1 in the binary case)
     - ``label``, ``y``
     - ``()``; ``(N,)``
   * - :math:`\mathbf{e}_y`
     - the one-hot vector of class :math:`y`
     - ``jax.nn.one_hot(y, K)``
     - ``(K,)``
   * - :math:`\ell`
     - cross-entropy of one example
     - ``cross_entropy``, ``binary_cross_entropy``
     - ``()``
   * - :math:`L`
     - mean cross-entropy over the data set
     - ``loss``
     - ``()``
   * - :math:`N`, :math:`i`
     - number of examples; index of an example
     - ``X.shape[0]``; a row of ``X``
     - scalar
   * - :math:`\sigma`, :math:`p`
     - the logistic sigmoid :math:`1 / (1 + e^{-z})`; the predicted probability of class 1
     - (inside ``binary_cross_entropy``)
     - ``()``

Explanation
-----------

A linear model gives each class a score, the *logit* :math:`z_k`. The softmax exponentiates the
scores, which makes them positive, and divides by their sum, which makes them add to one: a
probability distribution over the classes, in which a larger score always means a larger
probability. The name says what it does: it is a soft, differentiable version of picking the
maximum :footcite:`bridle1990probabilistic`.

.. admonition:: Intuition

   The softmax is an election held in proportion to enthusiasm rather than by majority: each class
   gets a share of the vote proportional to the exponential of its score, so a class one point
   ahead gets :math:`e \approx 2.7` times the share of its rival, and a class ten points ahead all
   but the whole vote. Adding the same amount to every score changes nothing, which is the
   freedom the code uses to subtract the largest score first.

With a single logit and the sigmoid :math:`\sigma(z) = 1/(1 + e^{-z})` it is logistic regression :footcite:`cox1958regression`; a
two-class softmax is the same model, since
:math:`\operatorname{softmax}(z_0, z_1)_1 = \sigma(z_1 - z_0)`.

**The loss.** Training maximises the probability that the model gives the true classes, which is
the same as minimising the cross-entropy :math:`-\log \operatorname{softmax}(z)_y`, averaged over
the data. Its gradient with respect to the logits is strikingly simple, the predicted distribution
minus the one-hot target, :math:`\operatorname{softmax}(z) - \mathbf{e}_y`: every wrong class is
pushed down in proportion to the probability it stole, the true class is pulled up by the
probability it lacks, and a confident correct prediction barely moves anything. The loss is convex
in :math:`W` and :math:`b`, so gradient descent finds the global minimum; on data that a
hyperplane separates perfectly the minimum sits at infinity, the weights grow without bound and
the probabilities approach 0 and 1 (weight decay or early stopping keeps them finite)
:footcite:`bishop2006pattern`.

**Numerical traps.** :math:`e^{z}` overflows float32 for :math:`z > 88.73`, and underflows to zero for
:math:`z < -104`, after which the logarithm returns :math:`-\infty`. The softmax does not change
when the same constant is added to every logit (the constant cancels between numerator and
denominator), so the code subtracts the largest logit :math:`m` first: the largest exponent is then
:math:`e^0 = 1`, nothing overflows, and the sum is at least 1, so its logarithm is finite. The loss
is computed from the *log*-softmax, never as the logarithm of a softmax that has already rounded a
tiny probability to zero. A label outside :math:`0, \dots, K - 1` raises a ``ValueError``; under
:func:`jax.jit` it makes the loss NaN. The binary loss is rewritten the same way, as
:math:`\max(z, 0) - y z + \log(1 + e^{-|z|})`, in which the exponent is never positive. Inputs in
float16 or bfloat16 are promoted to float32 for the sum and the result cast back.

Inductive bias
--------------

Softmax regression assumes that the classes are separated by hyperplanes: the decision boundary
between any two classes is the set where their linear scores are equal. It needs little data, one
weight per feature and class, and its probabilities are calibrated when that assumption holds; it
cannot learn XOR or any other boundary that bends, unless the features are made nonlinear first
(the hidden layers of a network, see :doc:`mlp`). The cross-entropy assumes the labels are
correct draws from the predicted distribution, so a mislabelled example pulls hard on the weights.

Example
-------

Three well separated clusters in the plane, one per class:

>>> import jax, jax.numpy as jnp
>>> from cookbook.foundations.softmax_regression import (
...     apply, fit, init, log_softmax, loss, predict)
>>> z = jnp.array([1000.0, 999.0, 0.0])
>>> jnp.log(jnp.sum(jnp.exp(z)))  # the naive normaliser overflows
Array(inf, dtype=float32)
>>> log_softmax(z).round(2)  # the max subtracted first: finite
Array([   -0.31,    -1.31, -1000.31], dtype=float32)
>>> k_init, k_x = jax.random.split(jax.random.key(0))
>>> centres = jnp.array([[2.0, 0.0], [-1.0, 2.0], [-1.0, -2.0]])
>>> y = jnp.arange(60) % 3
>>> X = centres[y] + 0.5 * jax.random.normal(k_x, (60, 2))
>>> params = init(k_init, 2, 3)
>>> apply(params, X[0]).shape
(3,)
>>> params, losses = fit(params, X, y, learning_rate=0.5, steps=100)
>>> float(losses[-1]) < 0.1 < float(losses[0])
True
>>> float(loss(params, X, y)) < 0.1
True
>>> int(predict(params, X[1])), int(y[1])
(1, 1)
>>> float(jnp.mean(jax.vmap(predict, in_axes=(None, 0))(params, X) == y))
1.0
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "log_softmax": (),
    "cross_entropy": (),
    "binary_cross_entropy": (),
    "init": ("in_features", "num_classes"),
    "apply": (),
    "predict": (),
    "loss": (),
    "fit": ("steps",),
}


def log_softmax(z):
    """Log-probabilities of the logits ``z`` along the last axis, with the max subtracted first.

    >>> import jax.numpy as jnp
    >>> from cookbook.foundations.softmax_regression import log_softmax
    >>> jnp.exp(log_softmax(jnp.array([0.0, 0.0, jnp.log(2.0)]))).round(3)
    Array([0.25, 0.25, 0.5 ], dtype=float32)
    """
    z = _checks.float_array(z, "z")
    if z.ndim < 1:
        raise ValueError(f"z must have shape (..., K), got shape {z.shape}")
    return _log_softmax_jit(z)


# The public functions check their input in Python, then run a compiled core (the uncompiled form
# first, which the other cores call): the page's examples, the tests and the bad-input checks share
# one program per shape instead of dispatching each operation eagerly.
def _log_softmax(z):
    z32, dtype = z.astype(jnp.promote_types(z.dtype, jnp.float32)), z.dtype
    m = jax.lax.stop_gradient(jnp.max(z32, axis=-1, keepdims=True))  # a constant: the result does not depend on it
    shifted = z32 - m
    out = shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))
    return out.astype(dtype)


_log_softmax_jit = jax.jit(_log_softmax)


def cross_entropy(z, label):
    """Cross-entropy ``-log softmax(z)[label]`` of one example: logits ``z`` (K,), integer ``label``.

    >>> import jax.numpy as jnp
    >>> from cookbook.foundations.softmax_regression import cross_entropy
    >>> cross_entropy(jnp.array([0.0, 0.0, 0.0, 0.0]), 2).round(4)  # log 4: a uniform guess
    Array(1.3863, dtype=float32)
    >>> cross_entropy(jnp.array([1e4, -1e4, 0.0, 0.0]), 1)  # confidently wrong: exactly 2e4, not inf
    Array(20000., dtype=float32)
    """
    z = _checks.float_array(z, "z", ndim=1, what=" (K,): the logits of one example")
    K = z.shape[0]
    label = _checks.int_array(label, "label", ndim=0, what=" (one class)")
    _checks.check_range(label, f"label (a class of the {K} logits in z)", 0, K)
    return _cross_entropy_jit(z, label)


def _cross_entropy(z, label):
    K = z.shape[0]
    return jnp.where((label >= 0) & (label < K), -_log_softmax(z)[label], jnp.nan)  # NaN for a bad label under jit


_cross_entropy_jit = jax.jit(_cross_entropy)


def binary_cross_entropy(z, label):
    """Cross-entropy of one logit ``z`` (a scalar) with a 0/1 ``label``, without ever overflowing.

    >>> import jax.numpy as jnp
    >>> from cookbook.foundations.softmax_regression import binary_cross_entropy
    >>> binary_cross_entropy(jnp.array(0.0), 1.0).round(4)  # log 2
    Array(0.6931, dtype=float32)
    """
    z = _checks.float_array(z, "z")
    label = _checks.float_array(label, "label")
    if label.shape != z.shape:
        raise ValueError(f"label must have the shape of z, {z.shape}, got shape {label.shape}")
    return _binary_cross_entropy_jit(z, label)


def _binary_cross_entropy(z, label):
    z32, dtype = z.astype(jnp.promote_types(z.dtype, jnp.float32)), z.dtype
    # max(z, 0) written as (z + |z|) / 2, so that the gradient at z = 0 is sigmoid(0) = 1/2 exactly
    out = 0.5 * (z32 + jnp.abs(z32)) - label * z32 + jnp.log1p(jnp.exp(-jnp.abs(z32)))
    return out.astype(dtype)


_binary_cross_entropy_jit = jax.jit(_binary_cross_entropy)


def init(key, in_features, num_classes):
    """Parameters for ``in_features`` features and ``num_classes`` classes (1: binary, one logit).

    The loss is convex, so the start hardly matters: small random weights, zero biases.
    """
    in_features = _checks.size(in_features, "in_features")
    num_classes = _checks.size(num_classes, "num_classes")  # 1 means binary: one logit
    return _init(key, in_features, num_classes)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _init(key, in_features, num_classes):
    return {
        "W": 0.01 * jax.random.normal(key, (in_features, num_classes)),
        "b": jnp.zeros((num_classes,)),
    }


def _check_params(params):
    """The sizes ``(D, K)`` of float parameters ``W`` (D, K) and ``b`` (K,)."""
    D, K = _checks.float_array(params["W"], "params['W']", ndim=2, what=" (D, K)").shape
    _checks.same_shape(_checks.float_array(params["b"], "params['b']"), "params['b']", (K,))
    return D, K


def apply(params, x):
    """The logits ``x @ W + b`` of one example ``x`` of shape (D,); shape (K,)."""
    D, _ = _check_params(params)
    x = _checks.same_shape(_checks.float_array(x, "x"), "x", (D,), expected_from="(D,) to match params['W']")
    return _apply_jit(params, x)


def _apply(params, x):
    return x @ params["W"] + params["b"]


_apply_jit = jax.jit(_apply)


def predict(params, x):
    """The most probable class of one example: the arg max of the logits, or ``z > 0`` if binary."""
    z = _checks.check_no_nan(apply(params, x), "the logits of params and x")  # no arg max of NaN
    return _class_of(z)


@jax.jit
def _class_of(z):
    if z.shape[0] == 1:
        return (z[0] > 0).astype(jnp.int32)
    return jnp.argmax(z)


def _check_data(params, X, y):
    """``X`` (N, D) as floats and ``y`` (N,) as integer labels in [0, K) (0 or 1 when K = 1)."""
    D, K = _check_params(params)
    X = _checks.same_shape(_checks.float_array(X, "X", ndim=2, what=" (N, D)"), "X", (len(X), D),
                           expected_from="(N, D) to match params['W']")
    y = _checks.same_shape(_checks.int_array(y, "y"), "y", X.shape[:1], expected_from="(N,) to match X")
    return X, _checks.check_range(y, "y", 0, max(K, 2))


def loss(params, X, y):
    """Mean cross-entropy over a data set ``X`` (N, D) with integer labels ``y`` (N,)."""
    return _mean_loss_jit(params, *_check_data(params, X, y))


def _mean_loss(params, X, y):
    """:func:`loss` on data already checked (so that a ``scan`` body checks nothing)."""
    Z = jax.vmap(_apply, in_axes=(None, 0))(params, X)  # (N, K)
    if Z.shape[1] == 1:
        return jnp.mean(jax.vmap(_binary_cross_entropy)(Z[:, 0], y.astype(Z.dtype)))
    return jnp.mean(jax.vmap(_cross_entropy)(Z, y))


_mean_loss_jit = jax.jit(_mean_loss)


def fit(params, X, y, *, learning_rate, steps):
    """Full-batch gradient descent on :func:`loss`; returns the parameters and the loss before each step."""
    X, y = _check_data(params, X, y)
    _checks.size(steps, "steps")
    _checks.positive(learning_rate, "learning_rate")
    return _fit(params, X, y, learning_rate, steps)


@functools.partial(jax.jit, static_argnums=4)
def _fit(params, X, y, learning_rate, steps):
    def step(params, _):
        value, grads = jax.value_and_grad(_mean_loss)(params, X, y)
        params = jax.tree.map(lambda p, g: p - learning_rate * g, params, grads)
        return params, value

    return jax.lax.scan(step, params, length=steps)
