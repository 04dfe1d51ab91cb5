import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from cookbook.optimization.adam import adam
from cookbook.optimization.muon import newton_schulz
from cookbook.optimization.sgd import run_optimizer
from cookbook.optimization.shampoo import ShampooState, inverse_root, shampoo, soap
from optimization_helpers import assert_jit_agrees


def test_inverse_root_matches_scipy_and_floors_tiny_eigenvalues():
    rng = np.random.default_rng(0)
    M = rng.normal(size=(5, 5))
    X = M @ M.T + 0.1 * np.eye(5)
    expected = scipy.linalg.fractional_matrix_power(X, -0.25)
    np.testing.assert_allclose(np.asarray(inverse_root(X.astype(np.float32), 4)), expected, rtol=1e-3, atol=1e-4)
    # A singular matrix gets a large but finite root: its zero eigenvalue is raised to 1e-6 of the largest.
    u = np.ones((4, 1)) / 2.0
    root = np.asarray(inverse_root((u @ u.T).astype(np.float32), 4))
    assert np.all(np.isfinite(root)) and np.abs(root).max() < 2 * (1e-6) ** -0.25


def test_one_step_without_memory_is_the_orthogonal_factor_that_muon_approximates():
    # update runs one compiled program per shape, whatever the hyperparameters; the tests' gradients
    # are (4, 3), the page's shape, so they all share it (assert_jit_agrees checks update under jit)
    G = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)  # NumPy: no sampler to compile
    opt = shampoo(1.0, eps=1e-12)
    updates, _ = opt.update({"w": G}, opt.init({"w": np.zeros((4, 3), np.float32)}))
    U, _, Vt = np.linalg.svd(np.asarray(G, np.float64), full_matrices=False)
    np.testing.assert_allclose(-np.asarray(updates["w"]), U @ Vt, atol=2e-3)
    # Muon's five Newton-Schulz steps land within its band around the same factor.
    assert np.abs(np.asarray(newton_schulz(G)) - U @ Vt).max() < 0.35


def test_statistics_accumulate_and_the_step_is_equivariant_to_rotations_of_both_sides():
    rng = np.random.default_rng(2)
    grads = [rng.normal(size=(4, 3)).astype(np.float32) for _ in range(3)]  # NumPy inputs: no conversions
    Q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    R, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    Q, R = Q.astype(np.float32), R.astype(np.float32)
    opt = shampoo(0.5, eps=1e-3)
    s = s_rot = opt.init({"w": np.zeros((4, 3), np.float32)})  # immutable: the two runs start from one state
    step = opt.update
    for G in grads:
        u, s = step({"w": G}, s)
        u_rot, s_rot = step({"w": Q @ G @ R}, s_rot)
    expected_left = 1e-3 * np.eye(4) + sum(np.asarray(G) @ np.asarray(G).T for G in grads)
    np.testing.assert_allclose(np.asarray(s.left["w"]), expected_left, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(u_rot["w"]), Q @ np.asarray(u["w"]) @ R, atol=1e-4)  # in NumPy
    assert isinstance(s, ShampooState) and int(s.count) == 3


