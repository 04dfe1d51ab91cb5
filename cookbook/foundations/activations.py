r"""Activation functions
====================

The elementwise nonlinearities placed between linear layers (sigmoid, tanh, ReLU, leaky ReLU, ELU,
GELU, SiLU, softplus), written out from exponentials and the error function; reach for this page to
choose one, or to see why a network stopped learning.

Equation
--------

.. math::

   \sigma(x) = \frac{1}{1 + e^{-x}}, \qquad
   \tanh(x) = \frac{1 - e^{-2x}}{1 + e^{-2x}}, \qquad
   \operatorname{ReLU}(x) = \max(0, x), \qquad
   \operatorname{LeakyReLU}(x) = \begin{cases} x & x \ge 0 \\ \alpha x & x < 0 \end{cases}

   \operatorname{ELU}(x) = \begin{cases} x & x > 0 \\ \alpha (e^{x} - 1) & x \le 0 \end{cases},
   \qquad
   \operatorname{softplus}(x) = \log(1 + e^{x}) = \max(0, x) + \log\left(1 + e^{-|x|}\right)

   \operatorname{GELU}(x) = x \, \Phi(x) = \frac{x}{2} \operatorname{erfc}\left(-\frac{x}{\sqrt{2}}\right)
   \approx \frac{x}{2}\left(1 + \tanh\left(\sqrt{2/\pi}\,(x + c x^3)\right)\right), \qquad
   \operatorname{SiLU}(x) = x \, \sigma(x)

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`
     - the pre-activation (any array; each function acts on each entry)
     - ``x``
     - any
   * - :math:`\sigma`
     - the logistic sigmoid
     - ``sigmoid``
     - as ``x``
   * - :math:`\alpha`
     - slope (leaky ReLU) or negative saturation value (ELU) for negative inputs
     - ``negative_slope``; ``alpha``
     - scalar
   * - :math:`\Phi`
     - the standard normal cumulative distribution function
     - ``0.5 * erfc(-x / sqrt(2))``
     - as ``x``
   * - :math:`c`
     - the cubic coefficient of the tanh approximation of GELU, 0.044715
     - ``0.044715``
     - scalar

Explanation
-----------

Without a nonlinearity between them, any stack of linear layers is one linear layer, however deep.
The activation bends each unit's output so that stacked layers can build curved functions (see
:doc:`mlp`). Which bend matters mostly through the *derivative*, because backpropagation multiplies
the derivatives of every layer a signal passes through.

.. admonition:: Intuition

   The sigmoid began as a model of a neuron's firing rate: silent below a threshold, saturated at
   its maximum rate above it. That biological picture is also its weakness: a saturated neuron
   responds to nothing, and a message passed through many of them fades. ReLU is a one-way valve,
   closed for negative pressure and fully open for positive; a gradient that reaches an open valve
   passes through undiminished, however many valves it crosses.

**Saturating sigmoids.** The sigmoid (a firing rate between 0 and 1, the original neural
inspiration) and tanh (its rescaled, zero-centred twin, :math:`\tanh(x) = 2\sigma(2x) - 1`) flatten
out for large :math:`|x|`: their derivatives, :math:`\sigma(1 - \sigma)` at most 1/4 and
:math:`1 - \tanh^2` at most 1, vanish there. A unit pushed far from zero *saturates* and passes
almost no gradient back, and a product of many derivatives below one makes the gradients of early
layers vanish in deep networks :footcite:`glorot2010understanding`. Tanh is preferred to the
sigmoid in hidden layers because its outputs are centred on zero, which keeps the next layer's
inputs centred.

**Rectifiers.** ReLU :footcite:`nair2010rectified` passes positive inputs unchanged (derivative 1,
so gradients neither vanish nor explode through it) and zeroes negative ones; it is cheap and made
deep networks trainable without pre-training :footcite:`glorot2011deep`. Its flaw is the flat half: a
unit whose input is negative for every example gets zero gradient and never recovers, a *dead ReLU*
(a large learning rate or a large negative bias can kill a good fraction of a layer). Leaky ReLU
:footcite:`maas2013rectifier` keeps a small slope :math:`\alpha` on the negative side so that every
unit always learns a little; ELU :footcite:`clevert2016fast` bends smoothly to :math:`-\alpha`,
which pushes mean activations towards zero.

**Smooth rectifiers.** Softplus :footcite:`dugas2001incorporating` is a smooth ReLU whose
derivative is the sigmoid. GELU :footcite:`hendrycks2016gaussian` weights its input by the
probability :math:`\Phi(x)` that a standard normal variable is below it, and SiLU (also called
swish) :footcite:`elfwing2018sigmoid,ramachandran2017searching` by :math:`\sigma(x)`; both dip
slightly below zero for negative inputs and are smooth everywhere, which many transformers prefer.
ReLU and leaky ReLU have a kink at 0, where the derivative jumps; JAX, like this code, uses the
derivative of the right-hand piece for leaky ReLU and 0 for ReLU there. The kink is harmless in
practice (an input is exactly 0 with probability zero) but it makes second derivatives useless.

**Numerical traps.** Written naively, :math:`1/(1 + e^{-x})` overflows :math:`e^{-x}` to
:math:`\infty` for :math:`x < -88.73` in float32 (the answer, 0, survives, but its gradient is NaN) and
:math:`\log(1 + e^{x})` returns :math:`\infty` for :math:`x > 88.73`. The code only ever exponentiates
:math:`-|x| \le 0`, whose exponential lies in :math:`(0, 1]`: the sigmoid as :math:`1/(1+e^{-|x|})` or
:math:`e^{-|x|}/(1+e^{-|x|})` depending on the sign, softplus in the rewritten form above, tanh as
:math:`\operatorname{sign}(x)(1 - e^{-2|x|})/(1 + e^{-2|x|})` with :func:`jax.numpy.expm1` for the
numerator (near 0 it would otherwise be a difference of two numbers close to 1). The exact GELU
uses :math:`\operatorname{erfc}(-x/\sqrt{2})/2` rather than :math:`(1 + \operatorname{erf}(x/\sqrt{2}))/2`,
which cancels to zero for negative :math:`x`. ELU exponentiates only the negative part, selected
before the exponential so that the unused branch cannot produce an infinite gradient. (In real code,
:func:`jax.numpy.tanh` and the :mod:`jax.nn` functions do all of this already; the tests check that
these versions agree with them.)

.. plot::

   from cookbook.foundations import activations as act
   import jax, jax.numpy as jnp

   x = jnp.linspace(-4.0, 4.0, 401)
   names = ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "silu", "softplus"]
   fig, axes = plt.subplots(2, 4, figsize=(10, 4.6), sharex=True)
   for ax, name in zip(axes.flat, names):
       f = (lambda v: act.leaky_relu(v, negative_slope=0.1)) if name == "leaky_relu" else getattr(act, name)
       ax.plot(x, f(x), label="f(x)")
       ax.plot(x, jax.vmap(jax.grad(f))(x), "--", label="f'(x)")
       ax.axhline(0.0, color="0.8", lw=0.8, zorder=0)
       ax.set_title(name + (r" ($\alpha$ = 0.1)" if name == "leaky_relu" else ""), fontsize=9)
       ax.set_ylim(-1.5, 2.5)
   for ax in axes[1]:
       ax.set_xlabel("x")
   axes[0, 0].legend(fontsize=8)
   fig.tight_layout()

Each panel shows a function (solid) and its derivative computed by :func:`jax.grad` (dashed). The
sigmoid's derivative never exceeds 1/4; tanh's peaks at 1 but both vanish away from zero. The
rectifiers have derivative 1 for all positive inputs; ReLU's is 0 for all negative ones (dead
units), while leaky ReLU and ELU keep a slope there. GELU and SiLU are smooth, overshoot 1 slightly
and have a small negative dip.

Inductive bias
--------------

An activation fixes the shape of the pieces a network builds its function from. ReLU networks
compute continuous *piecewise linear* functions, so they approximate curves with many straight
segments and extrapolate linearly; tanh and sigmoid networks build smooth, bounded functions and
extrapolate to a constant. Rectifiers are positively homogeneous (:math:`f(a x) = a f(x)` for
:math:`a > 0`), so scaling the input scales the output, a good match for data whose meaning does not
depend on its scale. Smooth activations assume smooth targets, and are required where the network's
own derivatives matter (physics-informed losses, second-order methods).

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.foundations.activations import (
...     elu, gelu, leaky_relu, relu, sigmoid, silu, softplus, tanh)
>>> x = jnp.array([-100.0, -1.0, 0.0, 1.0, 100.0])
>>> sigmoid(x).round(4)
Array([0.    , 0.2689, 0.5   , 0.7311, 1.    ], dtype=float32)
>>> softplus(x).round(4)  # log(1 + e^100) computed naively is inf
Array([  0.    ,   0.3133,   0.6931,   1.3133, 100.    ], dtype=float32)
>>> tanh(x).round(4), relu(x), leaky_relu(x, negative_slope=0.01)
(Array([-1.    , -0.7616,  0.    ,  0.7616,  1.    ], dtype=float32), Array([  0.,   0.,   0.,   1., 100.], dtype=float32), Array([ -1.  ,  -0.01,   0.  ,   1.  , 100.  ], dtype=float32))
>>> elu(x, alpha=1.0).round(4), silu(x).round(4)
(Array([ -1.    ,  -0.6321,   0.    ,   1.    , 100.    ], dtype=float32), Array([ -0.    ,  -0.2689,   0.    ,   0.7311, 100.    ], dtype=float32))
>>> gelu(x, approximate=False).round(4), gelu(x, approximate=True).round(4)
(Array([ -0.    ,  -0.1587,   0.    ,   0.8413, 100.    ], dtype=float32), Array([ -0.    ,  -0.1588,   0.    ,   0.8412, 100.    ], dtype=float32))
>>> jax.vmap(jax.grad(sigmoid))(x).round(4)  # saturated at both ends
Array([0.    , 0.1966, 0.25  , 0.1966, 0.    ], dtype=float32)
>>> jax.vmap(jax.grad(relu))(x)  # dead on the negative side
Array([0., 0., 0., 1., 1.], dtype=float32)

Implementation notes
--------------------

Written from :func:`jax.numpy.exp`, the sigmoid (and SiLU, built on it), tanh and the tanh form of
GELU pay for one or two full exponentials, a comparison and a division per entry, where XLA lowers
:func:`jax.numpy.tanh` and :func:`jax.nn.sigmoid` to its own fused approximations. On the book's
benchmark machine these versions are therefore up to about 2.4 times as slow as :mod:`jax.nn` at
some sizes (the tanh-form GELU most of all), while ReLU, ELU, softplus and the exact GELU run at the
same speed: see :doc:`/docs/performance`. The clarity of the stable forms is the point of this page;
in a model, call :mod:`jax.nn` (``jax.nn.gelu`` uses the tanh form unless ``approximate=False``).
"""

