r"""Universal approximation
=======================

One hidden layer of enough units can approximate any continuous function on a bounded interval as
closely as one likes; the proof for the ReLU is a construction that says how many units a given
accuracy needs, and what the theorem does not promise: a way to find the weights, or anything
outside the interval.

Equation
--------

.. math::

   \begin{aligned}
   \hat{f}(x) &= f(t_0) + \sum_{k=0}^{m-1} c_k \operatorname{relu}(x - t_k), \qquad
   t_k = a + k h, \quad h = \frac{b - a}{m}, \\
   c_k &= s_k - s_{k-1}, \qquad s_k = \frac{f(t_{k+1}) - f(t_k)}{h}, \quad s_{-1} = 0, \\
   \max_{a \le x \le b} \big|f(x) - \hat{f}(x)\big| &\le \frac{h^2}{8} \max_{a \le x \le b} |f''(x)|
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`f`
     - the function to approximate, continuous on :math:`[a, b]`
     - ``f``
     - a function
   * - :math:`\hat{f}`
     - the network: one hidden layer of :math:`m` ReLU units and a linear output
     - ``apply``
     - ``(N,)`` for ``(N,)`` inputs
   * - :math:`x`
     - an input
     - ``x``
     - ``(N,)``
   * - :math:`a`, :math:`b`
     - the interval
     - ``a``, ``b``
     - scalars
   * - :math:`m`, :math:`k`
     - the number of hidden units (the width), and a unit's index
     - ``width``
     - scalar
   * - :math:`t_k`
     - the knot of unit :math:`k`: its bias is :math:`-t_k`, its input weight 1
     - ``params["t"]``
     - ``(m,)``
   * - :math:`c_k`
     - the output weight of unit :math:`k`, the change of slope at :math:`t_k`
     - ``params["c"]``
     - ``(m,)``
   * - :math:`s_k`
     - the slope of the chord from :math:`t_k` to :math:`t_{k+1}`
     - ``s``
     - ``(m,)``
   * - :math:`h`
     - the spacing of the knots
     - ``h``
     - scalar
   * - :math:`f''`
     - the second derivative of :math:`f`, its curvature
     - ``curvature`` bounds it
     - scalar

Explanation
-----------

:footcite:t:`cybenko1989approximation` proved that sums of sigmoids of affine functions are dense in
the continuous functions on a compact set, and :footcite:t:`hornik1991approximation` that what matters
is only that the activation is bounded and non-constant; :footcite:t:`leshno1993multilayer` extended
it to any activation that is not a polynomial, the ReLU included. These are existence proofs: for
every accuracy there is a width and weights that reach it.

For the ReLU on an interval the weights can be written down. Place :math:`m` knots evenly; unit
:math:`k` is zero left of its knot and rises with slope 1 right of it, so a sum of units with output
weights :math:`c_k` is a piecewise-linear function whose slope changes by :math:`c_k` at each knot.
Choosing the changes so that the slope on each piece is the chord's slope :math:`s_k` makes the
network the linear interpolant of :math:`f` at the knots (``interpolant``). On a piece of length
:math:`h` the error of linear interpolation is at most :math:`\frac{h^2}{8}\max|f''|`, so the error
falls as :math:`1/m^2` for a smooth function, and as :math:`1/m` for a merely Lipschitz one (a kink
between knots costs its share of a piece). Read backwards, the bound is the width that an accuracy
needs: :math:`m \ge (b - a)\sqrt{\max|f''| / 8\varepsilon}`.

.. admonition:: Intuition

   A flexible ruler bent at evenly spaced pegs: between pegs it is straight, at each peg it turns by
   the amount the curve turns there. More pegs, closer fit; the curve's bending sets how many pegs a
   given closeness needs.

What the theorem does not say. It says nothing outside :math:`[a, b]`: there the network continues
along its last piece, a straight line, while :math:`f` goes wherever it goes (the figure, shaded). It
says nothing about whether gradient descent finds these weights, and nothing about how many units
other functions need: in :math:`d` dimensions a grid of knots needs :math:`(1/h)^d` units, the curse
of dimensionality; depth can do exponentially better for some functions
:footcite:p:`telgarsky2016benefits`.

.. plot::

   import jax.numpy as jnp
   from cookbook.theory.universal_approximation import interpolant, apply

   f = lambda x: jnp.sin(3 * x) + 0.3 * x**2
   x = jnp.linspace(-2.5, 2.5, 500)
   widths = jnp.array([4, 8, 16, 32, 64])
   grid = jnp.linspace(-1.5, 1.5, 2001)
   errors = [float(jnp.max(jnp.abs(f(grid) - apply(interpolant(f, -1.5, 1.5, int(m)), grid)))) for m in widths]
   fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
   left.plot(x, f(x), "k", lw=2, label="f")
   for m in (4, 8):
       left.plot(x, apply(interpolant(f, -1.5, 1.5, m), x), label=f"width {m}")
   left.axvspan(-2.5, -1.5, color="0.9"); left.axvspan(1.5, 2.5, color="0.9")
   left.set(xlabel="x", title="ReLU networks built from the proof")
   left.legend(fontsize=8)
   h = 3.0 / widths
   right.loglog(widths, errors, "o", label="measured max error")
   right.loglog(widths, h**2 / 8 * 9.6, "-", label="bound h² max|f''| / 8")
   right.set(xlabel="width m", title="error on [-1.5, 1.5]")
   right.legend(fontsize=8)
   fig.tight_layout()

Inductive bias
--------------

A one-hidden-layer ReLU network is a piecewise-linear function with at most :math:`m` kinks: it
assumes nothing about :math:`f` but pays for that with width. The construction's knots are fixed in
advance; a trained network places them where :math:`f` bends, which is why it needs fewer units
than the uniform grid for functions whose curvature is uneven.

Example
-------

>>> import jax.numpy as jnp
>>> from cookbook.theory.universal_approximation import interpolant, apply, error_bound
>>> params = interpolant(jnp.sin, 0.0, 3.0, 8)
>>> params["t"].shape, params["c"].shape
((8,), (8,))
>>> x = jnp.linspace(0.0, 3.0, 1001)
>>> error = float(jnp.max(jnp.abs(apply(params, x) - jnp.sin(x))))
>>> round(error, 4), round(error_bound(0.0, 3.0, 8, curvature=1.0), 4)
(0.0174, 0.0176)
>>> bool(jnp.allclose(apply(params, params["t"]), jnp.sin(params["t"]), atol=1e-6))  # exact at the knots
True

Implementation notes
--------------------

``interpolant`` evaluates ``f`` on the knots (it must accept an array) and returns the hidden
biases as knots and the output weights; ``apply`` evaluates the network on a batch of scalar inputs.
The ReLU basis is badly conditioned: the output is a sum of :math:`m` terms that grow with
:math:`x` and cancel, so float32 rounding grows with the width (about :math:`1.5 \times 10^{-6}` at
:math:`m = 128` on the figure's function, beside an approximation error of :math:`7 \times
10^{-4}`). The construction is the hat-function basis of finite elements in disguise: each hat is a
combination of three ReLUs. Approximation by trained networks and the rates they reach are
surveyed by :footcite:t:`devore2021neural`.
"""

