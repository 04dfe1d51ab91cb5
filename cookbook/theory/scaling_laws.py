r"""Scaling laws
============

The loss of a trained model falls as a power law in its size, its data and its compute, down to a
floor that no model can pass; fitting that law to small runs predicts large ones and says how to
split a compute budget between parameters and data.

Equation
--------

.. math::

   L(N) = \Big(\frac{N_c}{N}\Big)^{\alpha_N}, \qquad
   L(D) = \Big(\frac{D_c}{D}\Big)^{\alpha_D}

   L(N, D) = E + \frac{A}{N^{\alpha}} + \frac{B}{D^{\beta}}, \qquad C \approx 6 N D

   N_{\mathrm{opt}}(C) = G \Big(\frac{C}{6}\Big)^{a}, \quad
   D_{\mathrm{opt}}(C) = G^{-1} \Big(\frac{C}{6}\Big)^{b}, \quad
   a = \frac{\beta}{\alpha + \beta}, \quad b = \frac{\alpha}{\alpha + \beta}, \quad
   G = \Big(\frac{\alpha A}{\beta B}\Big)^{\frac{1}{\alpha + \beta}}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`L`
     - the test loss, nats per token for a language model
     - ``chinchilla_loss``, ``power_law``
     - scalar or any shape
   * - :math:`N`, :math:`D`, :math:`C`
     - the number of parameters, of training tokens, and the training compute in floating-point
       operations
     - ``N``, ``D``, ``C``
     - scalar or any shape
   * - :math:`N_c`, :math:`D_c`, :math:`\alpha_N`, :math:`\alpha_D`
     - the scales and exponents of the laws of :footcite:t:`kaplan2020scaling`, each fitted with
       the other resource unlimited
     - ``KAPLAN``
     - scalars
   * - :math:`E`, :math:`A`, :math:`B`, :math:`\alpha`, :math:`\beta`
     - the irreducible loss, and the scales and exponents of the two reducible terms
       :footcite:`hoffmann2022training`
     - ``E, A, B, alpha, beta``; ``CHINCHILLA``
     - scalars
   * - :math:`N_{\mathrm{opt}}`, :math:`D_{\mathrm{opt}}`, :math:`G`
     - the size and the data that minimise :math:`L` at compute :math:`C`; a constant of the fit
     - ``compute_optimal``; ``G``
     - shape of ``C``; scalar
   * - :math:`a`, :math:`b`
     - how fast the optimal size and data grow with the compute
     - ``allocation_exponents``
     - scalars

Explanation
-----------

:footcite:t:`kaplan2020scaling` trained transformer language models over seven orders of magnitude
of size and found the loss to be a power law in each resource when the others do not limit it:
:math:`\alpha_N = 0.076` in the parameters (not counting embeddings) and :math:`\alpha_D = 0.095`
in the tokens. A power law is a straight line on log-log axes, so a handful of small runs fixes it
and the line predicts runs a thousand times larger. Two things bend the line: the loss cannot fall
below the entropy of the data, which :footcite:t:`hoffmann2022training` wrote as the irreducible
term :math:`E`, and a model is limited by whichever of :math:`N` and :math:`D` is scarce, which their
sum of two power laws expresses. Their fit to 400 models gave :math:`E = 1.69`, :math:`A = 406.4`,
:math:`B = 410.7`, :math:`\alpha = 0.34` and :math:`\beta = 0.28` (``CHINCHILLA``).

A training run costs about :math:`6ND` operations (two for the forward pass and four for the
backward, per parameter and token). Minimising :math:`L(N, D)` on the curve :math:`6ND = C` sets the
derivatives of the two reducible terms against each other and gives the allocation above: with
Chinchilla's coefficients :math:`a = 0.45` and :math:`b = 0.55`: parameters and data should grow
almost equally with the compute.
Kaplan et al. had advised growing the model much faster than the data
(:math:`N \propto C^{0.73}`), mostly because their short runs used one learning-rate schedule for
every length; Chinchilla, 70 billion parameters on 1.4 trillion tokens, beat the four times larger
Gopher with the same compute.

.. admonition:: Intuition

   A cook with a fixed budget for a banquet spends it on kitchen staff (parameters) and ingredients
   (data). Each extra cook or crate helps less than the last, in proportion to how many there are
   already; the best split keeps the last euro equally useful on both sides, and since the two
   returns fall at similar rates, the budget is shared about equally as the banquet grows.

Where does a power law come from? In the solvable model of :footcite:t:`maloney2022solvable`, from
the data's spectrum: if the energy of the target at frequency :math:`k` decays as a power,
:math:`(k - 1)^{-\alpha} - k^{-\alpha} \approx \alpha k^{-\alpha - 1}` here, a linear model that
holds the first :math:`n` frequencies (:math:`N = 2n` parameters, a cosine and a sine each) misses
the energy of the rest, exactly :math:`n^{-\alpha}`, and the noise on the labels is the irreducible
:math:`E`. Seven sizes are trained by stochastic gradient descent on fresh noisy samples, in one
``lax.scan`` for all of them (``spectrum_sweep``), and ``fit_power_law`` reads the law back:

.. plot::

   import jax, jax.numpy as jnp, numpy as np
   from cookbook.theory.scaling_laws import fit_power_law, power_law, spectrum_sweep

   widths = (1, 2, 4, 8, 16, 32, 64)
   N = 2.0 * np.array(widths)
   losses = spectrum_sweep(jax.random.key(0), widths)
   E, A, alpha = fit_power_law(N, losses)
   grid = np.geomspace(1, 512, 100)
   fig, ax = plt.subplots(figsize=(5, 3.2))
   ax.loglog(N, losses, "o", label="trained models")
   ax.loglog(grid, power_law(grid, A, alpha, E), label=f"fit: {float(E):.4f} + {float(A):.2f} N^-{float(alpha):.2f}")
   ax.axhline(float(E), ls=":", color="gray", label="fitted irreducible loss")
   ax.set(xlabel="parameters N", ylabel="test loss")
   ax.legend(fontsize=8)
   fig.tight_layout()

The fit finds :math:`\alpha = 1.50`, the exponent the target was built with, and
:math:`E = 0.010`, the variance of the noise.

Inductive bias
--------------

A scaling law is a description, not a theorem: it holds within the range that was fitted, for one
architecture, data set and training recipe, and its exponent belongs to the data (its spectrum or
intrinsic dimension) as much as to the model. Extrapolation assumes that nothing changes in
between; the fitted coefficients also depend on how the fit treats the small models, which is why
the three methods of :footcite:t:`hoffmann2022training` gave :math:`a` from 0.46 to 0.50.

Example
-------

>>> import jax.numpy as jnp
>>> from cookbook.theory.scaling_laws import (CHINCHILLA, allocation_exponents, chinchilla_loss,
...     compute_optimal, fit_power_law, power_law)
>>> a, b = allocation_exponents(CHINCHILLA["alpha"], CHINCHILLA["beta"])
>>> round(a, 2), round(b, 2)  # parameters and data grow about equally with compute
(0.45, 0.55)
>>> N, D = compute_optimal(jnp.float32(5.76e23))  # Gopher's compute
>>> round(float(N) / 1e9), round(float(D) / 1e12, 1), round(float(D / N))  # billions, trillions
(32, 3.0, 93)
>>> round(float(chinchilla_loss(jnp.float32(70e9), jnp.float32(1.4e12))), 3)  # Chinchilla
1.937
>>> x = jnp.array([10.0, 30.0, 100.0, 300.0, 1000.0])
>>> y = power_law(x, 2.0, 0.7, 0.1)  # 0.1 + 2 x^-0.7
>>> [round(float(v), 3) for v in fit_power_law(x, y)]  # E, A, alpha
[0.1, 2.0, 0.7]

Implementation notes
--------------------

**What the numbers say.** With Chinchilla's rounded coefficients the allocation at Gopher's compute,
:math:`C = 5.76 \cdot 10^{23}`, is 32 billion parameters on 3 trillion tokens, 93 tokens per
parameter, and the ratio grows slowly with the compute (:math:`D/N \propto C^{b - a}`). The paper's
other two methods (the envelope of training curves and iso-FLOP profiles) recommend fewer tokens,
about 20 per parameter, and that is how Chinchilla was trained: 70 billion parameters on 1.4
trillion tokens. The parametric fit still predicts a lower loss for Chinchilla (1.937) than for
Gopher (280 billion parameters on 300 billion tokens), which the test asserts.

**Fitting.** ``fit_power_law`` minimises the squared *relative* error of
:math:`E + A x^{-\alpha}`, which weighs the small and the large models alike, as a fit in log
space does (Hoffmann et al. minimise a Huber loss of the log-loss). For a fixed :math:`\alpha` the
model is linear in :math:`E` and :math:`A`, solved exactly; :math:`\alpha` is found by a grid over
:math:`(0, 4]` refined once (variable projection). Nothing keeps :math:`E` positive: with too few
points or no curvature the floor is not identified, a warning sign in its own right.

**The sweep.** ``spectrum_sweep`` trains the seven sizes at once: each model is the full linear
model with the frequencies beyond its size masked to zero, so the sizes share one compiled program
and one ``jax.lax.scan``. The measured losses agree with the prediction ``predicted_loss`` within
1 %, which the test asserts.
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook._memo import cached

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "power_law": (),
    "chinchilla_loss": (),
    "compute_optimal": (),
    "fit_power_law": (),
}

#: Kaplan et al. (2020), equations 1.1 and 1.2: non-embedding parameters, tokens, loss in nats.
KAPLAN = {"N_c": 8.8e13, "alpha_N": 0.076, "D_c": 5.4e13, "alpha_D": 0.095}

#: Hoffmann et al. (2022), equation 10 (their approach 3): the fitted parametric loss.
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


# ---- The laws ----------------------------------------------------------------------------------

def _positive_array(x, name):
    x = _checks.float_array(x, name)
    if _checks.is_concrete(x) and x.size and bool(jnp.any(x <= 0)):
        raise ValueError(f"{name} must be positive, got a smallest value of {float(jnp.min(x))}")
    return x


def power_law(x, A, alpha, E=0.0):
    """:math:`E + A x^{-\\alpha}` for positive ``x`` (any shape). Kaplan's :math:`(x_c / x)^{\\alpha}`
    is ``A = x_c ** alpha`` with ``E = 0``."""
    x = _positive_array(x, "x")
    return E + A * x ** (-alpha)


def chinchilla_loss(N, D, E=CHINCHILLA["E"], A=CHINCHILLA["A"], B=CHINCHILLA["B"],
                    alpha=CHINCHILLA["alpha"], beta=CHINCHILLA["beta"]):
    """:math:`L(N, D) = E + A N^{-\\alpha} + B D^{-\\beta}`, by default with the published fit;
    ``N`` and ``D`` of one shape."""
    N, D = _positive_array(N, "N"), _positive_array(D, "D")
    _checks.same_shape(D, "D", N.shape, expected_from="the shape of N")
    return E + A * N ** (-alpha) + B * D ** (-beta)


def allocation_exponents(alpha, beta):
    """``(a, b)``: the optimal parameters grow as :math:`C^a` and the data as :math:`C^b`, with
    :math:`a = \\beta / (\\alpha + \\beta)` and :math:`b = \\alpha / (\\alpha + \\beta)`."""
    _checks.positive(alpha, "alpha")
    _checks.positive(beta, "beta")
    return beta / (alpha + beta), alpha / (alpha + beta)


def compute_optimal(C, A=CHINCHILLA["A"], B=CHINCHILLA["B"], alpha=CHINCHILLA["alpha"], beta=CHINCHILLA["beta"]):
    """``(N_opt, D_opt)``, each of the shape of ``C``: the minimiser of :math:`L(N, D)` on
    :math:`6 N D = C`, in closed form."""
    C = _positive_array(C, "C")
    a, b = allocation_exponents(alpha, beta)
    G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    # in logarithms: C / 6 = 1e23 to the power a would overflow float32 before G scales it down
    log_c = jnp.log(C / 6.0)
    return G * jnp.exp(a * log_c), jnp.exp(b * log_c) / G


# ---- Fitting -----------------------------------------------------------------------------------

_GRID = 512


def _fit_at(alpha, x, y):
    """The weighted least-squares ``(E, A)`` of ``y ~ E + A x^-alpha`` (relative errors), and its cost."""
    f = x ** (-alpha)
    w = 1.0 / y ** 2
    s1, sf, sff = jnp.sum(w), jnp.sum(w * f), jnp.sum(w * f * f)
    sy, sfy = jnp.sum(w * y), jnp.sum(w * f * y)
    det = s1 * sff - sf * sf
    E = (sff * sy - sf * sfy) / det
    A = (s1 * sfy - sf * sy) / det
    return E, A, jnp.sum(w * (E + A * f - y) ** 2)


@jax.jit
def _fit(x, y):
    scale = jnp.exp(jnp.mean(jnp.log(x)))  # fit in units of the geometric mean: a well-posed system
    u = x / scale
    cost = jax.vmap(lambda a: _fit_at(a, u, y)[2])
    coarse = jnp.linspace(4.0 / _GRID, 4.0, _GRID)
    best = coarse[jnp.argmin(cost(coarse))]
    fine = best + jnp.linspace(-1.0, 1.0, _GRID) * (4.0 / _GRID)
    alpha = fine[jnp.argmin(cost(fine))]
    E, A, _ = _fit_at(alpha, u, y)
    return E, A * scale ** alpha, alpha


def fit_power_law(x, y):
    """``(E, A, alpha)`` of :math:`y \\approx E + A x^{-\\alpha}` from positive ``x`` (M,) and ``y``
    (M,), M at least 3, minimising the squared relative error (``alpha`` in (0, 4])."""
    x = _positive_array(_checks.float_array(x, "x", ndim=1, what=" (M,)"), "x")
    y = _positive_array(_checks.float_array(y, "y", ndim=1, what=" (M,)"), "y")
    _checks.same_shape(y, "y", x.shape, expected_from="one value per x")
    if x.shape[0] < 3:
        raise ValueError(f"x must hold at least 3 points to fit E, A and alpha, got shape {tuple(x.shape)}")
    return _fit(x, y)


# ---- A law measured: the solvable model --------------------------------------------------------

_FREQUENCIES = 256  # the teacher's frequencies; a student holds the first n of them


def _features(x, K):
    """Orthonormal Fourier features (B, 2K) of points ``x`` (B,) uniform on [0, 2 pi)."""
    k = jnp.arange(1, K + 1)
    angles = x[:, None] * k[None, :]  # (B, K)
    return jnp.sqrt(2.0) * jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=1)


def _teacher(key, exponent):
    r"""The target's weights (2K,), a random phase at each frequency and the energy
    :math:`(k - 1)^{-\alpha} - k^{-\alpha}` at frequency :math:`k \ge 2` (the last one also holds
    the energy of the frequencies beyond it), so that a model holding the first n misses exactly
    :math:`n^{-\alpha}`."""
    k = jnp.arange(1, _FREQUENCIES + 1, dtype=jnp.float32)
    energy = jnp.where(k > 1, jnp.maximum(k - 1.0, 1.0) ** (-exponent) - k ** (-exponent), 1.0)
    energy = energy.at[-1].add(_FREQUENCIES ** (-exponent))
    phase = jax.random.uniform(key, (_FREQUENCIES,), maxval=2.0 * jnp.pi)
    amplitude = jnp.sqrt(energy)
    return jnp.concatenate([amplitude * jnp.cos(phase), amplitude * jnp.sin(phase)])


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _sweep(key, widths, steps, batch_size, exponent, noise, learning_rate):
    k_teacher, k_data = jax.random.split(key)
    w_star = _teacher(k_teacher, exponent)
    held = (jnp.arange(_FREQUENCIES)[None, :] < jnp.asarray(widths)[:, None]).astype(jnp.float32)  # (S, K)
    mask = jnp.concatenate([held, held], axis=1)  # (S, 2K): cosine and sine of each frequency

    def step(w, inputs):
        i, k = inputs
        k_x, k_noise = jax.random.split(k)
        x = jax.random.uniform(k_x, (batch_size,), maxval=2.0 * jnp.pi)
        F = _features(x, _FREQUENCIES)  # (B, 2K)
        y = F @ w_star + noise * jax.random.normal(k_noise, (batch_size,))
        residual = w @ F.T - y[None, :]  # (S, B)
        grad = 2.0 * (residual @ F) / batch_size * mask  # (S, 2K), zero beyond each model's size
        decay = 0.5 * (1.0 + jnp.cos(jnp.pi * i / steps))
        return w - learning_rate * decay * grad, None

    w0 = jnp.zeros((len(widths), 2 * _FREQUENCIES))
    w, _ = jax.lax.scan(step, w0, (jnp.arange(steps), jax.random.split(k_data, steps)))
    # the test loss in closed form: the features are orthonormal, so it is the noise plus the
    # squared distance of the weights to the teacher's
    return noise ** 2 + jnp.sum((w - w_star[None, :]) ** 2, axis=1)


@cached  # the page's figure and the tests share this run when the book is built (cookbook/_memo.py)
def spectrum_sweep(key, widths, *, exponent=1.5, steps=300, batch_size=256, noise=0.1, learning_rate=0.3):
    r"""The test losses (S,) of linear models on the first ``widths`` (S sizes n, N = 2n parameters)
    Fourier frequencies, trained by SGD on fresh samples of a target whose frequency k carries the
    energy :math:`(k - 1)^{-\alpha} - k^{-\alpha}` (``exponent`` :math:`\alpha`), plus Gaussian
    noise of standard deviation ``noise``."""
    widths = tuple(_checks.size(n, "widths") for n in widths)
    if max(widths) >= _FREQUENCIES:
        raise ValueError(f"widths must be below the target's {_FREQUENCIES} frequencies, got {max(widths)}")
    steps, batch_size = _checks.size(steps, "steps"), _checks.size(batch_size, "batch_size")
    for name, value in (("exponent", exponent), ("noise", noise), ("learning_rate", learning_rate)):
        _checks.positive(value, name)
    return _sweep(key, widths, steps, batch_size, exponent, noise, learning_rate)


def predicted_loss(widths, *, exponent=1.5, noise=0.1):
    r"""The loss that a model of each size n would reach with unlimited data and training, shape (S,):
    the noise :math:`\sigma^2` plus the energy it misses, :math:`n^{-\alpha}`."""
    widths = jnp.asarray([_checks.size(n, "widths") for n in widths], jnp.float32)
    return noise ** 2 + widths ** (-exponent)
