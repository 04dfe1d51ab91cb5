"""Problems and a step-for-step comparison shared by the optimisation chapter's tests."""

import jax
import jax.numpy as jnp
import numpy as np
from cookbook.optimization.sgd import rosenbrock, run_optimizer


def _array(x, dtype=np.float32):
    """A JAX array of ``x``, put on the device as it is (``jnp.asarray`` compiles a copy per shape)."""
    return jax.device_put(np.asarray(x, dtype))


def least_squares_problem(seed=0):
    """A random least-squares problem on a pytree {"w": (5, 3), "b": (3,)}; returns (loss, params0)."""
    rng = np.random.default_rng(seed)  # NumPy draws: jax.random would compile a sampler per shape
    X = rng.standard_normal((11, 5)).astype(np.float32)
    Y = (X @ rng.standard_normal((5, 3)) + 0.1 * rng.standard_normal((11, 3))).astype(np.float32)

    def loss(params):
        return jnp.mean((X @ params["w"] + params["b"][None, :] - Y) ** 2)

    params = {"w": _array(0.1 * rng.standard_normal((5, 3))), "b": _array(np.zeros(3))}
    return loss, params


def rosenbrock_problem():
    """Three independent 2-D Rosenbrock problems as a pytree {"x": (3,), "y": (3,)}."""
    return rosenbrock, {"x": _array([-1.5, -1.0, 0.5]), "y": _array([2.0, 1.5, -0.5])}


def quadratic_problem():
    """A convex quadratic with curvatures 1 to 10 and its minimiser, on a pytree of two leaves."""
    curv = {"a": _array([1.0, 3.0, 10.0]), "b": _array(np.linspace(1.0, 5.0, 5).reshape(5, 1))}
    centre = {"a": _array([1.0, -2.0, 0.5]), "b": _array(np.full((5, 1), 0.7))}

    def loss(params):
        terms = jax.tree.map(lambda c, p, m: jnp.sum(0.5 * c * (p - m) ** 2), curv, params, centre)
        return sum(jax.tree.leaves(terms))

    params = jax.tree.map(lambda m: _array(np.zeros(m.shape)), centre)
    return loss, params, centre


PROBLEMS = {"least_squares": least_squares_problem, "rosenbrock": rosenbrock_problem}


def max_gap(a, b):
    """Largest absolute difference between two pytrees of arrays."""
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def trajectories(pairs, *, steps=100):
    """Run each (optimiser, problem name) pair ``steps`` steps from the problem's start, all in one scan.

    Returns, for each pair, the parameters after every step (each leaf gains a leading axis).
    One :func:`jax.lax.scan` means one compilation for all of them.
    """
    problems = [PROBLEMS[name]() for _, name in pairs]

    def step(carry, _):
        out = []
        for (opt, _), (loss, _), (p, s) in zip(pairs, problems, carry):
            updates, s = opt.update(jax.grad(loss)(p), s, p)
            out.append((jax.tree.map(lambda a, u: a + u, p, updates), s))
        return tuple(out), tuple(p for p, _ in out)

    def run(starts):  # the states are made inside the one program too
        carry = tuple((params, opt.init(params)) for (opt, _), params in zip(pairs, starts))
        return jax.lax.scan(step, carry, length=steps)[1]

    with jax.numpy_rank_promotion("allow"):  # optax may rank-promote internally
        paths = jax.jit(run)(tuple(params for _, params in problems))
    return paths


def assert_same_trajectory(mine, reference, problems, *, steps=100, rtol, atol):
    """Run both optimisers ``steps`` steps and compare the parameters after every step.

    ``problems`` is one problem name, or a dict from problem name to learning rate, in which case
    ``mine`` and ``reference`` are factories taking the learning rate. Returns the largest gap.
    """
    if isinstance(problems, str):
        pairs = [(mine, problems), (reference, problems)]
    else:
        pairs = [p for name, lr in problems.items() for p in ((mine(lr), name), (reference(lr), name))]
    paths = trajectories(pairs, steps=steps)
    gap = 0.0
    for ours, theirs in zip(paths[0::2], paths[1::2]):
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
            assert a.shape[0] == steps
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)
        gap = max(gap, max_gap(ours, theirs))
    return gap


