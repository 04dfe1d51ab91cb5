import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from cookbook.self_supervised.simclr import augment, encode, init, nt_xent

loss_jit = jax.jit(nt_xent)
grad_jit = jax.jit(jax.grad(nt_xent, argnums=(0, 1)))
augment_batch = jax.jit(jax.vmap(lambda k, x, noise, drop: augment(k, x, max_shift=1, noise=noise, drop=drop),
                                 in_axes=(0, 0, None, None)))


def numpy_nt_xent(z1, z2, temperature):
    """A float64 loop over the 2B anchors, written from the definition."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    n = len(z)
    B = n // 2
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    total = 0.0
    for i in range(n):
        p = (i + B) % n
        denominator = sum(np.exp(z[i] @ z[k] / temperature) for k in range(n) if k != i)
        total += -np.log(np.exp(z[i] @ z[p] / temperature) / denominator)
    return total / n


def views(seed, B=5, D=7, spread=0.5):
    rng = np.random.default_rng(seed)
    z1 = rng.standard_normal((B, D)).astype(np.float32)
    z2 = (z1 + spread * rng.standard_normal((B, D))).astype(np.float32)
    return z1, z2


@pytest.mark.parametrize("temperature", [0.1, 0.5, 2.0])
def test_against_a_float64_loop(temperature):
    z1, z2 = views(0)
    got = loss_jit(z1, z2, temperature)
    np.testing.assert_allclose(got, numpy_nt_xent(z1, z2, temperature), rtol=2e-5)


def test_against_optax_ntxent():
    # optax stacks the 2B rows and groups them by label; its mean over positive pairs is the mean
    # over the 2B anchors since each anchor has exactly one positive.
    z1, z2 = views(1)
    B = z1.shape[0]
    labels = np.concatenate([np.arange(B), np.arange(B)]).astype(np.int32)
    reference = jax.jit(optax.losses.ntxent)(np.concatenate([z1, z2]), labels, 0.3)
    np.testing.assert_allclose(loss_jit(z1, z2, 0.3), reference, rtol=1e-5)


def test_gradients():
    z1, z2 = views(2, B=3, D=5)
    with jax.enable_x64(True):
        check_grads(jax.jit(lambda a, b: nt_xent(a, b, 0.5)), (z1.astype(np.float64), z2.astype(np.float64)),
                    order=1, modes=["rev"])


def test_collapse_scores_log_2b_minus_1_at_every_temperature():
    for B, D in ((3, 5), (5, 7)):  # the shapes of the other tests' inputs: their programs
        c = np.tile(np.array([[0.3, -1.0, 2.0, 0.5, -0.7, 1.1, 0.2][:D]], np.float32), (B, 1))
        for temperature in (0.05, 1.0):
            np.testing.assert_allclose(loss_jit(c, c, temperature), np.log(2 * B - 1), rtol=1e-6)


def test_the_negatives_undo_a_collapse():
    # gradient descent on free embeddings that start nearly collapsed (both views equal): the
    # negatives spread them out; the collapse detector (mean cosine between different images) drops
    z, _ = views(3, spread=0.0)
    near = np.ones_like(z) + np.float32(1e-2) * z  # in NumPy: no eager compiles

    @jax.jit
    def descend(z):
        def step(z, _):
            return z - 2.0 * jax.grad(lambda z: nt_xent(z, z, 0.5))(z), None
        return jax.lax.scan(step, z, None, length=100)[0]

    def mean_off_diagonal_cosine(z):
        u = z / np.linalg.norm(z, axis=1, keepdims=True)
        c = u @ u.T
        return (c.sum() - np.trace(c)) / (len(z) * (len(z) - 1))

    spread = np.asarray(descend(near))
    assert mean_off_diagonal_cosine(np.asarray(near)) > 0.99
    assert mean_off_diagonal_cosine(spread) < 0.0  # five points on the sphere, spread apart
    assert float(loss_jit(spread, spread, 0.5)) < np.log(9) - 0.5


def test_temperature_to_zero():
    # positives nearest their anchors: the loss goes to 0; a negative nearer than the positive: it grows like 1/tau
    B, D = 3, 5
    z1 = np.eye(B, D, dtype=np.float32)  # in NumPy: no eager compiles
    z2 = z1 + np.float32(0.1) * np.eye(B, D, k=1, dtype=np.float32)
    assert float(loss_jit(z1, z2, 0.01)) < 1e-6
    swapped = z2[[1, 2, 0]]  # every positive is now a different image
    assert float(loss_jit(z1, swapped, 0.01)) > 5 * float(loss_jit(z1, swapped, 0.1)) > 0


def test_symmetry_and_invariances():
    z1, z2 = views(4)
    base = loss_jit(z1, z2, 0.5)
    np.testing.assert_allclose(loss_jit(z2, z1, 0.5), base, rtol=1e-6)  # the two views swapped
    perm = np.array([3, 0, 4, 1, 2])
    np.testing.assert_allclose(loss_jit(z1[perm], z2[perm], 0.5), base, rtol=1e-6)  # images reordered
    np.testing.assert_allclose(loss_jit(3.0 * z1, 0.2 * z2, 0.5), base, rtol=1e-5)  # lengths ignored
    rotation, _ = np.linalg.qr(np.random.default_rng(5).standard_normal((7, 7)))
    np.testing.assert_allclose(loss_jit(z1 @ rotation, z2 @ rotation, 0.5), base, rtol=1e-5)


def test_edge_cases():
    z1, z2 = views(6)
    # one image: no negatives, the positive is the only candidate
    assert float(loss_jit(z1[:1], z2[:1], 0.5)) == pytest.approx(0.0, abs=1e-6)
    # a zero embedding gives a finite loss and finite gradients
    zero = z1.copy()
    zero[0] = 0.0
    assert np.isfinite(loss_jit(zero, z2, 0.5))
    assert all(np.isfinite(g).all() for g in grad_jit(zero, z2, 0.5))
    # a tiny temperature stays finite
    assert np.isfinite(loss_jit(z1, z2, 1e-4))
    # bfloat16 input: computed in float32, within the rounding of the inputs
    got = loss_jit(z1.astype(jnp.bfloat16), z2.astype(jnp.bfloat16), 0.5)  # rounded by NumPy: no eager compile
    np.testing.assert_allclose(got, numpy_nt_xent(z1, z2, 0.5), rtol=2e-2)


def test_bad_input():
    z1, z2 = views(7)
    with pytest.raises(ValueError, match="z2"):
        nt_xent(z1, z2[:3], 0.5)
    with pytest.raises(ValueError, match="z1"):
        nt_xent(z1[0], z2[0], 0.5)
    with pytest.raises(TypeError, match="z1"):
        nt_xent(z1.astype(np.int32), z2, 0.5)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(z1, z2, 0.0)


def test_augment():
    images = np.random.default_rng(8).random((11, 8, 8)).astype(np.float32)
    keys = jax.random.split(jax.random.key(0), 11)
    out = augment_batch(keys, images, 0.1, 0.1)
    assert out.shape == images.shape and out.dtype == images.dtype
    again = augment_batch(keys, images, 0.1, 0.1)
    np.testing.assert_array_equal(out, again)  # the same keys, the same views
    other = augment_batch(jax.random.split(jax.random.key(1), 11), images, 0.1, 0.1)
    assert not np.allclose(out, other)
    # with no noise and no dropped pixels, each view is its image shifted by at most one pixel
    clean = np.asarray(augment_batch(keys, images, 0.0, 0.0))
    for view, image in zip(clean, images):
        padded = np.pad(image, 1)
        assert any(np.array_equal(view, padded[i:i + 8, j:j + 8]) for i in range(3) for j in range(3))
    assert not all(np.array_equal(view, image) for view, image in zip(clean, images))  # some moved
    with pytest.raises(TypeError, match="max_shift"):
        augment(jax.random.key(0), images[0], max_shift=1.5)
    with pytest.raises(ValueError, match="drop"):
        augment(jax.random.key(0), images[0], drop=1.0)
    with pytest.raises(ValueError, match="image"):
        augment(jax.random.key(0), images)


def test_encode_bad_params():
    params = init(jax.random.key(0), sizes=(64, 16, 8))  # the page's example's sizes: its programs
    W1 = np.asarray(params[1]["W"])  # sliced in NumPy: no eager compile
    image = np.zeros((8, 8), np.float32)
    assert encode(params, image).shape == (8,)
    with pytest.raises(ValueError, match=r"params\[1\]"):
        encode([params[0], {"W": W1[:2], "b": params[1]["b"]}], image)
    with pytest.raises(ValueError, match="params"):
        encode(params, np.zeros((7, 8), np.float32))
    with pytest.raises(TypeError, match="sizes"):
        init(jax.random.key(0), sizes=(64, 5.0))


# ---- It learns: SimCLR on scikit-learn's digits, no labels ---------------------------------------

def knn_accuracy(train_embeddings, train_labels, test_embeddings, test_labels, k=10):
    a = train_embeddings / np.linalg.norm(train_embeddings, axis=1, keepdims=True)
    b = test_embeddings / np.linalg.norm(test_embeddings, axis=1, keepdims=True)
    nearest = np.argsort(-(b @ a.T), axis=1)[:, :k]
    votes = np.array([np.bincount(train_labels[row], minlength=10).argmax() for row in nearest])
    return float((votes == test_labels).mean())


@pytest.fixture(scope="module")
def digits_run():
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32).reshape(-1, 8, 8)
    X_train, X_test = X[:1000], X[1000:1500]
    B, steps = 128, 400
    opt = optax.adam(1e-2)
    views = jax.vmap(lambda k, x: augment(k, x, max_shift=1, noise=0.1, drop=0.2))

    @jax.jit
    def train(params, key):
        def step(carry, key):
            params, state = carry
            k_i, k_1, k_2 = jax.random.split(key, 3)
            x = jnp.asarray(X_train)[jax.random.choice(k_i, 1000, (B,), replace=False)]
            v1, v2 = views(jax.random.split(k_1, B), x), views(jax.random.split(k_2, B), x)

            def loss(p):
                e = jax.vmap(encode, in_axes=(None, 0))
                return nt_xent(e(p, v1), e(p, v2), 0.1)

            value, grads = jax.value_and_grad(loss)(params)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), value
        (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, steps))
        return params, losses

    k_init, k_train = jax.random.split(jax.random.key(0))
    params0 = init(k_init, sizes=(64, 128, 8))
    params, losses = train(params0, k_train)

    def embed(p, images):  # in NumPy: no compile for the two evaluation shapes
        p = jax.tree.map(np.asarray, p)
        h = np.maximum(images.reshape(len(images), -1) @ p[0]["W"] + p[0]["b"], 0.0)
        return h @ p[1]["W"] + p[1]["b"]

    def accuracy(p):
        return knn_accuracy(embed(p, X_train), y[:1000], embed(p, X_test), y[1000:1500])

    return accuracy(params0), accuracy(params), np.asarray(losses)


def test_simclr_learns_digits_without_labels(digits_run):
    random_accuracy, trained_accuracy, losses = digits_run
    assert losses[-20:].mean() < losses[:20].mean() - 1.0
    assert trained_accuracy >= 0.90
    assert trained_accuracy >= random_accuracy + 0.10
