r"""GPTQ
====

GPTQ quantises a trained layer's weights one input row at a time and, after each row, nudges the
rows not yet quantised to cancel the error on the layer's outputs, using second-order information
from a few calibration inputs: the way to reach 3 or 4 bits per weight without retraining, where
rounding each weight to the nearest level loses too much.

Equation
--------

.. math::

   \begin{aligned}
   \min_{\hat{W}}\ & \lVert X W - X \hat{W} \rVert^2, \qquad H = \frac{2}{B} X^\top X + \lambda I, \\
   \text{OBS:}\quad & \delta = -\frac{w_i - \operatorname{quant}(w_i)}{[H^{-1}]_{ii}}\, H^{-1}_{:,i}, \qquad
     \Delta E = \frac{(w_i - \operatorname{quant}(w_i))^2}{2\,[H^{-1}]_{ii}}, \\
   \text{GPTQ:}\quad & \text{for } i = 1, \dots, D_{\mathrm{in}}:\quad
     Q_i = \operatorname{quant}(W_i), \quad
     W_{i+1:} \leftarrow W_{i+1:} - U_{i,\, i+1:}^\top \, \frac{W_i - Q_i}{U_{ii}},
     \quad U^\top U = H^{-1}
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`W`, :math:`W_i`
     - the layer's weight (:math:`y = x W`) and its row for input :math:`i`, updated as GPTQ goes
     - ``W``, ``W[i]``
     - ``(D_in, D_out)``
   * - :math:`\hat{W}`
     - the quantised weight, read back
     - ``q`` times ``scale``
     - ``(D_in, D_out)``
   * - :math:`Q_i`
     - row :math:`i` rounded to the grid of each output's scale
     - ``q[i] * scale``
     - ``(D_out,)``
   * - :math:`X`
     - calibration inputs, :math:`B` of them
     - ``X``
     - ``(B, D_in)``
   * - :math:`B`
     - the number of calibration inputs
     - ``B``
     - scalar
   * - :math:`H`
     - the Hessian of the squared output error with respect to each output's weights (shared by
       all outputs), damped
     - ``H``, returned by ``hessian``
     - ``(D_in, D_in)``
   * - :math:`\lambda`
     - the damping: ``damp`` times the mean of the diagonal of :math:`\tfrac{2}{B} X^\top X`
     - ``lam``
     - scalar
   * - :math:`I`
     - the identity matrix
     - ``jnp.eye``
     - ``(D_in, D_in)``
   * - :math:`U`
     - the upper Cholesky factor of :math:`H^{-1}`
     - ``U``
     - ``(D_in, D_in)``
   * - :math:`w_i`, :math:`\delta`
     - one output's weights (one column of :math:`W`): entry :math:`i`, and the optimal change
       to the whole column when entry :math:`i` is fixed
     - ``w``, ``delta`` in ``obs_step``
     - ``(D_in,)``
   * - :math:`\Delta E`
     - the increase of the (halved) output error that fixing :math:`w_i` costs, after the change
     - ``cost``
     - scalar
   * - :math:`i`
     - the input index being quantised
     - ``i``
     - scalar
   * - :math:`D_{\mathrm{in}}`
     - the number of inputs
     - ``D_in``
     - scalar

Explanation
-----------

Rounding each weight to the nearest level of the grid (RTN, as :doc:`quantization` does) treats
every weight alone. But a layer's job is its output :math:`X W`, and errors in weights that meet
correlated inputs can cancel: if two inputs always move together, rounding one weight up can be
repaired by moving the other weight down. The output error of one output's column :math:`w` is the
quadratic :math:`\tfrac{1}{2}\delta^\top H \delta` in the change :math:`\delta`, with the Hessian
:math:`H` made of the inputs' second moments, the same for every output.

*Optimal brain surgeon* :footcite:p:`hassibi1993optimal` answers, for such a quadratic, the question
"if weight :math:`i` must take a given value, how should the others move, and what does it cost?":
the change :math:`\delta` and cost :math:`\Delta E` above, from one column of :math:`H^{-1}`. It was
meant for pruning (the given value 0); fixing a weight to its quantised value is the same problem.
Applied greedily to one weight at a time, with :math:`H^{-1}` updated after each, it quantises a
layer well but costs a full pass per weight.

GPTQ :footcite:p:`frantar2023gptq` makes it fast with three observations. Quantising the inputs in a
fixed order (rather than cheapest first) loses little and means every output column shares the same
sequence of inverses, so a whole row of :math:`W` is quantised at once. The sequence of inverses is
read off one Cholesky factor :math:`U` of :math:`H^{-1}`, computed once: row :math:`i` of :math:`U`
is row :math:`i` of the inverse that remains after removing inputs :math:`1, \dots, i-1`, divided by
the square root of its diagonal. And the updates can be gathered into blocks for speed (not done
here: the result is the same). The damping :math:`\lambda` keeps :math:`H` invertible when inputs
are dead or collinear; 1 % of the mean diagonal is the paper's choice.

In the tests, on a 32-to-11 layer whose inputs share three common factors, GPTQ's output error is
under a quarter of RTN's at 4 bits and under a sixth at 3 bits; with uncorrelated inputs (a
diagonal :math:`H`) there is nothing to compensate, and GPTQ gives exactly RTN's codes.

.. admonition:: Intuition

   A carpenter cutting a row of shelves to the nearest centimetre makes each cut as close as she
   can, but measures what the previous cuts left over and adjusts the next ones so that the whole
   row still fits the wall. The wall is the layer's output; the order of the cuts is fixed, and the
   shelves still uncut absorb the error.

*Numerical traps.* Inverting :math:`H` and its Cholesky factorisation are done once, in float32, on
the damped :math:`H`; without damping, inputs that are always zero make it singular. Each output's
scale is fixed from the original weights before any update (absmax per output, as
``quantize_absmax(W, axis=0)``), and the updated weights are clipped to the grid, as the paper does.

*Bad input.* ``W`` must be a float matrix, ``X`` a float matrix with ``D_in`` columns, ``bits`` an
integer from 2 to 8, and ``damp`` positive; a ``ValueError`` or ``TypeError`` names the argument.

Inductive bias
--------------

GPTQ assumes that the calibration inputs represent the inputs the layer will see, that the layer's
output error (not its weight error) is what matters, and that errors of successive layers can be
minimised one layer at a time. With unrepresentative calibration data it fits the wrong
correlations; it does not see the network's loss, so a weight that matters downstream but barely
changes this layer's output is not protected.

Example
-------

Optimal brain surgeon on one output's three weights: set the first to 0 (pruning it) and let the
second, whose input is correlated with the first's, take over:

>>> import jax, jax.numpy as jnp
>>> from cookbook.efficiency.gptq import gptq, hessian, obs_step
>>> H = jnp.array([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
>>> w_new, cost = obs_step(jnp.array([1.0, 0.5, -0.3]), H, 0, jnp.array(0.0))
>>> w_new, cost
(Array([ 0. ,  1. , -0.3], dtype=float32), Array(0.75, dtype=float32))

A 7-to-5 layer whose 7 inputs are shifted copies of one wave (so that each is a mix of any two
others: strongly correlated), quantised to 3 bits by rounding to nearest and by GPTQ:

>>> from cookbook.efficiency.quantization import dequantize, quantize_absmax
>>> W = jax.random.normal(jax.random.key(0), (7, 5))
>>> X = jnp.sin(jnp.arange(64.0)[:, None] / 8 + jnp.arange(7.0)[None, :] / 4)  # 64 calibration inputs
>>> hessian(X).shape
(7, 7)
>>> q, scale = gptq(W, X, bits=3)
>>> q.dtype, scale.shape, bool(jnp.array_equal(scale, quantize_absmax(W, bits=3, axis=0)[1]))
(dtype('int8'), (1, 5), True)
>>> def output_error(W_hat):
...     return float(jnp.sum((X @ W - X @ W_hat) ** 2))
>>> round(output_error(dequantize(*quantize_absmax(W, bits=3, axis=0))), 1), round(output_error(dequantize(q, scale)), 1)
(17.1, 8.4)

Implementation notes
--------------------

The paper quantises large language models one transformer block at a time, feeding each block the
outputs of the already quantised ones, with 128 calibration sequences; it reaches 3 to 4 bits
with small loss of perplexity. Its implementation processes the rows in blocks of 128 and applies
the accumulated updates lazily, which makes it memory-bound no longer; "act-order" quantises the
inputs with the largest :math:`H_{ii}` first, and group-wise scales (one per 128 inputs) are common.
SparseGPT uses the same machinery for pruning. Libraries: ``auto-gptq``, ``optimum``, ``llm-compressor``.
"""

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks
from cookbook.efficiency.quantization import quantize_absmax

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"hessian": (), "obs_step": (), "gptq": ("bits",)}


