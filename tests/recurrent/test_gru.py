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
    W_x, W_h, b_x = (jnp.split(params[k], 3, axis=-1) for k in ("W_x", "W_h", "b_x"))
    out = {}
    for k, gate in enumerate("rzn"):
        out["i" + gate] = {"kernel": W_x[k], "bias": b_x[k]}
        out["h" + gate] = {"kernel": W_h[k]}
    out["hn"]["bias"] = params["b_hn"]
    return {"params": {"cell": out}}


def _random_params(key, D, H):
    k_p, k_b, k_n = jax.random.split(key, 3)
    params = init(k_p, D, H)
    params["b_x"] = jax.random.normal(k_b, (3 * H,))
    params["b_hn"] = jax.random.normal(k_n, (H,))
    return params


@pytest.mark.parametrize("T, D, H", [(11, 3, 5)])
def test_matches_flax_gru_cell_over_a_sequence(T, D, H):
    k_p, k_x = jax.random.split(jax.random.key(T))
    params = _random_params(k_p, D, H)
    xs = jax.random.normal(k_x, (2, T, D))
    layer = nn.RNN(nn.GRUCell(features=H))
    assert jax.tree.map(jnp.shape, to_flax(params)) == jax.tree.map(jnp.shape, layer.init(jax.random.key(0), xs))
    with jax.numpy_rank_promotion("allow"):
        expected = layer.apply(to_flax(params), xs)  # (2, T, H)
    np.testing.assert_allclose(jax.vmap(apply, in_axes=(None, 0))(params, xs), expected, rtol=1e-5, atol=1e-5)


def test_scan_matches_a_python_loop_over_cells():
    k_p, k_x, k_h = jax.random.split(jax.random.key(1), 3)
    params = _random_params(k_p, 5, 7)
    xs = jax.random.normal(k_x, (11, 5))
    h0 = jnp.tanh(jax.random.normal(k_h, (7,)))
    step, h, hs = jax.jit(cell), h0, []
    for x in xs:
        h = step(params, h, x)
        hs.append(h)
    np.testing.assert_allclose(apply(params, xs, h0), jnp.stack(hs), rtol=1e-6, atol=1e-6)


def test_one_step_by_hand():
    # D = H = 1, all weights 1, biases 0: r = z = sigmoid(x + h), n = tanh(x + r h).
    params = {"W_x": jnp.ones((1, 3)), "W_h": jnp.ones((1, 3)), "b_x": jnp.zeros(3), "b_hn": jnp.zeros(1)}
    x, h = 0.5, -0.25
    s = 1 / (1 + np.exp(-(x + h)))
    n = np.tanh(x + s * h)
    np.testing.assert_allclose(cell(params, jnp.array([h]), jnp.array([x])), [(1 - s) * n + s * h], rtol=1e-6)


def test_update_gate_near_one_copies_the_state_and_its_gradient():
    params = _random_params(jax.random.key(2), 3, 5)
    params["b_x"] = params["b_x"].at[5:10].set(1e4)  # z = 1
    xs = jax.random.normal(jax.random.key(3), (11, 3))
    h0 = jnp.linspace(-0.9, 0.9, 5)
    last = lambda h0: apply(params, xs, h0)[-1]
    np.testing.assert_allclose(last(h0), h0, rtol=1e-6)
    np.testing.assert_allclose(jax.jacrev(last)(h0), np.eye(5), atol=1e-6)


def test_state_stays_in_the_unit_interval_for_huge_inputs():
    params = _random_params(jax.random.key(4), 3, 5)
    hs = apply(params, jnp.full((7, 3), -1e30))
    assert np.all(np.isfinite(hs)) and np.all(np.abs(hs) <= 1.0)


def test_gradients_pass_check_grads():
    k_p, k_x, k_h = jax.random.split(jax.random.key(5), 3)
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: a.astype(jnp.float64), _random_params(k_p, 3, 5))
        xs = jax.random.normal(k_x, (7, 3), jnp.float64)
        h0 = 0.5 * jax.random.normal(k_h, (5,), jnp.float64)
        loss = jax.jit(lambda p, xs, h0: jnp.sum(jnp.sin(apply(p, xs, h0))))
        check_grads(loss, (params, xs, h0), order=1, modes=("rev", "fwd"))


def test_bad_shapes_raise_clear_errors():
    params = init(jax.random.key(6), 3, 5)
    with pytest.raises(ValueError, match=r"xs must have shape \(T, D\) with D = 3, got shape \(2, 7, 3\)"):
        apply(params, jnp.ones((2, 7, 3)))
    with pytest.raises(ValueError, match=r"h must have shape \(H,\) = \(5,\), got shape \(3,\)"):
        apply(params, jnp.ones((7, 3)), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"x must have shape \(D,\) = \(3,\)"):
        cell(params, jnp.zeros(5), jnp.ones(5))


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
    xs = jax.random.normal(jax.random.key(33), (7, 3))
    with pytest.raises(TypeError, match=r"xs must be a floating-point array"):
        apply(params, xs.astype(jnp.int32))
    with pytest.raises(TypeError, match=r"x must be a floating-point array"):
        cell(params, jnp.zeros(5), jnp.ones(3, jnp.int32))
    with pytest.raises(ValueError, match=r"params\['b_hn'\] must have shape \(5,\)"):
        apply(params | {"b_hn": params["b_hn"][:1]}, xs)
    np.testing.assert_allclose(apply(params, np.asarray(xs).tolist()), apply(params, xs), rtol=1e-6)
