import jax
import numpy as np
import pytest

from cookbook.attention import multi_head
from cookbook.attention.positional_encoding import init_learned, learned_encoding, sinusoidal_encoding

D_MODEL, HEADS, T = 8, 2, 5  # the page's example's sizes: the tests and the example share their programs
mha_apply = multi_head.apply  # it checks its input and runs one compiled program per shape


@pytest.fixture(scope="module")
def mha_params():
    """Weights in init's shapes and at its scales, drawn with NumPy (no random kernel to compile)."""
    shapes = jax.eval_shape(lambda: multi_head.init(jax.random.key(0), D_MODEL, HEADS))
    rng = np.random.default_rng(0)
    std = {"W_q": D_MODEL ** -0.5, "W_k": D_MODEL ** -0.5, "W_v": D_MODEL ** -0.5, "W_o": D_MODEL ** -0.5}
    return {name: (std.get(name, 0.0) * rng.standard_normal(s.shape)).astype(np.float32)
            for name, s in shapes.items()}


def _x(seed):
    return np.random.default_rng(seed).standard_normal((T, D_MODEL)).astype(np.float32)


PERM = np.array([2, 4, 0, 3, 1])


def test_matches_the_formula_in_numpy():
    T, d = 11, 6
    p = np.arange(T)[:, None].astype(np.float64)
    i = np.arange(d // 2)[None, :]
    angles = p / 10000.0 ** (2 * i / d)
    expected = np.zeros((T, d))
    expected[:, 0::2], expected[:, 1::2] = np.sin(angles), np.cos(angles)
    np.testing.assert_allclose(sinusoidal_encoding(T, d), expected, rtol=1e-5, atol=1e-6)


def test_values_by_hand_and_bounds():
    P = np.asarray(sinusoidal_encoding(7, 4))
    np.testing.assert_allclose(P[0], [0.0, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(P[2, :2], [np.sin(2.0), np.cos(2.0)], rtol=1e-6)
    np.testing.assert_allclose(P[2, 2:], [np.sin(0.02), np.cos(0.02)], rtol=1e-5)  # frequency 10000^(-1/2)
    assert np.all(np.abs(sinusoidal_encoding(101, 12)) <= 1.0)


def test_a_shift_is_the_same_rotation_at_every_position():
    P = np.asarray(sinusoidal_encoding(40, 8), np.float64).reshape(40, 4, 2)  # (T, pairs, (sin, cos))
    k = 5
    freq = 10000.0 ** (-np.arange(0, 8, 2) / 8)
    c, s = np.cos(k * freq), np.sin(k * freq)
    # sin(a + b) = sin a cos b + cos a sin b; cos(a + b) = cos a cos b - sin a sin b
    shifted = np.stack([P[:-k, :, 0] * c + P[:-k, :, 1] * s, P[:-k, :, 1] * c - P[:-k, :, 0] * s], axis=-1)
    np.testing.assert_allclose(shifted, P[k:], atol=1e-4)


def test_without_positions_self_attention_is_permutation_equivariant(mha_params):
    x = _x(1)
    np.testing.assert_allclose(mha_apply(mha_params, x[PERM]), np.asarray(mha_apply(mha_params, x))[PERM],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["sinusoidal", "learned"])
def test_with_positions_it_is_not(mha_params, kind):
    x = _x(2)
    if kind == "sinusoidal":
        P = np.asarray(sinusoidal_encoding(T, D_MODEL))
    else:  # scaled up: trained tables are not tiny
        P = np.asarray(learned_encoding(init_learned(jax.random.key(3), 16, D_MODEL), T)) * 50
    gap = np.abs(np.asarray(mha_apply(mha_params, x[PERM] + P)) - np.asarray(mha_apply(mha_params, x + P))[PERM]).max()
    assert gap > 1e-2


def test_learned_table_shape_scale_and_slice():
    params = init_learned(jax.random.key(4), 64, 32)
    assert params["P"].shape == (64, 32)
    np.testing.assert_allclose(float(np.asarray(params["P"]).std()), 0.02, rtol=0.1)
    np.testing.assert_array_equal(learned_encoding(params, 11), np.asarray(params["P"])[:11])


def test_sinusoids_extrapolate_the_table_does_not():
    np.testing.assert_allclose(np.asarray(sinusoidal_encoding(1000, 8))[:5], sinusoidal_encoding(5, 8), atol=1e-6)
    with pytest.raises(ValueError, match=r"T must be between 1 and max_len=16 of the learned table, got T=17"):
        learned_encoding(init_learned(jax.random.key(5), 16, 8), 17)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"d_model must be even for sine-cosine pairs, got d_model=7"):
        sinusoidal_encoding(5, 7)
    with pytest.raises(ValueError, match=r"T must be at least 1, got 0"):
        sinusoidal_encoding(0, 8)
    with pytest.raises(TypeError, match=r"T must be an int"):
        sinusoidal_encoding(5.5, 8)
    with pytest.raises(TypeError, match=r'params\["P"\] must be a floating-point array'):
        learned_encoding({"P": np.ones((16, 8), np.int32)}, 5)
    with pytest.raises(ValueError, match=r'params\["P"\] must have 2 axes'):
        learned_encoding({"P": np.ones((2, 16, 8), np.float32)}, 5)
    with pytest.raises(TypeError, match=r"max_len must be an int"):
        init_learned(jax.random.key(0), 16.5, 8)


def test_wavelengths_from_2_pi_to_nearly_2_pi_b():
    # Pair i has period 2 pi b^(2i/d): 2 pi for the first, 2 pi b^((d-2)/d) for the last.
    d, b = 8, 10000.0
    P = np.asarray(sinusoidal_encoding(200, d), np.float64)
    np.testing.assert_allclose(P[:, 0], np.sin(np.arange(200)), atol=1e-4)  # period 2 pi
    last = b ** ((d - 2) / d)
    np.testing.assert_allclose(P[:, d - 2], np.sin(np.arange(200) / last), atol=1e-5)
    assert last / b == pytest.approx(0.1)  # close to 2 pi b only for wide models: here 10^3 of 10^4
    assert round(10000.0 ** (510 / 512) / 10000.0, 2) == 0.96  # "96% at d = 512", the original width
