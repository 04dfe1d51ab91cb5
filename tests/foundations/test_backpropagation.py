import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.foundations.backpropagation import (
    apply,
    backward,
    forward,
    gradient_by_jvp,
    gradient_by_vjp,
    init,
    jacobian_by_jvp,
    jacobian_by_vjp,
    loss,
    loss_and_grads,
    mean_loss_and_grads,
)

NAMES = ("W1", "b1", "W2", "b2")


def _problem(seed, sizes, B=None):
    """Random parameters and data, drawn with NumPy (cheap: no compilation per shape)."""
    rng = np.random.default_rng(seed)
    D, H, K = sizes
    params = {
        "W1": rng.normal(size=(D, H)) / np.sqrt(D),
        "b1": 0.1 * rng.normal(size=H),
        "W2": rng.normal(size=(H, K)) / np.sqrt(H),
        "b2": 0.1 * rng.normal(size=K),
    }
    shape = (D,) if B is None else (B, D)
    params = {n: p.astype(np.float32) for n, p in params.items()}  # NumPy float32: nothing compiled
    return params, rng.normal(size=shape).astype(np.float32), rng.integers(0, K, shape[:-1]).astype(np.int32)


@jax.jit
def _ours_and_jax_grad(params, X, y):
    """Hand-written and jax.grad gradients of each example of X, both activations, compiled once per shape."""
    out = {}
    for activation in ("tanh", "relu"):
        ours = jax.vmap(loss_and_grads, in_axes=(None, 0, 0, None))(params, X, y, activation)
        ref = jax.vmap(jax.value_and_grad(loss), in_axes=(None, 0, 0, None))(params, X, y, activation)
        out[activation] = (ours, ref)
    return out


@pytest.mark.parametrize("sizes", [(3, 5, 7), (7, 11, 3), (11, 3, 5)])
def test_hand_written_gradients_equal_jax_grad(sizes):
    params, X, y = _problem(0, sizes, B=13)  # 13 random examples, each differentiated on its own
    for activation, ((values, grads), (ref_values, reference)) in _ours_and_jax_grad(params, X, y).items():
        np.testing.assert_allclose(values, ref_values, rtol=1e-6)
        for name in NAMES:  # float32: agreement to rounding
            assert grads[name].shape == (13,) + params[name].shape
            np.testing.assert_allclose(
                grads[name], reference[name], rtol=1e-5, atol=1e-6, err_msg=f"{activation} {name}"
            )


