import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from cookbook.transformers.sampling import greedy, sample, top_k_mask, top_p_mask

KEYS = jax.random.split(jax.random.key(0), 4000)


def _logits(seed, V=11):
    return np.random.default_rng(seed).standard_normal(V).astype(np.float32) * 2.0


def _draws(logits, **kwargs):
    # sample runs a compiled core whose temperature and top_p are traced: mapped eagerly, the draws of
    # one shape and one top_k share one batched program (a jax.jit here compiled one per call).
    return np.asarray(jax.vmap(lambda k: sample(k, logits, **kwargs))(KEYS))


_softmax = jax.jit(jax.nn.softmax)  # one program rather than one per operation


def _nucleus_by_hand(logits, p):
    probs = np.asarray(_softmax(logits), np.float64)  # float32, as the function computes it
    order = sorted(range(len(probs)), key=lambda i: (-probs[i], i))
    kept, mass = [], 0.0
    for i in order:
        kept.append(i)
        mass += probs[i]
        if mass >= p:
            break
    mask = np.zeros(len(probs), bool)
    mask[kept] = True
    return mask


def test_greedy_matches_numpy_argmax():
    for seed in range(3):
        z = _logits(seed)
        assert int(greedy(z)) == int(np.argmax(z))
    assert int(greedy(np.array([1.0, 3.0, 3.0], np.float32))) == 1  # ties: lowest index


@pytest.mark.parametrize("k", [1, 3, 5, 7, 11])
def test_top_k_keeps_exactly_k_largest(k):
    z = _logits(1)
    mask = np.asarray(top_k_mask(z, k))
    assert mask.sum() == k
    assert np.min(np.asarray(z)[mask]) >= np.max(np.asarray(z)[~mask], initial=-np.inf)


def test_top_k_breaks_ties_towards_lower_indices():
    z = np.array([0.0, 2.0, 1.0, 1.0, 1.0, -1.0], np.float32)
    np.testing.assert_array_equal(top_k_mask(z, 3), [False, True, True, True, False, False])
    np.testing.assert_array_equal(top_k_mask(z, 2), [False, True, True, False, False, False])


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9, 0.99, 1.0])
def test_nucleus_mask_is_computed_exactly(p):
    for seed in range(3):
        z = _logits(seed)
        np.testing.assert_array_equal(top_p_mask(z, p), _nucleus_by_hand(z, p))


def test_nucleus_mask_by_hand_and_ties():
    z = np.log(np.array([0.1, 0.4, 0.25, 0.25], np.float32))
    np.testing.assert_array_equal(top_p_mask(z, 0.5), [False, True, True, False])  # 0.4 + 0.25 >= 0.5
    np.testing.assert_array_equal(top_p_mask(z, 0.3), [False, True, False, False])
    np.testing.assert_array_equal(top_p_mask(z, 0.1), [False, True, False, False])  # the top token always


@pytest.mark.parametrize("p", [0.3, 0.7, 0.9])
def test_nucleus_sampling_never_leaves_the_nucleus(p):
    z = _logits(4)
    draws = _draws(z, top_p=p)
    nucleus = np.asarray(top_p_mask(z, p))
    assert nucleus[draws].all()
    assert set(np.flatnonzero(nucleus)) == set(draws)  # and reaches every token in it


def test_top_k_sampling_renormalises_over_the_kept_tokens():
    z = _logits(5)
    draws = _draws(z, top_k=3)
    mask = np.asarray(top_k_mask(z, 3))
    assert mask[draws].all()
    expected = np.where(mask, np.exp(np.asarray(z, np.float64)), 0.0)
    expected /= expected.sum()
    counts = np.bincount(draws, minlength=11)
    assert stats.chisquare(counts[mask], expected[mask] * len(draws)).pvalue > 1e-3


def test_temperature_one_matches_jax_random_categorical_frequencies():
    z = _logits(6, V=7)
    ours = np.bincount(_draws(z), minlength=7)
    ref = np.bincount(np.asarray(jax.jit(jax.vmap(lambda k: jax.random.categorical(k, z)))(  # one program
        jax.random.split(jax.random.key(99), 4000))), minlength=7)
    assert stats.chi2_contingency(np.stack([ours, ref]) + 1).pvalue > 1e-3  # same distribution
    expected = np.exp(np.asarray(z, np.float64))
    expected *= 4000 / expected.sum()
    assert stats.chisquare(ours, expected).pvalue > 1e-3


