r"""Pruning
=======

Pruning sets most of a trained network's weights to zero and keeps the few that matter, chosen by
their size (or their size times their input's), in any pattern or in the 2:4 pattern that sparse
tensor cores run twice as fast: the way to make a model smaller and, with the right pattern or
kernel, faster.

Equation
--------

.. math::

   \begin{aligned}
   \hat{W} &= M \odot W, \qquad
   M_{ij} = \mathbb{1}\bigl[S_{ij} \text{ is not among the } \lfloor s K \rceil
            \text{ smallest scores of its group}\bigr], \\
   S_{ij} &= \lvert W_{ij} \rvert \ \text{(magnitude, 2:4)}, \qquad
   S_{ij} = \lvert W_{ij} \rvert \, \lVert X_{:, i} \rVert_2 \ \text{(Wanda)}, \\
   \theta &\leftarrow M \odot \theta_k \quad \text{(lottery ticket with rewinding, then retrain)}
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`W`
     - a dense layer's weight, :math:`y = x W`
     - ``W``
     - ``(D_in, D_out)``
   * - :math:`M`
     - the mask: 1 keeps a weight, 0 prunes it
     - returned by ``magnitude_mask``, ``n_m_mask``, ``wanda_mask``
     - ``(D_in, D_out)``
   * - :math:`\hat{W}`
     - the pruned weight
     - ``apply_masks(params, masks)``
     - ``(D_in, D_out)``
   * - :math:`S_{ij}`
     - the score of weight :math:`(i, j)`: the smallest are pruned
     - ``scores``
     - ``(D_in, D_out)``
   * - :math:`i`, :math:`j`
     - input and output index
     - indices into ``W``
     - scalar
   * - :math:`s`
     - the sparsity: the fraction of each group pruned
     - ``sparsity``
     - scalar
   * - :math:`K`
     - the size of a group compared together: the whole tensor (magnitude), one output's
       :math:`D_{\mathrm{in}}` weights (Wanda), or 4 consecutive inputs of one output (2:4, with
       :math:`s = 1/2`)
     - ``K``; ``m`` for 2:4
     - scalar
   * - :math:`X`
     - calibration inputs of the layer
     - ``X``
     - ``(B, D_in)``
   * - :math:`\theta_k`, :math:`\theta`
     - a network's weights at an early step :math:`k` of training, and the weights that are retrained
     - ``params``
     - pytree
   * - :math:`k`
     - the step rewound to
     - chosen by the caller
     - scalar

Explanation
-----------

Trained networks are overparameterised: many weights can be removed with little loss, and a short
retraining recovers most of the rest. The simplest criterion, removing the weights of smallest
magnitude and retraining :footcite:p:`han2015learning`, is still the baseline everything is compared
with. In the tests, a 64-64-10 network trained on scikit-learn's digits loses accuracy when 80 % of
each weight matrix is zeroed, and a short retraining with the mask held fixed brings it back within
2 points of the dense network.

*Why zeros do not automatically mean speed.* Unstructured sparsity (any pattern) saves memory only
with an index per kept weight, and runs faster only at high sparsity in special kernels.
**2:4 sparsity** keeps the 2 largest of every 4 consecutive weights along the input axis
:footcite:p:`mishra2021accelerating`: exactly half the weights, in a pattern that NVIDIA's sparse
tensor cores multiply about twice as fast, with a 2-bit index per kept weight.

**Wanda.** :footcite:t:`sun2024wanda` observed that in large language models a few input features
have activations far larger than the rest, so a small weight on such an input can matter more than
a large weight elsewhere. Their score multiplies each weight's magnitude by the norm of its input
over a small calibration batch, and compares the weights of each output separately; it needs no
retraining and no gradient. In the tests, on a layer with outlier inputs, Wanda's output error
:math:`\lVert X W - X \hat{W} \rVert` at 50 % sparsity is less than half that of magnitude pruning.

**Lottery tickets.** :footcite:t:`frankle2019lottery` found that a pruned mask, applied to the
network's weights *at initialisation* and trained again from there, trains as well as the dense
network: the surviving sub-network was a "winning ticket" from the start. For deeper networks the
trick works when the weights are rewound to an early step :math:`k` of training rather than to
step 0 :footcite:p:`frankle2020linear`. The tests rewind the digits network to step 10 of 200, train
the 80 %-sparse ticket again, and reach the dense accuracy within 2 points; but on so small and easy
a problem the same sparse network from fresh random weights does as well (within 2 points of the
ticket). The ticket's advantage over a fresh start appears at higher sparsity and on harder tasks.

.. plot::

   from cookbook.efficiency.pruning import magnitude_mask, n_m_mask, wanda_mask
   rng = np.random.default_rng(0)
   W = rng.standard_normal((16, 12)).astype(np.float32)
   X = (rng.standard_normal((32, 16)) * np.where(np.arange(16) % 5 == 0, 8.0, 1.0)).astype(np.float32)
   masks = {"magnitude, 50 %": magnitude_mask(W, sparsity=0.5), "2:4": n_m_mask(W, n=2, m=4),
            "Wanda, 50 % (rows 0, 5, 10, 15: outlier inputs)": wanda_mask(W, X, sparsity=0.5)}
   fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
   for ax, (title, mask) in zip(axes, masks.items()):
       ax.imshow(np.asarray(mask), cmap="Greys", vmin=0, vmax=1.4)
       ax.set(title=title, xlabel="output j", ylabel="input i", xticks=[], yticks=[])
       ax.title.set_fontsize(8)
   fig.tight_layout()

Kept weights are dark. Magnitude pruning compares the whole matrix at once, so some outputs keep
more weights than others; 2:4 keeps exactly two in every block of four inputs; Wanda keeps half of
each output's weights and favours the rows of the outlier inputs.

.. admonition:: Intuition

   Pruning a tree, or an editor cutting a draft: most branches and sentences can go without the
   shape or the argument changing, and a season's growth (retraining) fills the gaps. Wanda is the
   editor who keeps a short sentence if it sits on a page that everyone reads.

*Numerical traps.* Ties between equal scores are broken by position, so the number pruned is always
exactly :math:`\lfloor s K \rceil` (rounded to nearest). Masks are kept fixed during retraining:
the gradient of a pruned weight is zeroed, and the weight multiplied by its mask after each update.

*Bad input.* ``W`` must be a floating-point matrix without NaN when concrete (a NaN would sort as the
largest score; under :func:`jax.jit` it is kept), ``sparsity`` a number in :math:`[0, 1]`, ``X``
a float matrix with ``D_in`` columns, and for 2:4 ``D_in`` a multiple of ``m``.

Inductive bias
--------------

Pruning assumes that a weight's importance is read from its size (magnitude), or from its size
times the size of what it multiplies (Wanda), and that a network has many more weights than its
function needs. Where the weights that matter are small ones on large inputs, magnitude pruning
removes the wrong ones; where no weight is redundant (a small network on a hard task), nothing can be
pruned without loss. Structured patterns such as 2:4 trade a little accuracy for a pattern that
hardware can skip.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.efficiency.pruning import magnitude_mask, n_m_mask, wanda_mask
>>> W = jnp.array([[0.5, -2.0], [0.1, 0.3], [-1.5, 0.9], [0.2, 1.0]])
>>> magnitude_mask(W, sparsity=0.5).astype(int)  # the 4 largest of 8 survive, 3 in output 1
Array([[0, 1],
       [0, 0],
       [1, 1],
       [0, 1]], dtype=int32)
>>> n_m_mask(W, n=2, m=4).astype(int)  # 2 of every 4 consecutive inputs, for each output
Array([[1, 1],
       [0, 0],
       [1, 0],
       [0, 1]], dtype=int32)
>>> X = jnp.array([[1.0, 10.0, 1.0, 1.0], [1.0, -10.0, 1.0, 1.0]])  # input 1 is an outlier
>>> wanda_mask(W, X, sparsity=0.5).astype(int)  # half of each output; input 1's small weights now count
Array([[0, 1],
       [1, 1],
       [1, 0],
       [0, 0]], dtype=int32)

Masks for every matrix of a network, applied:

>>> from cookbook.efficiency.pruning import apply_masks, prune_params
>>> params = [{"W": W, "b": jnp.ones(2)}]
>>> masks = prune_params(params, sparsity=0.75)
>>> pruned = apply_masks(params, masks)
>>> int((pruned[0]["W"] != 0).sum()), pruned[0]["b"].tolist()  # biases are not pruned
(2, [1.0, 1.0])

Implementation notes
--------------------

Layer-wise pruning with one sparsity for every matrix is used here; global magnitude pruning, one
threshold across all layers, prunes the large layers harder and often does slightly better.
Iterative pruning (20 % at a time, retraining between) reaches higher sparsity than one shot. For
language models, retraining is expensive and one-shot criteria that use activations (Wanda) or
second-order information (SparseGPT, the pruning cousin of GPTQ) are the norm. In PyTorch,
``torch.nn.utils.prune`` keeps the mask beside the weight as here; sparse tensor cores need the
2:4 pattern compressed into values and metadata.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "magnitude_mask": ("sparsity",),
    "n_m_mask": ("n", "m"),
    "wanda_mask": ("sparsity",),
    "apply_masks": (),
}


def _weight(W):
    W = _checks.float_array(W, "W", ndim=2, what=" (D_in, D_out)")
    return _checks.check_no_nan(W, "W")


def _sparsity(sparsity):
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.floating)):
        raise TypeError(f"sparsity must be a number in [0, 1], got {type(sparsity).__name__}")
    if not 0 <= sparsity <= 1:
        raise ValueError(f"sparsity must lie in [0, 1], got {sparsity}")
    return float(sparsity)


def _keep_largest(scores, K_pruned, axis):
    """True except for the ``K_pruned`` smallest scores along ``axis`` (ties broken by position)."""
    ranks = jnp.argsort(jnp.argsort(scores, axis=axis, stable=True), axis=axis, stable=True)
    return ranks >= K_pruned


def magnitude_mask(W, *, sparsity):
    """A boolean mask of ``W``'s shape pruning the ``round(sparsity * W.size)`` smallest ``|W|``."""
    W, sparsity = _weight(W), _sparsity(sparsity)
    K = W.size
    return _magnitude(W, round(sparsity * K))