def test_batch_gradients_equal_jax_grad_of_the_mean_loss():
    params, X, y = _problem(4, (5, 7, 3), B=11)

    @jax.jit
    def both(params, X, y):
        mean_loss = lambda p: jax.vmap(loss, in_axes=(None, 0, 0, None))(p, X, y, "relu").mean()
        return mean_loss_and_grads(params, X, y, "relu"), jax.value_and_grad(mean_loss)(params)

    (value, grads), (ref_value, reference) = both(params, X, y)
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    for name in NAMES:
        np.testing.assert_allclose(grads[name], reference[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_gradient_matches_central_differences_in_float64():
    # Independent of jax.grad: <grad, d> against (L(p + eps d) - L(p - eps d)) / (2 eps).
    params, x, y = _problem(5, (3, 5, 7))
    rng = np.random.default_rng(6)
    direction = {n: rng.normal(size=params[n].shape).astype(np.float32) for n in NAMES}

    @jax.jit
    def both(params, x, y, direction):
        params, x, direction = jax.tree.map(lambda a: a.astype(jnp.float64), (params, x, direction))
        eps = 1e-6
        shifted = lambda s: jax.tree.map(lambda p, d: p + s * eps * d, params, direction)
        numeric = (loss(shifted(1.0), x, y) - loss(shifted(-1.0), x, y)) / (2 * eps)
        _, grads = loss_and_grads(params, x, y)
        return sum(jnp.vdot(grads[n], direction[n]) for n in NAMES), numeric

    with jax.enable_x64(True):
        analytic, numeric = both(params, x, y, direction)
        assert analytic.dtype == jnp.float64
    np.testing.assert_allclose(analytic, numeric, rtol=1e-7)  # O(eps^2) truncation, float64 rounding


def test_output_error_signal_is_probabilities_minus_one_hot():
    params, x, y = _problem(7, (3, 5, 7))

    @jax.jit
    def signals(params, x, y):
        _, cache = forward(params, x, y)
        logits = jnp.tanh(x @ params["W1"] + params["b1"]) @ params["W2"] + params["b2"]
        probs = jax.nn.softmax(logits)
        return cache["p"], backward(params, cache, y)["b2"], probs.at[y].add(-1.0), jax.nn.softmax(apply(params, x))

    p, delta2, expected, from_apply = signals(params, x, y)
    np.testing.assert_allclose(p, from_apply, rtol=1e-5, atol=1e-7)  # apply is the same forward pass
    np.testing.assert_allclose(delta2, expected, rtol=1e-5, atol=1e-7)
    assert abs(float(np.asarray(delta2).sum())) < 1e-6  # probabilities and one-hot both sum to 1
    np.testing.assert_allclose(np.asarray(p).sum(), 1.0, rtol=1e-6)


def test_loss_matches_optax_cross_entropy_and_huge_logits_stay_finite():
    import optax

    params, X, y = _problem(8, (5, 7, 3), B=11)

    @jax.jit
    def both(params, X, y):
        h = jnp.tanh(X @ params["W1"] + params["b1"][None, :])
        logits = h @ params["W2"] + params["b2"][None, :]
        reference = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return jax.vmap(loss_and_grads, in_axes=(None, 0, 0))(params, X, y), reference

    (ours, _), reference = both(params, X, y)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)
    huge = dict(params, W2=params["W2"] * 1e4)  # logits of order 1e4: a naive exp would overflow
    (values, grads), _ = both(huge, X, y)
    assert np.all(np.isfinite(values)) and all(np.all(np.isfinite(grads[n])) for n in NAMES)


def _smooth_function(seed, n, m):
    """A small nonlinear function from n inputs to m outputs, and a point to differentiate it at."""
    rng = np.random.default_rng(seed)
    A, B = rng.normal(size=(n, 5)).astype(np.float32), rng.normal(size=(5, m)).astype(np.float32)
    return (lambda u: jnp.tanh(u @ A) @ B), rng.normal(size=n).astype(np.float32)


@pytest.mark.parametrize("n, m", [(3, 5), (11, 1)])
def test_jacobians_by_columns_and_rows_equal_jacfwd_and_jacrev(n, m):
    f, u = _smooth_function(n, n, m)
    everything = jax.jit(lambda u: (jacobian_by_jvp(f, u), jacobian_by_vjp(f, u), jax.jacfwd(f)(u), jax.jacrev(f)(u)))
    by_jvp, by_vjp, ref_fwd, ref_rev = everything(u)
    assert by_jvp.shape == by_vjp.shape == (m, n)
    np.testing.assert_allclose(by_jvp, ref_fwd, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(by_vjp, ref_rev, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(by_jvp, by_vjp, rtol=1e-5, atol=1e-6)


def test_jacobian_of_a_linear_map_is_its_matrix_by_hand():
    M = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)  # f(u) = M u, from 2 inputs to 3 outputs
    u = np.array([0.3, -0.7], np.float32)
    np.testing.assert_array_equal(jacobian_by_jvp(lambda v: M @ v, u), M)
    np.testing.assert_array_equal(jacobian_by_vjp(lambda v: M @ v, u), M)


@pytest.mark.parametrize("n", [3, 7, 11])
def test_reverse_mode_needs_one_pass_forward_mode_needs_n(n):
    f_inner, u = _smooth_function(20 + n, n, 1)
    calls = {"count": 0}

    def f(x):
        calls["count"] += 1  # once per evaluation (trace) of f by a jvp or a vjp
        return f_inner(x)[0]

    @jax.jit  # one program per n; f is evaluated (traced) once per pass all the same
    def both_modes_and_reference(u):
        calls["count"] = 0
        forward_grad = gradient_by_jvp(f, u)
        forward_calls, calls["count"] = calls["count"], 0
        reverse_grad = gradient_by_vjp(f, u)
        counts.update(forward=forward_calls, reverse=calls["count"])
        return forward_grad, reverse_grad, jax.grad(lambda x: f_inner(x)[0])(u)

    counts = {}
    forward_grad, reverse_grad, reference = both_modes_and_reference(u)
    assert (counts["forward"], counts["reverse"]) == (n, 1)
    np.testing.assert_allclose(forward_grad, reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reverse_grad, reference, rtol=1e-5, atol=1e-6)


def test_reverse_mode_stores_activations_that_grow_with_depth():
    x = np.linspace(-1.0, 1.0, 7, dtype=np.float32)

    def stored_floats(depth):
        def f(u):
            for _ in range(depth):
                u = jnp.tanh(u)
            return u.sum()

        _, pullback = jax.vjp(f, x)  # the pullback closes over the residuals the backward pass needs
        return sum(leaf.size for leaf in jax.tree.leaves(pullback))

    shallow, deep = stored_floats(3), stored_floats(12)
    assert shallow >= 3 * x.size  # at least one vector per layer
    assert deep >= 3.5 * shallow  # four times the layers, about four times the memory


def test_init_shapes_and_scale():
    params = init(jax.random.key(0), (4, 5, 3))  # its compiled core: the page's program
    assert {n: params[n].shape for n in NAMES} == {"W1": (4, 5), "b1": (5,), "W2": (5, 3), "b2": (3,)}
    assert np.unique(np.asarray(params["W1"])).size == 20  # random, not a constant
    assert not np.any(np.asarray(params["b1"])) and not np.any(np.asarray(params["b2"]))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda p: forward(p, np.ones(4), np.array(0)), r"x must have shape \(3,\) \(\(D,\) to match"),
        (lambda p: forward(p, np.ones(3), np.array([0, 1])), r"y must have 0 axes \(one label\)"),
        (lambda p: apply(p, np.ones((2, 3))), r"x must have shape \(3,\) \(\(D,\) to match"),
        (lambda p: forward(p, np.ones(3), np.array(0), "sigmoid"), r"activation must be one of"),
        (lambda p: mean_loss_and_grads(p, np.ones((4, 3)), np.ones(5, int)), r"y must have shape \(4,\)"),
        (lambda p: mean_loss_and_grads(p, np.ones((4, 5)), np.ones(4, int)), r"X must have shape \(4, 3\)"),
        (lambda p: init(jax.random.key(0), (3, 5)), r"sizes must be a tuple \(D, H, K\)"),
        (lambda p: jacobian_by_jvp(jnp.sin, np.ones((2, 3))), r"x must have 1 axes \(a vector"),
        (lambda p: jacobian_by_vjp(jnp.sum, np.ones(3)), r"f must return a vector"),
        (lambda p: gradient_by_vjp(jnp.sin, np.ones(3)), r"f must return a scalar"),
        (lambda p: forward(dict(p, b1=np.zeros(4)), np.ones(3), np.array(0)), r"params\['b1'\] must have shape \(5,\)"),
        (lambda p: backward(p, {"x": np.ones(3), "a": np.ones(5), "h": np.ones(4), "p": np.ones(7)}, 0),
         r"cache\['h'\] must have shape \(5,\)"),
    ],
)
def test_bad_input_raises_clear_errors(call, match):
    params = {"W1": np.ones((3, 5)), "b1": np.zeros(5), "W2": np.ones((5, 7)), "b2": np.zeros(7)}
    with pytest.raises(ValueError, match=match):
        call(params)


