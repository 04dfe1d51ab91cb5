import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.normalization.weight_norm import spectral_init, spectral_norm, weight_norm

def _normal(seed, shape):
    """Standard normal test data from numpy, as float32 NumPy arrays: cheaper than compiling a JAX
    sampler (or a jnp.asarray copy) for every shape. The tests check results in NumPy too."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)



def _matrix(seed, shape=(11, 7)):
    return _normal(seed, shape)


def _unit(seed, n):
    u = np.random.default_rng(seed).standard_normal(n)
    return (u / np.linalg.norm(u)).astype(np.float32)


# ----------------------------------------------------------------------------- weight normalisation

def test_columns_are_unit_directions_times_the_gain():
    v = _matrix(0)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(weight_norm(v, np.ones(7, np.float32))), axis=0), 1.0,
                               rtol=1e-6)
    g = np.array([0.5, 2.0, 3.0, -1.0, 7.0, 11.0, 1e-3], np.float32)
    W = np.asarray(weight_norm(v, g))
    np.testing.assert_allclose(np.linalg.norm(W, axis=0), np.abs(g), rtol=1e-6)
    np.testing.assert_allclose(W / g[None, :], v / np.linalg.norm(v, axis=0, keepdims=True), rtol=1e-5, atol=1e-6)


def test_invariant_to_positive_rescaling_of_v():
    v, g = _matrix(1), np.arange(1.0, 8.0, dtype=np.float32)
    np.testing.assert_allclose(weight_norm(1e3 * v, g), weight_norm(v, g), rtol=1e-5, atol=1e-6)


def test_gradient_with_respect_to_v_is_orthogonal_to_v():
    v, g = _matrix(2), np.linspace(0.5, 2.0, 7, dtype=np.float32)
    x = _normal(3, (5, 11))

    def loss_W(W):
        return jnp.sum(jnp.tanh(x @ W) ** 2)

    grad_v = np.asarray(jax.jit(jax.grad(lambda v: loss_W(weight_norm(v, g))))(v))
    norms = np.linalg.norm(v, axis=0)
    cosine = np.sum(grad_v * v, axis=0) / (np.linalg.norm(grad_v, axis=0) * norms)
    np.testing.assert_allclose(cosine, 0.0, atol=1e-5)
    # ... and it is the paper's formula: (g / ||v||) (I - w w^T / ||w||^2) grad_W, column by column.
    grad_W = np.asarray(jax.jit(jax.grad(loss_W))(weight_norm(v, g)))
    unit = v / norms[None, :]
    expected = (g / norms)[None, :] * (grad_W - unit * np.sum(unit * grad_W, axis=0, keepdims=True))
    np.testing.assert_allclose(grad_v, expected, rtol=1e-4, atol=1e-5)


def test_matches_flax_weightnorm_dense():
    x = _normal(3, (3, 11))
    layer = nn.WeightNorm(nn.Dense(7))
    variables = {"params": {"layer_instance": {"kernel": _matrix(4), "bias": _normal(5, (7,))},
                            "layer_instance/kernel/scale": np.linspace(0.5, 3.0, 7, dtype=np.float32)}}
    with jax.numpy_rank_promotion("allow"):
        y_ref = jax.jit(layer.apply)(variables, x)  # one program, not flax's operations one by one
    p = variables["params"]
    W = np.asarray(weight_norm(p["layer_instance"]["kernel"], p["layer_instance/kernel/scale"]))
    np.testing.assert_allclose(x @ W + p["layer_instance"]["bias"][None, :], y_ref, rtol=1e-5, atol=1e-5)


def test_convolution_kernel_is_normalised_per_output_channel():
    v = _normal(4, (3, 3, 5, 7))
    W = np.asarray(weight_norm(v, np.ones(7, np.float32)))
    np.testing.assert_allclose(np.sqrt(np.sum(W ** 2, axis=(0, 1, 2))), 1.0, rtol=1e-6)


def test_zero_direction_and_bfloat16_stay_finite_and_accurate():
    assert np.all(np.isfinite(weight_norm(np.zeros((3, 5), np.float32), np.ones(5, np.float32))))
    v = _matrix(5).astype(jnp.bfloat16)
    W = weight_norm(v, np.ones(7, np.float32))
    assert W.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(W), weight_norm(v.astype(np.float32), np.ones(7, np.float32)), atol=4e-3)


# --------------------------------------------------------------------------- spectral normalisation

singular_values = jax.jit(lambda M: jnp.linalg.svd(M)[1])  # JAX's SVD as a second reference, one program


@pytest.mark.parametrize("shape", [(11, 7), (5, 13), (3, 3, 4, 5)])
def test_power_iteration_converges_to_the_largest_singular_value(shape):
    W = _normal(6, shape)
    W_bar, u, sigma = spectral_norm(W, _unit(7, shape[-1]), n_steps=200)  # one compiled core
    M = np.asarray(W, np.float64).reshape(-1, shape[-1])
    np.testing.assert_allclose(sigma, np.linalg.norm(M, 2), rtol=1e-4)
    np.testing.assert_allclose(sigma, np.asarray(singular_values(M))[0], rtol=1e-4)
    assert W_bar.shape == W.shape
    np.testing.assert_allclose(np.linalg.norm(np.asarray(W_bar, np.float64).reshape(M.shape), 2), 1.0, rtol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(u)), 1.0, rtol=1e-5)


def test_carrying_u_between_calls_converges_one_step_at_a_time():
    W = _matrix(7)

    def call(u, _):
        _, u, sigma = spectral_norm(W, u)
        return u, sigma

    _, sigmas = jax.lax.scan(call, _unit(8, 7), length=100)
    sigmas = np.asarray(sigmas)
    exact = np.linalg.norm(np.asarray(W), 2)
    assert np.all(np.diff(sigmas) > -1e-4)  # the estimate rises towards sigma_max
    assert sigmas[0] < 0.99 * exact
    np.testing.assert_allclose(sigmas[-1], exact, rtol=1e-4)


@pytest.mark.parametrize("n_steps", [1, 3])
def test_matches_flax_spectralnorm_dense(n_steps):
    x = _normal(8, (3, 11))
    layer = nn.SpectralNorm(nn.Dense(7), n_steps=n_steps)
    variables = {"params": {"layer_instance": {"kernel": _matrix(9), "bias": _normal(10, (7,))}},
                 "batch_stats": {"layer_instance/kernel/u": _normal(11, (1, 7)),
                                 "layer_instance/kernel/sigma": np.ones((), np.float32)}}
    with jax.numpy_rank_promotion("allow"):
        apply = jax.jit(lambda v, x: layer.apply(v, x, update_stats=True, mutable=["batch_stats"]))
        y_ref, updates = apply(variables, x)
    p, stats = variables["params"]["layer_instance"], variables["batch_stats"]
    W_bar, u, sigma = spectral_norm(p["kernel"], stats["layer_instance/kernel/u"][0], n_steps=n_steps)
    np.testing.assert_allclose(x @ np.asarray(W_bar) + p["bias"][None, :], y_ref, rtol=1e-5, atol=1e-5)
    new = updates["batch_stats"]
    np.testing.assert_allclose(u, np.asarray(new["layer_instance/kernel/u"])[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sigma, new["layer_instance/kernel/sigma"], rtol=1e-5)


def test_gradient_of_sigma_is_the_outer_product_of_the_singular_vectors():
    W = _matrix(12)
    u0 = _unit(13, 7)
    grad = jax.jit(jax.grad(lambda W: spectral_norm(W, u0, n_steps=200)[2]))(W)
    U, _, Vt = np.linalg.svd(np.asarray(W, np.float64))
    np.testing.assert_allclose(grad, np.outer(U[:, 0], Vt[0]), atol=1e-4)


def test_init_uses_its_key_and_zero_weights_stay_finite():
    W = np.zeros((5, 3), np.float32)
    u1, u2 = spectral_init(jax.random.key(0), W), spectral_init(jax.random.key(1), W)
    assert u1.shape == (3,) and not np.allclose(u1, u2)
    np.testing.assert_array_equal(spectral_init(jax.random.key(0), W), u1)
    W_bar, u, sigma = spectral_norm(W, u1)
    assert np.all(np.isfinite(W_bar)) and np.all(np.isfinite(u)) and float(sigma) == 0.0


@pytest.mark.parametrize(
    "fn, match",
    [
        (lambda: weight_norm(np.ones((4, 3), np.float32), np.ones(4, np.float32)),
         r"g must have shape \(3,\), .* got shape \(4,\)"),
        (lambda: weight_norm(np.ones(4, np.float32), np.ones(4, np.float32)),
         r"v must have at least 2 axes \(\.\.\., D_in, D_out\), got shape \(4,\)"),
        (lambda: spectral_norm(np.ones((4, 3), np.float32), np.ones(4, np.float32)),
         r"u must have shape \(3,\), .* got shape \(4,\)"),
        (lambda: spectral_norm(np.ones((4, 3), np.float32), np.ones(3, np.float32), n_steps=0),
         r"n_steps must be a positive int, got 0"),
        (lambda: spectral_init(jax.random.key(0), np.ones(3, np.float32)),
         r"W must have at least 2 axes \(\.\.\., D_in, D_out\)"),
    ],
)
def test_bad_shapes_raise_clear_errors(fn, match):
    with pytest.raises(ValueError, match=match):
        fn()


def test_integer_arrays_raise_and_lists_are_accepted():
    with pytest.raises(TypeError, match=r"v must be a floating-point array"):
        weight_norm(np.ones((3, 4), np.int32), np.ones(4, np.float32))
    with pytest.raises(TypeError, match=r"W must be a floating-point array"):
        spectral_norm(np.ones((3, 4), np.int32), np.ones(4, np.float32))
    with pytest.raises(TypeError, match=r"u must be a floating-point array"):
        spectral_norm(np.ones((3, 4), np.float32), np.ones(4, np.int32))
    np.testing.assert_allclose(weight_norm([[3.0], [4.0]], [10.0]), np.array([[6.0], [8.0]]), rtol=1e-6)


def test_the_numbers_on_the_page():
    import inspect

    assert inspect.signature(weight_norm).parameters["eps"].default == 1e-12  # 1-Lipschitz: tested above
