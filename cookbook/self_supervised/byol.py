r"""BYOL: bootstrap your own latent
===============================

Learn a representation without labels and without negatives by predicting, from one view of an
image, what a slowly moving copy of the network makes of the other view: a momentum target
network, a predictor and a stop-gradient, and no term that pushes images apart.

Equation
--------

.. math::

   z_\theta = g_\theta(f_\theta(v)), \qquad p_\theta = q_\theta(z_\theta), \qquad
   z'_\xi = g_\xi(f_\xi(v'))

   \mathcal{L}_{\theta} = \frac{1}{N} \sum_{b=1}^{N} \left\lVert
   \frac{p_{\theta, b}}{\lVert p_{\theta, b} \rVert}
   - \frac{\operatorname{sg}(z'_{\xi, b})}{\lVert z'_{\xi, b} \rVert} \right\rVert^2
   = \frac{1}{N} \sum_{b=1}^{N} \left(2 - 2 \cos(p_{\theta, b}, z'_{\xi, b})\right)

   \xi \leftarrow \tau \xi + (1 - \tau)\, \theta

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`v`, :math:`v'`
     - two augmented views of the same :math:`N` images
     - the inputs of the encoders (the tests draw them with the augmentation of :doc:`simclr`)
     - ``(N, H, W)``
   * - :math:`f`, :math:`g`, :math:`q`
     - encoder, projector and predictor networks
     - any functions of parameters; the tests use the MLP of :doc:`simclr`
     - functions
   * - :math:`\theta`, :math:`\xi`
     - online parameters (trained by gradient) and target parameters (an average of them)
     - ``online_params``, ``target_params``
     - pytrees of one structure
   * - :math:`p_\theta`
     - the online network's prediction of the target's projection
     - ``predictions``
     - ``(N, D)``
   * - :math:`z'_\xi`
     - the target network's projection of the other view
     - ``targets``
     - ``(N, D)``
   * - :math:`\operatorname{sg}`
     - stop-gradient: a value that the gradient treats as a constant
     - ``jax.lax.stop_gradient``
     - same as its input
   * - :math:`\mathcal{L}_{\theta}`
     - the BYOL loss of one ordering of the views (the tests add the swapped one)
     - the value returned by ``byol_loss``
     - scalar
   * - :math:`\tau`
     - the target's decay rate, close to 1
     - ``decay``
     - scalar
   * - :math:`N`, :math:`D`, :math:`b`
     - batch size, embedding width, index of an image
     - the rows and the columns of ``predictions``
     - scalars

Explanation
-----------

BYOL :footcite:`grill2020byol` has two networks. The *online* network embeds one view and, through
an extra small network, the predictor :math:`q_\theta`, guesses the *target* network's embedding of
the other view; the loss is the squared distance between the two after each is normalised to unit
length, :math:`2 - 2\cos`. The gradient reaches only the online parameters: the target's output
passes through a stop-gradient. The target's parameters are never trained; after each step they
move a little towards the online ones, an exponential moving average with decay :math:`\tau`
(0.996 in the paper, raised to 1 over training). The loss is symmetrised by also predicting the
first view's target from the second.

**Collapse.** Nothing in the loss forbids it: a constant output for every image makes the loss
zero. That training still does not collapse is due to the design: the predictor and the
stop-gradient make the update of :math:`\theta` something other than the gradient of any loss of
:math:`(\theta, \xi)` together, and the analysis of Tian et al. :footcite:`tian2021understanding`
shows that the collapsed point, though a solution, is not where these dynamics go when the
predictor learns fast enough relative to the target's decay. Remove the stop-gradient and let the
target be the online network itself, and the same loss is an ordinary loss of :math:`\theta`,
minimised by the constant map, which training finds.

**MoCo.** Momentum Contrast :footcite:`he2020moco` introduced the moving-average encoder for
another purpose: to keep a long queue of negatives for a contrastive loss (as in :doc:`simclr`)
consistent from one step to the next. BYOL keeps the moving average and drops the negatives.

.. admonition:: Intuition

   A student copying the answers of an earlier version of herself: the earlier version (the
   target) is a blurred memory of her recent selves, so it changes slowly, and she learns by
   trying to predict what it would say about a different photograph of the same thing. Because
   the target lags, she cannot make the task trivial by changing both sides at once.

Inductive bias
--------------

As in :doc:`simclr`, the augmentations say what the representation ignores. BYOL adds no
assumption that different images differ, so it does not push apart two images of the same class
as a contrastive loss does, and it needs no large batch. The price is that nothing but the
training dynamics prevents collapse: the decay, the predictor's learning rate and the
normalisation must be in balance.

Example
-------

The loss is :math:`2 - 2\cos`, so it lies in :math:`[0, 4]` and ignores lengths; its gradient
never reaches the targets; the target moves a fraction :math:`1 - \tau` of the way to the online
parameters:

>>> import jax, jax.numpy as jnp
>>> from cookbook.self_supervised.byol import byol_loss, ema_update
>>> p = jnp.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
>>> z = jnp.array([[2.0, 0.0], [0.0, -1.0], [0.0, 1.0]])
>>> round(float(byol_loss(p, z)), 4)  # cosines 1, -1, 0: (0 + 4 + 2) / 3
2.0
>>> jax.grad(byol_loss, argnums=1)(p, z)
Array([[0., 0.],
       [0., 0.],
       [0., 0.]], dtype=float32)
>>> ema_update({"w": jnp.array([0.0, 1.0])}, {"w": jnp.array([1.0, 1.0])}, 0.9)
{'w': Array([0.1, 1. ], dtype=float32)}

Implementation notes
--------------------

The paper's encoder is a ResNet with a projector and a predictor of two layers each, batch
normalisation in both; the tests use the 64-128-8 MLP of :doc:`simclr` as :math:`g \circ f`
and an 8-32-8 MLP (the same ``encode``) as the predictor. ``ema_update`` is ``optax.incremental_update`` with
``step_size`` :math:`1 - \tau`; the tests check that the two agree. MoCo's queue of negatives is
left out.

**It learns.** On scikit-learn's digits, the tests train that network for 400 Adam steps on
batches of 128 images, two views each, with :math:`\tau = 0.996`, without a label. The predictor
learns at ten times the encoder's rate: with one rate for both, this small network without batch
normalisation collapsed, as the analysis of Tian et al. predicts for a slow predictor. A
10-nearest-neighbour classifier on its embeddings reads 500 held-out digits with an accuracy of
at least 0.73, at least 0.04 above the same network at its random initialisation (0.76 against
0.69 here, and from 0.74 to 0.81 over four draws of the augmentations: BYOL on so small a network
is sensitive to its settings). The collapse detector is the mean cosine between the embeddings of two
different digits: below 0.95 after training (about 0.90), and above 0.995 for the same run
without the stop-gradient and the target network (the online network as its own target), whose
k-NN accuracy falls below the untrained network's.
"""

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"byol_loss": (), "ema_update": ()}

