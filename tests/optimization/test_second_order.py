import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from jax.tree_util import Partial

from cookbook.optimization.second_order import conjugate_gradient, hvp, newton_cg_step, newton_step
from cookbook.optimization.sgd import rosenbrock


def _smooth_loss(x):
    # A non-quadratic, non-separable function of 7 variables.
    A = jnp.arange(49.0).reshape(7, 7) / 49.0 - 0.5
    return jnp.sum(jnp.tanh(A @ x) ** 2) + 0.1 * jnp.sum(x**4) + jnp.sum(jnp.sin(x) * x[::-1])


def _normal(seed, *shape):
    """Test inputs from NumPy: jax.random.normal would compile a sampler for each new shape."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _rosenbrock_vector(z):
    return rosenbrock({"x": z[0], "y": z[1]})


def test_hvp_matches_the_explicit_hessian_times_v():
    x, v = _normal(0, 2, 7)
    got, expected = jax.jit(lambda x, v: (hvp(_smooth_loss, x, v), jax.hessian(_smooth_loss)(x) @ v))(x, v)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_hvp_on_a_pytree_matches_the_flattened_hessian():
    def loss(p):
        return jnp.sum((p["w"] @ p["b"]) ** 2) + jnp.sum(p["b"] ** 3)

    params = {"w": _normal(1, 5, 3), "b": _normal(2, 3)}
    flat, unravel = ravel_pytree(params)
    v_flat = _normal(3, *flat.shape)
    expected = jax.jit(lambda z, v: jax.hessian(lambda z: loss(unravel(z)))(z) @ v)(flat, v_flat)
    got, _ = ravel_pytree(jax.jit(lambda p, v: hvp(loss, p, v))(params, unravel(v_flat)))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def _spd(n, seed, ridge=0.05):
    M = np.float64(_normal(seed, n, n))  # built in NumPy, then placed on the device as float32
    return jnp.asarray(np.float32(M @ M.T / n + ridge * np.eye(n)))  # symmetric positive definite, condition number ~ 10^2


@pytest.mark.parametrize("n, seed", [(5, 0), (11, 1)])
def test_conjugate_gradient_matches_solve(n, seed):
    A = _spd(n, seed)
    b = _normal(100 + seed, n)

    @jax.jit
    def both(A, b):
        return conjugate_gradient(lambda v: A @ v, b, max_steps=3 * n, tol=1e-7), jnp.linalg.solve(A, b)

    x, expected = both(A, b)
    np.testing.assert_allclose(x, expected, rtol=1e-3, atol=1e-3)


def test_conjugate_gradient_finishes_in_as_many_steps_as_distinct_eigenvalues():
    # Three distinct eigenvalues: CG is exact after 3 iterations even though n = 11.
    eigenvalues = jnp.array([1.0] * 4 + [4.0] * 4 + [9.0] * 3)
    b = np.linspace(-1.0, 1.0, 11, dtype=np.float32)
    exact = b / np.asarray(eigenvalues)
    x = conjugate_gradient(lambda v: eigenvalues * v, b, max_steps=3, tol=0.0)
    np.testing.assert_allclose(x, exact, rtol=1e-4, atol=1e-5)
    x2 = conjugate_gradient(lambda v: eigenvalues * v, b, max_steps=2, tol=0.0)
    assert float(np.abs(np.asarray(x2) - exact).max()) > 1e-2  # two iterations are not enough


def test_newton_solves_a_quadratic_in_one_step():
    A, b = _spd(11, 2, ridge=1e-2), jnp.asarray(np.arange(11.0, dtype=np.float32))
    f = lambda x: 0.5 * x @ A @ x - b @ x
    A_, b_ = np.asarray(A), np.asarray(b)  # the reference and the residuals in NumPy
    x_star = np.linalg.solve(A_, b_)
    x0 = np.full(11, 3.0, np.float32)
    x_newton, x_cg = jax.jit(lambda x: (newton_step(f, x), newton_cg_step(f, x, max_steps=50, tol=1e-7)))(x0)
    np.testing.assert_allclose(x_newton, x_star, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(x_cg, x_star, rtol=1e-3, atol=1e-3)
    assert float(np.linalg.norm(A_ @ np.asarray(x_newton) - b_)) < 1e-3 * float(np.linalg.norm(A_ @ x0 - b_))


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
    with pytest.raises(ValueError, match=r"x must have 1 axes \(n,\), got shape \(2, 2\)"):
        newton_step(lambda x: jnp.sum(x**2), jnp.ones((2, 2)))
    with pytest.raises(ValueError, match=r"b must have 1 axes"):
        conjugate_gradient(lambda v: v, jnp.ones((3, 1)), max_steps=3)
    with pytest.raises(ValueError, match=r"v must have the structure of params"):
        hvp(lambda p: jnp.sum(p["a"] ** 2), {"a": jnp.ones(3)}, jnp.ones(3))


def _saddle(x):
    # Curvature +2 along x0 and -2 along x1: indefinite everywhere.
    return x[0] ** 2 - x[1] ** 2 + 2 * x[1]


def test_cg_takes_the_steepest_descent_step_on_negative_curvature_at_once():
    # At (1, 0) the gradient is (2, 2) and its direction has curvature 2*4 - 2*4 = 0 <= 0: the old
    # code returned a zero step; truncated CG (Steihaug) returns -g, which lowers the loss.
    x = jnp.array([1.0, 0.0])
    np.testing.assert_allclose(jax.grad(_saddle)(x), [2.0, 2.0])
    step = newton_cg_step(_saddle, x, max_steps=5) - x
    np.testing.assert_allclose(step, [-2.0, -2.0])
    assert float(_saddle(x + step)) < float(_saddle(x))
    b = jnp.array([1.0, -1.0])
    np.testing.assert_allclose(conjugate_gradient(lambda v: jnp.array([-3.0, 1.0]) * v, b, max_steps=4), b)


def test_cg_keeps_its_iterate_when_negative_curvature_comes_later():
    # diag(1, -1) and b = (1, 0.1): the first direction b has positive curvature (1 - 0.01), the second not.
    A_, b = np.diag(np.float32([1.0, -1.0])), np.float32([1.0, 0.1])
    x = conjugate_gradient(Partial(jnp.matmul, jnp.asarray(A_)), b, max_steps=5)
    alpha = float(b @ b / (b @ A_ @ b))
    np.testing.assert_allclose(x, alpha * b, rtol=1e-5)


def test_a_reused_matvec_does_not_compile_again():
    # Fails on the old code, where matvec was a static argument hashed by identity: every new
    # Partial (or lambda) traced and compiled the solver again.
    traces = []

    def matmul(A, v):
        traces.append(1)
        return A @ v

    b = np.ones(5, np.float32)
    for seed in range(3):
        A = _spd(5, seed)
        x = conjugate_gradient(Partial(matmul, A), b, max_steps=10, tol=1e-7)
        np.testing.assert_allclose(x, np.linalg.solve(np.asarray(A), b), rtol=1e-3, atol=1e-3)
    # Each call traces matmul once for its shape check; only the first also compiles the solver.
    assert len(traces) == 2 + 1 + 1


def test_a_reused_loss_does_not_compile_again():
    traces = []

    def loss(x):
        traces.append(1)
        return jnp.sum(x**4) + jnp.sum(x**2)

    newton_step(loss, jnp.ones(3))
    first = len(traces)
    newton_step(loss, 2 * jnp.ones(3))  # not jnp.full(3, 2.0): a weakly typed array is another signature
    assert len(traces) == first  # same function, same shapes: no new trace


def test_bad_input_gets_a_clear_error():
    A = Partial(jnp.matmul, jnp.eye(3))
    with pytest.raises(ValueError, match=r"matvec cannot take b of shape \(2,\)"):
        conjugate_gradient(A, jnp.ones(2), max_steps=3)
    with pytest.raises(TypeError, match=r"b must be a floating-point array"):
        conjugate_gradient(A, jnp.arange(3), max_steps=3)
    with pytest.raises(TypeError, match=r"max_steps must be an int"):
        conjugate_gradient(A, jnp.ones(3), max_steps=2.5)
    with pytest.raises(ValueError, match=r"f cannot take x of shape \(2,\)"):
        newton_step(lambda x: x @ jnp.eye(3) @ x, jnp.ones(2))
    with pytest.raises(ValueError, match=r"f must map x to a scalar loss"):
        newton_cg_step(lambda x: x**2, jnp.ones(3), max_steps=3)
    with pytest.raises(TypeError, match=r"v\['a'\] must be a floating-point"):
        hvp(lambda p: jnp.sum(p["a"] ** 2), {"a": jnp.ones(3)}, {"a": jnp.arange(3)})
    # A NaN is not turned into a plausible answer.
    assert bool(jnp.isnan(conjugate_gradient(A, jnp.array([1.0, jnp.nan, 0.0]), max_steps=3)).any())


def test_the_hessian_of_a_hundred_million_parameters_takes_4e16_bytes():
    # Counted without allocating it: n^2 float32 entries for n = 10^8.
    H = jax.eval_shape(jax.hessian(lambda x: jnp.sum(x**4)), jax.ShapeDtypeStruct((10**8,), jnp.float32))
    assert H.shape == (10**8, 10**8) and H.size * H.dtype.itemsize == 4 * 10**16
