r"""VICReg: variance, invariance, covariance
========================================

Learn a representation without labels and without negatives from three separate terms, one for
each thing a good embedding of two views needs: the views agree (invariance), every feature varies
over the batch (variance), and no two features repeat each other (covariance).

Equation
--------

.. math::

   s(Z, Z') = \frac{1}{N D} \sum_{b=1}^{N} \lVert z_b - z'_b \rVert^2, \qquad
   v(Z) = \frac{1}{D} \sum_{j=1}^{D} \max\!\left(0,\ \gamma - \sqrt{\operatorname{Var}(z_{\cdot j}) + \epsilon}\right)

   C(Z) = \frac{1}{N - 1} \sum_{b=1}^{N} (z_b - \bar{z})(z_b - \bar{z})^\top, \qquad
   c(Z) = \frac{1}{D} \sum_{i \ne j} C(Z)_{ij}^2

   \mathcal{L} = \lambda\, s(Z, Z') + \mu \left[v(Z) + v(Z')\right] + \nu \left[c(Z) + c(Z')\right]

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`Z`, :math:`Z'`; :math:`z_b`, :math:`z'_b`
     - embeddings of the two views of :math:`N` images; row :math:`b` of each, from image :math:`b`
     - ``z1``, ``z2`` (``z`` in the per-view terms)
     - ``(N, D)``; ``(D,)``
   * - :math:`s`
     - invariance: the mean squared difference of the two views
     - ``invariance_term``
     - scalar
   * - :math:`\operatorname{Var}(z_{\cdot j})`
     - unbiased variance over the batch of feature :math:`j`
     - ``variance``
     - ``(D,)``
   * - :math:`\gamma`, :math:`\epsilon`
     - target standard deviation of each feature; a small constant under the square root
     - ``gamma``, ``eps``
     - scalars
   * - :math:`v`
     - variance: the mean hinge on each feature's standard deviation
     - ``variance_term``
     - scalar
   * - :math:`\bar{z}`, :math:`C(Z)`
     - mean embedding over the batch; covariance of the features
     - ``mean``, ``covariance``
     - ``(D,)``, ``(D, D)``
   * - :math:`c`
     - covariance: the off-diagonal squared covariances, divided by :math:`D`
     - ``covariance_term``
     - scalar
   * - :math:`\lambda`, :math:`\mu`, :math:`\nu`
     - weights of the invariance, variance and covariance terms
     - ``sim_weight``, ``var_weight``, ``cov_weight``
     - scalars
   * - :math:`\mathcal{L}`
     - the VICReg loss
     - the value returned by ``vicreg_loss``
     - scalar
   * - :math:`N`, :math:`D`, :math:`b`, :math:`i`, :math:`j`
     - batch size, embedding width; index of an image, indices of features
     - ``N``, ``D``
     - scalars

Explanation
-----------

VICReg :footcite:`bardes2022vicreg` splits what :doc:`barlow_twins` asks of its cross-correlation
matrix into three terms that act on raw, unstandardised embeddings. The invariance term :math:`s`
is a plain mean squared error between the two views: alone it is minimised by the constant map.
The variance term :math:`v` forbids that collapse feature by feature: a hinge charges each feature
whose standard deviation over the batch falls below :math:`\gamma` (1 in the paper) and is zero
above it, so it never pushes features apart for their own sake. The covariance term :math:`c`
pushes the off-diagonal covariances to zero, so that the :math:`D` features do not all carry the
same information (dimensional collapse). The two regularisers act on each view separately; only
:math:`s` compares the views.

**Collapse.** A constant embedding has :math:`\operatorname{Var} = 0` in every feature, so each
hinge is at its largest, :math:`\gamma - \sqrt{\epsilon}`, and :math:`v = 0.99` for
:math:`\gamma = 1`, :math:`\epsilon = 10^{-4}`: no embedding pays more. The :math:`\epsilon`
keeps the gradient of the square root finite at zero variance, where it would be infinite. The
hinge is on the standard deviation, not the variance: the paper found that a hinge on the variance
gives a gradient that vanishes as a feature collapses, just when it is needed.

**Weights.** The paper uses :math:`\lambda = \mu = 25` and :math:`\nu = 1` for :math:`D = 8192`,
and so does ``vicreg_loss`` by default. The covariance term sums :math:`D(D-1)` entries but divides
by :math:`D` only, so it weighs less as :math:`D` shrinks; the tests, at :math:`D = 8`, raise
:math:`\nu` to 25. The invariance term here is a mean over the :math:`N D` entries, as in the
authors' code (their equation sums over the features).

.. admonition:: Intuition

   A seating plan for a dinner: each guest has two place cards that must sit together
   (invariance); the guests must use the whole room, not crowd into one corner (variance); and
   no two tables may be arranged the same way along different walls (covariance). Each rule is
   easy to check on its own, and each forbids one way of cheating the others.

Inductive bias
--------------

As in :doc:`simclr`, the augmentations say what to ignore. The variance term assumes that every
feature should vary over a batch by at least :math:`\gamma`, whatever the data; the covariance
term, like Barlow Twins, assumes the useful information is spread over linearly decorrelated
features. Unlike Barlow Twins, nothing is standardised, so the scale of the embeddings is fixed by
:math:`\gamma`, and the two branches need not share weights or even architectures: the terms on
:math:`Z` and :math:`Z'` are separate, which lets VICReg pair an image encoder with a different
one.

Example
-------

A constant embedding pays the largest variance penalty, :math:`\gamma - \sqrt{\epsilon} = 0.99`;
spread, uncorrelated features pay none; one feature copied into all three slots pays the
covariance term:

>>> import numpy as np
>>> from cookbook.self_supervised.vicreg import covariance_term, invariance_term, variance_term, vicreg_loss
>>> rng = np.random.default_rng(0)
>>> z1 = 2.0 * rng.standard_normal((64, 3)).astype(np.float32)
>>> z2 = z1 + 0.1 * rng.standard_normal((64, 3)).astype(np.float32)
>>> round(float(variance_term(np.ones((64, 3), np.float32))), 4), float(variance_term(z1))
(0.99, 0.0)
>>> round(float(invariance_term(z1, z2)), 3)
0.011
>>> copied = np.tile(z1[:, :1], (1, 3))
>>> float(covariance_term(copied)) > 10 * float(covariance_term(z1))
True
>>> round(float(vicreg_loss(z1, z2)), 2) < 1.0
True

Implementation notes
--------------------

The paper puts an expander (three linear layers of width 8192) between the representation and the
loss; the small test network has none. The variance is the unbiased one, so the batch must hold
at least two images; ``variance_term`` and ``covariance_term`` raise otherwise, and
``covariance_term`` raises on a single feature, which has no covariance to penalise.

**It learns.** On scikit-learn's digits, the tests train the 64-128-8 MLP of :doc:`simclr`
(``init``, ``encode``, ``augment``) with ``vicreg_loss`` at :math:`\lambda = \mu = \nu = 25` for 400
Adam steps on batches of 128 images, two views each, without a label. A 10-nearest-neighbour
classifier on its embeddings reads 500 held-out digits with an accuracy of at least 0.85, at least
0.10 above the same network at its random initialisation (0.90 against 0.69 here; 0.90 to 0.92
over draws of the augmentations). The collapse detector is the smallest standard deviation of a
feature over the training digits: above 0.5 after training (0.77 to 0.89, near
:math:`\gamma = 1`), and below 0.05 when the same run has
:math:`\mu = 0` (about 0.0002): without the variance term, the invariance term collapses the
embedding.
"""

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"invariance_term": (), "variance_term": (), "covariance_term": (), "vicreg_loss": ()}


