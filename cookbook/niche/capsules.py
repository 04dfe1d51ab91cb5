r"""Capsules and dynamic routing
============================

Groups of neurons whose output vector's length is the probability that an entity is present and
whose direction describes it, with children sending their output to the parents that agree with
them: reach for it to read the idea of part–whole routing that later object-centric models share.

Equation
--------

.. math::

   \hat{u}_{j|i} = W_{ij}\, u_i, \qquad
   c_{ij} = \frac{\exp b_{ij}}{\sum_{k} \exp b_{ik}}, \qquad
   s_j = \sum_i c_{ij}\, \hat{u}_{j|i}

   v_j = \frac{\lVert s_j \rVert^2}{1 + \lVert s_j \rVert^2} \frac{s_j}{\lVert s_j \rVert}, \qquad
   b_{ij} \leftarrow b_{ij} + \hat{u}_{j|i} \cdot v_j \quad (r \text{ times, from } b_{ij} = 0)

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`u_i`
     - output of child capsule :math:`i` (of :math:`I`)
     - row :math:`i` of ``u``
     - ``(Din,)``
   * - :math:`W_{ij}`
     - the transformation from child :math:`i` to parent :math:`j` (of :math:`J`)
     - ``W``, entry :math:`(i, j)`
     - ``(Din, D)``
   * - :math:`\hat{u}_{j|i}`
     - child :math:`i`'s prediction of parent :math:`j`'s output
     - ``u_hat``, entry :math:`(i, j)`
     - ``(D,)``
   * - :math:`b_{ij}`
     - routing logits, the accumulated agreement
     - ``b``
     - ``(I, J)``
   * - :math:`c_{ij}`
     - coupling coefficients: how much of child :math:`i` goes to parent :math:`j`
     - ``c``
     - ``(I, J)``
   * - :math:`k`
     - index running over the parents in the softmax
     - summed by ``jax.nn.softmax``
     - scalar
   * - :math:`s_j`
     - parent :math:`j`'s total input
     - ``s``
     - ``(J, D)``
   * - :math:`v_j`
     - parent :math:`j`'s output: the squashed input, length in :math:`[0, 1)`
     - ``v``, the result of ``squash``
     - ``(J, D)``
   * - :math:`r`
     - number of routing iterations
     - ``n_iters``
     - scalar

Explanation
-----------

A capsule :footcite:`sabour2017dynamic` replaces a scalar feature detector by a vector: its
length says how likely the entity it looks for is present, and its direction encodes the entity's
pose (position, orientation, thickness). The **squash** nonlinearity keeps a vector's direction
and maps its length :math:`n` to :math:`n^2 / (1 + n^2)`, close to 0 for short vectors and below 1
for long ones, so that a length reads as a probability. The norm is computed as
:math:`\sqrt{\lVert s \rVert^2 + \epsilon}`, so that the zero vector squashes to zero with a finite
gradient.

Every child capsule predicts each parent's output through its own matrix :math:`W_{ij}` (a nose
predicts where the face is). **Routing by agreement** decides which parent each child belongs to:
the couplings of a child are a softmax over the parents, starting uniform; each parent averages the
predictions weighted by the couplings and squashes; then every child raises its logit towards the
parents whose output agrees (has a large dot product) with its prediction. After :math:`r`
iterations (3 in the paper), children whose predictions cluster have been routed together. The
tests check that a child's couplings sum to one over the parents, that a child agreeing with a
parent sends it more with every iteration, and that routing is a smooth function of the predictions
whose gradients match finite differences. Routing has no parameters of its own: only the :math:`W`
are trained, through the unrolled iterations.

.. admonition:: Intuition

   Routing by agreement is a vote among the parts: each part (an eye, a nose, a mouth) guesses
   where the whole face is and how it is turned. Where many guesses coincide, a face is declared
   present, and the parts that guessed it send it more of their output; a part whose guess matches
   no other drifts towards whichever parent best explains it.

Inductive bias
--------------

Capsules assume that the world is made of parts in stable spatial relations to wholes, with the
relation captured by a fixed linear transformation :math:`W_{ij}`: a whole is present where its
parts agree about its pose. This builds in viewpoint equivariance (a rotated pose rotates the
predictions together), which let the original capsule network separate overlapping digits. The
price is a cost in :math:`I \times J` predictions and sequential routing iterations, and the
assumption that each part belongs to one whole; on large natural images capsule networks have not
matched convolutional networks.

Example
-------

Three children predict two parents; the first two children agree on parent 0 and disagree about
parent 1, so routing sends them to parent 0:

>>> import jax.numpy as jnp
>>> from cookbook.niche.capsules import routing, squash
>>> squash(jnp.array([3.0, 4.0])).round(3)  # length 5 -> 25/26, same direction
Array([0.577, 0.769], dtype=float32)
>>> u_hat = jnp.array([[[2.0, 0.0], [0.0, 1.0]],
...                    [[2.0, 0.1], [0.0, -1.0]],
...                    [[0.0, 0.5], [0.5, 0.0]]])  # (I=3, J=2, D=2)
>>> v, c = routing(u_hat, 3)
>>> c.sum(axis=1).round(4)
Array([1., 1., 1.], dtype=float32)
>>> c[:2, 0].round(2)  # more than the uniform 0.5
Array([0.97, 0.97], dtype=float32)

Implementation notes
--------------------

The paper's network for MNIST has a convolution, 1152 primary capsules of 8 dimensions and 10 digit
capsules of 16 dimensions, a margin loss on the lengths and a reconstruction decoder as a
regulariser; this page keeps to the two operations that define capsules. The predictions
:math:`\hat{u}` are computed by ``predictions`` with one einsum; routing is unrolled with a Python
loop over the static number of iterations, a few small operations each. Later work replaced routing
by agreement with expectation–maximisation and with attention, which routing resembles: a softmax
of dot products decides where each child's output goes, normalised over the receivers instead of
the senders.
"""

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"squash": (), "routing": ("n_iters",)}

