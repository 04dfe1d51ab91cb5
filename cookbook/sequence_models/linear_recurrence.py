r"""Linear recurrences and the Linear Recurrent Unit
================================================

A recurrence whose update is linear in its state, :math:`h_t = a_t \odot h_{t-1} + b_t`, can be
computed for a whole sequence in parallel with an associative scan, in :math:`O(\log T)` steps
instead of :math:`T`: the engine under every model of this chapter, shown here with the Linear
Recurrent Unit, the simplest network built on it.

Equation
--------

.. math::

   \begin{aligned}
   h_t &= a_t \odot h_{t-1} + b_t, \qquad
   (a_1, b_1) \bullet (a_2, b_2) = (a_1 \odot a_2,\; a_2 \odot b_1 + b_2) \\
   \lambda &= \exp\!\left(-e^{\nu} + \mathrm{i}\, e^{\theta}\right), \qquad
   \gamma = \sqrt{1 - |\lambda|^2} \\
   s_t &= \lambda \odot s_{t-1} + \gamma \odot (B x_t), \qquad
   y_t = \operatorname{Re}(C s_t) + D \odot x_t
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`t`
     - time step, from 0 to :math:`T - 1`
     - row index
     - scalar
   * - :math:`h_t`
     - state of the recurrence; :math:`h_{-1}` is the initial state (zeros unless given)
     - ``h``, ``h0``
     - ``(T, ...)``
   * - :math:`a_t`
     - decay: how much of the previous state is kept, per entry
     - ``a``
     - ``(T, ...)``
   * - :math:`b_t`
     - input written into the state at step :math:`t`
     - ``b``
     - ``(T, ...)``
   * - :math:`\bullet`
     - the associative operator: composition of the affine maps :math:`h \mapsto a h + b`
     - ``combine``
     - pairs of ``(..., ...)``
   * - :math:`\lambda`
     - the LRU's diagonal, complex recurrence weights, inside the unit disc
     - ``lam``
     - ``(N,)``
   * - :math:`\nu`, :math:`\theta`
     - log-parameters of the modulus and the phase of :math:`\lambda`
     - ``params["nu_log"]``, ``params["theta_log"]``
     - ``(N,)``
   * - :math:`\gamma`
     - normalisation of the input, stored as its logarithm
     - ``params["gamma_log"]``
     - ``(N,)``
   * - :math:`s_t`
     - the LRU's complex state
     - ``s``
     - ``(T, N)``
   * - :math:`x_t`, :math:`y_t`
     - input and output of the LRU
     - ``x``, ``y``
     - ``(T, H)``
   * - :math:`B`, :math:`C`
     - complex input and output projections
     - ``params["B_re"]`` + i ``params["B_im"]``; likewise ``C_re``, ``C_im``
     - ``(N, H)``, ``(H, N)``
   * - :math:`D`
     - skip connection, one weight per feature
     - ``params["D"]``
     - ``(H,)``

Explanation
-----------

A recurrent network updates its state with :math:`h_t = f(h_{t-1}, x_t)`, and step :math:`t` must
wait for step :math:`t-1`: :math:`T` steps in a row, however many processors there are. If the
update is *linear* in the state (elementwise here, :math:`a_t \odot h_{t-1} + b_t`, with
:math:`a_t` and :math:`b_t` computed from the inputs alone), the wait disappears. Each step is the
affine map :math:`h \mapsto a_t h + b_t`, and :math:`h_t` is the composition of the first
:math:`t + 1` maps applied to :math:`h_{-1}`. Composing two affine maps gives an affine map: first
:math:`(a_1, b_1)`, then :math:`(a_2, b_2)`, is :math:`h \mapsto a_2 (a_1 h + b_1) + b_2`, the
operator :math:`\bullet` of the equation. Composition of functions is associative, and so is
:math:`\bullet`; writing out both bracketings of three maps gives
:math:`(a_1 a_2 a_3,\; a_2 a_3 b_1 + a_3 b_2 + b_3)` either way.

An associative operator is all that a *parallel prefix sum* needs :footcite:`blelloch1990prefix`:
combine neighbours in pairs, recurse on the :math:`T/2` results, then fill in the prefixes in
between; this is how linear recurrent networks are trained in parallel over the sequence
:footcite:`martin2018parallelizing`. :func:`jax.lax.associative_scan` does this with :math:`O(T)` applications of the operator
in all (work) but only :math:`O(\log T)` rounds of them one after another (depth); the tests count
at most :math:`2 \lceil \log_2 T \rceil` rounds and fewer than :math:`2T` applications. An initial
state is folded into the first input, :math:`b_0 + a_0 \odot h_{-1}`. ``linear_scan_sequential``
is the same recurrence as a :func:`jax.lax.scan`, one step at a time; the two agree to rounding
(not bit for bit: the scan adds in another order).

.. admonition:: Intuition

   Compound interest with deposits: each year the balance is multiplied by a rate and a deposit is
   added. To know every year's balance you need not wait year after year; two consecutive years
   merge into one "super-year" (a combined rate and a combined deposit), pairs of super-years merge
   again, and after :math:`\log_2 T` rounds of merging every balance is known.

**The Linear Recurrent Unit.** :footcite:t:`orvieto2023resurrecting` asked what a recurrent network
needs to match the state space models of the next pages, and found: a *linear*, *diagonal*,
*complex* recurrence, carefully parametrised. A dense real matrix recurrence can be diagonalised
over the complex numbers, so a complex diagonal :math:`\lambda` loses little and makes the
recurrence elementwise, which is what the scan needs (the diagonal state space model S5 made the
same choice :footcite:`smith2023simplified`). Stability needs :math:`|\lambda| < 1`; writing
:math:`\lambda = \exp(-e^{\nu} + \mathrm{i} e^{\theta})` guarantees it for every :math:`\nu`, and
puts the learning rate on the logarithm of the time scale :math:`1/(1 - |\lambda|)`, so modes near
the unit circle (long memories) are as easy to adjust as short ones. With :math:`|\lambda|` close to
1, the state sums many inputs and its size blows up as :math:`1/(1 - |\lambda|^2)`;
:math:`\gamma = \sqrt{1 - |\lambda|^2}` scales the input down so that the total energy of the
response to an impulse, :math:`\gamma^2 \sum_k |\lambda|^{2k}`, is exactly 1. *Ring
initialisation* draws :math:`\lambda` uniformly on the ring :math:`r_{\min} \le |\lambda| \le
r_{\max}` with phases in :math:`[0, \theta_{\max}]`; a ring close to the unit circle
(:math:`r_{\min} = 0.9`) gives long memories from the first step. The output is the real part of a
complex projection plus a skip connection; the paper places the unit inside a residual block with
a normalisation and an MLP, which this page leaves out.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.sequence_models.linear_recurrence import init
   fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.2))
   for ax, (r_min, r_max) in zip(axes, [(0.0, 1.0), (0.9, 0.999)]):
       p = init(jax.random.key(0), 1, 256, r_min=r_min, r_max=r_max, max_phase=jnp.pi / 2)
       lam = jnp.exp(-jnp.exp(p["nu_log"]) + 1j * jnp.exp(p["theta_log"]))
       ax.add_patch(plt.Circle((0, 0), 1, fill=False, lw=0.8))
       ax.scatter(np.asarray(lam.real), np.asarray(lam.imag), s=4)
       ax.set(aspect="equal", xlim=(-0.1, 1.1), ylim=(-0.1, 1.1), xlabel="Re λ", ylabel="Im λ",
              title=f"ring {r_min} ≤ |λ| ≤ {r_max}")
   fig.tight_layout()

Inductive bias
--------------

A linear recurrence assumes that what the past leaves behind is a sum of exponentially fading
(and, when complex, oscillating) traces of the inputs: a bank of leaky integrators and resonators
with learned time scales. Time invariance (the same :math:`\lambda` at every step) makes it a
convolution, good at smooth, long-range signals; it cannot decide from the content of a token to
keep or discard it, which the selective state space of Mamba adds. Nonlinearity comes only from the layers between
recurrences, so depth replaces the nonlinear state update of an LSTM.

Example
-------

The parallel scan and the step-by-step scan agree; an LRU layer maps ``(T, H)`` to ``(T, H)``:

>>> import jax, jax.numpy as jnp
>>> from cookbook.sequence_models.linear_recurrence import (
...     apply, init, linear_scan, linear_scan_sequential)
>>> a = jnp.array([0.5, 0.5, 2.0, 0.0])
>>> b = jnp.array([1.0, 1.0, 1.0, 3.0])
>>> linear_scan(a, b)  # 1, 0.5*1+1, 2*1.5+1, 0*4+3
Array([1. , 1.5, 4. , 3. ], dtype=float32)
>>> linear_scan(a, b, h0=jnp.array(2.0))  # 0.5*2+1, 0.5*2+1, 2*2+1, 0*5+3
Array([2., 2., 5., 3.], dtype=float32)
>>> k_a, k_b, k_p, k_x = jax.random.split(jax.random.key(0), 4)
>>> a = jax.random.uniform(k_a, (7, 3))
>>> b = jax.random.normal(k_b, (7, 3))
>>> bool(jnp.allclose(linear_scan(a, b), linear_scan_sequential(a, b), atol=1e-6))
True
>>> params = init(k_p, 3, 8)
>>> y = apply(params, jax.random.normal(k_x, (7, 3)))
>>> y.shape, y.dtype
((7, 3), dtype('float32'))

Implementation notes
--------------------

On an accelerator the associative scan turns :math:`T` dependent steps into about
:math:`2\log_2 T` rounds of wide elementwise work; it does up to twice the arithmetic of the
sequential scan, and which of the two is faster depends on the machine and the length (the book's
benchmark suite measures both against the sequence length). Its compilation takes longer too, and
grows with the number of rounds. Neither keeps more than a few arrays of the ``(T, ...)`` states;
Mamba's fused kernel goes further and keeps the states in on-chip memory, writing only the outputs. The LRU's authors use
:math:`r_{\min} = 0.9`, :math:`r_{\max} = 0.999` and :math:`\theta_{\max} = \pi/10` on the
long-range benchmarks, and the defaults of ``init`` (the full disc) elsewhere.
"""

