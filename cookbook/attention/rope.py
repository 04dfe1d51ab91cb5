r"""Rotary position embedding
=========================

Rotate each pair of query and key features by an angle proportional to the token's position, so
that their dot product depends only on how far apart the two tokens are: the relative position
scheme of most current language models, applied to queries and keys inside every attention layer.

Equation
--------

.. math::

   \theta_i = b^{-2i/D}, \qquad
   \begin{pmatrix} \tilde{x}_{m,2i} \\ \tilde{x}_{m,2i+1} \end{pmatrix} =
   \begin{pmatrix} \cos m\theta_i & -\sin m\theta_i \\ \sin m\theta_i & \cos m\theta_i \end{pmatrix}
   \begin{pmatrix} x_{m,2i} \\ x_{m,2i+1} \end{pmatrix}
   \quad\text{i.e.}\quad \tilde{x}_m = R_m x_m

   \tilde{q}_m^\top \tilde{k}_n = q_m^\top R_m^\top R_n k_n = q_m^\top R_{n-m} k_n

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_m`, :math:`x_{m,2i}`
     - a query or key vector at position :math:`m`; its feature :math:`2i`
     - ``x[..., m, :]``
     - ``(D,)``; scalar
   * - :math:`\tilde{x}_m`
     - the same vector, rotated
     - ``apply_rope(x, positions)[..., m, :]``
     - ``(D,)``
   * - :math:`m`, :math:`n`
     - positions of a query and of a key
     - ``positions``
     - ``(T,)``
   * - :math:`i`
     - index of a feature pair, :math:`0 \le i < D/2`
     - ``i``
     - scalar
   * - :math:`D`
     - features per head (even)
     - ``D = x.shape[-1]``
     - scalar
   * - :math:`b`
     - base of the wavelengths, 10000 as in the paper
     - ``base``
     - scalar
   * - :math:`\theta_i`
     - angular frequency of pair :math:`i`, from 1 down to nearly :math:`1/b`
     - ``frequencies``
     - ``(D/2,)``
   * - :math:`R_m`
     - block-diagonal rotation by angles :math:`m\theta_0, \dots, m\theta_{D/2-1}`
     - (applied, never formed)
     - ``(D, D)``
   * - :math:`q_m`, :math:`k_n`, :math:`\tilde{q}_m`, :math:`\tilde{k}_n`
     - query at :math:`m` and key at :math:`n`, before and after rotation
     - ``q``, ``k``, ``apply_rope(q, ...)``, ``apply_rope(k, ...)``
     - ``(D,)``

Explanation
-----------

Attention compares a query and a key through their dot product. Su et al. :footcite:`su2021roformer` ask
for a way to mark positions such that this dot product sees only the *difference* of the two
positions, and find it in rotations. Split the :math:`D` features into :math:`D/2` pairs and read
each pair as a point in the plane. At position :math:`m`, turn pair :math:`i` by the angle
:math:`m\theta_i`: this is the matrix :math:`R_m` of the equation, one :math:`2\times 2` rotation
per pair.

**The relative-position property, proved.** A rotation matrix is orthogonal, so its transpose is
the rotation by the opposite angle, :math:`R(\alpha)^\top = R(-\alpha)`, and rotations of the same
plane compose by adding angles, :math:`R(\alpha) R(\beta) = R(\alpha + \beta)`. Both facts hold
block by block for the block-diagonal :math:`R_m`, so

.. math::

   \tilde{q}_m^\top \tilde{k}_n = (R_m q_m)^\top (R_n k_n) = q_m^\top R_m^\top R_n k_n
   = q_m^\top R(-m\theta) R(n\theta) k_n = q_m^\top R_{n-m} k_n .

The score depends on the positions only through :math:`n - m`: moving both tokens by the same
:math:`c` leaves it unchanged. Because a rotation preserves length, the norms of queries and keys,
and therefore the scale of the scores, are untouched. In complex numbers the same statement is
one line: pair :math:`i` is :math:`z = x_{2i} + \mathrm{i}\,x_{2i+1}`, the rotation multiplies it
by :math:`e^{\mathrm{i} m\theta_i}`, and :math:`\operatorname{Re}[\,\overline{e^{\mathrm{i}m\theta}
z_q}\, e^{\mathrm{i}n\theta} z_k] = \operatorname{Re}[\bar{z}_q z_k e^{\mathrm{i}(n-m)\theta}]`.

**The frequencies** are those of the sinusoidal encoding (:doc:`positional_encoding`): fast pairs
distinguish neighbours, slow pairs distant tokens. Unlike the sinusoidal encoding, RoPE is applied
to queries and keys in every layer, not added to the input once, and it leaves the values alone, so
what is read is not mixed with where it came from.

**Numerical traps.** The angles :math:`m\theta_i` are computed in float32: at position 4000 an
angle of thousands of radians in bfloat16 has an error of several radians. The rotation is done
on the pairs directly (two multiplies and an add per feature), never by forming :math:`R_m`. This
recipe pairs adjacent features :math:`(2i, 2i+1)` as the paper does; some implementations pair
feature :math:`i` with :math:`i + D/2` instead, which is the same method on permuted features but
not interchangeable with checkpoints of the other convention.

Inductive bias
--------------

RoPE assumes that how much a query wants a key depends on their contents and on their *offset*,
not on where the pair sits in the sequence: the same phrase is read the same way at the start and
in the middle of a document. The model can still learn absolute position (the first token is
recognisable), but translation invariance of attention comes for free, and the slow pairs give a
gentle decay of attention with distance for typical queries and keys.

Example
-------

Rotating a query and a key changes their score, but shifting both positions by the same amount
does not:

>>> import jax, jax.numpy as jnp
>>> from cookbook.attention.rope import apply_rope
>>> k_q, k_k = jax.random.split(jax.random.key(0))
>>> q = jax.random.normal(k_q, (1, 8))
>>> k = jax.random.normal(k_k, (1, 8))
>>> def score(m, n):
...     return float((apply_rope(q, jnp.array([m])) @ apply_rope(k, jnp.array([n])).T)[0, 0])
>>> abs(score(2, 5) - score(12, 15)) < 1e-5  # same offset 3
True
>>> abs(score(2, 5) - score(2, 6)) < 1e-5  # offsets 3 and 4
False
>>> x = jax.random.normal(k_q, (5, 8))
>>> bool(jnp.allclose(jnp.linalg.norm(apply_rope(x, jnp.arange(5)), axis=-1),
...                   jnp.linalg.norm(x, axis=-1), atol=1e-5))
True
"""

