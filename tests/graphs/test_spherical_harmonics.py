import math

import e3nn_jax as e3nn
import jax
import numpy as np
import pytest
import scipy.linalg

from cookbook.graphs.spherical_harmonics import (clebsch_gordan, sphere_quadrature, spherical_harmonics,
                                                 tensor_product, wigner_d)

L_MAX = 3
#: The cyclic relabelling of the axes that maps e3nn's convention to this page's: S p = (p3, p1, p2).
S = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)
_harmonics = jax.jit(jax.vmap(lambda x: spherical_harmonics(x, L_MAX)))


def harmonics(p):
    """(P, 3) -> (P, 16), read in NumPy: each slice of a JAX array below would compile a program."""
    return np.asarray(_harmonics(p))


#: Every point set below has P = 28 points, as many as the quadrature of degree 2 L_MAX: one compile.
P = 28
#: The Wigner matrices of degrees 0 to L_MAX, in one compiled function (R traced: not checked).
_wigner_all = jax.jit(lambda R: [wigner_d(R, l) for l in range(L_MAX + 1)])


def wigner_all(R):
    return [np.asarray(D) for D in _wigner_all(R)]  # in NumPy, as the harmonics


IRREPS = "+".join(f"{l}{'eo'[l % 2]}" for l in range(L_MAX + 1))  # 0e+1o+2e+3o: parity (-1)^l
e3nn_harmonics = jax.jit(lambda p: [e3nn.spherical_harmonics(IRREPS, p, normalize=True, normalization=n).array
                                    for n in ("integral", "component", "norm")])


def block(Y, l):
    return Y[..., l**2:(l + 1) ** 2]


def random_points(seed, n=P):
    return np.random.default_rng(seed).standard_normal((n, 3)).astype(np.float32)


def random_orthogonal(seed, det):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))[None, :]
    if np.sign(np.linalg.det(q)) != det:
        q[:, 0] = -q[:, 0]
    return q.astype(np.float32)


# ---- The harmonics ------------------------------------------------------------------------------

def test_matches_e3nn_after_relabelling_the_axes():
    p = random_points(0)
    ours = harmonics(p @ S.T)  # Y(S p)
    integral, component, norm = e3nn_harmonics(p)
    np.testing.assert_allclose(ours, integral, atol=2e-6)
    # e3nn's default normalisation, "component", is sqrt(4 pi) larger: squared length 2l + 1 per block.
    np.testing.assert_allclose(component, np.sqrt(4 * np.pi) * ours, atol=1e-5)
    np.testing.assert_allclose(np.sum(block(component, 2) ** 2, axis=-1), 5.0, rtol=1e-5)
    # "norm": each block of unit length.
    for l in range(L_MAX + 1):
        ours_l = block(ours, l)
        np.testing.assert_allclose(block(norm, l), ours_l / np.linalg.norm(ours_l, axis=-1, keepdims=True), atol=2e-6)


def test_degrees_one_and_two_by_hand():
    x = np.array([0.3, -0.5, 0.8])
    X, Y, Z = x / np.linalg.norm(x)
    Y_all = spherical_harmonics(x.astype(np.float32), 2)
    c1, c2 = np.sqrt(3 / (4 * np.pi)), 0.5 * np.sqrt(15 / np.pi)
    want = [0.5 / np.sqrt(np.pi), c1 * Y, c1 * Z, c1 * X, c2 * X * Y, c2 * Y * Z,
            0.25 * np.sqrt(5 / np.pi) * (3 * Z**2 - 1), c2 * X * Z, 0.5 * c2 * (X**2 - Y**2)]
    np.testing.assert_allclose(Y_all, want, atol=1e-6)


def test_orthonormal_on_the_sphere_by_quadrature():
    points, weights = sphere_quadrature(2 * L_MAX)
    Y = np.float64(harmonics(points))
    np.testing.assert_allclose(Y.T @ (np.float64(weights)[:, None] * Y), np.eye((L_MAX + 1) ** 2), atol=2e-6)


def test_quadrature_is_exact_up_to_its_degree_and_no_further():
    points, weights = (np.float64(a) for a in sphere_quadrature(6))
    x, y, z = points.T
    assert abs(weights.sum() - 4 * np.pi) < 1e-5
    assert abs(weights @ z**2 - 4 * np.pi / 3) < 1e-5
    assert abs(weights @ (x**2 * y**2 * z**2) - 4 * np.pi / 105) < 1e-6
    points, weights = (np.float64(a) for a in sphere_quadrature(3))
    assert abs(weights @ points[:, 2] ** 4 - 4 * np.pi / 5) > 0.1  # degree 4 is beyond it


