r"""The modern transformer block
============================

The block that today's open language models are built from: the original transformer block with
five changes that each fix a problem met at scale (pre-norm RMSNorm, rotary positions, QK-norm, a
SwiGLU feed-forward layer and no biases), and the reason for each.

Equation
--------

.. math::

   q_t, k_t, v_t = \operatorname{RMS}(x_t)\, W^Q,\ \operatorname{RMS}(x_t)\, W^K,\ \operatorname{RMS}(x_t)\, W^V

   \tilde q_t = \operatorname{RoPE}_t\big(\operatorname{RMS}_q(q_t)\big), \qquad
   \tilde k_s = \operatorname{RoPE}_s\big(\operatorname{RMS}_k(k_s)\big)

   h_t = x_t + \Big(\sum_{s \le t} \operatorname{softmax}_s\big(\tilde q_t \cdot \tilde k_s / \sqrt{d_h}\big)\, v_s\Big) W^O

   y_t = h_t + \big(\operatorname{SiLU}(\operatorname{RMS}(h_t) W^G) \odot \operatorname{RMS}(h_t) W^U\big) W^D,
   \qquad \operatorname{RMS}(x) = g \odot \frac{x}{\sqrt{\operatorname{mean}(x^2) + \epsilon}}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_t`, :math:`h_t`, :math:`y_t`
     - the block's input, the stream after attention, the output, at position :math:`t`
     - rows of ``x``, ``h``, the result
     - ``(T, d_model)``
   * - :math:`W^Q, W^K, W^V`, :math:`W^O`
     - the attention projections (per head); the output projection
     - ``params["W_q"]``, ``params["W_k"]``, ``params["W_v"]``; ``params["W_o"]``
     - ``(d_model, H, d_h)``; ``(H, d_h, d_model)``
   * - :math:`q_t, k_t, v_t`
     - a position's query, key and value, per head
     - ``q``, ``k``, ``v``
     - ``(H, T, d_h)``
   * - :math:`\tilde q_t, \tilde k_s`
     - the normalised and rotated query and key
     - ``q`` and ``k`` after ``rms`` and ``apply_rope``
     - ``(H, T, d_h)``
   * - :math:`\operatorname{RMS}`, :math:`g`, :math:`\epsilon`
     - RMS normalisation (see :doc:`../normalization/rms_norm`); its gain; a small constant
     - ``rms``; ``params["attn_norm"]`` and its siblings; ``EPS``
     - ``(d_model,)`` or ``(d_h,)``
   * - :math:`\operatorname{RMS}_q`, :math:`\operatorname{RMS}_k`
     - QK-norm: RMS normalisation of each head's query and key
     - ``params["q_norm"]``, ``params["k_norm"]``
     - ``(d_h,)``
   * - :math:`\operatorname{RoPE}_t`
     - rotary positions (see :doc:`../attention/rope`)
     - ``apply_rope``
     - like its input
   * - :math:`W^G, W^U, W^D`
     - SwiGLU's gate, up and down projections
     - ``params["W_gate"]``, ``params["W_up"]``, ``params["W_down"]``
     - ``(d_model, d_ff)``, ``(d_model, d_ff)``, ``(d_ff, d_model)``
   * - :math:`\operatorname{SiLU}`
     - :math:`z\,\sigma(z)`
     - ``jax.nn.silu``
     - elementwise
   * - :math:`d_h`, :math:`s`
     - the size of a head; a key position
     - ``head_dim``; the key axis of ``scores``
     - integers

Explanation
-----------

Each change replaces a part of the 2017 block (:doc:`transformer_block`) that caused trouble when
models grew:

- **Pre-norm** (:doc:`transformer_block` explains it): normalise the input of each sub-layer, never
  the residual stream, so that gradients reach the first layers of deep stacks.
- **RMSNorm instead of LayerNorm** :footcite:`zhang2019root`: drop the mean and the bias; as
  accurate and cheaper, with one reduction instead of two.
- **Rotary positions** (:doc:`../attention/rope`): rotate queries and keys so that scores depend only
  on the distance between positions. The tests check that shifting every position by the same
  amount changes nothing.
- **QK-norm** :footcite:`dehghani2023vit22b`: RMS-normalise each head's queries and keys before the
  dot product. Without it, the attention logits can grow without bound as weights grow, the softmax
  collapses onto one token, and training diverges. With it, a query has length
  :math:`\sqrt{d_h}` times its gain whatever :math:`W^Q` is, so scaling :math:`W^Q` or :math:`W^K`
  changes nothing (tested).
- **SwiGLU** :footcite:`shazeer2020glu`: the feed-forward layer multiplies a SiLU-activated
  projection by a second, linear one. The gate lets each hidden unit be switched by the input; at the
  same parameter count (a hidden size of about :math:`\tfrac{8}{3} d` instead of :math:`4d`) it trains
  to a lower loss than ReLU or GELU.
- **No biases**: with normalisation before every projection, biases add parameters and little else,
  and removing them made large runs more stable.

.. admonition:: Intuition

   A car designed in 1970 and one designed today both have four wheels and an engine; what changed
   is a long list of small fixes, each added after a failure at speed (crumple zones, anti-lock
   brakes). The modern block is the 2017 block with its safety equipment: nothing in it changes what
   a transformer computes in principle, only how reliably it trains when made large.

Inductive bias
--------------

The block keeps attention's biases (any position may use any earlier one, weighted by content) and
adds, through rotary positions, that only relative position matters. QK-norm bounds how peaked an
attention map can be for a given gain, and RMSNorm makes each sub-layer indifferent to the scale of
its input.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.transformers.modern_block import apply, count_parameters, init
>>> params = init(jax.random.key(0), d_model=16, num_heads=2, d_ff=40)
>>> x = jax.random.normal(jax.random.key(1), (6, 16))
>>> apply(params, x).shape
(6, 16)
>>> count_parameters(params) == 4 * 16 * 16 + 3 * 16 * 40 + 2 * 16 + 2 * 8  # matrices and gains only
True
>>> shifted = apply(params, x, positions=jnp.arange(6) + 100)
>>> bool(jnp.allclose(shifted, apply(params, x), atol=1e-4))
True
"""

