import jax
import numpy as np
import pytest
import scipy.special
import scipy.stats

from cookbook.regularization.mixup import cutmix, cutmix_mask, mix_pairs, mixup, paste_box, sample_mixing

B, H, W, C, K = 5, 7, 11, 3, 5
Z = 5.0  # tolerance in standard errors


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    # NumPy arrays: each eager jnp operation on a new shape would compile a program of its own
    x = rng.standard_normal((B, H, W, C)).astype(np.float32)  # continuous: no two pixels equal
    y = np.eye(K, dtype=np.float32)[np.arange(B)]  # every example its own class, so label weights can be read off
    return x, y


@pytest.fixture(scope="module")
def draws():
    """Many (lam, perm) draws at once, for three values of alpha."""
    keys = jax.random.split(jax.random.key(0), 100_000)
    sample = jax.jit(jax.vmap(sample_mixing, in_axes=(0, None, None)), static_argnums=1)
    return {alpha: sample(keys, B, alpha) for alpha in (0.2, 1.0, 4.0)}


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_lambda_is_in_the_unit_interval_and_has_beta_statistics(draws, alpha):
    lam = np.asarray(draws[alpha][0], np.float64)
    assert np.all((lam >= 0) & (lam <= 1))
    n = lam.size
    var = 1.0 / (4.0 * (2.0 * alpha + 1.0))  # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
    assert abs(lam.mean() - 0.5) < Z * np.sqrt(var / n)
    # (lam - 1/2)^2 lies in [0, 1/4], so its variance is at most 1/64.
    assert abs(lam.var() - var) < Z * np.sqrt(1 / 64 / n)
    # Kolmogorov-Smirnov on the lower half, where float32 resolves the values: near 1 float32 is spaced
    # 6e-8 apart, so at alpha = 0.2 about 2 % of the draws round to exactly 1 (see the page).
    low = lam[lam < 0.5]
    cdf = lambda t: scipy.stats.beta.cdf(t, alpha, alpha) / 0.5  # noqa: E731
    assert scipy.stats.kstest(low, cdf).pvalue > 1e-4


def test_permutations_are_permutations(draws):
    perms = np.asarray(draws[1.0][1])
    np.testing.assert_array_equal(np.sort(perms, axis=1), np.broadcast_to(np.arange(B), perms.shape))
    assert len({p.tobytes() for p in perms[:1000]}) > 100  # not one fixed pairing


def test_mixup_is_mix_pairs_with_the_sampled_coefficient_and_labels_sum_to_one():
    x, y = _batch()
    key = jax.random.key(1)
    x_mix, y_mix = mixup(key, x, y, 0.4)
    lam, perm = sample_mixing(key, B, 0.4)
    ref_x, ref_y = mix_pairs(x, y, lam, perm)
    np.testing.assert_allclose(x_mix, ref_x, rtol=1e-6)
    np.testing.assert_allclose(y_mix, ref_y, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(y_mix).sum(1), np.ones(B), rtol=1e-6)
    # by hand, with numpy
    lam, perm = float(lam), np.asarray(perm)
    np.testing.assert_allclose(x_mix, lam * x + (1 - lam) * x[perm], rtol=1e-5, atol=1e-6)


def test_lambda_one_is_the_identity_for_both():
    x, y = _batch()
    perm = np.array([4, 3, 2, 1, 0], np.int32)  # NumPy: no eager jnp operation to compile
    x1, y1 = mix_pairs(x, y, np.array(1.0, np.float32), perm)
    np.testing.assert_array_equal(x1, x)
    np.testing.assert_array_equal(y1, y)
    keep = cutmix_mask(jax.random.key(2), np.array(1.0, np.float32), H, W)
    assert np.asarray(keep).all()
    x2, y2 = paste_box(x, y, keep, perm)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)


@pytest.mark.parametrize("seed", range(3))
def test_cutmix_pixels_come_from_exactly_one_image_and_labels_equal_pixel_fractions(seed):
    x, y = _batch(seed)
    key = jax.random.key(10 + seed)
    x_cut, y_cut = cutmix(key, x, y, 1.0)
    k_mix, _ = jax.random.split(key)
    _, perm = sample_mixing(k_mix, B, 1.0)
    x, x_cut, y_cut, perm = (np.asarray(a) for a in (x, x_cut, y_cut, perm))
    np.testing.assert_allclose(y_cut.sum(1), np.ones(B), rtol=1e-6)
    for b in range(B):
        own = np.all(x_cut[b] == x[b], axis=-1)  # (H, W)
        partner = np.all(x_cut[b] == x[perm[b]], axis=-1)
        assert np.all(own | partner)  # every pixel is one image's pixel
        if perm[b] != b:
            assert not np.any(own & partner)
            assert y_cut[b, b] == pytest.approx(own.mean(), abs=1e-6)
            assert y_cut[b, perm[b]] == pytest.approx(partner.mean(), abs=1e-6)
        else:
            np.testing.assert_array_equal(y_cut[b], y[b] if isinstance(y, np.ndarray) else np.asarray(y[b]))