import jax.numpy as jnp

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"apply_rope": ("base",)}


def apply_rope(x, positions, base=10000.0):
    """Rotate the feature pairs (2i, 2i+1) of ``x`` (..., T, D) by ``positions`` (T,) times
    ``base ** (-2i / D)``. The angles are computed in float32; the result has the dtype of ``x``."""
    if x.ndim < 2 or x.shape[-1] % 2:
        raise ValueError(f"x must have shape (..., T, D) with D even, got shape {x.shape}")
    *batch, T, D = x.shape
    positions = jnp.asarray(positions)
    if positions.shape != (T,):
        raise ValueError(f"positions must have shape (T,) = ({T},) to match x {x.shape}, got shape {positions.shape}")
    frequencies = base ** (-jnp.arange(0, D, 2, dtype=jnp.float32) / D)  # (D / 2,)
    angles = positions.astype(jnp.float32)[:, None] * frequencies[None, :]  # (T, D / 2)
    cos = jnp.broadcast_to(jnp.cos(angles), (*batch, T, D // 2))
    sin = jnp.broadcast_to(jnp.sin(angles), (*batch, T, D // 2))
    pairs = x.astype(jnp.float32).reshape(*batch, T, D // 2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]  # (..., T, D / 2) each
    rotated = jnp.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1)
    return rotated.reshape(x.shape).astype(x.dtype)
