r"""DeepSets and the Set Transformer
================================

A function of a set must not depend on the order in which its elements are listed; DeepSets
encodes each element alone and sums, and the Set Transformer lets the elements attend to each other
before pooling: the models to reach for when an input is a bag of things (points of a cloud, a
patient's measurements, the members of a group) of any size.

Equation
--------

.. math::

   \begin{aligned}
   \text{DeepSets:}\quad f(X) &= \rho\Big(\textstyle\sum_{i=1}^{n} \phi(x_i)\Big), \\
   \operatorname{MAB}(X, Y) &= \operatorname{LN}\left(H + \operatorname{rFF}(H)\right), \quad
   H = \operatorname{LN}\left(X + \operatorname{Multihead}(X, Y, Y)\right), \\
   \operatorname{SAB}(X) &= \operatorname{MAB}(X, X), \qquad
   \operatorname{PMA}_k(Z) = \operatorname{MAB}\left(S, \operatorname{rFF}(Z)\right), \\
   \text{Set Transformer:}\quad f(X) &= \operatorname{PMA}_k\big(\operatorname{SAB}(\operatorname{SAB}(X W_{\text{in}}))\big)
      W_{\text{out}}
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`X`, :math:`x_i`, :math:`n`
     - the set, listed as rows in any order; one element; the number of elements
     - ``x``, a row of ``x``; its rows where ``mask`` is true
     - ``(n, D)``, ``(D,)``
   * - :math:`i`
     - element index
     - row index of ``x``
     - scalar
   * - :math:`\phi`, :math:`\rho`
     - the element encoder and the decoder of the pooled sum (MLPs)
     - ``params["phi"]``, ``params["rho"]``
     - :math:`D \to H \to H`, :math:`H \to H \to` out
   * - :math:`f`
     - the model's output for the set
     - ``deep_sets_apply``, ``set_transformer_apply``
     - ``(out,)``; ``(k, out)``
   * - :math:`Y`
     - the set that the rows of :math:`X` attend to (keys and values)
     - ``y`` in ``mab``
     - ``(m, d)``
   * - :math:`H`
     - the attention block's intermediate result
     - ``h`` in ``mab``
     - ``(n, d)``
   * - :math:`S`, :math:`k`
     - learned seed vectors: the queries that pool the set into :math:`k` outputs
     - ``params["pma"]["seeds"]``
     - ``(k, d)``
   * - :math:`Z`
     - the encoded set that PMA pools
     - ``z``
     - ``(n, d)``
   * - :math:`W_{\text{in}}`, :math:`W_{\text{out}}`
     - input and output projections
     - ``params["embed"]``, ``params["out"]``
     - ``(D, d)``, ``(d, out)``

Explanation
-----------

**Invariance and equivariance.** A function is *permutation invariant* if listing the set in
another order leaves the output unchanged, and *permutation equivariant* if it reorders the output
rows the same way. A sum is invariant. :footcite:t:`zaheer2017deep` show that the sum is also
enough: every invariant function of sets drawn from a countable universe can be written as
:math:`\rho(\sum_i \phi(x_i))`, because :math:`\phi` can give each possible element its own code
so that the sum keeps the whole multiset, and :math:`\rho` then reads off the answer. (With real
values and a fixed latent width, the construction needs that width to be at least the largest set
size :footcite:p:`wagstaff2019limitations`.) A set of any size maps to one vector of fixed width,
so the same network serves sets of 3 and of 300. Batches of sets of different sizes are padded
and carry a ``mask``; padded rows are left out of every sum and of every softmax.

DeepSets encodes each element *alone*: an interaction between two elements (is this point far from
the others? do two members clash?) must survive being summed with everything else.
:footcite:t:`lee2019set` let the elements talk first. The multihead attention block
:math:`\operatorname{MAB}(X, Y)` is a transformer layer without positions, in which each row of
:math:`X` attends to the rows of :math:`Y`, followed by a row-wise feed-forward network
:math:`\operatorname{rFF}`, with residual connections and layer normalisation
(:doc:`/docs/chapters/normalization/layer_norm`). Self-attention over the set,
:math:`\operatorname{SAB}`, is equivariant: attention without positional encodings does not know
where a row is. Pooling by multihead attention, :math:`\operatorname{PMA}_k`, replaces the sum: :math:`k`
learned seed vectors attend to the encoded set, and since a softmax-weighted sum over the set does
not depend on its order, the result is invariant. The paper's faster *induced* block, which
attends through a few inducing points to cost :math:`O(n)` instead of :math:`O(n^2)`, is left out.

.. admonition:: Intuition

   DeepSets is a ballot box: every voter fills in a slip alone, the slips are counted, and the count
   is interpreted. The order in which the slips arrive cannot matter, and no voter sees another's
   slip. The Set Transformer is a town meeting before the vote: everyone hears everyone, then a few
   appointed reporters (the seeds) each write a summary of what was said.

Inductive bias
--------------

Both models assume that the input has no order and that its size varies: they cannot learn
anything that depends on the position of an element, and a model trained on small sets runs on
large ones. DeepSets assumes that the answer is a function of a sum of independent encodings. That
covers counts, sums, histograms (the tests learn to count the distinct values of a set), and
struggles with relations between elements, which the Set Transformer's attention models directly at
a cost quadratic in the set size. Attention's softmax sees proportions, like the mean
(:doc:`message_passing`): the Set Transformer gives a set and the same set with every element
doubled exactly the same output, so it cannot tell how large a set is or how often an element
occurs, which DeepSets' sum carries directly.

Example
-------

Both models on a set of 5 elements of 3 features; reordering the elements changes nothing:

>>> import jax, numpy as np
>>> from cookbook.graphs.deep_sets import (deep_sets_apply, deep_sets_init, set_transformer_apply,
...     set_transformer_init)
>>> x = np.linspace(-1.0, 1.0, 15, dtype=np.float32).reshape(5, 3)
>>> reordered = x[[3, 0, 4, 1, 2]]
>>> params_ds = deep_sets_init(jax.random.key(0), 3, 7, 2)
>>> y = deep_sets_apply(params_ds, x)
>>> y.shape, bool(np.allclose(y, deep_sets_apply(params_ds, reordered), atol=1e-6))
((2,), True)
>>> params_st = set_transformer_init(jax.random.key(1), 3, 8, heads=2, out_size=2, seeds=3)
>>> y = set_transformer_apply(params_st, x)
>>> y.shape, bool(np.allclose(y, set_transformer_apply(params_st, reordered), atol=1e-5))
((3, 2), True)

Padding with masked rows changes nothing either:

>>> padded = np.concatenate([x, np.full((5, 3), 9.0, np.float32)])  # five rows of padding
>>> mask = np.arange(10) < 5
>>> bool(np.allclose(deep_sets_apply(params_ds, padded, mask), deep_sets_apply(params_ds, x), atol=1e-6))
True

Implementation notes
--------------------

PointNet :footcite:p:`qi2017pointnet` is DeepSets with a max instead of a sum, on point clouds; a graph network
(:doc:`message_passing`) on a graph without edges is a DeepSets model, and one on a complete graph
with attention is close to a Set Transformer. A transformer encoder without positional encodings
(:doc:`/docs/chapters/attention/multi_head`) is a stack of SABs. The Set Transformer's forward pass
and its initialisation are each compiled as one program (``jax.jit`` inside the functions, after
the boundary checks): run eagerly, each of their hundred-odd small operations would compile alone.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks
from cookbook.graphs.message_passing import check_mlp, mlp, mlp_init
from cookbook.normalization.layer_norm import layer_norm

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"deep_sets_apply": (), "set_transformer_apply": ()}


def _check_set(x, mask, width):
    x = _checks.float_array(x, "x", ndim=2, what=" (n, D)")
    _checks.same_shape(x, "x", (x.shape[0], width), expected_from="D from params")
    if mask is None:  # every row is an element: the compiled core makes the mask of ones
        return x, None
    mask = _checks._as_array(mask, "mask")
    if mask.dtype != jnp.bool_:
        raise TypeError(f"mask must be boolean (True = an element of the set), got dtype {mask.dtype}")
    return x, _checks.same_shape(mask, "mask", x.shape[:1], expected_from="one per row of x")


# ---- DeepSets ------------------------------------------------------------------------------------

def deep_sets_init(key, in_size, hidden, out_size):
    """``{"phi": MLP in -> hidden -> hidden, "rho": MLP hidden -> hidden -> out}``."""
    D, H, out = (_checks.size(n, name) for n, name in ((in_size, "in_size"), (hidden, "hidden"), (out_size, "out_size")))
    k_phi, k_rho = jax.random.split(key)
    return {"phi": mlp_init(k_phi, (D, H, H)), "rho": mlp_init(k_rho, (H, H, out))}


def deep_sets_apply(params, x, mask=None):
    """``rho(sum of phi(x_i))`` over the rows of ``x`` (n, D) where ``mask`` (n,) is true: (out,)."""
    if not isinstance(params, dict) or set(params) != {"phi", "rho"}:
        raise ValueError("params must be the dict {'phi', 'rho'} that deep_sets_init returns")
    D, H = check_mlp(params["phi"], "params['phi']")
    H_rho, _ = check_mlp(params["rho"], "params['rho']")
    if H_rho != H:
        raise ValueError(f"params['rho'] must read the {H} features params['phi'] writes, got {H_rho}")
    x, mask = _check_set(x, mask, D)
    return _deep_sets(params, x, mask)


@jax.jit  # one program after the boundary checks, not a dozen small eager ones
def _deep_sets(params, x, mask):
    if mask is None:
        mask = jnp.ones(x.shape[0], bool)
    pooled = jnp.sum(jnp.where(mask[:, None], mlp(params["phi"], x), 0), axis=0)  # (H,)
    return mlp(params["rho"], pooled[None, :])[0]


# ---- The Set Transformer -----------------------------------------------------------------------------

def _mab_shapes(d, heads):
    e = d // heads
    return {"W_q": (d, heads, e), "W_k": (d, heads, e), "W_v": (d, heads, e), "W_o": (heads, e, d),
            "ln1": {"scale": (d,), "bias": (d,)}, "ln2": {"scale": (d,), "bias": (d,)},
            "ff": [{"W": (d, d), "b": (d,)}, {"W": (d, d), "b": (d,)}]}


def set_transformer_init(key, in_size, d_model, heads, out_size, seeds=1):
    """Parameters of ``PMA_k(SAB(SAB(x W_in))) W_out`` with ``k = seeds``: weights normal with
    variance 1/fan-in, layer-norm scales 1, biases 0."""
    D, d, h, out, k = (_checks.size(n, name) for n, name in (
        (in_size, "in_size"), (d_model, "d_model"), (heads, "heads"), (out_size, "out_size"), (seeds, "seeds")))
    if d % h:
        raise ValueError(f"d_model must be a multiple of heads, got d_model={d} and heads={h}")
    return _init_weights(key, D, d, h, out, k)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))  # one program, not ~100 small eager ones
def _init_weights(key, D, d, h, out, k):
    shapes = {"embed": [{"W": (D, d), "b": (d,)}], "sab1": _mab_shapes(d, h), "sab2": _mab_shapes(d, h),
              "pma": {"seeds": (k, d), "ff": [{"W": (d, d), "b": (d,)}, {"W": (d, d), "b": (d,)}],
                      "mab": _mab_shapes(d, h)},
              "out": [{"W": (d, out), "b": (out,)}]}
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda s: isinstance(s, tuple))
    # One draw cut into every weight: one random-number kernel to compile rather than one per weight.
    z = jax.random.normal(key, (sum(int(np.prod(s)) for s in leaves),))
    ends = np.cumsum([int(np.prod(s)) for s in leaves])[:-1].tolist()
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(
        shapes, is_leaf=lambda s: isinstance(s, tuple))[0]]

    def make(path, s, draw):
        if path.endswith("['b']") or path.endswith("['bias']"):
            return jnp.zeros(s)
        if path.endswith("['scale']"):
            return jnp.ones(s)
        fan_in = s[0] * s[1] if path.endswith("['W_o']") else s[0]
        return draw.reshape(s) / np.sqrt(fan_in if not path.endswith("['seeds']") else s[1])

    return jax.tree.unflatten(treedef, [make(p, s, w) for p, s, w in zip(paths, leaves, jnp.split(z, ends))])


@functools.lru_cache(maxsize=32)
def _expected(D, d, h, out, k):
    return jax.eval_shape(lambda: set_transformer_init(jax.random.key(0), D, d, h, out, k))


def _check_set_transformer(params):
    """``(D, d, heads, out, k)`` read from ``params``, after checking every leaf against them."""
    if not isinstance(params, dict) or set(params) != {"embed", "sab1", "sab2", "pma", "out"}:
        raise ValueError("params must be the dict that set_transformer_init returns")
    try:
        D, d = jnp.shape(params["embed"][0]["W"])
        heads = jnp.shape(params["sab1"]["W_q"])[1]
        k, out = jnp.shape(params["pma"]["seeds"])[0], jnp.shape(params["out"][0]["W"])[1]
    except (ValueError, IndexError, KeyError, TypeError) as error:
        raise ValueError(f"params must be the dict that set_transformer_init returns: {error}") from None
    if heads < 1 or d % heads:
        raise ValueError(f"params['sab1']['W_q'] must have shape (d, heads, d / heads), got {jnp.shape(params['sab1']['W_q'])}")
    _checks.same_tree(params, "params", _expected(D, d, heads, out, k), f"set_transformer_init(key, {D}, {d}, {heads}, {out}, {k})")
    return D


def mab(params, x, y, mask):
    """The multihead attention block: the rows of ``x`` (n, d) attend to the rows of ``y`` (m, d)
    where ``mask`` (m,) is true; (n, d)."""
    e = params["W_q"].shape[2]
    q = jnp.einsum("nd,dhe->nhe", x, params["W_q"])
    k = jnp.einsum("md,dhe->mhe", y, params["W_k"])
    v = jnp.einsum("md,dhe->mhe", y, params["W_v"])
    scores = jnp.einsum("nhe,mhe->hnm", q, k) / jnp.sqrt(e).astype(x.dtype)  # (heads, n, m)
    scores = jnp.where(mask[None, None, :], scores, jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores, axis=-1) * mask[None, None, :]  # zeros if no row of y is real
    attended = jnp.einsum("nhe,hed->nd", jnp.einsum("hnm,mhe->nhe", weights, v), params["W_o"])
    h = layer_norm(x + attended, params["ln1"]["scale"], params["ln1"]["bias"])
    return layer_norm(h + mlp(params["ff"], h), params["ln2"]["scale"], params["ln2"]["bias"])


def set_transformer_apply(params, x, mask=None):
    """The Set Transformer's outputs (k, out) for the rows of ``x`` (n, D) where ``mask`` (n,) is true."""
    D = _check_set_transformer(params)
    x, mask = _check_set(x, mask, D)
    return _set_transformer(params, x, mask)


@jax.jit  # compiled as one program: run eagerly, each of its ~100 small operations compiles alone
def _set_transformer(params, x, mask):
    if mask is None:
        mask = jnp.ones(x.shape[0], bool)
    h = mlp(params["embed"], x)  # (n, d)
    h = mab(params["sab1"], h, h, mask)  # SAB: equivariant
    z = mab(params["sab2"], h, h, mask)
    pooled = mab(params["pma"]["mab"], params["pma"]["seeds"], mlp(params["pma"]["ff"], z), mask)  # (k, d)
    return mlp(params["out"], pooled)  # (k, out)
