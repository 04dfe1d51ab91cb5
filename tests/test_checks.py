"""The boundary checks that every recipe uses for bad input (``cookbook/_checks.py``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook import _checks


def test_float_array_accepts_lists_and_numpy_and_rejects_integers():
    assert _checks.float_array([1.0, 2.0], "x").dtype == jnp.float32
    assert isinstance(_checks.float_array(np.ones(3, np.float32), "x"), jax.Array)
    with pytest.raises(TypeError, match=r"x must be a floating-point array, got dtype int32"):
        _checks.float_array(jnp.arange(3), "x")
    with pytest.raises(TypeError, match=r"x must be an array, got str"):
        _checks.float_array("abc", "x")
    with pytest.raises(ValueError, match=r"x must have 2 axes \(T, D\), got shape \(3,\)"):
        _checks.float_array(jnp.ones(3), "x", ndim=2, what=" (T, D)")
    with pytest.raises(ValueError, match=r"at least 3 axes"):
        _checks.float_array(jnp.ones((2, 2)), "x", min_ndim=3)


def test_queries_keys_values_names_the_mismatch():
    q, k, v, T = _checks.queries_keys_values([[1.0, 2.0]] * 3, jnp.ones((3, 2)), jnp.ones((3, 5)))
    assert T == 3 and q.shape == (3, 2) and v.shape == (3, 5)
    with pytest.raises(ValueError, match=r"q and k must have the same shape \(T, Dk\)"):
        _checks.queries_keys_values(jnp.ones((3, 2)), jnp.ones((3, 4)), jnp.ones((3, 5)))
    with pytest.raises(ValueError, match=r"v must have shape \(T, Dv\) with T = 3"):
        _checks.queries_keys_values(jnp.ones((3, 2)), jnp.ones((3, 2)), jnp.ones((4, 5)))
    with pytest.raises(TypeError, match=r"\bv must be a floating-point array"):
        _checks.queries_keys_values(jnp.ones((3, 2)), jnp.ones((3, 2)), jnp.ones((3, 5), jnp.int32))


def test_int_array_rejects_floats():
    assert _checks.int_array([1, 2], "labels").dtype == jnp.int32
    with pytest.raises(TypeError, match=r"labels must be an integer array, got dtype float32"):
        _checks.int_array(jnp.array([1.7]), "labels")


def test_size_rejects_floats_bools_and_small_values():
    assert _checks.size(3, "k") == 3
    for bad, error in [(2.5, TypeError), (True, TypeError), (0, ValueError), (-1, ValueError)]:
        with pytest.raises(error, match=r"\bk\b"):
            _checks.size(bad, "k")
    assert _checks.size(0, "k", minimum=0) == 0


def test_positive():
    assert _checks.positive(1e-5, "eps") == 1e-5
    with pytest.raises(ValueError, match=r"eps must be positive, got -1"):
        _checks.positive(-1, "eps")
    with pytest.raises(ValueError, match="non-negative"):
        _checks.positive(-0.1, "rate", allow_zero=True)
    assert _checks.positive(0.0, "rate", allow_zero=True) == 0.0


def test_static_number_makes_arrays_hashable_and_refuses_traced_values_by_name():
    assert _checks.static_number(jnp.array(0.01), "learning_rate") == pytest.approx(0.01)
    assert type(_checks.static_number(np.float32(0.5), "rate")) is float
    with pytest.raises(TypeError, match="learning_rate must be a concrete number.*traced"):
        jax.jit(lambda lr: _checks.static_number(lr, "learning_rate"))(0.01)


def test_range_and_nan_are_checked_when_concrete_only():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got values from -1 to 2"):
        _checks.check_range(jnp.array([0, -1, 2]), "labels", 0, 3)
    with pytest.raises(ValueError, match="logits holds NaN"):
        _checks.check_no_nan(jnp.array([0.0, jnp.nan]), "logits")
    # Under jit the values are not known: the checks pass the tracer through.
    f = jax.jit(lambda y: _checks.check_range(y, "labels", 0, 3) + 0)
    assert f(jnp.array([7])).tolist() == [7]
    # A concrete array closed over by a traced function is still checked, with NumPy.
    labels = jnp.array([0, 5])

    def body(carry, _):
        _checks.check_range(labels, "labels", 0, 3)
        return carry, None

    with pytest.raises(ValueError, match="labels must lie in"):
        jax.lax.scan(body, 0, None, length=2)
    seen = []
    jax.jit(lambda x: seen.append(_checks.is_concrete(x)) or x)(1.0)
    assert _checks.is_concrete(jnp.ones(2)) and seen == [False]


def test_same_tree_names_the_leaf():
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    _checks.same_tree({"w": jnp.ones((3, 2)), "b": jnp.ones(2)}, "grads", params, "params")
    with pytest.raises(ValueError, match=r"grads\['w'\] must have the shape of params\['w'\], \(3, 2\), got \(2, 3\)"):
        _checks.same_tree({"w": jnp.ones((2, 3)), "b": jnp.ones(2)}, "grads", params, "params")
    with pytest.raises(ValueError, match="structure"):
        _checks.same_tree({"w": jnp.ones((3, 2))}, "grads", params, "params")
    with pytest.raises(TypeError, match=r"grads\['b'\] must be a floating-point array"):
        _checks.same_tree({"w": jnp.ones((3, 2)), "b": jnp.zeros(2, jnp.int32)}, "grads", params, "params")


def test_adjacency_array_converts_booleans_and_integers_exactly():
    A = _checks.adjacency_array([[0, 1], [1, 0]])
    assert A.dtype == jnp.float32 and A.tolist() == [[0.0, 1.0], [1.0, 0.0]]
    assert _checks.adjacency_array(np.eye(3, dtype=bool)).dtype == jnp.float32
    weighted = jnp.array([[0.0, 0.5], [0.25, 0.0]])
    assert _checks.adjacency_array(weighted) is weighted
    with pytest.raises(TypeError, match=r"adjacency must be a real array \(bool, integer or float\), got dtype complex64"):
        _checks.adjacency_array(jnp.ones((2, 2), jnp.complex64))
    with pytest.raises(ValueError, match=r"adjacency must have 2 axes \(N, N\), got shape \(3,\)"):
        _checks.adjacency_array(jnp.ones(3))


def test_layers_reads_the_widths_and_names_the_broken_layer():
    params = [{"W": jnp.ones((3, 5)), "b": jnp.zeros(5)}, {"W": jnp.ones((5, 2)), "b": jnp.zeros(2)}]
    assert _checks.layers(params) == (3, 2)
    with pytest.raises(ValueError, match=r"params\[1\]\['W'\] must have shape \(5, 2\) \(to chain\), got shape \(4, 2\)"):
        _checks.layers([params[0], {"W": jnp.ones((4, 2)), "b": jnp.zeros(2)}])
    with pytest.raises(ValueError, match=r"params\[0\]\['b'\] must have shape \(5,\)"):
        _checks.layers([{"W": jnp.ones((3, 5)), "b": jnp.zeros(4)}])
    with pytest.raises(TypeError, match=r"params must be a non-empty list of \{'W', 'b'\} layers, got dict"):
        _checks.layers({"W": jnp.ones((3, 5))})


def test_scalar_or_per_row_names_what_each_entry_is():
    x = jnp.ones((4, 2))
    _checks.scalar_or_per_row(jnp.array(3), x, "x0", "step")
    _checks.scalar_or_per_row(jnp.arange(4), x, "x0", "step")
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(4,\) \(one time for each row of xt"):
        _checks.scalar_or_per_row(jnp.arange(3), x, "xt", "time")
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(B,\)"):
        _checks.scalar_or_per_row(jnp.ones((2, 2)), x, "x0", "step")
