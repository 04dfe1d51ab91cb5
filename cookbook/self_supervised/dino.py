r"""DINO: self-distillation with no labels
======================================

Learn a representation without labels by training a student network to give, on one view of an
image, the output distribution that a teacher, a moving average of the student, gives on another
view; the teacher's outputs are centred and sharpened so that they collapse neither onto one
output nor into a uniform guess.

Equation
--------

.. math::

   g_\theta(x)_k = \left\langle \frac{f_\theta(x)}{\lVert f_\theta(x) \rVert},
                   \frac{w_k}{\lVert w_k \rVert} \right\rangle, \qquad
   P_s(x')_k = \operatorname{softmax}_k\!\left(\frac{g_\theta(x')}{\tau_s}\right), \qquad
   P_t(x)_k = \operatorname{softmax}_k\!\left(\frac{g_\xi(x) - c}{\tau_t}\right)

   \mathcal{L} = -\frac{1}{N} \sum_{b=1}^{N} \sum_{k=1}^{K}
   \operatorname{sg}\!\left(P_t(x_b)_k\right) \log P_s(x'_b)_k

   c \leftarrow m\, c + (1 - m) \frac{1}{N} \sum_{b=1}^{N} g_\xi(x_b), \qquad
   \xi \leftarrow \lambda \xi + (1 - \lambda)\, \theta

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_b`, :math:`x'_b`
     - two views of image :math:`b`: the teacher sees one, the student the other
     - the inputs of the networks
     - image
   * - :math:`f_\theta`
     - the backbone, whose output is the representation kept after training
     - ``embeddings`` (its output); the tests use the MLP of :doc:`simclr`
     - ``(N, D)``
   * - :math:`w_k`
     - the :math:`K` prototypes of the head, trained with the backbone
     - ``prototypes`` (one per column)
     - ``(D, K)``
   * - :math:`g_\theta`, :math:`g_\xi`
     - scores of the student and of the teacher: cosines between the embedding and each prototype
     - ``prototype_scores``; ``student_logits``, ``teacher_logits``
     - ``(N, K)``
   * - :math:`c`
     - the centre: a moving average of the teacher's scores
     - ``center``
     - ``(K,)``
   * - :math:`\tau_s`, :math:`\tau_t`
     - temperatures of the student and of the teacher, :math:`\tau_t < \tau_s` (sharpening)
     - ``student_temperature``, ``teacher_temperature``
     - scalars
   * - :math:`P_s`, :math:`P_t`
     - the student's and the teacher's distributions over the :math:`K` outputs
     - ``log_p_student`` (its logarithm), ``p_teacher``
     - ``(N, K)``
   * - :math:`\operatorname{sg}`
     - stop-gradient: the teacher is a constant for the loss
     - ``jax.lax.stop_gradient``
     - as its input
   * - :math:`\mathcal{L}`
     - cross-entropy from the teacher to the student, averaged over the images
     - the value returned by ``dino_loss``
     - scalar
   * - :math:`m`, :math:`\lambda`
     - momentum of the centre; decay of the teacher's moving average
     - ``momentum``; the decay of ``ema_update`` (from :doc:`byol`)
     - scalars
   * - :math:`\theta`, :math:`\xi`
     - parameters of the student (trained) and of the teacher (a moving average of them)
     - the parameters of the tests' networks
     - pytrees
   * - :math:`N`, :math:`D`, :math:`K`, :math:`b`, :math:`k`
     - batch size, embedding width, number of outputs; indices of an image and of an output
     - ``N``, ``D``, ``K``
     - scalars

Explanation
-----------

DINO :footcite:`caron2021dino` is knowledge distillation :footcite:`hinton2015distilling` in which
the teacher is built from the student itself, as in :doc:`byol`: a moving average of its
parameters. Both networks end in :math:`K` scores, the cosines between the embedding and
:math:`K` learnt prototypes, read as a distribution by a softmax. The student is trained to give,
on one view of an image, the distribution that the teacher gives on another view; the teacher's
distribution passes through a stop-gradient, so only the student learns by gradient.

Nothing in the loss forbids a shortcut, and there are two, in opposite directions. Every image
could get the same sharp answer, one output always winning (collapse onto one dimension); or
every image could get the uniform distribution (collapse to uniform). **Centring** works against
the first: the teacher's scores minus their running mean :math:`c` favour no output on average, so
no output can win for every image. **Sharpening**, a teacher temperature below the student's,
works against the second: it turns small differences of score into a confident target. Each
device alone leads to the collapse that the other prevents (the paper's figure of the teacher's
entropy, and the tests here). The two collapses are told apart by two entropies of the teacher
(``teacher_entropies``): the mean entropy of :math:`P_t(x_b)` is near :math:`\log K` for the uniform
collapse, and the entropy of their mean over the images is near 0 for the collapse onto one
output; a healthy teacher is confident for each image (the first low) and uses many outputs over
the images (the second high).

**Multi-crop.** The paper shows the teacher two large crops of each image and the student the
same two and several small ones; the loss averages the cross-entropy over every pair of a teacher
view and a different student view (``multi_crop_loss``), so the student learns to infer from a
small part what the teacher sees in the whole: local-to-global correspondence.

.. admonition:: Intuition

   A teacher only slightly wiser than the pupil, for the teacher is the pupil's own average over
   recent lessons, who marks decisively (sharpening) and refuses to give the same mark to every
   answer (centring). The pupil learns to agree with these marks from a different photograph of
   the same thing, often a detail of it.

Inductive bias
--------------

As in :doc:`simclr`, the augmentations say what the representation ignores. The :math:`K`
outputs add the assumption that the data fall into groups that the network can discover, an
unsupervised classification: centring asks every output to be used about equally often, and
sharpening asks each image to belong to few groups. With multi-crop, a small part of an image is
assumed to tell what the whole shows.

Example
-------

Three embeddings scored against three prototypes. Sharpening lowers the teacher's entropy per
image (the third image stays split between two prototypes it is equally close to); the centre
follows the mean of the teacher's scores; the loss of a student that gives the teacher's scores is
the teacher's entropy plus a Kullback-Leibler term, here small; the gradient never reaches the
teacher:

>>> import jax, jax.numpy as jnp
>>> from cookbook.self_supervised.dino import (dino_loss, multi_crop_loss, prototype_scores,
...                                             teacher_entropies, update_center)
>>> z = jnp.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])  # N = 3 embeddings, D = 2
>>> w = jnp.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # K = 3 prototypes
>>> t = prototype_scores(z, w)
>>> t.round(3)
Array([[ 1.   ,  0.   , -1.   ],
       [ 0.   ,  1.   ,  0.   ],
       [ 0.707,  0.707, -0.707]], dtype=float32)
>>> c = jnp.zeros(3)
>>> [round(float(h), 3) for h in teacher_entropies(t, c, 1.0)]  # per image, of the mean
[0.923, 0.997]
>>> [round(float(h), 3) for h in teacher_entropies(t, c, 0.04)]  # sharpened
[0.231, 0.693]
>>> update_center(c, t, 0.9).round(4)
Array([ 0.0569,  0.0569, -0.0569], dtype=float32)
>>> round(float(dino_loss(t, t, c, 0.1, 0.04)), 3)  # at least the teacher's entropy, 0.231
0.231
>>> jax.grad(dino_loss, argnums=1)(t, t, c, 0.1, 0.04)
Array([[0., 0., 0.],
       [0., 0., 0.],
       [0., 0., 0.]], dtype=float32)
>>> views = jnp.stack([t, t[::-1], 0.5 * t])  # V = 3 student views, the first G = 2 the teacher's
>>> round(float(multi_crop_loss(views, views[:2], c, 0.1, 0.04)), 3)
1.276

Implementation notes
--------------------

**What the tests train.** On scikit-learn's digits, the tests train the 64-128-8 MLP of
:doc:`simclr` as the backbone :math:`f_\theta` with :math:`K = 32` prototypes, two views of each
image drawn by that page's ``augment``, for 400 Adam steps (learning rate 0.003) on batches of 64,
with :math:`\lambda = 0.996`, :math:`m = 0.9`, :math:`\tau_s = 0.5` and :math:`\tau_t = 0.04`. The
paper's :math:`\tau_s = 0.1` assumes a bottleneck of width 256, where the cosine between random
directions spreads by about :math:`1/16`; with :math:`D = 8` it spreads by
:math:`1/\sqrt{8} \approx 0.35`, and a student at 0.1 starts so sharp that, faced with targets that
change with the augmentation, it learns to answer uniformly instead (so did the runs at 0.1 tried
while writing this page). A
10-nearest-neighbour classifier on the teacher's backbone embeddings reads 500 held-out digits with
an accuracy at least 0.05 above the same network at its random initialisation (0.77 against 0.69
here; 0.82 and 0.83 for two other draws of the prototypes). The teacher's mean entropy per image is
below :math:`\tfrac12 \log K` and the entropy of its mean above :math:`0.6 \log K`; without
centring, the entropy of the mean falls below 0.1 (one output for every digit), and with
:math:`\tau_t = \tau_s` (no sharpening) the entropy per image rises above :math:`0.99 \log K`
(uniform). In both collapses the teacher's scores stop varying across images: their standard
deviation over the images, averaged over the outputs, falls from about 0.2 to below 0.05.

**Left out.** The paper's networks are vision transformers with a three-layer projection head
before the prototypes (:math:`K = 65536`), the last layer weight-normalised and frozen during the
first epoch; the teacher's temperature is warmed from 0.04 to 0.07 and its decay raised from 0.996
to 1 over training. The loss is computed in float32 (float64 for float64 input).
"""

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.self_supervised.byol import ema_update  # noqa: F401  the teacher's update, shared with BYOL

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"prototype_scores": (), "dino_loss": (), "multi_crop_loss": (), "update_center": (),
       "teacher_entropies": ()}