import math

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "sigmoid": (),
    "tanh": (),
    "relu": (),
    "leaky_relu": (),
    "elu": (),
    "gelu": ("approximate",),
    "silu": (),
    "softplus": (),
}

#: The closed-form derivatives that the tests compare with :func:`jax.grad`, keyed by function name.
#: Leaky ReLU's uses ``negative_slope = 0.01``, ELU's ``alpha = 1``.
DERIVATIVES = {
    "sigmoid": lambda x: sigmoid(x) * (1.0 - sigmoid(x)),
    "tanh": lambda x: 1.0 - tanh(x) ** 2,
    "relu": lambda x: (x > 0).astype(x.dtype),
    "leaky_relu": lambda x: jnp.where(x >= 0, 1.0, 0.01).astype(x.dtype),
    "elu": lambda x: jnp.where(x > 0, 1.0, jnp.exp(jnp.minimum(x, 0.0))).astype(x.dtype),
    "gelu": lambda x: 0.5 * jax.lax.erfc(-x / math.sqrt(2.0)) + x * jnp.exp(-0.5 * x**2) / math.sqrt(2.0 * math.pi),
    "silu": lambda x: sigmoid(x) * (1.0 + x * (1.0 - sigmoid(x))),
    "softplus": lambda x: sigmoid(x),
}