def n_m_mask(W, *, n=2, m=4):
    """Keep the ``n`` largest ``|W|`` of every ``m`` consecutive inputs (axis 0) of each output."""
    W = _weight(W)
    n, m = _checks.size(n, "n", minimum=0), _checks.size(m, "m")
    if n > m:
        raise ValueError(f"n must be at most m = {m}, got {n}")
    D_in, D_out = W.shape
    if D_in % m:
        raise ValueError(f"W must have D_in a multiple of m = {m}, got shape {tuple(W.shape)}")
    return _n_m(W, n, m)


def wanda_mask(W, X, *, sparsity):
    """Wanda: prune, for each output, the ``round(sparsity * D_in)`` smallest ``|W_ij| ||X[:, i]||``.

    ``X`` (B, D_in) are calibration inputs of the layer ``y = X W``.
    """
    W, sparsity = _weight(W), _sparsity(sparsity)
    X = _checks.float_array(X, "X", ndim=2, what=" (B, D_in)")
    D_in = W.shape[0]
    _checks.same_shape(X, "X", (X.shape[0], D_in), expected_from=f"(B, D_in) with D_in = {D_in} from W")
    X = _checks.check_no_nan(X, "X")
    return _wanda(W, X, round(sparsity * D_in))


# The masks on checked inputs, each one compiled program per shape (rather than several small ones
# when called eagerly); the number pruned is traced, so another sparsity compiles nothing new.

