"""What the benchmark suite measures: recipe/twin pairs, growth studies and training steps.

A case gives both functions the same inputs. Where the twin expects another layout (flax modules
take parameters in their own pytree; ``jax.nn.dot_product_attention`` wants heads on the third
axis), the twin's wrapper does the conversion inside the jitted function, or the case builds the
twin's parameters once outside it, so that only the computation is timed. Recipes written for one
example are batched with :func:`jax.vmap`, as a reader would use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp


@dataclass
class Case:
    """A recipe and its library twin, computing the same thing on the same inputs."""

    name: str
    recipe: Callable
    twin: Callable
    make: Callable[[Any], tuple]  # size -> inputs
    sizes: list
    recipe_name: str
    twin_name: str
    describe: Callable[[Any], str] = field(default=lambda size: str(size))


@dataclass
class GrowthStudy:
    """Variants of one computation, timed and sized at growing inputs."""

    name: str
    size_name: str
    sizes: list
    make: Callable[[int], tuple]
    variants: dict


@dataclass
class TrainingStep:
    name: str
    description: str
    make: Callable[[], tuple]  # -> (step function, inputs)


def _keys(n, seed=0):
    return jax.random.split(jax.random.key(seed), n)


def _normal(shape, seed=0, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(seed), shape, dtype)


# --------------------------------------------------------------------------------------------
# Recipe against twin
# --------------------------------------------------------------------------------------------

def _activation_cases():
    from cookbook.foundations import activations as a

    pairs = [
        ("relu", a.relu, jax.nn.relu),
        ("sigmoid", a.sigmoid, jax.nn.sigmoid),
        ("gelu (exact)", lambda x: a.gelu(x, approximate=False), lambda x: jax.nn.gelu(x, approximate=False)),
        ("gelu (tanh)", lambda x: a.gelu(x, approximate=True), lambda x: jax.nn.gelu(x, approximate=True)),
        ("silu", a.silu, jax.nn.silu),
        ("softplus", a.softplus, jax.nn.softplus),
        ("elu", a.elu, jax.nn.elu),
    ]
    sizes = [4_096, 262_144, 4_194_304]
    return [
        Case(f"activations.{name}", mine, twin, lambda n: (_normal((n,)),), sizes,
             f"cookbook.foundations.activations.{name.split()[0]}", f"jax.nn.{name.split()[0]}",
             lambda n: f"N = {n:,}")
        for name, mine, twin in pairs
    ]


def _softmax_and_loss_cases():
    import optax

    from cookbook.foundations import losses, softmax_regression

    def logits_and_labels(size):
        B, K = size
        return _normal((B, K)), jax.random.randint(jax.random.key(1), (B,), 0, K)

    sizes = [(64, 10), (1024, 1000), (256, 32_000)]
    describe = lambda s: f"B = {s[0]:,}, K = {s[1]:,}"  # noqa: E731
    return [
        Case("softmax_regression.log_softmax", jax.vmap(softmax_regression.log_softmax), jax.nn.log_softmax,
             lambda s: (_normal(s),), sizes, "cookbook.foundations.softmax_regression.log_softmax",
             "jax.nn.log_softmax", describe),
        Case("losses.cross_entropy", losses.cross_entropy,
             lambda z, y: optax.softmax_cross_entropy_with_integer_labels(z, y).mean(), logits_and_labels, sizes,
             "cookbook.foundations.losses.cross_entropy", "optax.softmax_cross_entropy_with_integer_labels",
             describe),
        Case("losses.huber", losses.huber, lambda p, t: optax.huber_loss(p, t).mean(),
             lambda n: (_normal((n,)), _normal((n,), 1)), [4_096, 1_048_576],
             "cookbook.foundations.losses.huber", "optax.huber_loss", lambda n: f"N = {n:,}"),
    ]


def _flax_norm(module, x, use_running_average=None):
    kwargs = {} if use_running_average is None else {"use_running_average": use_running_average}
    variables = module.init(jax.random.key(0), x, **kwargs)
    return variables


def _normalization_cases():
    import flax.linen as nn

    from cookbook.normalization import group_norm, layer_norm, rms_norm

    sizes = [(32, 128), (512, 1024), (4096, 1024)]
    describe = lambda s: f"B = {s[0]:,}, D = {s[1]:,}"  # noqa: E731
    cases = []

    def norm_case(name, module, recipe, with_bias=True):
        def make(s):
            x = _normal(s)
            scale, bias = 1.0 + 0.1 * _normal((s[1],), 2), 0.1 * _normal((s[1],), 3)
            return (x, scale, bias)

        def twin(x, scale, bias):
            params = {"scale": scale, "bias": bias} if with_bias else {"scale": scale}
            return module.apply({"params": params}, x)

        return Case(f"normalization.{name}", recipe, twin, make, sizes,
                    f"cookbook.normalization.{name}.{name}", f"flax.linen.{type(module).__name__}", describe)

    cases.append(norm_case("layer_norm", nn.LayerNorm(epsilon=1e-6),
                           lambda x, s, b: layer_norm.layer_norm(x, s, b, 1e-6)))
    cases.append(norm_case("rms_norm", nn.RMSNorm(epsilon=1e-6),
                           lambda x, s, b: rms_norm.rms_norm(x, s, 1e-6), with_bias=False))
    cases.append(norm_case("group_norm", nn.GroupNorm(num_groups=8, epsilon=1e-5),
                           lambda x, s, b: jax.vmap(lambda xi: group_norm.group_norm(xi, s, b, 8, 1e-5))(x)))
    return cases


def _convolution_cases():
    from cookbook.convolution import conv2d, pooling

    def make(s):
        B, H, C_in, C_out, K = s
        return _normal((B, H, H, C_in)), 0.1 * _normal((K, K, C_in, C_out), 1)

    def twin(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    sizes = [(8, 16, 8, 16, 3), (32, 32, 16, 32, 3), (32, 64, 32, 64, 3)]
    describe = lambda s: f"B={s[0]}, {s[1]}x{s[1]}x{s[2]} -> {s[3]}, k={s[4]}"  # noqa: E731
    batched = lambda f: jax.vmap(f, in_axes=(0, None))  # noqa: E731
    pool_twin = lambda x: jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")  # noqa: E731
    return [
        Case("conv2d.conv2d", batched(lambda x, w: conv2d.conv2d(x, w)), twin, make, sizes,
             "cookbook.convolution.conv2d.conv2d", "jax.lax.conv_general_dilated", describe),
        Case("conv2d.conv2d_im2col", batched(lambda x, w: conv2d.conv2d_im2col(x, w)), twin, make, sizes,
             "cookbook.convolution.conv2d.conv2d_im2col", "jax.lax.conv_general_dilated", describe),
        Case("pooling.max_pool", jax.vmap(lambda x: pooling.max_pool(x, 2)), pool_twin,
             lambda s: (_normal((s[0], s[1], s[1], s[2])),), sizes,
             "cookbook.convolution.pooling.max_pool", "jax.lax.reduce_window", describe),
    ]


def _attention_cases():
    from cookbook.attention import scaled_dot_product

    def make(s):
        H, T, D = s
        return _normal((H, T, D)), _normal((H, T, D), 1), _normal((H, T, D), 2)

    def twin(q, k, v):  # (H, T, D) -> jax.nn's (B, T, N, H) layout and back
        to = lambda a: jnp.transpose(a, (1, 0, 2))[None]  # noqa: E731
        return jnp.transpose(jax.nn.dot_product_attention(to(q), to(k), to(v))[0], (1, 0, 2))

    sizes = [(4, 64, 32), (8, 256, 64), (8, 1024, 64)]
    return [
        Case("scaled_dot_product_attention", scaled_dot_product.scaled_dot_product_attention, twin, make, sizes,
             "cookbook.attention.scaled_dot_product.scaled_dot_product_attention",
             "jax.nn.dot_product_attention", lambda s: f"H={s[0]}, T=S={s[1]}, D={s[2]}"),
    ]


def _optimizer_cases():
    import optax

    from cookbook.optimization import adagrad, adam, adamw, lion, muon, rmsprop, schedule_free, sgd

    def make(n):
        params = {"w": _normal((n, 64)), "b": _normal((64,), 1)}
        grads = jax.tree.map(lambda p: 0.01 * p + 0.1, params)
        return params, grads

    def stepper(opt):
        def step(params, grads):
            state = opt.init(params)
            for _ in range(3):  # a few steps, so that moments are not at their initial values
                updates, state = opt.update(grads, state, params)
                params = jax.tree.map(lambda p, u: p + u, params, updates)
            return params

        return step

    pairs = [
        ("sgd (momentum)", sgd.sgd(0.1, momentum=0.9), optax.sgd(0.1, momentum=0.9), "optax.sgd"),
        ("adagrad", adagrad.adagrad(0.1), optax.adagrad(0.1), "optax.adagrad"),
        ("rmsprop", rmsprop.rmsprop(0.01), optax.rmsprop(0.01), "optax.rmsprop"),
        ("adam", adam.adam(1e-3), optax.adam(1e-3), "optax.adam"),
        ("adamw", adamw.adamw(1e-3), optax.adamw(1e-3, weight_decay=1e-4), "optax.adamw"),
        ("lion", lion.lion(1e-4), optax.lion(1e-4), "optax.lion"),
        ("muon", muon.muon(0.02), optax.contrib.muon(0.02), "optax.contrib.muon"),
        ("schedule_free", schedule_free.schedule_free_adamw(1e-3), optax.contrib.schedule_free_adamw(1e-3),
         "optax.contrib.schedule_free_adamw"),
    ]
    sizes = [64, 4_096, 65_536]
    return [
        Case(f"optimization.{name}", stepper(mine), stepper(twin), make, sizes,
             f"cookbook.optimization.{name.split()[0]}", twin_name, lambda n: f"{n * 64 + 64:,} parameters, 3 steps")
        for name, mine, twin, twin_name in pairs
    ]


def _recurrent_cases():
    import flax.linen as nn

    from cookbook.recurrent import gru, lstm

    def make(s):
        B, T, D, H = s
        return (_normal((B, T, D)),)

    def recipe_of(module, s):
        B, T, D, H = s
        params = module.init(jax.random.key(0), D, H)
        return lambda xs: jax.vmap(lambda x: module.apply(params, x))(xs)

    def twin_of(cell_cls, s):
        B, T, D, H = s
        rnn = nn.RNN(cell_cls(features=H))
        variables = rnn.init(jax.random.key(0), jnp.zeros((B, T, D)))
        return lambda xs: rnn.apply(variables, xs)

    cases = []
    for s in [(8, 32, 16, 32), (32, 128, 64, 128)]:
        desc = f"B={s[0]}, T={s[1]}, D={s[2]}, H={s[3]}"
        cases.append(Case("recurrent.lstm", recipe_of(lstm, s), twin_of(nn.LSTMCell, s), lambda _, s=s: make(s),
                          [s], "cookbook.recurrent.lstm.apply", "flax.linen.RNN(LSTMCell)", lambda _, d=desc: d))
        cases.append(Case("recurrent.gru", recipe_of(gru, s), twin_of(nn.GRUCell, s), lambda _, s=s: make(s),
                          [s], "cookbook.recurrent.gru.apply", "flax.linen.RNN(GRUCell)", lambda _, d=desc: d))
    return cases


def comparisons() -> list[Case]:
    from benchmarks import cases_chapters_2, cases_chapters_3

    return [
        *_activation_cases(),
        *_softmax_and_loss_cases(),
        *_normalization_cases(),
        *_convolution_cases(),
        *_attention_cases(),
        *_optimizer_cases(),
        *_recurrent_cases(),
        *cases_chapters_2.comparisons(),
        *cases_chapters_3.comparisons(),
    ]


# --------------------------------------------------------------------------------------------
# Growth with size
# --------------------------------------------------------------------------------------------

def _attention_gradient(attend):
    """The gradient of a scalar loss of attention with respect to q, k and v."""
    return jax.grad(lambda q, k, v: jnp.sum(attend(q, k, v) ** 2), argnums=(0, 1, 2))


def growth_studies() -> list[GrowthStudy]:
    from benchmarks import cases_graphs, cases_parallelism, cases_sequence_models, cases_sequence_models_2

    return (_classic_growth_studies() + cases_sequence_models.growth_studies() + cases_sequence_models_2.growth_studies()
            + cases_graphs.growth_studies() + cases_parallelism.growth_studies())


def _classic_growth_studies() -> list[GrowthStudy]:
    from cookbook.attention import linear_attention, memory_efficient, scaled_dot_product
    from cookbook.convolution import conv2d

    D = 64

    def attention_inputs(S):
        return _normal((S, D)), _normal((S, D), 1), _normal((S, D), 2)

    def conv_inputs(H):
        return _normal((H, H, 16)), 0.1 * _normal((3, 3, 16, 16), 1)

    return [
        GrowthStudy(
            "attention in sequence length", "S", [256, 512, 1024, 2048, 4096], attention_inputs,
            {
                "direct": scaled_dot_product.scaled_dot_product_attention,
                "memory-efficient": lambda q, k, v: memory_efficient.memory_efficient_attention(q, k, v, block_size=256),
                "linear": linear_attention.linear_attention,
            },
        ),
        GrowthStudy(
            # The backward pass of memory-efficient attention keeps Y and the log-sum-exp only
            # (FlashAttention-2): its temporary memory should grow as S^1, the direct one as S^2.
            "attention gradient in sequence length", "S", [256, 512, 1024, 2048, 4096], attention_inputs,
            {
                "direct": _attention_gradient(scaled_dot_product.scaled_dot_product_attention),
                "memory-efficient": _attention_gradient(
                    lambda q, k, v: memory_efficient.memory_efficient_attention(q, k, v, block_size=256)),
            },
        ),
        GrowthStudy(
            "convolution in image side", "H", [16, 32, 64, 128, 256], conv_inputs,
            {
                "im2col": lambda x, w: conv2d.conv2d_im2col(x, w),
                "direct (lax)": lambda x, w: conv2d.conv2d(x, w),
            },
        ),
    ]


# --------------------------------------------------------------------------------------------
# Training steps against the machine's peak
# --------------------------------------------------------------------------------------------

def training_steps() -> list[TrainingStep]:
    def mlp_step():
        from cookbook.foundations import mlp, training_loop

        params = mlp.init(jax.random.key(0), (64, 64, 10))
        X = _normal((128, 64))
        y = jax.random.randint(jax.random.key(1), (128,), 0, 10)
        return (lambda p, X, y: training_loop.train_step(p, X, y, 0.1)), (params, X, y)

    def lenet_step():
        from cookbook.convolution import lenet

        params = lenet.init(jax.random.key(0))
        X = _normal((128, 8, 8, 1))
        y = jax.random.randint(jax.random.key(1), (128,), 0, 10)

        def step(p, X, y):
            loss, grads = jax.value_and_grad(lenet.loss)(p, X, y)
            return jax.tree.map(lambda a, g: a - 0.01 * g, p, grads), loss

        return step, (params, X, y)

    def gpt_step():
        from cookbook.transformers import gpt

        # The sizes of the page's sorting model, with a longer context and a larger batch.
        params = gpt.init(jax.random.key(0), vocab_size=11, max_len=64, d_model=64, num_heads=4,
                          num_layers=2, d_ff=256)
        tokens = gpt.sorting_task(jax.random.key(1), 64, 20)  # (64, 41)

        def step(p, tokens):
            loss, grads = jax.value_and_grad(gpt.sequence_loss)(p, tokens, 20)
            return jax.tree.map(lambda a, g: a - 0.01 * g, p, grads), loss

        return step, (params, tokens)

    return [
        TrainingStep("transformers.gpt", "GPT, 2 layers, d_model 64, 64 sequences of 41 tokens, one SGD step",
                     gpt_step),
        TrainingStep("foundations.training_loop", "MLP 64-64-10 on digit-sized inputs, batch 128, one SGD step",
                     mlp_step),
        TrainingStep("convolution.lenet", "LeNet-5 on 8x8 images, batch 128, one SGD step", lenet_step),
    ]
