import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.theory.mup import apply, init, multipliers, stability_limit, train

WIDTHS, RATES, STEPS = (64, 1024), 2.0 ** np.arange(-8.0, 3.0), 100


@pytest.fixture(scope="module")
def setup():
    """The page's figure: 64 points in 8 dimensions, widths 64 and 1024, 11 learning rates."""
    x = jax.random.normal(jax.random.key(0), (64, 8))
    y = jnp.sin(2 * x @ jax.random.normal(jax.random.key(1), (8,)) / 8**0.5)
    out = {}
    for parametrization in ("sp", "mup"):
        for width in WIDTHS:
            params = init(jax.random.key(2), 8, width, parametrization)
            sweep = jax.vmap(lambda r: train(params, x, y, parametrization=parametrization, learning_rate=r, steps=STEPS))
            trained, losses = sweep(jnp.asarray(RATES, jnp.float32))
            losses = np.asarray(losses)  # (rates, steps)
            # The runs as NumPy arrays: the tests pick rows and compare them without compiling.
            out[parametrization, width] = {"params": params, "losses": losses, "trained": jax.tree.map(np.asarray, trained),
                                           "limit": float(stability_limit(params, x, parametrization))}
    return x, y, out


def _final(losses):
    return np.where(np.isfinite(losses[:, -1]), losses[:, -1], np.inf)


def test_the_stability_limit_shrinks_with_width_in_sp_and_not_in_mup(setup):
    _, _, out = setup
    sp = out["sp", 64]["limit"] / out["sp", 1024]["limit"]
    mup = out["mup", 64]["limit"] / out["mup", 1024]["limit"]
    assert 10 < sp < 20  # measured 13.8; the ratio of widths is 16
    assert abs(mup - 1) < 0.1  # measured 0.97


def test_the_best_rate_transfers_in_mup_and_diverges_in_sp(setup):
    _, _, out = setup
    for parametrization in ("sp", "mup"):
        narrow, wide = _final(out[parametrization, 64]["losses"]), _final(out[parametrization, 1024]["losses"])
        best = int(np.argmin(narrow))  # tuned on the narrow network
        initial = out[parametrization, 1024]["losses"][best, 0]
        if parametrization == "sp":
            assert not wide[best] < initial  # the wide network diverges at the narrow one's rate
        else:
            assert wide[best] <= 1.2 * wide.min()  # and trains to within 20 % of its own best
    # In SP the wide network's own best rate is at least 8 times smaller than the narrow one's.
    assert RATES[np.argmin(_final(out["sp", 64]["losses"]))] >= 8 * RATES[np.argmin(_final(out["sp", 1024]["losses"]))]


def test_features_move_as_much_at_every_width_in_mup_only(setup):
    # Each network at its own best rate: the relative change of the hidden activations relu(x W_in)
    # over training. In muP it is the same at widths 64 and 1024 (measured 1.59 and 1.64: features
    # are learnt at any width); in SP it falls with width (0.59 to 0.38), towards the lazy regime.
    x, _, out = setup
    x = np.asarray(x)
    moved = {}
    for key, run in out.items():
        best = int(np.argmin(_final(run["losses"])))
        h0 = np.maximum(x @ np.asarray(run["params"]["W_in"]), 0)  # in NumPy, float32
        h1 = np.maximum(x @ run["trained"]["W_in"][best], 0)
        moved[key] = float(np.linalg.norm(h1 - h0) / np.linalg.norm(h0))
    assert 0.9 < moved["mup", 1024] / moved["mup", 64] < 1.1, moved
    assert moved["sp", 1024] < 0.8 * moved["sp", 64], moved


def test_stability_limit_matches_the_kernel_written_out(setup):
    # J_out = h = relu(x W_in); J_in J_in^T = (x x^T) * ((relu'(z) W_out)(relu'(z) W_out)^T): NumPy float64.
    x, _, out = setup
    X = np.asarray(x, np.float64)
    for parametrization in ("sp", "mup"):
        params = out[parametrization, 64]["params"]
        W_in, W_out = (np.asarray(params[k], np.float64) for k in ("W_in", "W_out"))
        z = X @ W_in
        h, g = np.maximum(z, 0), (z > 0) * W_out[None, :]
        c = multipliers(64, parametrization)
        theta = c["W_out"] * h @ h.T + c["W_in"] * (X @ X.T) * (g @ g.T)
        expected = 2 * 64 / np.linalg.eigvalsh(theta)[-1]
        assert out[parametrization, 64]["limit"] == pytest.approx(expected, rel=1e-3)


def test_gradient_descent_is_stable_below_the_limit_and_not_far_above_it(setup):
    x, y, out = setup
    wide = out["sp", 1024]
    below = np.asarray(train(wide["params"], x, y, parametrization="sp", learning_rate=0.5 * wide["limit"], steps=STEPS)[1])
    above = np.asarray(train(wide["params"], x, y, parametrization="sp", learning_rate=4 * wide["limit"], steps=STEPS)[1])
    assert np.all(np.diff(below) <= 1e-6)  # monotone descent
    assert not float(above[-1]) < float(above[0])  # diverges (NaN or larger than at the start)


def test_multipliers_and_initial_scales():
    assert multipliers(256, "mup") == {"W_in": 256.0, "W_out": 1 / 256}
    assert multipliers(256, "sp") == {"W_in": 1.0, "W_out": 1.0}
    for parametrization, scale in (("sp", 1 / 4096**0.5), ("mup", 1 / 4096)):
        params = init(jax.random.key(3), 5, 4096, parametrization)
        assert float(np.std(np.asarray(params["W_out"]))) == pytest.approx(scale, rel=0.05)  # 4096 draws: 1.1 % error
        assert float(np.std(np.asarray(params["W_in"]))) == pytest.approx(1 / 5**0.5, rel=0.05)
    x = np.ones((3, 5), np.float32)
    W_in, W_out = np.asarray(params["W_in"]), np.asarray(params["W_out"])
    np.testing.assert_allclose(apply(params, x), np.maximum(x @ W_in, 0) @ W_out, rtol=1e-6)  # NumPy, float32


def test_bad_input_raises_clear_errors():
    # Parameters in init's shapes drawn with NumPy: these checks need no random kernel compiled.
    rng = np.random.default_rng(4)
    params = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32),
                          jax.eval_shape(lambda: init(jax.random.key(4), 5, 7, "sp")))
    with pytest.raises(ValueError, match=r"parametrization must be one of \['sp', 'mup'\], got 'ntk'"):
        multipliers(7, "ntk")
    with pytest.raises(ValueError, match=r"x must have shape \(3, 5\)"):
        apply(params, np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"y must have shape \(3,\)"):
        train(params, np.ones((3, 5), np.float32), np.ones(4, np.float32), parametrization="sp", learning_rate=0.1,
              steps=2)
    with pytest.raises(ValueError, match=r"params\['W_out'\] must have shape \(7,\)"):
        apply(params | {"W_out": np.ones(6, np.float32)}, np.ones((3, 5), np.float32))
    with pytest.raises(TypeError, match=r"width must be an int"):
        init(jax.random.key(0), 5, 7.0, "sp")
