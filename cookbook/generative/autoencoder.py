r"""Autoencoders: undercomplete and denoising
=========================================

A network trained to copy its input through a code narrower than the input, so that the code keeps
only what matters most for the copy: the tool to reach for when you want a compact representation
learned without labels, or a learned denoiser.

Equation
--------

.. math::

   \begin{aligned}
   h &= \phi\!\left(W_e^\top \tilde{x} + b_e\right), \qquad
   \hat{x} = W_d^\top h + b_d, \qquad
   \tilde{x} = x + \sigma \varepsilon, \quad \varepsilon \sim \mathcal{N}(0, I), \\
   \ell(x) &= \mathbb{E}_{\varepsilon} \sum_{i=1}^{D} \left(\hat{x}_i - x_i\right)^2
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`
     - one clean example
     - ``x``
     - ``(D,)``
   * - :math:`\tilde{x}`
     - the input the encoder sees: :math:`x` itself when :math:`\sigma = 0`, a corrupted copy otherwise
     - ``x_noisy``
     - ``(D,)``
   * - :math:`\sigma`
     - standard deviation of the corruption (0 for a plain autoencoder)
     - ``noise``
     - scalar
   * - :math:`\varepsilon`
     - standard Gaussian noise
     - ``eps``
     - ``(D,)``
   * - :math:`I`
     - the identity matrix, :math:`D` by :math:`D`
     - implied by ``jax.random.normal``
     - ``(D, D)``
   * - :math:`h`
     - the code
     - ``h``
     - ``(K,)``
   * - :math:`\hat{x}`
     - the reconstruction
     - ``x_hat``
     - ``(D,)``
   * - :math:`W_e`, :math:`b_e`
     - encoder weights and bias
     - ``params["W_e"]``, ``params["b_e"]``
     - ``(D, K)``, ``(K,)``
   * - :math:`W_d`, :math:`b_d`
     - decoder weights and bias
     - ``params["W_d"]``, ``params["b_d"]``
     - ``(K, D)``, ``(D,)``
   * - :math:`\phi`
     - the encoder's activation: the identity (a linear autoencoder) or :math:`\tanh`
     - ``activation``
     - elementwise
   * - :math:`\ell`
     - the reconstruction loss of one example
     - ``loss``
     - scalar
   * - :math:`i`, :math:`D`
     - input coordinate and the number of them
     - last axis of ``x``, ``D``
     - scalar

Explanation
-----------

An autoencoder is trained to output its own input. With a code of :math:`K < D` numbers (an
*undercomplete* code), it cannot copy everything, so training pushes the code to keep what reduces
the squared error most. In the linear case this is a classical result: :footcite:t:`baldi1989neural`
showed that a linear autoencoder trained with squared error has no local minima other than the global
one, and that at the global minimum the rows of :math:`W_d` span the same subspace as the first
:math:`K` principal components of the data. The autoencoder *is* principal component analysis, up
to an invertible mixing inside the code, which the loss cannot see (replace :math:`W_e` by
:math:`W_e A` and :math:`W_d` by :math:`A^{-1} W_d`). Its best error is the sum of the discarded
variances, exactly as for PCA. The tests compare the subspaces by their principal angles
(``principal_angles``) against scikit-learn's PCA, and the error against PCA's. A nonlinear
:math:`\phi` lets the code bend along curved data, but the loss is the same.

A *denoising* autoencoder :footcite:p:`vincent2008extracting` corrupts the input and asks for the
clean example back, so copying is no longer the answer even with a wide code: the network must learn
what clean examples look like. For a linear autoencoder the expectation over the noise has a closed
form, :math:`\ell(x) = \|\hat{x}_0 - x\|^2 + \sigma^2 \|W_e W_d\|_F^2`, where :math:`\hat{x}_0` is
the reconstruction without noise: training with noise is weight decay on the end-to-end map
:footcite:p:`bishop1995training`, and the tests check this identity by sampling. ``loss`` draws one
:math:`\varepsilon` per call, as in training, and so estimates :math:`\ell`.

.. admonition:: Intuition

   Summarising a long report in three sentences forces you to find what the report is about; a
   summary as long as the report teaches you nothing. A denoising autoencoder is a restorer of old
   photographs: having seen many faces, it knows what a scratch is and what a nose is, and removes
   one without the other.

Inductive bias
--------------

The bottleneck assumes that the data lie near a :math:`K`-dimensional set, and the squared error
assumes that the directions of large variance are the ones worth keeping. A linear autoencoder can
only find a flat subspace, so data on a curved set (a ring) need more code dimensions than their
true dimension. Nothing in the loss makes the code's coordinates meaningful one by one, and nothing
makes the code a distribution that can be sampled: that is what :doc:`vae` adds.

Example
-------

A linear autoencoder from 5 coordinates to a code of 2; the loss without noise is the squared error:

>>> import jax, jax.numpy as jnp
>>> from cookbook.generative.autoencoder import init, reconstruct, loss, principal_angles
>>> params = init(jax.random.key(0), D=5, K=2)
>>> x = jnp.array([1.0, -2.0, 0.5, 0.0, 3.0])
>>> x_hat = reconstruct(params, x, activation="linear")
>>> x_hat.shape
(5,)
>>> err = loss(params, jax.random.key(1), x, noise=0.0, activation="linear")
>>> bool(jnp.isclose(err, jnp.sum((x_hat - x) ** 2)))
True

Principal angles between two subspaces, in radians: the plane of axes 1 and 2 and the plane of
axes 2 and 3 share axis 2 (angle 0) and are otherwise orthogonal (angle :math:`\pi/2`):

>>> I = jnp.eye(5)
>>> [round(float(a), 4) for a in principal_angles(I[:, :2], I[:, 1:3])]
[0.0, 1.5708]

Implementation notes
--------------------

``fit`` trains with full-batch Adam :footcite:p:`kingma2015adam` inside one :func:`jax.lax.scan`;
the noise level is an argument of the compiled loop, so plain and denoising runs share it. On the
first 800 of scikit-learn's digits scaled to [0, 1], a linear autoencoder with a code of 3 trained for 400 steps
spans the principal subspace to within 3 degrees (the largest principal angle to scikit-learn's
``PCA(3)``) and reaches PCA's reconstruction error to within 1 %; trained with noise of standard
deviation 0.5, its end-to-end map :math:`W_e W_d` shrinks and it removes more than two thirds of the
noise's squared error. The tests assert these figures.
``principal_angles`` follows :footcite:t:`bjorck1973numerical`: orthonormal bases by QR, then the
singular values of :math:`Q_A^\top Q_B` are the cosines of the angles; for angles near zero, where
the arccosine loses precision, :func:`scipy.linalg.subspace_angles` uses the sines as well. Write
for one example and batch with :func:`jax.vmap`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks
from cookbook._memo import cached

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"reconstruct": ("activation",), "loss": ("activation",), "principal_angles": ()}

_ACTIVATIONS = {"linear": lambda a: a, "tanh": jnp.tanh}


def init(key, *, D, K, dtype=jnp.float32):
    """Encoder and decoder weights for ``D`` inputs and a code of ``K``: Gaussian with variance
    ``1 / fan_in``, biases zero."""
    D, K = _checks.size(D, "D"), _checks.size(K, "K")
    return _init(key, D, K, dtype)


# Every public function checks its input in Python, then runs one compiled core like this one, so a
# repeated call with the same shapes (the examples', the tests', the jit and bad-input checks') reuses
# one program instead of compiling each small operation alone.
@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _init(key, D, K, dtype):
    draw = jax.random.normal(key, (2, D * K), dtype)  # one draw for both weight matrices
    return {"W_e": draw[0].reshape(D, K) / jnp.sqrt(D).astype(dtype), "b_e": jnp.zeros((K,), dtype),
            "W_d": draw[1].reshape(K, D) / jnp.sqrt(K).astype(dtype), "b_d": jnp.zeros((D,), dtype)}


def _check(params, x, activation, name="x"):
    """``x`` as a float array (D,), after checking ``params`` and ``activation``."""
    if not isinstance(params, dict) or set(params) != {"W_e", "b_e", "W_d", "b_d"}:
        raise TypeError("params must be the dict that init returns, with keys ['W_d', 'W_e', 'b_d', 'b_e']")
    W_e = _checks.float_array(params["W_e"], "params['W_e']", ndim=2, what=" (D, K)")
    D, K = W_e.shape
    for name_, shape in (("b_e", (K,)), ("W_d", (K, D)), ("b_d", (D,))):
        where = f"params['{name_}']"
        _checks.same_shape(_checks.float_array(params[name_], where), where, shape, expected_from="init(key, D=D, K=K)")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    x = _checks.float_array(x, name, ndim=1, what=" (D,)")
    return _checks.same_shape(x, name, (D,), expected_from="D of params")


def encode(params, x, *, activation="tanh"):
    """The code ``h`` (K,) of one input ``x`` (D,)."""
    return _ACTIVATIONS[activation](x @ params["W_e"] + params["b_e"])


def reconstruct(params, x, *, activation="tanh"):
    """The reconstruction ``x_hat`` (D,) of one input ``x`` (D,), with no corruption."""
    x = _check(params, x, activation)
    return _reconstruct_jit(params, x, activation=activation)


def _reconstruct(params, x, activation):
    h = encode(params, x, activation=activation)  # (K,)
    return h @ params["W_d"] + params["b_d"]


_reconstruct_jit = jax.jit(_reconstruct, static_argnames="activation")


def loss(params, key, x, *, noise=0.0, activation="tanh"):
    """Squared error between the reconstruction of ``x`` corrupted by Gaussian noise of standard
    deviation ``noise`` (one draw) and the clean ``x`` (D,); ``noise=0`` is a plain autoencoder."""
    x = _check(params, x, activation)
    _checks.positive(noise, "noise", allow_zero=True)
    return _loss_jit(params, key, x, noise, activation=activation)


def _loss(params, key, x, noise, activation):
    eps = jax.random.normal(key, x.shape, x.dtype)
    x_noisy = x + noise * eps
    x_hat = _reconstruct(params, x_noisy, activation)
    return jnp.sum((x_hat - x) ** 2)


_loss_jit = jax.jit(_loss, static_argnames="activation")  # the noise is traced: one program for every level


def principal_angles(A, B):
    """The principal angles, in radians and ascending, between the column spans of ``A`` (D, P) and
    ``B`` (D, Q): ``min(P, Q)`` of them, each in [0, pi/2]."""
    A = _checks.float_array(A, "A", ndim=2, what=" (D, P)")
    B = _checks.float_array(B, "B", ndim=2, what=" (D, Q)")
    _checks.same_shape(B, "B", (A.shape[0], B.shape[1]), expected_from="as many rows as A")
    return _principal_angles(A, B)


@jax.jit
def _principal_angles(A, B):
    Q_A, _ = jnp.linalg.qr(A)
    Q_B, _ = jnp.linalg.qr(B)
    cosines = jnp.linalg.svd(Q_A.T @ Q_B, compute_uv=False)  # descending
    return jnp.arccos(jnp.clip(cosines, -1.0, 1.0))  # ascending; the clip only absorbs rounding


def _mean_loss(params, key, X, noise, activation):
    keys = jax.random.split(key, X.shape[0])
    return jnp.mean(jax.vmap(lambda k, x: _loss(params, k, x, noise, activation))(keys, X))


@cached  # the tests' runs are stored when the book is built (cookbook/_memo.py)
def fit(params, key, X, *, steps, learning_rate=1e-2, noise=0.0, activation="tanh"):
    """Full-batch Adam on the mean ``loss`` over the rows of ``X`` (N, D), fresh noise each step.

    Returns the trained parameters and the mean loss before each step, shape (steps,).
    """
    X = _checks.float_array(X, "X", ndim=2, what=" (N, D)")
    if X.shape[0] == 0:
        raise ValueError(f"X must hold at least one example, got shape {tuple(X.shape)}")
    # A row's shape and dtype are checked on a NumPy stand-in: indexing X eagerly compiles a slice.
    _check(params, np.zeros(X.shape[1:], X.dtype), activation, name="X[0]")
    steps = _checks.size(steps, "steps")
    _checks.positive(learning_rate, "learning_rate")
    _checks.positive(noise, "noise", allow_zero=True)
    return _train(params, key, X, steps, learning_rate, noise, activation)


@functools.partial(jax.jit, static_argnums=(3, 6))
def _train(params, key, X, steps, learning_rate, noise, activation):
    b1, b2, tiny = 0.9, 0.999, 1e-8
    zeros = jax.tree.map(jnp.zeros_like, params)

    def step(carry, inputs):
        params, m, v = carry
        t, k = inputs
        value, grads = jax.value_and_grad(_mean_loss)(params, k, X, noise, activation)
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
        scale = learning_rate * jnp.sqrt(1 - b2**t) / (1 - b1**t)
        params = jax.tree.map(lambda p, m, v: p - scale * m / (jnp.sqrt(v) + tiny), params, m, v)
        return (params, m, v), value

    inputs = (jnp.arange(1, steps + 1, dtype=jnp.float32), jax.random.split(key, steps))
    (params, _, _), values = jax.lax.scan(step, (params, zeros, zeros), inputs)
    return params, values
