r"""Neural network Gaussian processes
=================================

A network with random weights is a random function, and as its hidden layers grow wide that function
becomes a Gaussian process whose kernel follows from a layer-by-layer recursion: the exact prior over
functions of an infinitely wide network, and the first model a theory of deep learning starts from.

Equation
--------

.. math::

   \begin{aligned}
   K^{(1)}(x, y) &= \sigma_b^2 + \sigma_w^2 \, \frac{x \cdot y}{D}, \\
   K^{(l+1)}(x, y) &= \sigma_b^2 + \sigma_w^2 \,
      \mathbb{E}_{(u, v) \sim \mathcal{N}(0, \Sigma^{(l)})}\big[\phi(u)\, \phi(v)\big],
   \qquad \Sigma^{(l)} = \begin{pmatrix} K^{(l)}(x, x) & K^{(l)}(x, y) \\
                                         K^{(l)}(x, y) & K^{(l)}(y, y) \end{pmatrix}, \\
   \mathbb{E}\big[\operatorname{relu}(u)\operatorname{relu}(v)\big]
     &= \frac{\sqrt{k_{xx} k_{yy}}}{2\pi} \big(\sin\theta + (\pi - \theta)\cos\theta\big),
   \qquad \cos\theta = \frac{k_{xy}}{\sqrt{k_{xx} k_{yy}}}, \\
   f &\sim \mathcal{GP}\big(0, K^{(L+1)}\big) \quad \text{as } n \to \infty
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`, :math:`y`
     - two inputs; rows of ``x1`` and ``x2``
     - ``x1``, ``x2``
     - ``(N1, D)``, ``(N2, D)``
   * - :math:`D`
     - input features
     - ``D``
     - scalar
   * - :math:`K^{(l)}`
     - covariance of the preactivations of layer :math:`l` over random networks
     - ``k12`` (between inputs), ``k11``, ``k22`` (each input with itself)
     - ``(N1, N2)``
   * - :math:`l`, :math:`L`
     - layer index; number of hidden layers
     - ``depth`` is :math:`L`
     - scalars
   * - :math:`\sigma_w^2`, :math:`\sigma_b^2`
     - variance of a weight times the fan-in, and of a bias
     - ``sigma_w2``, ``sigma_b2``
     - scalars
   * - :math:`\phi`
     - activation; ReLU throughout this page
     - ``jax.nn.relu``
     - elementwise
   * - :math:`u`, :math:`v`
     - the preactivations of one unit at the inputs :math:`x` and :math:`y`
     - the samples of the test
     - scalars
   * - :math:`\Sigma^{(l)}`
     - their 2 × 2 covariance
     - ``k_xx``, ``k_xy``, ``k_yy``
     - scalars each
   * - :math:`k_{xx}`, :math:`k_{xy}`, :math:`k_{yy}`
     - the entries of :math:`\Sigma^{(l)}`
     - ``k_xx``, ``k_xy``, ``k_yy``
     - any, all alike
   * - :math:`\theta`
     - the angle between :math:`u` and :math:`v` as vectors in function space
     - ``rho`` is :math:`\cos\theta`
     - as ``k_xy``
   * - :math:`f`
     - the network's output, a random function of its input
     - ``sample_outputs``
     - ``(S, N)`` for ``S`` networks
   * - :math:`n`
     - the width of every hidden layer
     - ``width``
     - scalar
   * - :math:`\mathcal{GP}`
     - a Gaussian process: every finite set of outputs is jointly Gaussian
     - in words
     - —

Explanation
-----------

Take an input :math:`x`, a hidden layer of :math:`n` units with independent Gaussian weights of
variance :math:`\sigma_w^2/D` and biases of variance :math:`\sigma_b^2`. Each unit's preactivation is a
sum of :math:`D` independent terms, so it is Gaussian, and its covariance between two inputs is the
first line of the equation. The next layer sums :math:`n` independent units, each the activation of a
Gaussian; by the central limit theorem that sum is Gaussian again when :math:`n` is large, with a
covariance that depends only on the previous covariance, through the expectation of a product of
activations. :footcite:t:`neal1996bayesian` proved it for one hidden layer, and
:footcite:t:`lee2018deep` and :footcite:t:`matthews2018gaussian` for any depth: as the widths grow,
the output :math:`f(x)` at any finite set of inputs is jointly Gaussian with covariance
:math:`K^{(L+1)}`, the neural network Gaussian process (NNGP).

For the ReLU the expectation has a closed form, the arc-cosine kernel of degree one of
:footcite:t:`cho2009kernel`: it depends on the two variances and on the angle :math:`\theta` whose
cosine is the correlation (``relu_expectation``). At :math:`\theta = 0` it is :math:`k/2` (half of a
Gaussian's second moment survives the ReLU); at :math:`\theta = \pi/2`, independent inputs, it is
:math:`\sqrt{k_{xx}k_{yy}}/2\pi`, positive because both halves are non-negative; at
:math:`\theta = \pi` it is 0. ``nngp_kernel`` iterates the recursion for :math:`L` hidden layers;
``sample_outputs`` draws :math:`S` real networks of width :math:`n` and returns their outputs, whose
empirical covariance the tests compare with the kernel, within a few standard errors of :math:`S`
samples.

.. admonition:: Intuition

   An opinion poll. One respondent's answer is idiosyncratic, but the average over thousands is
   Gaussian whatever each person thinks, and its spread is set by a few summary numbers of the
   population. A wide layer polls its units: the next layer sees only their average, so only the
   covariance of the previous layer survives, and it is passed on from layer to layer.

Two facts of the ReLU recursion are exact and are tested. The diagonal :math:`K(x, x)` is linear in
itself, :math:`\sigma_b^2 + \tfrac{\sigma_w^2}{2} K`, so its mean over random networks follows the
recursion at every width, even 3, not only in the limit; with :math:`\sigma_w^2 = 2` and
:math:`\sigma_b^2 = 0` (He's initialisation) it is the same at every depth. The correlation
:math:`\cos\theta`, on the other hand, grows towards 1 with every layer: a deep network at
initialisation sees all inputs as ever more alike, the problem that the page on criticality takes up.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.theory.nngp import nngp_kernel, sample_outputs

   gamma = jnp.linspace(0.0, jnp.pi, 50)
   circle = jnp.stack([jnp.cos(gamma), jnp.sin(gamma)], axis=1)
   dots = gamma[::7]
   fig, ax = plt.subplots(figsize=(6, 3.4))
   for depth, colour in ((1, "C0"), (3, "C1"), (10, "C2")):
       k = nngp_kernel(circle[:1], circle, depth=depth)[0]
       ax.plot(gamma, k, colour, label=f"kernel, L = {depth}")
       if depth < 10:
           f = sample_outputs(jax.random.key(depth), circle[::7], depth=depth, width=32, samples=2000)
           ax.plot(dots, jnp.mean(f[:, :1] * f, axis=0), "o", color=colour, ms=4)
   ax.set(xlabel="angle between the inputs", ylabel="K(x, y)",
          title="NNGP kernel (lines), 2000 networks of width 32 (dots)")
   ax.legend(fontsize=8)
   fig.tight_layout()

Inductive bias
--------------

The prior that the NNGP puts on functions is what a wide network assumes before seeing data: a
smooth function of the angle between inputs (with :math:`\sigma_b = 0` the kernel is homogeneous in
the norms), with correlations that grow with depth. Bayesian regression with this kernel is exact
inference in an infinitely wide network (:footcite:t:`lee2018deep`), and it learns no features:
the kernel is fixed before the data arrive, which is what a finite network gives up on the way to
learning representations.

Example
-------

Two inputs at 60 degrees, and the closed form at the extreme angles:

>>> import jax, jax.numpy as jnp
>>> from cookbook.theory.nngp import relu_expectation, nngp_kernel, sample_outputs
>>> float(relu_expectation(2.0, 2.0, 2.0)), float(relu_expectation(1.0, -1.0, 1.0))
(1.0, 0.0)
>>> round(float(relu_expectation(1.0, 0.0, 1.0)), 4)  # 1 / (2 pi)
0.1592
>>> x = jnp.array([[1.0, 0.0], [0.5, 0.75 ** 0.5]])
>>> K = nngp_kernel(x, x, depth=2)
>>> K.round(3)
Array([[1.   , 0.684],
       [0.684, 1.   ]], dtype=float32)

5000 random networks of width 32 agree with the kernel to within about one standard error of 5000
samples (0.02 to 0.03 for these entries):

>>> f = sample_outputs(jax.random.key(1), x, depth=2, width=32, samples=5000)
>>> f.shape
(5000, 2)
>>> (f.T @ f / 5000).round(2)
Array([[1.02, 0.68],
       [0.68, 0.98]], dtype=float32)

Implementation notes
--------------------

``relu_expectation`` clips :math:`\cos\theta` to :math:`[-1, 1]` against rounding, and refuses (when
its arguments are concrete) a covariance that is not one: a negative variance or
:math:`|k_{xy}| > \sqrt{k_{xx}k_{yy}}` by more than a relative :math:`10^{-4}`. Its derivative is
written by hand (``jax.custom_jvp``): :math:`\frac{d}{d\rho}\big(\sqrt{1 - \rho^2} + (\pi -
\arccos\rho)\rho\big) = \pi - \theta`, finite at :math:`\rho = \pm 1` where automatic
differentiation of the closed form gives :math:`\infty - \infty`. Scalars broadcast against arrays;
two arrays must have the same shape. ``sample_outputs`` uses the standard parametrisation
(weights of variance :math:`\sigma_w^2/\text{fan-in}`), draws all the weights of a network at once,
and maps over the networks with ``jax.vmap``, so memory grows as :math:`S n^2`; its input width
:math:`D` may be anything. The Neural Tangents library
:footcite:p:`novak2020neural` computes these kernels for many activations and architectures.
"""

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"relu_expectation": (), "nngp_kernel": ("depth",), "sample_outputs": ("depth", "width", "samples")}
#: ``sample_outputs`` takes inputs of any number of features.
FREE_LENGTH = {"sample_outputs": ("x",)}


