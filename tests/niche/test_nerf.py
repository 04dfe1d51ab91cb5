import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cookbook.niche.nerf import apply, fourier_features, init, render, rendering_weights

weights_jit = jax.jit(rendering_weights)  # for check_grads: traced, so its perturbed inputs are not checked
S = 11


def numpy_weights(sigmas, deltas):
    sigmas, deltas = np.float64(sigmas), np.float64(deltas)
    w, T = [], 1.0
    for s, d in zip(sigmas, deltas):  # the light that reaches each interval, then what it stops
        w.append(T * (1 - np.exp(-s * d)))
        T *= np.exp(-s * d)
    return np.array(w), T


def random_ray(seed):
    rng = np.random.default_rng(seed)
    return np.float32(rng.exponential(1.0, S)), np.float32(rng.uniform(0.05, 0.3, S))


def test_weights_match_a_float64_loop_and_sum_to_one_minus_final_transmittance():
    for seed in range(3):
        sigmas, deltas = random_ray(seed)
        want, T_final = numpy_weights(sigmas, deltas)
        w = np.asarray(rendering_weights(sigmas, deltas))  # one compiled core already: no jax.jit around it
        np.testing.assert_allclose(w, want, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(w.sum(), 1 - T_final, rtol=1e-5)


def test_weights_in_float64_match_to_1e_12():
    sigmas, deltas = random_ray(3)
    with jax.enable_x64(True):
        w = np.asarray(rendering_weights(np.float64(sigmas), np.float64(deltas)))
    np.testing.assert_allclose(w, numpy_weights(sigmas, deltas)[0], rtol=1e-12, atol=1e-15)


def test_edge_cases_empty_space_an_opaque_wall_and_thin_intervals():
    zeros, deltas = np.zeros(S, np.float32), np.full(S, 0.1, np.float32)
    np.testing.assert_array_equal(rendering_weights(zeros, deltas), 0.0)  # empty space stops nothing
    wall = zeros.copy()
    wall[4] = 1e6
    w = rendering_weights(wall, deltas)
    np.testing.assert_allclose(w, np.eye(S)[4], atol=1e-6)  # everything stops at the wall
    # sigma * delta = 1e-9: expm1 keeps it
    tiny = rendering_weights(np.full(S, 1e-4, np.float32), np.full(S, 1e-5, np.float32))
    np.testing.assert_allclose(tiny, 1e-9, rtol=1e-4)
    assert rendering_weights(np.ones(1, np.float32), np.ones(1, np.float32)).shape == (1,)  # one sample


def test_render_is_the_weighted_colour_and_a_depth_estimate():
    sigmas, deltas = random_ray(4)
    colors = np.float32(np.random.default_rng(5).uniform(0, 1, (S, 3)))
    want = numpy_weights(sigmas, deltas)[0] @ np.float64(colors)
    np.testing.assert_allclose(render(sigmas, colors, deltas), want, rtol=1e-5)
    # Rendering the sample positions instead of colours gives the expected depth of a wall.
    t = np.cumsum(deltas)[:, None]
    wall = np.zeros(S, np.float32)
    wall[6] = 1e5
    np.testing.assert_allclose(render(wall, t, deltas), t[6], rtol=1e-5)


def test_weights_gradient_matches_finite_differences():
    from jax.test_util import check_grads
    sigmas, deltas = random_ray(6)
    check_grads(weights_jit, (sigmas, deltas), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)


def test_fourier_features_are_cos_and_sin_of_the_projections():
    rng = np.random.default_rng(7)
    B, x = rng.standard_normal((5, 3)), rng.standard_normal(3)
    want = np.concatenate([np.cos(2 * np.pi * B @ x), np.sin(2 * np.pi * B @ x)])
    gamma = lambda x: np.asarray(fourier_features(np.float32(x), np.float32(B)))  # products in NumPy
    got = gamma(x)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got[:5] ** 2 + got[5:] ** 2, 1.0, atol=1e-5)  # each pair on the unit circle
    shifted = gamma(x) @ gamma(x + 0.1)
    # The kernel gamma(x) . gamma(x') depends on x - x' only (stationary).
    other = gamma(x + 1.0) @ gamma(x + 1.1)
    np.testing.assert_allclose(shifted, other, atol=1e-4)


# ---- It learns: the scale of the frequencies --------------------------------------------------------

def signal(x):
    return jnp.sin(2 * jnp.pi * 5 * x) + 0.5 * jnp.sin(2 * jnp.pi * 13 * x)


@pytest.fixture(scope="module")
def scale_study():
    """Held-out RMSE of a (32, 64, 1) network on Fourier features of scale 1, 5 and 50: one compile, vmapped."""
    x = np.arange(128, dtype=np.float32) / np.float32(128.0)
    x_between = x + 0.5 / 128
    opt = optax.adam(5e-3)

    @jax.jit
    def run(scales):
        def one(scale):
            k_B, k_p = jax.random.split(jax.random.key(0))
            B = scale * jax.random.normal(k_B, (16, 1))
            params = init(k_p, (32, 64, 1))
            predict = lambda p, xs: jax.vmap(lambda z: apply(p, z[None], B)[0])(xs)
            loss = lambda p: jnp.mean((predict(p, x) - signal(x)) ** 2)

            def step(carry, _):
                p, s = carry
                l, g = jax.value_and_grad(loss)(p)
                u, s = opt.update(g, s, p)
                return (optax.apply_updates(p, u), s), l

            (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), None, length=300)
            return jnp.sqrt(losses[-1]), jnp.sqrt(jnp.mean((predict(params, x_between) - signal(x_between)) ** 2))

        return jax.vmap(one)(scales)

    train, held_out = run(np.array([1.0, 5.0, 50.0], np.float32))
    return np.asarray(train), np.asarray(held_out)


def test_the_right_scale_fits_fine_detail_between_the_samples(scale_study):
    train, held_out = scale_study
    assert held_out[1] < 0.05, held_out  # s = 5
    assert held_out[0] > 0.2, held_out  # s = 1: a blur
    assert train[2] < 1e-3 and held_out[2] > 0.5, (train, held_out)  # s = 50: exact on samples, noise between


# ---- Bad input ---------------------------------------------------------------------------------------

def test_bad_input_gets_a_clear_error():
    sigmas, deltas = random_ray(8)
    with pytest.raises(ValueError, match="sigmas"):
        rendering_weights(-sigmas, deltas)
    with pytest.raises(ValueError, match="deltas"):
        rendering_weights(sigmas, deltas[:5])
    with pytest.raises(TypeError, match="sigmas"):
        rendering_weights(np.ones(S, np.int32), deltas)
    with pytest.raises(ValueError, match="colors"):
        render(sigmas, np.ones((5, 3), np.float32), deltas)
    with pytest.raises(ValueError, match="B"):
        fourier_features(np.ones(2, np.float32), np.ones((4, 3), np.float32))
