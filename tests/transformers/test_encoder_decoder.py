import jax
import numpy as np
import optax
import pytest

from cookbook.transformers.encoder_decoder import (
    BOS,
    EOS,
    PAD,
    apply,
    attention_masks,
    cross_attention_weights,
    decode,
    encode,
    greedy_translate,
    init,
    loss,
    shift_right,
    train,
    translation_task,
)

# The sizes of the page's example, so that the examples and the tests share their compilations:
# 8 words after the 3 special tokens, sentences of at most 6 words and an EOS.
V, W = 11, 6
S = T = W + 1
D_MODEL, H, L, D_FF = 32, 4, 1, 64
TOL = dict(rtol=1e-4, atol=1e-5)
STEPS, CORPUS, HELD_OUT = 1000, 8000, 128


def _pairs(seed, n):
    """Sentence pairs written with numpy from the task's definition: reverse, then w -> V + 2 - w."""
    rng = np.random.default_rng(seed)
    src = np.full((n, S), PAD, np.int32)
    tgt = np.full((n, T), PAD, np.int32)
    for b in range(n):
        k = rng.integers(1, W + 1)
        words = rng.integers(EOS + 1, V, k)
        src[b, :k], src[b, k] = words, EOS
        tgt[b, :k], tgt[b, k] = V + 2 - words[::-1], EOS
    return src, tgt


def _shift(tgt):
    return np.concatenate([[BOS], tgt[:-1]]).astype(np.int32)


def _sentence(seed):
    """One source sentence with padding, and its decoder input."""
    src, tgt = _pairs(seed, 20)
    b = int(np.argmax(src[:, -1] == PAD))
    return src[b], _shift(tgt[b])


# The reference loss, one compiled program rather than a dozen eager operations.
_optax_per_token = jax.jit(optax.softmax_cross_entropy_with_integer_labels)


@pytest.fixture(scope="module")
def untrained():
    return init(jax.random.key(0), V, V, D_MODEL, H, L, D_FF)


@pytest.fixture(scope="module")
def trained(untrained):
    src, tgt = _pairs(1, CORPUS)
    fit = jax.jit(train, static_argnames=("steps", "batch_size"))
    params, losses = fit(jax.random.key(1), untrained, src, tgt, steps=STEPS, batch_size=32)
    # Held-out sentences: none of them is in the training corpus.
    seen = {row.tobytes() for row in src}
    test_src, test_tgt = _pairs(2, 4 * HELD_OUT)
    unseen = np.array([row.tobytes() not in seen for row in test_src])
    test_src, test_tgt = test_src[unseen][:HELD_OUT], test_tgt[unseen][:HELD_OUT]
    # One call per held-out sentence: each runs the programs that the page's example compiles (the same
    # shapes), where a vmap of all 128 in one call compiled a program of its own (about 4 s).
    tokens, step_logits = map(np.stack, zip(*(map(np.asarray, greedy_translate(params, s, T)) for s in test_src)))
    return params, np.asarray(losses), (test_src, test_tgt, tokens, step_logits)


def test_translation_task_follows_its_definition():
    src, tgt = np.asarray(translation_task(jax.random.key(3), 4, W, V))  # the example's shapes
    assert src.shape == tgt.shape == (4, S)
    for s, t in zip(src, tgt):
        k = int(np.argmax(s == EOS))  # the number of words
        assert 1 <= k <= W and t[k] == EOS and np.all(s[k + 1:] == PAD) and np.all(t[k + 1:] == PAD)
        assert np.all((s[:k] > EOS) & (s[:k] < V))
        np.testing.assert_array_equal(t[:k], V + 2 - s[:k][::-1])  # reversed, then the dictionary


def test_shift_right_and_masks_by_hand():
    np.testing.assert_array_equal(shift_right(np.array([7, 4, 9, EOS, PAD], np.int32)), [BOS, 7, 4, 9, EOS])
    np.testing.assert_array_equal(shift_right(np.array([5], np.int32), bos=3), [3])
    encoder, causal, cross = attention_masks(np.array([True, True, False]), 2)
    np.testing.assert_array_equal(encoder, [[1, 1, 0], [1, 1, 0], [1, 1, 0]])
    np.testing.assert_array_equal(causal, [[1, 0], [1, 1]])
    np.testing.assert_array_equal(cross, [[1, 1, 0], [1, 1, 0]])