import functools
import math

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"linear_scan": (), "linear_scan_sequential": (), "apply": ()}


def _inexact(x, name):
    """``x`` as a real or complex floating-point array; a ``TypeError`` for integers and booleans."""
    try:
        return _checks.float_array(x, name)
    except TypeError:
        if not isinstance(x, bool):
            try:
                x = _checks._as_array(x, name)  # a NumPy array placed without compiling a copy
            except TypeError:
                x = None
            if x is not None and jnp.issubdtype(x.dtype, jnp.complexfloating):
                return x
        raise


def _check_scan(a, b, h0):
    a, b = _inexact(a, "a"), _inexact(b, "b")
    if a.ndim < 1:
        raise ValueError(f"a must have a leading time axis (T, ...), got shape {a.shape}")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape (T, ...), got a {a.shape} and b {b.shape}")
    if h0 is not None:
        h0 = _inexact(h0, "h0")
        if h0.shape != a.shape[1:]:
            raise ValueError(f"h0 must have the shape of one step of a and b, {a.shape[1:]}, got {h0.shape}")
    return a, b, h0


def _common_dtype(a, b, h0):
    """``a``, ``b`` and ``h0`` (zeros when None) in the dtype they promote to, inside the compiled scans."""
    dtype = jnp.result_type(a, b) if h0 is None else jnp.result_type(a, b, h0)
    h0 = jnp.zeros(a.shape[1:], dtype) if h0 is None else h0
    return a.astype(dtype), b.astype(dtype), h0.astype(dtype)


