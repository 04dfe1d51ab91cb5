r"""Finite width and the depth-to-width ratio
=========================================

A network of finite width is not a Gaussian process: its preactivations have heavier tails than a
Gaussian, by an amount that grows with depth over width, :math:`L/n`; the ratio that tells when the
infinite-width pages apply and when a deep, narrow network is something else.

Equation
--------

.. math::

   \begin{aligned}
   z^{(l+1)}_i &= \sum_{j=1}^{n} W_{ij} \operatorname{relu}\big(z^{(l)}_j\big), \qquad
   W_{ij} \sim \mathcal{N}(0, C_W / n), \\
   G^{(l+1)} &= \frac{C_W}{n} \sum_{j=1}^{n} \operatorname{relu}\big(z^{(l)}_j\big)^2, \qquad
   z^{(l+1)}_i \,\big|\, G^{(l+1)} \sim \mathcal{N}\big(0, G^{(l+1)}\big), \\
   \kappa^{(l)} &= \frac{\mathbb{E}\big[z^4\big]}{\mathbb{E}\big[z^2\big]^2} - 3
     = \frac{3 \operatorname{Var} G^{(l)}}{\big(\mathbb{E}\, G^{(l)}\big)^2}, \qquad
   \kappa^{(l+1)} = \Big(1 + \frac{5}{n}\Big)\kappa^{(l)} + \frac{15}{n}, \\
   \kappa^{(l)} &= 3\Big(\Big(1 + \frac{5}{n}\Big)^{l - 1} - 1\Big) \approx 15\, \frac{l - 1}{n}
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`z^{(l)}_i`, :math:`z`
     - preactivation of unit :math:`i` in layer :math:`l`; any one of them
     - ``z``
     - ``(n,)`` per layer
   * - :math:`i`, :math:`j`, :math:`l`
     - units of consecutive layers; the layer, counted from the first hidden one
     - in words
     - scalars
   * - :math:`W_{ij}`
     - weights, drawn at initialisation (no biases on this page)
     - ``W``
     - ``(n, n)``
   * - :math:`C_W`
     - the weights' variance times the fan-in; 2 is critical for the ReLU
     - ``C_W``
     - scalar
   * - :math:`n`
     - the width of every hidden layer
     - ``width``
     - scalar
   * - :math:`G^{(l)}`
     - the variance of layer :math:`l`'s preactivations given the layer below: random at finite width
     - in words
     - scalar
   * - :math:`\kappa^{(l)}`
     - the excess kurtosis of a preactivation over random networks (0 for a Gaussian)
     - ``kurtosis``
     - ``(L,)``

Explanation
-----------

At infinite width every preactivation is Gaussian (:doc:`nngp`). At width :math:`n` it is Gaussian
only *given* the layer below: each unit of layer :math:`l + 1` is a weighted sum of the same
:math:`n` activations, so conditionally on them it is Gaussian with the variance :math:`G^{(l+1)}`,
an average over :math:`n` units that fluctuates by :math:`O(1/\sqrt{n})`. A Gaussian whose variance
is itself random is heavy-tailed: its excess kurtosis is three times the squared relative spread of
the variance. For the ReLU without biases the fluctuations can be followed exactly, because the
moments :math:`\mathbb{E}[\operatorname{relu}(z)^2 | G] = G/2` and :math:`\mathbb{E}[\operatorname{relu}
(z)^4 | G] = 3G^2/2` are polynomials in :math:`G`. Each layer then passes on the spread it receives,
amplified by :math:`1 + 5/n`, and adds :math:`15/n` of its own (the third line; the factor
:math:`C_W` cancels). The kurtosis starts at 0 in the first layer, where :math:`G` is fixed by the
input, and grows as :math:`15(l - 1)/n` while :math:`l/n` is small, then exponentially.

This is the book of :footcite:t:`roberts2022principles` in its simplest instance. They expand a
network's statistics in :math:`1/n`; the first correction, the *four-point vertex*, measures exactly
this non-Gaussianity, and at criticality its size relative to the kernel grows linearly in depth,
so that the true expansion parameter is the aspect ratio :math:`L/n`. For the ReLU the coefficient is
5 per layer, the same that appears in the exponential :math:`e^{5L/n}` of
:footcite:t:`hanin2020products` for the fluctuations of gradients. Small :math:`L/n` means the kernel
pages (:doc:`nngp`, :doc:`ntk`) describe the network; a ratio near one or above means
fluctuations from network to network of order one, and a theory of infinite width no longer applies.

.. admonition:: Intuition

   A rumour passed down a chain of committees. Each committee averages what the n members below it
   heard, so the message itself is steady; but each average carries a little sampling error, and the
   errors multiply down the chain. A chain twice as long needs committees twice as large to keep the
   same reliability: what matters is length over size.

``preactivation_moments`` samples networks and returns, for each network and each layer, the means
of :math:`z^2` and :math:`z^4` over its units; ``excess_kurtosis`` turns them into :math:`\kappa` with
a standard error (the delta method over networks, since units of one network are not independent);
``kurtosis_recursion`` is the prediction. The tests compare them layer by layer within four
standard errors at widths 32 and 64, and check that layers with the same :math:`(l - 1)/n` (layer 5
of width 32 and layer 9 of width 64) have nearly the same kurtosis.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.theory.finite_width import excess_kurtosis, kurtosis_recursion, preactivation_moments

   fig, ax = plt.subplots(figsize=(6, 3.4))
   for k, (width, samples) in enumerate(((32, 2000), (64, 1000))):
       moments = preactivation_moments(jax.random.key(0), jnp.ones(4), depth=10, width=width, samples=samples)
       measured, se = excess_kurtosis(moments)
       ratio = jnp.arange(10) / width  # (l - 1) / n
       ax.plot(ratio, kurtosis_recursion(depth=10, width=width), f"C{k}-", label=f"exact, n = {width}")
       ax.errorbar(ratio, measured, 2 * se, fmt=f"C{k}o", ms=3, label=f"{samples} networks, n = {width}")
   ax.plot(jnp.linspace(0, 0.3, 2), 15 * jnp.linspace(0, 0.3, 2), "k:", label="15 (l - 1) / n")
   ax.set(xlabel="(l - 1) / n", ylabel="excess kurtosis of z")
   ax.legend(fontsize=8)
   fig.tight_layout()

Inductive bias
--------------

At finite width a network's prior over functions is no longer fixed by a kernel: the fluctuations
that make it non-Gaussian are also what lets the representation change during training, which a
kernel cannot do. The ratio :math:`L/n` is a dial between the two regimes: near zero the network is a
kernel machine with fixed features; of order one it learns features, and it becomes unstable to
initialise and train (the pages on criticality and on the maximal-update parametrisation).

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.theory.finite_width import kurtosis_recursion, preactivation_moments, excess_kurtosis
>>> kurtosis_recursion(depth=5, width=50).round(3)  # 0 in the first layer, then about 0.3 a layer
Array([0.   , 0.3  , 0.63 , 0.993, 1.392], dtype=float32)

2000 networks of 10 layers of width 32 (the figure's), measured against the recursion:

>>> moments = preactivation_moments(jax.random.key(0), jnp.ones(4), depth=10, width=32, samples=2000)
>>> moments.shape
(2000, 10, 2)
>>> kurtosis, se = excess_kurtosis(moments)
>>> bool(jnp.all(jnp.abs(kurtosis - kurtosis_recursion(depth=10, width=32)) < 4 * se))
True
>>> round(float(kurtosis[-1]), 1), round(float(kurtosis_recursion(depth=10, width=32)[-1]), 1)
(7.9, 8.1)

Implementation notes
--------------------

The recursion is exact at every width for the ReLU without biases, and independent of :math:`C_W`
and of the input; with biases, or for other activations, only the leading order in :math:`1/n` is
known in closed form (for :math:`\tanh` at criticality the vertex grows as :math:`\tfrac{2}{3}L/n`
instead of :math:`5L/n`, Roberts and Yaida, chapter 5). Estimating a kurtosis needs many samples: its
standard error involves the eighth moment, which grows quickly with :math:`l/n`, so the tests keep
:math:`l/n \le 0.3`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"kurtosis_recursion": ("depth", "width"), "preactivation_moments": ("depth", "width", "samples"),
       "excess_kurtosis": ()}
#: ``preactivation_moments`` takes inputs of any number of features.
FREE_LENGTH = {"preactivation_moments": ("x",)}


def kurtosis_recursion(*, depth, width):
    """The exact excess kurtosis (depth,) of a preactivation in layers 1..depth of a bias-free ReLU
    network of width ``width`` over random initialisations."""
    depth, width = _checks.size(depth, "depth"), _checks.size(width, "width")
    # float32 arithmetic in NumPy (as jnp would do it, without compiling five operations per depth)
    l = np.arange(1, depth + 1, dtype=np.float32)
    return jnp.asarray(np.float32(3) * (np.float32(1 + 5 / width) ** (l - 1) - np.float32(1)))


def preactivation_moments(key, x, *, depth, width, samples, C_W=2.0):
    """For ``samples`` = S random bias-free ReLU networks, the means over the units of each layer of
    z^2 and z^4: shape (S, depth, 2), at the input ``x`` (D,)."""
    x = _checks.float_array(x, "x", ndim=1, what=" (D,)")
    depth, width = _checks.size(depth, "depth"), _checks.size(width, "width")
    samples = _checks.size(samples, "samples")
    C_W = _checks.positive(C_W, "C_W")
    return _moments(key, x, depth, width, samples, C_W)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _moments(key, x, depth, width, samples, C_W):
    sizes = (x.shape[0],) + (width,) * depth

    def one(k):
        eps = jax.random.normal(k, (sum(a * b for a, b in zip(sizes[:-1], sizes[1:])),), x.dtype)  # one draw
        h, start, out = x, 0, []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            W = eps[start : start + fan_in * fan_out].reshape(fan_in, fan_out) * jnp.sqrt(C_W / fan_in)
            start += fan_in * fan_out
            z = h @ W  # (n,)
            h = jax.nn.relu(z)
            out.append(jnp.stack([jnp.mean(z**2), jnp.mean(z**4)]))
        return jnp.stack(out)  # (depth, 2)

    return jax.vmap(one)(jax.random.split(key, samples))


def excess_kurtosis(moments):
    """From per-network moments (S, L, 2), the excess kurtosis E[z^4] / E[z^2]^2 - 3 per layer (L,) and
    its standard error (L,) by the delta method over the S networks."""
    moments = _checks.float_array(moments, "moments", ndim=3, what=" (S, L, 2)")
    if moments.shape[2] != 2 or moments.shape[0] < 2:
        raise ValueError(f"moments must have shape (S, L, 2) with S >= 2, got shape {moments.shape}")
    return _excess_kurtosis(moments)


@jax.jit
def _excess_kurtosis(moments):
    S = moments.shape[0]
    b, a = moments[..., 0], moments[..., 1]  # (S, L): means of z^2 and of z^4
    a_bar, b_bar = a.mean(0), b.mean(0)
    kurtosis = a_bar / b_bar**2 - 3
    da, db = a - a_bar[None, :], b - b_bar[None, :]
    g_a, g_b = 1 / b_bar**2, -2 * a_bar / b_bar**3  # gradient of a / b^2
    variance = jnp.mean((g_a[None, :] * da + g_b[None, :] * db) ** 2, axis=0) * S / (S - 1)
    return kurtosis, jnp.sqrt(variance / S)