def test_apply_is_encode_then_decode(untrained):
    src, tgt_in = _sentence(4)
    memory = encode(untrained, src)
    assert memory.shape == (S, D_MODEL)
    logits = decode(untrained, memory, tgt_in, src != PAD)
    assert logits.shape == (T, V) and np.all(np.isfinite(logits))
    np.testing.assert_allclose(apply(untrained, src, tgt_in), logits, **TOL)


def test_jit_agrees_with_eager(untrained):
    src, tgt_in = _sentence(5)
    np.testing.assert_allclose(jax.jit(apply)(untrained, src, tgt_in), apply(untrained, src, tgt_in), **TOL)


def test_loss_leaves_padding_out_and_matches_optax(untrained):
    src, tgt = translation_task(jax.random.key(5), 4, W, V)  # the example's shapes
    src, tgt = np.asarray(src), np.asarray(tgt)
    logits = np.stack([apply(untrained, s, _shift(t)) for s, t in zip(src, tgt)])  # (4, T, V)
    per_token = np.asarray(_optax_per_token(logits, tgt))  # (4, T)
    real = tgt != PAD
    assert not np.all(real)
    value = float(loss(untrained, src, tgt))  # compiled, with apply under vmap: jit and vmap agree with eager
    np.testing.assert_allclose(value, per_token[real].mean(), rtol=1e-5)  # the mean over real tokens
    assert abs(value - per_token.mean()) > 1e-3  # counting the PAD targets would give another value


def test_padding_content_changes_nothing(untrained):
    src, tgt_in = _sentence(6)
    mask = src != PAD
    other = np.where(mask, src, 7)  # the padded positions hold a real word instead of PAD
    enc = lambda tokens, m: np.asarray(encode(untrained, tokens, m))  # noqa: E731 (rows picked in NumPy)
    np.testing.assert_allclose(enc(src, mask)[mask], enc(other, mask)[mask], **TOL)
    np.testing.assert_allclose(apply(untrained, src, tgt_in, mask), apply(untrained, other, tgt_in, mask), **TOL)
    # Without the mask the same change is read: padding is hidden by the mask, not by luck.
    full = np.ones_like(mask)
    assert not np.allclose(enc(src, full)[mask], enc(other, full)[mask], atol=1e-3)


@pytest.mark.parametrize("t", [0, 3, 5])
def test_a_later_target_token_never_changes_an_earlier_logit(untrained, t):
    src, tgt_in = _sentence(7)
    changed = tgt_in.copy()
    changed[t] = (tgt_in[t] + 4) % V
    a, b = np.asarray(apply(untrained, src, tgt_in)), np.asarray(apply(untrained, src, changed))
    np.testing.assert_allclose(a[:t], b[:t], **TOL)
    assert not np.allclose(a[t:], b[t:], atol=1e-4)


def test_the_decoder_reads_the_source(untrained):
    src, tgt_in = _sentence(8)
    changed = src.copy()
    changed[0] = 3 if src[0] != 3 else 4  # another first word
    a, b = np.asarray(apply(untrained, src, tgt_in)), np.asarray(apply(untrained, changed, tgt_in))
    assert np.all(np.abs(a - b).max(axis=-1) > 1e-3)  # every target position sees the change


def test_length_one_target(untrained):
    src, tgt_in = _sentence(9)
    logits = apply(untrained, src, tgt_in[:1])
    assert logits.shape == (1, V) and np.all(np.isfinite(logits))
    np.testing.assert_allclose(logits, np.asarray(apply(untrained, src, tgt_in))[:1], **TOL)  # the first row of T = 7


def test_it_learns_to_translate_held_out_sentences(trained):
    _, losses, (_, tgt, tokens, _) = trained
    assert losses.shape == (STEPS,) and np.all(np.isfinite(losses))
    assert losses[-50:].mean() < 0.05 * losses[:5].mean()
    real = tgt != PAD  # the words and the EOS
    sentence_accuracy = np.mean(np.all(tokens == tgt, axis=1))
    token_accuracy = np.sum((tokens == tgt) & real) / np.sum(real)
    assert sentence_accuracy >= 0.9, sentence_accuracy  # measured 0.977 (125 of 128)
    assert token_accuracy >= 0.97, token_accuracy  # measured 0.991


