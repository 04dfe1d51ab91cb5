import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from cookbook.self_supervised.byol import byol_loss, ema_update
from cookbook.self_supervised.simclr import augment, encode
from test_simclr import knn_accuracy

loss_jit = jax.jit(byol_loss)
ema_jit = jax.jit(ema_update)


def numpy_byol(p, z):
    """A float64 loop over the rows: 2 - 2 cos."""
    p, z = np.asarray(p, np.float64), np.asarray(z, np.float64)
    return np.mean([2.0 - 2.0 * (a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)) for a, b in zip(p, z)])


def pair(seed, N=7, D=5):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, D)).astype(np.float32), rng.standard_normal((N, D)).astype(np.float32)


def test_against_a_float64_loop_and_its_range():
    p, z = pair(0)
    np.testing.assert_allclose(loss_jit(p, z), numpy_byol(p, z), rtol=1e-5)
    np.testing.assert_allclose(loss_jit(p, 3.0 * p), 0.0, atol=1e-6)  # lengths ignored
    np.testing.assert_allclose(loss_jit(p, -p), 4.0, rtol=1e-6)  # the largest value


def test_the_targets_get_no_gradient():
    p, z = pair(1)
    grad_p, grad_z = jax.jit(jax.grad(byol_loss, argnums=(0, 1)))(p, z)
    assert np.abs(grad_p).max() > 0
    np.testing.assert_array_equal(grad_z, 0.0)
    # through a target network too: the gradient of the loss with respect to its parameters is zero
    W_online, W_target = np.eye(5, dtype=np.float32), np.float32(0.5) * np.ones((5, 5), np.float32) + np.eye(5, dtype=np.float32)
    g_online, g_target = jax.jit(jax.grad(lambda a, b: byol_loss(p @ a, z @ b), argnums=(0, 1)))(W_online, W_target)
    assert np.abs(g_online).max() > 0
    np.testing.assert_array_equal(g_target, 0.0)


def test_gradients_of_the_predictions():
    p, z = pair(2, N=3, D=4)
    with jax.enable_x64(True):
        check_grads(jax.jit(lambda a: byol_loss(a, jnp.asarray(z, jnp.float64))), (jnp.asarray(p, jnp.float64),),
                    order=1, modes=["rev"])


def test_ema_update_against_optax_incremental_update():
    rng = np.random.default_rng(3)
    target = {"W": rng.standard_normal((3, 5)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float32)}
    online = {"W": rng.standard_normal((3, 5)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float32)}
    for decay in (0.0, 0.9, 0.996, 1.0):
        got = ema_jit(target, online, decay)
        expected = optax.incremental_update(online, target, step_size=1.0 - decay)
        for key in target:
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, atol=1e-7)
    # k updates towards fixed online parameters close the gap by tau^k
    t = target
    for _ in range(5):
        t = ema_jit(t, online, 0.9)
    np.testing.assert_allclose(np.asarray(t["b"]) - online["b"], 0.9 ** 5 * (target["b"] - online["b"]), rtol=1e-4, atol=1e-6)


def test_edge_cases():
    p, z = pair(4)
    zero = p.copy()
    zero[0] = 0.0  # a zero prediction: finite loss and gradient
    assert np.isfinite(loss_jit(zero, z))
    assert np.isfinite(jax.jit(jax.grad(byol_loss))(zero, z)).all()
    got = loss_jit(p.astype(jnp.bfloat16), z.astype(jnp.bfloat16))  # rounded by NumPy: no program
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, numpy_byol(p, z), rtol=2e-2)
    np.testing.assert_allclose(loss_jit(p[:1], z[:1]), numpy_byol(p[:1], z[:1]), rtol=1e-5)  # N = 1


def test_bad_input():
    p, z = pair(5)
    with pytest.raises(ValueError, match="targets"):
        byol_loss(p, z[:3])
    with pytest.raises(TypeError, match="predictions"):
        byol_loss(p.astype(np.int32), z)
    with pytest.raises(ValueError, match="decay"):
        ema_update({"w": p}, {"w": z}, 1.5)
    with pytest.raises(ValueError, match="online_params"):
        ema_update({"w": p}, {"w": z[:3]}, 0.9)


# ---- It learns: BYOL on scikit-learn's digits, no labels ----------------------------------------

def mlp(params, x):
    return encode(params, x[:, None])  # the SimCLR page's MLP on a vector: an (D, 1) "image"