@jax.custom_jvp
def _arccos_j(rho):
    """``sin(theta) + (pi - theta) cos(theta)`` with ``cos(theta) = rho``."""
    return jnp.sqrt(jnp.maximum(1.0 - rho**2, 0.0)) + (jnp.pi - jnp.arccos(rho)) * rho


@_arccos_j.defjvp
def _arccos_j_jvp(primals, tangents):
    (rho,), (t,) = primals, tangents
    return _arccos_j(rho), (jnp.pi - jnp.arccos(rho)) * t  # d/drho = pi - theta


@jax.jit  # compiled once per shape, also when called eagerly
def _relu_expectation(k_xx, k_xy, k_yy):
    """The arc-cosine formula without checks, for arrays of one shape."""
    norm = jnp.sqrt(k_xx * k_yy)
    safe = jnp.where(norm > 0, norm, 1.0)
    rho = jnp.where(norm > 0, k_xy / safe, 0.0)  # cos(theta)
    rho = jnp.where(rho > 1.0, 1.0, jnp.where(rho < -1.0, -1.0, rho))  # rounding, clipped (slope 1 at +-1)
    return norm * _arccos_j(rho) / (2 * jnp.pi)


def _covariance_entry(value, name):
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return jnp.asarray(float(value), jnp.float32)  # a Python number: a float, even if written 1
    return _checks.float_array(value, name)


