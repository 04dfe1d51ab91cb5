r"""Weight and spectral normalisation
=================================

Normalise the weights instead of the activations: weight normalisation splits each weight vector
into a length and a direction to speed up training, and spectral normalisation divides a weight
matrix by its largest singular value to bound how much a layer can stretch its input, the usual
way to keep a GAN discriminator smooth.

Equation
--------

.. math::

   W_{:j} = g_j \, \frac{v_{:j}}{\lVert v_{:j} \rVert}

   q \leftarrow \frac{W u}{\lVert W u \rVert}, \qquad
   u \leftarrow \frac{W^\top q}{\lVert W^\top q \rVert}, \qquad
   \sigma = q^\top W u, \qquad
   \bar{W} = \frac{W}{\sigma}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`W`
     - weight matrix of a layer :math:`x \mapsto x W` (inputs on the rows, outputs on the columns)
     - ``W``, the return value of ``weight_norm``
     - ``(D_in, D_out)``
   * - :math:`j`
     - index of an output unit (a column of :math:`W`)
     - the last axis
     - scalar
   * - :math:`v_{:j}`
     - unconstrained direction parameter of output :math:`j`
     - ``v``
     - ``(D_in, D_out)``
   * - :math:`g_j`
     - length (gain) of column :math:`j`
     - ``g``
     - ``(D_out,)``
   * - :math:`u`
     - right singular vector estimate, carried from call to call
     - ``u``
     - ``(D_out,)``
   * - :math:`q`
     - left singular vector estimate
     - ``q``
     - ``(D_in,)``
   * - :math:`\sigma`
     - estimate of the largest singular value (spectral norm) of :math:`W`
     - ``sigma``
     - ``()``
   * - :math:`\bar{W}`
     - spectrally normalised weights, largest singular value about 1
     - ``W_bar``
     - ``(D_in, D_out)``

Explanation
-----------

**Weight normalisation.** :footcite:t:`salimans2016weight` reparameterise each column of a weight
matrix (the weights into one output unit) as a length :math:`g_j` times a unit direction
:math:`v_{:j} / \lVert v_{:j} \rVert`, and train :math:`g` and :math:`v` instead of :math:`W`. The
function the network computes is unchanged; only the geometry of gradient descent changes. By the
chain rule, the gradient with respect to :math:`v_{:j}` is the gradient with respect to
:math:`W_{:j}`, scaled by :math:`g_j / \lVert v_{:j} \rVert` and with its component along
:math:`v_{:j}` removed. It is therefore orthogonal to :math:`v_{:j}`, so a plain gradient step can only
lengthen :math:`v_{:j}` (by Pythagoras), which in turn shrinks later steps: the
parameterisation tunes its own effective learning rate. Unlike :doc:`batch_norm`, it adds no
dependence between examples and no noise, costs almost nothing, and suits recurrent networks,
reinforcement learning and generative models where batch statistics are a nuisance. When the
inputs of a linear unit are whitened, batch-normalising its output amounts to weight
normalisation; the paper pairs it with a data-dependent initialisation of :math:`g` and the bias so that the first
activations are standardised :footcite:`salimans2016weight`.

.. admonition:: Intuition

   Weight normalisation splits each weight vector into a compass and a speedometer: the direction
   :math:`v / \lVert v \rVert`, and the length :math:`g`, learned as separate knobs, so that turning
   one never moves the other. Spectral normalisation is a governor on an engine: whatever the
   weights, the layer may stretch no input by more than a factor of one.

**Spectral normalisation.** The largest singular value :math:`\sigma(W)` is the most the map
:math:`x \mapsto x W` can stretch any input, its Lipschitz constant. Dividing every layer by it
makes each layer 1-Lipschitz, so a network of such layers and 1-Lipschitz activations (ReLU,
leaky ReLU) is 1-Lipschitz as a whole. :footcite:t:`miyato2018spectral` imposed this on GAN
discriminators, whose unbounded gradients otherwise destabilise the generator's training, and it
became a standard tool there. Computing a singular value decomposition every step would be
expensive; power iteration is cheap: alternately multiplying a vector by :math:`W` and
:math:`W^\top` and renormalising converges to the top singular vectors, at a rate set by the ratio
of the second to the first singular value. The trick of the paper is to carry :math:`u` from one
training step to the next: the weights move little per step, so **one** iteration per step keeps
the estimate accurate, and :math:`u` is state, like batch norm's running averages. Here that
state is explicit: ``spectral_init`` draws the first :math:`u` from an explicit key, and
``spectral_norm`` returns the updated :math:`u` for the caller to pass back next time. The figure
shows the estimate converging over calls, one iteration each.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.normalization.weight_norm import spectral_init, spectral_norm
   k_w, k_u = jax.random.split(jax.random.key(0))
   W = jax.random.normal(k_w, (64, 32))
   exact = float(jnp.linalg.svd(W, compute_uv=False)[0])
   u, estimates = spectral_init(k_u, W), []
   step = jax.jit(spectral_norm)
   for _ in range(40):
       _, u, sigma = step(W, u)
       estimates.append(float(sigma))
   fig, axes = plt.subplots(1, 2, figsize=(8, 3))
   axes[0].plot(range(1, 41), estimates, marker=".", label="power-iteration estimate")
   axes[0].axhline(exact, color="k", ls="--", label="largest singular value (SVD)")
   axes[0].set(xlabel="call (one iteration each, u carried over)", ylabel="sigma")
   axes[0].legend(fontsize=8)
   axes[1].semilogy(range(1, 41), np.abs(np.array(estimates) - exact) / exact + 1e-8)
   axes[1].set(xlabel="call", ylabel="relative error")
   fig.tight_layout()

**Gradients and numerical traps.** Both follow flax: the norms are
:math:`\lVert v \rVert = \sqrt{\sum v^2 + \epsilon}` with :math:`\epsilon = 10^{-12}` so that a zero
vector does not divide by zero, and the singular vectors :math:`q, u` are treated as constants by
the gradient (:func:`jax.lax.stop_gradient`), which makes the gradient of :math:`\sigma` the
rank-one matrix :math:`q u^\top`, the exact derivative of the largest singular value when the
estimate has converged. A convolution kernel of shape ``(kh, kw, D_in, D_out)`` is flattened to a
``(kh kw D_in, D_out)`` matrix first, as in flax; that matrix's norm is not the norm of the
convolution as an operator on images (which can be several times larger), so a spectrally
normalised convolution is only approximately 1-Lipschitz. Norms are computed in float32 for low-precision weights.

Inductive bias
--------------

Weight normalisation assumes nothing about the data: it is a change of coordinates that makes the
length of each weight vector a parameter of its own, on the bet that length and direction are
best learned separately. Spectral normalisation is a real constraint: it assumes the function to
be learned is smooth, changing by at most a fixed factor of any change of its input, and makes
sharper functions impossible to represent (the network can compensate only with a learned output
scale). That is the right prior for a critic or discriminator, whose gradients guide another
network, and for models that must be robust to small perturbations of their input.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.normalization.weight_norm import weight_norm, spectral_init, spectral_norm
>>> v = jnp.array([[3.0, 1.0], [4.0, 0.0]])
>>> weight_norm(v, jnp.array([2.0, 5.0])).round(3)  # columns of lengths 2 and 5, directions of v
Array([[1.2, 5. ],
       [1.6, 0. ]], dtype=float32)
>>> W = jnp.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # singular values 3 and 1
>>> u = spectral_init(jax.random.key(0), W)
>>> W_bar, u, sigma = spectral_norm(W, u, n_steps=20)
>>> round(float(sigma), 4), W_bar.round(3)
(3.0, Array([[1.   , 0.   ],
       [0.   , 0.333],
       [0.   , 0.   ]], dtype=float32))
"""

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"weight_norm": (), "spectral_init": (), "spectral_norm": ("n_steps",)}