def test_small_temperature_approaches_greedy_and_large_flattens():
    z = _logits(7)
    assert np.all(_draws(z, temperature=1e-3) == int(greedy(z)))
    hot = np.bincount(_draws(z, temperature=100.0), minlength=11) / len(KEYS)
    assert np.abs(hot - 1 / 11).max() < 0.03  # nearly uniform


def test_same_key_same_token_and_jit_agrees():
    z = _logits(8)
    key = jax.random.key(3)
    f = jax.jit(functools.partial(sample, top_k=4, top_p=0.9, temperature=0.7))
    assert int(f(key, z)) == int(sample(key, z, top_k=4, top_p=0.9, temperature=0.7))


def test_huge_logits_and_bfloat16_stay_valid():
    z = np.array([1e30, -1e30, 0.0, 1e30], np.float32)
    np.testing.assert_array_equal(top_p_mask(z, 0.9), [True, False, False, True])
    assert int(sample(jax.random.key(0), z, top_k=2)) in (0, 3)
    zb = np.asarray(_logits(9)).astype(jnp.bfloat16)
    assert np.asarray(top_p_mask(zb, 0.5)).sum() >= 1
    assert 0 <= int(sample(jax.random.key(1), zb, top_p=0.5)) < 11


def test_vocabulary_of_one():
    z = np.array([0.3], np.float32)
    assert int(sample(jax.random.key(0), z, top_k=1, top_p=0.1)) == 0


def test_bad_inputs_raise_clear_errors():
    z = _logits(0)
    with pytest.raises(ValueError, match=r"logits must have 1 axes \(V,\), got shape \(2, 11\)"):
        greedy(np.stack([z, z]))
    with pytest.raises(ValueError, match=r"k must be between 1 and the vocabulary size 11 of logits, got k=12"):
        top_k_mask(z, 12)
    with pytest.raises(ValueError, match=r"temperature must be positive"):
        sample(jax.random.key(0), z, temperature=0.0)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\], got top_p=1.5"):
        sample(jax.random.key(0), z, top_p=1.5)


def test_nan_logits_raise_instead_of_returning_token_zero():
    # Before: sample returned token 0 for all-NaN logits, a plausible but wrong token.
    with pytest.raises(ValueError, match=r"logits holds NaN"):
        sample(jax.random.key(0), np.full((5,), np.nan, np.float32))
    for f in (greedy, lambda z: top_k_mask(z, 2), lambda z: top_p_mask(z, 0.5)):
        with pytest.raises(ValueError, match=r"logits holds NaN"):
            f(np.array([0.1, np.nan, 0.3], np.float32))


def test_under_jit_a_nan_logit_is_the_token_chosen():
    # What the page says happens when the check cannot see the values.
    z = np.array([0.1, np.nan, 0.3], np.float32)
    assert int(jax.jit(greedy)(z)) == 1
    assert np.asarray(jax.jit(functools.partial(top_k_mask, k=1))(z)).tolist() == [False, True, False]


def test_non_integer_k_and_integer_logits_get_a_clear_type_error():
    z = _logits(0)
    # Before: k = 2.5 raised from inside jax.lax.top_k.
    with pytest.raises(TypeError, match=r"k must be an int of at least 1, got float 2.5"):
        top_k_mask(z, 2.5)
    with pytest.raises(TypeError, match=r"top_k must be an int of at least 1, got float 2.5"):
        sample(jax.random.key(0), z, top_k=2.5)
    with pytest.raises(TypeError, match=r"logits must be a floating-point array, got dtype int32"):
        greedy(np.arange(5, dtype=np.int32))
    np.testing.assert_array_equal(top_k_mask(np.asarray(z).tolist(), 3), top_k_mask(z, 3))  # lists are read


def test_nucleus_of_one_drops_only_what_float32_rounding_loses():
    # The page: rho = 1 keeps every token but those after the float32 running sum reaches 1.
    z = np.array([0.0, -30.0, 1.0], np.float32)  # probabilities 0.27, 2.5e-14, 0.73
    np.testing.assert_array_equal(top_p_mask(z, 1.0), [True, False, True])
    np.testing.assert_array_equal(top_p_mask(np.array([0.0, -5.0, 1.0], np.float32), 1.0), [True, True, True])
