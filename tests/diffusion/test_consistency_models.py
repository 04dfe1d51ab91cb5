import jax
import numpy as np
import pytest

from cookbook.diffusion.consistency_models import (
    consistency_function,
    distillation_loss,
    distilled_moons,
    sample,
)
from cookbook.diffusion.ddpm import denoiser_init, mmd2, two_moons
from cookbook.diffusion.edm import heun_sample, trained_moons_edm

# The shapes of the page's network: its compiled programs (consistency_function's, sample's) serve
_SHAPES = [(layer["W"].shape, layer["b"].shape)
           for layer in jax.eval_shape(lambda key: denoiser_init(key, 2), jax.random.key(0))]


def _params(seed=0, bias=(0.0, 0.0), scale=1.0):
    """Random weights in NumPy (no jax.random program per shape), the last bias ``bias``."""
    rng = np.random.default_rng(seed)
    layers = [{"W": (scale * rng.standard_normal(w)).astype(np.float32), "b": np.zeros(b, np.float32)}
              for w, b in _SHAPES]
    layers[-1]["b"] = np.asarray(bias, np.float32)
    return layers


def test_the_boundary_condition_holds_exactly_for_any_network():
    x = (np.random.default_rng(1).standard_normal((5, 2)) * 3).astype(np.float32)
    for seed, scale in ((0, 1.0), (1, 100.0)):
        params = _params(seed, bias=(5.0, -7.0), scale=scale)
        for point in x:  # one point at a time: the program of the page's example
            np.testing.assert_array_equal(consistency_function(params, point, np.float32(0.002)), point)


@pytest.mark.parametrize("sigma", [0.01, 1.0, 80.0])
def test_skip_and_output_scales_match_their_closed_forms(sigma):
    eps, sd = 0.002, 1.0
    c_skip = sd**2 / ((sigma - eps) ** 2 + sd**2)
    c_out = sd * (sigma - eps) / np.sqrt(sigma**2 + sd**2)
    x = np.array([0.7, -1.3], np.float32)
    zero = _params(bias=(2.0, 3.0), scale=0.0)
    # the network outputs its bias (2, 3) whatever its input: f = c_skip x + c_out (2, 3)
    np.testing.assert_allclose(consistency_function(zero, x, np.float32(sigma)),
                               c_skip * np.array([0.7, -1.3]) + c_out * np.array([2.0, 3.0]), rtol=1e-5)


def test_the_loss_is_positive_with_finite_gradients():
    params, teacher = _params(2, scale=0.3), _params(3, scale=0.3)
    y = np.random.default_rng(4).standard_normal((11, 2)).astype(np.float32)
    # the value and the gradients in one program (jax.grad alone compiled three)
    value, grads = jax.jit(jax.value_and_grad(distillation_loss))(params, teacher, y, jax.random.key(5))
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    assert float(value) > 0


@pytest.fixture(scope="module")
def quality():
    teacher, _ = trained_moons_edm()
    params, _ = distilled_moons()
    data, other = two_moons(jax.random.key(3), 1000), two_moons(jax.random.key(4), 1000)
    score = lambda x: float(mmd2(x, data))
    return {"baseline": score(other), "one": score(sample(params, jax.random.key(5), 1000, 1)),
            "two": score(sample(params, jax.random.key(5), 1000, 2)),
            "undistilled": score(sample(teacher, jax.random.key(5), 1000, 1)),
            "heun2": score(jax.jit(heun_sample, static_argnums=(2, 3))(teacher, jax.random.key(5), 1000, 2))}


def test_it_learns_one_and_two_step_generation(quality):
    # measured: one step 0.014, two 0.010, data against data 0.008; before distillation 2.0;
    # the teacher's Heun with two levels (three evaluations) 0.50
    b = quality["baseline"]
    assert quality["one"] < 2 * b and quality["two"] < 2 * b
    assert quality["undistilled"] > 100 * b and quality["heun2"] > 30 * b


@pytest.mark.parametrize("call, match", [
    (lambda p: consistency_function(p, np.ones(3, np.float32), np.float32(1.0)), r"x must have shape \(2,\)"),
    (lambda p: consistency_function(p, np.ones(2, np.float32), np.ones(2, np.float32)), r"sigma must have 0 axes"),
    (lambda p: distillation_loss(p, p, np.ones((3, 3), np.float32), jax.random.key(0)), r"y must have shape \(3, 2\)"),
    (lambda p: sample(p, jax.random.key(0), 3, 0), "num_steps must be at least 1"),
])
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call(_params())


def test_integer_input_raises_type_error():
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        consistency_function(_params(), np.ones(2, np.int32), np.float32(1.0))