def _l2_normalize(x, axis, eps):
    """``x / sqrt(sum(x ** 2) + eps)`` over ``axis``: finite for a zero vector."""
    return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True) + eps)


def weight_norm(v, g, eps=1e-12):
    """Weights ``g * v / ||v||``, each column (last axis: an output unit) normalised on its own.

    ``v`` has shape (..., D_out), e.g. a dense kernel (D_in, D_out) or a convolution kernel
    (kh, kw, D_in, D_out); the norm is over every axis but the last. ``g`` has shape (D_out,).
    """
    v = _checks.float_array(v, "v", min_ndim=2, what=" (..., D_in, D_out)")
    g = _checks.float_array(g, "g")
    _checks.positive(eps, "eps", allow_zero=True)
    if g.shape != (v.shape[-1],):
        raise ValueError(f"g must have shape ({v.shape[-1]},), one gain per output of v {v.shape}, "
                         f"got shape {g.shape}")
    if isinstance(eps, jax.core.Tracer):
        return _weight_norm_traced(v, g, eps)
    return _weight_norm_jit(v, g, float(eps))


# Each public function checks its input in Python, then runs one compiled core, so that a repeated
# call with the same shapes (the examples', the tests', the jit and bad-input checks') reuses one
# program instead of compiling each small operation alone. A number eps is a constant of the core's
# program, so the core takes the function's array inputs as they come (and a jax.jit around the
# function compiles nothing more); a traced eps runs in a second core that traces it.
def _weight_norm(v, g, eps):
    v32 = v.astype(jnp.promote_types(v.dtype, jnp.float32))
    direction = _l2_normalize(v32, axis=tuple(range(v.ndim - 1)), eps=eps)  # unit columns
    return (direction * g.reshape((1,) * (v.ndim - 1) + g.shape)).astype(v.dtype)


