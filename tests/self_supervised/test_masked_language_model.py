import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cookbook.self_supervised.masked_language_model import (
    _apply, _mask_tokens, _mlm_loss, apply, init, mask_tokens, masked_token_loss, mirror_sentences, mlm_loss)

V, HALF = 8, 5  # the test grammar: 8 tokens, sentences of 10 mirrored around the middle
T = 2 * HALF
SIZES = dict(vocab_size=V, max_len=T, d_model=32, num_heads=4, num_layers=2)  # the page's example's: its programs
loss_jit = jax.jit(masked_token_loss)


@pytest.fixture(scope="module")
def params():
    return init(jax.random.key(0), **SIZES)


def test_the_80_10_10_rule_over_many_draws():
    draws, length, vocab = 4000, 20, 7
    tokens = np.random.default_rng(0).integers(0, vocab, length).astype(np.int32)
    inputs, selected = jax.jit(jax.vmap(lambda k: _mask_tokens(k, tokens, vocab, 3)))(
        jax.random.split(jax.random.key(0), draws))
    inputs, selected = np.asarray(inputs), np.asarray(selected)
    assert (selected.sum(1) == 3).all()  # round(0.15 * 20) = 3 selected in every draw
    assert (inputs[~selected] == np.broadcast_to(tokens, inputs.shape)[~selected]).all()  # the others never change
    original = np.broadcast_to(tokens, inputs.shape)[selected]
    got = inputs[selected]
    n = got.size  # 12 000 selected tokens

    def within(fraction, p):  # four binomial standard deviations
        return abs(fraction - p) < 4 * np.sqrt(p * (1 - p) / n)

    assert within(np.mean(got == vocab), 0.8)  # [MASK], the id after the vocabulary
    # a random token is the original one with probability 1/vocab
    assert within(np.mean(got == original), 0.1 + 0.1 / vocab)
    assert within(np.mean((got != vocab) & (got != original)), 0.1 * (vocab - 1) / vocab)
    assert got.min() >= 0 and got.max() <= vocab
    counts = np.bincount(got[(got != vocab) & (got != original)], minlength=vocab)  # random ids: spread evenly
    assert counts.min() > 0.5 * counts.sum() / vocab
    # each position is selected with probability 3/20; random tokens replace 1.5 % of all tokens
    assert np.abs(selected.mean(0) - 0.15).max() < 4 * np.sqrt(0.15 * 0.85 / draws)
    random_share = np.mean(selected & (inputs != vocab) & (inputs != tokens)) * vocab / (vocab - 1)
    assert abs(random_share - 0.015) < 0.002  # 0.15 * 0.1, corrected for random tokens equal to the original


def numpy_loss(logits, targets, selected):
    """A float64 loop over the selected positions."""
    total = 0.0
    for t in np.flatnonzero(selected):
        z = logits[t].astype(np.float64)
        total -= z[targets[t]] - np.log(np.sum(np.exp(z - z.max()))) - z.max()
    return total / selected.sum()


def test_loss_against_a_numpy_loop_and_only_on_selected_positions():
    rng = np.random.default_rng(1)
    logits = (3 * rng.standard_normal((11, 7))).astype(np.float32)
    targets = rng.integers(0, 7, 11)
    selected = rng.random(11) < 0.4
    expected = numpy_loss(logits, targets, selected)
    np.testing.assert_allclose(loss_jit(logits, targets, selected), expected, rtol=1e-5)
    changed = logits.copy()
    changed[~selected] = rng.standard_normal((int((~selected).sum()), 7))
    np.testing.assert_allclose(loss_jit(changed, targets, selected), expected, rtol=1e-5)
    grads = np.asarray(jax.jit(jax.grad(masked_token_loss))(logits, targets, selected))
    np.testing.assert_array_equal(grads[~selected], 0.0)  # unselected positions carry no loss
    assert np.abs(grads[selected]).sum(1).min() > 0
    # huge logits stay finite (the max is subtracted); bfloat16 is computed in float32
    assert np.isfinite(loss_jit(logits * 1e4, targets, selected))
    np.testing.assert_allclose(loss_jit(jnp.asarray(logits, jnp.bfloat16), targets, selected), expected, rtol=2e-2)


def test_the_encoder_reads_both_directions(params):
    rng = np.random.default_rng(2)
    params = jax.tree.map(lambda w: (np.asarray(w) + 0.1 * rng.standard_normal(w.shape)).astype(np.float32),
                          params)  # in NumPy (no eager compiles); the head no longer zero
    tokens = rng.integers(0, V, T).astype(np.int32)
    tokens[2] = V  # a masked position
    logits = apply(params, tokens)
    for j in (0, 7, 9):  # a token to the left, and tokens to the right, of the masked one
        changed = tokens.copy()
        changed[j] = (tokens[j] + 1) % V
        assert not np.allclose(apply(params, changed)[2], logits[2], atol=1e-4), j