EPS = 1e-9  # inside the square root of the norm: the zero vector squashes to zero, finitely


def squash(s):
    """``|s|^2 / (1 + |s|^2) * s / |s|`` along the last axis of ``s`` (..., D): the same direction,
    a length in [0, 1)."""
    s = _checks.float_array(s, "s", min_ndim=1, what=" (..., D)")
    return jax.jit(_squash)(s)


def _squash(s):
    s32 = s.astype(jnp.float32)
    sq = jnp.sum(s32**2, axis=-1, keepdims=True)
    return (sq / (1 + sq) * s32 / jnp.sqrt(sq + EPS)).astype(s.dtype)


def predictions(W, u):
    """Each child's prediction of each parent, ``u_hat[i, j] = u[i] @ W[i, j]``: (I, J, D) from
    ``W`` (I, J, Din, D) and ``u`` (I, Din)."""
    W = _checks.float_array(W, "W", ndim=4, what=" (I, J, Din, D)")
    u = _checks.float_array(u, "u", ndim=2, what=" (I, Din)")
    _checks.same_shape(u, "u", (W.shape[0], W.shape[2]), expected_from="I and Din from W (I, J, Din, D)")
    return jnp.einsum("IJED,IE->IJD", W, u)


def routing(u_hat, n_iters):
    """Routing by agreement: the parents' outputs ``v`` (J, D) and the coupling coefficients ``c``
    (I, J) after ``n_iters`` iterations, from the predictions ``u_hat`` (I, J, D)."""
    u_hat = _checks.float_array(u_hat, "u_hat", ndim=3, what=" (I, J, D)")
    n_iters = _checks.size(n_iters, "n_iters")
    return jax.jit(_routing, static_argnums=1)(u_hat, n_iters)


def _routing(u_hat, n_iters):
    I, J, D = u_hat.shape
    b = jnp.zeros((I, J), jnp.float32)
    for _ in range(n_iters):  # a static, small number of iterations, unrolled
        c = jax.nn.softmax(b, axis=1)  # (I, J): each child's couplings sum to one over the parents
        s = jnp.einsum("IJ,IJD->JD", c, u_hat.astype(jnp.float32))  # (J, D)
        v = _squash(s)
        b = b + jnp.einsum("IJD,JD->IJ", u_hat.astype(jnp.float32), v)  # agreement
    return v.astype(u_hat.dtype), c.astype(u_hat.dtype)
