r"""VQ-VAE: vector-quantised autoencoders
=====================================

An autoencoder whose code is a short list of entries from a learned codebook, so that an example
becomes a few discrete tokens: the model to reach for when a later model (a transformer, a
PixelCNN) should work on discrete symbols instead of pixels.

Equation
--------

.. math::

   \begin{aligned}
   z_e &= f_\phi(x), \qquad k = \operatorname*{arg\,min}_{j} \|z_e - e_j\|_2, \qquad z_q = e_k, \\
   \ell &= \left\|x - g_\theta\!\left(z_e + \operatorname{sg}[z_q - z_e]\right)\right\|_2^2
     + \beta\, \left\|z_e - \operatorname{sg}[z_q]\right\|_2^2, \\
   N_j &\leftarrow \gamma N_j + (1 - \gamma)\, n_j, \quad
   m_j \leftarrow \gamma m_j + (1 - \gamma) \sum_{i:\, k_i = j} z_{e,i}, \quad
   e_j = m_j / N_j
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
     - one example
     - ``x``
     - ``(D,)``
   * - :math:`f_\phi`, :math:`g_\theta`
     - encoder and decoder, each with one ``tanh`` hidden layer
     - ``encode``, ``decode``
     - ``(D,)`` to ``(G, Z)``, and back
   * - :math:`\phi`, :math:`\theta`
     - their weights
     - ``params`` (all but the codebook)
     - dict of arrays
   * - :math:`z_e`
     - the encoder's output: :math:`G` vectors, each quantised on its own
     - ``z_e``
     - ``(G, Z)``
   * - :math:`e_j`
     - codebook entry :math:`j`
     - row :math:`j` of ``codebook``
     - ``(Z,)``
   * - :math:`k`
     - index of the nearest entry (one per vector of :math:`z_e`)
     - ``indices``
     - ``(G,)``
   * - :math:`z_q`
     - the quantised code
     - ``z_q``
     - ``(G, Z)``
   * - :math:`\operatorname{sg}`
     - stop-gradient: the identity forward, zero gradient backward
     - ``jax.lax.stop_gradient``
     - any
   * - :math:`\beta`
     - weight of the commitment term
     - ``beta``
     - scalar
   * - :math:`\ell`
     - the loss of one example
     - ``loss``
     - scalar
   * - :math:`\gamma`
     - decay of the moving averages
     - ``decay``
     - scalar
   * - :math:`N_j`, :math:`n_j`
     - moving-average and batch count of vectors assigned to entry :math:`j`
     - ``state.counts``, ``n``
     - ``(M,)``
   * - :math:`m_j`
     - moving-average sum of the vectors assigned to entry :math:`j`
     - ``state.sums``
     - ``(M, Z)``
   * - :math:`i`, :math:`z_{e,i}`
     - a vector of the batch and its value
     - rows of ``z_e`` in ``ema_update``
     - ``(Z,)``

Explanation
-----------

:footcite:t:`oord2017neural` replace the Gaussian code of :doc:`vae` with a discrete one: each
encoder output vector is snapped to its nearest entry of a codebook of :math:`M` vectors, and the
decoder sees only the entries. An example is then :math:`G` integers, each one of :math:`M`. With a
uniform prior over the codes the KL term of the ELBO is a constant, :math:`G \log M`, so the loss is
a reconstruction term plus two terms that keep encoder and codebook together.

The nearest-neighbour lookup has no gradient. The *straight-through estimator*
:footcite:p:`bengio2013estimating` pretends it is the identity on the backward pass: the decoder's
input is written :math:`z_e + \operatorname{sg}[z_q - z_e]`, which equals :math:`z_q` forward and
differentiates as :math:`z_e`, so the decoder's gradient flows to the encoder unchanged. Nothing
then moves the codebook towards the encoder outputs, and nothing stops the encoder outputs from
growing away from it. The *commitment* term pulls :math:`z_e` towards its entry (its
:math:`\operatorname{sg}` keeps it from moving the entry). The entries are moved by moving averages
(the third line): each becomes the running mean of the vectors assigned to it, one k-means step per
batch, smoothed over time; with :math:`\gamma = 0` it is exactly Lloyd's update for every entry in
use, as the tests check.
The original paper also gives a codebook loss :math:`\|\operatorname{sg}[z_e] - e_k\|^2` trained by
gradient descent; the moving averages, from the same paper's appendix, are what most code uses.

.. admonition:: Intuition

   The codebook is a box of crayons. The encoder says what colour each part of the picture should be;
   the quantiser hands over the nearest crayon; the decoder draws with it. The moving averages remix
   each crayon towards the average colour it was asked for, and the commitment term asks the
   encoder to stop requesting colours far from any crayon.

*Numerical traps.* An entry that is never chosen has :math:`n_j = 0`; for :math:`\gamma > 0` its
count and sum decay together, so the entry stays where it is, but :math:`N_j` tends to zero. ``ema_update`` smooths the
counts (Laplace smoothing with ``eps``) so that the division stays finite. Such *dead* codes waste
the codebook; ``perplexity`` measures how many entries are in use (:math:`\exp` of the entropy of
their frequencies: :math:`M` when all are used equally, 1 when one is used).

Inductive bias
--------------

The model assumes the data are well described by a few discrete choices, each from a small
vocabulary, and that a fixed number of tokens per example suffices. It cannot represent a smooth
continuum finer than its codebook, and its code has no notion of nearness between tokens; in
return, the tokens can be modelled by any sequence model with an exact likelihood.

Example
-------

Two codes of 2 numbers, quantised against a codebook of 3 entries; the output equals the chosen
entries, and the gradient passes straight through:

>>> import jax, jax.numpy as jnp
>>> from cookbook.generative.vq_vae import quantise, ema_init, ema_update, perplexity
>>> codebook = jnp.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]])
>>> z_e = jnp.array([[0.9, 1.2], [-0.2, 0.1]])
>>> z_q, indices = quantise(codebook, z_e)
>>> indices.tolist(), z_q.tolist()
([1, 0], [[1.0, 1.0], [0.0, 0.0]])
>>> jax.grad(lambda z: jnp.sum(quantise(codebook, z)[0] @ jnp.array([2.0, 3.0])))(z_e).tolist()
[[2.0, 3.0], [2.0, 3.0]]

With ``decay=0`` a moving-average update moves each entry to the mean of its vectors:

>>> state = ema_init(codebook)
>>> new, state = ema_update(state, jnp.array([[0.8, 1.0], [1.2, 1.4], [0.2, 0.0], [-1.0, 2.4]]),
...                         jnp.array([1, 1, 0, 2]), decay=0.0)
>>> print(jnp.round(new, 3))
[[ 0.2  0. ]
 [ 1.   1.2]
 [-1.   2.4]]
>>> round(float(perplexity(jnp.array([0, 1, 2, 0, 1, 2]), num_codes=3)), 3)  # all three in use
3.0

Implementation notes
--------------------

``fit`` trains encoder and decoder with Adam :footcite:p:`kingma2015adam` on minibatches and moves
the codebook with ``ema_update``, all inside one :func:`jax.lax.scan`; the codebook starts at
encoder outputs of the first minibatch, a common cure for dead codes. On scikit-learn's digits
scaled to [0, 1] (1500 to train on, 297 held out), 4 codes of 2 numbers from a codebook of 16
entries, with 16 hidden units and trained for 300 steps of 64 images, reduce the held-out squared
error per image from about 20 (untrained, above 15) to about 2.0 (below 2.6, and under 0.55 times
the 4.8 of the average digit), with a perplexity of about 15.6 of the 16 entries (above 12); the
tests assert these figures. Write for one
example and batch with :func:`jax.vmap`; ``ema_update`` takes a batch, since the batch is the point.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook._memo import cached

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"quantise": (), "ema_update": (), "perplexity": ("num_codes",)}
#: ``perplexity`` counts indices of any number: their last axis is not a size to check.
FREE_LENGTH = {"perplexity": ("indices",)}

_SHAPES = {"W1": ("D", "H"), "b1": ("H",), "W2": ("H", "GZ"), "b2": ("GZ",),
           "W3": ("GZ", "H"), "b3": ("H",), "W4": ("H", "D"), "b4": ("D",), "codebook": ("M", "Z")}


class EMAState(NamedTuple):
    """Moving averages of the codebook: counts (M,) and sums (M, Z) of the vectors assigned."""
    counts: jax.Array
    sums: jax.Array


def init(key, *, D, H, G, Z, M, dtype=jnp.float32):
    """Weights of an encoder and a decoder (one ``tanh`` layer of ``H`` units each) between ``D``
    inputs and ``G`` codes of ``Z`` numbers, and a Gaussian codebook of ``M`` entries."""
    s = {"D": _checks.size(D, "D"), "H": _checks.size(H, "H"), "G": _checks.size(G, "G"),
         "Z": _checks.size(Z, "Z"), "M": _checks.size(M, "M")}
    s["GZ"] = s["G"] * s["Z"]
    keys = dict(zip(_SHAPES, jax.random.split(key, len(_SHAPES))))
    params = {}
    for name, shape in _SHAPES.items():
        shape = tuple(s[d] for d in shape)
        if name.startswith("b"):
            params[name] = jnp.zeros(shape, dtype)
        else:
            fan_in = 1 if name == "codebook" else shape[0]
            params[name] = jax.random.normal(keys[name], shape, dtype) / jnp.sqrt(fan_in).astype(dtype)
    return params


def _codebook(codebook, name="codebook"):
    codebook = _checks.float_array(codebook, name, ndim=2, what=" (M, Z)")
    return _checks.check_no_nan(codebook, name)


def quantise(codebook, z_e):
    """The nearest entries of ``codebook`` (M, Z) to each row of ``z_e`` (..., Z), passed straight
    through (their gradient goes to ``z_e`` unchanged, none to the codebook), and their indices (...)."""
    codebook = _codebook(codebook)
    z_e = _checks.float_array(z_e, "z_e", min_ndim=1)
    _checks.same_shape(z_e, "z_e", z_e.shape[:-1] + codebook.shape[1:], expected_from="(..., Z) with Z of codebook")
    _checks.check_no_nan(z_e, "z_e")  # a NaN would pick entry 0 in silence
    return _quantise_jit(codebook, z_e)


def _quantise(codebook, z_e):
    codebook = jax.lax.stop_gradient(codebook)
    entries = codebook.reshape((1,) * (z_e.ndim - 1) + codebook.shape)  # (1..., M, Z)
    distances = jnp.sum((z_e[..., None, :] - entries) ** 2, axis=-1)  # (..., M), squared
    indices = jnp.argmin(distances, axis=-1)  # (...,)
    z_q = codebook[indices]  # (..., Z)
    return z_e + jax.lax.stop_gradient(z_q - z_e), indices


_quantise_jit = jax.jit(_quantise)  # one compiled program per shape, also when called eagerly


def _sizes(params):
    """``(D, G, Z, M)`` after checking that ``params`` has the shapes that ``init`` gives it."""
    if not isinstance(params, dict) or set(params) != set(_SHAPES):
        raise TypeError(f"params must be the dict that init returns, with keys {sorted(_SHAPES)}")
    W1 = _checks.float_array(params["W1"], "params['W1']", ndim=2, what=" (D, H)")
    W2 = _checks.float_array(params["W2"], "params['W2']", ndim=2, what=" (H, G * Z)")
    codebook = _checks.float_array(params["codebook"], "params['codebook']", ndim=2, what=" (M, Z)")
    M, Z = codebook.shape
    if W2.shape[1] % Z:
        raise ValueError(f"params['W2'] must have G * Z columns with Z = {Z} of the codebook, got shape {W2.shape}")
    s = {"D": W1.shape[0], "H": W1.shape[1], "GZ": W2.shape[1], "Z": Z, "M": M}
    for name, shape in _SHAPES.items():
        where = f"params['{name}']"
        _checks.same_shape(_checks.float_array(params[name], where), where, tuple(s[d] for d in shape),
                           expected_from="init(key, D=D, H=H, G=G, Z=Z, M=M)")
    return s["D"], s["GZ"] // Z, Z, M


def encode(params, x):
    """The encoder output ``z_e`` (G, Z) of one example ``x`` (D,)."""
    Z = params["codebook"].shape[1]
    h = jnp.tanh(x @ params["W1"] + params["b1"])  # (H,)
    return (h @ params["W2"] + params["b2"]).reshape(-1, Z)  # (G, Z)


def decode(params, z_q):
    """The reconstruction (D,) from a code ``z_q`` (G, Z)."""
    h = jnp.tanh(z_q.reshape(-1) @ params["W3"] + params["b3"])  # (H,)
    return h @ params["W4"] + params["b4"]


def loss(params, x, *, beta=0.25):
    """Squared reconstruction error plus ``beta`` times the commitment term, for one example ``x``
    (D,); no gradient reaches ``params['codebook']`` (it moves by ``ema_update``)."""
    D, _, _, _ = _sizes(params)
    x = _checks.float_array(x, "x", ndim=1, what=" (D,)")
    _checks.same_shape(x, "x", (D,), expected_from="D of params")
    _checks.positive(beta, "beta", allow_zero=True)
    return _loss(params, x, beta)


@jax.jit
def _loss(params, x, beta):
    return _loss_and_code(params, x, beta)[0]


def _loss_and_code(params, x, beta):
    z_e = encode(params, x)
    z_q, indices = _quantise(params["codebook"], z_e)  # shapes checked by loss and fit
    commitment = jnp.sum((z_e - jax.lax.stop_gradient(z_q)) ** 2)
    return jnp.sum((decode(params, z_q) - x) ** 2) + beta * commitment, (z_e, indices)


def ema_init(codebook):
    """Moving averages that reproduce ``codebook`` (M, Z): counts of one, sums equal to the entries."""
    codebook = _codebook(codebook)
    return EMAState(jnp.ones(codebook.shape[:1], codebook.dtype), codebook)


def ema_update(state, z_e, indices, *, decay=0.99, eps=1e-5):
    """One moving-average step from a batch of vectors ``z_e`` (N, Z) assigned to entries
    ``indices`` (N,); returns the new codebook (M, Z) and state. Counts are Laplace-smoothed by ``eps``."""
    if not isinstance(state, EMAState):
        raise TypeError(f"state must be the EMAState that ema_init returns, got {type(state).__name__}")
    sums = _checks.float_array(state.sums, "state.sums", ndim=2, what=" (M, Z)")
    M, Z = sums.shape
    counts = _checks.same_shape(_checks.float_array(state.counts, "state.counts"), "state.counts", (M,),
                                expected_from="M of state.sums")
    z_e = _checks.float_array(z_e, "z_e", ndim=2, what=" (N, Z)")
    _checks.same_shape(z_e, "z_e", (z_e.shape[0], Z), expected_from="Z of state.sums")
    indices = _checks.int_array(indices, "indices", ndim=1, what=" (N,)")
    _checks.same_shape(indices, "indices", z_e.shape[:1], expected_from="one per row of z_e")
    _checks.check_range(indices, "indices", 0, M)
    if isinstance(decay, (int, float)) and not 0 <= decay < 1:
        raise ValueError(f"decay must lie in [0, 1), got {decay}")
    _checks.positive(eps, "eps", allow_zero=True)
    return _ema_update_jit(EMAState(counts, sums), z_e, indices, decay, eps)


def _ema_update(state, z_e, indices, decay, eps):
    counts, sums = state
    M = sums.shape[0]
    one_hot = jax.nn.one_hot(indices, M, dtype=z_e.dtype)  # (N, M)
    n = jnp.sum(one_hot, axis=0)  # (M,)
    counts = decay * counts + (1 - decay) * n
    sums = decay * sums + (1 - decay) * one_hot.T @ z_e  # (M, Z)
    total = jnp.sum(counts)
    smoothed = (counts + eps) / (total + M * eps) * total  # never zero, same total
    return sums / smoothed[:, None], EMAState(counts, sums)


_ema_update_jit = jax.jit(_ema_update)


def perplexity(indices, *, num_codes):
    """``exp`` of the entropy of the frequencies of ``indices`` (any shape) among ``num_codes`` entries:
    the number of entries in use, counted as if they were used equally."""
    num_codes = _checks.size(num_codes, "num_codes")
    indices = _checks.int_array(indices, "indices", min_ndim=1)
    _checks.check_range(indices, "indices", 0, num_codes)
    return _perplexity(indices, num_codes)


@functools.partial(jax.jit, static_argnums=1)
def _perplexity(indices, num_codes):
    p = jnp.mean(jax.nn.one_hot(indices.reshape(-1), num_codes), axis=0)  # (M,)
    return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))


@cached  # the tests' run is stored when the book is built (cookbook/_memo.py)
def fit(params, key, X, *, steps, batch, learning_rate=3e-3, beta=0.25, decay=0.9):
    """Adam on the mean ``loss`` of random minibatches of ``batch`` rows of ``X`` (N, D) for encoder
    and decoder, ``ema_update`` for the codebook, which starts at encoder outputs of the first batch.

    Returns the trained parameters and the minibatch loss before each step, shape (steps,).
    """
    D, _, _, _ = _sizes(params)
    X = _checks.float_array(X, "X", ndim=2, what=" (N, D)")
    _checks.same_shape(X, "X", (X.shape[0], D), expected_from="D of params")
    steps, batch = _checks.size(steps, "steps"), _checks.size(batch, "batch")
    _checks.positive(learning_rate, "learning_rate")
    return _train(params, key, X, steps, batch, learning_rate, beta, decay)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _train(params, key, X, steps, batch, learning_rate, beta, decay):
    b1, b2, tiny = 0.9, 0.999, 1e-8
    M, Z = params["codebook"].shape
    k_first, k_steps = jax.random.split(key)
    first = X[jax.random.randint(k_first, (batch,), 0, X.shape[0])]
    starts = jax.vmap(encode, in_axes=(None, 0))(params, first).reshape(-1, Z)  # (batch * G, Z)
    params = {**params, "codebook": starts[jnp.arange(M) % starts.shape[0]]}
    zeros = jax.tree.map(jnp.zeros_like, params)

    def mean_loss(params, Xb):
        values, (z_e, indices) = jax.vmap(_loss_and_code, in_axes=(None, 0, None))(params, Xb, beta)
        return jnp.mean(values), (z_e.reshape(-1, Z), indices.reshape(-1))

    def step(carry, inputs):
        params, m, v, state = carry
        t, k = inputs
        rows = jax.random.randint(k, (batch,), 0, X.shape[0])
        (value, (z_e, indices)), grads = jax.value_and_grad(mean_loss, has_aux=True)(params, X[rows])
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
        scale = learning_rate * jnp.sqrt(1 - b2**t) / (1 - b1**t)
        params = jax.tree.map(lambda p, m, v: p - scale * m / (jnp.sqrt(v) + tiny), params, m, v)
        codebook, state = _ema_update(state, z_e, indices, decay, 1e-5)  # ema_update's default eps
        return ({**params, "codebook": codebook}, m, v, state), value

    inputs = (jnp.arange(1, steps + 1, dtype=jnp.float32), jax.random.split(k_steps, steps))
    carry = (params, zeros, zeros, ema_init(params["codebook"]))
    (params, _, _, _), values = jax.lax.scan(step, carry, inputs)
    return params, values
