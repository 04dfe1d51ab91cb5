import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.diffusion.ddpm import denoiser_init, mmd2, two_moons
from cookbook.diffusion.flow_matching import (
    _euler,
    conditional_ot_path,
    euler_sample,
    loss,
    trained_moons_flow,
)



def _rng(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def _ones(*shape):  # in NumPy: a jnp.ones would compile a program for each shape
    return np.ones(shape, np.float32)


def _zero_params():
    """A zero network in the shapes of the page's (read with jax.eval_shape): its loss program serves."""
    shapes = jax.eval_shape(lambda key: denoiser_init(key, 2), jax.random.key(0))
    return jax.tree.map(lambda a: np.zeros(a.shape, np.float32), shapes)


@pytest.mark.parametrize("t", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("sigma_min", [0.0, 0.1])
def test_path_matches_the_closed_form_in_float64(t, sigma_min):
    x0, x1 = _rng(0, 5, 3), _rng(1, 5, 3)
    expected_x = (1 - (1 - sigma_min) * t) * x0 + t * x1
    expected_u = x1 - (1 - sigma_min) * x0
    with jax.enable_x64(True):
        for times in (t, np.full(5, t)):  # one time for all rows, or one for each
            xt, ut = conditional_ot_path(x0, x1, times, sigma_min)
            assert xt.dtype == jnp.float64
            np.testing.assert_allclose(xt, expected_x, rtol=1e-14, atol=1e-15)
            np.testing.assert_allclose(ut, expected_u, rtol=1e-14, atol=1e-15)
    if t == 0.0:  # the path starts on the noise
        np.testing.assert_allclose(expected_x, x0)
    if t == 1.0:  # and ends within sigma_min of the data
        np.testing.assert_allclose(expected_x, x1 + sigma_min * x0, rtol=1e-12)


def test_velocity_is_the_time_derivative_of_the_path():
    x0, x1 = _rng(2, 7, 2).astype(np.float32), _rng(3, 7, 2).astype(np.float32)
    t = np.linspace(0.05, 0.95, 7, dtype=np.float32)
    xt, ut = conditional_ot_path(x0, x1, t, 0.1)
    _, dxt = jax.jvp(lambda s: conditional_ot_path(x0, x1, s, 0.1)[0], (t,), (np.ones(7, np.float32),))
    np.testing.assert_allclose(dxt, ut, rtol=1e-6, atol=1e-6)


def test_euler_with_the_exact_field_carries_noise_to_a_gaussian():
    # For data N(m, s^2) and sigma_min = 0, x_t ~ N(t m, sd_t^2) with sd_t^2 = (1 - t)^2 + t^2 s^2,
    # and the marginal field is v(x, t) = m + sd_t'/sd_t (x - t m).
    m, s = 1.5, 0.3
    def field(x, t):
        sd2 = (1 - t) ** 2 + t**2 * s**2
        return m + (t * s**2 - (1 - t)) / sd2 * (x - t * m)
    x = _rng(4, 20000, 1).astype(np.float32)
    out = np.asarray(jax.jit(lambda x: _euler(field, x, 200))(x))  # one program
    assert abs(float(out.mean()) - m) < 0.01 and abs(float(out.std()) - s) < 0.005
    # the conditional mean of u_t given x_t is that field (a least-squares fit of u_t on x_t)
    x0, x1, t = _rng(5, 200000), m + s * _rng(6, 200000), 0.4
    xt, ut = (1 - t) * x0 + t * x1, x1 - x0
    slope, intercept = np.polyfit(xt, ut, 1)
    np.testing.assert_allclose([slope, intercept], [field(1.0, t) - field(0.0, t), field(0.0, t)], atol=0.01)


def test_a_time_outside_the_unit_interval_is_refused():
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\], got values from -0.5"):
        conditional_ot_path(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32), np.array([-0.5, 0.5], np.float32))


@pytest.fixture(scope="module")
def trained():
    return trained_moons_flow()


def test_it_learns_two_moons_in_twenty_euler_steps(trained):
    params, losses = trained
    losses = np.asarray(losses)
    # the loss cannot reach 0 (lines cross): measured 1.43 at the end against 1.60 over the first 100 steps
    assert float(losses[-500:].mean()) < 0.9 * float(losses[:100].mean())
    data, other = two_moons(jax.random.key(3), 1000), two_moons(jax.random.key(4), 1000)
    generated = euler_sample(params, jax.random.key(2), 1000, 20)  # the program of the page's example
    model, baseline = float(mmd2(generated, data)), float(mmd2(other, data))
    # measured: 0.0071 with 20 steps against 0.0080 for data against data
    assert model < 2 * baseline


def test_loss_of_a_zero_field_is_the_mean_squared_line_speed():
    # v = 0: L = E |x1 - x0|^2 / D = (E|x1|^2 + D) / D for standard noise; checked by Monte Carlo.
    x1 = two_moons(jax.random.key(0), 1000)  # the page's data size: its programs
    expected = float(np.mean(np.asarray(x1) ** 2)) + 1.0
    assert float(loss(_zero_params(), x1, jax.random.key(1))) == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize("call, match", [
    (lambda: conditional_ot_path(_ones(3, 2), _ones(3, 1), 0.5), r"x1 must have shape \(3, 2\) \(the shape of x0\)"),
    (lambda: conditional_ot_path(_ones(3, 2), _ones(3, 2), _ones(4) / 2),
     r"t must be a scalar or have shape \(3,\) \(one time for each row of x0"),
    (lambda: conditional_ot_path(_ones(2), _ones(2), 0.5, sigma_min=-0.1), "sigma_min must be non-negative"),
    (lambda: euler_sample(_zero_params(), jax.random.key(0), 3, 0), "num_steps must be at least 1"),
])
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_integer_input_raises_type_error():
    with pytest.raises(TypeError, match="x0 must be a floating-point array"):
        conditional_ot_path(np.ones((3, 2), np.int32), _ones(3, 2), 0.5)
    with pytest.raises(TypeError, match="t must be a floating-point array"):
        conditional_ot_path(_ones(3, 2), _ones(3, 2), np.zeros(3, np.int32))
