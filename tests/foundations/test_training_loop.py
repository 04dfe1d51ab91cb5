import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.foundations.backpropagation import mean_loss_and_grads
from cookbook.foundations.mlp import init
from cookbook.foundations.training_loop import (
    batch_indices,
    batch_loss,
    evaluate,
    fit,
    load_digits_split,
    train_epoch,
    train_step,
)

SETTINGS = dict(hidden=64, epochs=10, batch_size=32, learning_rate=0.3)  # those of the page
# fit is jitted by the recipe itself, so the page's example and these tests share one compilation.


@pytest.fixture(scope="module")
def digits():
    return load_digits_split()


@pytest.fixture(scope="module")
def run(digits):
    return fit(jax.random.key(0), *_reorder(digits), **SETTINGS)


def _reorder(digits):
    X_train, X_test, y_train, y_test = digits
    return X_train, y_train, X_test, y_test


def test_split_is_stratified_and_standardised_with_training_statistics_only(digits):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X_train, X_test, y_train, y_test = digits
    assert X_train.shape == (1347, 64) and X_test.shape == (450, 64)
    assert X_train.dtype == jnp.float32 and y_train.dtype == jnp.int32
    # Each class keeps its share of the data (about 180 images per class) on both sides.
    counts = np.bincount(np.asarray(y_test), minlength=10)
    assert counts.min() >= 43 and counts.max() <= 46
    np.testing.assert_allclose(np.asarray(X_train).mean(axis=0), 0.0, atol=1e-5)
    std = np.asarray(X_train).std(axis=0)
    assert np.all((np.abs(std - 1.0) < 1e-4) | (std == 0.0))  # constant pixels stay 0
    assert np.abs(np.asarray(X_test).mean(axis=0)).max() > 0.01  # test statistics were not used
    # The same numbers as scikit-learn's scaler fitted on the raw training split.
    X, y = load_digits(return_X_y=True)
    raw_train, raw_test, _, _ = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    scaler = StandardScaler().fit(raw_train)
    np.testing.assert_allclose(X_test, scaler.transform(raw_test), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("N, batch_size", [(37, 5), (11, 3), (11, 11)])  # (11, 3): the page's shuffle
def test_batches_are_a_permutation_with_no_repeats(N, batch_size):
    idx = np.asarray(batch_indices(jax.random.key(N), N, batch_size))
    assert idx.shape == (N // batch_size, batch_size)
    flat = idx.ravel()
    assert len(set(flat.tolist())) == flat.size  # no example twice in an epoch
    assert flat.min() >= 0 and flat.max() < N
    assert N - flat.size == N % batch_size  # exactly the partial batch is dropped


def test_shuffle_differs_between_keys_and_repeats_for_the_same_key():
    first, again = batch_indices(jax.random.key(0), 37, 5), batch_indices(jax.random.key(0), 37, 5)
    other = batch_indices(jax.random.key(1), 37, 5)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(np.sort(np.asarray(first).ravel()), np.arange(35))  # shuffled, not a prefix


def test_fit_uses_a_fresh_permutation_every_epoch_and_drops_the_partial_batch(digits):
    # fit splits its key once into an init key and one key per epoch. With a zero learning rate the
    # parameters stay at init, and each epoch's mean batch loss is set by which examples it used.
    X_train, X_test, y_train, y_test = digits
    N, B, epochs = X_train.shape[0], SETTINGS["batch_size"], SETTINGS["epochs"]
    assert N % B == 3  # 1347 = 42 * 32 + 3: the batch size does not divide N
    frozen, history = fit(jax.random.key(0), X_train, y_train, X_test, y_test, **dict(SETTINGS, learning_rate=0.0))

    @jax.jit  # the keys, the initial parameters, the epochs' orders and their batch losses: one program
    def recomputed(key, X, y):
        k_init, k_epochs = jax.random.split(key)
        orders = jax.vmap(lambda k: batch_indices(k, N, B))(jax.random.split(k_epochs, epochs))
        params = init(k_init, (64, SETTINGS["hidden"], 10))
        per_batch = jax.vmap(jax.vmap(batch_loss, in_axes=(None, 0, 0)), in_axes=(None, 0, 0))
        return params, orders, per_batch(params, X[orders], y[orders])  # (epochs, 42) batch losses

    params, orders, batch_losses = recomputed(jax.random.key(0), X_train, y_train)
    orders = list(np.asarray(orders))
    assert all(order.shape == (42, 32) for order in orders)
    assert all(not np.array_equal(orders[a], orders[b]) for a in range(epochs) for b in range(a))
    dropped = [set(range(N)) - set(order.ravel().tolist()) for order in orders]
    assert all(len(d) == 3 for d in dropped) and len(set.union(*dropped)) > 3  # a different 3 each epoch
    for a, b in zip(jax.tree.leaves(frozen), jax.tree.leaves(params)):
        np.testing.assert_allclose(a, b, rtol=1e-6)  # init compiled inside fit: the same draws to rounding
    expected = np.asarray(batch_losses).mean(axis=1, dtype=np.float32)
    np.testing.assert_allclose(history["train_loss"], expected, rtol=1e-5)
    assert len(set(np.asarray(history["train_loss"]).tolist())) == epochs  # each epoch saw other examples


def test_training_loss_decreases_and_accuracy_reaches_95_percent(run):
    params, history = run
    loss = np.asarray(history["train_loss"])
    assert loss.shape == (SETTINGS["epochs"],)
    assert loss[-1] < 0.1 * loss[0]  # measured: about 0.65 -> 0.015
    assert np.all(np.diff(loss) < 0)  # every epoch lowers the mean batch loss on this run
    accuracy = np.asarray(history["test_accuracy"])
    assert accuracy[-1] >= 0.95  # measured: 0.978 with key 0
    assert abs(accuracy[-1] - 0.98) <= 0.01  # the page says "about 98%"
    assert accuracy[-1] > accuracy[0]


def test_same_key_reproduces_the_run_and_another_key_does_not(digits, run):
    params, history = run
    again_params, again = fit(jax.random.key(0), *_reorder(digits), **SETTINGS)
    for a, b in zip(jax.tree.leaves(again_params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)  # bit for bit
    np.testing.assert_array_equal(again["train_loss"], history["train_loss"])
    other_params, other = fit(jax.random.key(1), *_reorder(digits), **SETTINGS)
    assert not np.array_equal(other["train_loss"], history["train_loss"])
    assert other["test_accuracy"][-1] >= 0.95  # a different order, the same target


def test_evaluate_matches_a_direct_count_and_optax(digits, run):
    import optax

    params, history = run
    _, X_test, _, y_test = digits

    @jax.jit
    def both(params, X, y):
        h = jax.nn.relu(X @ params[0]["W"] + params[0]["b"][None, :])
        logits = h @ params[1]["W"] + params[1]["b"][None, :]
        direct = jnp.mean(jnp.argmax(logits, axis=1) == y)
        return evaluate(params, X, y), (direct, optax.softmax_cross_entropy_with_integer_labels(logits, y).mean())

    (accuracy, loss), (direct, reference) = both(params, X_test, y_test)
    np.testing.assert_allclose(accuracy, direct, atol=1e-6)
    np.testing.assert_allclose(loss, reference, rtol=1e-4)
    np.testing.assert_allclose(accuracy, history["test_accuracy"][-1], atol=1e-6)


def test_train_step_is_sgd_with_the_backpropagation_gradients(digits, run):
    X, y = np.asarray(digits[0])[:13], np.asarray(digits[2])[:13]
    params = jax.tree.map(lambda p: 0.5 * np.asarray(p), run[0])  # somewhere not at a minimum
    as_two_layer = lambda p: {"W1": p[0]["W"], "b1": p[0]["b"], "W2": p[1]["W"], "b2": p[1]["b"]}

    @jax.jit
    def both(params, X, y):
        new_params, loss = train_step(params, X, y, 0.5)
        hand_written = mean_loss_and_grads(as_two_layer(params), X, y, "relu")  # the recipe's backward pass
        return new_params, loss, hand_written, batch_loss(new_params, X, y)

    new_params, loss, (ref_loss, grads), new_loss = both(params, X, y)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    old, new = as_two_layer(params), as_two_layer(new_params)
    for name in old:
        np.testing.assert_allclose(new[name], old[name] - 0.5 * np.asarray(grads[name]), rtol=1e-5, atol=1e-6)
    assert float(new_loss) < float(loss)  # a step downhill


# NumPy arrays (float32, int32): made on the host, with no eager jnp operation to compile.
PARAMS = [{"W": np.ones((3, 4), np.float32), "b": np.zeros(4, np.float32)},
          {"W": np.ones((4, 2), np.float32), "b": np.zeros(2, np.float32)}]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: batch_indices(jax.random.key(0), 5, 6), r"batch_size must be between 1 and N = 5, got 6"),
        (lambda: batch_indices(jax.random.key(0), 5, 0), r"batch_size must be at least 1, got 0"),
        (lambda: evaluate(PARAMS, np.ones(3, np.float32), np.ones(3, np.int32)), r"X must have 2 axes \(N, D\)"),
        (lambda: evaluate(PARAMS, np.ones((5, 4), np.float32), np.ones(5, np.int32)), r"X must have shape \(5, 3\)"),
        (
            lambda: batch_loss(PARAMS, np.ones((5, 3), np.float32), np.ones(4, np.int32)),
            r"y must have shape \(N,\) = \(5,\)",
        ),
        (
            lambda: fit(jax.random.key(0), np.ones((5, 3), np.float32), np.ones(5, np.int32),
                        np.ones((2, 4), np.float32), np.ones(2, np.int32),
                        hidden=4, epochs=1, batch_size=2, learning_rate=0.1),
            r"X_test must have 3 features",
        ),
    ],
)
def test_bad_input_raises_clear_errors(call, match):  # all raise before any computation
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("label", [-1, 2])
def test_labels_outside_the_classes_raise_eagerly_and_give_nan_under_jit(label):
    X, y = np.ones((2, 3), np.float32), np.array([0, label], np.int32)
    with pytest.raises(ValueError, match=r"y must lie in \[0, 2\)"):
        batch_loss(PARAMS, X, y)
    with pytest.raises(ValueError, match=r"y must lie in \[0, 2\)"):
        evaluate(PARAMS, X, y)
    with pytest.raises(ValueError, match=r"y must lie in \[0, 2\)"):
        train_epoch(PARAMS, jax.random.key(0), X, y, batch_size=2, learning_rate=0.1)
    assert np.isnan(float(jax.jit(batch_loss)(PARAMS, X, y)))  # never the loss of another class
    _, loss = train_step(PARAMS, X, y, 0.1)  # not read back at every step: the loss shows it
    assert np.isnan(float(loss))
    _, loss = jax.jit(train_epoch, static_argnames="batch_size")(PARAMS, jax.random.key(0), X, y, batch_size=2,
                                                                learning_rate=0.1)
    assert np.isnan(float(loss))  # traced, as inside fit


@pytest.mark.parametrize("call, name", [
    (lambda: batch_loss(PARAMS, np.ones((2, 3), np.int32), np.array([0, 1], np.int32)), "X"),
    (lambda: batch_loss(PARAMS, np.ones((2, 3), np.float32), np.array([0.0, 1.0], np.float32)), "y"),
    (lambda: train_step([dict(PARAMS[0], W=np.ones((3, 4), np.int32)), PARAMS[1]], np.ones((2, 3), np.float32),
                        np.array([0, 1], np.int32), 0.1),
     r"params\[0\]\['W'\]"),
    (lambda: batch_indices(jax.random.key(0), 5.0, 2), "N"),
])
def test_wrong_types_raise_type_errors(call, name):
    with pytest.raises(TypeError, match=rf"{name} must be"):
        call()


def test_split_sizes_on_the_page(digits):
    X_train, X_test, y_train, y_test = load_digits_split()
    assert X_train.shape[0] + X_test.shape[0] == 1797 and X_train.shape[1] == 64 == 8 * 8
    assert round(X_test.shape[0] / 1797, 2) == 0.25  # 75% / 25%
    assert divmod(X_train.shape[0], 32) == (42, 3)  # 42 batches of 32, 3 examples left out
