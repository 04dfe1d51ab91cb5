import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.attention.rope import apply_rope, relative_distance_bound, rope_frequencies


def rope(x, positions, base=10000.0):
    """apply_rope as NumPy: it runs one compiled core per shape (the jit check compares it under
    jax.jit); the tests slice, multiply and reduce its output in NumPy."""
    return np.asarray(apply_rope(x, positions, base))


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
        return float((rope(q, np.array([m])) @ rope(k, np.array([n])).T)[0, 0])

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
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(rope(x, np.zeros(11, np.int32)), x, rtol=1e-6)
    # Float positions work too: half a position is half the angle.
    np.testing.assert_allclose(rope(rope(x, np.full(11, 0.5)), np.full(11, 0.5)), rope(x, np.ones(11)),
                               rtol=1e-5, atol=1e-5)


def test_bfloat16_keeps_dtype_and_accuracy_at_large_positions():
    x = _x(6, (3, 8))
    positions = np.array([1000, 2000, 4000])
    y16 = apply_rope(x.astype(jnp.bfloat16), positions)
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
        ((8,), np.arange(1), r"x must have at least 2 axes \(..., T, D\), got shape \(8,\)"),
        ((5, 8), np.arange(4), r"positions must have shape \(T,\) = \(5,\) to match x \(5, 8\), got shape \(4,\)"),
        ((5, 8), np.zeros((5, 1)), r"positions must have shape"),
    ],
)
def test_bad_shapes_raise_clear_errors(shape, positions, match):
    with pytest.raises(ValueError, match=match):
        apply_rope(np.ones(shape, np.float32), positions)


def test_random_scores_do_not_decay_with_distance():
    # Independent random q and k: the score has mean 0 and standard deviation sqrt(D) at every
    # offset. The old page said that RoPE makes attention decay for "typical" queries and keys.
    D, N = 64, 4096
    q, k = _x(8, (N, D)), _x(9, (N, D))
    for r in (0, 10, 1000):
        scores = np.sum(rope(q, np.zeros(N, np.int32)) * rope(k, np.full(N, r)), axis=-1)
        assert abs(scores.mean()) < 4 * np.sqrt(D / N)  # four standard errors of the mean
        assert scores.std() == pytest.approx(np.sqrt(D), rel=0.05)


def test_the_upper_bound_decays_on_average_not_monotonically():
    # The numbers of the page: D = 128, base 10000.
    b = np.asarray(relative_distance_bound(np.arange(4096), 128))
    assert b[0] == pytest.approx(32.5, rel=1e-5)  # (D/2 + 1) / 2: every partial sum is j
    assert b[16:64].mean() == pytest.approx(12.8, abs=0.05)
    assert b[1024:4096].mean() == pytest.approx(5.0, abs=0.05)
    windows = [b[lo:hi].mean() for lo, hi in [(0, 1), (1, 16), (16, 64), (64, 256), (256, 1024), (1024, 4096)]]
    assert all(a > c for a, c in zip(windows, windows[1:]))  # decays window by window ...
    assert np.any(np.diff(b[256:]) > 0) and b[256:].max() > 2 * b[1024:].mean()  # ... but not monotonically
    # Against a direct numpy evaluation in float64.
    theta = 10000.0 ** (-np.arange(0, 128, 2) / 128)
    for r in (3, 100, 3000):
        direct = np.abs(np.cumsum(np.exp(1j * r * theta))).mean()
        assert b[r] == pytest.approx(direct, rel=1e-3)


