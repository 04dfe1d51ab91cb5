import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.attention.rope import apply_rope

rope = jax.jit(apply_rope)


def _x(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_matches_complex_multiplication_in_numpy():
    x = _x(0, (2, 3, 7, 10))  # (B, H, T, D)
    positions = np.array([0, 1, 2, 5, 11, 100, 4000])
    theta = 10000.0 ** (-np.arange(0, 10, 2) / 10)
    z = np.asarray(x[..., 0::2], np.float64) + 1j * np.asarray(x[..., 1::2], np.float64)
    rotated = z * np.exp(1j * positions[:, None] * theta[None, :])
    expected = np.stack([rotated.real, rotated.imag], axis=-1).reshape(x.shape)
    np.testing.assert_allclose(rope(x, positions), expected, rtol=1e-4, atol=1e-4)


def test_score_depends_only_on_relative_position():
    q, k = _x(1, (1, 16)), _x(2, (1, 16))

    def score(m, n):
        return float((rope(q, jnp.array([m])) @ rope(k, jnp.array([n])).T)[0, 0])

    for m, n in [(0, 3), (5, 2), (7, 7)]:
        for c in [1, 11, 300]:
            assert score(m + c, n + c) == pytest.approx(score(m, n), rel=1e-4, abs=1e-4)
    assert abs(score(0, 3) - score(0, 4)) > 1e-3  # a different offset gives a different score


def test_whole_score_matrix_is_shift_invariant():
    q, k = _x(3, (5, 8)), _x(4, (7, 8))
    pq, pk = np.arange(5) + 2, np.arange(7)
    scores = rope(q, pq) @ rope(k, pk).T
    np.testing.assert_allclose(rope(q, pq + 37) @ rope(k, pk + 37).T, scores, rtol=1e-4, atol=1e-4)


def test_rotation_preserves_norms_and_position_zero_is_identity():
    x = _x(5, (11, 12))
    y = rope(x, np.arange(11) * 13)
    np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(rope(x, np.zeros(11, np.int32)), x, rtol=1e-6)
    # Float positions work too: half a position is half the angle.
    np.testing.assert_allclose(rope(rope(x, np.full(11, 0.5)), np.full(11, 0.5)), rope(x, np.ones(11)),
                               rtol=1e-5, atol=1e-5)


def test_bfloat16_keeps_dtype_and_accuracy_at_large_positions():
    x = _x(6, (3, 8))
    positions = jnp.array([1000, 2000, 4000])
    y16 = rope(x.astype(jnp.bfloat16), positions)
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y16, np.float32), rope(x, positions), atol=5e-2)


def test_vmap_over_heads():
    x = _x(7, (3, 5, 8))
    np.testing.assert_allclose(jax.vmap(apply_rope, in_axes=(0, None))(x, np.arange(5)), rope(x, np.arange(5)),
                               rtol=1e-6)


@pytest.mark.parametrize(
    "shape, positions, match",
    [
        ((5, 7), np.arange(5), r"x must have shape \(..., T, D\) with D even, got shape \(5, 7\)"),
        ((8,), np.arange(1), r"x must have shape"),
        ((5, 8), np.arange(4), r"positions must have shape \(T,\) = \(5,\) to match x \(5, 8\), got shape \(4,\)"),
        ((5, 8), np.zeros((5, 1)), r"positions must have shape"),
    ],
)
def test_bad_shapes_raise_clear_errors(shape, positions, match):
    with pytest.raises(ValueError, match=match):
        apply_rope(np.ones(shape), positions)