def combine(earlier, later):
    """The operator ``(a1, b1) . (a2, b2) = (a1 a2, a2 b1 + b2)``: first map 1, then map 2."""
    a1, b1 = earlier
    a2, b2 = later
    return a1 * a2, a2 * b1 + b2


def linear_scan_sequential(a, b, h0=None):
    """``h_t = a_t h_{t-1} + b_t`` for ``a``, ``b`` of shape (T, ...), one step at a time."""
    return _sequential(*_check_scan(a, b, h0))


def linear_scan(a, b, h0=None):
    """``h_t = a_t h_{t-1} + b_t`` for ``a``, ``b`` of shape (T, ...), real or complex, with an
    associative scan: O(T) work, O(log T) depth. ``h0`` (the state before step 0) defaults to zeros."""
    return _parallel(*_check_scan(a, b, h0))


# The checked arguments go, as they came, to one compiled computation each (the promotion to a
# common dtype and the zero state included): called eagerly, the scans would otherwise dispatch (and
# compile) their many small operations one by one.
@jax.jit
def _sequential(a, b, h0):
    a, b, h0 = _common_dtype(a, b, h0)

    def step(h, ab):
        a_t, b_t = ab
        h = a_t * h + b_t
        return h, h

    _, h = jax.lax.scan(step, h0, (a, b))
    return h  # (T, ...)