import functools
import numbers

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"interpolant": ("f", "a", "b", "width"), "apply": ()}


def _interval(a, b):
    for name, value in (("a", a), ("b", b)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    if not a < b:
        raise ValueError(f"the interval must have a < b, got a = {a} and b = {b}")


def interpolant(f, a, b, width):
    """The ReLU network with ``width`` hidden units that interpolates ``f`` linearly at the knots
    ``a + k (b - a) / width``: ``{"t": knots (m,), "c": output weights (m,), "d": f(a) ()}``."""
    if not callable(f):
        raise TypeError(f"f must be a function of an array, got {type(f).__name__}")
    _interval(a, b)
    width = _checks.size(width, "width")
    out = jax.eval_shape(f, jax.ShapeDtypeStruct((width + 1,), jnp.float32))
    if getattr(out, "shape", None) != (width + 1,) or not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"f(knots) must have shape ({width + 1},) and a float dtype (f must map an array "
                         f"elementwise), got {getattr(out, 'shape', None)} and {getattr(out, 'dtype', None)}")
    return _interpolant(f, a, b, width)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))  # one compilation per function and width
def _interpolant(f, a, b, width):
    h = (b - a) / width
    knots = a + h * jnp.arange(width + 1, dtype=jnp.float32)  # t_0 .. t_m
    values = f(knots)
    s = (values[1:] - values[:-1]) / h  # chord slopes s_0 .. s_{m-1}
    c = s - jnp.concatenate([jnp.zeros(1, s.dtype), s[:-1]])  # slope changes, s_{-1} = 0
    return {"t": knots[:-1], "c": c, "d": values[0]}


def apply(params, x):
    """The network's outputs (N,) at scalar inputs ``x`` (N,)."""
    t = _checks.float_array(params["t"], "params['t']", ndim=1, what=" (m,)")
    c = _checks.float_array(params["c"], "params['c']", ndim=1, what=" (m,)")
    _checks.same_shape(c, "params['c']", t.shape, expected_from="as params['t']")
    d = _checks.float_array(params["d"], "params['d']", ndim=0, what=" (a scalar)")
    x = _checks.float_array(x, "x", ndim=1, what=" (N,)")
    return _apply(t, c, d, x)


@jax.jit
def _apply(t, c, d, x):
    hidden = jax.nn.relu(x[:, None] - t[None, :])  # (N, m): weight 1, bias -t_k
    return d + hidden @ c


def error_bound(a, b, width, *, curvature):
    """The bound (h^2 / 8) max|f''| on the error of ``interpolant`` on [a, b], given
    ``curvature`` >= max|f''|."""
    _interval(a, b)
    width = _checks.size(width, "width")
    curvature = _checks.positive(curvature, "curvature", allow_zero=True)
    return ((b - a) / width) ** 2 * curvature / 8
