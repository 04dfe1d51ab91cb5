import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.interpolate import BSpline

from cookbook.niche.kan import apply, bspline_basis, init, refine, uniform_knots

basis_jit = jax.jit(bspline_basis, static_argnums=2)
ORDER = 3
# Non-uniform knots with a double interior knot and clamped ends (4 repeats), and a uniform grid.
CLAMPED = np.array([-1.0, -1.0, -1.0, -1.0, -0.4, 0.1, 0.1, 0.35, 0.8, 1.0, 1.0, 1.0, 1.0])


def inside_points(t, k, m=11):
    lo, hi = t[k], t[len(t) - k - 1]
    return np.concatenate([[lo, hi], np.random.default_rng(k).uniform(lo, hi, m - 2)])


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_basis_matches_scipy_design_matrix_inside_the_base_interval(order):
    x = inside_points(CLAMPED, order)
    want = BSpline.design_matrix(x, CLAMPED, order).toarray()
    got = basis_jit(np.float32(x), np.float32(CLAMPED), order)
    assert got.shape == (11, len(CLAMPED) - order - 1)
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_basis_matches_scipy_in_float64_and_outside_the_base_interval():
    t = np.sort(np.random.default_rng(0).uniform(-2, 2, 11))
    x = np.concatenate([inside_points(t, ORDER, 7), [t[0] - 0.3, t[-1] + 0.2]])  # two outside
    with jax.enable_x64(True):
        got = np.asarray(bspline_basis(jnp.asarray(x), jnp.asarray(t), ORDER))
    want = BSpline.design_matrix(x, t, ORDER, extrapolate=True).toarray()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_basis_is_a_local_partition_of_unity():
    knots = uniform_knots(7, ORDER)
    x = np.linspace(-1.0, 1.0, 101, dtype=np.float32)
    B = np.asarray(basis_jit(x, knots, ORDER))  # checked in NumPy: no eager compiles
    np.testing.assert_allclose(B.sum(axis=1), 1.0, atol=1e-6)
    assert B.min() >= -1e-7
    assert (B > 1e-7).sum(axis=1).max() <= ORDER + 1  # each point sees at most k + 1 functions


def test_layer_is_a_sum_of_edge_functions():
    # The page's network (2, 3, 1), so that init and apply reuse the example's programs: each layer,
    # written out in float64 edge by edge, feeds the next.
    params = init(jax.random.key(3), (2, 3, 1), grid_size=5, order=ORDER)
    knots = uniform_knots(5, ORDER)
    x = np.array([0.2, -0.7], np.float32)
    h = np.float64(x)
    for layer in params:
        B = BSpline.design_matrix(h, np.float64(knots), ORDER, extrapolate=True).toarray()  # (P, 8)
        c, w = np.float64(layer["coef"]), np.float64(layer["w_base"])
        silu = h / (1 + np.exp(-h))
        P, Q = w.shape
        h = np.array([sum(w[p, q] * silu[p] + B[p] @ c[p, q] for p in range(P)) for q in range(Q)])
    np.testing.assert_allclose(apply(params, x, knots, ORDER), h, rtol=1e-5, atol=1e-6)


# ---- It learns, with grid refinement -----------------------------------------------------------

def target(X):
    return jnp.exp(jnp.sin(jnp.pi * X[:, 0]) + X[:, 1] ** 2)


@pytest.fixture(scope="module")
def fitted():
    """A [2, 1, 1] KAN fitted to exp(sin(pi x) + y^2): 300 Adam steps on a grid of 5, refined to 10, 300 more."""
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.uniform(-1, 1, (256, 2)), jnp.float32)
    X_test = jnp.asarray(rng.uniform(-1, 1, (256, 2)), jnp.float32)
    opt = optax.adam(1e-2)

    def predict(p, knots, X):
        return jax.vmap(lambda x: apply(p, x, knots, ORDER)[0])(X)

    @jax.jit
    def train(p, knots):
        def step(carry, _):
            p, s = carry
            loss, g = jax.value_and_grad(lambda p: jnp.mean((predict(p, knots, X) - target(X)) ** 2))(p)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss
        before = predict(p, knots, X_test)
        (p, _), losses = jax.lax.scan(step, (p, opt.init(p)), None, length=300)
        return p, losses, before, predict(p, knots, X_test)

    coarse, fine = uniform_knots(5, ORDER), uniform_knots(10, ORDER)
    p = init(jax.random.key(0), (2, 1, 1), grid_size=5, order=ORDER)
    p, losses, _, after_coarse = train(p, coarse)
    p = refine(p, coarse, fine, ORDER)
    _, _, before_fine, after_fine = train(p, fine)
    X_test, before_fine, after_coarse, after_fine = map(np.asarray, (X_test, before_fine, after_coarse, after_fine))
    truth = np.exp(np.sin(np.pi * X_test[:, 0]) + X_test[:, 1] ** 2)  # target in NumPy: no eager compiles
    rmse = lambda pred: float(np.sqrt(np.mean((pred - truth) ** 2)))  # noqa: E731
    return (float(losses[0]) ** 0.5, rmse(after_coarse), float(np.abs(before_fine - after_coarse).max()),
            rmse(after_fine))


def test_kan_fits_the_papers_function_below_1e_2_after_grid_refinement(fitted):
    start, coarse, refine_change, fine = fitted
    assert start > 1.0  # the untrained network is far off
    assert coarse < 0.2
    assert fine < 1e-2, fine  # held-out root-mean-square error


def test_refine_keeps_the_function_on_a_grid_twice_as_fine(fitted):
    assert fitted[2] < 1e-3  # largest change of the output (up to e^2 = 7.4) on 256 held-out points: float32 rounding


# ---- Bad input ---------------------------------------------------------------------------------------

def test_bad_input_gets_a_clear_error():
    knots = uniform_knots(5, ORDER)
    x = jnp.array([0.1, 0.2])
    with pytest.raises(ValueError, match="knots"):
        bspline_basis(x, knots[::-1], ORDER)
    with pytest.raises(ValueError, match="knots"):
        bspline_basis(x, knots[:4], ORDER)
    with pytest.raises(TypeError, match="order"):
        bspline_basis(x, knots, 3.0)
    with pytest.raises(ValueError, match="order"):
        bspline_basis(x, knots, -1)
    with pytest.raises(TypeError, match="x"):
        bspline_basis(jnp.array([1, 2]), knots, ORDER)
    with pytest.raises(ValueError, match="x"):
        bspline_basis(x[None], knots, ORDER)
    params = init(jax.random.key(4), (2, 3, 1), grid_size=5, order=ORDER)
    with pytest.raises(ValueError, match="coef"):
        apply(params, x, uniform_knots(6, ORDER), ORDER)
    with pytest.raises(ValueError, match="x"):
        apply(params, jnp.ones(3), knots, ORDER)
