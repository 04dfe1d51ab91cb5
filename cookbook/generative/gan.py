r"""Generative adversarial networks
===============================

A generator that turns noise into samples, trained against a discriminator that tries to tell its
samples from the data: the model to reach for when you want sharp samples and need no likelihood.

Equation
--------

.. math::

   \begin{aligned}
   \min_G \max_D \; V(D, G) &= \mathbb{E}_{x \sim p}\!\left[\log D(x)\right]
     + \mathbb{E}_{z \sim \mathcal{N}(0, I)}\!\left[\log\left(1 - D(G(z))\right)\right], \\
   D^\star(x) &= \frac{p(x)}{p(x) + q(x)}, \qquad
   V(D^\star, G) = -\log 4 + 2\, \operatorname{JSD}(p \,\|\, q), \\
   \mathcal{L}_G^{\text{ns}} &= -\,\mathbb{E}_{z}\!\left[\log D(G(z))\right]
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`
     - a data point
     - ``x``
     - ``(X,)``
   * - :math:`z`
     - the generator's noise
     - ``z``
     - ``(Z,)``
   * - :math:`I`
     - the identity matrix, :math:`Z` by :math:`Z`
     - implied by ``jax.random.normal``
     - ``(Z, Z)``
   * - :math:`G`
     - the generator, an MLP from noise to data
     - ``generate``
     - ``(Z,)`` to ``(X,)``
   * - :math:`D`
     - the discriminator: the probability that :math:`x` is data; the code keeps its logit
     - ``discriminate`` (the logit)
     - ``(X,)`` to scalar
   * - :math:`V`
     - the value of the game; minus :math:`V` is the discriminator's loss
     - ``discriminator_loss``
     - scalar
   * - :math:`p`, :math:`q`
     - the densities of the data and of the generator's samples
     - ``log_p``, ``log_q`` in ``optimal_discriminator``
     - scalar per point
   * - :math:`D^\star`
     - the best discriminator against a fixed generator
     - ``optimal_discriminator``
     - scalar per point
   * - :math:`\operatorname{JSD}`
     - the Jensen-Shannon divergence, between 0 and :math:`\log 2`
     - in the tests
     - scalar
   * - :math:`\mathcal{L}_G^{\text{ns}}`
     - the non-saturating generator loss, used in practice
     - ``generator_loss``
     - scalar

Explanation
-----------

:footcite:t:`goodfellow2014generative` train two networks against each other. The discriminator
:math:`D` is a classifier between data and samples, trained by ascending :math:`V`, which is
minus its binary cross-entropy. The generator :math:`G` is trained to make that classifier fail.
For a fixed generator whose samples have density :math:`q`, the best classifier is
:math:`D^\star = p / (p + q)` (the second line), and against it the game's value is
:math:`-\log 4 + 2\,\operatorname{JSD}(p \,\|\, q)`: the generator, if the discriminator were
always optimal, would minimise the Jensen-Shannon divergence to the data, whose minimum, 0, is at
:math:`q = p`. The tests check both identities on one-dimensional Gaussians, where :math:`D^\star`
is a logistic function of :math:`x` and :math:`x^2` that logistic regression recovers.

Minimising :math:`\log(1 - D(G(z)))` works badly at the start: when the samples are poor, the
discriminator rejects them with confidence, :math:`D \approx 0`, where that function is flat, and
the generator gets no gradient. In logits :math:`\ell`, its gradient is :math:`-\sigma(\ell)`,
which vanishes as :math:`\ell \to -\infty`. The *non-saturating* loss (the third line) has the same
fixed point but gradient :math:`-\sigma(-\ell) \to -1` there; it is what ``generator_loss`` uses by
default. All losses are computed from logits, :math:`\log D = -\operatorname{softplus}(-\ell)` and
:math:`\log(1 - D) = -\operatorname{softplus}(\ell)`, never from probabilities, and the
expectations are means over a batch.

.. admonition:: Intuition

   A forger and an art expert. The expert learns what gives forgeries away; the forger learns
   from each rejection what to fix. If the expert becomes too good too soon, every forgery is
   dismissed as hopeless and the forger learns nothing (the saturating loss); asking the forger to
   make the expert *believe*, rather than to make the expert *not disbelieve*, keeps the lessons
   coming.

*Mode collapse.* Nothing in the game rewards covering the data. Against a fixed discriminator,
the generator's best reply puts every sample where that discriminator's output is highest, on
one mode or a few; the discriminator then learns to reject those modes, and the generator moves
on to others. The tests play this cycle on a ring of eight Gaussians, one reply at a time.

Inductive bias
--------------

A GAN assumes nothing about the form of the density: the generator's samples lie on the image of
a smooth map of a low-dimensional noise, so they can be sharp where a likelihood model would blur.
It gives no likelihood and no way to encode a data point, and whether it covers every mode
depends on the training dynamics, not on the objective.

Example
-------

The losses from logits, the two generator losses' gradients where the discriminator rejects a
sample with confidence, and the optimal discriminator where the two densities are equal:

>>> import jax, jax.numpy as jnp
>>> from cookbook.generative.gan import discriminator_loss, generator_loss, optimal_discriminator
>>> real, fake = jnp.array([2.0, 1.0, 3.0]), jnp.array([-2.0, 0.0, -1.0])
>>> round(float(discriminator_loss(real, fake)), 4)
0.5407
>>> round(float(generator_loss(fake)), 4)  # -mean log D(G(z))
1.3778
>>> rejected = jnp.array([-10.0])
>>> round(float(jax.grad(generator_loss)(rejected)[0]), 4)  # non-saturating: about -1
-1.0
>>> float(jax.grad(lambda l: generator_loss(l, non_saturating=False))(rejected)[0]) > -1e-4  # saturated
True
>>> float(optimal_discriminator(jnp.array([-1.3]), jnp.array([-1.3]))[0])
0.5

A generator and a discriminator for points in the plane:

>>> from cookbook.generative.gan import init, generate, discriminate
>>> params = init(jax.random.key(0), latent=3, hidden=8, data_dim=2)
>>> x = generate(params, jnp.zeros(3))
>>> x.shape, discriminate(params, x).shape
((2,), ())

Implementation notes
--------------------

``fit`` alternates one Adam :footcite:p:`kingma2015adam` step of the discriminator and one of the
generator, on fresh noise and a fresh minibatch of data each time, inside one
:func:`jax.lax.scan`; Adam's first decay rate is 0.5, as is usual for GANs
:footcite:p:`radford2016unsupervised`. On a ring of 8 Gaussians (radius 2, standard deviation
0.05), a generator and a discriminator of two ``tanh`` layers of 16 units, trained for 2000 steps of
128 points from 2-dimensional noise, cover all 8 modes (the test asks for 7) with about three quarters
of the samples within 3 standard deviations of a mode (it asks for half), against none for the
untrained generator; the two losses end within 0.06 of :math:`\log 4` and :math:`\log 2`, their
values when :math:`D = 1/2`.

The ring is the usual test of mode collapse :footcite:p:`metz2017unrolled`, and the tests play its
cycle from the trained pair. Putting every sample on the mode the trained discriminator likes
best lowers the generator's loss from about 0.73 to 0.57, so collapse is a better reply than
coverage. After 300 steps of the discriminator alone against those samples, that mode has the
lowest logit of the eight, and the collapsed samples' loss exceeds coverage's by more than 1.
A generator collapsed on that mode, playing the same 2000 steps of the game again, covers the ring
once more. In this small GAN the cycle damps out; with other sizes, rates and seeds a GAN often
settles on a few modes, and unrolled GANs and the critic of :doc:`wasserstein_gan` are two of the
cures proposed.
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook._memo import cached

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"discriminator_loss": (), "generator_loss": ("non_saturating",), "optimal_discriminator": (),
       "generate": (), "discriminate": ()}
#: Batches of logits may hold any number of points.
FREE_LENGTH = {"discriminator_loss": ("real_logits", "fake_logits"), "generator_loss": ("fake_logits",)}


def discriminator_loss(real_logits, fake_logits):
    """Minus the value V of the game: the discriminator's binary cross-entropy, from its logits on
    a batch of data (B,) and a batch of generated samples (B',)."""
    real_logits = _checks.float_array(real_logits, "real_logits", ndim=1, what=" (B,)")
    fake_logits = _checks.float_array(fake_logits, "fake_logits", ndim=1, what=" (B,)")
    return _discriminator_loss_jit(real_logits, fake_logits)


def _discriminator_loss(real_logits, fake_logits):
    # -log D(x) = softplus(-l); -log(1 - D(G(z))) = softplus(l)
    return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


# The public functions check their input, then hand it as it comes to a compiled core like this one:
# called eagerly, each of their operations would compile on its own for every new shape.
_discriminator_loss_jit = jax.jit(_discriminator_loss)


def generator_loss(fake_logits, *, non_saturating=True):
    """The generator's loss from the discriminator's logits on its samples (B,): ``-mean log D``
    (non-saturating), or ``mean log(1 - D)`` (the minimax game's own term)."""
    fake_logits = _checks.float_array(fake_logits, "fake_logits", ndim=1, what=" (B,)")
    if not isinstance(non_saturating, bool):
        raise TypeError(f"non_saturating must be a bool, got {non_saturating!r}")
    return _generator_loss_jit(fake_logits, non_saturating=non_saturating)


def _generator_loss(fake_logits, non_saturating):
    if non_saturating:
        return jnp.mean(jax.nn.softplus(-fake_logits))
    return -jnp.mean(jax.nn.softplus(fake_logits))


_generator_loss_jit = jax.jit(_generator_loss, static_argnames="non_saturating")


def optimal_discriminator(log_p, log_q):
    """``p / (p + q)`` from the log-densities of the data and of the generator at the same points
    (any shape): a sigmoid of their difference, so it never divides by a vanishing density."""
    log_p = _checks.float_array(log_p, "log_p")
    log_q = _checks.float_array(log_q, "log_q")
    _checks.same_shape(log_q, "log_q", log_p.shape, expected_from="the shape of log_p")
    return _optimal_discriminator(log_p, log_q)


@jax.jit
def _optimal_discriminator(log_p, log_q):
    return jax.nn.sigmoid(log_p - log_q)


def _mlp_init(key, sizes, dtype):
    """Layers with Gaussian weights of variance ``1 / fan_in``, cut from one draw (one compiled
    program, whatever the sizes), and zero biases."""
    shapes = list(zip(sizes[:-1], sizes[1:]))
    draw = jax.random.normal(key, (sum(a * b for a, b in shapes),), dtype)
    layers, start = [], 0
    for n_in, n_out in shapes:
        W = draw[start:start + n_in * n_out].reshape(n_in, n_out) / jnp.sqrt(n_in).astype(dtype)
        layers.append({"W": W, "b": jnp.zeros((n_out,), dtype)})
        start += n_in * n_out
    return layers


def init(key, *, latent, hidden, data_dim, dtype=jnp.float32):
    """A generator and a discriminator, each an MLP with two ``tanh`` layers of ``hidden`` units:
    ``{"generator": [...], "discriminator": [...]}``, lists of ``{"W", "b"}`` layers."""
    Z, H, X = _checks.size(latent, "latent"), _checks.size(hidden, "hidden"), _checks.size(data_dim, "data_dim")
    return _init(key, Z, H, X, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))  # one program, not one per draw, slice and zeros
