import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.contrib import _muon as optax_muon
from sklearn.datasets import load_digits

from cookbook.optimization.adamw import adamw
from cookbook.optimization.muon import NS_COEFFICIENTS, MuonState, muon, newton_schulz
from optimization_helpers import (
    assert_jit_agrees,
    assert_update_rejects_bad_grads,
    max_gap,
    trajectories,
    tree_and_grads,
)


def _normal(*shape, seed):
    """Test matrices from NumPy: jax.random.normal would compile a sampler for each new shape."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def quintic(s, steps=5):
    a, b, c = NS_COEFFICIENTS
    for _ in range(steps):
        s = a * s + b * s**3 + c * s**5
    return s


@pytest.mark.parametrize("shape", [(7, 4), (4, 7), (5, 5)])
def test_newton_schulz_equals_optax(shape):
    G = _normal(*shape, seed=sum(shape))
    theirs = jax.jit(optax_muon.orthogonalize_via_newton_schulz)(G, jnp.asarray(optax_muon._DEFAULT_NS_COEFFS))
    np.testing.assert_allclose(np.asarray(newton_schulz(G)), np.asarray(theirs), rtol=1e-6, atol=1e-6)


def test_newton_schulz_maps_singular_values_and_keeps_singular_vectors():
    # Build G = U S Vᵀ with chosen singular values, then compare with U p⁵(S/‖S‖) Vᵀ in float64.
    rng = np.random.default_rng(0)
    U, _ = np.linalg.qr(rng.normal(size=(11, 6)))
    V, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    s = np.array([3.0, 1.0, 0.5, 0.2, 0.05, 0.031])
    G = (U * s) @ V.T
    expected = (U * quintic(s / np.linalg.norm(s))) @ V.T
    np.testing.assert_allclose(np.asarray(newton_schulz(jnp.asarray(G, jnp.float32))), expected, atol=2e-5)


def test_five_steps_put_every_normalised_singular_value_above_one_percent_in_the_stated_band():
    # The page: "five steps send every normalised singular value between 0.01 and 1 into [0.68, 1.14]".
    s = np.linspace(0.01, 1.0, 200_001)
    out = quintic(s)
    assert 0.68 <= out.min() < 0.69 and 1.13 < out.max() <= 1.14
    assert quintic(np.array([1e-3]))[0] < 0.5  # a thousandth of the norm has not arrived after five steps
    # The slope at zero, 3.4445, is what lifts small singular values: 3.4445⁵ ≈ 488.
    np.testing.assert_allclose(quintic(np.array([1e-9]))[0] / 1e-9, 3.4445**5, rtol=1e-6)


def test_newton_schulz_is_equivariant_to_rotations_of_both_spaces():
    # O(Q G R) = Q O(G) R for orthogonal Q and R: Muon is indifferent to the bases of the two spaces.
    # (4, 7), a shape the comparison with optax compiles already; the products in NumPy.
    rng = np.random.default_rng(1)
    G = rng.normal(size=(4, 7)).astype(np.float32)
    Q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    R, _ = np.linalg.qr(rng.normal(size=(7, 7)))
    Q, R = Q.astype(np.float32), R.astype(np.float32)
    np.testing.assert_allclose(np.asarray(newton_schulz(Q @ G @ R)), Q @ np.asarray(newton_schulz(G)) @ R, atol=2e-5)


def test_matches_optax_contrib_muon_step_for_step_with_and_without_weight_decay():
    # The least-squares problem has a (5, 3) matrix (Muon) and a (3,) vector (Nesterov Adam). Both
    # weight decays, ours and optax's, run in one scan: one program to compile, not two.
    pairs = [(make(0.01, weight_decay=wd), "least_squares")
             for wd in (0.0, 0.1) for make in (muon, optax.contrib.muon)]
    paths = trajectories(pairs, steps=100)
    for wd, ours, theirs in zip((0.0, 0.1), paths[0::2], paths[1::2]):
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
            assert a.shape[0] == 100
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6, err_msg=f"weight_decay={wd}")
        assert max_gap(ours, theirs) < 1e-5, wd
    assert max_gap(paths[0], paths[2]) > 1e-4  # the decay did change the path


def test_keeps_one_moment_per_matrix_and_two_per_vector():
    params, _ = tree_and_grads()
    state = muon(0.01).init(params)
    assert isinstance(state, MuonState)
    assert jax.tree.map(jnp.shape, state.mu) == {"w": (5, 3), "b": (3,)}
    assert [x.shape for x in jax.tree.leaves(state.nu)] == [(3,)]  # the vector's only


def test_scales_a_widening_matrix_by_the_root_of_its_aspect_ratio():
    G = _normal(3, 12, seed=3)
    opt = muon(1.0, beta=0.0)
    updates, _ = opt.update({"w": G}, opt.init({"w": jnp.zeros((3, 12))}))
    np.testing.assert_allclose(np.asarray(updates["w"]), -2.0 * np.asarray(newton_schulz(G)), rtol=1e-6)


def test_init_and_update_agree_under_jit():
    params, grads = tree_and_grads()
    assert_jit_agrees(muon(0.1, weight_decay=0.1), params, grads)


def test_bad_input_raises():
    with pytest.raises(ValueError, match=r"beta must be in \[0.0, 1.0\), got 1.0"):
        muon(0.1, beta=1.0)
    with pytest.raises(ValueError, match=r"ns_steps must be a non-negative int, got 2.5"):
        muon(0.1, ns_steps=2.5)
    with pytest.raises(ValueError, match=r"G must be a matrix \(two axes\), got shape \(3,\)"):
        newton_schulz(jnp.ones(3))
    with pytest.raises(TypeError, match=r"G must be a floating-point"):
        newton_schulz(jnp.ones((3, 3), jnp.int32))
    with pytest.raises(ValueError, match=r"steps must be a non-negative int, got -1"):
        newton_schulz(jnp.ones((3, 3)), steps=-1)
    with pytest.raises(ValueError, match=r"muon trains matrices only; matrix\(\) chose a leaf of shape \(3,\)"):
        muon(0.1, matrix=lambda leaf: True).init({"b": jnp.zeros(3)})
    opt = muon(0.1, weight_decay=0.1)
    with pytest.raises(ValueError, match=r"needs params for weight_decay=0.1"):
        opt.update({"w": jnp.ones((2, 2))}, opt.init({"w": jnp.ones((2, 2))}))


def test_update_rejects_gradients_unlike_the_parameters():
    for opt in [muon(0.1), muon(0.1, weight_decay=0.1)]:
        assert_update_rejects_bad_grads(opt, needs_params=True)


def test_reaches_97_percent_on_digits_before_adamw_at_three_learning_rates():
    # A 64-128-128-10 network on mini-batches of 128: Muon (0.05) on the two hidden matrices, Nesterov
    # Adam on the output layer and the biases; AdamW (no decay) at 3e-3, 1e-2 and 3e-2.
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(X))
    X, y = jnp.asarray(X[order] / 16.0, jnp.float32), jnp.asarray(y[order])
    x_train, y_train, x_test, y_test = X[:1200], y[:1200], X[1200:], y[1200:]
    sizes = (64, 128, 128, 10)

    def init(key):
        keys = jax.random.split(key, len(sizes) - 1)
        return [{"w": jax.random.normal(k, (a, b)) / np.sqrt(a), "b": jnp.zeros(b)} for k, a, b in zip(keys, sizes[:-1], sizes[1:])]

    def apply(params, x):
        for layer in params[:-1]:
            x = jax.nn.relu(x @ layer["w"] + layer["b"][None, :])
        return x @ params[-1]["w"] + params[-1]["b"][None, :]

    def loss(params, x, labels):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(apply(params, x)), labels[:, None], 1))

    batches = jax.random.randint(jax.random.key(1), (150, 128), 0, len(x_train))

    def held_out_accuracy_per_step(opt):
        params = init(jax.random.key(0))

        def step(carry, idx):
            p, s = carry
            updates, s = opt.update(jax.grad(loss)(p, x_train[idx], y_train[idx]), s, p)
            p = jax.tree.map(jnp.add, p, updates)
            return (p, s), jnp.mean(jnp.argmax(apply(p, x_test), -1) == y_test)

        return jax.lax.scan(step, (params, opt.init(params)), batches)[1]

    hidden = lambda leaf: leaf.ndim == 2 and leaf.shape[1] != 10
    runs = {"muon": muon(0.05, matrix=hidden)} | {f"adamw {lr}": adamw(lr, weight_decay=0.0) for lr in (3e-3, 1e-2, 3e-2)}
    accuracies = jax.jit(lambda: {name: held_out_accuracy_per_step(opt) for name, opt in runs.items()})()
    first_step = {name: int(np.argmax(np.asarray(a) >= 0.97)) + 1 if bool(jnp.any(a >= 0.97)) else None for name, a in accuracies.items()}
    assert first_step["muon"] is not None, first_step
    assert all(s is None or first_step["muon"] <= s for name, s in first_step.items() if name != "muon"), first_step
