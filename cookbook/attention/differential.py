r"""Differential attention
======================

Compute two attention maps and subtract one, scaled, from the other, so that the attention both maps
give to irrelevant context cancels out, as a differential amplifier cancels noise common to its two
inputs: the attention of the Differential Transformer.

Equation
--------

.. math::

   \operatorname{DiffAttn}(X) = \Big( \operatorname{softmax}\!\big(\tfrac{Q_1 K_1^\top}{\sqrt{d}}\big)
   - \lambda\, \operatorname{softmax}\!\big(\tfrac{Q_2 K_2^\top}{\sqrt{d}}\big) \Big) V

   \lambda = e^{\lambda_{q_1} \cdot \lambda_{k_1}} - e^{\lambda_{q_2} \cdot \lambda_{k_2}}
   + \lambda_\text{init}, \qquad
   \lambda_\text{init} = 0.8 - 0.6\, e^{-0.3 (l - 1)}

   \text{head}_i = (1 - \lambda_\text{init}) \operatorname{RMSNorm}\big(\operatorname{DiffAttn}_i(X)\big),
   \qquad Y = [\text{head}_1; \dots; \text{head}_H]\, W^O

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`X`, :math:`Y`
     - the input and output sequences
     - ``x``; the result of ``apply``
     - ``(T, d_model)``
   * - :math:`Q_1, K_1`, :math:`Q_2, K_2`
     - the two halves of a head's queries and keys
     - ``q1``, ``k1``, ``q2``, ``k2``
     - ``(T, d)``, ``(S, d)``
   * - :math:`V`
     - the values, twice as wide as a query half
     - ``v``
     - ``(S, 2d)`` in the layer
   * - :math:`d`
     - the size of a query or key half
     - ``d``
     - integer
   * - :math:`\lambda`
     - how much of the second map is subtracted
     - ``lam``
     - scalar
   * - :math:`\lambda_{q_1}, \lambda_{k_1}, \lambda_{q_2}, \lambda_{k_2}`
     - learned vectors that parametrise :math:`\lambda`
     - ``params["lambda_q1"]`` and its three siblings
     - ``(d,)``
   * - :math:`\lambda_\text{init}`, :math:`l`
     - the starting value of :math:`\lambda`; the layer's depth, from 1
     - ``lambda_init``; ``layer``
     - scalar; integer
   * - :math:`H`, :math:`i`, :math:`W^O`
     - the number of heads; a head's index; the output projection
     - ``num_heads``; the row of ``heads``; ``params["W_o"]``
     - integers; ``(2 H d, d_model)``
   * - RMSNorm
     - root-mean-square normalisation of each head's output (see :doc:`../normalization/rms_norm`)
     - inside ``apply``
     - ``(T, 2d)`` per head

Explanation
-----------

Softmax attention cannot give exactly zero weight to anything, and in practice a trained transformer
spreads a noticeable share of each row over tokens that do not matter. In long contexts those many
small weights add up and drown the few that do matter. Differential attention
:footcite:`ye2025differential` splits each head's queries and keys into two halves, computes two
softmax maps, and takes their difference. Whatever both maps assign to the irrelevant tokens cancels;
what only the first map singles out survives. The weights of a row then sum to :math:`1 - \lambda`
instead of 1, and may be negative.

:math:`\lambda` is learned, through four vectors whose dot products enter exponentials (which keeps
its learning dynamics in step with the rest of the weights), and starts at :math:`\lambda_\text{init}`,
which grows with depth from 0.2 in the first layer towards 0.8. Each head's output is normalised on
its own (the difference of two maps has a less regular scale than one map) and multiplied by
:math:`1 - \lambda_\text{init}` so that, at the start, the layer's output has the scale of ordinary
attention. At :math:`\lambda = 0` the layer is ordinary attention on the first halves; with two equal
maps and :math:`\lambda = 1` it outputs zero; the tests check both.

.. admonition:: Intuition

   Noise-cancelling headphones listen with two microphones, one for the music and the noise, one for
   the noise alone, and play the difference. The second attention map learns to be the "noise
   microphone": it attends wherever attention is spent on nothing in particular, and subtracting it
   leaves what the first map found that the second did not.

Inductive bias
--------------

Differential attention assumes that the attention spent on irrelevant context is shared by two maps
that are otherwise free, so that it can be estimated and removed; it favours sparse, sharp retrieval
over diffuse averaging. It costs as many parameters as multi-head attention with half as many heads
of twice the width, and two score matrices per head.

Example
-------

At :math:`\lambda = 0` the difference is ordinary attention on the first halves; the weights of a
row sum to :math:`1 - \lambda`:

>>> import jax, jax.numpy as jnp
>>> from cookbook.attention.differential import differential_attention, differential_weights, lambda_init
>>> from cookbook.attention.scaled_dot_product import scaled_dot_product_attention
>>> q1, k1, q2, k2, v = (jax.random.normal(k, (6, 4)) for k in jax.random.split(jax.random.key(0), 5))
>>> y = differential_attention(q1, k1, q2, k2, v, 0.0)
>>> bool(jnp.allclose(y, scaled_dot_product_attention(q1, k1, v), atol=1e-6))
True
>>> differential_weights(q1, k1, q2, k2, 0.3).sum(axis=-1).round(4)
Array([0.7, 0.7, 0.7, 0.7, 0.7, 0.7], dtype=float32)
>>> [round(lambda_init(layer), 3) for layer in (1, 2, 12)]
[0.2, 0.356, 0.778]
>>> from cookbook.attention.differential import apply, init
>>> params = init(jax.random.key(1), d_model=16, num_heads=2, layer=1)
>>> apply(params, jax.random.normal(jax.random.key(2), (5, 16)), causal=True).shape
(5, 16)
"""