def test_mlm_loss_composes_the_pieces(params):
    tokens = mirror_sentences(np.random.default_rng(3), 1, half=HALF, vocab_size=V)[0].astype(np.int32)
    inputs, selected = mask_tokens(jax.random.key(4), tokens, vocab_size=V)
    np.testing.assert_allclose(mlm_loss(params, jax.random.key(4), tokens),
                               masked_token_loss(apply(params, inputs), tokens, selected), rtol=1e-6)
    assert int(selected.sum()) == 2  # round(0.15 * 10)
    np.testing.assert_array_equal(tokens, tokens[::-1])  # the grammar mirrors
    one, one_selected = mask_tokens(jax.random.key(5), tokens[:1], vocab_size=V)  # T = 1: still one selected
    assert one.shape == (1,) and bool(one_selected[0])


def test_bad_input(params):
    tokens = np.zeros(T, np.int32)
    with pytest.raises(ValueError, match="tokens"):
        mask_tokens(jax.random.key(0), np.array([0, 8]), vocab_size=V)  # an id past the vocabulary
    with pytest.raises(TypeError, match="tokens"):
        mask_tokens(jax.random.key(0), tokens.astype(np.float32), vocab_size=V)
    with pytest.raises(ValueError, match="select_rate"):
        mask_tokens(jax.random.key(0), tokens, vocab_size=V, select_rate=1.5)
    with pytest.raises(ValueError, match="tokens"):
        apply(params, np.zeros(T + 1, np.int32))  # longer than max_len
    with pytest.raises(ValueError, match="tokens"):
        apply(params, np.full(T, V + 1, np.int32))  # past the mask id
    with pytest.raises(ValueError, match="tokens"):
        mlm_loss(params, jax.random.key(0), np.full(T, V, np.int32))  # the mask id is not a target
    with pytest.raises(TypeError, match="selected"):
        masked_token_loss(np.zeros((3, 4), np.float32), np.zeros(3, np.int32), np.ones(3))
    with pytest.raises(ValueError, match="targets"):
        masked_token_loss(np.zeros((3, 4), np.float32), np.array([0, 4, 1]), np.ones(3, bool))
    with pytest.raises(ValueError, match="num_heads"):
        init(jax.random.key(0), **dict(SIZES, num_heads=3))


# ---- It learns: filling the gaps of the mirrored grammar ----------------------------------------

STEPS, BATCH, LEARNING_RATE = 150, 64, 6e-3


@pytest.fixture(scope="module")
def grammar_run(params):
    """The encoder of ``SIZES`` trained by one compiled lax.scan loop of Adam steps on fresh mirrored
    sentences (drawn with NumPy), 2 of 10 tokens selected; scored on 1000 new sentences."""
    rng = np.random.default_rng(0)
    train = mirror_sentences(rng, STEPS * BATCH, half=HALF, vocab_size=V).reshape(STEPS, BATCH, T).astype(np.int32)
    test = mirror_sentences(rng, 1000, half=HALF, vocab_size=V).astype(np.int32)
    opt = optax.adam(LEARNING_RATE)

    @jax.jit
    def train_and_score(params, key):
        def step(carry, inputs):
            p, state = carry
            x, k = inputs
            value, grads = jax.value_and_grad(
                lambda p: jnp.mean(jax.vmap(lambda k, x: _mlm_loss(p, k, x, 2))(jax.random.split(k, BATCH), x)))(p)
            updates, state = opt.update(grads, state, p)
            return (optax.apply_updates(p, updates), state), value

        k_train, k_test = jax.random.split(key)
        (trained, _), losses = jax.lax.scan(step, (params, opt.init(params)), (train, jax.random.split(k_train, STEPS)))

        def score(k, x):
            inputs, selected = _mask_tokens(k, x, V, 2)
            predictions = jnp.argmax(_apply(trained, inputs), axis=-1)
            return jnp.stack([jnp.sum((predictions == x) & selected), jnp.sum((x == 0) & selected)])

        right, commonest = jax.vmap(score)(jax.random.split(k_test, len(test)), test).sum(0) / (2 * len(test))
        return trained, losses, right, commonest

    trained, losses, right, commonest = train_and_score(params, jax.random.key(1))
    return trained, np.asarray(losses), float(right), float(commonest)


def test_mlm_fills_the_gaps_of_the_grammar(grammar_run):
    _, losses, accuracy, unigram = grammar_run
    print(losses[:10].mean(), losses[-20:].mean(), accuracy, unigram)
    assert 0.3 < unigram < 0.45  # the commonest token (id 0) at the selected positions: 0.37 in expectation, 0.36 here
    np.testing.assert_allclose(1 / np.sum(1 / np.arange(1, V + 1)), 0.368, atol=1e-3)  # the page's 37 %
    assert accuracy >= 0.8, accuracy  # measured 0.92 (0.9225)
    assert losses[-20:].mean() < 0.5 * np.log(V)


def test_the_trained_encoder_answers_from_the_right(grammar_run):
    # a gap in the first half is answered by its mirror, which stands to its right
    trained = grammar_run[0]
    tokens = mirror_sentences(np.random.default_rng(6), 1, half=HALF, vocab_size=V)[0].astype(np.int32)
    for t in range(HALF):
        for answer in (3, 6):
            sentence = tokens.copy()
            sentence[T - 1 - t] = answer
            sentence[t] = V  # masked
            assert np.argmax(np.asarray(apply(trained, sentence))[t]) == answer, (t, answer)
