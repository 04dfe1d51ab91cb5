r"""Dynamic Tanh (DyT)
==================

Replace a transformer's layer normalisation by an element-wise :math:`\gamma \tanh(\alpha x) + \beta`
with a learned scalar :math:`\alpha`: no mean, no variance, no reduction over features, and in the
experiments of its authors the same accuracy, because a trained LayerNorm behaves much like it.

Equation
--------

.. math::

   \operatorname{DyT}(x) = \gamma \odot \tanh(\alpha\, x) + \beta

   \text{compare } \operatorname{LN}(x) = \gamma \odot \frac{x - \mu(x)}{\sigma(x)} + \beta, \qquad
   \mu(x) = \frac{1}{D}\sum_{i} x_i, \qquad \sigma(x)^2 = \frac{1}{D}\sum_{i} (x_i - \mu(x))^2

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`, :math:`x_i`
     - a token's features; one of them
     - ``x``
     - ``(..., D)``
   * - :math:`\alpha`
     - the learned scalar that sets how soon the curve saturates
     - ``params["alpha"]``
     - ``()``
   * - :math:`\gamma`, :math:`\beta`
     - the per-feature scale and shift, as in LayerNorm
     - ``params["gamma"]``, ``params["beta"]``
     - ``(D,)``
   * - :math:`\mu(x)`, :math:`\sigma(x)`, :math:`D`
     - LayerNorm's mean and standard deviation over a token's :math:`D` features
     - (LayerNorm only, see :doc:`layer_norm`)
     - scalars
   * - :math:`i`
     - a feature's index
     - the last axis of ``x``
     - integer

Explanation
-----------

Normalisation layers were long thought indispensable in transformers. :footcite:t:`zhu2025dyt`
looked at what trained LayerNorms actually compute: plotted over many tokens, a feature's output
against its input is mostly a straight line through the origin, bending into an S for the few tokens
with extreme values. The reason is that LayerNorm divides by each token's own standard deviation,
and a token with an outlier feature has a large one, so its outliers are squashed. A tanh produces
the same shape with no statistics at all: linear near zero, saturating for large inputs.

DyT keeps LayerNorm's affine :math:`\gamma, \beta` and replaces the normalisation by
:math:`\tanh(\alpha x)`, where one learned scalar :math:`\alpha` per layer sets the scale of the
linear region (about :math:`1/\text{std}` of the input, which it tracks during training). It is a
drop-in replacement in the pre-norm block; its authors report matching accuracy on vision and
language transformers with :math:`\alpha` initialised at 0.5 (lower for the largest language
models). Because nothing is reduced over features, DyT costs one fused element-wise operation and
each feature's output depends on that feature alone; the tests check both that and the S-curve on
synthetic tokens, where a fitted tanh matches LayerNorm's map more than ten times better than a
straight line (the figure).

.. plot::

   from cookbook.normalization.dynamic_tanh import s_curve_data, tanh_fit
   v, y = s_curve_data()
   alpha, gamma, beta, _ = tanh_fit(v, y)
   fig, ax = plt.subplots(figsize=(5.6, 3.4))
   ax.plot(v, y, ".", ms=2, alpha=0.4, label="LayerNorm output of feature 0")
   ax.plot(v, gamma * np.tanh(alpha * v) + beta, "k", lw=1.2, label=f"fitted tanh, alpha = {alpha:.2f}")
   ax.set(xlabel="input of feature 0", ylabel="output")
   ax.legend(fontsize=8)
   fig.tight_layout()

.. admonition:: Intuition

   A sound engineer's limiter keeps quiet passages as they are and caps the loud bangs. LayerNorm
   does this indirectly, by turning the whole token down when one feature is loud; DyT puts a soft
   limiter on every feature directly, with one knob (:math:`\alpha`) for where capping begins.

Inductive bias
--------------

DyT assumes that what normalisation contributes is bounding extreme activations, not centring or
rescaling each token: it does not make a token's output invariant to the token's scale, as
LayerNorm does, and relies on training to keep inputs in the range that :math:`\alpha` sets. It has
no statistics, so it behaves the same for any batch or sequence length, and the same in training and
inference.

Example
-------

Near zero DyT is linear with slope :math:`\gamma\alpha`; far out it saturates at :math:`\pm\gamma`,
whatever the other features do:

>>> import jax.numpy as jnp
>>> from cookbook.normalization.dynamic_tanh import dynamic_tanh, init
>>> params = init(3, alpha=0.5)
>>> dynamic_tanh(params, jnp.array([0.02, 4.0, -100.0])).round(3)
Array([ 0.01 ,  0.964, -1.   ], dtype=float32)
>>> dynamic_tanh(params, jnp.array([0.02, 4.0, 7.0]))[:2].round(3)
Array([0.01 , 0.964], dtype=float32)
"""

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"dynamic_tanh": (), "init": ("D", "alpha")}


def init(D, alpha=0.5):
    """:math:`\\alpha` = ``alpha``, :math:`\\gamma` = 1, :math:`\\beta` = 0 for ``D`` features."""
    _checks.size(D, "D", minimum=1)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"alpha must be a positive number, got {alpha!r}")
    return {"alpha": jnp.float32(alpha), "gamma": jnp.ones(D), "beta": jnp.zeros(D)}


def dynamic_tanh(params, x):
    """``gamma * tanh(alpha * x) + beta`` over the last axis of ``x`` (..., D), element by element."""
    x = _checks.float_array(x, "x", min_ndim=1, what=" (..., D)")
    D = x.shape[-1]
    alpha = _checks.same_shape(_checks.float_array(params["alpha"], 'params["alpha"]'), 'params["alpha"]', ())
    gamma = _checks.same_shape(_checks.float_array(params["gamma"], 'params["gamma"]'), 'params["gamma"]', (D,),
                               expected_from="D from x")
    beta = _checks.same_shape(_checks.float_array(params["beta"], 'params["beta"]'), 'params["beta"]', (D,),
                              expected_from="D from x")
    return _dynamic_tanh(alpha, gamma, beta, x)


@jax.jit  # one compiled program per shape rather than a handful of small ones when called eagerly
def _dynamic_tanh(alpha, gamma, beta, x):
    per_feature = (1,) * (x.ndim - 1) + (x.shape[-1],)  # gamma and beta act along the last axis
    y = jnp.tanh(alpha.astype(jnp.float32) * x.astype(jnp.float32))
    y = gamma.reshape(per_feature) * y + beta.reshape(per_feature)
    return y.astype(x.dtype)


def s_curve_data(num_tokens=2000, D=16, seed=0):
    """Synthetic tokens whose feature 0 sweeps from -12 to 12 while the others are standard normal;
    returns (feature 0's input, its LayerNorm output), in NumPy float64."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_tokens, D))
    x[:, 0] = np.linspace(-12.0, 12.0, num_tokens)
    y = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    return x[:, 0], y[:, 0]


def tanh_fit(v, y, alphas=np.linspace(0.01, 2.0, 400)):
    """The least-squares ``gamma * tanh(alpha * v) + beta`` over a grid of ``alphas``: returns
    (alpha, gamma, beta, mean squared error)."""
    best = None
    for alpha in alphas:
        A = np.stack([np.tanh(alpha * v), np.ones_like(v)], axis=1)
        (gamma, beta), *_ = np.linalg.lstsq(A, y, rcond=None)
        mse = float(np.mean((A @ np.array([gamma, beta]) - y) ** 2))
        if best is None or mse < best[3]:
            best = (float(alpha), float(gamma), float(beta), mse)
    return best
