r"""Low-rank adaptation
===================

LoRA fine-tunes a large frozen weight matrix by training only a low-rank correction beside it,
which costs a small fraction of the parameters and, once merged, nothing at inference: the adapter
to reach for when full fine-tuning does not fit in memory or many tasks share one base model.

Equation
--------

.. math::

   \begin{aligned}
   y &= x W + \frac{\alpha}{r}\, (x A) B, \qquad A \in \mathbb{R}^{D_{\mathrm{in}} \times r},\;
        B \in \mathbb{R}^{r \times D_{\mathrm{out}}},\; B_0 = 0, \\
   W' &= W + \frac{\alpha}{r} A B \quad\Rightarrow\quad y = x W'
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
     - input, any number of leading axes
     - ``x``
     - ``(..., D_in)``
   * - :math:`y`
     - output of the adapted layer
     - returned by ``lora_apply``
     - ``(..., D_out)``
   * - :math:`W`
     - frozen pretrained weight
     - ``W``
     - ``(D_in, D_out)``
   * - :math:`A`
     - down-projection, random at initialisation
     - ``A``
     - ``(D_in, r)``
   * - :math:`B`
     - up-projection, zero at initialisation (:math:`B_0`)
     - ``B``
     - ``(r, D_out)``
   * - :math:`r`
     - rank of the adapter
     - ``r``
     - scalar
   * - :math:`\alpha`
     - scale of the update; the product is divided by :math:`r`
     - ``alpha``
     - scalar
   * - :math:`W'`
     - merged weight, used at inference
     - returned by ``merge``
     - ``(D_in, D_out)``
   * - :math:`D_{\mathrm{in}}`, :math:`D_{\mathrm{out}}`
     - input and output features
     - ``D_in``, ``D_out``
     - scalar

Explanation
-----------

:footcite:t:`hu2022lora` observed that the change a fine-tuning run makes to a pretrained weight
matrix has a low "intrinsic rank": most of it lies in a few directions. So instead of learning a
full update :math:`\Delta W` with :math:`D_{\mathrm{in}} D_{\mathrm{out}}` entries, LoRA writes it
as the product :math:`A B` of two thin matrices with :math:`r (D_{\mathrm{in}} + D_{\mathrm{out}})`
entries and trains only those, keeping :math:`W` frozen. For a 512 by 512 layer and :math:`r = 4`
that is 4096 trainable numbers instead of 262 144, 1.6 %. Gradients and optimiser state are needed
only for :math:`A` and :math:`B`, which is where the memory of fine-tuning goes.

Two choices make it behave. :math:`B` starts at zero, so the adapted layer is the pretrained layer
exactly at step zero and training starts from the base model's behaviour; :math:`A` starts random,
so that the gradient reaching :math:`B`, which is :math:`(x A)^\top` times the output's gradient,
is not zero (with both at zero neither would ever move). The factor :math:`\alpha / r` keeps the
size of the update roughly independent of the rank, so that a learning rate tuned at one rank
serves at another.

After training, :math:`W' = W + \tfrac{\alpha}{r} A B` is one matrix of the original shape
(``merge``): the adapted model then runs at exactly the cost of the base one, and unmerging
(subtracting the product again) returns to the base for another task. The price is expressiveness:
an update of rank above :math:`r` cannot be represented, and the best an adapter can do is the
closest rank-:math:`r` matrix (the truncated singular value decomposition). The tests check both.

.. admonition:: Intuition

   A tailor altering a suit does not cut a new one: a few seams are taken in or let out, and the
   rest of the cloth stays as it was. The frozen :math:`W` is the suit, the thin :math:`A B` the
   handful of seams; and a few seams can change the fit a great deal but cannot turn a jacket into
   a coat.

**DoRA.** :footcite:t:`liu2024dora` split each output unit's weight vector into a length and a
direction, :math:`W = m \, V / \lVert V \rVert`, with the norm taken over the inputs of each
output. They apply the low-rank update to the direction only, :math:`V = W + A B`, and train the
magnitudes :math:`m` (one per output) alongside; full fine-tuning, they found, changes magnitude
and direction independently, which plain LoRA couples. It costs :math:`D_{\mathrm{out}}` more
parameters and a column norm per step, and merges the same way (``dora_apply``, with
``dora_magnitude`` for the initial :math:`m = \lVert W \rVert`, which starts it at the base layer too).

*Numerical traps.* None in the forward pass: it is two matrix products. The order matters for
cost: ``lora_apply`` computes :math:`(x A) B`, never the full product :math:`A B`, so the update
costs :math:`r (D_{\mathrm{in}} + D_{\mathrm{out}})` operations per row instead of
:math:`D_{\mathrm{in}} D_{\mathrm{out}}`. In low precision, merging rounds :math:`W'` once;
unmerging then does not return :math:`W` exactly.

*Bad input.* ``lora_apply``, ``merge`` and ``init`` check that the arrays are floating-point with
the shapes above, that the rank of :math:`A` equals that of :math:`B`, and that ``alpha`` is a
positive number; a ``ValueError`` or ``TypeError`` names the argument.

Inductive bias
--------------

LoRA assumes that adapting a pretrained model to a new task needs a small change to each weight
matrix in a few directions, and that the base model already holds the features the task needs.
Where this holds it fits a new task from little data with few parameters to overfit. An update that
needs many directions (a new language, a domain far from pretraining) is out of reach at small
:math:`r`, and raising :math:`r` towards :math:`\min(D_{\mathrm{in}}, D_{\mathrm{out}})` gives back
full fine-tuning.

Example
-------

A 7-to-5 layer with a rank-3 adapter: at initialisation it is the base layer, and merged it equals
the unmerged form.

>>> import jax, jax.numpy as jnp
>>> from cookbook.efficiency.lora import init, lora_apply, merge, num_params
>>> k_w, k_a, k_x, k_b = jax.random.split(jax.random.key(0), 4)
>>> W = jax.random.normal(k_w, (7, 5))
>>> A, B = init(k_a, 7, 5, 3)
>>> x = jax.random.normal(k_x, (11, 7))
>>> bool(jnp.array_equal(lora_apply(x, W, A, B, alpha=6.0), x @ W))
True
>>> B = jax.random.normal(k_b, (3, 5))  # as if after training
>>> y = lora_apply(x, W, A, B, alpha=6.0)
>>> y.shape, bool(jnp.allclose(y, x @ merge(W, A, B, alpha=6.0), atol=1e-5))
((11, 5), True)
>>> num_params(512, 512, 4), 512 * 512
(4096, 262144)

DoRA, started at the base layer's magnitudes, is the base layer until :math:`B` moves:

>>> from cookbook.efficiency.lora import dora_apply, dora_magnitude
>>> m = dora_magnitude(W)
>>> m.shape, bool(jnp.allclose(dora_apply(x, W, A, jnp.zeros((3, 5)), m, alpha=6.0), x @ W, atol=1e-5))
((5,), True)

Implementation notes
--------------------

The Hugging Face ``peft`` library calls these ``lora_A`` and ``lora_B`` and stores them as
``(r, D_in)`` and ``(D_out, r)`` (PyTorch's output-first layout); its ``lora_alpha`` is
:math:`\alpha` and its scaling :math:`\alpha / r`. In practice adapters go on the attention
projections (the original paper adapts the query and value projections) and often on the MLP
matrices too. QLoRA keeps :math:`W` quantised to four bits while :math:`A` and :math:`B` train in
higher precision.
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"lora_apply": (), "merge": (), "dora_apply": (), "dora_magnitude": ()}


def num_params(D_in, D_out, r):
    """Trainable parameters of a rank-``r`` adapter on a ``D_in`` by ``D_out`` layer: r(D_in + D_out)."""
    D_in, D_out, r = _checks.size(D_in, "D_in"), _checks.size(D_out, "D_out"), _checks.size(r, "r")
    return r * (D_in + D_out)


def init(key, D_in, D_out, r, *, dtype=jnp.float32):
    """``(A, B)`` of a rank-``r`` adapter: ``A`` Gaussian with variance ``1/D_in``, ``B`` zero.

    With ``B`` zero the adapted layer equals the base layer at initialisation.
    """
    D_in, D_out, r = _checks.size(D_in, "D_in"), _checks.size(D_out, "D_out"), _checks.size(r, "r")
    return _init(key, D_in, D_out, r, dtype)


# The public functions check their input in Python, then hand it as it comes to one compiled core
# each (sizes static, alpha traced): repeated calls of the same shapes reuse one program instead of
# dispatching op by op.
@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _init(key, D_in, D_out, r, dtype):
    A = jax.random.normal(key, (D_in, r), dtype) / jnp.sqrt(D_in).astype(dtype)
    B = jnp.zeros((r, D_out), dtype)
    return A, B


def _weights(W, A, B, alpha):
    """Checked ``W``, ``A``, ``B``, ``alpha`` and the rank ``r``."""
    W = _checks.float_array(W, "W", ndim=2, what=" (D_in, D_out)")
    A = _checks.float_array(A, "A", ndim=2, what=" (D_in, r)")
    B = _checks.float_array(B, "B", ndim=2, what=" (r, D_out)")
    D_in, D_out = W.shape
    r = A.shape[1]
    _checks.same_shape(A, "A", (D_in, r), expected_from=f"D_in = {D_in} from W")
    _checks.same_shape(B, "B", (r, D_out), expected_from=f"r = {r} from A, D_out = {D_out} from W")
    alpha = _checks.positive(alpha, "alpha")
    return W, A, B, alpha, r


def lora_apply(x, W, A, B, *, alpha):
    """The adapted layer ``x W + (alpha / r) (x A) B`` for ``x`` of shape ``(..., D_in)``.

    Computes ``(x A) B`` (never the full ``A B``); batched over any leading axes of ``x``.
    """
    W, A, B, alpha, r = _weights(W, A, B, alpha)
    x = _checks.float_array(x, "x", min_ndim=1, what=" (..., D_in)")
    if x.shape[-1] != W.shape[0]:
        raise ValueError(f"x must have shape (..., D_in) with D_in = {W.shape[0]} from W, got shape {x.shape}")
    return _lora_apply(x, W, A, B, alpha)


@jax.jit
def _lora_apply(x, W, A, B, alpha):
    r = A.shape[1]
    return x @ W + (alpha / r) * ((x @ A) @ B)  # (..., D_out)


def merge(W, A, B, *, alpha):
    """The merged weight ``W + (alpha / r) A B``, of the shape of ``W``."""
    W, A, B, alpha, r = _weights(W, A, B, alpha)
    return _merge_jit(W, A, B, alpha)


def _merge(W, A, B, alpha):
    r = A.shape[1]
    return W + (alpha / r) * (A @ B)  # (D_in, D_out)


_merge_jit = jax.jit(_merge)


def dora_magnitude(W):
    """The norm of each output unit's weights over the inputs, ``(D_out,)``: DoRA's initial ``m``."""
    W = _checks.float_array(W, "W", ndim=2, what=" (D_in, D_out)")
    return _dora_magnitude(W)


@jax.jit
def _dora_magnitude(W):
    return jnp.sqrt(jnp.sum(W * W, axis=0))  # (D_out,)


def dora_apply(x, W, A, B, m, *, alpha):
    """DoRA: ``x (m * V / ||V||)`` with ``V = W + (alpha / r) A B``, norms over the inputs of each output.

    Forms the merged ``V`` (its column norms need it); for ``x`` of shape ``(..., D_in)``.
    """
    W, A, B, alpha, _ = _weights(W, A, B, alpha)
    m = _checks.float_array(m, "m", ndim=1, what=" (D_out,)")
    _checks.same_shape(m, "m", (W.shape[1],), expected_from="D_out from W")
    x = _checks.float_array(x, "x", min_ndim=1, what=" (..., D_in)")
    if x.shape[-1] != W.shape[0]:
        raise ValueError(f"x must have shape (..., D_in) with D_in = {W.shape[0]} from W, got shape {x.shape}")
    return _dora_apply(x, W, A, B, m, alpha)


@jax.jit
def _dora_apply(x, W, A, B, m, alpha):
    V = _merge(W, A, B, alpha)  # (D_in, D_out)
    norm = jnp.sqrt(jnp.sum(V * V, axis=0, keepdims=True))  # (1, D_out)
    return x @ (V * (m[None, :] / norm))  # (..., D_out)