@jax.jit
def _parallel(a, b, h0):
    a, b, h0 = _common_dtype(a, b, h0)
    b = b.at[0].add(a[0] * h0)  # h_0 = a_0 h_{-1} + b_0: the initial state folded into the first input
    _, h = jax.lax.associative_scan(combine, (a, b))
    return h  # (T, ...)


# ---- The Linear Recurrent Unit (Orvieto et al. 2023) ----------------------------------------------

def init(key, H, N, *, r_min=0.0, r_max=1.0, max_phase=2 * math.pi):
    """Parameters of an LRU with ``H`` input and output features and ``N`` complex states.

    Ring initialisation: ``|lambda|^2`` uniform in ``[r_min^2, r_max^2]``, phases uniform in
    ``[0, max_phase]``; ``B`` and ``C`` complex Gaussian (variances ``1/H`` and ``1/N``), ``D`` normal.
    """
    H, N = _checks.size(H, "H"), _checks.size(N, "N")
    if not 0.0 <= r_min < r_max <= 1.0:
        raise ValueError(f"need 0 <= r_min < r_max <= 1, got r_min={r_min}, r_max={r_max}")
    _checks.positive(max_phase, "max_phase")
    return _init(key, H, N, r_min, r_max, max_phase)


@functools.partial(jax.jit, static_argnames=("H", "N"))
def _init(key, H, N, r_min, r_max, max_phase):
    k_nu, k_theta, k_b_re, k_b_im, k_c_re, k_c_im, k_d = jax.random.split(key, 7)
    u_nu = jax.random.uniform(k_nu, (N,))
    u_theta = jax.random.uniform(k_theta, (N,))
    modulus_sq = u_nu * (r_max**2 - r_min**2) + r_min**2  # |lambda|^2, uniform on the ring's area
    nu_log = jnp.log(-0.5 * jnp.log(modulus_sq))  # |lambda| = exp(-exp(nu_log))
    return {
        "nu_log": nu_log,
        "theta_log": jnp.log(max_phase * u_theta),
        "gamma_log": 0.5 * jnp.log1p(-modulus_sq),  # gamma = sqrt(1 - |lambda|^2)
        "B_re": jax.random.normal(k_b_re, (N, H)) / math.sqrt(2 * H),
        "B_im": jax.random.normal(k_b_im, (N, H)) / math.sqrt(2 * H),
        "C_re": jax.random.normal(k_c_re, (H, N)) / math.sqrt(N),
        "C_im": jax.random.normal(k_c_im, (H, N)) / math.sqrt(N),
        "D": jax.random.normal(k_d, (H,)),
    }


def _lru_sizes(params):
    """``(H, N)`` of an LRU, after checking that ``params`` has the shapes ``init`` gives it."""
    where = "params['B_re']"
    B_re = _checks.float_array(params["B_re"], where, ndim=2, what=" (N, H)")
    N, H = B_re.shape
    shapes = {"nu_log": (N,), "theta_log": (N,), "gamma_log": (N,), "B_re": (N, H), "B_im": (N, H),
              "C_re": (H, N), "C_im": (H, N), "D": (H,)}
    for name, shape in shapes.items():
        where = f"params['{name}']"
        _checks.same_shape(_checks.float_array(params[name], where), where, shape, expected_from="init(key, H, N)")
    return H, N


def apply(params, x):
    """The LRU's outputs (T, H) for inputs ``x`` (T, H), from a zero state."""
    H, N = _lru_sizes(params)
    x = _checks.float_array(x, "x", ndim=2, what=" (T, H)")
    _checks.same_shape(x, "x", (x.shape[0], H), expected_from=f"(T, H) with H = {H} from params")
    return _lru(params, x)


@jax.jit
def _lru(params, x):
    T, N = x.shape[0], params["nu_log"].shape[0]
    lam = jnp.exp(-jnp.exp(params["nu_log"]) + 1j * jnp.exp(params["theta_log"]))  # (N,)
    B = (params["B_re"] + 1j * params["B_im"]) * jnp.exp(params["gamma_log"])[:, None]  # (N, H)
    C = params["C_re"] + 1j * params["C_im"]  # (H, N)
    Bx = x.astype(jnp.float32) @ B.T  # (T, N)
    s = _parallel(jnp.broadcast_to(lam, (T, N)), Bx, jnp.zeros((N,), Bx.dtype))  # (T, N)
    y = (s @ C.T).real + x * params["D"][None, :]  # (T, H)
    return y.astype(x.dtype)