PARAMS = {"W1": np.ones((3, 5)), "b1": np.zeros(5), "W2": np.ones((5, 7)), "b2": np.zeros(7)}


@pytest.mark.parametrize("label", [-1, 7])
def test_labels_outside_the_classes_raise(label):
    # Before, -1 gave the loss of class K - 1 and 7 (= K) was clamped to class K - 1, in silence.
    with pytest.raises(ValueError, match=r"y must lie in \[0, 7\)"):
        forward(PARAMS, np.ones(3), np.array(label))
    with pytest.raises(ValueError, match=r"y must lie in \[0, 7\)"):
        mean_loss_and_grads(PARAMS, np.ones((2, 3)), np.array([0, label]))


def test_a_bad_label_under_jit_gives_a_nan_loss():
    jitted = jax.jit(loss)
    assert np.isnan(float(jitted(PARAMS, np.ones(3), np.array(-1))))
    assert np.isnan(float(jitted(PARAMS, np.ones(3), np.array(7))))
    assert np.isfinite(float(jitted(PARAMS, np.ones(3), np.array(6))))


@pytest.mark.parametrize("call, name", [
    (lambda: forward(PARAMS, np.ones(3, int), np.array(0)), "x"),
    (lambda: forward(PARAMS, np.ones(3), np.array(0.0)), "y"),
    (lambda: apply(dict(PARAMS, W1=np.ones((3, 5), int)), np.ones(3)), r"params\['W1'\]"),
    (lambda: jacobian_by_vjp(jnp.sin, np.arange(3)), "x"),
    (lambda: init(jax.random.key(0), (3, 5, 2.5)), r"sizes\[2\]"),
])
def test_wrong_dtypes_raise_type_errors(call, name):
    with pytest.raises(TypeError, match=rf"{name} must be a"):
        call()


def test_lists_are_accepted():
    np.testing.assert_allclose(jacobian_by_jvp(jnp.sin, [0.0, 0.0]), np.eye(2))