def test_direction_only_poles_and_the_zero_vector():
    p = random_points(1)
    np.testing.assert_allclose(harmonics(3.5 * p), harmonics(p), atol=1e-6)
    p[:3] = [[0, 0, 1], [0, 0, -1], [0, 0, 0]]
    poles = harmonics(p)
    assert np.all(np.isfinite(poles))
    for l in range(L_MAX + 1):  # at the poles only m = 0 survives: sqrt((2l+1)/(4 pi)) (+-1)^l
        want = np.zeros(2 * l + 1)
        want[l] = np.sqrt((2 * l + 1) / (4 * np.pi))
        np.testing.assert_allclose(block(poles[0], l), want, atol=1e-6)
        np.testing.assert_allclose(block(poles[1], l), (-1) ** l * want, atol=1e-6)
    np.testing.assert_allclose(poles[2], np.eye(16)[0] / np.sqrt(4 * np.pi), atol=1e-7)


def test_degree_two_tells_a_ring_from_an_octahedron():
    angles = 2 * np.pi * np.arange(6) / 6
    ring = np.stack([np.cos(angles), np.sin(angles), np.zeros(6)], axis=1)
    octahedron = np.concatenate([np.eye(3), -np.eye(3)])
    p = random_points(10)
    p[:6], p[6:12] = ring, octahedron  # six unit offsets each: the same distances
    Y = harmonics(p)
    assert np.linalg.norm(block(Y[6:12], 2).sum(0)) < 1e-6
    assert np.linalg.norm(block(Y[:6], 2).sum(0)) > 0.5


# ---- Wigner matrices ----------------------------------------------------------------------------

@pytest.mark.parametrize("det", [1, -1])
def test_wigner_matrices_turn_the_harmonics(det):
    p = random_points(2)
    for seed in range(2):
        R = random_orthogonal(seed, det)
        Y, Y_rotated = harmonics(p), harmonics(p @ R.T)
        for l, D in enumerate(wigner_all(R)):
            np.testing.assert_allclose(block(Y, l) @ D.T, block(Y_rotated, l), atol=2e-6, err_msg=f"l = {l}")
            np.testing.assert_allclose(D @ D.T, np.eye(2 * l + 1), atol=2e-6)


def test_wigner_matrices_multiply_like_the_rotations_and_invert_with_parity():
    R1, R2 = random_orthogonal(3, 1), random_orthogonal(4, -1)
    D1, D2, D12, inversion = (wigner_all(R) for R in (R1, R2, R1 @ R2, -np.eye(3, dtype=np.float32)))
    for l in range(1, L_MAX + 1):
        np.testing.assert_allclose(D12[l], D1[l] @ D2[l], atol=3e-6)
        np.testing.assert_allclose(inversion[l], (-1) ** l * np.eye(2 * l + 1), atol=1e-6)
    # Degree 1 is the rotation itself, with the axes in the order y, z, x; and the eager call agrees.
    order = [1, 2, 0]
    np.testing.assert_allclose(wigner_d(R1, 1), R1[np.ix_(order, order)], atol=1e-6)


def test_wigner_matrices_match_e3nn_after_relabelling():
    R = random_orthogonal(5, -1)  # a reflection, so that e3nn's parities count too
    theirs = jax.jit(e3nn.Irreps("1o+2e+3o").D_from_matrix)(R)
    ours = scipy.linalg.block_diag(*wigner_all(S @ R @ S.T)[1:4])
    np.testing.assert_allclose(ours, theirs, atol=3e-6)


# ---- Clebsch-Gordan coefficients and the tensor product -----------------------------------------

TRIPLES = [(l1, l2, l3) for l1 in range(3) for l2 in range(3) for l3 in range(abs(l1 - l2), l1 + l2 + 1)]