@pytest.fixture(scope="module")
def digits_runs():
    """The SimCLR page's 64-128-8 MLP with an 8-32-8 predictor, trained by BYOL (tau = 0.996), and
    the same run with the online network as its own target and no stop-gradient; one compiled
    lax.scan loop serves both; weights and batches drawn with NumPy, embeddings read with NumPy."""
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32).reshape(-1, 8, 8)
    B, steps, tau = 128, 400, 0.996
    rng = np.random.default_rng(0)
    batches = np.stack([rng.permutation(1000)[:B] for _ in range(steps)])  # (steps, B)

    def he(sizes):
        return [{"W": (rng.standard_normal((n, m)) * np.sqrt(2.0 / n)).astype(np.float32), "b": np.zeros(m, np.float32)}
                for n, m in zip(sizes[:-1], sizes[1:])]

    online0 = {"encoder": he((64, 128, 8)), "predictor": he((8, 32, 8))}
    # the predictor learns ten times faster than the encoder: without that, this small network collapses
    opt = optax.multi_transform({"encoder": optax.adam(1e-3), "predictor": optax.adam(1e-2)},
                                {"encoder": "encoder", "predictor": "predictor"})
    views = jax.vmap(lambda k, x: augment(k, x, max_shift=1, noise=0.1, drop=0.2))
    embed = jax.vmap(encode, in_axes=(None, 0))
    predict = jax.vmap(mlp, in_axes=(None, 0))

    def no_stop_gradient_loss(p, z):  # the ablation: 2 - 2 cos with the gradient through both sides
        p = p / jnp.linalg.norm(p, axis=1, keepdims=True)
        z = z / jnp.linalg.norm(z, axis=1, keepdims=True)
        return jnp.mean(2.0 - 2.0 * jnp.sum(p * z, axis=1))

    # every view of the run drawn at once, (steps, 2, B, 8, 8): a small program outside the training loop
    all_views = jax.jit(views)(jax.random.split(jax.random.key(1), steps * 2 * B),
                               jnp.asarray(np.repeat(X[batches], 2, axis=0).reshape(-1, 8, 8))).reshape(steps, 2, B, 8, 8)

    @jax.jit
    def train(online, all_views, use_target):
        def step(carry, v):
            online, target, state = carry
            v1, v2 = v[0], v[1]

            def loss(online):
                z1, z2 = embed(online["encoder"], v1), embed(online["encoder"], v2)
                p1, p2 = predict(online["predictor"], z1), predict(online["predictor"], z2)
                t1, t2 = embed(target, v1), embed(target, v2)
                byol = byol_loss(p1, t2) + byol_loss(p2, t1)
                ablation = no_stop_gradient_loss(p1, z2) + no_stop_gradient_loss(p2, z1)
                return use_target * byol + (1.0 - use_target) * ablation

            value, grads = jax.value_and_grad(loss)(online)
            updates, state = opt.update(grads, state, online)
            online = optax.apply_updates(online, updates)
            return (online, ema_update(target, online["encoder"], tau), state), value
        (online, _, _), losses = jax.lax.scan(step, (online, online["encoder"], opt.init(online)),
                                              all_views)
        return online, losses

    def numpy_encode(params, images):
        h = np.maximum(images.reshape(len(images), -1) @ params[0]["W"] + params[0]["b"], 0.0)
        return h @ params[1]["W"] + params[1]["b"]

    def evaluate(encoder):
        encoder = jax.tree.map(np.asarray, encoder)
        a, b = numpy_encode(encoder, X[:1000]), numpy_encode(encoder, X[1000:1500])
        return knn_accuracy(a, y[:1000], b, y[1000:1500]), a

    runs = {"untrained": evaluate(online0["encoder"]) + (None,)}
    for use_target in (1.0, 0.0):
        online, losses = train(online0, all_views, use_target)
        runs[use_target] = evaluate(online["encoder"]) + (np.asarray(losses),)
    return runs


def mean_cosine_between_digits(z):
    u = z / np.linalg.norm(z, axis=1, keepdims=True)
    c = u @ u.T
    return (c.sum() - np.trace(c)) / (len(z) * (len(z) - 1))


def test_byol_learns_digits_without_labels(digits_runs):
    trained_accuracy, _, losses = digits_runs[1.0]
    untrained_accuracy = digits_runs["untrained"][0]
    assert losses[-20:].mean() < losses[:20].mean() - 0.5
    # 0.76 here; from 0.74 to 0.81 over four draws of the augmentations
    assert trained_accuracy >= 0.73, trained_accuracy
    assert trained_accuracy >= untrained_accuracy + 0.04, (trained_accuracy, untrained_accuracy)


def test_without_the_stop_gradient_it_collapses(digits_runs):
    # the collapse detector: the mean cosine between the embeddings of two different digits
    assert mean_cosine_between_digits(digits_runs[0.0][1]) > 0.995
    assert mean_cosine_between_digits(digits_runs[1.0][1]) < 0.95
    assert digits_runs[0.0][0] < digits_runs["untrained"][0]  # worse than not training at all