EPS = 1e-12  # floor of a vector's norm: a zero vector normalises to zero, not NaN


def _normalise(x):
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=1, keepdims=True), EPS**2))


def byol_loss(predictions, targets):
    """The mean over the N rows of ``2 - 2 cos(p, z)`` between the online network's
    ``predictions`` (N, D) and the target network's projections ``targets`` (N, D) of the other
    view. The targets pass through a stop-gradient: the loss's gradient reaches only the
    predictions. In float32 (float64 for float64 input)."""
    predictions = _checks.float_array(predictions, "predictions", ndim=2, what=" (N, D)")
    targets = _checks.float_array(targets, "targets", ndim=2, what=" (N, D)")
    _checks.same_shape(targets, "targets", predictions.shape, expected_from="the shape of predictions")
    return _loss(predictions, targets)


@jax.jit
def _loss(predictions, targets):
    dtype = jnp.promote_types(jnp.result_type(predictions, targets), jnp.float32)
    p = _normalise(predictions.astype(dtype))
    z = _normalise(jax.lax.stop_gradient(targets).astype(dtype))
    return jnp.mean(jnp.sum((p - z) ** 2, axis=1))  # = mean(2 - 2 cos) for non-zero rows


def ema_update(target_params, online_params, decay):
    """The target's new parameters ``decay * target + (1 - decay) * online``, leaf by leaf, for
    two pytrees of one structure and ``decay`` in [0, 1]."""
    _checks.same_tree(online_params, "online_params", target_params, "target_params")
    _checks.same_tree(target_params, "target_params", target_params, "target_params")
    decay = _checks.positive(decay, "decay", allow_zero=True)
    if isinstance(decay, (int, float)) and decay > 1:
        raise ValueError(f"decay must lie in [0, 1], got {decay}")
    if isinstance(decay, (int, float)):  # a number (the usual case): a static argument, so 1 - decay in Python
        return _ema_static(target_params, online_params, float(decay))
    return _ema(target_params, online_params, decay)


def _ema_update(target_params, online_params, decay):
    return jax.tree.map(lambda t, o: (decay * t + (1.0 - decay) * o).astype(jnp.result_type(t)),
                        target_params, online_params)


_ema_static = jax.jit(_ema_update, static_argnums=2)
_ema = jax.jit(_ema_update)  # a decay that is an array or traced