import functools
import math

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.attention.rope import apply_rope

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"init": ("d_model", "num_heads", "d_ff"), "apply": (), "count_parameters": ()}

#: The constant added under RMSNorm's root.
EPS = 1e-6

_MATRICES = ("W_q", "W_k", "W_v", "W_o", "W_gate", "W_up", "W_down")
_GAINS = ("attn_norm", "q_norm", "k_norm", "mlp_norm")


def init(key, d_model, num_heads, d_ff):
    """Bias-free weights with variance 1/fan-in and unit gains; ``d_model`` must split into heads of
    even size (rotary positions rotate pairs)."""
    _checks.size(d_model, "d_model", minimum=2)
    _checks.size(num_heads, "num_heads", minimum=1)
    _checks.size(d_ff, "d_ff", minimum=1)
    if d_model % num_heads or (d_model // num_heads) % 2:
        raise ValueError(f"d_model must split into num_heads heads of even size, got d_model={d_model}, "
                         f"num_heads={num_heads}")
    return _init(key, int(d_model), int(num_heads), int(d_ff))


# The sizes are checked above; the draws run as one compiled program per set of sizes (rather than a
# split, a draw and a division per matrix, each compiled on its own), which the jit check of init
# traces without compiling it again.
@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _init(key, d_model, num_heads, d_ff):
    H, head_dim = num_heads, d_model // num_heads
    shapes = {"W_q": (d_model, H, head_dim), "W_k": (d_model, H, head_dim), "W_v": (d_model, H, head_dim),
              "W_o": (H, head_dim, d_model), "W_gate": (d_model, d_ff), "W_up": (d_model, d_ff),
              "W_down": (d_ff, d_model)}
    keys = jax.random.split(key, len(shapes))
    fan_in = {"W_o": d_model, "W_down": d_ff}
    params = {name: jax.random.normal(k, shape) / math.sqrt(fan_in.get(name, d_model))
              for k, (name, shape) in zip(keys, shapes.items())}
    return params | {"attn_norm": jnp.ones(d_model), "q_norm": jnp.ones(head_dim), "k_norm": jnp.ones(head_dim),
                     "mlp_norm": jnp.ones(d_model)}


def _check_params(params):
    """(d_model, H, head_dim, d_ff) of a block from ``init``, every weight's shape checked."""
    if not isinstance(params, dict) or set(params) != set(_MATRICES + _GAINS):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params must be the dict of init with keys {sorted(_MATRICES + _GAINS)}, got {got}")
    W_q = _checks.float_array(params["W_q"], 'params["W_q"]', ndim=3, what=" (d_model, H, head_dim)")
    d_model, H, head_dim = W_q.shape
    d_ff = _checks.float_array(params["W_up"], 'params["W_up"]', ndim=2, what=" (d_model, d_ff)").shape[1]
    expected = {"W_k": (d_model, H, head_dim), "W_v": (d_model, H, head_dim), "W_o": (H, head_dim, d_model),
                "W_gate": (d_model, d_ff), "W_up": (d_model, d_ff), "W_down": (d_ff, d_model),
                "attn_norm": (d_model,), "q_norm": (head_dim,), "k_norm": (head_dim,), "mlp_norm": (d_model,)}
    for name, shape in expected.items():
        where = f'params["{name}"]'
        _checks.same_shape(_checks.float_array(params[name], where), where, shape,
                           expected_from="the sizes of W_q and W_up")
    return d_model, H, head_dim, d_ff


def count_parameters(params):
    """The number of numbers in the block: matrices and gains, no biases."""
    _check_params(params)
    return sum(int(p.size) for p in jax.tree.leaves(params))


def rms(x, gain):
    """RMS normalisation over the last axis, in float32, times ``gain``."""
    x32 = x.astype(jnp.float32)
    normalised = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + EPS)
    return (normalised * gain.reshape((1,) * (x.ndim - 1) + gain.shape)).astype(x.dtype)