def test_on_a_kronecker_structured_quadratic_shampoo_beats_adam_by_thirty_times():
    # ||A W B - C||^2 with A (6 x 6) and B (5 x 5) of condition number 30, 200 steps from W = 0,
    # each optimiser at the best of four learning rates.
    rng = np.random.default_rng(0)

    def ill_conditioned(n):
        Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
        return (Q @ np.diag(np.logspace(0, np.log10(30.0), n)) @ Q.T).astype(np.float32)

    A, B = ill_conditioned(6), ill_conditioned(5)
    C = A @ rng.normal(size=(6, 5)).astype(np.float32) @ B  # float32 NumPy: constants of the jitted runs
    loss = lambda p: jnp.sum((A @ p["w"] @ B - C) ** 2)
    p0 = {"w": np.zeros((6, 5), np.float32)}
    grids = {"shampoo": (shampoo, (1.0, 3.0, 10.0, 30.0)), "soap": (soap, (0.03, 0.1, 0.3, 1.0)),
             "adam": (adam, (0.1, 0.3, 1.0, 3.0))}
    curves = jax.jit(lambda: {name: jnp.stack([run_optimizer(loss, p0, make(lr), steps=200)[1] for lr in lrs])
                              for name, (make, lrs) in grids.items()})()
    curves = {name: np.asarray(v) for name, v in curves.items()}  # read in NumPy
    best = {name: float(np.nanmin(v[:, -1])) for name, v in curves.items()}  # the last step
    lowest = {name: float(np.nanmin(v)) for name, v in curves.items()}  # anywhere on the way
    assert best["shampoo"] < best["adam"] / 30, best
    # At a constant learning rate SOAP's last steps oscillate (Adam's do not here: its loss only
    # falls), so SOAP is compared by the lowest loss each reaches on the way.
    assert lowest["adam"] == pytest.approx(best["adam"], rel=1e-6), (lowest, best)
    assert lowest["soap"] < lowest["adam"] / 2, lowest


def test_soap_carries_its_first_moment_into_a_new_basis():
    # In the parameters' own coordinates the first moment is the moving average of the gradients,
    # whatever basis SOAP holds it in, also across a refresh of the basis.
    grads = list(np.random.default_rng(5).standard_normal((5, 4, 3)).astype(np.float32))  # NumPy: no sampler
    opt = soap(0.1, b1=0.9, precondition_every=2)
    state, step = opt.init({"w": np.zeros((4, 3), np.float32)}), opt.update
    average = np.zeros((4, 3))
    for G in grads:
        _, state = step({"w": G}, state)
        average = 0.9 * average + 0.1 * np.asarray(G)
        Ql, mu, Qr = (np.asarray(a["w"]) for a in (state.Q_left, state.mu, state.Q_right))
        np.testing.assert_allclose(Ql @ mu @ Qr.T, average, atol=1e-5)  # in NumPy float32


def test_soap_refreshes_its_basis_every_few_steps_and_agrees_under_jit():
    G = np.random.default_rng(3).standard_normal((4, 3)).astype(np.float32)  # NumPy: no sampler to compile
    opt = soap(0.1, precondition_every=3)
    state = opt.init({"w": np.zeros((4, 3), np.float32)})
    bases, step = [], opt.update
    for _ in range(4):
        _, state = step({"w": G * np.float32(1 + 0.1 * len(bases))}, state)
        bases.append(np.asarray(state.Q_left["w"]))
    assert np.array_equal(bases[0], bases[1]) and np.array_equal(bases[1], bases[2])
    assert not np.array_equal(bases[2], bases[3])  # recomputed at the fourth step
    params, grads = {"w": np.ones((4, 3), np.float32)}, {"w": G}
    assert_jit_agrees(soap(0.1), params, grads)
    assert_jit_agrees(shampoo(0.1), params, grads)


def test_bad_input_raises():
    with pytest.raises(ValueError, match=r"precondition matrices; got a leaf of shape \(3,\)"):
        shampoo(0.1).init({"b": np.zeros(3, np.float32)})
    opt = shampoo(0.1)
    state = opt.init({"w": np.zeros((4, 3), np.float32)})
    with pytest.raises(ValueError, match=r"grads\['w'\] must have the shape"):
        opt.update({"w": np.ones((4, 2), np.float32)}, state)
    with pytest.raises(TypeError, match=r"grads\['w'\] must be a floating-point"):
        opt.update({"w": np.ones((4, 3), np.int32)}, state)
    with pytest.raises(ValueError, match=r"X must be square"):
        inverse_root(np.ones((3, 2), np.float32), 4)
    with pytest.raises(ValueError, match=r"stat_decay must be in"):
        soap(0.1, stat_decay=1.0)
