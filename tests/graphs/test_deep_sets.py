import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cookbook.graphs.deep_sets import (deep_sets_apply, deep_sets_init, mab, set_transformer_apply,
                                       set_transformer_init)

N, D, HIDDEN, OUT = 5, 3, 7, 2
D_MODEL, HEADS, SEEDS = 8, 2, 3
# Both models check their inputs and then run one compiled program per shape: the tests call them as
# they are, with NumPy inputs, so that the jit checks and the tests share those programs. The sizes are
# the page's example's (a set of 5 elements of 3 features), so that the example's programs serve here too.
deep_sets_jit = deep_sets_apply
set_transformer_jit = set_transformer_apply


def numpy_params(init, seed, *sizes, **kwargs):
    """Parameters shaped as ``init`` makes them, every leaf drawn with NumPy (biases and layer-norm
    parameters too, so that each is exercised), without a random kernel to compile. The leaves stay
    NumPy arrays: the models take them as they are (jnp.asarray would compile a copy for each shape)."""
    shapes = jax.eval_shape(lambda: init(jax.random.key(0), *sizes, **kwargs))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (rng.standard_normal(s.shape) / np.sqrt(s.shape[0])).astype(np.float32), shapes)


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D)).astype(np.float32)
    return (x, numpy_params(deep_sets_init, 1, D, HIDDEN, OUT),
            numpy_params(set_transformer_init, 2, D, D_MODEL, HEADS, OUT, SEEDS))


# ---- Against float64 loops -------------------------------------------------------------------------

def _mlp64(layers, x):
    for layer in layers[:-1]:
        x = np.maximum(x @ np.float64(layer["W"]) + np.float64(layer["b"]), 0)
    return x @ np.float64(layers[-1]["W"]) + np.float64(layers[-1]["b"])


def _layer_norm64(x, p, eps=1e-6):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * np.float64(p["scale"]) + np.float64(p["bias"])


def _mab64(p, x, y):
    """The block as the paper writes it, one head and one row at a time."""
    d, heads, e = p["W_q"].shape
    W = {k: np.float64(p[k]) for k in ("W_q", "W_k", "W_v", "W_o")}
    out = np.zeros((len(x), d))
    for h in range(heads):
        for i in range(len(x)):
            q = x[i] @ W["W_q"][:, h]
            scores = np.array([q @ (y[j] @ W["W_k"][:, h]) for j in range(len(y))]) / np.sqrt(e)
            w = np.exp(scores - scores.max())
            w /= w.sum()
            out[i] += sum(w[j] * (y[j] @ W["W_v"][:, h]) for j in range(len(y))) @ W["W_o"][h]
    H = _layer_norm64(x + out, p["ln1"])
    return _layer_norm64(H + _mlp64(p["ff"], H), p["ln2"])


def test_deep_sets_matches_the_sum_decomposition_in_float64(setup):
    x, params, _ = setup
    want = _mlp64(params["rho"], _mlp64(params["phi"], np.float64(x)).sum(0)[None])[0]
    np.testing.assert_allclose(deep_sets_jit(params, x), want, rtol=1e-5, atol=1e-5)


def test_set_transformer_matches_a_loop_over_heads_and_rows_in_float64(setup):
    x, _, params = setup
    h = _mlp64(params["embed"], np.float64(x))
    z = _mab64(params["sab2"], *(2 * [_mab64(params["sab1"], h, h)]))
    pooled = _mab64(params["pma"]["mab"], np.float64(params["pma"]["seeds"]), _mlp64(params["pma"]["ff"], z))
    np.testing.assert_allclose(set_transformer_jit(params, x), _mlp64(params["out"], pooled), rtol=1e-4, atol=1e-4)


# ---- The symmetry -----------------------------------------------------------------------------------

