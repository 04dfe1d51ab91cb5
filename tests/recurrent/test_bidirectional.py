import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.recurrent import gru, lstm, rnn
from cookbook.recurrent.bidirectional import bidirectional, init, stacked

MODULES = {"rnn": rnn, "lstm": lstm, "gru": gru}


def _python_loop(cell, params, xs, carry):
    """Reference: one direction as a Python loop over the cell; the output is the carry's h."""
    hs = []
    for x in xs:
        carry = cell(params, carry, x)
        hs.append(carry[1] if isinstance(carry, tuple) else carry)
    return np.stack(hs)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_both_directions_match_python_loops_for_every_cell(name):
    module = MODULES[name]
    k_p, k_x = jax.random.split(jax.random.key(0))
    params = init(k_p, module.init, 3, 5)
    xs = jax.random.normal(k_x, (7, 3))
    zeros = np.zeros(5, np.float32)
    carry = (zeros, zeros) if name == "lstm" else zeros
    ys = bidirectional(module.apply, params, xs)  # its compiled core (the page's program, for the GRU)
    assert ys.shape == (7, 10)
    ys, xs = np.asarray(ys), np.asarray(xs)  # sliced and reversed in NumPy: no eager slices compiled
    cell = jax.jit(module.cell)
    np.testing.assert_allclose(ys[:, :5], _python_loop(cell, params["forward"], xs, carry), rtol=1e-5, atol=1e-6)
    backward = _python_loop(cell, params["backward"], xs[::-1], carry)[::-1]
    np.testing.assert_allclose(ys[:, 5:], backward, rtol=1e-5, atol=1e-6)


def test_matches_flax_bidirectional_gru():
    k_p, k_x = jax.random.split(jax.random.key(1))
    params = init(k_p, gru.init, 3, 5)
    for d in params.values():  # in NumPy (float32 as before): no eager add or subtract compiled
        d["b_x"] = np.asarray(d["b_x"]) + np.float32(0.3)
        d["b_hn"] = np.asarray(d["b_hn"]) - np.float32(0.2)
    xs = np.random.default_rng(1).standard_normal((2, 11, 3)).astype(np.float32)  # NumPy: no sampler compiled

    def to_flax(p):  # the same mapping as in test_gru.py
        W_x, W_h, b_x = (np.split(np.asarray(p[k]), 3, axis=-1) for k in ("W_x", "W_h", "b_x"))
        out = {}
        for k, gate in enumerate("rzn"):
            out["i" + gate] = {"kernel": W_x[k], "bias": b_x[k]}
            out["h" + gate] = {"kernel": W_h[k]}
        out["hn"]["bias"] = p["b_hn"]
        return {"cell": out}

    layer = nn.Bidirectional(nn.RNN(nn.GRUCell(5)), nn.RNN(nn.GRUCell(5)))
    variables = {"params": {"forward_rnn": to_flax(params["forward"]), "backward_rnn": to_flax(params["backward"])}}
    # Shapes only (nothing compiled), and flax's layer as one compiled program, not op by op.
    shapes = jax.eval_shape(layer.init, jax.random.key(2), xs)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, shapes)
    with jax.numpy_rank_promotion("allow"):
        expected = jax.jit(layer.apply)(variables, xs)  # (2, 11, 10)
    got = jax.vmap(bidirectional, in_axes=(None, None, 0))(gru.apply, params, xs)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_each_direction_sees_only_its_side_of_the_sequence():
    k_p, k_x = jax.random.split(jax.random.key(3))
    params = init(k_p, rnn.init, 3, 5)
    xs = jax.random.normal(k_x, (7, 3))
    t = 3
    jac = np.asarray(jax.jit(jax.jacrev(lambda xs: bidirectional(rnn.apply, params, xs)[t]))(xs))  # (2H, T, D)
    forward, backward = np.abs(jac[:5]).sum(axis=(0, 2)), np.abs(jac[5:]).sum(axis=(0, 2))
    assert np.all(forward[t + 1:] == 0) and np.all(forward[: t + 1] > 0)
    assert np.all(backward[:t] == 0) and np.all(backward[t:] > 0)


def test_stack_is_the_composition_of_its_layers():
    k_1, k_2, k_3, k_x = jax.random.split(jax.random.key(4), 4)
    layers = [init(k_1, gru.init, 3, 5), gru.init(k_2, 10, 7), init(k_3, gru.init, 7, 11)]
    xs = jax.random.normal(k_x, (7, 3))
    ys = stacked(gru.apply, layers, xs)
    expected = bidirectional(gru.apply, layers[2], gru.apply(layers[1], bidirectional(gru.apply, layers[0], xs)))
    assert ys.shape == (7, 22)
    np.testing.assert_allclose(ys, expected, rtol=1e-5, atol=1e-6)


def test_length_one_sequence_and_vmap():
    params = init(jax.random.key(5), lstm.init, 3, 5)
    xs = np.random.default_rng(6).standard_normal((4, 1, 3)).astype(np.float32)
    ys = jax.vmap(bidirectional, in_axes=(None, None, 0))(lstm.apply, params, xs)
    assert ys.shape == (4, 1, 10)
    # With one step, both directions read the same single input from a zero state.
    ys = np.asarray(ys)  # indexed in NumPy: no eager slices compiled
    np.testing.assert_allclose(ys[1, 0, :5], np.asarray(lstm.apply(params["forward"], xs[1]))[0], rtol=1e-6)
    np.testing.assert_allclose(ys[1, 0, 5:], np.asarray(lstm.apply(params["backward"], xs[1]))[0], rtol=1e-6)


def test_bad_input_raises_clear_errors():
    params = init(jax.random.key(7), rnn.init, 3, 5)
    with pytest.raises(ValueError, match=r"xs must have 2 axes \(T, D\), got shape \(3,\)"):
        bidirectional(rnn.apply, params, np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"params must have the keys 'forward' and 'backward', got \['W_h'"):
        bidirectional(rnn.apply, params["forward"], np.ones((7, 3), np.float32))
    with pytest.raises(ValueError, match=r"at least one layer"):
        stacked(rnn.apply, [], np.ones((7, 3), np.float32))


def test_integer_arrays_raise_and_lists_are_accepted():
    params = init(jax.random.key(8), gru.init, 3, 5)
    xs = np.random.default_rng(9).standard_normal((7, 3)).astype(np.float32)
    for fn, p in ((bidirectional, params), (stacked, [params])):
        with pytest.raises(TypeError, match=r"xs must be a floating-point array"):
            fn(gru.apply, p, xs.astype(np.int32))
        np.testing.assert_allclose(fn(gru.apply, p, xs.tolist()), fn(gru.apply, p, xs), rtol=1e-6)
    bad = {"forward": params["forward"],
           "backward": params["backward"] | {"W_h": np.asarray(params["backward"]["W_h"])[:, :1]}}
    with pytest.raises(ValueError, match=r"params\['W_h'\] must have shape"):
        bidirectional(gru.apply, bad, xs)
