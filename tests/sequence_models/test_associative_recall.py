import functools

import jax
import numpy as np
import pytest

from cookbook.sequence_models import associative_recall as ar

P, N_KEYS, N_VALUES = 4, 7, 5  # distinct sizes: a transposed axis cannot pass
L, M, V = 13, 3, 7


LEARN = functools.partial(ar.mqar, n_pairs=P, n_keys=N_KEYS, n_values=N_VALUES)  # shared: one compiled sampler


@pytest.fixture(scope="module")
def mqar_batch():
    tokens, targets = ar.sample(LEARN, jax.random.key(0), 2400)  # the shape the training run draws
    return np.asarray(tokens)[:200], np.asarray(targets)[:200]


@pytest.fixture(scope="module")
def copying_batch():
    task = functools.partial(ar.selective_copying, length=L, n_data=M, vocab=V)
    return tuple(np.asarray(a) for a in ar.sample(task, jax.random.key(1), 200))


def test_mqar_has_the_structure_of_the_equation(mqar_batch):
    tokens, targets = mqar_batch
    assert tokens.shape == targets.shape == (200, 3 * P) and tokens.dtype == targets.dtype == np.int32
    for x, y in zip(tokens, targets):
        keys, values, queries = x[0:2 * P:2], x[1:2 * P:2], x[2 * P:]
        assert len(set(keys.tolist())) == P and keys.min() >= 1 and keys.max() <= N_KEYS  # distinct keys
        assert values.min() >= N_KEYS + 1 and values.max() <= N_KEYS + N_VALUES
        assert sorted(queries.tolist()) == sorted(keys.tolist())  # every key asked once
        answer = dict(zip(keys.tolist(), values.tolist()))
        assert y[:2 * P].tolist() == [-1] * (2 * P)
        assert y[2 * P:].tolist() == [answer[q] for q in queries.tolist()]
    # The order of the queries and the values vary from sequence to sequence.
    assert len({tuple(x[2 * P:] - 0) for x in tokens}) > 150
    assert len(np.unique(tokens[:, 1:2 * P:2])) == N_VALUES


def test_selective_copying_has_the_structure_of_the_equation(copying_batch):
    tokens, targets = copying_batch
    assert tokens.shape == targets.shape == (200, L + M)
    assert (tokens[:, L:] == V + 1).all()  # the markers
    assert (targets[:, :L] == -1).all()
    context = tokens[:, :L]
    assert ((context > 0).sum(axis=1) == M).all()  # M data tokens among noise 0
    assert context.max() <= V
    for x, y in zip(context, targets):
        assert x[x > 0].tolist() == y[L:].tolist()  # the data, in order
    # The positions vary per sequence, which is what defeats a fixed filter; every position is used.
    positions = {tuple(np.flatnonzero(x)) for x in context}
    assert len(positions) > 100 and (context > 0).any(axis=0).all()


def test_state_sizes():
    D, T = 8, 24
    expected = {"attention": 2 * T * D, "lru": 2 * D, "s4d": 2 * D * 4, "mamba": 2 * D * 4, "mamba2": 8 * D,
                "retnet": D * D // 2, "rwkv": 2 * D, "delta_rule": D * D, "mlstm": D * D + D, "hyena": T * D}
    assert {m: ar.state_size(m, D=D, T=T) for m in ar.MIXERS} == expected


@pytest.fixture(scope="module")
def trained():
    params, accuracy = ar.train(jax.random.key(3), "delta_rule", LEARN, vocab=1 + N_KEYS + N_VALUES, D=16,
                                steps=150, batch=16, learning_rate=1e-2, layers=1, held_out=2400)
    return LEARN, params, float(accuracy)


def test_the_delta_rule_learns_mqar_and_the_model_is_causal(trained, mqar_batch):
    # One delta-rule layer of width 16 (a 16 x 16 state for 4 pairs), 150 Adam steps of 16 new
    # sequences: held-out query accuracy measured 0.993 on 2400 sequences (chance is 1/5).
    task, params, accuracy = trained
    assert accuracy >= 0.95
    tokens = np.asarray(mqar_batch[0][0])
    changed = tokens.copy()
    changed[7:] = 1  # a later change leaves the earlier logits alone
    # apply checks its input and then runs one compiled core: no jax.jit around it.
    logits, logits_changed = (np.asarray(ar.apply(params, t, mixer="delta_rule")) for t in (tokens, changed))
    np.testing.assert_allclose(logits_changed[:7], logits[:7], rtol=1e-5, atol=1e-5)
    assert not np.allclose(logits_changed[7:], logits[7:])


def test_bad_input_raises_clear_errors(trained):
    _, params, _ = trained
    with pytest.raises(ValueError, match="n_pairs must not exceed n_keys"):
        ar.mqar(jax.random.key(0), n_pairs=8, n_keys=7, n_values=5)
    with pytest.raises(ValueError, match="n_data must not exceed length"):
        ar.selective_copying(jax.random.key(0), length=3, n_data=4, vocab=5)
    with pytest.raises(TypeError, match="n_values must be an int"):
        ar.mqar(jax.random.key(0), n_pairs=2, n_keys=7, n_values=5.0)
    with pytest.raises(ValueError, match="mixer must be one of"):
        ar.init(jax.random.key(0), "transformer", vocab=5, D=4)
    with pytest.raises(ValueError, match="D must be even"):
        ar.init(jax.random.key(0), "mamba", vocab=5, D=5)
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 13\)"):
        ar.apply(params, np.array([1, 2, 13], np.int32), mixer="delta_rule")
    with pytest.raises(TypeError, match="tokens must be an integer array"):
        ar.apply(params, np.array([1.0, 2.0], np.float32), mixer="delta_rule")
    with pytest.raises(ValueError, match="tokens must have 1"):
        ar.apply(params, np.ones((2, 3), np.int32), mixer="delta_rule")