EPS = 1e-12  # floor of a vector's norm: a zero embedding or prototype normalises to zero, not NaN


def _dtype(*xs):
    return jnp.promote_types(jnp.result_type(*xs), jnp.float32)


def _normalise(x, axis):
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), EPS**2))


def _temperatures(student_temperature, teacher_temperature):
    return (_checks.positive(student_temperature, "student_temperature"),
            _checks.positive(teacher_temperature, "teacher_temperature"))


def _center(center, K, like):
    center = _checks.float_array(center, "center", ndim=1, what=" (K,)")
    return _checks.same_shape(center, "center", (K,), expected_from=f"one entry per output of {like}")


def _teacher(teacher_logits, center, teacher_temperature, dtype):
    center = center.astype(dtype).reshape((1,) * (teacher_logits.ndim - 1) + center.shape)  # (1, K) or (1, 1, K)
    scores = (teacher_logits.astype(dtype) - center) / teacher_temperature
    return jax.nn.softmax(jax.lax.stop_gradient(scores), axis=-1)


# The work of each public function, as one compiled program behind its checks (eagerly, each
# operation would otherwise be compiled on its own).

@jax.jit
def _scores(embeddings, prototypes):
    dtype = _dtype(embeddings, prototypes)
    return _normalise(embeddings.astype(dtype), 1) @ _normalise(prototypes.astype(dtype), 0)  # (N, K)


