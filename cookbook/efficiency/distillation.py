r"""Knowledge distillation
======================

A small student network is trained to match a large teacher's softened output distribution as
well as the labels: the way to compress a model, or an ensemble, into one that is cheap to run
while keeping most of its accuracy.

Equation
--------

.. math::

   \begin{aligned}
   q_i &= \frac{\exp(z_i / T)}{\sum_j \exp(z_j / T)}, \qquad
   p_i = \frac{\exp(v_i / T)}{\sum_j \exp(v_j / T)}, \\
   L &= \alpha\, T^2 \Bigl(-\sum_i p_i \log q_i\Bigr)
        + (1 - \alpha) \Bigl(-\log \operatorname{softmax}(z)_y\Bigr), \\
   \frac{\partial}{\partial z_i} \Bigl(-\sum_j p_j \log q_j\Bigr) &= \frac{q_i - p_i}{T}
   \;\approx\; \frac{z_i - v_i}{N T^2}
   \quad (T \gg \lvert z \rvert, \lvert v \rvert;\ \textstyle\sum_j z_j = \sum_j v_j = 0)
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`z_i`
     - the student's logit for class :math:`i`
     - ``student_logits``
     - ``(..., N)``
   * - :math:`v_i`
     - the teacher's logit for class :math:`i`
     - ``teacher_logits``
     - ``(..., N)``
   * - :math:`T`
     - the temperature; :math:`T = 1` is the ordinary softmax
     - ``T``
     - scalar
   * - :math:`q_i`
     - the student's softened probabilities
     - ``soft_targets(student_logits, T=T)``
     - ``(..., N)``
   * - :math:`p_i`
     - the teacher's softened probabilities: the soft targets
     - ``soft_targets(teacher_logits, T=T)``
     - ``(..., N)``
   * - :math:`y`
     - the true label
     - ``labels``
     - ``(...)``
   * - :math:`\alpha`
     - the weight of the soft term against the hard one
     - ``alpha``
     - scalar
   * - :math:`L`
     - the loss of one example
     - returned by ``distillation_loss``
     - ``(...)``
   * - :math:`N`
     - the number of classes
     - ``N``
     - scalar
   * - :math:`i`, :math:`j`
     - class indices
     - indices into the last axis
     - scalar

Explanation
-----------

A trained classifier says more than its top answer. Its probabilities for the wrong classes, tiny
as they are, tell which mistakes would be forgivable: a 2 that is a little like a 3 and not at all
like a 4. :footcite:t:`hinton2015distilling` call this knowledge in the ratios of small
probabilities, and transfer it by training the student on the teacher's output distribution
instead of (or besides) one-hot labels. At :math:`T = 1` those probabilities are so close to 0 that
they barely move the cross-entropy; dividing the logits by a temperature :math:`T > 1` flattens both
softmaxes and brings them into play. The same high :math:`T` is used for the student while it learns,
and :math:`T = 1` when it is deployed.

The gradient of the soft cross-entropy with respect to a student logit is :math:`(q_i - p_i)/T`. For
:math:`T` large against the logits, :math:`e^{x/T} \approx 1 + x/T`, and with logits of zero mean
the gradient becomes :math:`(z_i - v_i) / (N T^2)`: distillation at high temperature is matching the
logits with a squared error, which :footcite:t:`ba2014deep` had proposed; the tests check the gradient
against this limit, its error falling tenfold as :math:`T` grows tenfold. The soft gradients shrink as
:math:`1/T^2`, so the soft term is multiplied by :math:`T^2` to keep its weight against the hard
term unchanged when :math:`T` changes. At intermediate temperatures the student may ignore very
negative logits, which carry mostly noise; the paper found this helpful for small students.

.. plot::

   import jax.numpy as jnp
   from cookbook.efficiency.distillation import soft_targets
   logits = jnp.array([1.0, -2.0, 9.0, 5.0, -3.0, 0.5, -1.0, 4.0, 2.0, -0.5])  # a teacher's "2"
   fig, axes = plt.subplots(1, 4, figsize=(10, 2.4), sharey=True)
   for ax, T in zip(axes, (1.0, 2.0, 4.0, 16.0)):
       ax.bar(range(10), np.asarray(soft_targets(logits, T=T)), color="C0")
       ax.set(title=f"T = {T:g}", xticks=range(10), xlabel="class")
   axes[0].set(ylabel="soft target p")
   fig.tight_layout()

The soft targets of one digit 2 from a teacher, at four temperatures: at :math:`T = 1` a one-hot
label in all but name; at :math:`T = 4` the resemblance to a 3 and a 7 is plain to see; at
:math:`T = 16` the targets are nearly uniform and say little.

How much the ratios carry is measured in the tests, after an experiment of the paper: a student
that never sees a single 3 (every 3 removed from its training set), trained only on a teacher's
soft targets at :math:`T = 4`, recognises over 80 % of the test 3s of scikit-learn's digits, having
learnt them from how 3-like the teacher found the other digits; at :math:`T = 1`, where the soft
targets are nearly the labels, it recognises fewer than 10 %.

.. admonition:: Intuition

   A teacher who only marks answers right or wrong teaches less than one who says "this is a 2,
   but I see why you might read a 3 there, and it is nothing like a 4". The temperature is how
   frankly the teacher shares those second thoughts. Hinton et al. open with another picture:
   insects have a larva suited to feeding and an adult suited to travelling, as a model may have
   one form for training and a smaller one for deployment.

*Numerical traps.* Both softmaxes are computed as :math:`\exp` of log-softmaxes of :math:`z / T`,
so large logits stay finite, and in at least float32 whatever the input type. The cross-entropy with
soft targets differs from the Kullback-Leibler divergence :math:`\mathrm{KL}(p \,\Vert\, q)` only by
the teacher's entropy, a constant for the student: same gradient, but the loss is not 0 at a perfect
match.

*Bad input.* Logits must be floating-point arrays of one shape, labels integers of that shape
without the class axis, and in range when concrete (under :func:`jax.jit` an out-of-range label
reads a clamped log-probability); :math:`T` must be positive and :math:`\alpha` in
:math:`[0, 1]`. A ``ValueError`` or ``TypeError`` names the argument.

Inductive bias
--------------

Distillation assumes that the teacher's output distribution, not only its top answer, is worth
imitating: that the relative probabilities of the wrong classes describe how the classes resemble
one another. The student then learns from fewer examples, or from unlabelled ones, than from labels
alone, but it inherits the teacher's mistakes and its view of which classes are alike, and it
rarely surpasses the teacher. It needs a transfer set on which the teacher's outputs are
informative; a student much smaller than the teacher cannot match the function everywhere, and then
the temperature chooses which details it drops.

Example
-------

Soft targets flatten as the temperature rises, and the loss weighs soft and hard terms:

>>> import jax.numpy as jnp
>>> from cookbook.efficiency.distillation import distillation_loss, soft_targets
>>> v = jnp.array([[5.0, 2.0, -1.0], [0.0, 3.0, 1.0]])  # the teacher's logits, 2 examples, 3 classes
>>> soft_targets(v, T=1.0).round(3)
Array([[0.95 , 0.047, 0.002],
       [0.042, 0.844, 0.114]], dtype=float32)
>>> soft_targets(v, T=5.0).round(3)
Array([[0.541, 0.297, 0.163],
       [0.247, 0.451, 0.302]], dtype=float32)
>>> from cookbook.efficiency.distillation import soft_cross_entropy
>>> z = jnp.array([[2.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # the student's
>>> soft_cross_entropy(z, v, T=5.0).round(3), soft_cross_entropy(v, v, T=5.0).round(3)  # vs a perfect match
(Array([1.036, 1.099], dtype=float32), Array([0.989, 1.066], dtype=float32))
>>> y = jnp.array([0, 1])
>>> distillation_loss(z, v, y, T=5.0, alpha=0.5).round(3)
Array([13.158, 14.282], dtype=float32)
>>> distillation_loss(z, z, y, T=5.0, alpha=0.0).round(3)  # alpha = 0: the ordinary cross-entropy
Array([0.408, 1.099], dtype=float32)

Implementation notes
--------------------

Common settings are :math:`T` from 2 to 20 and :math:`\alpha` near 0.5 to 0.9; with no labels at
all (unlabelled transfer data) :math:`\alpha = 1`. Many libraries write the soft term as a
Kullback-Leibler divergence (PyTorch's ``KLDivLoss`` on log-probabilities, ``optax.kl_divergence``),
which has the same gradient. The teacher's logits are computed once, or on the fly with the teacher
frozen; distilling an ensemble uses the mean of its members' probabilities. Later variants match
intermediate features (FitNets) or attention maps, and language models are distilled on the
teacher's token distributions over generated text (DistilBERT, MiniLM).
"""

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"soft_targets": (), "soft_cross_entropy": (), "distillation_loss": ()}


