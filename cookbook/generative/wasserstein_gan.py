r"""Wasserstein GAN: the critic and the gradient penalty
====================================================

A GAN whose discriminator is replaced by a critic that estimates the Wasserstein distance between
the data and the samples, a distance that still gives the generator a useful gradient when the two
do not overlap: the variant to reach for when a plain GAN's training stalls or collapses.

Equation
--------

.. math::

   \begin{aligned}
   W(p, q) &= \sup_{\|f\|_L \le 1} \; \mathbb{E}_{x \sim p}[f(x)] - \mathbb{E}_{\tilde{x} \sim q}[f(\tilde{x})], \\
   \mathcal{L}_f &= \mathbb{E}_{\tilde{x} \sim q}[f(\tilde{x})] - \mathbb{E}_{x \sim p}[f(x)]
     + \lambda\, \mathbb{E}_{\hat{x}}\!\left[\left(\|\nabla_{\hat{x}} f(\hat{x})\|_2 - 1\right)^2\right],
     \quad \hat{x} = \epsilon x + (1 - \epsilon)\, \tilde{x}, \quad \epsilon \sim \mathcal{U}[0, 1], \\
   \mathcal{L}_G &= -\,\mathbb{E}_{z \sim \mathcal{N}(0, I)}[f(G(z))]
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`p`, :math:`q`
     - the distributions of the data and of the generator's samples
     - ``X`` and the output of ``generate``
     - over ``(X,)``
   * - :math:`W`
     - the Wasserstein-1 (earth mover's) distance between them
     - estimated by minus ``critic_loss``
     - scalar
   * - :math:`f`
     - the critic: an MLP with leaky ReLU layers and a real-valued output, no sigmoid
     - ``critic``
     - ``(X,)`` to scalar
   * - :math:`\|f\|_L`
     - its Lipschitz constant, the bound on how fast :math:`f` may change
     - kept near 1 by ``gradient_penalty`` or ``clip_weights``
     - scalar
   * - :math:`x`, :math:`\tilde{x}`
     - a data point and a generated sample
     - ``real``, ``fake``
     - ``(B, X)``
   * - :math:`\hat{x}`
     - a random point on the segment between them
     - ``x_hat``
     - ``(B, X)``
   * - :math:`\epsilon`
     - its position on the segment
     - ``eps``
     - ``(B,)``
   * - :math:`\lambda`
     - weight of the gradient penalty (10 in the paper)
     - ``penalty``
     - scalar
   * - :math:`\mathcal{L}_f`, :math:`\mathcal{L}_G`
     - the critic's and the generator's losses
     - ``critic_loss`` plus ``penalty`` times ``gradient_penalty``; ``generator_loss``
     - scalar
   * - :math:`G`, :math:`z`, :math:`I`
     - the generator, its standard Gaussian noise, the identity matrix
     - ``generate``, ``z``
     - ``(Z,)`` to ``(X,)``

Explanation
-----------

Where the data and the samples do not overlap, which is the rule early in training when both lie
on thin sets, the Jensen-Shannon divergence that a GAN's discriminator measures is :math:`\log 2`
whatever the distance between them, and its gradient is zero. :footcite:t:`arjovsky2017wasserstein`
use the Wasserstein-1 distance instead: the least average distance that mass must travel to turn
one distribution into the other. It shrinks smoothly as the samples approach the data. By the
Kantorovich-Rubinstein duality (the first line), it is also the largest gap between the means of a
function :math:`f` under the two distributions, over functions whose slope is at most 1. A network,
the *critic*, plays :math:`f`: it is trained to widen that gap, and the generator to close it (the
last line).

The slope must be bounded, or the gap grows without end. The original paper clips every weight to
:math:`[-c, c]`, which bounds the slope by some constant, but crudely: the critic's capacity is
spent against the clip. :footcite:t:`gulrajani2017improved` note that the optimal critic has slope
exactly 1 almost everywhere on the segments between matched data and samples, and penalise the
slope's distance to 1 at random points :math:`\hat{x}` on segments between a data point and a
sample (the second line). The penalty needs the gradient of :math:`f` with respect to its
*input*, so training differentiates through a gradient; JAX does this by composing
:func:`jax.grad` with itself. The critic is trained for several steps per generator step, so that
it stays near its optimum and its gap stays an estimate of :math:`W`.

.. admonition:: Intuition

   The earth mover's distance is the work of a crew moving a pile of sand into the shape of
   another pile. The critic is a surveyor who puts a price on each spot, with one rule: prices of
   two spots may differ by no more than the distance between them. The largest difference between
   the average prices of the two piles is then exactly the least work, and the generator learns
   where to shovel from the slope of the prices.

The critic has no sigmoid and its scores no probabilistic meaning: only their differences count.
A critic with batch normalisation would make each score depend on the batch and break the
penalty's per-point gradient, which is why the paper's critics use none.

Inductive bias
--------------

A WGAN assumes what a GAN does (samples are a smooth map of low-dimensional noise) and adds that
the right way to compare distributions is by how far their mass lies apart in the data space's own
Euclidean metric. That is a good assumption for low-dimensional data and a questionable one for
pixels, where a small shift of an image is a large Euclidean distance.

Example
-------

The critic's loss from its scores; the penalty is zero where the critic's slope is exactly 1 (a
critic whose layers compose to the first coordinate, on points where its leaky ReLUs are the
identity) and equals :math:`(0 - 1)^2 = 1` for a flat critic:

>>> import jax, jax.numpy as jnp
>>> from cookbook.generative.wasserstein_gan import critic_loss, gradient_penalty, critic, clip_weights
>>> round(float(critic_loss(jnp.array([1.0, 3.0]), jnp.array([0.5, -0.5, 0.0]))), 4)  # 0.0 - 2.0
-2.0
>>> slope_one = [{"W": jnp.array([[0.5, 0.0], [0.0, 0.0]]), "b": jnp.zeros(2)},
...              {"W": jnp.array([[1.0, 0.0], [0.0, 1.0]]), "b": jnp.zeros(2)},
...              {"W": jnp.array([[2.0], [0.0]]), "b": jnp.zeros(1)}]
>>> generator = [{"W": jnp.ones((3, 2)), "b": jnp.zeros(2)}]  # any map from noise (3,) to points (2,)
>>> params = {"generator": generator, "critic": slope_one}
>>> real, fake = jnp.ones((3, 2)), jnp.zeros((3, 2))
>>> float(gradient_penalty(params, real, fake, jnp.full(3, 0.5)))
0.0
>>> flat = {"generator": generator, "critic": jax.tree.map(jnp.zeros_like, slope_one)}
>>> float(gradient_penalty(flat, real, fake, jnp.full(3, 0.5)))
1.0
>>> float(critic(params, jnp.array([3.0, -1.0])))  # 2 * (0.5 * 3): the first coordinate
3.0
>>> clip_weights(params, 0.25)["critic"][0]["W"].tolist()
[[0.25, 0.0], [0.0, 0.0]]

Implementation notes
--------------------

``fit`` runs ``n_critic`` Adam :footcite:p:`kingma2015adam` steps of the critic (with the penalty,
or with clipping when ``clip`` is given) per step of the generator, all inside one
:func:`jax.lax.scan`, with Adam's decay rates :math:`(0.5, 0.9)` as in the penalty's paper; the
learning rates are traced, so a run with a frozen generator (rate 0) shares the compiled loop.
The tests train a critic with :math:`\lambda = 10` against a frozen, untrained generator whose
samples all lie below the data (a mixture of two Gaussians at 1 and 3), where the best critic is
linear, :math:`f(x) = s x`. Its loss is then :math:`-sW + \lambda (s - 1)^2`, least at
:math:`s = 1 + W / (2\lambda)`: the penalty lets the slope exceed 1 by a margin that vanishes as
:math:`\lambda` grows. The trained critic's slope on every interpolate comes within 0.01 of that
value (1.10 here, with :math:`W` from :func:`scipy.stats.wasserstein_distance` on the samples), and
its gap within 3 % of :math:`sW`. With clipping at 0.1 instead, the slope stays below 0.5 and the
gap below half the distance. Trained with its generator (:math:`\lambda = 1`) on a mixture at -2 and 2, the distance
to the data falls from 1.9 (untrained) to 0.3 or 0.4, with about half of the samples in each mode
(the test asks for less than 1.2, and for 30 % to 70 % in each mode: the generator never settles,
and where its last step lands varies from seed to seed). A plain GAN (:doc:`gan`) is cheaper per
step; here each generator step costs ``n_critic`` critic steps, each with a second-order gradient.
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook._memo import cached
from cookbook.generative.gan import _adam, _mlp, _mlp_init  # the same MLPs and Adam (b1 = 0.5) as the GAN page

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"critic_loss": (), "gradient_penalty": (), "critic": (), "clip_weights": ()}
#: Batches of scores may hold any number of points.
FREE_LENGTH = {"critic_loss": ("real_scores", "fake_scores")}


def critic_loss(real_scores, fake_scores):
    """``mean f(fake) - mean f(real)`` from the critic's scores on a batch of data (B,) and of
    samples (B',): minus the critic's estimate of the Wasserstein distance."""
    real_scores = _checks.float_array(real_scores, "real_scores", ndim=1, what=" (B,)")
    fake_scores = _checks.float_array(fake_scores, "fake_scores", ndim=1, what=" (B,)")
    return _critic_loss(real_scores, fake_scores)


# Each public function checks its arguments in Python, then runs one module-level jitted program
# (operation by operation, every operation would compile on its own for each new shape).
@jax.jit
def _critic_loss(real_scores, fake_scores):
    return jnp.mean(fake_scores) - jnp.mean(real_scores)


def generator_loss(fake_scores):
    """``-mean f(G(z))`` from the critic's scores on a batch of samples (B,)."""
    fake_scores = _checks.float_array(fake_scores, "fake_scores", ndim=1, what=" (B,)")
    return _generator_loss(fake_scores)


@jax.jit
def _generator_loss(fake_scores):
    return -jnp.mean(fake_scores)


def init(key, *, latent, hidden, data_dim, dtype=jnp.float32):
    """A generator and a critic, each an MLP with two layers of ``hidden`` units (``tanh`` for the
    generator, leaky ReLU for the critic): ``{"generator": [...], "critic": [...]}``, lists of
    ``{"W", "b"}`` layers."""
    Z, H, X = _checks.size(latent, "latent"), _checks.size(hidden, "hidden"), _checks.size(data_dim, "data_dim")
    k_g, k_f = jax.random.split(key)
    return {"generator": _mlp_init(k_g, (Z, H, H, X), dtype), "critic": _mlp_init(k_f, (X, H, H, 1), dtype)}


def _check_params(params):
    if not isinstance(params, dict) or set(params) != {"generator", "critic"}:
        raise TypeError("params must be the dict that init returns, with keys 'critic' and 'generator'")
    Z, X = _checks.layers(params["generator"], "params['generator']")
    X_f, one = _checks.layers(params["critic"], "params['critic']")
    if X_f != X or one != 1:
        raise ValueError(f"params['critic'] must map {X} numbers (the generator's output) to 1 score, got {X_f} to {one}")
    return Z, X


def generate(params, z):
    """The sample ``G(z)`` (X,) for one noise vector ``z`` (Z,)."""
    Z, _ = _check_params(params)
    z = _checks.same_shape(_checks.float_array(z, "z", ndim=1, what=" (Z,)"), "z", (Z,), expected_from="latent of params")
    return _generate(params["generator"], z)


@jax.jit
def _generate(layers, z):
    return _mlp(layers, z)


def critic(params, x):
    """The critic's score ``f(x)``, a scalar, of one point ``x`` (X,)."""
    _, X = _check_params(params)
    x = _checks.same_shape(_checks.float_array(x, "x", ndim=1, what=" (X,)"), "x", (X,), expected_from="data_dim of params")
    return _critic(params["critic"], x)


@jax.jit
def _critic(layers, x):
    return _critic_mlp(layers, x)[0]


def _critic_mlp(layers, x):
    return _mlp(layers, x, jax.nn.leaky_relu)


def _slopes(layers, x_hat):
    """``|grad f(x)|`` at each row of ``x_hat`` (B, X)."""
    grads = jax.vmap(jax.grad(lambda x: _critic_mlp(layers, x)[0]))(x_hat)  # (B, X)
    squared = jnp.sum(grads**2, axis=-1)
    # sqrt has an infinite derivative at 0: route a zero gradient around it, so training stays finite
    return jnp.where(squared == 0, 0.0, jnp.sqrt(jnp.where(squared == 0, 1.0, squared)))  # a NaN stays


def gradient_penalty(params, real, fake, eps):
    """``mean (|grad f(x_hat)| - 1)^2`` at ``x_hat = eps * real + (1 - eps) * fake``, row by row, for
    batches ``real`` and ``fake`` (B, X) and positions ``eps`` (B,) in [0, 1]. A NaN among them is
    refused when concrete; under :func:`jax.jit` it gives a finite, meaningless penalty."""
    _, X = _check_params(params)
    real = _checks.float_array(real, "real", ndim=2, what=" (B, X)")
    _checks.same_shape(real, "real", (real.shape[0], X), expected_from="data_dim of params")
    fake = _checks.same_shape(_checks.float_array(fake, "fake", ndim=2, what=" (B, X)"), "fake", real.shape,
                              expected_from="the shape of real")
    eps = _checks.same_shape(_checks.float_array(eps, "eps", ndim=1, what=" (B,)"), "eps", real.shape[:1],
                             expected_from="one per row of real")
    for name, value in (("real", real), ("fake", fake), ("eps", eps)):
        _checks.check_no_nan(value, name)  # a leaky ReLU's slope at NaN is a finite choice, made in silence
    return _penalty(params["critic"], real, fake, eps)


@jax.jit
def _penalty(layers, real, fake, eps):
    x_hat = eps[:, None] * real + (1 - eps[:, None]) * fake  # (B, X)
    return jnp.mean((_slopes(layers, x_hat) - 1.0) ** 2)


def clip_weights(params, c):
    """``params`` with every weight and bias of the critic clipped to ``[-c, c]`` (the original WGAN)."""
    _check_params(params)
    _checks.positive(c, "c")
    return {**params, "critic": _clip(params["critic"], c)}


@jax.jit
def _clip(layers, c):
    return jax.tree.map(lambda w: jnp.clip(w, -c, c), layers)


@cached  # the tests' runs are stored when the book is built (cookbook/_memo.py)
def fit(params, key, X, *, steps, batch, n_critic=5, penalty=10.0, clip=None, critic_rate=1e-3, generator_rate=1e-3):
    """``steps`` generator steps, each after ``n_critic`` critic steps, on minibatches of ``batch``
    rows of ``X`` (N, X); the critic keeps its slope near 1 by the gradient penalty weighted by
    ``penalty``, or, with ``clip`` set (and ``penalty=0``), by clipping its weights to ``[-clip, clip]``.

    Returns the trained parameters and the critic's estimate of the distance before each
    generator step, shape (steps,).
    """
    Z, dim = _check_params(params)
    X = _checks.float_array(X, "X", ndim=2, what=" (N, X)")
    _checks.same_shape(X, "X", (X.shape[0], dim), expected_from="data_dim of params")
    steps, batch, n_critic = _checks.size(steps, "steps"), _checks.size(batch, "batch"), _checks.size(n_critic, "n_critic")
    _checks.positive(penalty, "penalty", allow_zero=True)
    _checks.positive(critic_rate, "critic_rate")
    _checks.positive(generator_rate, "generator_rate", allow_zero=True)
    clip = jnp.inf if clip is None else _checks.positive(clip, "clip")
    return _train(params, key, X, steps, batch, n_critic, penalty, clip, critic_rate, generator_rate)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _train(params, key, X, steps, batch, n_critic, penalty, clip, critic_rate, generator_rate):
    Z = params["generator"][0]["W"].shape[0]
    batched = jax.vmap(_mlp, in_axes=(None, 0))  # (B, in) -> (B, out)
    batched_f = jax.vmap(_critic_mlp, in_axes=(None, 0))

    def f_loss(f, g, real, z, eps):
        fake = batched(g, z)
        gap = critic_loss(batched_f(f, real)[:, 0], batched_f(f, fake)[:, 0])
        return gap + penalty * _penalty(f, real, fake, eps), -gap

    def g_loss(g, f, z):
        return generator_loss(batched_f(f, batched(g, z))[:, 0])

    def critic_step(carry, inputs):
        f, m, v, t, g = carry
        k = inputs
        k_rows, k_z, k_eps = jax.random.split(k, 3)
        real = X[jax.random.randint(k_rows, (batch,), 0, X.shape[0])]
        z = jax.random.normal(k_z, (batch, Z), X.dtype)
        eps = jax.random.uniform(k_eps, (batch,), X.dtype)
        (_, value), grads = jax.value_and_grad(f_loss, has_aux=True)(f, g, real, z, eps)
        f, m, v = _adam(f, grads, m, v, t, critic_rate, b2=0.9)
        f = jax.tree.map(lambda w: jnp.clip(w, -clip, clip), f)
        return (f, m, v, t + 1, g), value

    def step(carry, k):
        (g, f), (m_g, v_g), (m_f, v_f), t_f, t_g = carry
        k_f, k_g = jax.random.split(k)
        (f, m_f, v_f, t_f, _), values = jax.lax.scan(critic_step, (f, m_f, v_f, t_f, g), jax.random.split(k_f, n_critic))
        _, grads = jax.value_and_grad(g_loss)(g, f, jax.random.normal(k_g, (batch, Z), X.dtype))
        g, m_g, v_g = _adam(g, grads, m_g, v_g, t_g, generator_rate, b2=0.9)
        return ((g, f), (m_g, v_g), (m_f, v_f), t_f, t_g + 1), values[0]

    g, f = params["generator"], params["critic"]
    zeros = lambda tree: jax.tree.map(jnp.zeros_like, tree)  # noqa: E731
    one = jnp.ones((), X.dtype)
    carry = ((g, f), (zeros(g), zeros(g)), (zeros(f), zeros(f)), one, one)
    ((g, f), _, _, _, _), values = jax.lax.scan(step, carry, jax.random.split(key, steps))
    # values[i]: the critic's estimate of the distance on the first minibatch of generator step i
    return {"generator": g, "critic": f}, values
