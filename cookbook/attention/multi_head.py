r"""Multi-head attention
====================

Several scaled dot-product attentions run side by side, each on its own learned projection of the
inputs, and their outputs are projected back and summed: the attention layer of the transformer,
used as self-attention (a sequence reads itself) or cross-attention (it reads another sequence).

Equation
--------

.. math::

   Q_h = X W^{Q}_h + b^{Q}_h, \qquad K_h = C W^{K}_h + b^{K}_h, \qquad V_h = C W^{V}_h + b^{V}_h

   Y_h = \operatorname{softmax}\!\left(\frac{Q_h K_h^\top}{\sqrt{D}} + M\right) V_h, \qquad
   Z = \sum_{h=1}^{H} Y_h W^{O}_h + b^{O}

with :math:`C = X` for self-attention.

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`X`
     - the sequence that asks (queries come from it)
     - ``x``
     - ``(T, d_model)``
   * - :math:`C`
     - the sequence that is read (keys and values come from it); :math:`X` itself in self-attention
     - ``context``
     - ``(S, d_model)``
   * - :math:`h`, :math:`H`
     - index of a head; number of heads
     - ``num_heads``
     - scalar
   * - :math:`D`
     - features per head, ``d_model // num_heads``
     - ``D``
     - scalar
   * - :math:`W^{Q}_h`, :math:`b^{Q}_h`
     - query projection of head :math:`h` and its bias
     - ``params["W_q"]``, ``params["b_q"]``, at index :math:`h` of the head axis
     - ``(d_model, D)``, ``(D,)``
   * - :math:`W^{K}_h`, :math:`b^{K}_h`
     - key projection of head :math:`h` and its bias
     - ``params["W_k"]``, ``params["b_k"]``, at index :math:`h` of the head axis
     - ``(d_model, D)``, ``(D,)``
   * - :math:`W^{V}_h`, :math:`b^{V}_h`
     - value projection of head :math:`h` and its bias
     - ``params["W_v"]``, ``params["b_v"]``, at index :math:`h` of the head axis
     - ``(d_model, D)``, ``(D,)``
   * - :math:`Q_h`, :math:`K_h`, :math:`V_h`
     - queries, keys and values of head :math:`h`
     - ``q``, ``k``, ``v``, at index :math:`h` of their first axis
     - ``(T, D)``, ``(S, D)``, ``(S, D)``
   * - :math:`M`
     - additive mask, 0 where allowed and :math:`-\infty` where not (shared by the heads unless
       given per head)
     - from ``mask`` (``True`` = may attend)
     - ``(T, S)`` or ``(H, T, S)``
   * - :math:`Y_h`
     - output of head :math:`h`
     - ``y``, at index :math:`h` of its first axis
     - ``(T, D)``
   * - :math:`W^{O}_h`, :math:`b^{O}`
     - output projection of head :math:`h`; output bias
     - ``params["W_o"]`` at index :math:`h` of its first axis; ``params["b_o"]``
     - ``(D, d_model)``, ``(d_model,)``
   * - :math:`Z`
     - the layer's output, one vector per query
     - ``apply(params, x, context, mask)``
     - ``(T, d_model)``

Explanation
-----------

One attention head computes one distribution over the keys per query, so it can follow one kind of
relation at a time: the previous word, or the subject of the verb, but not both in one weighted
average. Vaswani et al. :footcite:`vaswani2017attention` therefore split the model width ``d_model`` into
:math:`H` heads of :math:`D = d_\text{model}/H` features each. Every head has its own projections,
so it compares queries and keys in its own :math:`D`-dimensional subspace and reads its own slice of
the values; the heads together cost about as much as one head of full width, because the work is
split, not repeated. The output projection then mixes what the heads found. Summing
:math:`Y_h W^{O}_h` over heads is the same as concatenating the :math:`Y_h` into a
:math:`(T, HD)` matrix and multiplying by one :math:`(HD, d_\text{model})` matrix, which is how the
paper writes it; the code keeps the head axis explicit, which is also the parameter layout of
:class:`flax.linen.MultiHeadDotProductAttention` (query, key and value kernels of shape
``(d_model, H, D)``, output kernel ``(H, D, d_model)``).

.. admonition:: Intuition

   A manuscript goes to a panel of reviewers, each told to read for one thing only: one checks the
   grammar, one the facts, one whether the argument follows. Each reads the whole text through
   their own narrow lens and writes a short note; the editor then combines the notes into one
   verdict. The heads are the reviewers, their small projections the lenses, and the output
   projection :math:`W^{O}` the editor.

**Self- and cross-attention.** The only difference is where the keys and values come from. In
self-attention they come from the same sequence as the queries (a causal mask turns it into a
decoder's attention). In cross-attention, the decoder's positions ask and the encoder's output
answers, as in translation, where each target word looks at the source sentence; then :math:`T` and
:math:`S` differ, and the mask (if any) hides padding in the source.

**Initialisation.** Each projection is drawn with variance :math:`1/\text{fan-in}`
(``1/d_model`` for the input projections, ``1/(H D)`` for the output), so that unit-variance inputs
give unit-variance queries, keys and outputs, and the scale :math:`1/\sqrt{D}` of
:doc:`scaled_dot_product` keeps the scores near unit variance at the start of training. Biases start
at zero.

**Numerics** are those of :doc:`scaled_dot_product`, which this recipe calls per head: softmax in
float32, masking with the most negative float, and a zero output for a query that may attend to
nothing.

Inductive bias
--------------

Every position uses the same projections, and self-attention is *permutation equivariant*: shuffling
the rows of :math:`X` shuffles the rows of :math:`Z` in the same way, so without positional
information (:doc:`positional_encoding`) the layer sees a bag of tokens. Each head is a low-rank
bilinear form :math:`X W^{Q}_h (W^{K}_h)^\top C^\top` of rank at most :math:`D`: the model assumes
that the relations worth following can be found in a few small subspaces, and buys the variety of
relations with the number of heads.

Example
-------

Causal self-attention on five tokens, and cross-attention from them to a context of seven:

>>> import jax, jax.numpy as jnp
>>> from cookbook.attention.multi_head import init, apply
>>> k_params, k_x, k_c = jax.random.split(jax.random.key(0), 3)
>>> params = init(k_params, d_model=12, num_heads=3)
>>> params["W_q"].shape, params["W_o"].shape
((12, 3, 4), (3, 4, 12))
>>> x = jax.random.normal(k_x, (5, 12))
>>> causal = jnp.tril(jnp.ones((5, 5), bool))
>>> z = apply(params, x, mask=causal)
>>> z.shape
(5, 12)
>>> x_changed = x.at[4].set(10.0)  # the last token cannot affect the ones before it
>>> bool(jnp.allclose(apply(params, x_changed, mask=causal)[:4], z[:4], atol=1e-6))
True
>>> context = jax.random.normal(k_c, (7, 12))
>>> apply(params, x, context).shape
(5, 12)
"""

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.attention.scaled_dot_product import scaled_dot_product_attention

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"init": ("d_model", "num_heads"), "apply": ()}


