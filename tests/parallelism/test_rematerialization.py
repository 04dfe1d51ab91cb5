import functools

import jax
import numpy as np
import pytest

from cookbook.parallelism.rematerialization import cost, gradient, init, loss

L, B, D = 64, 256, 16  # deep and narrow, so that activations, not weights, fill the memory
ACTIVATION = 4 * B * D  # bytes of one (B, D) float32 activation, 16 KiB
VARIANTS = [("none", 1), ("dots", 1), ("nothing", 1), ("nothing", 4)]


def _data(seed=0):
    rng = np.random.default_rng(seed)
    params = {"W": (rng.standard_normal((L, D, D)) / np.sqrt(D)).astype(np.float32),
              "b": (0.1 * rng.standard_normal((L, D))).astype(np.float32)}
    return params, rng.standard_normal((B, D)).astype(np.float32)


def _numpy_gradient(params, x):
    """Backpropagation through the tanh stack in float64, every activation stored."""
    W, b = np.asarray(params["W"], np.float64), np.asarray(params["b"], np.float64)
    hs = [np.asarray(x, np.float64)]
    for l in range(L):
        hs.append(np.tanh(hs[-1] @ W[l] + b[l]))
    dh = hs[-1] / hs[-1].size  # d(0.5 mean h^2)/dh
    dW, db = np.zeros_like(W), np.zeros_like(b)
    for l in reversed(range(L)):
        dz = dh * (1.0 - hs[l + 1] ** 2)
        dW[l], db[l] = hs[l].T @ dz, dz.sum(axis=0)
        dh = dz @ W[l].T
    return dW, db


@functools.cache
def _measured():
    """For each variant: its gradient and its compiled cost (the same program, compiled once when the
    compilation cache is on)."""
    params, x = _data()
    return {v: (gradient(params, x, policy=v[0], segment=v[1]), cost(params, x, policy=v[0], segment=v[1]))
            for v in VARIANTS}


def test_every_policy_gives_the_gradient_of_backpropagation():
    dW, db = _numpy_gradient(*_data())
    plain = _measured()[("none", 1)][0]
    for variant, (grads, _) in _measured().items():
        np.testing.assert_allclose(grads["W"], dW, rtol=1e-5, atol=1e-7, err_msg=str(variant))
        np.testing.assert_allclose(grads["b"], db, rtol=1e-5, atol=1e-7, err_msg=str(variant))
        np.testing.assert_allclose(grads["W"], plain["W"], rtol=1e-6, atol=1e-9, err_msg=str(variant))


def test_memory_read_from_the_compiled_gradient():
    memory = {v: c["temporaries"] / ACTIVATION for v, (_, c) in _measured().items()}
    # No checkpointing: r = 3 activations per layer (input, output, tanh derivative), plus a few.
    assert 3 * L <= memory[("none", 1)] <= 3 * L + 8
    # Every layer checkpointed: one kept input per layer, plus one layer's residuals.
    assert L <= memory[("nothing", 1)] <= L + 3 + 8
    # Segments of 4 (near sqrt(L / 3)): L / 4 kept inputs and 3 * 4 residuals, plus a few, and less
    # than a fifth of the plain program.
    assert L / 4 + 3 * 4 <= memory[("nothing", 4)] <= L / 4 + 3 * 4 + 8
    assert memory[("nothing", 4)] < memory[("none", 1)] / 5
    # Keeping the products saves less: their outputs stay, only the tanh is recomputed.
    assert memory[("nothing", 1)] < memory[("dots", 1)] < memory[("none", 1)]


def test_recomputation_read_from_the_compiled_gradient():
    flops = {v: c["flops"] for v, (_, c) in _measured().items()}
    plain = flops[("none", 1)]
    # Per layer: forward product, two backward products, and the forward product again.
    assert 1.30 < flops[("nothing", 1)] / plain < 1.36
    assert flops[("nothing", 4)] == pytest.approx(flops[("nothing", 1)], rel=1e-3)
    assert 1.0 <= flops[("dots", 1)] / plain < 1.02  # the products are kept: no matrix product again


def test_the_loss_does_not_depend_on_the_policy():
    params, x = _data(1)
    h = np.asarray(x, np.float64)
    for l in range(L):
        h = np.tanh(h @ params["W"][l] + params["b"][l])
    assert float(loss(params, x)) == pytest.approx(0.5 * np.mean(h ** 2), rel=1e-5)
    assert float(loss(params, x, policy="nothing", segment=8)) == float(loss(params, x))


def test_bad_arguments_raise_clear_errors():
    params = {"W": np.ones((6, 3, 3), np.float32), "b": np.zeros((6, 3), np.float32)}
    x = np.ones((5, 3), np.float32)
    with pytest.raises(ValueError, match=r"segment must divide the depth L = 6, got 4"):
        gradient(params, x, policy="nothing", segment=4)
    with pytest.raises(ValueError, match=r"policy must be one of \['dots', 'none', 'nothing'\]"):
        gradient(params, x, policy="everything")
    with pytest.raises(TypeError, match=r"segment must be an int"):
        gradient(params, x, segment=2.0)
    with pytest.raises(ValueError, match=r"x must have shape \(5, 3\)"):
        gradient(params, np.ones((5, 4), np.float32))
    with pytest.raises(TypeError, match=r"x must be a floating-point array"):
        loss(params, np.ones((5, 3), np.int32))
    with pytest.raises(ValueError, match=r"params\['b'\] must have shape \(6, 3\)"):
        loss({"W": params["W"], "b": params["b"][:5]}, x)
    with pytest.raises(ValueError, match=r"params\['W'\] must have shape \(6, 3, 3\)"):
        loss({"W": params["W"][:, :, :2], "b": params["b"]}, x)
    with pytest.raises(TypeError, match=r"params must be the dict"):
        loss([params["W"], params["b"]], x)
    with pytest.raises(TypeError, match=r"depth must be an int"):
        init(jax.random.key(0), depth=6.0, width=3)  # checked before any random draw
