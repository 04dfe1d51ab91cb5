import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cookbook.recurrent import gru
from cookbook.recurrent.seq2seq import (
    _adam_update,
    beam_search,
    decoder_step,
    encode,
    greedy_decode,
    init,
    loss,
    reversal_data,
    train,
)

V, S = 10, 5
# Every model has the shape of the page's example (vocabulary 10, embeddings of 16, 64 hidden
# units), which the page trains as the first test does: each new shape would compile init, and the
# functions that it meets, once more.
PAGE = dict(vocab=V, embed=16, hidden=64)


@pytest.fixture(scope="module")
def trained():
    """The page's model trained once to reverse 5 digits (600 Adam steps of 64, the page's very run,
    with its programs), and held-out sources (NumPy: no sampler compiled, no eager indexing)."""
    k_p, k_d, k_t = jax.random.split(jax.random.key(0), 3)
    params = init(k_p, **PAGE)
    src, tgt = reversal_data(k_d, 5000, length=S, vocab=V)
    params, losses = train(params, k_t, src, tgt, steps=600, batch_size=64, learning_rate=0.01)
    test_src = np.random.default_rng(0).integers(0, V, (1200, S), dtype=np.int32)
    seen = {tuple(r) for r in np.asarray(src).tolist()}
    assert (3, 1, 4, 1, 5) not in seen  # the page decodes it as a sequence that training never showed
    held_out = np.array([r for r in test_src if tuple(r) not in seen][:1000])
    return params, losses, held_out


@jax.jit
def _greedy_all(params, src):
    return jax.vmap(lambda s: greedy_decode(params, s, length=S))(src)


@jax.jit
def _beam_one_all(params, src):
    return jax.vmap(lambda s: beam_search(params, s, length=S, beam_width=1)[0][0])(src)


def test_training_reverses_held_out_sequences(trained):
    params, losses, src = trained
    assert src.shape == (1000, S)
    pred = np.asarray(_greedy_all(params, src))
    tgt = np.asarray(src)[:, ::-1]
    sequence_accuracy = float(np.mean(np.all(pred == tgt, axis=1)))
    token_accuracy = float(np.mean(pred == tgt))
    # Measured (seed 0, H = 64): 84.9% of sequences and 94.9% of tokens; chance is 0.001% and 10%.
    # Held-out sets drawn from NumPy seeds 1 and 2: 84.1% and 94.3%, 85.5% and 94.8%.
    # The page: "about 85% of held-out sequences entirely and 95% of their digits".
    assert abs(sequence_accuracy - 0.85) < 0.03
    assert abs(token_accuracy - 0.95) < 0.02
    losses = np.asarray(losses)
    assert losses[-20:].mean() < 0.1 * losses[:20].mean()


def test_beam_width_one_is_greedy_decoding(trained):
    params, _, src = trained
    np.testing.assert_array_equal(_beam_one_all(params, src), _greedy_all(params, src))  # 1000 sources


@jax.jit
def _sequence_log_prob(params, src, tokens):
    return -len(tokens) * loss(params, src, tokens)


def test_beam_search_is_exhaustive_search_when_the_beam_holds_everything():
    # With beam_width = V and 2 output steps, the beam keeps every prefix of length 1, so its best
    # sequences are the best of all V^2 sequences, found here by brute force.
    params = init(jax.random.key(1), **PAGE)
    src = np.array([1, 4, 2], np.int32)
    tokens, scores = beam_search(params, src, length=2, beam_width=V)
    everything = np.array(list(itertools.product(range(V), repeat=2)), np.int32)  # (V^2, 2)
    log_p = np.asarray(jax.vmap(_sequence_log_prob, in_axes=(None, None, 0))(params, src, everything))
    order = np.argsort(-log_p)
    np.testing.assert_array_equal(tokens, everything[order[:V]])
    np.testing.assert_allclose(scores, log_p[order[:V]], rtol=1e-5)


def test_beam_scores_are_the_model_log_probabilities_and_sorted(trained):
    params, _, src = trained
    # The page's beam search (3 beams of 5 tokens), and log-probabilities from the page's loss
    # program (S = T = 5): -T times the mean cross-entropy of a sequence is its log-probability.
    tokens, scores = beam_search(params, src[0], length=S, beam_width=3)
    tokens, scores = np.asarray(tokens), np.asarray(scores)
    assert np.all(np.diff(scores) <= 0)
    assert len({tuple(t) for t in tokens.tolist()}) == 3  # distinct beams
    greedy = np.asarray(_greedy_all(params, src))[0]
    log_p = np.array([-S * float(loss(params, src[0], t)) for t in [*tokens, greedy]])
    np.testing.assert_allclose(scores, log_p[:3], rtol=1e-4, atol=1e-5)
    assert scores[0] >= log_p[3] - 1e-5


