r"""Spherical harmonics and tensor products
=======================================

Real spherical harmonics turn a direction into features that rotate by known matrices, and the
Clebsch–Gordan tensor product multiplies two such features into a third that rotates the same way:
the building blocks of tensor field networks and their successors, to reach for when a network on
points in space must carry vectors and higher-order quantities and not only distances.

Equation
--------

.. math::

   \begin{aligned}
   Y_l^m(\hat{x}) &= \sqrt{\tfrac{2l+1}{4\pi}\tfrac{(l-|m|)!}{(l+|m|)!}} \;
      Q_l^{|m|}(z) \times
      \begin{cases} \sqrt{2}\, \operatorname{Re}\,(x + i y)^{m} & m > 0 \\
                    1 & m = 0 \\
                    \sqrt{2}\, \operatorname{Im}\,(x + i y)^{|m|} & m < 0 \end{cases}, \\
   Y^l(R \hat{x}) &= D^l(R) \, Y^l(\hat{x}), \qquad
      D^l_{mn}(R) = \textstyle\int_{S^2} Y_l^m(R s) \, Y_l^n(s) \, ds, \\
   (u \otimes v)_{m_3} &= \textstyle\sum_{m_1, m_2} C^{l_1 l_2 l_3}_{m_1 m_2 m_3} \, u_{m_1} v_{m_2},
      \qquad D^{l_3}(R) \, (u \otimes v) = (D^{l_1}(R) u) \otimes (D^{l_2}(R) v)
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`\hat{x}`, :math:`x`, :math:`y`, :math:`z`
     - a direction (a unit vector) and its coordinates; the code divides its input by its length
     - ``x`` and its entries
     - ``(3,)``
   * - :math:`Y_l^m`, :math:`Y^l`
     - real spherical harmonic of degree :math:`l` and order :math:`m`; all :math:`2l+1` orders
     - ``spherical_harmonics``, block ``[l**2:(l+1)**2]`` of its result
     - ``((l_max+1)**2,)``
   * - :math:`l`, :math:`m`, :math:`n`
     - degree, and orders from :math:`-l` to :math:`l` (position :math:`m + l` in a block)
     - ``l``, ``m``
     - integers
   * - :math:`Q_l^{m}`
     - the :math:`m`-th derivative of the Legendre polynomial :math:`P_l`
     - ``Q``
     - polynomial in :math:`z`
   * - :math:`i`
     - the imaginary unit; :math:`(x + iy)^m` is built from its real and imaginary parts
     - ``re``, ``im``
     - scalars
   * - :math:`R`
     - a rotation, or a reflection (any orthogonal matrix)
     - ``R``
     - ``(3, 3)``
   * - :math:`D^l`
     - its Wigner matrix: how the degree-:math:`l` block turns
     - ``wigner_d``
     - ``(2l+1, 2l+1)``
   * - :math:`S^2`, :math:`s`, :math:`ds`
     - the unit sphere, a point on it, its area element; the integral is a weighted sum over the
       points of ``sphere_quadrature``
     - ``points``, ``weights``
     - ``(P, 3)``, ``(P,)``
   * - :math:`u`, :math:`v`, :math:`l_1`, :math:`l_2`, :math:`l_3`
     - features of degrees :math:`l_1` and :math:`l_2`; the degree of their product
     - ``u``, ``v``, ``l1``, ``l2``, ``l_out``
     - ``(2l_1+1,)``, ``(2l_2+1,)``
   * - :math:`C^{l_1 l_2 l_3}`, :math:`m_1`, :math:`m_2`, :math:`m_3`
     - real Clebsch–Gordan coefficients and their orders
     - ``clebsch_gordan``
     - ``(2l_1+1, 2l_2+1, 2l_3+1)``

Explanation
-----------

A network whose hidden features are vectors (forces, velocities, dipoles) must rotate them when its
input rotates. Tensor field networks :footcite:p:`thomas2018tensor` make this exact by giving every
feature a *degree* :math:`l`: a block of :math:`2l+1` numbers that rotates by the Wigner matrix
:math:`D^l(R)`. Degree 0 is a scalar, degree 1 a vector (here in the order :math:`y, z, x`, as
:math:`m = -1, 0, 1`), degree 2 a traceless symmetric matrix, and so on; these are the irreducible
representations of the rotation group.

**Spherical harmonics** are where such features come from. The :math:`2l+1` functions :math:`Y_l^m`
span the homogeneous polynomials of degree :math:`l` in the coordinates whose Laplacian is zero. A
rotation keeps both properties, so rotating the argument mixes them among themselves only, by a
matrix that depends on :math:`R` alone: :math:`D^l(R)`. Because they are orthonormal on the sphere,
:math:`\int Y_l^m Y_{l'}^{n} = \delta_{ll'}\delta_{mn}`, the matrix is an integral, which the code
evaluates exactly with a quadrature on the sphere (Gauss–Legendre in :math:`z`, evenly spaced in
longitude), exact for every polynomial of degree up to :math:`2l`. The product :math:`Y_l^m(R
s)\,Y_l^n(s)` is such a polynomial. A reflection works too: :math:`D^l` of the inversion :math:`-I`
is :math:`(-1)^l I`. The polynomials :math:`Q_l^m` come from the Legendre recurrence, and :math:`(x
+ iy)^m` carries the longitude, so nothing divides by :math:`\sin\theta` and the poles are safe.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.graphs.spherical_harmonics import spherical_harmonics
   lon, lat = jnp.meshgrid(jnp.linspace(-jnp.pi, jnp.pi, 121), jnp.linspace(-jnp.pi / 2, jnp.pi / 2, 61))
   points = jnp.stack([jnp.cos(lat) * jnp.cos(lon), jnp.cos(lat) * jnp.sin(lon), jnp.sin(lat)], -1)
   Y = jax.vmap(lambda p: spherical_harmonics(p, 2))(points.reshape(-1, 3)).reshape(61, 121, 9)
   fig, axes = plt.subplots(3, 5, figsize=(10, 3.6))
   for ax in axes.flat:
       ax.axis("off")
   for l in range(3):
       for m in range(-l, l + 1):
           ax = axes[l, m + 2]
           ax.imshow(Y[:, :, l**2 + l + m], origin="lower", cmap="RdBu_r", vmin=-0.65, vmax=0.65,
                     extent=(-180, 180, -90, 90))
           ax.set_title(f"$Y_{l}^{{{m}}}$", fontsize=9)
   fig.tight_layout()

The real harmonics of degrees 0 to 2 on a map of the sphere (longitude across, latitude up; red
positive, blue negative). :math:`Y_l^m` changes sign across :math:`l` lines: :math:`|m|` great
circles through the poles and :math:`l - |m|` circles of latitude.

**The tensor product.** The product of two features, :math:`u_{m_1} v_{m_2}`, is a
:math:`(2l_1+1)(2l_2+1)` block that rotates by :math:`D^{l_1} \otimes D^{l_2}`. It splits into
degrees :math:`l_3` from :math:`|l_1 - l_2|` to :math:`l_1 + l_2`, and the Clebsch–Gordan
coefficients pick out each part. For two vectors, :math:`l_3 = 0` is their dot product,
:math:`l_3 = 1` their cross product and :math:`l_3 = 2` the traceless symmetric part of their outer
product. The code computes the coefficients of the complex harmonics with Racah's formula
:footcite:p:`racah1942theory` and changes them to the real basis, where, multiplied by
:math:`(-i)^{l_1+l_2-l_3}`, they become real.

A tensor field network layer combines the two: for a neighbour at offset :math:`r`, a filter
:math:`\varphi(\lVert r \rVert) Y^{l_f}(\hat{r})`, a learned function of the distance times a
spherical harmonic of the direction, is multiplied by the neighbour's feature with
:math:`\otimes`, and the results are summed over neighbours; every step commutes with rotations.

.. admonition:: Intuition

   Spherical harmonics are the tones of a drum skin stretched over a ball: degree 0 is the whole
   ball breathing, degree 1 a slosh from one side to the other, degree 2 a squash in two directions.
   Turning the ball turns each pattern into a mix of patterns of the same degree, never of another.
   The tensor product is the rule for which tones two tones make when played together.

Inductive bias
--------------

Features of fixed degree assume that the data's laws are the same in every orientation, so a network
built from them needs no augmentation by rotations and never leaves the symmetry. Degrees above 1
see how a node's neighbours are arranged, not only how far they are: six neighbours at distance 1 in
a flat ring and six at the corners of an octahedron give the same distances, so with equal features
one layer of :doc:`egnn` updates that node in the same way for both, but the sum of their degree-2
harmonics is zero for the octahedron and not for the ring :footcite:p:`joshi2023expressive`. Parity
is the subtle part: the cross product :math:`1 \otimes 1 \to 1` flips sign under a reflection where
a true vector would not (a pseudovector), so a product whose :math:`l_1 + l_2 + l_3` is odd is
equivariant to rotations but to reflections only up to that sign; libraries such as e3nn track it as
a parity label :footcite:p:`geiger2022e3nn`. The cost grows quickly: a product of degrees up to
:math:`L` costs :math:`O(L^6)` with dense coefficients.

Example
-------

The harmonics of degree 0 and 1 of the direction (1, 2, 2)/3, in the order (Y_0, y, z, x):

>>> import jax.numpy as jnp
>>> from cookbook.graphs.spherical_harmonics import (clebsch_gordan, spherical_harmonics, tensor_product,
...     wigner_d)
>>> spherical_harmonics(jnp.array([1.0, 2.0, 2.0]), 1) * jnp.sqrt(4 * jnp.pi)
Array([1.    , 1.1547, 1.1547, 0.5774], dtype=float32)

A rotation by 90 degrees about z turns the harmonics of degree 2 by their Wigner matrix:

>>> R = jnp.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
>>> x = jnp.array([0.3, -0.5, 0.8])
>>> Y2 = lambda x: spherical_harmonics(x, 2)[4:9]
>>> bool(jnp.allclose(wigner_d(R, 2) @ Y2(x), Y2(R @ x), atol=1e-6))
True

Two features of degree 1 are vectors with entries in the order (y, z, x); their product to degree
0 is their dot product divided by :math:`\sqrt{3}`, and to degree 1 their cross product divided by
:math:`\sqrt{2}` (the y axis times the z axis is the x axis):

>>> a, b = jnp.array([1.0, 0.0, 0.0]), jnp.array([0.0, 1.0, 0.0])
>>> tensor_product(a, a + b, 0) * jnp.sqrt(3.0)
Array([1.], dtype=float32)
>>> tensor_product(a, b, 1) * jnp.sqrt(2.0)
Array([0., 0., 1.], dtype=float32)
>>> clebsch_gordan(1, 1, 2).shape
(3, 3, 5)

Implementation notes
--------------------

**The map to e3nn-jax.** e3nn :footcite:p:`geiger2022e3nn` orders the coordinates of its input as
its own first, second and third axis and names the degree-1 block by them, where this page follows
the usual table of real harmonics (:math:`m = -1, 0, 1` for :math:`y, z, x`). The two agree after a
cyclic relabelling of the axes: with :math:`S p = (p_3, p_1, p_2)`,
``e3nn_jax.spherical_harmonics(l, p, normalize=True, normalization="integral")`` equals
:math:`Y^l(S p)`. e3nn's default normalisation, ``"component"``, is :math:`\sqrt{4\pi}` times
larger (each block then has squared length :math:`2l+1`), and ``"norm"`` gives each block unit
length. Their Wigner matrices are related by :math:`D^l_{\text{e3nn}}(R) = D^l(S R S^\top)`, and
``e3nn_jax.clebsch_gordan(l1, l2, l3)`` equals ``clebsch_gordan(l1, l2, l3)`` divided by
:math:`\sqrt{2 l_3 + 1}`: the same phase, normalised to unit Frobenius norm where this page keeps
the textbook's :math:`\sum_{m_1 m_2} (C_{m_1 m_2 m_3})^2 = 1` for each :math:`m_3`. The tests check
each of these to float32 precision.

The coefficients are computed once per triple of degrees in NumPy float64 and cached; the
harmonics are polynomials evaluated in JAX. Libraries reach :math:`O(L^3)` products by rotating to
the edge's frame first :footcite:p:`passaro2023reducing`; e3nn also offers products restricted to
chosen degrees and parities.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"spherical_harmonics": ("l_max",), "sphere_quadrature": ("degree",), "wigner_d": ("l",),
       "clebsch_gordan": ("l1", "l2", "l3"), "tensor_product": ("l_out",)}


def _degree(value, name):
    return _checks.size(value, name, minimum=0)


def spherical_harmonics(x, l_max):
    """Real spherical harmonics of degrees 0 to ``l_max`` of the direction of ``x`` (3,): shape
    ((l_max+1)**2,), degree l in block ``[l**2:(l+1)**2]`` with orders m = -l..l. Orthonormal on
    the unit sphere. The zero vector gives Y_0 and zeros."""
    l_max = _degree(l_max, "l_max")
    x = _checks.float_array(x, "x", ndim=1, what=" (3,)")
    _checks.same_shape(x, "x", (3,), expected_from="a point in space")
    return _harmonics(x, l_max)


@functools.partial(jax.jit, static_argnums=1)  # one program, rather than a compile per small operation
def _harmonics(x, l_max):
    norm2 = jnp.sum(x**2)
    x = x / jnp.sqrt(jnp.where(norm2 == 0, jnp.ones_like(norm2), norm2))
    X, Y, Z = x[0], x[1], x[2]
    # re, im: the real and imaginary parts of (x + i y)^m, for m = 0..l_max.
    re, im = [jnp.ones_like(X)], [jnp.zeros_like(X)]
    for m in range(l_max):
        re.append(X * re[m] - Y * im[m])
        im.append(X * im[m] + Y * re[m])
    # Q[l][m]: the m-th derivative of the Legendre polynomial P_l, by the recurrence in l; written
    # with r2 = |x|^2 (1 on the sphere) so that each Y^l is a homogeneous polynomial, 0 at x = 0.
    r2 = X**2 + Y**2 + Z**2
    Q = [[None] * (l_max + 1) for _ in range(l_max + 1)]
    for m in range(l_max + 1):
        Q[m][m] = jnp.full_like(Z, math.prod(range(1, 2 * m, 2)))  # (2m - 1)!!
        if m + 1 <= l_max:
            Q[m + 1][m] = (2 * m + 1) * Z * Q[m][m]
        for l in range(m + 2, l_max + 1):
            Q[l][m] = ((2 * l - 1) * Z * Q[l - 1][m] - (l + m - 1) * r2 * Q[l - 2][m]) / (l - m)
    out = []
    for l in range(l_max + 1):
        for m in range(-l, l + 1):
            a = abs(m)
            scale = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - a) / math.factorial(l + a))
            angle = re[a] if m > 0 else (im[a] if m < 0 else 1.0)
            out.append(scale * (math.sqrt(2) if m else 1.0) * Q[l][a] * angle)
    return jnp.stack(out)


def sphere_quadrature(degree):
    """``(points (P, 3), weights (P,))`` that integrate every polynomial of degree at most
    ``degree`` over the unit sphere exactly: Gauss–Legendre nodes in z times evenly spaced
    longitudes. The weights sum to 4 pi."""
    degree = _degree(degree, "degree")
    z, w = np.polynomial.legendre.leggauss(degree // 2 + 1)
    phi = 2 * np.pi * np.arange(degree + 1) / (degree + 1)
    rho = np.sqrt(1 - z**2)
    points = np.stack([np.outer(rho, np.cos(phi)), np.outer(rho, np.sin(phi)),
                       np.outer(z, np.ones_like(phi))], axis=-1).reshape(-1, 3)
    weights = np.outer(w, np.full_like(phi, 2 * np.pi / (degree + 1))).reshape(-1)
    # Cast in NumPy and placed as they are: jnp.asarray(..., jnp.float32) compiles a conversion per shape.
    return jax.device_put(points.astype(np.float32)), jax.device_put(weights.astype(np.float32))


def wigner_d(R, l):
    """The real Wigner matrix (2l+1, 2l+1) of an orthogonal matrix ``R`` (3, 3) for degree ``l``:
    ``spherical_harmonics(R @ x)`` block l equals ``wigner_d(R, l) @`` that of ``x``. Computed as
    the integral of Y_l(R s) Y_l(s)^T over the sphere by an exact quadrature. A concrete ``R`` that
    is not orthogonal (to 1e-4) is refused; under jit it is not checked."""
    l = _degree(l, "l")
    R = _checks.float_array(R, "R", ndim=2, what=" (3, 3)")
    _checks.same_shape(R, "R", (3, 3), expected_from="a rotation or reflection of 3-d space")
    if _checks.is_concrete(R):
        error = np.abs(np.asarray(R, np.float64).T @ np.asarray(R, np.float64) - np.eye(3)).max()
        if not error <= 1e-4:
            raise ValueError(f"R must be orthogonal (R^T R = I), got R^T R - I up to {error:.3g}")
    points, weights = sphere_quadrature(2 * l)
    return _wigner_d(R, points, weights.astype(R.dtype), l)


@functools.partial(jax.jit, static_argnums=3)
def _wigner_d(R, points, weights, l):
    block = lambda p: _harmonics(p, l)[l**2:]
    Y = jax.vmap(block)(points.astype(R.dtype))  # (P, 2l+1)
    Y_rotated = jax.vmap(block)(points.astype(R.dtype) @ R.T)  # (P, 2l+1)
    return jnp.einsum("p,pm,pn->mn", weights, Y_rotated, Y)


@functools.lru_cache(maxsize=None)
def _clebsch_gordan_numpy(l1, l2, l3):
    def complex_cg(m1, m2):
        # Racah's formula for <l1 m1 l2 m2 | l3 m1+m2>, complex harmonics with the Condon-Shortley phase.
        M, f = m1 + m2, math.factorial
        total = 0.0
        for k in range(l1 + l2 - l3 + 1):
            args = (k, l1 + l2 - l3 - k, l1 - m1 - k, l2 + m2 - k, l3 - l2 + m1 + k, l3 - l1 - m2 + k)
            if min(args) >= 0:
                total += (-1) ** k / math.prod(f(a) for a in args)
        front = (2 * l3 + 1) * f(l3 + l1 - l2) * f(l3 - l1 + l2) * f(l1 + l2 - l3) / f(l1 + l2 + l3 + 1)
        return math.sqrt(front * f(l3 + M) * f(l3 - M) * f(l1 - m1) * f(l1 + m1) * f(l2 - m2) * f(l2 + m2)) * total

    C = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1))
    for m1 in range(-l1, l1 + 1):
        for m2 in range(-l2, l2 + 1):
            if abs(m1 + m2) <= l3:
                C[m1 + l1, m2 + l2, m1 + m2 + l3] = complex_cg(m1, m2)

    def real_from_complex(l):
        # Row m: the real harmonic Y_l^m as a combination of the complex ones (columns -l..l).
        U = np.zeros((2 * l + 1, 2 * l + 1), complex)
        U[l, l] = 1
        for m in range(1, l + 1):
            U[l + m, l + m], U[l + m, l - m] = (-1) ** m / math.sqrt(2), 1 / math.sqrt(2)
            U[l - m, l - m], U[l - m, l + m] = 1j / math.sqrt(2), -1j * (-1) ** m / math.sqrt(2)
        return U

    real = np.einsum("ai,bj,ck,ijk->abc", real_from_complex(l1).conj(), real_from_complex(l2).conj(),
                     real_from_complex(l3), C) * (-1j) ** (l1 + l2 - l3)
    out = np.ascontiguousarray(real.real)
    out.flags.writeable = False
    return out


def clebsch_gordan(l1, l2, l3):
    """Real Clebsch–Gordan coefficients (2 l1 + 1, 2 l2 + 1, 2 l3 + 1) that couple degrees ``l1``
    and ``l2`` into ``l3``; zeros unless |l1 - l2| <= l3 <= l1 + l2. For each output order the
    squares sum to 1."""
    l1, l2, l3 = _degree(l1, "l1"), _degree(l2, "l2"), _degree(l3, "l3")
    if not abs(l1 - l2) <= l3 <= l1 + l2:
        return jax.device_put(np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1), np.float32))
    return jax.device_put(_clebsch_gordan_numpy(l1, l2, l3).astype(np.float32))


def _feature(u, name):
    u = _checks.float_array(u, name, ndim=1, what=" (2l+1,)")
    if u.shape[0] % 2 == 0:
        raise ValueError(f"{name} must have an odd length 2l+1 (a feature of degree l), got shape {u.shape}")
    return u, u.shape[0] // 2


def tensor_product(u, v, l_out):
    """The degree-``l_out`` part of the product of ``u`` (2 l1 + 1,) and ``v`` (2 l2 + 1,): shape
    (2 l_out + 1,). The degrees l1 and l2 are read from the lengths."""
    l_out = _degree(l_out, "l_out")
    u, l1 = _feature(u, "u")
    v, l2 = _feature(v, "v")
    if not abs(l1 - l2) <= l_out <= l1 + l2:
        raise ValueError(f"l_out must lie between |l1 - l2| and l1 + l2 for u of degree l1 = {l1} and v of "
                         f"degree l2 = {l2}, got l_out={l_out}")
    C = _clebsch_gordan_numpy(l1, l2, l_out).astype(jnp.result_type(u, v))  # cast in NumPy
    return _contract(C, u, v)


@jax.jit  # one compiled program per triple of degrees
def _contract(C, u, v):
    return jnp.einsum("abc,a,b->c", C, u, v)
