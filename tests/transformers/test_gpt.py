import jax
import numpy as np
import optax
import pytest

from cookbook.transformers.gpt import (
    apply,
    decode_step,
    generate,
    init,
    init_cache,
    sequence_loss,
    sorting_run,
    sorting_task,
)

N = 6  # digits to sort; sequences have 2 N + 1 = 13 tokens over 11 token values
V, MAX_LEN = 11, 13
TOL = dict(rtol=1e-4, atol=1e-5)  # cached decoding against the full forward pass
# The tests draw their batches with few distinct shapes, (3, 2 N + 1) and (3, 2 N) above all: each
# new shape compiles sorting_task, apply and what they meet once more. Slices, comparisons and
# references are taken in NumPy, where an eager jnp operation would compile for every shape.
B = 3
batched_apply = jax.jit(jax.vmap(apply, in_axes=(None, 0)))


def _batch(seed):
    """B sorting sequences (B, 2 N + 1) as a NumPy array (one compiled sorting_task for all seeds)."""
    return np.array(sorting_task(jax.random.key(seed), B, N))  # a writable copy


def _log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@pytest.fixture(scope="module")
def untrained():
    return init(jax.random.key(0), V, MAX_LEN, 32, 4, 2, 64)


@pytest.fixture(scope="module")
def trained():
    """The page's run (its figure shows the losses): 300 Adam steps of 32 sequences of N = 6 digits,
    read from the training cache when the book's build has made it (cookbook/_memo.py)."""
    params, losses = sorting_run()
    return params, np.asarray(losses)


@pytest.fixture(scope="module")
def generated(trained):
    """200 unseen prompts and the trained model's cached greedy continuations: generate on each
    prompt, the program of the page's example (P = N + 1, num_new = N), compiled once."""
    test = np.asarray(sorting_task(jax.random.key(5), 200, N))
    runs = [generate(trained[0], prompt, N) for prompt in test[:, : N + 1]]
    tokens = np.stack([np.asarray(tokens) for tokens, _ in runs])
    step_logits = np.stack([np.asarray(logits) for _, logits in runs])
    return test, tokens, step_logits


def test_sorting_task_layout():
    batch = _batch(2)
    assert batch.shape == (B, 2 * N + 1)
    assert np.all(batch[:, N] == V - 1)  # the separator
    np.testing.assert_array_equal(batch[:, N + 1:], np.sort(batch[:, :N], axis=1))
    assert batch[:, :N].max() <= 9 and batch[:, :N].min() >= 0


def test_initial_loss_is_about_log_vocabulary(untrained):
    batch = _batch(3)
    assert abs(float(sequence_loss(untrained, batch, N)) - np.log(V)) < 0.1


def test_sequence_loss_matches_optax(untrained):
    batch = _batch(4)
    logits = np.asarray(batched_apply(untrained, batch[:, :-1]))[:, -N:]
    ref = np.asarray(jax.jit(optax.softmax_cross_entropy_with_integer_labels)(logits, batch[:, -N:])).mean()
    np.testing.assert_allclose(sequence_loss(untrained, batch, N), ref, rtol=1e-5)


def test_it_learns_to_sort_unseen_sequences(trained, generated):
    _, losses = trained
    assert losses[-20:].mean() < 0.1 * losses[:5].mean()
    assert 300 * 32 / 10**N < 0.01  # the page: 9600 training sequences, under 1% of 10^6 prompts
    test, tokens, _ = generated
    accuracy = (tokens[:, -N:] == test[:, -N:]).mean()
    assert accuracy >= 0.95
    # The page: "measured 98.9%" (200 held-out prompts of 6 tokens each, so one token is 0.08 %;
    # allow half a per cent either way). Whole sequences are right 94.5 % of the time.
    assert abs(accuracy - 0.989) < 0.005, accuracy
    assert abs((tokens[:, -N:] == test[:, -N:]).all(axis=1).mean() - 0.945) < 0.02