def init(key, d_model, num_heads):
    """Parameters of a multi-head attention layer with ``num_heads`` heads of ``d_model // num_heads``."""
    d_model, num_heads = _checks.size(d_model, "d_model"), _checks.size(num_heads, "num_heads")
    if d_model % num_heads:
        raise ValueError(f"num_heads must divide d_model, got d_model={d_model} and num_heads={num_heads}")
    H, D = num_heads, d_model // num_heads
    k_q, k_k, k_v, k_o = jax.random.split(key, 4)
    in_std, out_std = 1.0 / jnp.sqrt(d_model), 1.0 / jnp.sqrt(H * D)
    return {
        "W_q": in_std * jax.random.normal(k_q, (d_model, H, D)),
        "b_q": jnp.zeros((H, D)),
        "W_k": in_std * jax.random.normal(k_k, (d_model, H, D)),
        "b_k": jnp.zeros((H, D)),
        "W_v": in_std * jax.random.normal(k_v, (d_model, H, D)),
        "b_v": jnp.zeros((H, D)),
        "W_o": out_std * jax.random.normal(k_o, (H, D, d_model)),
        "b_o": jnp.zeros((d_model,)),
    }


def _check_params(params, *, grouped=False):
    """The sizes (d_model, H, G, D) of attention parameters, after checking every array's dtype and
    shape against ``W_q``; G (key-value heads) may differ from H only when ``grouped``."""
    W_q = _checks.float_array(params["W_q"], 'params["W_q"]', ndim=3, what=" (d_model, H, D)")
    d_model, H, D = W_q.shape
    G = params["W_k"].shape[1] if grouped and jnp.ndim(params["W_k"]) == 3 else H
    expected = {"b_q": (H, D), "W_k": (d_model, G, D), "b_k": (G, D), "W_v": (d_model, G, D),
                "b_v": (G, D), "W_o": (H, D, d_model), "b_o": (d_model,)}
    for name, shape in expected.items():
        _checks.same_shape(_checks.float_array(params[name], f'params["{name}"]'), f'params["{name}"]', shape,
                           expected_from="the sizes of params['W_q']")
    return d_model, H, G, D


def _check_sequence(x, name, length, d_model):
    x = _checks.float_array(x, name)
    if x.ndim != 2 or x.shape[1] != d_model:
        raise ValueError(f"{name} must have shape ({length}, d_model) = ({length}, {d_model}), got shape {x.shape}")
    return x


def project(W, b, x):
    """Per-head projection ``x W_h + b_h`` of x (T, d_model) with W (d_model, H, D): shape (H, T, D)."""
    return jnp.einsum("TM,MHD->HTD", x, W) + b[:, None, :]


def apply(params, x, context=None, mask=None):
    """Multi-head attention of the queries from ``x`` (T, d_model) to ``context`` (S, d_model).

    ``context=None`` is self-attention. ``mask`` is boolean, (T, S) or (H, T, S) (a size-1 leading
    or T axis broadcasts; the key axis never does), ``True`` where a query may attend to a key.
    Returns (T, d_model). One example; batch with :func:`jax.vmap`.
    """
    d_model = _check_params(params)[0]
    x = _check_sequence(x, "x", "T", d_model)
    if context is not None:
        context = _check_sequence(context, "context", "S", d_model)
    return _apply(params, x, context, mask)


# Checked in Python above, then run as one compiled core: a program per set of shapes, rather than
# a dozen eager operations that each compile (the mask's shape is checked where it is traced).
@jax.jit
def _apply(params, x, context, mask):
    context = x if context is None else context
    q = project(params["W_q"], params["b_q"], x)  # (H, T, D)
    k = project(params["W_k"], params["b_k"], context)  # (H, S, D)
    v = project(params["W_v"], params["b_v"], context)  # (H, S, D)
    y = scaled_dot_product_attention(q, k, v, mask)  # (H, T, D)
    return jnp.einsum("HTD,HDM->TM", y, params["W_o"]) + params["b_o"][None, :]  # (T, d_model)