def test_cutmix_box_is_a_clipped_rectangle_of_the_stated_size():
    keys = jax.random.split(jax.random.key(3), 20)
    lam = np.array(0.64, np.float32)  # sqrt(1 - 0.64) = 0.6: box sides floor(0.6 * 7) = 4 and floor(0.6 * 11) = 6
    masks = np.stack([np.asarray(cutmix_mask(k, lam, H, W)) for k in keys])
    for keep in masks:
        box = ~keep
        rows, cols = box.any(1), box.any(0)
        np.testing.assert_array_equal(box, rows[:, None] & cols[None, :])  # a rectangle
        r, c = np.flatnonzero(rows), np.flatnonzero(cols)
        assert np.all(np.diff(r) == 1) and np.all(np.diff(c) == 1)  # contiguous
        assert rows.sum() <= 4 and cols.sum() <= 6
    areas = (~masks).mean(axis=(1, 2))
    assert np.isclose(areas.max(), 24 / (H * W))  # unclipped boxes have the full size
    assert areas.min() < areas.max()  # and some were clipped at the border


def test_mixed_labels_match_the_decomposed_loss():
    # Cross-entropy is linear in the target: loss on the mixed label = lam * loss(y) + (1 - lam) * loss(y[perm]).
    x, y = _batch()
    logits = np.random.default_rng(5).standard_normal((B, K))
    lam, perm = np.float32(0.3), np.array([1, 2, 3, 4, 0], np.int32)
    _, y_mix = mix_pairs(x, y, lam, perm)
    logp = scipy.special.log_softmax(logits, axis=1)  # NumPy: the claim is about the labels
    mixed = -(np.asarray(y_mix) * logp).sum(1)
    split = 0.3 * -(y * logp).sum(1) + 0.7 * -(y[perm] * logp).sum(1)
    np.testing.assert_allclose(mixed, split, rtol=1e-5)


def test_different_keys_give_different_blends():
    # (jit agreement on the examples' inputs is checked by tests/test_jit.py)
    x, y = _batch()  # same shapes as the other tests: nothing new to compile
    a, b = mixup(jax.random.key(7), x, y, 0.7)[1], mixup(jax.random.key(8), x, y, 0.7)[1]
    assert not np.allclose(a, b)


def test_bad_input_raises():
    x, y = _batch()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"x must have 4 axes \(B, H, W, C\), got shape \(5, 7, 11\)"):
        mixup(key, x[..., 0], y, 0.2)
    with pytest.raises(ValueError, match=r"y must be one-hot labels \(B, K\) with B = 5 like x, got shape \(4, 5\)"):
        cutmix(key, x, y[:4], 0.2)
    with pytest.raises(ValueError, match=r"alpha must be > 0.*got 0.0"):
        mixup(key, x, y, 0.0)
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        mixup(key, x.astype(np.uint8), y, 0.2)
    with pytest.raises(ValueError, match=r"keep must have shape \(H, W\) = \(7, 11\)"):
        paste_box(x, y, np.ones((11, 7), bool), np.arange(B))


def test_bad_pairings_masks_and_mixing_coefficients_raise():
    x, y = _batch()
    with pytest.raises(ValueError, match=r"perm must lie in \[0, 5\), got values from 1 to 5"):
        mix_pairs(x, y, 0.5, np.array([1, 2, 3, 4, 5], np.int32))  # under jit this index would be clamped
    with pytest.raises(ValueError, match=r"perm must have shape \(5,\)"):
        paste_box(x, y, np.ones((7, 11), bool), np.arange(4))
    with pytest.raises(TypeError, match=r"lam must be a floating-point array"):
        mix_pairs(x, y, np.array(1, np.int32), np.arange(5))
    with pytest.raises(ValueError, match=r"lam holds NaN"):
        cutmix_mask(jax.random.key(0), np.array(np.nan, np.float32), 7, 11)
    with pytest.raises(TypeError, match=r"keep must be a boolean mask"):
        paste_box(x, y, np.ones((7, 11), np.float32), np.arange(5))
    with pytest.raises(TypeError, match=r"height must be an int"):
        cutmix_mask(jax.random.key(0), 0.5, 7.5, 11)