def test_cached_generation_gives_the_logits_of_the_full_forward_pass(trained, generated):
    params, _ = trained
    test, tokens, step_logits = generated
    assert tokens.shape == (200, 2 * N + 1) and step_logits.shape == (200, 2 * N, V)
    prompts, tokens, step_logits = test[:B, : N + 1], tokens[:B], step_logits[:B]  # B of them, as elsewhere
    np.testing.assert_array_equal(tokens[:, : N + 1], prompts)
    np.testing.assert_allclose(step_logits, batched_apply(params, tokens[:, :-1]), **TOL)  # every step
    np.testing.assert_array_equal(tokens[:, N + 1:], np.argmax(step_logits[:, N:], axis=-1))  # greedy


def test_decode_steps_by_hand_match_apply(untrained):
    seq = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8], np.int32)  # 2 N = 12 tokens, the tests' shape
    cache = init_cache(untrained, 7)
    assert cache["k"].shape == (2, 4, 7, 8)
    rows = []
    for t in range(5):
        logits, cache = decode_step(untrained, cache, seq[t], t)
        rows.append(np.asarray(logits))
    # The first 5 rows of the full pass read the first 5 tokens only (causal, tested below).
    np.testing.assert_allclose(np.stack(rows), np.asarray(apply(untrained, seq))[:5], **TOL)
    assert np.all(np.asarray(cache["k"])[:, :, 5:] == 0)  # slots not written yet stay empty


@pytest.mark.parametrize("t", [0, 3, 7])
def test_a_later_token_never_changes_an_earlier_output(untrained, t):
    seq = _batch(7)[0, :-1]  # 2 N = 12 tokens
    changed = seq.copy()
    changed[t] = (seq[t] + 3) % V
    a, b, _ = np.asarray(batched_apply(untrained, np.stack([seq, changed, seq])))  # B rows, as elsewhere
    np.testing.assert_allclose(a[:t], b[:t], **TOL)
    assert not np.allclose(a[t:], b[t:], atol=1e-4)


def test_length_one_sequence_and_vmap_agree(untrained):
    logits = apply(untrained, np.array([4], np.int32))
    assert logits.shape == (1, V) and np.all(np.isfinite(logits))
    batch = _batch(8)[:, :-1]  # 2 N = 12 tokens
    batched = np.asarray(batched_apply(untrained, batch))
    for b in range(B):
        np.testing.assert_allclose(batched[b], apply(untrained, batch[b]), **TOL)


def test_train_step_decreases_the_loss_from_the_start(trained):
    _, losses = trained
    assert losses.shape == (300,) and np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]


def test_bad_inputs_raise_clear_errors(untrained):
    with pytest.raises(ValueError, match=r"tokens must have shape \(T,\) with 1 <= T <= max_len=13, got shape \(14,\)"):
        apply(untrained, np.zeros((14,), np.int32))
    with pytest.raises(ValueError, match=r"tokens must have 1 axes \(T,\), got shape \(2, 3\)"):
        apply(untrained, np.zeros((2, 3), np.int32))
    with pytest.raises(ValueError, match=r"max_len must be between 1 and the model's 13 positions, got max_len=20"):
        init_cache(untrained, 20)
    with pytest.raises(ValueError, match=r"num_new must be at least 1, got 0"):
        generate(untrained, np.array([1, 2], np.int32), 0)
    with pytest.raises(ValueError, match=r"prompt must have shape \(P,\) with P >= 1 and P \+ num_new <= max_len=13"):
        generate(untrained, np.array([1, 2], np.int32), 12)
    with pytest.raises(ValueError, match=r"vocab_size must be at least 2, got vocab_size=1"):
        init(jax.random.key(0), 1, 5, 8, 2, 1, 16)


