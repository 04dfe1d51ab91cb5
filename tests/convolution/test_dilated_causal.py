import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cookbook.convolution.dilated_causal import causal_conv, receptive_field, wavenet_apply, wavenet_init
from cookbook.optimization.adam import adam


@pytest.mark.parametrize("K, dilation", [(2, 1), (3, 2), (2, 5), (4, 3)])
def test_causal_conv_equals_lax_and_a_float64_loop(K, dilation):
    # NumPy draws: jax.random would compile a sampler for every new shape
    rng = np.random.default_rng(K * 10 + dilation)
    x = rng.standard_normal((11, 3)).astype(np.float32)
    w = rng.standard_normal((K, 3, 5)).astype(np.float32)
    y = causal_conv(x, w, dilation)
    xs, ws = x.astype(np.float64), w.astype(np.float64)
    loop = np.zeros((11, 5))
    for t in range(11):
        for k in range(K):
            if t - dilation * k >= 0:
                loop[t] += xs[t - dilation * k] @ ws[k]
    np.testing.assert_allclose(np.asarray(y), loop, rtol=1e-5, atol=1e-5)
    # lax correlates, so its kernel is ours reversed; the padding sits on the left only.
    ref = jax.lax.conv_general_dilated(
        x[None], w[::-1], window_strides=(1,), padding=[(dilation * (K - 1), 0)], rhs_dilation=(dilation,),
        dimension_numbers=("NWC", "WIO", "NWC"))[0]
    np.testing.assert_allclose(np.asarray(y), np.asarray(ref), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dilations", [(1, 2, 4, 8), (1, 1, 1), (1, 3, 9)])
def test_the_measured_receptive_field_is_the_formula(dilations):
    # 8 channels, as on the page: wavenet_init draws weights of the shapes its example compiled.
    params = wavenet_init(jax.random.key(2), in_channels=1, channels=8, kernel_size=2, dilations=dilations)
    T = 40
    # The union over a few inputs, since the output ReLU can silence one input's gradient.
    xs = np.random.default_rng(3).standard_normal((5, T, 1)).astype(np.float32)
    grads = jax.jit(jax.vmap(jax.grad(lambda x: wavenet_apply(params, x, dilations)[T - 1, 0])))(xs)
    support = np.flatnonzero(np.abs(np.asarray(grads[..., 0])).sum(axis=0) > 0)
    assert support.max() == T - 1  # causal: nothing after t
    assert T - support.min() == receptive_field(2, dilations)


def test_doubling_dilations_see_2_to_the_L_steps():
    for L in range(1, 11):
        assert receptive_field(2, tuple(2**i for i in range(L))) == 2**L
        assert receptive_field(3, tuple(2**i for i in range(L))) == 1 + 2 * (2**L - 1)
    assert receptive_field(2, tuple(2**i for i in range(10))) == 1024


def test_a_dilated_stack_learns_a_delay_that_an_undilated_one_cannot_see():
    # Target: the input 20 steps ago. Five layers see 32 steps with dilations 1..16, 6 without.
    # 150 Adam steps at 2e-2 in one compiled scan, on the same batches for both stacks: ended at
    # 0.0012 dilated and 1.002 plain; with the batches of NumPy seeds 1 and 2, 0.00032 and 1.009, 0.00046 and 1.039.
    delay, T = 20, 48
    # The initial weights (the same for both stacks: same key and shapes) are drawn eagerly, at the
    # page example's shapes, and the batches with NumPy: drawn inside the compiled run, the samplers
    # took about half of its compile time.
    params = wavenet_init(jax.random.key(4), in_channels=1, channels=8, kernel_size=2, dilations=(1, 2, 4, 8, 16))
    rng = np.random.default_rng(0)
    batches = rng.standard_normal((150, 16, T, 1)).astype(np.float32)
    held_out = rng.standard_normal((64, T, 1)).astype(np.float32)

    def run(params, dilations):
        opt = adam(2e-2)

        def loss(p, x):
            y = jax.vmap(lambda s: wavenet_apply(p, s, dilations))(x)
            return jnp.mean((y[:, 31:, 0] - x[:, 31 - delay : T - delay, 0]) ** 2)

        def step(carry, x):
            p, s = carry
            u, s = opt.update(jax.grad(loss)(p, x), s, p)
            return (jax.tree.map(jnp.add, p, u), s), None

        (p, _), _ = jax.lax.scan(step, (params, opt.init(params)), batches)
        return loss(p, held_out)

    dilated, plain = jax.jit(lambda p: (run(p, (1, 2, 4, 8, 16)), run(p, (1, 1, 1, 1, 1))))(params)
    assert float(dilated) < 0.1, float(dilated)
    assert float(plain) > 0.9, float(plain)  # the target's variance is 1: nothing learned


def test_bad_input_raises():
    x = np.ones((5, 2), np.float32)  # NumPy: nothing compiled before the checks refuse it
    with pytest.raises(ValueError, match=r"w must have shape \(2, 2, 3\) \(C_in from x\), got shape \(2, 4, 3\)"):
        causal_conv(x, np.ones((2, 4, 3), np.float32))
    with pytest.raises(TypeError, match=r"x must be a floating-point array"):
        causal_conv(x.astype(np.int32), np.ones((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"dilation must be"):
        causal_conv(x, np.ones((2, 2, 3), np.float32), dilation=0)
    with pytest.raises(TypeError, match=r"dilations must be a non-empty tuple of ints, got \[1, 2\]"):
        receptive_field(2, [1, 2])
    # The page example's stack (8 channels, dilations 1, 2, 4): its weights' samplers are compiled already.
    params = wavenet_init(jax.random.key(0), in_channels=1, channels=8, kernel_size=2, dilations=(1, 2, 4))
    with pytest.raises(ValueError, match=r"dilations must give one dilation per block \(3\), got \(1, 2\)"):
        wavenet_apply(params, x[:, :1], (1, 2))
    with pytest.raises(ValueError, match=r"x must have shape \(5, 1\) \(in_channels from params\), got shape \(5, 2\)"):
        wavenet_apply(params, x, (1, 2, 4))