@jax.jit
def _pair_loss(student_logits, teacher_logits, center, student_temperature, teacher_temperature):
    dtype = _dtype(student_logits, teacher_logits)
    p_teacher = _teacher(teacher_logits, center, teacher_temperature, dtype)  # (N, K)
    log_p_student = jax.nn.log_softmax(student_logits.astype(dtype) / student_temperature, axis=-1)  # (N, K)
    return -jnp.mean(jnp.sum(p_teacher * log_p_student, axis=-1))


@jax.jit
def _multi_crop_loss(student_logits, teacher_logits, center, student_temperature, teacher_temperature):
    (V, N, K), G = student_logits.shape, teacher_logits.shape[0]
    dtype = _dtype(student_logits, teacher_logits)
    p_teacher = _teacher(teacher_logits, center, teacher_temperature, dtype)  # (G, N, K)
    log_p_student = jax.nn.log_softmax(student_logits.astype(dtype) / student_temperature, axis=-1)  # (V, N, K)
    cross = -jnp.einsum("gnk,vnk->gv", p_teacher, log_p_student) / N  # (G, V): one loss per pair
    other = jnp.arange(G)[:, None] != jnp.arange(V)[None, :]  # (G, V): a view is not paired with itself
    return jnp.sum(jnp.where(other, cross, 0.0)) / (G * (V - 1))


@jax.jit
def _update_center(center, teacher_logits, momentum):
    mean = jax.lax.stop_gradient(teacher_logits).mean(axis=0)  # (K,)
    return (momentum * center + (1.0 - momentum) * mean).astype(center.dtype)


@jax.jit
def _entropies(teacher_logits, center, teacher_temperature):
    p_teacher = _teacher(teacher_logits, center, teacher_temperature, _dtype(teacher_logits))  # (N, K)

    def entropy(p):  # 0 log 0 = 0; a NaN stays a NaN
        return -jnp.sum(p * jnp.log(jnp.where(p > 0, p, 1.0)), axis=-1)

    return entropy(p_teacher).mean(), entropy(p_teacher.mean(axis=0))