def _init(key, Z, H, X, dtype):
    k_g, k_d = jax.random.split(key)
    return {"generator": _mlp_init(k_g, (Z, H, H, X), dtype), "discriminator": _mlp_init(k_d, (X, H, H, 1), dtype)}


def _mlp(layers, x, activation=jnp.tanh):
    for layer in layers[:-1]:
        x = activation(x @ layer["W"] + layer["b"])
    return x @ layers[-1]["W"] + layers[-1]["b"]


def _check_params(params):
    if not isinstance(params, dict) or set(params) != {"generator", "discriminator"}:
        raise TypeError("params must be the dict that init returns, with keys 'discriminator' and 'generator'")
    Z, X = _checks.layers(params["generator"], "params['generator']")
    X_d, one = _checks.layers(params["discriminator"], "params['discriminator']")
    if X_d != X or one != 1:
        raise ValueError(f"params['discriminator'] must map {X} numbers (the generator's output) to 1 logit, "
                         f"got {X_d} to {one}")
    return Z, X


def generate(params, z):
    """The sample ``G(z)`` (X,) for one noise vector ``z`` (Z,)."""
    Z, _ = _check_params(params)
    z = _checks.same_shape(_checks.float_array(z, "z", ndim=1, what=" (Z,)"), "z", (Z,), expected_from="latent of params")
    return _generate(params, z)