def test_greedy_translation_is_the_argmax_of_teacher_forcing_on_its_own_output(trained):
    params, _, (src, _, tokens, step_logits) = trained
    assert tokens.shape == (HELD_OUT, T) and step_logits.shape == (HELD_OUT, T, V)
    for b in range(0, HELD_OUT, 4):
        forced = np.asarray(apply(params, src[b], _shift(tokens[b])))
        np.testing.assert_allclose(step_logits[b], forced, rtol=1e-4, atol=1e-4)  # the logits of every step
        after_eos = np.cumsum(tokens[b] == EOS) - (tokens[b] == EOS) > 0
        np.testing.assert_array_equal(np.where(after_eos, PAD, np.argmax(forced, axis=-1)), tokens[b])


def test_cross_attention_of_the_trained_model_follows_the_reversal(trained):
    params, _, (src, tgt, _, _) = trained
    for b in range(8):
        k = int(np.argmax(src[b] == EOS))  # the number of words
        weights = np.asarray(cross_attention_weights(params, src[b], _shift(tgt[b])))  # (L, H, T, S)
        assert weights.shape == (L, H, T, S)
        np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-5)
        assert np.all(weights[..., k + 1:] == 0)  # PAD source positions are never read
        mean = weights[-1].mean(axis=0)  # (T, S), averaged over the heads
        aligned = mean[np.arange(k), k - 1 - np.arange(k)]  # target word t reads source word k - 1 - t
        assert aligned.mean() > 0.5, aligned  # measured 0.727 or more; uniform attention gives 1 / (k + 1)


def test_bad_inputs_raise_clear_errors(untrained):
    src, tgt = np.array([4, 5, EOS]), np.array([BOS, 8])
    with pytest.raises(ValueError, match=r"src must lie in \[0, 11\), got values from 2 to 11"):
        encode(untrained, np.array([11, 5, EOS]))
    with pytest.raises(ValueError, match=r"tgt_in must lie in \[0, 11\), got values from -1 to 8"):
        apply(untrained, src, np.array([-1, 8]))
    with pytest.raises(ValueError, match=r"src must have 1 axes \(S,\), got shape \(1, 3\)"):
        encode(untrained, src[None])
    with pytest.raises(TypeError, match=r"tgt_in must be an integer array, got dtype float32"):
        apply(untrained, src, np.array([1.0, 2.0], np.float32))
    with pytest.raises(ValueError, match=r"src_mask must be boolean of shape \(S,\) = \(3,\), got shape \(2,\)"):
        encode(untrained, src, np.ones((2,), bool))
    with pytest.raises(ValueError, match=r"memory must have shape \(3, 32\) \(\(S, d_model\)\), got shape \(3, 16\)"):
        decode(untrained, np.ones((3, 16), np.float32), tgt)
    with pytest.raises(ValueError, match=r"src must have 2 axes \(B, S\), got shape \(3,\)"):
        loss(untrained, src, tgt)
    with pytest.raises(ValueError, match=r"src and tgt must have shapes \(B, S\) and \(B, T\), got \(1, 3\) and \(2, 2\)"):
        loss(untrained, src[None], np.full((2, 2), EOS))
    with pytest.raises(ValueError, match=r"src and tgt must have shapes \(N, S\) and \(N, T\), got \(3, 3\) and \(2, 2\)"):
        train(jax.random.key(0), untrained, np.full((3, 3), EOS), np.full((2, 2), EOS), steps=1, batch_size=1)
    with pytest.raises(ValueError, match=r"max_len must be at least 1, got 0"):
        greedy_translate(untrained, src, 0)
    with pytest.raises(ValueError, match=r"tgt_vocab must exceed the 3 special tokens \(PAD, BOS, EOS\), got tgt_vocab=3"):
        init(jax.random.key(0), V, 3, 8, 2, 1, 16)
    with pytest.raises(ValueError, match=r"d_model must be even .* got d_model=7 and num_layers=1"):
        init(jax.random.key(0), V, V, 7, 1, 1, 16)
    with pytest.raises(ValueError, match=r"max_words must be at least 1, got 0"):
        translation_task(jax.random.key(0), 2, 0, V)


