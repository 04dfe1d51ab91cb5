r"""Barlow Twins
============

Learn a representation without labels and without negatives by driving the cross-correlation
matrix of two views' embeddings to the identity: each feature agrees across the views, and no two
features repeat each other.

Equation
--------

.. math::

   \hat{z}^{A}_{bi} = \frac{z^{A}_{bi} - \mu^{A}_i}{\sqrt{(\sigma^{A}_i)^2 + \epsilon}}, \qquad
   \hat{z}^{B}_{bj} = \frac{z^{B}_{bj} - \mu^{B}_j}{\sqrt{(\sigma^{B}_j)^2 + \epsilon}}, \qquad
   \mathcal{C}_{ij} = \frac{1}{N} \sum_{b=1}^{N} \hat{z}^{A}_{bi}\, \hat{z}^{B}_{bj}

   \mathcal{L}_{\text{BT}} = \sum_{i=1}^{D} \left(1 - \mathcal{C}_{ii}\right)^2
   + \lambda \sum_{i=1}^{D} \sum_{j \ne i} \mathcal{C}_{ij}^2

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`z^{A}`, :math:`z^{B}`
     - embeddings of the first and the second view of the same :math:`N` images, row :math:`b` of
       each from image :math:`b`
     - ``z1``, ``z2``
     - ``(N, D)``
   * - :math:`\mu_i`, :math:`\sigma_i^2`
     - mean and (population) variance of feature :math:`i` over the batch, per view
     - ``mean``, ``variance`` in ``_standardise``
     - ``(D,)``
   * - :math:`\epsilon`
     - a small constant added to the variance, so that a constant feature standardises to zero
     - ``EPS``
     - scalar
   * - :math:`\hat{z}^{A}`, :math:`\hat{z}^{B}`
     - the embeddings standardised feature by feature over the batch
     - ``a``, ``b``
     - ``(N, D)``
   * - :math:`\mathcal{C}`
     - cross-correlation of the features of the two views
     - the value returned by ``cross_correlation``, ``c``
     - ``(D, D)``
   * - :math:`\lambda`
     - weight of the redundancy-reduction (off-diagonal) term
     - ``off_diagonal_weight``
     - scalar
   * - :math:`\mathcal{L}_{\text{BT}}`
     - the Barlow Twins loss
     - the value returned by ``barlow_twins_loss``
     - scalar
   * - :math:`N`, :math:`D`, :math:`b`, :math:`i`, :math:`j`
     - batch size, embedding width; index of an image, indices of features
     - ``N``; the columns of ``z1``
     - scalars

Explanation
-----------

Barlow Twins :footcite:`zbontar2021barlow` embeds two augmentations of each image of a batch, as
SimCLR does (:doc:`simclr`), but compares *features* rather than images. Each feature is
standardised over the batch, and :math:`\mathcal{C}_{ij}` is the correlation, over the batch,
between feature :math:`i` of the first view and feature :math:`j` of the second; it lies in
:math:`[-1, 1]`. The first term, *invariance*, pulls every diagonal entry to 1: each feature takes
the same value on both views of an image, up to its scale and offset. The second term, *redundancy
reduction*, pushes every off-diagonal entry to 0: different features carry different information.

**Collapse.** A constant embedding has zero variance, so it standardises to zero (the
:math:`\epsilon` keeps the division finite), :math:`\mathcal{C} = 0` and the loss is :math:`D`,
its largest value on the diagonal. An encoder can lower it only by making each feature *vary*
over the batch, and vary the same way on both views. A subtler failure, *dimensional collapse*,
copies one good feature into all :math:`D` slots: the diagonal is then perfect, but every
off-diagonal entry is 1 and the second term charges :math:`\lambda D (D - 1)` for it. The batch
itself plays the role that the negatives play in SimCLR, without comparing any two images.

:math:`\lambda` sets what decorrelation is worth against invariance. There are :math:`D`
diagonal entries and :math:`D(D-1)` off-diagonal ones, so the weight falls as :math:`D` grows: the
paper uses :math:`\lambda = 0.005` for :math:`D = 8192`, the tests :math:`\lambda = 1` for
:math:`D = 8`. Since every feature is standardised, the loss ignores the scale and offset of each
feature and the order of the images in the batch (as long as both views keep the same order). It
needs a batch, so the loss is written for the batch, not for one example.

.. admonition:: Intuition

   The name comes from Horace Barlow's *redundancy reduction* :footcite:`barlow1961possible`: a
   sensory system should recode its input into signals that are as independent of one another as
   they can be. A panel of judges scoring the same performances twice, from two different seats,
   is good when each judge gives each performance the same score from both seats (invariance)
   and no judge merely copies another (no redundancy).

Inductive bias
--------------

As in SimCLR, the augmentations say what to ignore. The redundancy term adds a second assumption:
that the useful information is spread over many features that are uncorrelated over the data, as
in the decorrelating codes of whitening. Correlation sees only linear dependence, so two features
can still be redundant through a nonlinear relation; and each term is estimated from the batch,
so the batch must be several times wider than :math:`D` for :math:`\mathcal{C}` to be reliable.

Example
-------

Two views that agree give a small loss; a constant embedding scores :math:`D`; one feature copied
into every slot pays the redundancy term :math:`\lambda D (D - 1)`:

>>> import numpy as np
>>> from cookbook.self_supervised.barlow_twins import barlow_twins_loss, cross_correlation
>>> rng = np.random.default_rng(0)
>>> z1 = rng.standard_normal((64, 3)).astype(np.float32)
>>> z2 = z1 + 0.1 * rng.standard_normal((64, 3)).astype(np.float32)
>>> cross_correlation(z1, z2).shape
(3, 3)
>>> round(float(barlow_twins_loss(z1, z2, 0.25)), 3)
0.014
>>> constant = np.ones((64, 3), np.float32)
>>> round(float(barlow_twins_loss(constant, constant, 0.25)), 4)
3.0
>>> copied = np.tile(z1[:, :1], (1, 3))
>>> round(float(barlow_twins_loss(copied, copied, 0.25)), 3)  # 0.25 * 3 * 2
1.5

Implementation notes
--------------------

The paper puts a projector (three linear layers of width 8192 with batch normalisation) between
the representation and the loss and reads the representation below it; the small test network
has no projector. The standard deviation is the population one with :math:`\epsilon` under the
square root (the paper's pseudo-code divides by the unbiased standard deviation); both give the
identity as the target. The loss is computed in float32 (float64 for float64 input).

**It learns.** On scikit-learn's digits, the tests train the 64-128-8 MLP of :doc:`simclr`
(``init``, ``encode``, ``augment``) with this loss at :math:`\lambda = 1` for 400 Adam steps on
batches of 128 images, two views each, without a label. A 10-nearest-neighbour classifier on its
standardised embeddings reads 500 held-out digits with an accuracy of at least 0.83, at least 0.10
above the same network at its random initialisation (0.86 against 0.72 here; 0.85 to 0.87 over
draws of the augmentations). The collapse detector is the mean absolute correlation between two
different features of the embedding: below 0.25 after training (0.07 to 0.14), and above 0.9
when the same run has :math:`\lambda = 0` (about 1.00, one feature repeated eight times): the
redundancy term is what keeps the features apart.
"""

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"cross_correlation": (), "barlow_twins_loss": ()}