def test_both_models_are_invariant_and_self_attention_is_equivariant(setup):
    x, ds_params, st_params = setup
    perm = np.random.default_rng(3).permutation(N)
    np.testing.assert_allclose(deep_sets_jit(ds_params, x[perm]), deep_sets_jit(ds_params, x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(set_transformer_jit(st_params, x[perm]), set_transformer_jit(st_params, x),
                               rtol=1e-5, atol=1e-5)
    sab = jax.jit(lambda h: mab(st_params["sab1"], h, h, jnp.ones(N, bool)))
    h = np.random.default_rng(4).standard_normal((N, D_MODEL)).astype(np.float32)
    np.testing.assert_allclose(sab(h[perm]), np.asarray(sab(h))[perm], rtol=1e-5, atol=1e-5)


def test_masked_padding_changes_nothing(setup):
    x, ds_params, st_params = setup
    padded = np.concatenate([x, np.full((N, D), 1e3, np.float32)])  # (2N, D), like the doubled set below
    mask = np.arange(2 * N) < N
    np.testing.assert_allclose(deep_sets_jit(ds_params, padded, mask), deep_sets_jit(ds_params, x),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(set_transformer_jit(st_params, padded, mask), set_transformer_jit(st_params, x),
                               rtol=1e-5, atol=1e-5)
    # An empty set is not an error: DeepSets reads rho(0), the Set Transformer's seeds attend to nothing.
    empty = np.zeros(2 * N, bool)
    assert np.isfinite(deep_sets_jit(ds_params, padded, empty)).all()
    assert np.isfinite(set_transformer_jit(st_params, padded, empty)).all()


def test_attention_cannot_count_copies_and_the_sum_can(setup):
    # The page: a set and the same set with every element doubled give the Set Transformer the same
    # output (softmax weights see proportions), and DeepSets different ones.
    x, ds_params, st_params = setup
    doubled = np.concatenate([x, x])
    every = np.ones(2 * N, bool)  # a mask that keeps every row: the programs of the padded sets above
    np.testing.assert_allclose(set_transformer_jit(st_params, doubled, every), set_transformer_jit(st_params, x),
                               rtol=1e-5, atol=1e-5)
    assert not np.allclose(deep_sets_jit(ds_params, doubled, every), deep_sets_jit(ds_params, x), atol=1e-2)


def test_a_set_of_one_element(setup):
    # (Sets of 5 and 10 elements appear in the other tests, with the same parameters.)
    _, ds_params, _ = setup
    one = np.ones((1, D), np.float32)
    np.testing.assert_allclose(deep_sets_jit(ds_params, one),
                               deep_sets_jit(ds_params, np.concatenate([one, np.zeros((2 * N - 1, D), np.float32)]),
                                             np.arange(2 * N) < 1), rtol=1e-6)


# ---- It learns: how many distinct values a set holds --------------------------------------------------

VALUES, MAX_SIZE = 5, 7


def distinct_counts(seed, n):
    """Sets of 3 to 7 one-hot values out of 5, padded to 7 with a mask; the target is the number of
    distinct values."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, MAX_SIZE + 1, n)
    values = rng.integers(0, VALUES, (n, MAX_SIZE))
    mask = np.arange(MAX_SIZE)[None] < sizes[:, None]
    distinct = np.array([len(set(v[:s])) for v, s in zip(values, sizes)], np.float32)
    return np.eye(VALUES, dtype=np.float32)[values], mask, distinct  # NumPy: the training core's arguments


def test_deep_sets_learns_to_count_distinct_values():
    steps, batch = 1000, 32
    xs, masks, ys = distinct_counts(0, steps * batch)
    test_x, test_mask, test_y = distinct_counts(1, 500)
    predict = jax.vmap(lambda p, x, m: deep_sets_apply(p, x, m)[0], (None, 0, 0))
    opt = optax.adam(0.01)

    def loss(p, x, m, y):
        return jnp.mean((predict(p, x, m) - y) ** 2)

    @jax.jit  # the data come as arguments, not as constants folded into the program
    def train(key, data, test_x, test_mask, test_y):
        # The init inside the training program (its parameters bit-identical to the eager init's,
        # checked), not a program of its own nor a dozen small eager ones.
        p = deep_sets_init(key, VALUES, 16, 1)

        def step(state, data):
            p, s = state
            updates, s = opt.update(jax.grad(loss)(p, *data), s, p)
            return (optax.apply_updates(p, updates), s), None

        (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), data)
        return jnp.mean(jnp.round(predict(p, test_x, test_mask)) == test_y), loss(p, test_x, test_mask, test_y)

    data = (xs.reshape(steps, batch, MAX_SIZE, VALUES), masks.reshape(steps, batch, MAX_SIZE), ys.reshape(steps, batch))
    accuracy, mse = (float(v) for v in train(jax.random.key(0), data, test_x, test_mask, test_y))
    # Measured (1000 Adam steps of 32 sets, hidden 16, seed 0): 99.6 % of 500 held-out sets counted
    # exactly (prediction rounded), test MSE 0.013; predicting the mean count scores MSE 0.5.
    assert accuracy >= 0.95
    assert mse < 0.05 < float(np.var(test_y))


# ---- Bad input ------------------------------------------------------------------------------------------

def test_bad_input_raises_clear_errors(setup):
    x, ds_params, st_params = setup
    with pytest.raises(ValueError, match=r"x must have shape \(5, 3\) \(D from params\)"):
        deep_sets_apply(ds_params, x[:, :2])
    with pytest.raises(TypeError, match=r"mask must be boolean"):
        deep_sets_apply(ds_params, x, np.ones(N, np.float32))
    with pytest.raises(ValueError, match=r"mask must have shape \(5,\)"):
        set_transformer_apply(st_params, x, np.ones(N - 1, bool))
    broken = {**st_params, "sab2": {**st_params["sab2"], "W_o": st_params["sab2"]["W_o"][:, :, :3]}}
    with pytest.raises(ValueError, match=r"params\['sab2'\]\['W_o'\] must have the shape"):
        set_transformer_apply(broken, x)
    with pytest.raises(ValueError, match=r"d_model must be a multiple of heads"):
        set_transformer_init(jax.random.key(0), D, 10, heads=3, out_size=OUT)
    with pytest.raises(ValueError, match=r"params\['rho'\] must read the 7 features"):
        deep_sets_apply({**ds_params, "rho": numpy_params(deep_sets_init, 6, D, 5, OUT)["rho"]}, x)