import functools
import math

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.attention.scaled_dot_product import attention_weights

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "differential_weights": (),
    "differential_attention": (),
    "init": ("d_model", "num_heads", "layer"),
    "apply": ("causal",),
}


def lambda_init(layer):
    """:math:`0.8 - 0.6 e^{-0.3 (l-1)}` for the layer at depth ``layer`` (from 1)."""
    _checks.size(layer, "layer", minimum=1)
    return 0.8 - 0.6 * math.exp(-0.3 * (layer - 1))


def _check_maps(q1, k1, q2, k2, lam):
    q1 = _checks.float_array(q1, "q1", ndim=2, what=" (T, d)")
    k1 = _checks.float_array(k1, "k1", ndim=2, what=" (S, d)")
    _checks.same_shape(k1, "k1", (k1.shape[0], q1.shape[1]), expected_from="d from q1")
    q2 = _checks.same_shape(_checks.float_array(q2, "q2"), "q2", q1.shape, expected_from="like q1")
    k2 = _checks.same_shape(_checks.float_array(k2, "k2"), "k2", k1.shape, expected_from="like k1")
    lam = _checks.float_array(lam, "lam", ndim=0, what=" (a scalar)")
    return q1, k1, q2, k2, lam


def differential_weights(q1, k1, q2, k2, lam, mask=None):
    """The (T, S) weights ``softmax(q1 k1ᵀ/√d) − lam · softmax(q2 k2ᵀ/√d)``, in float32."""
    return _differential_weights(*_check_maps(q1, k1, q2, k2, lam), mask)


@jax.jit  # one program per set of shapes, where each operation called eagerly compiled its own
def _differential_weights(q1, k1, q2, k2, lam, mask):
    return attention_weights(q1, k1, mask) - lam * attention_weights(q2, k2, mask)


def differential_attention(q1, k1, q2, k2, v, lam, mask=None):
    """One differential head: the difference of the two maps applied to v (S, Dv); returns (T, Dv)."""
    q1, k1, q2, k2, lam = _check_maps(q1, k1, q2, k2, lam)
    v = _checks.float_array(v, "v", ndim=2, what=" (S, Dv)")
    _checks.same_shape(v, "v", (k1.shape[0], v.shape[-1]), expected_from="S from k1")
    return _differential_attention(q1, k1, q2, k2, v, lam, mask)


@jax.jit
def _differential_attention(q1, k1, q2, k2, v, lam, mask):
    weights = _differential_weights(q1, k1, q2, k2, lam, mask)
    return (weights @ v.astype(jnp.float32)).astype(v.dtype)