EPS = 1e-5  # added to each feature's variance: a constant feature standardises to zero, not NaN


def _views(z1, z2):
    z1 = _checks.float_array(z1, "z1", ndim=2, what=" (N, D)")
    z2 = _checks.float_array(z2, "z2", ndim=2, what=" (N, D)")
    _checks.same_shape(z2, "z2", z1.shape, expected_from="the shape of z1")
    return z1, z2


def _standardise(z, dtype):
    z = z.astype(dtype)
    mean = z.mean(axis=0, keepdims=True)  # (1, D)
    centred = z - mean
    variance = jnp.mean(centred * centred, axis=0, keepdims=True)  # (1, D), the population variance
    return centred * jax.lax.rsqrt(variance + EPS)


def _correlation(z1, z2):
    dtype = jnp.promote_types(jnp.result_type(z1, z2), jnp.float32)
    N = z1.shape[0]
    a, b = _standardise(z1, dtype), _standardise(z2, dtype)
    return a.T @ b / N  # (D, D)


def cross_correlation(z1, z2):
    """The cross-correlation (D, D) over the batch of the features of two views ``z1``, ``z2``
    (N, D): each feature standardised over the N rows, then ``a.T @ b / N``. Entry ``(i, j)``
    correlates feature ``i`` of the first view with feature ``j`` of the second."""
    z1, z2 = _views(z1, z2)
    return _correlation_jit(z1, z2)


_correlation_jit = jax.jit(_correlation)  # one compiled program per shape, also when called eagerly


def barlow_twins_loss(z1, z2, off_diagonal_weight=5e-3):
    """The Barlow Twins loss of two views ``z1``, ``z2`` (N, D), row ``b`` of each an embedding of
    image ``b``: ``sum((1 - diag(C))**2) + off_diagonal_weight * sum(offdiag(C)**2)`` with ``C``
    the cross-correlation. A scalar, in float32 (float64 for float64 input)."""
    z1, z2 = _views(z1, z2)
    off_diagonal_weight = _checks.positive(off_diagonal_weight, "off_diagonal_weight", allow_zero=True)
    return _loss(z1, z2, off_diagonal_weight)


@jax.jit  # one compiled program per shape (the weight is traced), also when called eagerly
def _loss(z1, z2, off_diagonal_weight):
    c = _correlation(z1, z2)
    diagonal = jnp.diagonal(c)  # (D,)
    invariance = jnp.sum((1.0 - diagonal) ** 2)
    redundancy = jnp.sum(c * c) - jnp.sum(diagonal * diagonal)
    return invariance + off_diagonal_weight * redundancy