_weight_norm_jit = jax.jit(_weight_norm, static_argnums=2)
_weight_norm_traced = jax.jit(_weight_norm)


def _as_matrix(W):
    return W.reshape(-1, W.shape[-1])  # (D_in, D_out): a convolution kernel's leading axes flattened


def spectral_init(key, W):
    """A random unit vector ``u`` of shape (D_out,) to start the power iteration of ``W``."""
    W = _checks.float_array(W, "W", min_ndim=2, what=" (..., D_in, D_out)")
    return _spectral_init(key, W)


@jax.jit
def _spectral_init(key, W):  # W is passed only for its shape
    u = jax.random.normal(key, (W.shape[-1],), jnp.float32)
    return u / jnp.linalg.norm(u)


def spectral_norm(W, u, *, n_steps=1, eps=1e-12):
    """Divide ``W`` by a power-iteration estimate of its largest singular value.

    Runs ``n_steps`` iterations from the carried vector ``u`` (shape (D_out,)); returns
    ``(W_bar, u, sigma)``: the normalised weights in the dtype of ``W``, the updated ``u`` to pass
    to the next call, and the estimate ``sigma``. The singular vectors get no gradient.
    """
    W = _checks.float_array(W, "W", min_ndim=2, what=" (..., D_in, D_out)")
    u = _checks.float_array(u, "u")
    _checks.positive(eps, "eps", allow_zero=True)
    if u.shape != (W.shape[-1],):
        raise ValueError(f"u must have shape ({W.shape[-1]},), the output size of W {W.shape}, got shape {u.shape}")
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
    if isinstance(eps, jax.core.Tracer):
        return _spectral_norm_traced(W, u, eps, n_steps=n_steps)
    return _spectral_norm_jit(W, u, float(eps), n_steps=n_steps)


def _spectral_norm(W, u, eps, *, n_steps):
    M = _as_matrix(W)
    M = M.astype(jnp.promote_types(M.dtype, jnp.float32))
    M_const = jax.lax.stop_gradient(M)

    def iteration(_, qu):
        q, u = qu
        q = _l2_normalize(M_const @ u, axis=0, eps=eps)  # (D_in,)
        u = _l2_normalize(M_const.T @ q, axis=0, eps=eps)  # (D_out,)
        return q, u

    q0 = jnp.zeros((M.shape[0],), M.dtype)
    q, u = jax.lax.fori_loop(0, n_steps, iteration, (q0, jax.lax.stop_gradient(u.astype(M.dtype))))
    sigma = q @ M @ u  # gradient flows through M only: d sigma / d M = q u^T
    W_bar = M / jnp.where(sigma != 0, sigma, 1.0)
    return W_bar.reshape(W.shape).astype(W.dtype), u, sigma


_spectral_norm_jit = jax.jit(_spectral_norm, static_argnums=2, static_argnames="n_steps")
_spectral_norm_traced = jax.jit(_spectral_norm, static_argnames="n_steps")
