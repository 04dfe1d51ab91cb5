import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal, norm
from sklearn.datasets import make_moons

from cookbook.generative.realnvp import fit, forward, init, inverse, log_prob, sample


def random_params(seed, dim, num_layers, hidden):
    """Every weight random (init zeroes the output layers, which would make the flow the identity),
    drawn by NumPy in init's shapes: drawing them with jax.random would compile a program per shape."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda k: init(k, dim=dim, num_layers=num_layers, hidden=hidden), jax.random.key(0))
    return {name: (0.7 * rng.standard_normal(s.shape)).astype(np.float32) for name, s in shapes.items()}


# One compiled function each, shared by the tests of this module.
batched_forward = jax.jit(jax.vmap(forward, in_axes=(None, 0)))
batched_inverse = jax.jit(jax.vmap(inverse, in_axes=(None, 0)))
batched_log_prob = jax.jit(jax.vmap(log_prob, in_axes=(None, 0)))
jacobian = jax.jit(jax.jacfwd(lambda params, x: forward(params, x)[0], argnums=1))


@pytest.fixture(scope="module")
def flow5():
    X = 1.5 * np.random.default_rng(1).standard_normal((11, 5))
    return random_params(0, 5, 3, 7), X.astype(np.float32)  # NumPy: no eager program per operation


def test_inverse_undoes_forward_to_float32_precision(flow5):
    params, X = flow5
    Z, _ = batched_forward(params, X)
    assert float(np.max(np.abs(np.asarray(Z) - X))) > 0.1  # the flow is not the identity
    back = batched_inverse(params, Z)
    np.testing.assert_allclose(back, X, rtol=1e-5, atol=1e-5)
    again, _ = batched_forward(params, back)
    np.testing.assert_allclose(again, Z, rtol=1e-5, atol=1e-5)


def test_log_det_equals_slogdet_of_the_jacobian(flow5):
    params, X = flow5
    _, log_dets = batched_forward(params, X)
    for x, log_det in zip(X[:3], np.asarray(log_dets)[:3]):
        J = np.asarray(jacobian(params, x), np.float64)  # (D, D)
        sign, logabsdet = np.linalg.slogdet(J)
        assert sign > 0
        np.testing.assert_allclose(log_det, logabsdet, rtol=1e-4, atol=1e-4)


def test_one_layer_jacobian_is_triangular_with_unit_diagonal_on_kept_coordinates(flow5):
    params, X = flow5
    # Layers 1 and 2 made the identity (zero output weights), so the flow is layer 0 alone.
    params = {k: np.concatenate([v[:1], np.zeros_like(v[1:])]) if k in ("W_s", "b_s", "W_t", "b_t") else v
              for k, v in jax.tree.map(np.asarray, params).items()}  # in NumPy: no eager compiles
    J = np.asarray(jacobian(params, X[0]))  # indexed in NumPy below
    kept, changed = np.arange(0, 5, 2), np.arange(1, 5, 2)  # layer 0 keeps the even coordinates
    np.testing.assert_allclose(J[np.ix_(kept, np.arange(5))], np.eye(5)[kept], atol=1e-7)
    np.testing.assert_allclose(J[np.ix_(changed, changed)], np.diag(np.diag(J)[changed]), atol=1e-7)


def test_matches_distrax_masked_coupling_chain(flow5):
    params, X = flow5
    L, D, _ = params["W1"].shape
    layers = []
    for k in range(L):
        keep = (np.arange(D) + k) % 2 == 0

        def conditioner(x_kept, k=k):
            h = jnp.tanh(x_kept @ params["W1"][k] + params["b1"][k])
            return jnp.tanh(h @ params["W_s"][k] + params["b_s"][k]), h @ params["W_t"][k] + params["b_t"][k]

        layers.append(distrax.MaskedCoupling(
            mask=jnp.asarray(keep), conditioner=conditioner,
            bijector=lambda p: distrax.ScalarAffine(shift=p[1], log_scale=p[0]), event_ndims=1))
    chain = distrax.Chain(layers[::-1])  # a Chain applies its last bijector first
    with jax.numpy_rank_promotion("allow"):
        z_ref, log_det_ref = jax.jit(jax.vmap(chain.forward_and_log_det))(X)  # one compile, not one per operation
    z, log_det = batched_forward(params, X)
    np.testing.assert_allclose(z, z_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_det, log_det_ref, rtol=1e-5, atol=1e-5)


def test_density_integrates_to_one_in_one_and_two_dimensions():
    params1 = random_params(2, 1, 3, 5)
    grid = np.linspace(-12.0, 12.0, 4001, dtype=np.float32)[:, None]  # grids and sums in NumPy
    p1 = np.exp(np.asarray(batched_log_prob(params1, grid), np.float64))
    np.testing.assert_allclose(np.sum(np.asarray(p1, np.float64)) * 24.0 / 4000, 1.0, atol=1e-3)
    params2 = random_params(3, 2, 3, 5)
    g = np.linspace(-10.0, 10.0, 301, dtype=np.float32)
    pts = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1).reshape(-1, 2)
    p2 = np.exp(np.asarray(batched_log_prob(params2, pts), np.float64)).reshape(301, 301)
    np.testing.assert_allclose(np.sum(np.asarray(p2, np.float64)) * (20.0 / 300) ** 2, 1.0, atol=5e-3)


def test_untrained_flow_is_the_identity_and_its_density_is_the_base_gaussian():
    params = init(jax.random.key(4), dim=5, num_layers=3, hidden=7)
    X = np.random.default_rng(5).standard_normal((11, 5)).astype(np.float32)
    Z, log_det = batched_forward(params, X)
    np.testing.assert_array_equal(Z, X)
    np.testing.assert_array_equal(log_det, np.zeros(11))
    expected = norm.logpdf(np.asarray(X, np.float64)).sum(-1)  # the standard Gaussian, in float64
    np.testing.assert_allclose(batched_log_prob(params, X), expected, rtol=1e-6)


def moons(n, seed):
    X, _ = make_moons(n, noise=0.05, random_state=seed)
    return X


@pytest.fixture(scope="module")
def two_moons():
    X = moons(1024, 0)
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    return X[:512], X[512:]


def test_it_learns_two_moons_better_than_a_gaussian(two_moons):
    train, test = two_moons
    params, values = fit(init(jax.random.key(0), dim=2, num_layers=4, hidden=16), train, steps=200, learning_rate=1e-2)
    cov = np.cov(np.asarray(train, np.float64).T, bias=True)
    gaussian_nll = -multivariate_normal(np.asarray(train, np.float64).mean(0), cov).logpdf(np.asarray(test)).mean()
    flow_nll = -float(np.mean(np.asarray(batched_log_prob(params, test), np.float64)))
    assert 2.6 < gaussian_nll < 2.8  # about 2.70
    assert flow_nll < gaussian_nll - 1.0  # about 1.36
    assert float(values[-1]) < float(values[0]) - 1.0
    # Samples fall on the moons: most lie within 0.5 (standardised units) of a training point.
    samples = np.asarray(sample(params, jax.random.key(5), 200))
    nearest = np.min(np.linalg.norm(samples[:, None, :] - np.asarray(train)[None, :, :], axis=-1), axis=1)
    assert np.mean(nearest < 0.5) > 0.9


def test_bad_input_gets_a_clear_error():
    params = init(jax.random.key(0), dim=3, num_layers=4, hidden=8)  # the page example's sizes
    with pytest.raises(ValueError, match="x"):
        forward(params, np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="z"):
        inverse(params, np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="x"):
        forward(params, np.zeros((2, 3), np.float32))  # one example at a time; batch with jax.vmap
    with pytest.raises(TypeError, match="num_layers"):
        init(jax.random.key(0), dim=3, num_layers=2.0, hidden=5)
    with pytest.raises(TypeError):
        init(jax.random.key(0), 3, 2, 5)  # the sizes are keyword-only
    with pytest.raises(ValueError, match="params"):
        forward({**params, "b_s": np.zeros((2, 4), np.float32)}, np.zeros(3, np.float32))