def _batch(z, name="z"):
    z = _checks.float_array(z, name, ndim=2, what=" (N, D)")
    if z.shape[0] < 2:
        raise ValueError(f"{name} must hold at least two rows (N >= 2) for an unbiased variance, got shape {z.shape}")
    return z


def _compute_dtype(*zs):
    return jnp.promote_types(jnp.result_type(*zs), jnp.float32)


# The terms' compiled cores: each public function checks its input, then runs one program per shape
# (rather than one per eager operation).
@jax.jit
def _invariance(z1, z2):
    d = (z1 - z2).astype(_compute_dtype(z1, z2))
    return jnp.mean(d * d)


@jax.jit
def _variance(z, gamma, eps):
    z = z.astype(_compute_dtype(z))
    variance = jnp.var(z, axis=0, ddof=1)  # (D,), unbiased
    return jnp.mean(jax.nn.relu(gamma - jnp.sqrt(variance + eps)))


@jax.jit
def _covariance(z):
    z = z.astype(_compute_dtype(z))
    N, D = z.shape
    mean = z.mean(axis=0, keepdims=True)  # (1, D)
    centred = z - mean
    covariance = centred.T @ centred / (N - 1)  # (D, D)
    off_diagonal = jnp.sum(covariance * covariance) - jnp.sum(jnp.diagonal(covariance) ** 2)
    return off_diagonal / D


