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
     - row :math:`m` of ``x``; ``even`` (and ``odd`` for :math:`x_{m,2i+1}`)
     - ``(D,)``; scalar
   * - :math:`\tilde{x}_m`
     - the same vector, rotated
     - row :math:`m` of the result of ``apply_rope``, ``rotated``
     - ``(D,)``
   * - :math:`m`, :math:`n`
     - positions of a query and of a key
     - ``positions``
     - ``(T,)``
   * - :math:`i`
     - index of a feature pair, :math:`0 \le i < D/2`
     - the index along the last axis of ``frequencies``
     - scalar
   * - :math:`D`
     - features per head (even)
     - ``D``
     - scalar
   * - :math:`b`
     - base of the wavelengths, 10000 as in the paper
     - ``base``
     - scalar
   * - :math:`\theta_i`
     - angular frequency of pair :math:`i`, from 1 down to :math:`b^{-(D-2)/D}`, nearly
       :math:`1/b`
     - ``frequencies``, returned by ``rope_frequencies``
     - ``(D/2,)``
   * - :math:`R_m`
     - block-diagonal rotation by angles :math:`m\theta_0, \dots, m\theta_{D/2-1}`
     - (applied pair by pair from ``cos`` and ``sin``, never formed)
     - ``(D, D)``
   * - :math:`q_m`, :math:`k_n`, :math:`\tilde{q}_m`, :math:`\tilde{k}_n`
     - query at :math:`m` and key at :math:`n`, before and after rotation
     - rows of the queries and of the keys, each passed to ``apply_rope`` as ``x``
     - ``(D,)``

Explanation
-----------

Attention compares a query and a key through their dot product. Su et al. :footcite:`su2021roformer` ask
for a way to mark positions such that this dot product sees only the *difference* of the two
positions, and find it in rotations. Split the :math:`D` features into :math:`D/2` pairs and read
each pair as a point in the plane. At position :math:`m`, turn pair :math:`i` by the angle
:math:`m\theta_i`: this is the matrix :math:`R_m` of the equation, one :math:`2\times 2` rotation
per pair.

.. admonition:: Intuition

   Take two clocks whose hands turn at the same speed, one started at time :math:`m` and one at
   time :math:`n`. Whatever time it is now, the angle between their hands is the same: it records
   only how far apart they were started. RoPE gives every query and key such a clock, with
   :math:`D/2` hands turning at different speeds, and the dot product reads the angles between
   matching hands. The idea came from complex numbers, where multiplying by
   :math:`e^{\mathrm{i}m\theta}` is a rotation and the product of one number with the conjugate of
   another keeps only the difference of their phases.

**The relative-position property, proved.** A rotation matrix is orthogonal, so its transpose is
the rotation by the opposite angle, :math:`R(\alpha)^\top = R(-\alpha)`, and rotations of the same
plane compose by adding angles, :math:`R(\alpha) R(\beta) = R(\alpha + \beta)`. Both facts hold
block by block for the block-diagonal :math:`R_m`, so

.. math::

   \tilde{q}_m^\top \tilde{k}_n = (R_m q_m)^\top (R_n k_n) = q_m^\top R_m^\top R_n k_n
   = q_m^\top R(-m\theta) R(n\theta) k_n = q_m^\top R_{n-m} k_n .

The score depends on the positions only through :math:`n - m`: moving both tokens by the same
:math:`c` leaves it unchanged. Because a rotation preserves length, the norms of queries and keys,
and therefore the scale of the scores, are untouched. In complex numbers, with pair :math:`i`
written :math:`z = x_{2i} + \mathrm{i}\,x_{2i+1}`, the score is
:math:`\operatorname{Re} \sum_i \bar{z}_{q,i} z_{k,i} e^{\mathrm{i}(n-m)\theta_i}`.

**The frequencies** are those of the sinusoidal encoding (:doc:`positional_encoding`): fast pairs
distinguish neighbours, slow pairs distant tokens. Unlike the sinusoidal encoding, RoPE is applied
to queries and keys in every layer, not added to the input once, and it leaves the values alone, so
what is read is not mixed with where it came from.