@jax.jit
def _magnitude(W, K_pruned):
    return _keep_largest(jnp.abs(W).reshape(W.size), K_pruned, axis=0).reshape(W.shape)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _n_m(W, n, m):
    D_in, D_out = W.shape
    scores = jnp.abs(W).reshape(D_in // m, m, D_out)  # groups of m consecutive inputs
    return _keep_largest(scores, m - n, axis=1).reshape(D_in, D_out)


@jax.jit
def _wanda(W, X, K_pruned):
    norms = jnp.sqrt(jnp.sum(jnp.square(X.astype(jnp.promote_types(X.dtype, jnp.float32))), axis=0))  # (D_in,)
    scores = jnp.abs(W) * norms[:, None]  # (D_in, D_out)
    return _keep_largest(scores, K_pruned, axis=0)


def prune_params(params, *, sparsity):
    """Magnitude masks for every matrix (every leaf of two axes) of ``params``; other leaves all True."""
    sparsity = _sparsity(sparsity)
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("params must hold at least one array")
    return jax.tree.map(lambda p: magnitude_mask(p, sparsity=sparsity) if jnp.ndim(p) == 2
                        else np.ones(jnp.shape(p), bool), params)


def apply_masks(params, masks):
    """``params`` with each leaf multiplied by its mask (a tree of booleans of the same structure)."""
    p_leaves, p_def = jax.tree.flatten(params)
    m_leaves, m_def = jax.tree.flatten(masks)
    if p_def != m_def:
        raise ValueError(f"masks must have the structure of params: expected {p_def}, got {m_def}")
    out = []
    for path_leaf, p, mask in zip(jax.tree_util.tree_leaves_with_path(params), p_leaves, m_leaves):
        where = jax.tree_util.keystr(path_leaf[0])
        p = _checks.float_array(p, f"params{where}")
        mask = _checks._as_array(mask, f"masks{where}")
        if mask.dtype != jnp.bool_:
            raise TypeError(f"masks{where} must be a boolean array, got dtype {mask.dtype}")
        _checks.same_shape(mask, f"masks{where}", p.shape, expected_from=f"the shape of params{where}")
        out.append((p, mask))
    return jax.tree.unflatten(p_def, _apply(out))


@jax.jit
def _apply(pairs):
    return [jnp.where(mask, p, jnp.zeros((), p.dtype)) for p, mask in pairs]