def apply(params, x, positions=None):
    """The causal block on ``x`` (T, d_model); ``positions`` (T,) default to 0 .. T - 1."""
    d_model, H, head_dim, _ = _check_params(params)
    x = _checks.float_array(x, "x", ndim=2, what=" (T, d_model)")
    _checks.same_shape(x, "x", (x.shape[0], d_model), expected_from="d_model from params")
    positions = jnp.arange(x.shape[0]) if positions is None else positions
    return _apply(params, x, positions, head_dim)


# The checks run in Python; the block is one compiled program rather than a score of eager operations
# that each compile on first use, for every new shape.
@functools.partial(jax.jit, static_argnums=3)
def _apply(params, x, positions, head_dim):
    T = x.shape[0]
    a = rms(x, params["attn_norm"])
    q = jnp.einsum("tm,mhd->htd", a, params["W_q"])  # (H, T, head_dim)
    k = jnp.einsum("tm,mhd->htd", a, params["W_k"])
    v = jnp.einsum("tm,mhd->htd", a, params["W_v"])
    q = apply_rope(rms(q, params["q_norm"]), positions)  # QK-norm, then rotary positions
    k = apply_rope(rms(k, params["k_norm"]), positions)
    scores = jnp.einsum("htd,hsd->hts", q, k) / math.sqrt(head_dim)
    causal = jnp.tril(jnp.ones((T, T), bool))
    weights = jax.nn.softmax(jnp.where(causal, scores, jnp.finfo(scores.dtype).min), axis=-1)
    h = x + jnp.einsum("hts,hsd,hdm->tm", weights, v, params["W_o"])
    m = rms(h, params["mlp_norm"])
    return h + (jax.nn.silu(m @ params["W_gate"]) * (m @ params["W_up"])) @ params["W_down"]
