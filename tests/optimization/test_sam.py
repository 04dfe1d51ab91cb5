import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cookbook.optimization.sam import moons_sharpness_run, sam_gradient, sam_perturbation, sharpness
from optimization_helpers import least_squares_problem


def test_perturbation_and_gradient_on_a_quadratic_match_the_closed_form():
    # L = ½ wᵀ H w: ∇L = H w, ε̂ = ρ H w / ‖H w‖, g_SAM = H (w + ε̂), in float64.
    rng = np.random.default_rng(0)
    M = rng.normal(size=(5, 5))
    H = M @ M.T + np.eye(5)
    w = rng.normal(size=5)
    H32 = H.astype(np.float32)
    loss = lambda p: 0.5 * p["w"] @ H32 @ p["w"]
    grad = jax.jit(jax.grad(loss))  # one program, called three times (a Python function of params all the same)
    params = {"w": w.astype(np.float32)}
    eps = H @ w * 0.3 / np.linalg.norm(H @ w)
    np.testing.assert_allclose(np.asarray(sam_perturbation(grad(params), 0.3)["w"]), eps, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(sam_gradient(grad, params, 0.3)["w"]), H @ (w + eps), rtol=1e-5)


def test_the_norm_runs_over_all_leaves_together_and_a_zero_gradient_is_not_perturbed():
    eps = sam_perturbation({"a": np.array([3.0], np.float32), "b": np.array([[4.0]], np.float32)}, 1.0)
    np.testing.assert_allclose([np.asarray(eps["a"])[0], np.asarray(eps["b"])[0, 0]], [0.6, 0.8], rtol=1e-6)
    zero = sam_perturbation({"a": np.zeros(3, np.float32)}, 0.5)
    assert np.all(np.asarray(zero["a"]) == 0)
    loss, params = least_squares_problem()
    grad = jax.jit(jax.grad(loss))  # the same program for the plain gradient and inside sam_gradient
    plain, with_zero_radius = grad(params), sam_gradient(grad, params, 0.0)
    gaps = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(with_zero_radius))]
    assert max(gaps) == 0.0


def test_matches_optax_contrib_sam_step_for_step():
    loss, params0 = least_squares_problem()
    grad_fn = jax.grad(loss)
    ref = optax.contrib.sam(
        optax.sgd(0.05), optax.chain(optax.contrib.normalize(), optax.sgd(0.1)), sync_period=2, opaque_mode=True
    )

    def both(carry, _):
        ours, theirs, state = carry
        ours = jax.tree.map(lambda p, g: p - 0.05 * g, ours, sam_gradient(grad_fn, ours, 0.1))
        updates, state = ref.update(grad_fn(theirs), state, theirs, grad_fn=lambda p, _: grad_fn(p))
        theirs = optax.apply_updates(theirs, updates)
        gap = jnp.max(jnp.stack([jnp.max(jnp.abs(a - b)) for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs))]))
        return (ours, theirs, state), gap

    with jax.numpy_rank_promotion("allow"):
        _, gaps = jax.jit(lambda: jax.lax.scan(both, (params0, params0, ref.init(params0)), length=100))()
    assert float(np.max(np.asarray(gaps))) < 1e-5


def test_sharpness_is_the_top_hessian_eigenvalue():
    loss, params = least_squares_problem()
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    exact = np.linalg.eigvalsh(np.asarray(jax.jit(jax.hessian(lambda f: loss(unravel(f))))(flat), np.float64))[-1]
    np.testing.assert_allclose(float(jax.jit(lambda p: sharpness(loss, p, iterations=200))(params)), exact, rtol=1e-3)


def test_gradient_descent_sits_at_the_edge_of_stability_and_sam_finds_a_flatter_minimum():
    # The page's figure: learning rate 0.5, so 2/η = 4; the sharpness is measured every 50 steps.
    losses, sharp = moons_sharpness_run()
    losses, sharp = jax.tree.map(np.asarray, losses), jax.tree.map(np.asarray, sharp)  # read in NumPy
    gd, sam = "gradient descent", "SAM, rho = 0.1"
    late_gd = float(np.mean(sharp[gd][-4:]))
    assert 0.8 * 4.0 < late_gd < 1.2 * 4.0, late_gd
    assert float(sharp[sam][-1]) < 0.5 * float(sharp[gd][-1]), (sharp[sam][-1], sharp[gd][-1])
    assert abs(float(losses[sam][-1]) / float(losses[gd][-1]) - 1) < 0.1


def test_bad_input_raises():
    with pytest.raises(ValueError, match=r"rho must be in \[0.0, inf\), got -0.1"):
        sam_perturbation({"w": np.ones(2, np.float32)}, -0.1)
    with pytest.raises(TypeError, match=r"grads must be a floating-point array"):
        sam_perturbation({"w": np.ones(2, np.int32)}, 0.1)
    with pytest.raises(TypeError, match=r"grad_fn must be a function of params, got dict"):
        sam_gradient({"w": np.ones(2, np.float32)}, {"w": np.ones(2, np.float32)})
    with pytest.raises(ValueError, match=r"grad_fn\(params\)\['w'\] must have the shape"):
        sam_gradient(lambda p: {"w": np.ones(3, np.float32)}, {"w": np.ones(2, np.float32)})
    with pytest.raises(ValueError, match=r"iterations must be a positive int, got 0"):
        sharpness(lambda p: jnp.sum(p**2), np.ones(2, np.float32), iterations=0)