def init(key, d_model, num_heads, layer):
    """A layer of ``num_heads`` heads whose query and key halves have ``d = d_model // (2 num_heads)``."""
    _checks.size(d_model, "d_model", minimum=2)
    _checks.size(num_heads, "num_heads", minimum=1)
    lambda_init(layer)
    if d_model % (2 * num_heads):
        raise ValueError(f"d_model must be a multiple of 2 * num_heads = {2 * num_heads}, got {d_model}")
    d = d_model // (2 * num_heads)
    k_q, k_k, k_v, k_o, k_lam = jax.random.split(key, 5)
    dense = lambda k, n_in, n_out: jax.random.normal(k, (n_in, n_out)) / math.sqrt(n_in)
    lam_vectors = 0.1 * jax.random.normal(k_lam, (4, d))
    return {
        "W_q": dense(k_q, d_model, d_model), "W_k": dense(k_k, d_model, d_model),
        "W_v": dense(k_v, d_model, d_model), "W_o": dense(k_o, d_model, d_model),
        "lambda_q1": lam_vectors[0], "lambda_k1": lam_vectors[1],
        "lambda_q2": lam_vectors[2], "lambda_k2": lam_vectors[3],
        "lambda_init": jnp.float32(lambda_init(layer)), "rms_gain": jnp.ones(2 * d),
    }


def _check_params(params):
    """(d_model, d, H) of a layer from ``init``, with every weight's shape checked."""
    names = {"W_q", "W_k", "W_v", "W_o", "lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2", "lambda_init", "rms_gain"}
    if not isinstance(params, dict) or set(params) != names:
        raise ValueError(f"params must be the dict of init with keys {sorted(names)}, got "
                         f"{sorted(params) if isinstance(params, dict) else type(params).__name__}")
    for name in sorted(names):
        _checks.float_array(params[name], f'params["{name}"]')
    d_model = params["W_q"].shape[0] if params["W_q"].ndim == 2 else -1
    d = params["lambda_q1"].shape[0] if params["lambda_q1"].ndim == 1 else -1
    if d_model < 1 or d < 1 or d_model % (2 * d):
        raise ValueError(f'params["W_q"] must be (d_model, d_model) and params["lambda_q1"] (d,) with d_model a '
                         f'multiple of 2d, got {params["W_q"].shape} and {params["lambda_q1"].shape}')
    for name in ("W_q", "W_k", "W_v", "W_o"):
        _checks.same_shape(params[name], f'params["{name}"]', (d_model, d_model), expected_from="d_model from W_q")
    for name in ("lambda_k1", "lambda_q2", "lambda_k2"):
        _checks.same_shape(params[name], f'params["{name}"]', (d,), expected_from="d from lambda_q1")
    _checks.same_shape(params["rms_gain"], 'params["rms_gain"]', (2 * d,), expected_from="2d")
    _checks.same_shape(params["lambda_init"], 'params["lambda_init"]', ())
    return d_model, d, d_model // (2 * d)


def apply(params, x, causal=False):
    """The multi-head differential attention layer on ``x`` (T, d_model); returns (T, d_model)."""
    d_model, d, H = _check_params(params)
    x = _checks.float_array(x, "x", ndim=2, what=" (T, d_model)")
    _checks.same_shape(x, "x", (x.shape[0], d_model), expected_from="d_model from params")
    return _apply(params, x, causal, d, H)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _apply(params, x, causal, d, H):
    T, d_model = x.shape
    split = lambda a: a.reshape(T, H, 2, d).transpose(1, 2, 0, 3)  # (H, 2, T, d): the two halves
    q, k = split(x @ params["W_q"]), split(x @ params["W_k"])
    v = (x @ params["W_v"]).reshape(T, H, 2 * d).transpose(1, 0, 2)  # (H, T, 2d)
    lam = (jnp.exp(params["lambda_q1"] @ params["lambda_k1"]) - jnp.exp(params["lambda_q2"] @ params["lambda_k2"])
           + params["lambda_init"])
    mask = jnp.tril(jnp.ones((T, T), bool)) if causal else None
    heads = jax.vmap(lambda q, k, v: _differential_attention(q[0], k[0], q[1], k[1], v, lam, mask))(q, k, v)
    rms = jnp.sqrt(jnp.mean(heads**2, axis=-1, keepdims=True) + 1e-6)
    heads = (1 - params["lambda_init"]) * heads / rms * params["rms_gain"][None, None, :]  # (H, T, 2d)
    return heads.transpose(1, 0, 2).reshape(T, d_model) @ params["W_o"]