def test_loss_is_the_equation_of_the_page(untrained):
    # L = -1/(B n) sum_b sum_{t=T-n}^{T-1} log p(w_{t+1} | w_1..w_t), positions counted from 1. Row
    # t - 1 of apply on the first T - 1 tokens is the prediction from w_1 .. w_t (causal, tested below).
    tokens = _batch(9)  # (B, T) = (3, 13)
    T = tokens.shape[1]
    log_p = _log_softmax(batched_apply(untrained, tokens[:, :-1]))  # (B, T - 1, V)
    total = sum(-log_p[b, t - 1, tokens[b, t]] for b in range(B) for t in range(T - N, T))  # w_{t+1}
    np.testing.assert_allclose(sequence_loss(untrained, tokens, N), total / (B * N), rtol=1e-5)


def test_initial_embeddings_have_standard_deviation_0_02(untrained):
    assert abs(np.asarray(untrained["tok"]).std() - 0.02) < 0.002


def test_token_ids_out_of_the_vocabulary_raise_instead_of_being_clamped(untrained):
    # Before: an id of V or more read the last embedding row, a negative one wrapped, in silence.
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 11\), got values from 0 to 11"):
        apply(untrained, np.array([0, 11], np.int32))
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 11\), got values from -1 to 3"):
        sequence_loss(untrained, np.array([[3, -1, 2, 2]], np.int32), 2)
    with pytest.raises(ValueError, match=r"prompt must lie in \[0, 11\)"):
        generate(untrained, np.array([4, 12], np.int32), 2)
    cache = init_cache(untrained, 5)
    with pytest.raises(ValueError, match=r"token must lie in \[0, 11\), got values from 11 to 11"):
        decode_step(untrained, cache, np.int32(11), 0)
    # Under jit the ids are traced: out of range, they read a clamped row (what the page says).
    # batched_apply is jax.jit of apply (vmapped over B sequences of the tests' shape).
    out_of_range, clamped = _batch(8)[:, :-1], _batch(8)[:, :-1]
    out_of_range[:, 4], clamped[:, 4] = 14, 10
    np.testing.assert_allclose(batched_apply(untrained, out_of_range), batched_apply(untrained, clamped), **TOL)


def test_decode_positions_past_the_cache_raise_instead_of_overwriting_its_last_slot(untrained):
    cache = init_cache(untrained, 5)
    with pytest.raises(ValueError, match=r"position must lie in \[0, 5\), got values from 5 to 5"):
        decode_step(untrained, cache, np.int32(3), 5)
    with pytest.raises(ValueError, match=r"position must lie in \[0, 5\), got values from -1 to -1"):
        decode_step(untrained, cache, np.int32(3), -1)
    # Under jit: position 7 of a 5-slot cache overwrites slot 4, in silence (what the page says).
    _, jitted = jax.jit(decode_step)(untrained, cache, np.int32(3), 7)
    k = np.asarray(jitted["k"])
    assert np.all(k[:, :, :4] == 0) and np.all(np.abs(k[:, :, 4]).max(axis=-1) > 0)


def test_bad_parameters_and_caches_get_clear_errors(untrained):
    bad = dict(untrained, pos={"P": np.asarray(untrained["pos"]["P"])[:, :3]})
    with pytest.raises(ValueError, match=r"params\['pos'\]\['P'\] must have the shape"):
        apply(bad, np.array([1, 2], np.int32))
    with pytest.raises(TypeError, match=r"params\['tok'\] must be a floating-point array"):
        apply(dict(untrained, tok=np.asarray(untrained["tok"]).astype(np.int32)), np.array([1, 2], np.int32))
    cache = init_cache(untrained, 5)
    with pytest.raises(ValueError, match=r"cache\['k'\] must have shape \(2, 4, 5, 8\)"):
        decode_step(untrained, dict(cache, k=np.asarray(cache["k"])[..., :3]), np.int32(1), 0)
    with pytest.raises(TypeError, match=r"tokens must be an integer array, got dtype float32"):
        apply(untrained, np.array([1.0, 2.0], np.float32))
    seq = _batch(8)[0, :-1]  # 12 tokens, a shape that the other tests compile
    np.testing.assert_allclose(apply(untrained, seq.tolist()), apply(untrained, seq), **TOL)  # lists