def relu_expectation(k_xx, k_xy, k_yy):
    """E[relu(u) relu(v)] for (u, v) ~ N(0, [[k_xx, k_xy], [k_xy, k_yy]]), elementwise.

    Arrays must have one shape; Python numbers and 0-d arrays broadcast against them.

    >>> round(float(relu_expectation(1.0, 0.5, 1.0)), 4)
    0.3045
    """
    k_xx, k_xy, k_yy = (_covariance_entry(v, n) for v, n in ((k_xx, "k_xx"), (k_xy, "k_xy"), (k_yy, "k_yy")))
    shapes = {n: v.shape for n, v in (("k_xx", k_xx), ("k_xy", k_xy), ("k_yy", k_yy)) if v.ndim}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"k_xx, k_xy and k_yy must have one shape (or be scalars), got shapes {shapes}")
    if _checks.is_concrete((k_xx, k_xy, k_yy)):
        a, b, c = (np.asarray(v, np.float64) for v in (k_xx, k_xy, k_yy))
        if (a < 0).any() or (c < 0).any():
            raise ValueError("k_xx and k_yy are variances and must be non-negative, got a negative one")
        if (np.abs(b) > np.sqrt(a * c) * (1 + 1e-4) + 1e-30).any():
            raise ValueError("k_xy must satisfy |k_xy| <= sqrt(k_xx k_yy) (a covariance matrix), got one larger")
    return _relu_expectation_broadcast(k_xx, k_xy, k_yy)