def test_teacher_forced_loss_matches_a_python_loop_and_optax():
    params = init(jax.random.key(2), **PAGE)
    src, tgt = np.array([3, 1, 4, 1, 5], np.int32), np.array([9, 2, 6, 5, 3, 5], np.int32)  # T != S

    @jax.jit  # the loop unrolls while tracing: one compiled program instead of one call per step
    def reference(params, src, tgt):
        h0 = gru.apply(params["encoder"], params["embed_src"][src])[-1]
        h, prev, logits = h0, V, []
        for t in range(tgt.shape[0]):  # feed the true previous token
            h, lg = decoder_step(params, h, prev)
            logits.append(lg)
            prev = tgt[t]
        return optax.softmax_cross_entropy_with_integer_labels(jnp.stack(logits), tgt).mean(), h0

    expected, h0 = reference(params, src, tgt)
    np.testing.assert_allclose(loss(params, src, tgt), expected, rtol=1e-5)
    np.testing.assert_allclose(encode(params, src), h0)


def test_inline_adam_matches_optax():
    rng = np.random.default_rng(3)  # NumPy draws: jax.random.normal would compile a sampler per shape
    params = {"W": rng.standard_normal((3, 5)).astype(np.float32), "b": rng.standard_normal(7).astype(np.float32)}
    opt = optax.adam(0.01)
    zeros = jax.tree.map(np.zeros_like, params)

    @jax.jit
    def both(got, state, ref, ref_state, grads):
        got, state = _adam_update(grads, state, got, learning_rate=0.01)
        updates, ref_state = opt.update(grads, ref_state, ref)
        return got, state, optax.apply_updates(ref, updates), ref_state

    got, state, ref, ref_state = params, (zeros, zeros, np.zeros((), np.float32)), params, opt.init(params)
    for _ in range(3):
        grads = {"W": rng.standard_normal((3, 5)).astype(np.float32), "b": np.linspace(-1.0, 1.0, 7, dtype=np.float32)}
        got, state, ref, ref_state = both(got, state, ref, ref_state, grads)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bad_input_raises_clear_errors():
    params = init(jax.random.key(6), **PAGE)
    with pytest.raises(ValueError, match=r"src must have 1 axes \(S,\), got shape \(2, 5\)"):
        encode(params, np.zeros((2, 5), np.int32))
    with pytest.raises(TypeError, match=r"tgt must be an integer array, got dtype float32"):
        loss(params, np.zeros(5, np.int32), np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"beam_width must be between 1 and the vocabulary size 10, got 11"):
        beam_search(params, np.zeros(5, np.int32), length=5, beam_width=11)
    with pytest.raises(ValueError, match=r"src and tgt must have shapes \(N, S\) and \(N, T\)"):
        train(params, jax.random.key(0), np.zeros((4, 5), np.int32), np.zeros((3, 5), np.int32),
              steps=1, batch_size=2, learning_rate=0.1)


def test_tokens_out_of_range_nan_parameters_and_bad_sizes_raise():
    params = init(jax.random.key(7), **PAGE)
    src = np.array([1, 2, 3, 4, 0], np.int32)
    with pytest.raises(ValueError, match=r"src must lie in \[0, 10\), got values from 0 to 10"):
        encode(params, np.where(np.arange(5) == 0, 10, src))
    with pytest.raises(ValueError, match=r"tgt must lie in \[0, 10\), got values from -1 to 4"):
        loss(params, src, np.where(np.arange(5) == 0, -1, src))
    W_o = np.array(params["W_o"])
    W_o[0, 0] = np.nan
    nan_params = params | {"W_o": W_o}
    with pytest.raises(ValueError, match=r"params\['W_o'\] holds NaN"):
        greedy_decode(nan_params, src, length=5)
    with pytest.raises(ValueError, match=r"params\['W_o'\] holds NaN"):
        beam_search(nan_params, src, length=5, beam_width=2)
    with pytest.raises(ValueError, match=r"params\['W_o'\] must have shape \(64, 10\)"):
        loss(params | {"W_o": np.asarray(params["W_o"])[:, :1]}, src, src)
    with pytest.raises(TypeError, match=r"length must be an int"):
        greedy_decode(params, src, length=5.0)
    with pytest.raises(TypeError, match=r"beam_width must be an int"):
        beam_search(params, src, length=5, beam_width=2.0)
    with pytest.raises(ValueError, match=r"hidden must be at least 1"):
        init(jax.random.key(8), vocab=V, embed=4, hidden=-1)
    with pytest.raises(TypeError, match=r"N must be an int"):
        reversal_data(jax.random.key(9), 4.0, length=5, vocab=V)
    assert float(loss(params, src.tolist(), src[::-1].tolist())) == pytest.approx(float(loss(params, src, src[::-1])))