def _inputs(X, D_in=None):
    X = _checks.float_array(X, "X", ndim=2, what=" (B, D_in)")
    if D_in is not None:
        _checks.same_shape(X, "X", (X.shape[0], D_in), expected_from=f"(B, D_in) with D_in = {D_in} from W")
    return X.astype(jnp.promote_types(X.dtype, jnp.float32))


def hessian(X, *, damp=0.01):
    """``H = (2 / B) X^T X + lam I`` with ``lam = damp * mean(diag((2 / B) X^T X))`` (1 if that mean is 0)."""
    X = _inputs(X)
    damp = _checks.positive(damp, "damp")
    return _hessian(X, damp)


@jax.jit
def _hessian(X, damp):
    B, D_in = X.shape
    H = 2.0 / B * X.T @ X  # (D_in, D_in)
    mean_diag = jnp.mean(jnp.diag(H))
    lam = damp * jnp.where(mean_diag > 0, mean_diag, 1.0)
    return H + lam * jnp.eye(D_in, dtype=H.dtype)


def obs_step(w, H, i, value):
    """Optimal brain surgeon: fix ``w[i]`` to ``value`` and move the other weights of ``w`` (D_in,) to
    minimise the quadratic error ``delta^T H delta / 2``. Returns ``(w + delta, cost)``."""
    w = _checks.float_array(w, "w", ndim=1, what=" (D_in,)")
    H = _checks.float_array(H, "H", ndim=2, what=" (D_in, D_in)")
    _checks.same_shape(H, "H", (w.shape[0], w.shape[0]), expected_from="D_in from w")
    i = _checks.int_array(i, "i", ndim=0, what=" (an index)")
    _checks.check_range(i, "i", 0, w.shape[0])
    value = _checks.float_array(value, "value", ndim=0)
    return _obs_step(w, H, i, value)