**What decays with distance, and what does not.** For a query and a key drawn independently at
random the score has mean 0 and standard deviation :math:`\sqrt{D}` at *every* offset: RoPE does
not make typical scores fall off. What falls off is an upper bound. Writing
:math:`h_i = \bar{z}_{q,i} z_{k,i}` and summing by parts, Su et al. bound the score by

.. math::

   \Bigl|\sum_i h_i e^{\mathrm{i} r\theta_i}\Bigr| \le \max_i |h_{i+1} - h_i|
   \sum_{j=1}^{D/2} \Bigl|\sum_{i<j} e^{\mathrm{i} r\theta_i}\Bigr|, \qquad r = n - m,

and the partial sums of the rotating terms shrink as :math:`r` grows, because the fast pairs turn
out of phase with each other (``relative_distance_bound``). Averaged over offsets the second
factor, divided by :math:`D/2`, falls from 32.5 at :math:`r = 0` to about 12.8 for
:math:`16 \le r < 64` and about 5.0 for :math:`1024 \le r < 4096` (:math:`D = 128`), though not
monotonically. So a query and key whose pair products :math:`h_i` vary smoothly, such as a key
that matches the query's content, score less the farther apart they are.

**Past the training length** the slow pairs reach angles never seen in training, and models
degrade quickly. *Position interpolation* :footcite:`chen2023extending` divides the positions by
the extension factor :math:`s` so that every angle stays in the trained range, followed by a short
fine-tuning; *NTK-aware scaling* :footcite:`bloc97_2023ntk` instead raises the base to
:math:`b\, s^{D/(D-2)}`, which leaves the fastest pair alone and slows the slowest exactly by
:math:`s`; YaRN :footcite:`peng2024yarn` interpolates only the slow pairs and sharpens the softmax
slightly. With this function the first is ``positions / s`` and the second a larger ``base``.

**Numerical traps.** The angles :math:`m\theta_i` are computed in float32: at position 4000 an
angle of thousands of radians in bfloat16 is off by up to 8 radians. The rotation is done
on the pairs directly (two multiplies and an add per feature), never by forming :math:`R_m`. This
recipe pairs adjacent features :math:`(2i, 2i+1)` as the paper does; some implementations pair
feature :math:`i` with :math:`i + D/2` instead, which is the same method on permuted features but
not interchangeable with checkpoints of the other convention.

Inductive bias
--------------

RoPE assumes that how much a query wants a key depends on their contents and on their *offset*,
not on where the pair sits in the sequence: the same phrase is read the same way at the start and
in the middle of a document. The model can still learn absolute position (the first token is
recognisable), but translation invariance of attention comes for free. There is no built-in
preference for nearby tokens beyond the decaying bound above: a model that wants locality must
learn queries and keys that use it.

Example
-------

Rotating a query and a key changes their score, but shifting both positions by the same amount
does not:

>>> import jax, jax.numpy as jnp
>>> from cookbook.attention.rope import apply_rope, relative_distance_bound, rope_frequencies
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
>>> rope_frequencies(8)  # 10000 ** (-2i / 8)
Array([1.   , 0.1  , 0.01 , 0.001], dtype=float32)
>>> relative_distance_bound(jnp.array([0, 16, 1024]), 128).round(1)
Array([32.5, 15.8,  4. ], dtype=float32)
"""


import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"apply_rope": ("base",), "rope_frequencies": ("D", "base"), "relative_distance_bound": ("D", "base")}


# Each public function checks its input in Python, then hands it as it comes to one compiled core
# (D and base static), so that repeated calls of the same shapes reuse one program instead of
# dispatching a dozen operations one by one. A base traced by an outer jax.jit goes to a second core
# that takes it as an argument.
def _frequencies(D, base):
    return base ** (-jnp.arange(0, D, 2, dtype=jnp.float32) / D)  # (D / 2,)


def _check_D_base(D, base):
    D = _checks.size(D, "D", minimum=2)
    if D % 2:
        raise ValueError(f"D must be even (features come in pairs), got D={D}")
    _checks.positive(base, "base")
    return D, base


def rope_frequencies(D, base=10000.0):
    """The angular frequencies ``base ** (-2i / D)`` of the D / 2 feature pairs, in float32."""
    D, base = _check_D_base(D, base)
    if _checks.is_concrete(base):
        return _rope_frequencies(D, _checks.static_number(base, "base"))
    return _rope_frequencies_traced(D, base)


_rope_frequencies = jax.jit(_frequencies, static_argnums=(0, 1))
_rope_frequencies_traced = jax.jit(_frequencies, static_argnums=0)


def _positions(positions, name):
    positions = _checks._as_array(positions, name)  # a NumPy array placed without compiling
    if not (jnp.issubdtype(positions.dtype, jnp.integer) or jnp.issubdtype(positions.dtype, jnp.floating)):
        raise TypeError(f"{name} must hold integer or real positions, got dtype {positions.dtype}")
    return positions


def apply_rope(x, positions, base=10000.0):
    """Rotate the feature pairs (2i, 2i+1) of ``x`` (..., T, D) by ``positions`` (T,) times
    ``base ** (-2i / D)``. Positions may be fractional (position interpolation divides them). The
    angles are computed in float32; the result has the dtype of ``x``."""
    x = _checks.float_array(x, "x", min_ndim=2, what=" (..., T, D)")
    if x.shape[-1] % 2:
        raise ValueError(f"x must have shape (..., T, D) with D even, got shape {x.shape}")
    T = x.shape[-2]
    positions = _positions(positions, "positions")
    if positions.shape != (T,):
        raise ValueError(f"positions must have shape (T,) = ({T},) to match x {x.shape}, got shape {positions.shape}")
    _checks.positive(base, "base")
    if _checks.is_concrete(base):
        return _apply_rope(x, positions, base=_checks.static_number(base, "base"))
    return _apply_rope_traced(x, positions, base)


def _rotate(x, positions, base):
    *batch, T, D = x.shape
    frequencies = _frequencies(D, base)  # (D / 2,)
    angles = positions.astype(jnp.float32)[:, None] * frequencies[None, :]  # (T, D / 2)
    cos = jnp.broadcast_to(jnp.cos(angles), (*batch, T, D // 2))
    sin = jnp.broadcast_to(jnp.sin(angles), (*batch, T, D // 2))
    pairs = x.astype(jnp.float32).reshape(*batch, T, D // 2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]  # (..., T, D / 2) each
    rotated = jnp.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1)
    return rotated.reshape(x.shape).astype(x.dtype)


_apply_rope = jax.jit(_rotate, static_argnames="base")
_apply_rope_traced = jax.jit(_rotate)


def relative_distance_bound(offsets, D, base=10000.0):
    """Su et al.'s decaying factor ``(2 / D) sum_j |sum_{i<j} exp(1j r theta_i)|`` for each offset r.

    Times ``max_i |h_{i+1} - h_i|`` it bounds the score of a query and a key at offset r.
    """
    offsets = _positions(offsets, "offsets")
    D, base = _check_D_base(D, base)
    if _checks.is_concrete(base):
        return _relative_distance_bound(offsets, D, _checks.static_number(base, "base"))
    return _relative_distance_bound_traced(offsets, D, base)


def _bound(offsets, D, base):
    frequencies = _frequencies(D, base)  # (D / 2,)
    angles = offsets.astype(jnp.float32)[..., None] * frequencies.reshape((1,) * offsets.ndim + (-1,))  # (..., D / 2)
    partial_cos = jnp.cumsum(jnp.cos(angles), axis=-1)  # real and imaginary parts of the partial sums
    partial_sin = jnp.cumsum(jnp.sin(angles), axis=-1)
    return jnp.mean(jnp.hypot(partial_cos, partial_sin), axis=-1)  # (...,)


_relative_distance_bound = jax.jit(_bound, static_argnums=(1, 2))
_relative_distance_bound_traced = jax.jit(_bound, static_argnums=1)