def prototype_scores(embeddings, prototypes):
    """The scores (N, K) of a DINO head: the cosine between each embedding, a row of ``embeddings``
    (N, D), and each prototype, a column of ``prototypes`` (D, K). Both are normalised inside."""
    embeddings = _checks.float_array(embeddings, "embeddings", ndim=2, what=" (N, D)")
    prototypes = _checks.float_array(prototypes, "prototypes", ndim=2, what=" (D, K)")
    N, D = embeddings.shape
    if prototypes.shape[0] != D:
        raise ValueError(f"prototypes must have D = {D} rows (the columns of embeddings, of shape "
                         f"{tuple(embeddings.shape)}), got shape {tuple(prototypes.shape)}")
    return _scores(embeddings, prototypes)


def dino_loss(student_logits, teacher_logits, center, student_temperature=0.1, teacher_temperature=0.04):
    """The mean over the N images of the cross-entropy ``-sum_k P_t log P_s`` from the centred,
    sharpened teacher (``teacher_logits`` (N, K) of one view, ``center`` (K,)) to the student
    (``student_logits`` (N, K) of the other view). The gradient reaches only the student. A scalar,
    in float32 (float64 for float64 input)."""
    student_logits = _checks.float_array(student_logits, "student_logits", ndim=2, what=" (N, K)")
    teacher_logits = _checks.float_array(teacher_logits, "teacher_logits", ndim=2, what=" (N, K)")
    _checks.same_shape(teacher_logits, "teacher_logits", student_logits.shape,
                       expected_from="the shape of student_logits")
    N, K = student_logits.shape
    center = _center(center, K, "student_logits")
    student_temperature, teacher_temperature = _temperatures(student_temperature, teacher_temperature)
    return _pair_loss(student_logits, teacher_logits, center, student_temperature, teacher_temperature)


def multi_crop_loss(student_logits, teacher_logits, center, student_temperature=0.1, teacher_temperature=0.04):
    """DINO's loss over several views: ``student_logits`` (V, N, K) of V views of the same N images,
    ``teacher_logits`` (G, N, K) of the first G of them (the large crops, G <= V). The mean of
    ``dino_loss`` over the G (V - 1) pairs of a teacher view g and a student view v != g."""
    student_logits = _checks.float_array(student_logits, "student_logits", ndim=3, what=" (V, N, K)")
    teacher_logits = _checks.float_array(teacher_logits, "teacher_logits", ndim=3, what=" (G, N, K)")
    V, N, K = student_logits.shape
    G = teacher_logits.shape[0]
    if teacher_logits.shape[1:] != (N, K) or not 1 <= G <= V or V < 2:
        raise ValueError(f"teacher_logits must have shape (G, {N}, {K}) with 1 <= G <= V = {V} (the views of "
                         f"student_logits, of shape {tuple(student_logits.shape)}, at least two), got shape "
                         f"{tuple(teacher_logits.shape)}")
    center = _center(center, K, "student_logits")
    student_temperature, teacher_temperature = _temperatures(student_temperature, teacher_temperature)
    return _multi_crop_loss(student_logits, teacher_logits, center, student_temperature, teacher_temperature)


def update_center(center, teacher_logits, momentum=0.9):
    """The centre's next value ``momentum * center + (1 - momentum) * mean(teacher_logits)``: the
    mean over the N rows of ``teacher_logits`` (N, K), with a stop-gradient; ``momentum`` in [0, 1]."""
    teacher_logits = _checks.float_array(teacher_logits, "teacher_logits", ndim=2, what=" (N, K)")
    center = _center(center, teacher_logits.shape[1], "teacher_logits")
    momentum = _checks.positive(momentum, "momentum", allow_zero=True)
    if isinstance(momentum, (int, float)) and momentum > 1:
        raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
    return _update_center(center, teacher_logits, momentum)


def teacher_entropies(teacher_logits, center, teacher_temperature=0.04):
    """The collapse detector: the mean over the N images of the entropy of the teacher's
    distribution ``P_t`` (near log K when it collapses to uniform), and the entropy of the mean of
    ``P_t`` over the images (near 0 when one output wins for every image), in nats."""
    teacher_logits = _checks.float_array(teacher_logits, "teacher_logits", ndim=2, what=" (N, K)")
    center = _center(center, teacher_logits.shape[1], "teacher_logits")
    teacher_temperature = _checks.positive(teacher_temperature, "teacher_temperature")
    return _entropies(teacher_logits, center, teacher_temperature)
