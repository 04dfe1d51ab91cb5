import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from cookbook.graphs.group_convolution import (apply, correlate, group_conv, group_filters, init, lift,
                                               lifted_filters, rotate)

H, W, C, C1, C2, CLASSES = 7, 5, 3, 2, 5, 3  # a non-square image: a quarter turn swaps H and W
# lift, group_conv and apply compile their work themselves, once per shape: no jax.jit here.


def numpy_params(seed, **kwargs):
    """Parameters shaped as ``init`` makes them, every leaf drawn with NumPy (biases too) and left a
    NumPy array: ``jnp.asarray`` would compile a program for each new shape."""
    shapes = jax.eval_shape(lambda: init(jax.random.key(0), **kwargs))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (rng.standard_normal(s.shape) * 0.5).astype(np.float32), shapes)


def he_params(seed, **kwargs):
    """``init``'s parameters drawn with NumPy: He-normal weights (fan-in: all axes but the last), zero biases."""
    shapes = jax.eval_shape(lambda: init(jax.random.key(0), **kwargs))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (rng.standard_normal(s.shape) * np.sqrt(2 / np.prod(s.shape[:-1]))
                                   if len(s.shape) > 1 else np.zeros(s.shape)).astype(np.float32), shapes)


@pytest.fixture(scope="module")
def setup():
    params = numpy_params(0, in_channels=C, channels=(C1, C2), num_classes=CLASSES)
    # A NumPy image: the tests turn and crop it, and compare results, in NumPy (no eager program per shape).
    x = np.random.default_rng(1).standard_normal((H, W, C)).astype(np.float32)
    return params, x


# ---- Against references --------------------------------------------------------------------------

def _conv_reference(x, w):
    return lax.conv_general_dilated(x[None], w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision=lax.Precision.HIGHEST)[0]


R_INVERSE = np.array([[0, 1], [-1, 0]])  # R^{-1} (a, b) = (b, -a): jnp.rot90 turns A into A(R^{-1} z)


def _turned_offset(z, r):
    """R^{-r} z, for an offset z = (row, column) from the filter's centre."""
    return np.linalg.matrix_power(R_INVERSE, r % 4) @ np.asarray(z)


def lift64(W, b, x):
    """The lifting layer from its definition: out(t, r) = sum_z f(t + z) psi(R^{-r} z), in float64."""
    W, b, x = np.float64(W), np.float64(b), np.float64(x)
    k, m = W.shape[0], W.shape[0] // 2
    padded = np.pad(x, ((m, m), (m, m), (0, 0)))
    out = np.zeros((4,) + x.shape[:2] + (W.shape[-1],))
    for r in range(4):
        for a in range(-m, m + 1):
            for c in range(-m, m + 1):
                i, j = _turned_offset((a, c), r) + m
                out[r] += padded[m + a:m + a + x.shape[0], m + c:m + c + x.shape[1]] @ W[i, j]
    return out + b


def group64(W, b, F):
    """The group convolution from its definition:
    out(t, r) = sum_s sum_z F(t + z, s) Psi(R^{-r} z, s - r), in float64."""
    W, b, F = np.float64(W), np.float64(b), np.float64(F)
    m = W.shape[1] // 2
    padded = np.pad(F, ((0, 0), (m, m), (m, m), (0, 0)))
    out = np.zeros(F.shape[:3] + (W.shape[-1],))
    for r in range(4):
        for s in range(4):
            for a in range(-m, m + 1):
                for c in range(-m, m + 1):
                    i, j = _turned_offset((a, c), r) + m
                    out[r] += padded[s, m + a:m + a + F.shape[1], m + c:m + c + F.shape[2]] @ W[(s - r) % 4, i, j]
    return out + b


def test_correlate_matches_lax_conv(setup):
    params, x = setup
    w = params["lift"]["W"]
    np.testing.assert_allclose(correlate(x, w), _conv_reference(x, w), rtol=1e-5, atol=1e-5)


def test_lift_matches_lax_conv_with_four_turned_filters_and_the_definition(setup):
    params, x = setup
    got = lift(params["lift"], x)
    w, b = params["lift"]["W"], params["lift"]["b"]
    stacked = np.concatenate([np.rot90(np.asarray(w), r, axes=(0, 1)) for r in range(4)], axis=3)  # (k, k, C, 4 O)
    via_lax = np.moveaxis(np.asarray(_conv_reference(x, stacked)).reshape(H, W, 4, C1), 2, 0) + np.asarray(b)
    np.testing.assert_allclose(got, via_lax, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, lift64(w, b, x), rtol=1e-5, atol=1e-5)
    # The expanded filters are exact copies of the turned filter.
    np.testing.assert_array_equal(np.asarray(lifted_filters(w))[:, :, :, 1], np.rot90(np.asarray(w)))
    # Gradients with respect to the filter (through the gather of the expanded filters and the im2col
    # patches) agree with those through the library convolution.
    cotangent = np.random.default_rng(8).standard_normal(got.shape).astype(np.float32)

    def through_lax(w):
        stacked = jnp.concatenate([jnp.rot90(w, r, axes=(0, 1)) for r in range(4)], axis=3)
        return jnp.sum(jnp.moveaxis(_conv_reference(x, stacked).reshape(H, W, 4, C1), 2, 0) * cotangent)

    grad = jax.jit(jax.grad(lambda w: jnp.sum(lift({"W": w, "b": b}, x) * cotangent)))(w)
    np.testing.assert_allclose(grad, jax.jit(jax.grad(through_lax))(w), rtol=1e-4, atol=1e-4)


