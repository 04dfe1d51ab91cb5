"""The digits runs shared by the chapter's learning tests that train the SimCLR page's 64-128-8 MLP
(its ``encode`` and ``augment``) with another two-view loss, without labels."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cookbook.self_supervised.simclr import augment, encode
from test_simclr import knn_accuracy


def digits_and_views(B=128, steps=400):
    """Digits X (N, 8, 8) in [0, 1] with labels y, starting weights drawn with NumPy as
    ``init(sizes=(64, 128, 8))`` draws them, and every view of the run drawn at once, (steps, 2, B, 8, 8),
    by a small program outside the training loop. Batches come from the first 1000 digits."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32).reshape(-1, 8, 8)
    rng = np.random.default_rng(0)
    batches = np.stack([rng.permutation(1000)[:B] for _ in range(steps)])  # (steps, B), no repeats in a batch
    params0 = [{"W": (rng.standard_normal((n, m)) * np.sqrt(2.0 / n)).astype(np.float32), "b": np.zeros(m, np.float32)}
               for n, m in [(64, 128), (128, 8)]]
    views = jax.vmap(lambda k, x: augment(k, x, max_shift=1, noise=0.1, drop=0.2))
    all_views = jax.jit(views)(jax.random.split(jax.random.key(1), steps * 2 * B),
                               jnp.asarray(np.repeat(X[batches], 2, axis=0).reshape(-1, 8, 8))).reshape(steps, 2, B, 8, 8)
    return X, y, params0, all_views


def two_view_trainer(loss, learning_rate=1e-2):
    """One compiled Adam loop over the views: ``train(params, all_views, weight)`` returns the trained
    parameters and the losses, with ``loss(z1, z2, weight)`` on the two views' embeddings."""
    opt = optax.adam(learning_rate)
    embed = jax.vmap(encode, in_axes=(None, 0))

    @jax.jit
    def train(params, all_views, weight):
        def step(carry, v):
            params, state = carry
            value, grads = jax.value_and_grad(lambda p: loss(embed(p, v[0]), embed(p, v[1]), weight))(params)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), value
        (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), all_views)
        return params, losses

    return train


def numpy_encode(params, images):
    h = np.maximum(images.reshape(len(images), -1) @ params[0]["W"] + params[0]["b"], 0.0)
    return h @ params[1]["W"] + params[1]["b"]


def knn_of(params, X, y, standardise=False):
    """k-NN accuracy on digits 1000-1499 from the embeddings of digits 0-999 (standardised by the
    training embeddings' statistics if asked), and those training embeddings."""
    params = jax.tree.map(np.asarray, params)
    a, b = numpy_encode(params, X[:1000]), numpy_encode(params, X[1000:1500])
    if standardise:
        mean, std = a.mean(0), a.std(0) + 1e-6
        return knn_accuracy((a - mean) / std, y[:1000], (b - mean) / std, y[1000:1500]), a
    return knn_accuracy(a, y[:1000], b, y[1000:1500]), a
