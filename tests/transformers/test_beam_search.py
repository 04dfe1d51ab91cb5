import itertools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.transformers import gpt
from cookbook.transformers.beam_search import beam_search, length_penalty

V, N = 3, 4
# The searches and the references read logits_fn on sequences of P + N = 6 tokens wherever they can
# (a prompt of 2 tokens), so that it compiles for one length; inputs and references are NumPy.


def _draw(path, leaf, rng):
    """A leaf of init's shape, about three times init's scale: norm scales 3, biases 0, embeddings
    N(0, 0.06^2), weight matrices N(0, 1)."""
    name = jax.tree_util.keystr(path)
    if name.endswith("['scale']"):
        return np.full(leaf.shape, 3.0, np.float32)
    if name.endswith("['bias']") or name.endswith("['b']") or "['b_" in name:
        return np.zeros(leaf.shape, np.float32)
    std = 0.06 if name in ("['tok']", "['pos']['P']") else 1.0
    return (std * rng.standard_normal(leaf.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def logits_fn():
    # A small random GPT over three tokens, sharp enough that the choices differ. Drawn in NumPy in
    # init's shapes (read with jax.eval_shape), rather than compiling init's draws.
    shapes = jax.eval_shape(lambda: gpt.init(jax.random.key(0), vocab_size=V, max_len=8, d_model=8, num_heads=2,
                                             num_layers=1, d_ff=16))
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map_with_path(lambda path, leaf: _draw(path, leaf, rng), shapes)
    return jax.jit(lambda tokens: gpt.apply(params, tokens))


def sequence_score(logits_fn, prompt, continuation, eos_id):
    """(total log-probability, length) of a continuation, or None when it continues past eos."""
    seq = np.concatenate([prompt, np.asarray(continuation, np.int32)])
    logits = np.asarray(logits_fn(seq), np.float64)
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))  # log-softmax, in NumPy
    total, P = 0.0, len(prompt)
    for i, token in enumerate(continuation):
        total += log_probs[P - 1 + i, token]
        if eos_id is not None and token == eos_id:
            return (total, i + 1) if all(t == eos_id for t in continuation[i:]) else None
    return total, len(continuation)


def test_width_one_is_greedy_decoding(logits_fn):
    prompt = np.array([1, 0], np.int32)
    tokens, scores = map(np.asarray, beam_search(logits_fn, prompt, beam_width=1, num_new=N))
    seq = prompt.tolist()
    for _ in range(N):
        padded = np.array(seq + [0] * (len(prompt) + N - len(seq)), np.int32)
        seq.append(int(np.argmax(np.asarray(logits_fn(padded))[len(seq) - 1])))
    assert np.asarray(tokens[0]).tolist() == seq[len(prompt):]
    np.testing.assert_allclose(float(scores[0]), sequence_score(logits_fn, prompt, seq[2:], None)[0], rtol=1e-5)


@pytest.mark.parametrize("eos_id, alpha", [(None, 0.0), (2, 0.0), (2, 1.0)])
def test_a_beam_as_wide_as_the_search_space_is_exhaustive_search(logits_fn, eos_id, alpha):
    prompt = np.array([0, 1], np.int32)
    tokens, scores = map(np.asarray, beam_search(logits_fn, prompt, beam_width=V**N, num_new=N, eos_id=eos_id,
                                                 alpha=alpha))
    scored = {}
    for continuation in itertools.product(range(V), repeat=N):
        result = sequence_score(logits_fn, prompt, continuation, eos_id)
        if result is not None:
            total, length = result
            scored[continuation] = total / ((5 + length) / 6) ** alpha
    best = max(scored, key=scored.get)
    assert tuple(np.asarray(tokens[0]).tolist()) == best
    # Every valid sequence is in the beam, ranked as the exhaustive ranking ranks it.
    ranked = sorted(scored.values(), reverse=True)
    valid = np.isfinite(np.asarray(scores))
    assert valid.sum() == len(scored)
    lengths = [sequence_score(logits_fn, prompt, tuple(t.tolist()), eos_id)[1] for t in np.asarray(tokens)[: len(scored)]]
    ours = np.asarray(scores[: len(scored)]) / length_penalty(np.asarray(lengths, np.float64), alpha)
    np.testing.assert_allclose(ours, ranked, rtol=1e-4, atol=1e-5)


def test_length_penalty_and_jit(logits_fn):
    np.testing.assert_allclose(np.asarray(length_penalty(np.array([1.0, 7.0], np.float32), 1.0)), [1.0, 2.0])
    assert float(length_penalty(np.float32(9.0), 0.0)) == 1.0
    # The exhaustive test's search with eos (alpha is traced: its program, already compiled), against
    # the same search compiled whole under jax.jit.
    prompt, config = np.array([0, 1], np.int32), dict(beam_width=V**N, num_new=N, eos_id=2)
    eager = beam_search(logits_fn, prompt, **config, alpha=0.6)
    jitted = jax.jit(partial(beam_search, logits_fn, **config, alpha=0.6))(prompt)
    np.testing.assert_array_equal(np.asarray(eager[0]), np.asarray(jitted[0]))
    np.testing.assert_allclose(np.asarray(eager[1]), np.asarray(jitted[1]), rtol=1e-6)
    # The docstring: one program per logits_fn object, whatever alpha; another object, another program.
    from cookbook.transformers import beam_search as module

    before = module._beam_search._cache_size()
    beam_search(logits_fn, prompt, **config, alpha=0.2)
    assert module._beam_search._cache_size() == before
    beam_search(lambda t: logits_fn(t), prompt, **config, alpha=0.6)
    assert module._beam_search._cache_size() == before + 1


def test_bad_input_raises(logits_fn):
    prompt = np.array([0], np.int32)
    with pytest.raises(TypeError, match=r"prompt must be an integer array"):
        beam_search(logits_fn, prompt.astype(np.float32), beam_width=2, num_new=2)
    with pytest.raises(ValueError, match=r"beam_width must be"):
        beam_search(logits_fn, prompt, beam_width=0, num_new=2)
    with pytest.raises(ValueError, match=r"eos_id must be a token in \[0, 3\), got 3"):
        beam_search(logits_fn, prompt, beam_width=2, num_new=2, eos_id=3)
    with pytest.raises(ValueError, match=r"prompt must lie in \[0, 3\), got values from 0 to 5"):
        beam_search(logits_fn, np.array([0, 5], np.int32), beam_width=2, num_new=2)
    with pytest.raises(ValueError, match=r"logits_fn must return \(L, V\) logits for a sequence of L = 3 tokens, got shape \(3,\)"):
        beam_search(lambda t: jnp.zeros(t.shape[0]), prompt, beam_width=2, num_new=2)
    with pytest.raises(ValueError, match=r"alpha must be a non-negative number, got -1"):
        beam_search(logits_fn, prompt, beam_width=2, num_new=2, alpha=-1)
    with pytest.raises(TypeError, match=r"logits_fn must be a function"):
        beam_search(None, prompt, beam_width=2, num_new=2)