def assert_converges_on_quadratic(optimizer, *, steps, atol):
    """The optimiser reaches the minimiser of a convex quadratic to ``atol``."""
    loss, params, centre = quadratic_problem()
    @jax.jit  # the run, its last parameters and their loss in one program
    def run(params):
        trajectory, losses = run_optimizer(loss, params, optimizer, steps=steps)
        final = jax.tree.map(lambda p: p[-1], trajectory)
        return final, loss(final), losses[0]

    final, final_loss, first_loss = run(params)
    assert float(final_loss) < 1e-3 * float(first_loss)
    for p, m in zip(jax.tree.leaves(final), jax.tree.leaves(centre)):
        np.testing.assert_allclose(np.asarray(p), np.asarray(m), atol=atol)


def assert_jit_agrees(optimizer, params, grads):
    """``init`` and ``update`` give the same values under :func:`jax.jit` for two steps."""
    state, state_j = optimizer.init(params), jax.jit(optimizer.init)(params)
    update_j = jax.jit(optimizer.update)
    for _ in range(2):
        u, state = optimizer.update(grads, state, params)
        u_j, state_j = update_j(grads, state_j, params)
        for a, b in zip(jax.tree.leaves((u, state)), jax.tree.leaves((u_j, state_j))):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)


def tree_and_grads():
    """A two-leaf pytree of parameters and random gradients for the jit checks."""
    rng = np.random.default_rng(42)
    params = {"w": _array(np.ones((5, 3))), "b": _array(np.zeros(3))}
    grads = {"w": _array(rng.standard_normal((5, 3))), "b": _array(rng.standard_normal(3))}
    return params, grads


def assert_update_rejects_bad_grads(optimizer, *, needs_params=False):
    """``update`` raises a clear error, naming the culprit, for gradients unlike the parameters.

    The optimisers of this chapter return closures, so the book-wide mutation test cannot reach
    their ``update``; this runs the same mutations by hand: a leaf of another shape, an extra
    leading axis, an integer dtype, a missing leaf, and a state built for other parameters.
    """
    import pytest

    params, grads = tree_and_grads()
    state = optimizer.init(params)
    passed = params if needs_params else None
    w, b = np.asarray(grads["w"]), np.asarray(grads["b"])  # the bad leaves made in NumPy, then put on the device
    bad = {
        "a trailing axis of another size": ({**grads, "w": _array(w[:, :1])}, ValueError, r"grads\['w'\] must have the shape"),
        "an extra leading axis": ({**grads, "b": _array(np.stack([b] * 2))}, ValueError, r"grads\['b'\] must have the shape"),
        "an integer dtype": ({**grads, "w": _array(w, np.int32)}, TypeError, r"grads\['w'\] must be a floating-point"),
        "a missing leaf": ({"w": grads["w"]}, ValueError, r"grads must have the structure"),
    }
    for what, (g, error, message) in bad.items():
        with pytest.raises(error, match=message):
            optimizer.update(g, state, params)
        # Without params the gradients are compared with the state, which the message names.
        with pytest.raises(error, match=r"grads"):
            optimizer.update(g, state, passed)
    # A state built for parameters of other shapes, with the right gradients.
    other = {"w": _array(np.ones((5, 4))), "b": _array(np.zeros(3))}
    with pytest.raises(ValueError, match=r"state\.\w+\['w'\] must have the shape"):
        optimizer.update(grads, optimizer.init(other), params)
    # The right input still works, eagerly and under jit.
    optimizer.update(grads, state, params)
    jax.jit(optimizer.update)(grads, state, params)