def _sign_and_abs(x):
    """``(s, a)`` with ``x = s * a``, ``a = |x|``, and the sign taken as +1 at 0.

    ``jnp.abs`` has derivative ``sign(0) = 0`` at 0, which would give these smooth functions a wrong
    derivative of 0 there; selecting ``x`` or ``-x`` keeps the derivative of ``a`` equal to ``s``.
    """
    s = jnp.where(x >= 0, 1.0, -1.0).astype(x.dtype)
    return s, s * x


def sigmoid(x):
    """The logistic sigmoid ``1 / (1 + exp(-x))``, exponentiating only ``-|x|``."""
    return _sigmoid_jit(_checks.float_array(x, "x"))


def tanh(x):
    """The hyperbolic tangent, ``sign(x) (1 - exp(-2|x|)) / (1 + exp(-2|x|))``."""
    return _tanh_jit(_checks.float_array(x, "x"))


def relu(x):
    """The rectified linear unit ``max(0, x)``, with derivative 0 at ``x = 0`` (as :func:`jax.nn.relu`)."""
    return _relu_jit(_checks.float_array(x, "x"))


def leaky_relu(x, negative_slope=0.01):
    """``x`` for ``x >= 0`` and ``negative_slope * x`` below."""
    return _leaky_relu_jit(_checks.float_array(x, "x"), negative_slope)


