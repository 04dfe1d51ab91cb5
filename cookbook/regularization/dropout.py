r"""Dropout
=======

Zero each activation at random with probability :math:`p` during training and scale the survivors
by :math:`1/(1-p)`, so that a large network cannot lean on any single unit; reach for it when a
fully connected or attention layer overfits.

Equation
--------

.. math::

   m_i \sim \operatorname{Bernoulli}(1 - p), \qquad
   \tilde{x}_i = \frac{m_i \, x_i}{1 - p}, \qquad
   \mathbb{E}_{m}\!\left[\tilde{x}_i\right] = x_i

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_i`
     - an activation (one entry of the input)
     - ``x``
     - any, e.g. ``(B, D)``
   * - :math:`m_i`
     - keep mask: 1 keeps the entry, 0 drops it
     - ``keep``
     - like ``x`` (or with 1 on ``broadcast_dims``)
   * - :math:`\tilde{x}_i`
     - the output of dropout
     - ``dropout(key, x, rate)``
     - like ``x``
   * - :math:`p`
     - drop probability, the *rate* (not the keep probability)
     - ``rate``
     - Python float in :math:`[0, 1]`
   * - :math:`i`
     - index of an entry
     - (elementwise)
     - scalar

Explanation
-----------

During training every entry of the input is kept with probability :math:`1-p` and set to zero
otherwise, independently; the kept entries are divided by :math:`1-p`. The division is the
*inverted* form of dropout: it makes the expected output equal to the input entry by entry, so at
evaluation time the layer is simply the identity (``deterministic=True``) and the trained weights
are used unchanged. The original paper instead kept the training output unscaled and multiplied
the weights by :math:`1-p` at test time :footcite:`srivastava2014dropout`; the two agree in
expectation, and the inverted form keeps the evaluation path free of any dropout bookkeeping.

**An ensemble of thinned networks.** A network with :math:`n` units that can be dropped is, for each
mask, a different "thinned" sub-network, and there are :math:`2^n` of them, all sharing one set of
weights. Each training step trains one randomly chosen member of this exponentially large
ensemble on one mini-batch. At test time the full network with expectation-matched activations
approximates the average of the ensemble's predictions, exactly for a single linear layer and
approximately (a geometric mean of the members, roughly) for deep nonlinear ones
:footcite:`srivastava2014dropout,hinton2012improving`.

**A Bayesian reading.** :footcite:t:`gal2016dropout` show that training with dropout (and weight
decay) performs approximate variational inference in a Bayesian network whose approximate
posterior over each weight matrix sets whole rows to zero at random: in this book's convention
:math:`x W`, row :math:`i` of :math:`W` holds the weights that leave input unit :math:`i`, the unit
that dropout zeroes (the paper writes :math:`W x` and so speaks of columns). Keeping dropout *on* at
test time and averaging :math:`T` stochastic forward passes ("Monte Carlo dropout") then estimates
the predictive mean, and the spread of those passes is a cheap estimate of model uncertainty: call
this function with ``deterministic=False`` and a fresh key per pass.

**Keys and the edge rates.** The function draws the whole mask from its key in a single call, so a
key gives one mask, the same every time; the caller must split a fresh key for every step and every
layer (``k_drop1, k_drop2 = jax.random.split(key)``). With ``rate=0`` or ``deterministic=True`` it
returns ``x`` unchanged and needs no key. With ``rate=1`` every entry is dropped: the scaling
:math:`1/(1-p)` would divide by zero, so that case returns zeros directly, as
``flax.linen.Dropout`` does. A rate outside :math:`[0, 1]` is a ``ValueError``. The mask is drawn
with ``jax.random.bernoulli(key, 1 - rate, shape)``, the same recipe as Flax's, so given the same
key the two produce the same mask bit for bit.

*Numerical trap.* In float16 or bfloat16 the factor :math:`1/(1-p)` is rounded to the input's
precision, so the expectation is matched only to that precision; the scaling is done in the input's
dtype so that dropout never silently upcasts activations.

Dropout is elementwise, so it is written for an array of any shape (the batch is not special):
one key covers the whole array and every entry gets its own independent draw. ``broadcast_dims``
shares one draw along the listed axes, e.g. ``broadcast_dims=(1, 2)`` on ``(B, H, W, C)`` images
drops whole channels ("spatial dropout").

.. admonition:: Intuition

   The authors' own inspiration was sexual reproduction: a gene is passed on with a random half
   of the other genes, so it pays for it to be useful alongside many random partners rather than
   in one precise combination. A unit under dropout is in the same position: it cannot count on
   any particular other unit being present, so it learns a feature that helps on its own. A team
   whose members are randomly absent on any day works the same way: nobody may be the only one
   who knows how something is done.

Inductive bias
--------------

Dropout assumes that a good representation is *redundant*: that the prediction should survive the
loss of any random subset of features, so that many weak, independently useful features are
preferred to a few that only work together. This suits wide layers with many correlated inputs
(fully connected layers, attention weights, embeddings). It suits convolutional feature maps less,
where neighbouring activations are strongly correlated and dropping single pixels removes little
information (drop whole channels or regions instead), and it slows training, because each step
sees a noisy sub-network.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.regularization.dropout import dropout
>>> x = jnp.arange(1.0, 9.0).reshape(2, 4)
>>> y = dropout(jax.random.key(0), x, 0.5)
>>> y
Array([[ 0.,  0.,  6.,  8.],
       [ 0., 12., 14.,  0.]], dtype=float32)
>>> bool(jnp.all((y == 0) | (y == 2 * x)))  # dropped, or kept and scaled by 1/(1 - 0.5)
True
>>> bool(jnp.all(dropout(None, x, 0.5, deterministic=True) == x))  # evaluation: the identity
True
>>> many = dropout(jax.random.key(1), jnp.ones(100_000), 0.3)
>>> round(float(many.mean()), 2), round(float((many == 0).mean()), 2)  # expectation kept, 30% dropped
(1.0, 0.3)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"dropout": ("rate", "deterministic", "broadcast_dims")}


def dropout(key, x, rate, *, deterministic=False, broadcast_dims=()):
    """Inverted dropout: drop each entry of ``x`` with probability ``rate``, scale the rest by ``1/(1-rate)``.

    ``rate`` is a Python float in [0, 1]. With ``deterministic=True`` or ``rate == 0`` the input is
    returned unchanged (``key`` may be ``None``); with ``rate == 1`` the output is all zeros. The axes
    in ``broadcast_dims`` share one mask entry. The key is consumed by one draw: split a new one per call.
    """
    rate = float(rate)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be a drop probability in [0, 1], got {rate}")
    x = _checks.float_array(x, "x")  # an integer x would be divided by 1 - rate and rounded
    for d in broadcast_dims:
        if not -x.ndim <= _checks.size(d, "broadcast_dims", minimum=-x.ndim) < x.ndim:
            raise ValueError(f"broadcast_dims must be axes of x, in [{-x.ndim}, {x.ndim}), got {broadcast_dims}")
    broadcast_dims = tuple(d % x.ndim for d in broadcast_dims)  # -1 is the last axis, as in NumPy
    if deterministic or rate == 0.0:
        return x
    if rate == 1.0:
        return jnp.zeros_like(x)  # every entry dropped; 1 / (1 - rate) would divide by zero
    if key is None:
        raise ValueError("key must be a PRNG key when deterministic=False and 0 < rate, got None")
    keep_prob = 1.0 - rate
    # The keep probability traced (as jax.random.bernoulli takes it eagerly) and the divisor rounded
    # to x's dtype here, so that every rate runs one compiled program per shape.
    return _dropout(key, x, keep_prob, np.asarray(keep_prob, x.dtype), broadcast_dims)


@functools.partial(jax.jit, static_argnums=4)
def _dropout(key, x, keep_prob, divisor, broadcast_dims):
    mask_shape = tuple(1 if d in broadcast_dims else n for d, n in enumerate(x.shape))
    keep = jax.random.bernoulli(key, keep_prob, mask_shape)  # one draw from the key, never reused
    keep = jnp.broadcast_to(keep, x.shape)
    return jnp.where(keep, x / divisor, jnp.zeros_like(x))