def test_group_conv_matches_the_definition(setup):
    params, x = setup
    F = np.random.default_rng(2).standard_normal((4, H, W, C1)).astype(np.float32)
    layer = params["convs"][0]
    np.testing.assert_allclose(group_conv(layer, F), group64(layer["W"], layer["b"], F), rtol=1e-5, atol=1e-5)
    # Slot [..., s, :, r, :] of the expanded filter is the plane s - r turned by r.
    np.testing.assert_array_equal(np.asarray(group_filters(layer["W"]))[:, :, 0, :, 3],
                                  np.rot90(np.asarray(layer["W"])[1], 3))
    # The page: an ordinary convolution of the same width (4 C planes in, 4 O out) has 4 times the parameters.
    assert group_filters(layer["W"]).size == 4 * layer["W"].size


# ---- The symmetry, exactly ------------------------------------------------------------------------

def test_quarter_turns_act_by_turning_and_cycling_the_planes(setup):
    params, x = setup
    F = lift(params["lift"], x)  # (4, 7, 5, C1): a quarter turn makes it (4, 5, 7, C1)
    np.testing.assert_allclose(lift(params["lift"], np.rot90(x)), rotate(F, 1), rtol=0,
                               atol=1e-6 * float(np.abs(F).max()))
    x = x[:W, :W]  # square from here on: one shape for every turn
    F = lift(params["lift"], x)
    G = group_conv(params["convs"][0], np.maximum(F, 0))  # ReLU
    scale = float(np.abs(G).max())
    logits = apply(params, x)
    for u in (1, 2, 3):
        x_u = np.rot90(x, u)
        F_u = lift(params["lift"], x_u)
        np.testing.assert_allclose(F_u, rotate(F, u), rtol=0, atol=1e-6 * float(np.abs(F).max()))
        G_u = group_conv(params["convs"][0], np.maximum(F_u, 0))
        np.testing.assert_allclose(G_u, rotate(G, u), rtol=0, atol=1e-6 * scale)
        # Turning the planes without cycling them is not the action.
        assert not np.allclose(G_u, np.rot90(G, u, axes=(1, 2)), atol=1e-2 * scale)
        np.testing.assert_allclose(apply(params, x_u), logits, rtol=1e-5, atol=1e-5)
    # The action is a group action: four quarter turns are the identity, and -1 is 3.
    np.testing.assert_array_equal(rotate(rotate(G, 3), 1), G)
    np.testing.assert_array_equal(rotate(G, -1), rotate(G, 3))


def test_an_ordinary_convolution_is_not_rotation_equivariant(setup):
    params, x = setup
    w = params["lift"]["W"]
    turned_out = correlate(np.rot90(x), w)
    assert not np.allclose(turned_out, np.rot90(correlate(x, w)), atol=1e-2)


def test_input_gradient_of_the_invariant_output_turns_with_the_input(setup):
    # Gradients are JAX's own (nothing here is custom); what the page adds is that they respect the
    # symmetry too: the gradient of an invariant output is equivariant.
    params, x = setup
    square = x[:W, :W]
    grad = jax.jit(jax.grad(lambda p, x: apply(p, x)[1], argnums=1))
    np.testing.assert_allclose(grad(params, np.rot90(square)), np.rot90(grad(params, square)), rtol=1e-5, atol=1e-6)


def test_edge_cases(setup):
    params, _ = setup
    # A 1 x 1 image: only the centre of each filter touches it, and the four planes are equal.
    one = np.ones((1, 1, C), np.float32)
    F = np.asarray(lift(params["lift"], one))
    np.testing.assert_allclose(F, np.broadcast_to(F[:1], F.shape), rtol=1e-6)
    # A 5 x 5 filter keeps the equivariance.
    p5 = numpy_params(3, in_channels=C, channels=(C1, C2), num_classes=CLASSES, kernel_size=5)
    x = np.random.default_rng(4).standard_normal((H, H, C)).astype(np.float32)
    F5 = lift(p5["lift"], x)
    np.testing.assert_allclose(lift(p5["lift"], np.rot90(x, 3)), rotate(F5, 3), rtol=0, atol=1e-5)


# ---- It learns: upright digits in training, turned digits at test time ----------------------------

STEPS, BATCH, TRAIN = 200, 32, 1200