def _logits(x, name):
    x = _checks.float_array(x, name, min_ndim=1, what=" (..., N)")
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _temperature(T):
    T = _checks.positive(T, "T")
    if isinstance(T, jax.Array) and _checks.is_concrete(T) and not float(T) > 0:
        raise ValueError(f"T must be positive, got {float(T)}")
    return T


def _pair(student_logits, teacher_logits):
    z = _logits(student_logits, "student_logits")
    v = _logits(teacher_logits, "teacher_logits")
    _checks.same_shape(v, "teacher_logits", z.shape, expected_from="the shape of student_logits")
    return z, v


def soft_targets(logits, *, T):
    """``softmax(logits / T)`` over the last axis, in at least float32."""
    return _softmax(_logits(logits, "logits"), _temperature(T))


def soft_cross_entropy(student_logits, teacher_logits, *, T):
    """``-sum_i p_i log q_i`` over the last axis, with ``p = softmax(v / T)`` and ``q = softmax(z / T)``.

    Its gradient with respect to ``student_logits`` is ``(q - p) / T``. Shape: the logits' without N.
    """
    z, v = _pair(student_logits, teacher_logits)
    return _soft_cross_entropy(z, v, _temperature(T))


def distillation_loss(student_logits, teacher_logits, labels, *, T, alpha):
    """``alpha T^2 soft_cross_entropy + (1 - alpha) CE(labels, softmax(student_logits))``, per example.

    ``labels`` are integer classes of shape ``student_logits.shape[:-1]``; the result has that shape.
    """
    z, v = _pair(student_logits, teacher_logits)
    N = z.shape[-1]
    labels = _checks.int_array(labels, "labels")
    _checks.same_shape(labels, "labels", z.shape[:-1], expected_from="student_logits without the class axis")
    _checks.check_range(labels, "labels", 0, N)
    T = _temperature(T)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, jax.Array)):
        raise TypeError(f"alpha must be a real number in [0, 1], got {type(alpha).__name__}")
    if _checks.is_concrete(alpha) and not 0 <= float(alpha) <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {float(alpha)}")
    return _distillation_loss(z, v, labels, T, alpha)


# The computations on checked inputs, each one compiled program (rather than a dozen small ones when a
# function is called eagerly); T and alpha are traced, so that a sweep over them compiles once.

@jax.jit
def _softmax(x, T):
    return jax.nn.softmax(x / T, axis=-1)


@jax.jit
def _soft_cross_entropy(z, v, T):
    p = jax.nn.softmax(v / T, axis=-1)
    return -jnp.sum(p * jax.nn.log_softmax(z / T, axis=-1), axis=-1)


@jax.jit
def _distillation_loss(z, v, labels, T, alpha):
    soft = _soft_cross_entropy(z, v, T)
    hard = -jnp.take_along_axis(jax.nn.log_softmax(z, axis=-1), labels[..., None], axis=-1)[..., 0]
    return alpha * T ** 2 * soft + (1 - alpha) * hard
