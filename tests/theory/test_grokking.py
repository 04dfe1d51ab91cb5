import jax
import numpy as np
import pytest

from cookbook.theory.grokking import apply, fourier_concentration, init, modular_addition, train

P, WIDTH, STEPS, LR = 23, 128, 2000, 3e-3


@pytest.fixture(scope="module")
def runs():
    """The page's two runs (the same calls as its figure, so a built book trains them once)."""
    data = modular_addition(jax.random.key(0), p=P, train_fraction=0.5)
    params = init(jax.random.key(1), p=P, width=WIDTH)
    out = {"init": params}
    for weight_decay in (1.0, 0.0):
        trained, (train_acc, val_acc) = train(params, data, learning_rate=LR, weight_decay=weight_decay, steps=STEPS)
        out[weight_decay] = (trained, np.asarray(train_acc), np.asarray(val_acc))
    return out


def _first(accuracies, level):
    hits = np.flatnonzero(accuracies >= level)
    return int(hits[0]) + 1 if hits.size else None  # steps taken when the level is first reached


def test_it_groks_with_weight_decay_and_not_without(runs):
    _, train_acc, val_acc = runs[1.0]
    memorised, generalised = _first(train_acc, 1.0), _first(val_acc, 0.95)
    # Measured (seeds 0 and 1): 100 % training accuracy after 85 steps, 95 % validation after 1116.
    assert memorised is not None and memorised <= 200
    assert generalised is not None and generalised >= 3 * memorised
    assert val_acc[-1] >= 0.99  # measured 0.996 at the end
    _, train_acc, val_acc = runs[0.0]
    # Without weight decay: it memorises as fast, and validation accuracy stays near chance (1/23).
    assert _first(train_acc, 1.0) <= 200
    assert val_acc.max() < 0.95 and val_acc[-1] < 0.2


def test_the_general_solution_is_made_of_single_waves(runs):
    # Median share of a hidden unit's power (over a) in its strongest frequency: measured 0.89 after
    # grokking, 0.35 without weight decay, 0.26 at initialisation.
    assert float(np.median(np.asarray(fourier_concentration(runs[1.0][0])))) > 0.8
    assert float(np.median(np.asarray(fourier_concentration(runs[0.0][0])))) < 0.5
    assert float(np.median(np.asarray(fourier_concentration(runs["init"])))) < 0.5
    # And with weight decay the solution has the smaller norm (measured 41.5 against 54.7).
    norm = lambda params: float(np.sqrt(sum(np.sum(np.asarray(w, np.float64) ** 2) for w in jax.tree.leaves(params))))
    assert norm(runs[1.0][0]) < norm(runs[0.0][0])


def test_fourier_concentration_of_pure_waves_is_one():
    k = np.arange(P)[:, None]
    waves = np.cos(2 * np.pi * np.array([1, 4, 7])[None, :] * k / P + 0.3)  # (p, 3): one frequency each
    params = {"W_in": np.concatenate([waves, np.zeros((P, 3))]).astype(np.float32), "W_out": np.ones((3, P), np.float32)}
    np.testing.assert_allclose(fourier_concentration(params), 1.0, rtol=1e-5)


def test_the_table_is_complete_and_split_without_overlap():
    # at the page's size, so that the page's compiled program serves (another key)
    (a, b, y), (a_val, b_val, y_val) = modular_addition(jax.random.key(3), p=P, train_fraction=0.5)
    assert a.shape == (264,) and a_val.shape == (265,)
    pairs = set(zip(np.concatenate([a, a_val]).tolist(), np.concatenate([b, b_val]).tolist()))
    assert pairs == {(i, j) for i in range(P) for j in range(P)}
    np.testing.assert_array_equal(np.concatenate([y, y_val]), (np.concatenate([a, a_val]) + np.concatenate([b, b_val])) % P)


def test_apply_matches_a_one_hot_reference():
    params = init(jax.random.key(4), p=5, width=7)
    a, b = np.array([0, 4, 2, 3], np.int32), np.array([1, 1, 4, 0], np.int32)
    x = np.concatenate([np.eye(5)[np.asarray(a)], np.eye(5)[np.asarray(b)]], axis=1)  # (4, 10)
    W_in, W_out = (np.asarray(params[k], np.float64) for k in ("W_in", "W_out"))
    np.testing.assert_allclose(apply(params, a, b), ((x @ W_in) ** 2) @ W_out, rtol=1e-5, atol=1e-5)


def test_bad_input_raises_clear_errors():
    params = init(jax.random.key(5), p=5, width=7)
    with pytest.raises(ValueError, match=r"a must lie in \[0, 5\), got values from 0 to 5"):
        apply(params, np.array([0, 5], np.int32), np.array([1, 1], np.int32))
    with pytest.raises(TypeError, match=r"b must be an integer array"):
        apply(params, np.array([0, 1], np.int32), np.array([1.0, 1.0], np.float32))
    with pytest.raises(ValueError, match=r"b must have shape \(2,\)"):
        apply(params, np.array([0, 1], np.int32), np.array([1, 1, 2], np.int32))
    with pytest.raises(ValueError, match=r"train_fraction must be a float in \(0, 1\)"):
        modular_addition(jax.random.key(0), p=5, train_fraction=1.5)
    with pytest.raises(ValueError, match=r"p must be at least 2"):
        init(jax.random.key(0), p=1, width=3)
    data = modular_addition(jax.random.key(0), p=P, train_fraction=0.5)  # the page's table: p = 23 > 5
    with pytest.raises(ValueError, match=r"data: a must lie in \[0, 5\)"):
        train(params, data, learning_rate=1e-3, weight_decay=1.0, steps=2)
    a, b = np.divmod(np.arange(25, dtype=np.int32), 5)  # a valid table for p = 5, made in NumPy
    y = (a + b) % 5
    with pytest.raises(ValueError, match=r"weight_decay must be non-negative"):
        train(params, ((a[:12], b[:12], y[:12]), (a[12:], b[12:], y[12:])), learning_rate=1e-3,
              weight_decay=-1.0, steps=2)