def plain_init(seed, c1=8, c2=16, classes=10):
    rng = np.random.default_rng(seed)
    draw = lambda shape, fan_in: (rng.standard_normal(shape) * np.sqrt(2 / fan_in)).astype(np.float32)
    zeros = lambda n: np.zeros(n, np.float32)
    return {"W1": draw((3, 3, 1, c1), 9), "b1": zeros(c1), "W2": draw((3, 3, c1, c2), 9 * c1),
            "b2": zeros(c2), "W3": draw((c2, classes), 2 * c2), "b3": zeros(classes)}


def plain_apply(p, x):
    """An ordinary CNN of the same depth and pooling as the p4 network, with about as many parameters."""
    h = jax.nn.relu(correlate(x, p["W1"]) + p["b1"][None, None, :])
    h = jax.nn.relu(correlate(h, p["W2"]) + p["b2"][None, None, :])
    return jnp.max(h, axis=(0, 1)) @ p["W3"] + p["b3"]


@pytest.fixture(scope="module")
def digits_accuracies():
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Placed with jax.device_put (indexed by traced batches below): jnp.asarray would compile a program each.
    X = jax.device_put((digits.images[..., None] / 16.0).astype(np.float32))  # (1797, 8, 8, 1)
    y = jax.device_put(digits.target.astype(np.int32))
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:TRAIN], order[TRAIN:]
    batches = jax.device_put(np.random.default_rng(1).choice(train, (STEPS, BATCH)).astype(np.int32))
    # Initial parameters drawn with NumPy, He-normal as init draws them: no random kernel to compile.
    params = {"p4": he_params(2, in_channels=1, channels=(4, 8), num_classes=10), "plain": plain_init(3)}
    models = {"p4": apply, "plain": plain_apply}
    opt = optax.adam(0.02)

    def loss(params, idx):
        # The two losses share no parameter, so Adam trains the two models as if apart.
        return sum(optax.softmax_cross_entropy_with_integer_labels(
            jax.vmap(models[name], (None, 0))(params[name], X[idx]), y[idx]).mean() for name in models)

    @jax.jit
    def train_and_test(params):
        def step(state, idx):
            params, opt_state = state
            updates, opt_state = opt.update(jax.grad(loss)(params, idx), opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, _), _ = lax.scan(step, (params, opt.init(params)), batches)
        turned = jnp.concatenate([jnp.rot90(X[test], u, axes=(1, 2)) for u in range(4)])  # (4 n, 8, 8, 1)
        return {name: jnp.mean((jnp.argmax(jax.vmap(models[name], (None, 0))(params[name], turned), -1)
                                == jnp.tile(y[test], 4)).reshape(4, -1), axis=1) for name in models}, params

    accuracies, trained = train_and_test(params)
    sizes = {name: sum(leaf.size for leaf in jax.tree.leaves(trained[name])) for name in models}
    return {name: np.asarray(a) for name, a in accuracies.items()}, sizes


def test_p4_network_keeps_its_accuracy_on_turned_digits_where_a_plain_cnn_does_not(digits_accuracies):
    accuracies, sizes = digits_accuracies
    # Measured (200 Adam steps of 32 upright digits): p4 0.814 at every turn; plain CNN 0.928 upright,
    # 0.111, 0.337 and 0.121 turned by 90, 180 and 270 degrees (the 180-degree turn of a 0, 1 or 8
    # still looks like one).
    assert sizes == {"p4": 1290, "plain": 1418}
    p4, plain = accuracies["p4"], accuracies["plain"]
    assert p4.min() >= 0.75
    np.testing.assert_array_equal(p4, p4[0])  # exactly invariant: the same answers at every quarter turn
    assert plain[0] >= 0.88
    assert plain[1] < 0.20 and plain[3] < 0.20
    assert p4[0] < plain[0]  # the price of invariance where orientation matters (a 6 is a turned 9)


# ---- Bad input ----------------------------------------------------------------------------------

def test_bad_input_raises_clear_errors(setup):
    params, x = setup
    with pytest.raises(ValueError, match=r"x must have shape \(7, 5, 3\) \(C from params\)"):
        lift(params["lift"], x[:, :, :2])
    with pytest.raises(ValueError, match=r"features must have 4 rotation planes"):
        group_conv(params["convs"][0], np.zeros((3, H, W, C1), np.float32))
    with pytest.raises(ValueError, match=r"params\['W'\] must be square with an odd size"):
        group_conv({"W": np.zeros((4, 2, 2, C1, C2), np.float32), "b": np.zeros(C2, np.float32)},
                   np.zeros((4, H, W, C1), np.float32))
    with pytest.raises(ValueError, match=r"kernel_size must be odd"):
        init(jax.random.key(0), kernel_size=4)
    with pytest.raises(TypeError, match=r"x must be a floating-point array"):
        apply(params, np.ones((H, W, C), np.int32))
    with pytest.raises(TypeError, match=r"turns must be an int"):
        rotate(np.zeros((4, H, W, C1), np.float32), 1.0)
    with pytest.raises(ValueError, match=r"params\['convs'\]\[0\]\['W'\] must have shape"):
        wide = {"W": np.zeros((4, 3, 3, C1 + 1, C2), np.float32), "b": np.zeros(C2, np.float32)}
        apply({**params, "convs": [wide]}, x)