def test_sentences_without_eos_and_bad_parameters_get_clear_errors(untrained):
    with pytest.raises(ValueError, match=r"src must end every sentence with EOS = 2"):
        greedy_translate(untrained, np.array([4, 5, 6]), 5)
    with pytest.raises(ValueError, match=r"tgt must end every sentence with EOS = 2"):
        loss(untrained, np.array([[4, EOS]]), np.array([[9, 8]]))
    with pytest.raises(TypeError, match=r"params\['src_embed'\] must be a floating-point array"):
        encode(dict(untrained, src_embed=np.asarray(untrained["src_embed"]).astype(np.int32)), np.array([4, EOS]))
    with pytest.raises(ValueError, match=r"params\['decoder'\]\['attn'\]\['W_k'\] must have the shape"):
        bad = jax.tree.map(lambda w: w, untrained)
        bad["decoder"]["attn"]["W_k"] = np.asarray(bad["decoder"]["attn"]["W_k"])[..., :1]
        apply(bad, np.array([4, EOS]), np.array([BOS, 9]))
    with pytest.raises(TypeError, match=r"max_len must be an int of at least 1, got float 7.5"):
        greedy_translate(untrained, np.array([4, EOS]), 7.5)


def test_the_loss_averages_over_the_real_tokens_of_the_whole_batch(untrained):
    # The equation: one sum over every sentence of the batch, divided by N, the real tokens of all.
    src, tgt = map(np.asarray, translation_task(jax.random.key(5), 4, W, V))  # the example's shapes
    logits = np.stack([apply(untrained, s, _shift(t)) for s, t in zip(src, tgt)])
    per_token = np.asarray(_optax_per_token(logits, tgt))
    real = tgt != PAD
    N = real.sum()
    np.testing.assert_allclose(float(loss(untrained, src, tgt)), (per_token * real).sum() / N, rtol=1e-5)
    per_sentence = [(per_token[b] * real[b]).sum() / real[b].sum() for b in range(4)]
    assert abs(float(loss(untrained, src, tgt)) - np.mean(per_sentence)) > 1e-4  # not a mean of means


def test_the_attention_biases_of_the_equation_are_used(untrained):
    src, tgt_in = _sentence(4)
    base = apply(untrained, src, tgt_in)
    for name in ("b_q", "b_k", "b_v", "b_o"):
        changed = jax.tree.map(lambda w: w, untrained)
        b = np.asarray(changed["decoder"]["cross"][name])
        changed["decoder"]["cross"][name] = b + 0.5 * np.random.default_rng(0).standard_normal(b.shape, np.float32)
        moved = np.abs(np.asarray(apply(changed, src, tgt_in)) - np.asarray(base)).max()
        # b_k shifts every score of a query by the same amount: softmax cancels it, as the equation says.
        assert (moved < 1e-4) if name == "b_k" else (moved > 1e-3), (name, moved)


def test_greedy_translation_runs_the_decoder_over_all_max_len_slots_at_every_step(untrained):
    from cookbook.transformers.encoder_decoder import _greedy_steps

    src = np.array([4, 5, 6, 7, 8, 9, EOS])  # S = 7
    memory = encode(untrained, src)
    start = np.full((5,), PAD, np.int32)
    start[0] = BOS  # max_len = 5
    text = str(jax.make_jaxpr(_greedy_steps)(untrained, memory, src != PAD, start, EOS))
    assert "f32[4,5,5]" in text  # self-attention scores of all 5 slots (H = 4) inside the scan
    # greedy_translate's compiled core is built for integer bos and eos; traced ones (under an outer
    # jax.jit) go to the core that takes them as arguments.
    jaxpr = jax.jit(lambda bos, eos: greedy_translate(untrained, src, 5, bos, eos)).trace(
        np.int32(BOS), np.int32(EOS)).jaxpr.jaxpr
    (call,) = jaxpr.eqns
    assert call.params["name"] == "_greedy" and list(call.invars[-2:]) == list(jaxpr.invars)
