import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from cookbook.recurrent.gru import apply, cell, init


def to_flax(params):
    """Our fused layout -> flax.linen.GRUCell's six dense layers.

    Column block k (k = 0, 1, 2 for r, z, n) of W_x and b_x is the kernel and bias of flax's 'i<gate>',
    block k of W_h the kernel of 'h<gate>' (which has no bias except 'hn', whose bias is b_hn).
    """
    W_x, W_h, b_x = (np.split(np.asarray(params[k]), 3, axis=-1) for k in ("W_x", "W_h", "b_x"))
    out = {}
    for k, gate in enumerate("rzn"):
        out["i" + gate] = {"kernel": W_x[k], "bias": b_x[k]}
        out["h" + gate] = {"kernel": W_h[k]}
    out["hn"]["bias"] = params["b_hn"]
    return {"params": {"cell": out}}


def normal(seed, *shape):
    """Test inputs drawn with NumPy: jax.random.normal would compile a sampler for every shape."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _random_params(seed, D, H):
    params = init(jax.random.key(seed), D, H)
    params["b_x"] = normal(seed, 3 * H)
    params["b_hn"] = normal(seed + 100, H)
    return params


@pytest.mark.parametrize("T, D, H", [(11, 3, 5)])
def test_matches_flax_gru_cell_over_a_sequence(T, D, H):
    params = _random_params(T, D, H)
    xs = normal(T + 1, 2, T, D)
    layer = nn.RNN(nn.GRUCell(features=H))
    # Our layout covers every parameter flax creates, with the same shapes (read without running init).
    flax_shapes = jax.tree.map(jnp.shape, jax.eval_shape(layer.init, jax.random.key(0), xs))
    assert jax.tree.map(jnp.shape, to_flax(params)) == flax_shapes
    with jax.numpy_rank_promotion("allow"):
        expected = jax.jit(layer.apply)(to_flax(params), xs)  # (2, T, H), one program rather than op by op
    np.testing.assert_allclose(jax.vmap(apply, in_axes=(None, 0))(params, xs), expected, rtol=1e-5, atol=1e-5)


def test_scan_matches_a_python_loop_over_cells():
    # The page example's sizes (T, D, H) = (7, 3, 5).
    params = _random_params(1, 3, 5)
    xs = normal(2, 7, 3)
    h0 = np.tanh(normal(3, 5))
    h, hs = h0, []
    for x in xs:
        h = cell(params, h, x)
        hs.append(h)
    np.testing.assert_allclose(apply(params, xs, h0), np.stack(hs), rtol=1e-6, atol=1e-6)


def test_one_step_by_hand():
    # D = H = 1, all weights 1, biases 0: r = z = sigmoid(x + h), n = tanh(x + r h).
    params = {"W_x": np.ones((1, 3), np.float32), "W_h": np.ones((1, 3), np.float32),
              "b_x": np.zeros(3, np.float32), "b_hn": np.zeros(1, np.float32)}
    x, h = 0.5, -0.25
    s = 1 / (1 + np.exp(-(x + h)))
    n = np.tanh(x + s * h)
    # The new state, 0.0104, is the difference of (1 - s) n = 0.151 and -s h = 0.141, each rounded to
    # float32 (a unit in the last place is 1.5e-8): the atol is two of those. The other convention,
    # z n + (1 - z) h, would give 0.084.
    np.testing.assert_allclose(cell(params, np.array([h], np.float32), np.array([x], np.float32)),
                               [(1 - s) * n + s * h], rtol=1e-6, atol=3e-8)


def test_update_gate_near_one_copies_the_state_and_its_gradient():
    params = _random_params(2, 3, 5)
    params["b_x"][5:10] = 1e4  # z = 1
    xs = normal(3, 11, 3)
    h0 = np.linspace(-0.9, 0.9, 5, dtype=np.float32)
    last = lambda h0: apply(params, xs, h0)[-1]
    h_T, jacobian = jax.jit(lambda h0: (last(h0), jax.jacrev(last)(h0)))(h0)  # one program
    np.testing.assert_allclose(h_T, h0, rtol=1e-6)
    np.testing.assert_allclose(jacobian, np.eye(5), atol=1e-6)


def test_state_stays_in_the_unit_interval_for_huge_inputs():
    params = _random_params(4, 3, 5)
    hs = apply(params, np.full((7, 3), -1e30, np.float32))
    assert np.all(np.isfinite(hs)) and np.all(np.abs(hs) <= 1.0)


def test_gradients_pass_check_grads():
    params = {k: np.float64(a) for k, a in _random_params(5, 3, 5).items()}  # float32 draws, widened
    with jax.enable_x64(True):
        xs = np.float64(normal(6, 7, 3))
        h0 = 0.5 * np.float64(normal(7, 5))
        loss = jax.jit(lambda p, xs, h0: jnp.sum(jnp.sin(apply(p, xs, h0))))
        check_grads(loss, (params, xs, h0), order=1, modes=("rev", "fwd"))


def test_bad_shapes_raise_clear_errors():
    params = init(jax.random.key(6), 3, 5)
    with pytest.raises(ValueError, match=r"xs must have shape \(T, D\) with D = 3, got shape \(2, 7, 3\)"):
        apply(params, np.ones((2, 7, 3), np.float32))
    with pytest.raises(ValueError, match=r"h must have shape \(H,\) = \(5,\), got shape \(3,\)"):
        apply(params, np.ones((7, 3), np.float32), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"x must have shape \(D,\) = \(3,\)"):
        cell(params, np.zeros(5, np.float32), np.ones(5, np.float32))


def test_parameter_count_against_the_lstm():
    # The page: 140 parameters against the LSTM's 180 for D = 3, H = 5 (22% fewer); a quarter
    # fewer weights once the biases are left out.
    from cookbook.recurrent import lstm

    gru_p, lstm_p = init(jax.random.key(30), 3, 5), lstm.init(jax.random.key(30), 3, 5)
    n_gru, n_lstm = (sum(p.size for p in jax.tree.leaves(t)) for t in (gru_p, lstm_p))
    assert (n_gru, n_lstm) == (140, 180)
    assert round(100 * (1 - n_gru / n_lstm)) == 22
    assert gru_p["W_x"].size + gru_p["W_h"].size == 0.75 * (lstm_p["W_x"].size + lstm_p["W_h"].size)


@pytest.mark.parametrize("D, H, error", [(3, -5, ValueError), (0, 5, ValueError), (3, 5.0, TypeError)])
def test_init_rejects_bad_sizes(D, H, error):
    with pytest.raises(error, match=r"(D|H) must be"):
        init(jax.random.key(31), D, H)


def test_bad_arrays_raise_clear_errors_and_lists_are_accepted():
    params = init(jax.random.key(32), 3, 5)
    xs = normal(33, 7, 3)
    with pytest.raises(TypeError, match=r"xs must be a floating-point array"):
        apply(params, xs.astype(np.int32))
    with pytest.raises(TypeError, match=r"x must be a floating-point array"):
        cell(params, np.zeros(5, np.float32), np.ones(3, np.int32))
    with pytest.raises(ValueError, match=r"params\['b_hn'\] must have shape \(5,\)"):
        apply(params | {"b_hn": params["b_hn"][:1]}, xs)
    np.testing.assert_allclose(apply(params, xs.tolist()), apply(params, xs), rtol=1e-6)