def test_the_bound_holds_for_random_queries_and_keys():
    D = 32
    theta = np.asarray(rope_frequencies(D))
    q, k = _x(10, (200, D)), _x(11, (200, D))
    for r in (0, 7, 500):
        zq = q[:, 0::2] + 1j * q[:, 1::2]
        zk = k[:, 0::2] + 1j * k[:, 1::2]
        h = np.conj(zq) * zk  # (N, D / 2)
        score = np.sum(rope(q, np.zeros(200, np.int32)) * rope(k, np.full(200, r)), axis=-1)
        np.testing.assert_allclose(score, np.real(np.sum(h * np.exp(1j * r * theta), axis=-1)), rtol=1e-4, atol=1e-3)
        # Abel summation with h_{D/2} = 0 at the end, so the last difference is |h_{D/2-1}|.
        steps = np.abs(np.diff(np.concatenate([h, np.zeros((200, 1))], axis=1), axis=1)).max(axis=1)
        bound = steps * float(relative_distance_bound(np.array(r), D)) * (D // 2)
        assert np.all(np.abs(score) <= bound + 1e-3)


def test_a_query_matching_its_key_scores_less_when_far():
    # q = k: every h_i = |z_i|^2 >= 0 varies smoothly with i for this smooth vector, and the score
    # falls with distance on average, as the bound says.
    D = 64
    x = np.ones((1, D), np.float32)
    scores = np.array([float(np.sum(rope(x, np.array([0])) * rope(x, np.array([r]))))
                       for r in range(0, 1024, 8)])
    assert scores[0] == pytest.approx(D)
    assert scores[:4].mean() > 2 * scores[32:].mean()


def test_frequencies_and_extension_tricks():
    theta = np.asarray(rope_frequencies(16))
    assert theta[0] == 1.0 and theta[-1] == pytest.approx(10000.0 ** (-14 / 16), rel=1e-6)
    # NTK-aware scaling: base * s ** (D / (D - 2)) keeps the fastest pair and slows the slowest by s.
    s = 4.0
    ntk = np.asarray(rope_frequencies(16, 10000.0 * s ** (16 / 14)))
    assert ntk[0] == 1.0 and ntk[-1] == pytest.approx(theta[-1] / s, rel=1e-5)
    # Position interpolation: positions / s stay within the trained angles.
    x = _x(12, (6, 16))
    np.testing.assert_allclose(rope(x, np.arange(6) * 4 / s), rope(x, np.arange(6)), rtol=1e-6)


def test_bfloat16_angles_are_off_by_up_to_8_radians_near_4000():
    angles = np.arange(3990.0, 4010.0, 0.25)
    # Rounded as jnp.asarray(angles, jnp.bfloat16) rounds them (through float32), in NumPy.
    error = np.abs(angles.astype(np.float32).astype(jnp.bfloat16).astype(np.float64) - angles)
    assert error.max() == 8.0


@pytest.mark.parametrize("bad, error, match", [
    (dict(x=np.ones((5, 8), np.int32)), TypeError, "x must be a floating-point array"),
    (dict(positions=np.ones(5, bool)), TypeError, "positions must hold integer or real positions"),
    (dict(base=-1.0), ValueError, "base must be positive"),
])
def test_bad_dtypes_and_arguments(bad, error, match):
    args = dict(x=np.ones((5, 8), np.float32), positions=np.arange(5), base=10000.0) | bad
    with pytest.raises(error, match=match):
        apply_rope(**args)
    with pytest.raises(ValueError, match="D must be even"):
        rope_frequencies(7)
    with pytest.raises(TypeError, match="D must be an int"):
        relative_distance_bound(np.arange(3), 8.5)


def test_a_traced_base_runs_and_agrees_with_a_number():
    # A number picks the compiled core built for it; a base traced by an outer jax.jit goes to a core
    # that takes it as an argument, and gives the same rotation, frequencies and bound.
    x = np.random.default_rng(3).standard_normal((2, 5, 8)).astype(np.float32)
    positions = np.arange(5, dtype=np.int32)
    rotated = jax.jit(apply_rope)(x, positions, 500.0)
    np.testing.assert_allclose(rotated, apply_rope(x, positions, 500.0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.jit(rope_frequencies, static_argnums=0)(8, 500.0), rope_frequencies(8, 500.0),
                               rtol=1e-6)
    offsets = np.arange(0, 40, 7, dtype=np.int32)
    np.testing.assert_allclose(jax.jit(relative_distance_bound, static_argnums=1)(offsets, 8, 500.0),
                               relative_distance_bound(offsets, 8, 500.0), rtol=1e-5)
    assert not np.allclose(rotated, apply_rope(x, positions, 10000.0))  # the base is not ignored
