import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cookbook.niche.hypernetworks import apply, generate, init, n_target_params, target_apply

SIZES = (1, 11, 1)  # the target network: 1 -> 11 -> 1
Z, M = 2, 7  # embedding (amplitude, phase), hypernetwork width


@pytest.fixture(scope="module")
def params():
    return init(jax.random.key(0), embed_dim=Z, hidden=M, sizes=SIZES)


def numpy_forward(params, z, x):
    p = {k: np.float64(v) for k, v in params.items()}
    theta = np.tanh(np.float64(z) @ p["A"] + p["a"]) @ p["B"] + p["c"]
    W1, b1, W2, b2 = theta[:11].reshape(1, 11), theta[11:22], theta[22:33].reshape(11, 1), theta[33:]
    return theta, np.tanh(np.float64(x) @ W1 + b1) @ W2 + b2


def test_generated_weights_and_output_match_numpy(params):
    assert n_target_params(SIZES) == 34 and params["B"].shape == (M, 34)
    z, x = np.array([0.7, -1.3], np.float32), np.array([0.4], np.float32)
    theta, y = numpy_forward(params, z, x)
    w = generate(params, z, SIZES)
    got = np.concatenate([np.ravel(w[k]) for k in ("W1", "b1", "W2", "b2")])
    np.testing.assert_allclose(got, theta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(apply(params, z, x, SIZES), y, rtol=1e-5, atol=1e-6)


def task_loss(params, z, xs, ys):
    return jnp.mean((jax.vmap(lambda x: apply(params, z, x, SIZES))(xs) - ys) ** 2)


def test_gradients_reach_the_hypernetwork_by_the_chain_rule(params):
    z = np.array([0.7, -1.3], np.float32)
    xs = np.linspace(-3, 3, 5, dtype=np.float32)[:, None]
    ys = np.sin(xs)

    @jax.jit
    def both(params):
        grads = jax.grad(task_loss)(params, z, xs, ys)  # through the hypernetwork, by autodiff
        # dL/dphi = (dtheta/dphi)^T dL/dtheta, with the target network's gradient taken on its own.
        weights, vjp = jax.vjp(lambda p: generate(p, z, SIZES), params)
        g_theta = jax.grad(lambda w: jnp.mean((jax.vmap(lambda x: target_apply(w, x))(xs) - ys) ** 2))(weights)
        return grads, vjp(g_theta)[0]

    grads, chained = both(params)
    for k in params:
        np.testing.assert_allclose(grads[k], chained[k], rtol=1e-5, atol=1e-7)
        assert float(jnp.abs(grads[k]).max()) > 1e-4  # every part of the hypernetwork is reached


def sine_tasks(rng, n):
    """n tasks y = alpha sin(x + beta), described by z = (alpha, beta)."""
    return np.stack([rng.uniform(0.5, 1.5, n), rng.uniform(-1.0, 1.0, n)], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def trained(params):
    rng = np.random.default_rng(1)
    train_z, test_z = sine_tasks(rng, 32), sine_tasks(rng, 16)
    xs = np.linspace(-np.pi, np.pi, 24, dtype=np.float32)[:, None]
    target = lambda z: z[:, :1, None] * np.sin(xs[None] + z[:, 1:, None])  # (K, 24, 1)

    def loss(params, zs, ys):
        return jnp.mean(jax.vmap(lambda z, y: task_loss(params, z, xs, y))(zs, ys))

    opt = optax.adam(0.01)

    @jax.jit
    def train(params):
        def step(carry, _):
            params, state = carry
            grads = jax.grad(loss)(params, train_z, target(train_z))
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        return jax.lax.scan(step, (params, opt.init(params)), None, length=600)[0][0]

    new = train(params)
    evaluate = jax.jit(loss)
    variance = float(np.mean(target(test_z) ** 2))
    return float(evaluate(params, test_z, target(test_z))), float(evaluate(new, test_z, target(test_z))), variance


def test_it_writes_networks_for_unseen_tasks(trained):
    before, after, variance = trained
    assert after < 0.01 * variance < before, (before, after, variance)  # about 0.0005 against 0.64


def test_bad_input_gets_a_clear_error(params):
    z, x = np.zeros(2, np.float32), np.zeros(1, np.float32)
    with pytest.raises(ValueError, match="z"):
        apply(params, np.zeros(3, np.float32), x, SIZES)
    with pytest.raises(ValueError, match="x"):
        apply(params, z, np.zeros(2, np.float32), SIZES)
    with pytest.raises(ValueError, match="params"):
        apply(params, z, x, (1, 5, 1))  # B was written for 11 hidden units
    with pytest.raises(TypeError, match="sizes"):
        generate(params, z, (1, 11.0, 1))
    with pytest.raises(TypeError, match="z"):
        generate(params, np.zeros(2, np.int32), SIZES)