def test_clebsch_gordan_match_e3nn_and_are_orthonormal():
    for l1, l2, l3 in TRIPLES:
        C = np.asarray(clebsch_gordan(l1, l2, l3))
        np.testing.assert_allclose(e3nn.clebsch_gordan(l1, l2, l3), C / np.sqrt(2 * l3 + 1), atol=1e-7,
                                   err_msg=f"{(l1, l2, l3)}")
        gram = np.einsum("abc,abd->cd", np.float64(C), np.float64(C))
        np.testing.assert_allclose(gram, np.eye(2 * l3 + 1), atol=1e-6)
    assert not np.any(np.asarray(clebsch_gordan(1, 1, 3)))  # outside |l1 - l2| <= l3 <= l1 + l2


def test_vector_products_are_the_dot_cross_and_traceless_products():
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((2, 3)).astype(np.float32)  # entries in the order (y, z, x)
    np.testing.assert_allclose(tensor_product(a, b, 0), [a @ b / np.sqrt(3)], rtol=1e-5)
    np.testing.assert_allclose(tensor_product(a, b, 1), np.cross(a, b) / np.sqrt(2), rtol=1e-5, atol=1e-6)
    # Degree 2 of two vectors: the traceless symmetric part of a b^T, five numbers of total square
    # |sym(a b^T) - tr/3 I|^2, with |a x b|^2 / 2 and (a.b)^2 / 3 the rest of |a|^2 |b|^2.
    outer = np.outer(a, b)
    sym = (outer + outer.T) / 2 - np.trace(outer) / 3 * np.eye(3)
    np.testing.assert_allclose(np.sum(np.asarray(tensor_product(a, b, 2)) ** 2), np.sum(sym**2), rtol=1e-5)
    total = sum(np.sum(np.asarray(tensor_product(a, b, l)) ** 2) for l in range(3))
    np.testing.assert_allclose(total, (a @ a) * (b @ b), rtol=1e-5)


@pytest.mark.parametrize("det", [1, -1])
def test_the_tensor_product_is_equivariant(det):
    R = random_orthogonal(7, det)
    D = [np.asarray(d) for d in wigner_all(R)]
    rng = np.random.default_rng(8)
    for l1, l2, l3 in [(1, 1, 0), (1, 1, 1), (1, 1, 2), (2, 1, 2), (2, 2, 1), (2, 1, 3), (0, 2, 2)]:
        u = rng.standard_normal(2 * l1 + 1).astype(np.float32)
        v = rng.standard_normal(2 * l2 + 1).astype(np.float32)
        parity = det ** (l1 + l2 + l3)  # a reflection flips the sign of the odd products (pseudo-tensors)
        np.testing.assert_allclose(tensor_product(D[l1] @ u, D[l2] @ v, l3),
                                   parity * D[l3] @ np.asarray(tensor_product(u, v, l3)), atol=2e-5, err_msg=f"{(l1, l2, l3)}")


def test_a_product_of_harmonics_is_a_harmonic():
    # Y^1(x) (x) Y^1(x) to degree 2 is proportional to Y^2(x): the recursion behind the harmonics.
    Y = harmonics(random_points(9))
    products = np.asarray(jax.vmap(lambda y: tensor_product(y, y, 2))(block(Y, 1)))
    ratio = products / block(Y, 2)
    np.testing.assert_allclose(ratio, np.full_like(ratio, np.sqrt(3 / (10 * np.pi))), rtol=1e-4)


# ---- Bad input ----------------------------------------------------------------------------------

def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match=r"x must have shape \(3,\) \(a point in space\), got shape \(4,\)"):
        spherical_harmonics(np.ones(4, np.float32), 2)
    with pytest.raises(TypeError, match=r"x must be a floating-point array"):
        spherical_harmonics(np.array([1, 2, 3], np.int32), 2)
    with pytest.raises(ValueError, match=r"l_max must be at least 0, got -1"):
        spherical_harmonics(np.ones(3, np.float32), -1)
    with pytest.raises(TypeError, match=r"degree must be an int"):
        sphere_quadrature(2.0)
    with pytest.raises(ValueError, match=r"R must be orthogonal"):
        wigner_d(2 * np.eye(3, dtype=np.float32), 1)
    with pytest.raises(ValueError, match=r"u must have an odd length 2l\+1"):
        tensor_product(np.ones(4, np.float32), np.ones(3, np.float32), 1)
    with pytest.raises(ValueError, match=r"l_out must lie between \|l1 - l2\| and l1 \+ l2 .* got l_out=3"):
        tensor_product(np.ones(3, np.float32), np.ones(3, np.float32), 3)