@jax.jit  # the scalars broadcast inside the compiled program, not by eager operations before it
def _relu_expectation_broadcast(k_xx, k_xy, k_yy):
    return _relu_expectation(*jnp.broadcast_arrays(k_xx, k_xy, k_yy))


def _inputs(x1, x2):
    x1 = _checks.float_array(x1, "x1", ndim=2, what=" (N1, D)")
    x2 = _checks.float_array(x2, "x2", ndim=2, what=" (N2, D)")
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(f"x1 and x2 must have the same number of features D, got x1 {x1.shape} and x2 {x2.shape}")
    return x1, x2


def nngp_kernel(x1, x2, *, depth, sigma_w2=2.0, sigma_b2=0.0):
    """The NNGP kernel K^(L+1) (N1, N2) of a ReLU network with ``depth`` = L hidden layers."""
    x1, x2 = _inputs(x1, x2)
    depth = _checks.size(depth, "depth", minimum=0)
    sigma_w2 = _checks.positive(sigma_w2, "sigma_w2")
    sigma_b2 = _checks.positive(sigma_b2, "sigma_b2", allow_zero=True)
    return _kernel(x1, x2, depth, sigma_w2, sigma_b2)


@jax.jit  # depth is a loop count here, so one compilation serves every depth
def _kernel(x1, x2, depth, sigma_w2, sigma_b2):
    D = x1.shape[1]
    k11 = sigma_b2 + sigma_w2 * jnp.sum(x1 * x1, axis=1) / D  # (N1,)
    k22 = sigma_b2 + sigma_w2 * jnp.sum(x2 * x2, axis=1) / D  # (N2,)
    k12 = sigma_b2 + sigma_w2 * (x1 @ x2.T) / D  # (N1, N2)

    def layer(_, k):
        k11, k12, k22 = k
        a, c = jnp.broadcast_to(k11[:, None], k12.shape), jnp.broadcast_to(k22[None, :], k12.shape)
        k12 = sigma_b2 + sigma_w2 * _relu_expectation(a, k12, c)
        return sigma_b2 + sigma_w2 * k11 / 2, k12, sigma_b2 + sigma_w2 * k22 / 2  # E[relu(u)^2] = k / 2

    return jax.lax.fori_loop(0, depth, layer, (k11, k12, k22))[1]


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _networks(key, x, depth, width, samples, sigma_w2, sigma_b2):
    one = lambda k: _network(k, x, depth, width, sigma_w2, sigma_b2)
    return jax.vmap(one)(jax.random.split(key, samples))  # (S, N)


def _network(key, x, depth, width, sigma_w2, sigma_b2):
    """The outputs (N,) of one ReLU network with freshly drawn weights, standard parametrisation.

    All its weights and biases come from one draw of standard normals, cut into layers (one random
    call compiles much faster than one per layer).
    """
    sizes = (x.shape[1],) + (width,) * depth + (1,)
    eps = jax.random.normal(key, (sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:])),), x.dtype)
    h, start = x, 0
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        W = eps[start : start + fan_in * fan_out].reshape(fan_in, fan_out) * jnp.sqrt(sigma_w2 / fan_in)
        b = eps[start + fan_in * fan_out : start + fan_in * fan_out + fan_out] * jnp.sqrt(sigma_b2)
        start += fan_in * fan_out + fan_out
        z = h @ W + b[None, :]  # (N, fan_out)
        h = jax.nn.relu(z)
    return z[:, 0]


def sample_outputs(key, x, *, depth, width, samples, sigma_w2=2.0, sigma_b2=0.0):
    """The outputs (S, N) at inputs ``x`` (N, D) of ``samples`` = S independently drawn ReLU networks
    with ``depth`` hidden layers of ``width`` units."""
    x = _checks.float_array(x, "x", ndim=2, what=" (N, D)")
    depth = _checks.size(depth, "depth", minimum=0)
    width = _checks.size(width, "width")
    samples = _checks.size(samples, "samples")
    sigma_w2 = _checks.positive(sigma_w2, "sigma_w2")
    sigma_b2 = _checks.positive(sigma_b2, "sigma_b2", allow_zero=True)
    return _networks(key, x, depth, width, samples, sigma_w2, sigma_b2)