@jax.jit
def _generate(params, z):
    return _mlp(params["generator"], z)


def discriminate(params, x):
    """The discriminator's logit (a scalar) that one point ``x`` (X,) is data rather than a sample."""
    _, X = _check_params(params)
    x = _checks.same_shape(_checks.float_array(x, "x", ndim=1, what=" (X,)"), "x", (X,), expected_from="data_dim of params")
    return _discriminate(params, x)


@jax.jit
def _discriminate(params, x):
    return _mlp(params["discriminator"], x)[0]


@cached  # the tests' run is stored when the book is built (cookbook/_memo.py)
def fit(params, key, X, *, steps, batch, learning_rate=2e-3, non_saturating=True):
    """Alternating Adam steps (discriminator, then generator) on minibatches of ``batch`` rows of
    the data ``X`` (N, X) and as many noise vectors; returns the trained parameters and the two
    losses before each step, each (steps,)."""
    Z, dim = _check_params(params)
    X = _checks.float_array(X, "X", ndim=2, what=" (N, X)")
    _checks.same_shape(X, "X", (X.shape[0], dim), expected_from="data_dim of params")
    steps, batch = _checks.size(steps, "steps"), _checks.size(batch, "batch")
    _checks.positive(learning_rate, "learning_rate")
    if not isinstance(non_saturating, bool):
        raise TypeError(f"non_saturating must be a bool, got {non_saturating!r}")
    return _train(params, key, X, steps, batch, learning_rate, non_saturating)