@jax.jit
def _obs_step(w, H, i, value):
    H_inv_i = jnp.linalg.solve(H, jnp.zeros_like(w).at[i].set(1.0))  # column i of H^{-1}
    gap = w[i] - value
    delta = -gap / H_inv_i[i] * H_inv_i  # (D_in,)
    cost = gap ** 2 / (2 * H_inv_i[i])
    return (w + delta).at[i].set(value), cost  # entry i is exactly value (not up to rounding)


def gptq(W, X, *, bits=4, damp=0.01):
    """GPTQ: ``(q, scale)`` as ``quantize_absmax(W, bits=bits, axis=0)`` returns them (int8 codes, one
    scale per output), with the rows chosen in order to minimise the error on ``X W``.

    ``W`` (D_in, D_out) is the weight of ``y = x W``; ``X`` (B, D_in) the calibration inputs.
    """
    W = _checks.check_no_nan(_checks.float_array(W, "W", ndim=2, what=" (D_in, D_out)"), "W")
    X = _checks.check_no_nan(_inputs(X, W.shape[0]), "X")
    _, scale = quantize_absmax(W, bits=bits, axis=0)  # checks W's values and bits; (1, D_out)
    H = hessian(X, damp=damp)
    q_max = jnp.asarray(2 ** (_checks.size(bits, "bits") - 1) - 1, scale.dtype)  # traced: one program for every bits
    return _gptq(W.astype(scale.dtype), H, scale, q_max)


@jax.jit
def _gptq(W, H, scale, q_max):
    D_in = W.shape[0]
    L = jnp.linalg.cholesky(H)
    H_inv = jax.scipy.linalg.cho_solve((L, True), jnp.eye(D_in, dtype=H.dtype))
    U = jnp.linalg.cholesky(H_inv).T  # upper, U^T U = H^{-1}
    safe = jnp.where(scale > 0, scale, 1.0)[0]  # an all-zero output gives codes 0

    def row(W, i):
        q = jnp.clip(jnp.round(W[i] / safe), -q_max, q_max)  # (D_out,)
        err = (W[i] - q * safe) / U[i, i]
        W = W - U[i][:, None] * err[None, :]  # rows > i absorb the error; rows < i are untouched (U[i, :i] = 0)
        return W, q

    _, q = jax.lax.scan(row, W, jnp.arange(D_in))
    return q.astype(jnp.int8), scale
