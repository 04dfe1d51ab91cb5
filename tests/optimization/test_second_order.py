import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from cookbook.optimization.second_order import conjugate_gradient, hvp, newton_cg_step, newton_step
from cookbook.optimization.sgd import rosenbrock


def _smooth_loss(x):
    # A non-quadratic, non-separable function of 7 variables.
    A = jnp.arange(49.0).reshape(7, 7) / 49.0 - 0.5
    return jnp.sum(jnp.tanh(A @ x) ** 2) + 0.1 * jnp.sum(x**4) + jnp.sum(jnp.sin(x) * x[::-1])


def _rosenbrock_vector(z):
    return rosenbrock({"x": z[0], "y": z[1]})


def test_hvp_matches_the_explicit_hessian_times_v():
    k_x, k_v = jax.random.split(jax.random.key(0))
    x, v = jax.random.normal(k_x, (7,)), jax.random.normal(k_v, (7,))
    got, expected = jax.jit(lambda x, v: (hvp(_smooth_loss, x, v), jax.hessian(_smooth_loss)(x) @ v))(x, v)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_hvp_on_a_pytree_matches_the_flattened_hessian():
    def loss(p):
        return jnp.sum((p["w"] @ p["b"]) ** 2) + jnp.sum(p["b"] ** 3)

    k_w, k_b, k_v = jax.random.split(jax.random.key(1), 3)
    params = {"w": jax.random.normal(k_w, (5, 3)), "b": jax.random.normal(k_b, (3,))}
    flat, unravel = ravel_pytree(params)
    v_flat = jax.random.normal(k_v, flat.shape)
    expected = jax.jit(lambda z, v: jax.hessian(lambda z: loss(unravel(z)))(z) @ v)(flat, v_flat)
    got, _ = ravel_pytree(jax.jit(lambda p, v: hvp(loss, p, v))(params, unravel(v_flat)))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def _spd(n, seed, ridge=0.05):
    M = jax.random.normal(jax.random.key(seed), (n, n))
    return M @ M.T / n + ridge * jnp.eye(n)  # symmetric positive definite, condition number ~ 10^2


@pytest.mark.parametrize("n, seed", [(5, 0), (11, 1)])
def test_conjugate_gradient_matches_solve(n, seed):
    A = _spd(n, seed)
    b = jax.random.normal(jax.random.key(100 + seed), (n,))

    @jax.jit
    def both(A, b):
        return conjugate_gradient(lambda v: A @ v, b, max_steps=3 * n, tol=1e-7), jnp.linalg.solve(A, b)

    x, expected = both(A, b)
    np.testing.assert_allclose(x, expected, rtol=1e-3, atol=1e-3)


def test_conjugate_gradient_finishes_in_as_many_steps_as_distinct_eigenvalues():
    # Three distinct eigenvalues: CG is exact after 3 iterations even though n = 11.
    eigenvalues = jnp.array([1.0] * 4 + [4.0] * 4 + [9.0] * 3)
    b = jnp.linspace(-1.0, 1.0, 11)
    x = conjugate_gradient(lambda v: eigenvalues * v, b, max_steps=3, tol=0.0)
    np.testing.assert_allclose(x, b / eigenvalues, rtol=1e-4, atol=1e-5)
    x2 = conjugate_gradient(lambda v: eigenvalues * v, b, max_steps=2, tol=0.0)
    assert float(jnp.abs(x2 - b / eigenvalues).max()) > 1e-2  # two iterations are not enough


def test_newton_solves_a_quadratic_in_one_step():
    A, b = _spd(11, 2, ridge=1e-2), jnp.arange(11.0)
    f = lambda x: 0.5 * x @ A @ x - b @ x
    x_star = jnp.linalg.solve(A, b)
    x0 = jnp.full(11, 3.0)
    x_newton, x_cg = jax.jit(lambda x: (newton_step(f, x), newton_cg_step(f, x, max_steps=50, tol=1e-7)))(x0)
    np.testing.assert_allclose(x_newton, x_star, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(x_cg, x_star, rtol=1e-3, atol=1e-3)
    assert float(jnp.linalg.norm(A @ x_newton - b)) < 1e-3 * float(jnp.linalg.norm(A @ x0 - b))


def test_newton_converges_on_rosenbrock_in_a_few_steps():
    step = jax.jit(lambda z: newton_step(_rosenbrock_vector, z))
    z = jnp.array([-1.2, 1.0])
    for _ in range(7):
        z = step(z)
    np.testing.assert_allclose(z, [1.0, 1.0], atol=1e-5)  # gradient descent needs thousands of steps


def test_newton_cg_equals_newton_on_a_positive_definite_region():
    z = jnp.array([0.9, 0.8])  # near the minimum the Rosenbrock Hessian is positive definite
    H, x_cg, x_newton = jax.jit(lambda z: (jax.hessian(_rosenbrock_vector)(z),
                                           newton_cg_step(_rosenbrock_vector, z, max_steps=2, tol=0.0),
                                           newton_step(_rosenbrock_vector, z)))(z)
    assert float(jnp.linalg.eigvalsh(H)[0]) > 0
    np.testing.assert_allclose(x_cg, x_newton, rtol=1e-4, atol=1e-5)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"x must be a vector of shape \(n,\), got shape \(2, 2\)"):
        newton_step(lambda x: jnp.sum(x**2), jnp.ones((2, 2)))
    with pytest.raises(ValueError, match=r"b must be a vector"):
        conjugate_gradient(lambda v: v, jnp.ones((3, 1)), max_steps=3)
    with pytest.raises(ValueError, match=r"v must have the structure of params"):
        hvp(lambda p: jnp.sum(p["a"] ** 2), {"a": jnp.ones(3)}, jnp.ones(3))