def _adam(params, grads, m, v, t, learning_rate, b1=0.5, b2=0.999, tiny=1e-8):
    m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
    v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
    scale = learning_rate * jnp.sqrt(1 - b2**t) / (1 - b1**t)
    return jax.tree.map(lambda p, m, v: p - scale * m / (jnp.sqrt(v) + tiny), params, m, v), m, v


@functools.partial(jax.jit, static_argnums=(3, 4, 6))
def _train(params, key, X, steps, batch, learning_rate, non_saturating):
    Z = params["generator"][0]["W"].shape[0]
    batched = jax.vmap(_mlp, in_axes=(None, 0))  # (B, in) -> (B, out)

    def d_loss(d, g, real, z):
        return _discriminator_loss(batched(d, real)[:, 0], batched(d, batched(g, z))[:, 0])

    def g_loss(g, d, z):
        return _generator_loss(batched(d, batched(g, z))[:, 0], non_saturating)

    def step(carry, inputs):
        (g, d), (m_g, v_g), (m_d, v_d) = carry
        t, k = inputs
        k_rows, k_zd, k_zg = jax.random.split(k, 3)
        real = X[jax.random.randint(k_rows, (batch,), 0, X.shape[0])]
        ld, grads_d = jax.value_and_grad(d_loss)(d, g, real, jax.random.normal(k_zd, (batch, Z), X.dtype))
        d, m_d, v_d = _adam(d, grads_d, m_d, v_d, t, learning_rate)
        lg, grads_g = jax.value_and_grad(g_loss)(g, d, jax.random.normal(k_zg, (batch, Z), X.dtype))
        g, m_g, v_g = _adam(g, grads_g, m_g, v_g, t, learning_rate)
        return ((g, d), (m_g, v_g), (m_d, v_d)), (ld, lg)

    g, d = params["generator"], params["discriminator"]
    zeros = lambda tree: jax.tree.map(jnp.zeros_like, tree)  # noqa: E731
    carry = ((g, d), (zeros(g), zeros(g)), (zeros(d), zeros(d)))
    inputs = (jnp.arange(1, steps + 1, dtype=jnp.float32), jax.random.split(key, steps))
    ((g, d), _, _), (d_losses, g_losses) = jax.lax.scan(step, carry, inputs)
    return {"generator": g, "discriminator": d}, d_losses, g_losses