def elu(x, alpha=1.0):
    """``x`` for ``x > 0`` and ``alpha * (exp(x) - 1)`` below."""
    return _elu_jit(_checks.float_array(x, "x"), alpha)


def gelu(x, approximate=False):
    """The Gaussian error linear unit ``x Phi(x)``; ``approximate=True`` gives the tanh form."""
    return _gelu_jit(_checks.float_array(x, "x"), approximate=approximate)


def silu(x):
    """The sigmoid linear unit (swish) ``x * sigmoid(x)``."""
    return _silu_jit(_checks.float_array(x, "x"))


def softplus(x):
    """``log(1 + exp(x))`` as ``max(0, x) + log(1 + exp(-|x|))``, finite for every finite ``x``."""
    return _softplus_jit(_checks.float_array(x, "x"))


# Each function checks its input, then hands it straight to a compiled core below: called eagerly,
# each of its few operations would compile on its own for every new shape and dtype.

def _sigmoid(x):
    _, a = _sign_and_abs(x)
    e = jnp.exp(-a)  # in (0, 1]: never overflows
    return jnp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _tanh(x):
    s, a = _sign_and_abs(x)
    return s * (-jnp.expm1(-2.0 * a)) / (1.0 + jnp.exp(-2.0 * a))


def _relu(x):
    return jnp.where((x > 0) | jnp.isnan(x), x, jnp.zeros_like(x))  # a NaN stays NaN, as in jax.nn.relu


def _leaky_relu(x, negative_slope):
    return jnp.where(x >= 0, x, negative_slope * x)


def _elu(x, alpha):
    negative = jnp.where(x > 0, 0.0, x)  # exp of a large positive x is never formed, nor its gradient
    return jnp.where(x > 0, x, alpha * jnp.expm1(negative))


def _gelu(x, approximate):
    if approximate:
        c = math.sqrt(2.0 / math.pi)
        return 0.5 * x * (1.0 + _tanh(c * (x + 0.044715 * x**3)))
    return 0.5 * x * jax.lax.erfc(-x / math.sqrt(2.0))


def _silu(x):
    return x * _sigmoid(x)


def _softplus(x):
    # max(0, x) written as (x + |x|) / 2 so that the derivative at 0 is sigmoid(0) = 1/2 exactly
    return 0.5 * (x + jnp.abs(x)) + jnp.log1p(jnp.exp(-jnp.abs(x)))


_sigmoid_jit, _tanh_jit, _relu_jit, _silu_jit, _softplus_jit = map(jax.jit, (_sigmoid, _tanh, _relu, _silu, _softplus))
_leaky_relu_jit, _elu_jit = jax.jit(_leaky_relu), jax.jit(_elu)
_gelu_jit = jax.jit(_gelu, static_argnames="approximate")