def invariance_term(z1, z2):
    """The mean squared difference of two views ``z1``, ``z2`` (N, D), over all N D entries."""
    z1 = _checks.float_array(z1, "z1", ndim=2, what=" (N, D)")
    z2 = _checks.float_array(z2, "z2", ndim=2, what=" (N, D)")
    _checks.same_shape(z2, "z2", z1.shape, expected_from="the shape of z1")
    return _invariance(z1, z2)


def variance_term(z, gamma=1.0, eps=1e-4):
    """The mean over the D features of ``max(0, gamma - sqrt(var + eps))``, ``var`` the unbiased
    variance of the feature over the N rows of ``z`` (N, D), N >= 2."""
    z = _batch(z)
    gamma = _checks.positive(gamma, "gamma")
    eps = _checks.positive(eps, "eps", allow_zero=True)
    return _variance(z, gamma, eps)


def covariance_term(z):
    """The sum of the squared off-diagonal entries of the (unbiased) covariance (D, D) of the
    features of ``z`` (N, D), divided by D; N >= 2 and D >= 2 (one feature has no covariance)."""
    z = _batch(z)
    if z.shape[1] < 2:
        raise ValueError(f"z must hold at least two features (D >= 2) to have a covariance term, got shape {z.shape}")
    return _covariance(z)


def vicreg_loss(z1, z2, sim_weight=25.0, var_weight=25.0, cov_weight=1.0, *, gamma=1.0, eps=1e-4):
    """The VICReg loss of two views ``z1``, ``z2`` (N, D), row ``b`` of each an embedding of image
    ``b``: ``sim_weight * s + var_weight * (v(z1) + v(z2)) + cov_weight * (c(z1) + c(z2))``.
    A scalar, in float32 (float64 for float64 input)."""
    z1, z2 = _batch(z1, "z1"), _batch(z2, "z2")
    _checks.same_shape(z2, "z2", z1.shape, expected_from="the shape of z1")
    sim_weight = _checks.positive(sim_weight, "sim_weight", allow_zero=True)
    var_weight = _checks.positive(var_weight, "var_weight", allow_zero=True)
    cov_weight = _checks.positive(cov_weight, "cov_weight", allow_zero=True)
    gamma = _checks.positive(gamma, "gamma")
    eps = _checks.positive(eps, "eps", allow_zero=True)
    return _vicreg_loss(z1, z2, sim_weight, var_weight, cov_weight, gamma, eps)


@jax.jit
def _vicreg_loss(z1, z2, sim_weight, var_weight, cov_weight, gamma, eps):
    return (sim_weight * _invariance(z1, z2)
            + var_weight * (_variance(z1, gamma, eps) + _variance(z2, gamma, eps))
            + cov_weight * (_covariance(z1) + _covariance(z2)))
