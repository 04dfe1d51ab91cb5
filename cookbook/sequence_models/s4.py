r"""Structured state spaces: HiPPO, discretisation, S4 and S4D
==========================================================

A continuous linear system :math:`x'(t) = A x(t) + B u(t)`, sampled with a learned step, is a
sequence layer that runs as a recurrence when generating and as one long convolution when
training: the layer to reach for on very long, smooth signals (audio, sensors, long-range
benchmarks), and the ancestor of Mamba.

Equation
--------

.. math::

   \begin{aligned}
   x'(t) &= A x(t) + B u(t), \qquad y(t) = C x(t) + D u(t) \\
   \text{HiPPO-LegS:}\quad A_{nk} &= -\begin{cases}
     \sqrt{2n+1}\sqrt{2k+1} & n > k \\ n + 1 & n = k \\ 0 & n < k \end{cases}, \qquad
     B_n = \sqrt{2n+1} \\
   \text{ZOH:}\quad \bar{A} &= e^{\Delta A}, \qquad
     \bar{B} = A^{-1}\left(e^{\Delta A} - I\right) B \\
   \text{bilinear:}\quad \bar{A} &= \left(I - \tfrac{\Delta}{2} A\right)^{-1}
     \left(I + \tfrac{\Delta}{2} A\right), \qquad
     \bar{B} = \left(I - \tfrac{\Delta}{2} A\right)^{-1} \Delta B \\
   x_k &= \bar{A} x_{k-1} + \bar{B} u_k, \qquad y_k = C x_k + D u_k \\
   y &= \bar{K} * u + D u, \qquad \bar{K}_\ell = C \bar{A}^{\ell} \bar{B},
     \quad \ell = 0, \dots, T - 1
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`t`; :math:`k`, :math:`\ell`
     - continuous time; a sample index and a lag
     - sample ``k``, lag: index of ``K``
     - scalars
   * - :math:`u`, :math:`y`
     - input and output signal, one channel
     - ``u``, ``y``
     - ``(T,)`` per channel, ``(T, H)`` per layer
   * - :math:`x`
     - state
     - ``x``
     - ``(N,)``
   * - :math:`A`, :math:`B`
     - state matrix and input vector; HiPPO-LegS gives them in closed form
     - ``A``, ``B``
     - ``(N, N)``, ``(N,)``
   * - :math:`n`, :math:`k`
     - row and column of :math:`A` in the HiPPO formula
     - ``n``, ``k``
     - scalars
   * - :math:`C`, :math:`D`
     - readout of the state and skip connection
     - ``C``, ``params["D"]``
     - ``(N,)``, scalar per channel
   * - :math:`\Delta`
     - step size, learned per channel as its logarithm
     - ``step``, ``params["log_step"]``
     - scalar, ``(H,)``
   * - :math:`\bar{A}`, :math:`\bar{B}`
     - the discrete system
     - ``A_bar``, ``B_bar``
     - as :math:`A`, :math:`B`
   * - :math:`I`
     - identity matrix
     - ``jnp.eye``
     - ``(N, N)``
   * - :math:`\bar{K}`, :math:`T`
     - the convolution kernel, as long as the sequence
     - ``K``, ``T``
     - ``(T,)`` per channel

Explanation
-----------

**HiPPO.** How should a fixed-size state summarise a signal seen so far? :footcite:t:`gu2020hippo`
answered: keep the coefficients of its best polynomial approximation. HiPPO-LegS projects the whole
history :math:`u(s), s \le t` onto the first :math:`N` Legendre polynomials, stretched over
:math:`[0, t]`; differentiating those coefficients in :math:`t` gives the linear system above
(LegS proper scales it by :math:`1/t`; S4 keeps the matrices and lets the step set the time scale).
:math:`A` is lower triangular with diagonal :math:`-(n+1)`, so every mode decays and the system is
stable. It is also *normal plus low rank*: :math:`A + P P^\top` with
:math:`P_n = \sqrt{n + 1/2}` is :math:`-\tfrac{1}{2}I` plus a skew-symmetric matrix, so its
eigenvalues all have real part :math:`-\tfrac12`; the tests check both.

**Discretisation.** A sequence arrives in samples, so the system is sampled with a step
:math:`\Delta`. The *zero-order hold* assumes :math:`u` constant over each step and solves the
ODE exactly (the code takes one matrix exponential of the block matrix
:math:`\Delta\left[\begin{smallmatrix} A & B \\ 0 & 0\end{smallmatrix}\right]`, whose top row is
:math:`[\bar{A}, \bar{B}]`, which works even when :math:`A` is singular); the *bilinear*
(Tustin) transform is the trapezoid rule. Both match ``scipy.signal.cont2discrete``. A
learned :math:`\Delta` rescales time: a small step makes the layer remember long, a large one makes
it react fast.

**Recurrence or convolution.** Unrolling :math:`x_k` from :math:`x_{-1} = 0` gives
:math:`y_k = \sum_{\ell} C \bar{A}^\ell \bar{B}\, u_{k - \ell} + D u_k`: a causal convolution with the
kernel :math:`\bar{K}`. Training computes :math:`\bar{K}` once and convolves with an FFT in
:math:`O(T \log T)`; generation runs the recurrence at :math:`O(N)` per step. S4
:footcite:`gu2022efficiently` made the kernel of a HiPPO matrix cheap to compute through its
normal-plus-low-rank form. S4D :footcite:`gu2022parameterization` showed that a *diagonal*
:math:`A` is enough: with complex :math:`A = \operatorname{diag}(\lambda_n)` the kernel is a
Vandermonde product,
:math:`\bar{K}_\ell = 2\operatorname{Re} \sum_n C_n \bar{B}_n e^{\ell \Delta \lambda_n}`, the factor
2 and the real part counting each mode with its complex conjugate (so :math:`N` complex modes make a
real system of :math:`2N` states). The layer here is S4D with the *S4D-Lin* initialisation,
:math:`\lambda_n = -\tfrac12 + \mathrm{i}\pi n`: the real part of HiPPO-LegS's normal part and
evenly spaced frequencies. It fixes :math:`B = 1` (only the products :math:`C_n \bar{B}_n` reach the
kernel) and learns :math:`\log\Delta`, :math:`A` (real part through its logarithm, so it stays
negative), :math:`C` and :math:`D`, one independent system per channel.

.. admonition:: Intuition

   HiPPO is a stenographer with a fixed page: instead of storing the whole speech, it keeps a
   handful of numbers from which the gist of everything said so far can be redrawn as a smooth
   curve, and it updates them as each word arrives. The step :math:`\Delta` is how fast the
   stenographer thinks the speaker talks.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.sequence_models.s4 import init, kernel
   params = init(jax.random.key(0), 4, 16)
   params["log_step"] = jnp.log(jnp.array([0.003, 0.01, 0.03, 0.1]))
   params["C_re"], params["C_im"] = jnp.ones((4, 16)) / 16, jnp.zeros((4, 16))  # C = 1/N: the modes alone
   K = kernel(params, 256)
   fig, ax = plt.subplots(figsize=(6.4, 3.0))
   for h, step in enumerate([0.003, 0.01, 0.03, 0.1]):
       ax.plot(np.asarray(K[:, h]), lw=1, label=f"Δ = {step}")
   ax.set(xlabel="lag ℓ", ylabel="kernel", title="S4D-Lin kernels: a smaller step remembers longer")
   ax.legend(fontsize=8)
   fig.tight_layout()

Inductive bias
--------------

The layer is linear and *time invariant*: the same kernel slides over the whole sequence, so it
assumes that the input should be filtered the same way wherever it is, with smooth, decaying
memories at the time scales its steps set. That suits continuous signals and long-range smoothing,
and the HiPPO structure lets a memory span thousands of steps. What it cannot do is react to
content: a filter cannot decide to ignore a noise token and keep the next one, so tasks that need
selection, such as copying a few scattered tokens, defeat it (the Mamba page measures this).

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.sequence_models.s4 import (
...     apply, apply_recurrent, causal_conv, discretize, hippo_legs, init, kernel)
>>> A, B = hippo_legs(3)
>>> A
Array([[-1.    ,  0.    ,  0.    ],
       [-1.7321, -2.    ,  0.    ],
       [-2.2361, -3.873 , -3.    ]], dtype=float32)
>>> B
Array([1.    , 1.7321, 2.2361], dtype=float32)
>>> A_bar, B_bar = discretize(A, B, 0.1)
>>> A_bar.shape, B_bar.shape
((3, 3), (3,))
>>> causal_conv(jnp.array([1.0, 2.0, 3.0]), jnp.array([1.0, 0.5, 0.25]))  # 1, 2+0.5, 3+1+0.25
Array([1.  , 2.5 , 4.25], dtype=float32)
>>> k_p, k_u = jax.random.split(jax.random.key(0))
>>> params = init(k_p, 3, 5)
>>> u = jax.random.normal(k_u, (11, 3))
>>> kernel(params, 11).shape
(11, 3)
>>> y = apply(params, u)
>>> y.shape, bool(jnp.allclose(y, apply_recurrent(params, u), atol=1e-5))
((11, 3), True)

Implementation notes
--------------------

The FFT convolution pads to :math:`2T` so that the circular convolution of the FFT equals the
causal linear one; its cost is :math:`O(T \log T)` per channel, against :math:`O(TN)` for the
recurrence and :math:`O(T^2)` for a direct convolution. The Vandermonde kernel materialises a
``(H, N, T)`` array of powers; S4's own implementation evaluates it with a Cauchy kernel
:footcite:`gu2022efficiently`, and large models compute it in chunks. S4D keeps the real and
imaginary parts of :math:`A` and :math:`C` as separate real parameters, as here, so that any
optimiser applies. S4 and S4D usually put a GELU, a gated linear unit and a residual connection
around the layer; this page keeps only the state space part.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks
from cookbook.sequence_models.linear_recurrence import linear_scan_sequential

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"hippo_legs": ("N",), "discretize": ("method",), "causal_conv": (), "kernel": ("T",),
       "apply": (), "apply_recurrent": ()}


def hippo_legs(N):
    """``(A, B)`` of HiPPO-LegS with ``N`` states: ``A`` (N, N) lower triangular, ``B`` (N,)."""
    N = _checks.size(N, "N")
    n = np.arange(N)[:, None]
    k = np.arange(N)[None, :]
    root = np.sqrt(2 * n + 1) * np.sqrt(2 * k + 1)
    A = np.where(n > k, -root, np.where(n == k, -(n + 1.0), 0.0))
    B = np.sqrt(2 * np.arange(N) + 1.0)
    return jnp.asarray(A, jnp.float32), jnp.asarray(B, jnp.float32)


def discretize(A, B, step, method="zoh"):
    """``(A_bar, B_bar)`` of ``x' = A x + B u`` sampled every ``step``: ``"zoh"`` or ``"bilinear"``."""
    A = _checks.float_array(A, "A", ndim=2, what=" (N, N)")
    N = A.shape[0]
    _checks.same_shape(A, "A", (N, N), expected_from="a square matrix")
    B = _checks.same_shape(_checks.float_array(B, "B", ndim=1, what=" (N,)"), "B", (N,), expected_from="A")
    _checks.positive(step, "step")
    if method not in ("zoh", "bilinear"):
        raise ValueError(f"method must be 'zoh' or 'bilinear', got {method!r}")
    return _discretize(A, B, step, method)


@functools.partial(jax.jit, static_argnames="method")
def _discretize(A, B, step, method):
    N = A.shape[0]
    if method == "zoh":
        # expm of step * [[A, B], [0, 0]] is [[A_bar, B_bar], [0, 1]].
        block = jnp.zeros((N + 1, N + 1), A.dtype).at[:N, :N].set(A).at[:N, N].set(B)
        top = jax.scipy.linalg.expm(step * block)[:N]  # (N, N + 1)
        return top[:, :N], top[:, N]
    I = jnp.eye(N, dtype=A.dtype)
    left = I - step / 2 * A
    A_bar = jnp.linalg.solve(left, I + step / 2 * A)
    B_bar = jnp.linalg.solve(left, step * B)
    return A_bar, B_bar


def causal_conv(u, K):
    """``y_k = sum_{l <= k} K_l u_{k - l}`` for ``u``, ``K`` of shape (T,) or (T, H), by FFT."""
    u = _checks.float_array(u, "u", ndim=(1, 2), what=" (T,) or (T, H)")
    K = _checks.same_shape(_checks.float_array(K, "K"), "K", u.shape, expected_from="u")
    return _causal_conv(u, K)


@jax.jit
def _causal_conv(u, K):
    T = u.shape[0]
    n = 2 * T  # zero-padded to 2T: the FFT's circular convolution is then the linear one
    spectrum = jnp.fft.rfft(u.astype(jnp.float32), n, axis=0) * jnp.fft.rfft(K.astype(jnp.float32), n, axis=0)
    return jnp.fft.irfft(spectrum, n, axis=0)[:T].astype(u.dtype)


# ---- The S4D layer -------------------------------------------------------------------------------

def init(key, H, N, *, step_min=1e-3, step_max=1e-1):
    """Parameters of an S4D layer of ``H`` channels with ``N`` complex modes each (S4D-Lin).

    ``log_step`` uniform in ``[log step_min, log step_max]``; ``A = -1/2 + i pi n``; ``C`` complex
    normal; ``D`` normal.
    """
    H, N = _checks.size(H, "H"), _checks.size(N, "N")
    _checks.positive(step_min, "step_min")
    if not step_min < step_max:
        raise ValueError(f"step_max must exceed step_min, got step_min={step_min}, step_max={step_max}")
    return _init(key, H, N, math.log(step_min), math.log(step_max))


@functools.partial(jax.jit, static_argnames=("H", "N"))
def _init(key, H, N, log_min, log_max):
    k_step, k_c_re, k_c_im, k_d = jax.random.split(key, 4)
    return {
        "log_step": jax.random.uniform(k_step, (H,), minval=log_min, maxval=log_max),
        "log_A_re": jnp.full((H, N), math.log(0.5)),  # Re A = -exp(log_A_re) = -1/2
        "A_im": jnp.broadcast_to(math.pi * jnp.arange(N, dtype=jnp.float32), (H, N)),
        "C_re": jax.random.normal(k_c_re, (H, N)) * math.sqrt(0.5),
        "C_im": jax.random.normal(k_c_im, (H, N)) * math.sqrt(0.5),
        "D": jax.random.normal(k_d, (H,)),
    }


def _sizes(params):
    """``(H, N)`` of an S4D layer, after checking that ``params`` has the shapes ``init`` gives it."""
    where = "params['A_im']"
    H, N = _checks.float_array(params["A_im"], where, ndim=2, what=" (H, N)").shape
    shapes = {"log_step": (H,), "log_A_re": (H, N), "A_im": (H, N), "C_re": (H, N), "C_im": (H, N), "D": (H,)}
    for name, shape in shapes.items():
        where = f"params['{name}']"
        _checks.same_shape(_checks.float_array(params[name], where), where, shape, expected_from="init(key, H, N)")
    return H, N


def _diagonal_system(params):
    """The ZOH-discretised diagonal system: ``A_bar``, and ``C * B_bar`` (B = 1), each (H, N) complex."""
    step = jnp.exp(params["log_step"])[:, None]  # (H, 1)
    A = -jnp.exp(params["log_A_re"]) + 1j * params["A_im"]  # (H, N)
    A_bar = jnp.exp(step * A)
    B_bar = (A_bar - 1.0) / A  # A^-1 (e^{step A} - 1) B with B = 1
    C = params["C_re"] + 1j * params["C_im"]
    return A_bar, C * B_bar


def kernel(params, T):
    """The S4D kernel ``K`` (T, H): ``K_l = 2 Re sum_n C_n B_bar_n A_bar_n^l``, by a Vandermonde product."""
    _sizes(params)
    T = _checks.size(T, "T")
    return _kernel(params, T)


@functools.partial(jax.jit, static_argnames="T")
def _kernel(params, T):
    step = jnp.exp(params["log_step"])[:, None, None]  # (H, 1, 1)
    A = -jnp.exp(params["log_A_re"]) + 1j * params["A_im"]  # (H, N)
    _, CB = _diagonal_system(params)
    vandermonde = jnp.exp(step * A[:, :, None] * jnp.arange(T)[None, None, :])  # (H, N, T): A_bar^l
    K = 2 * jnp.einsum("HN,HNT->HT", CB, vandermonde).real  # (H, T)
    return K.T  # (T, H)


def _check_u(params, u):
    H, _ = _sizes(params)
    u = _checks.float_array(u, "u", ndim=2, what=" (T, H)")
    return _checks.same_shape(u, "u", (u.shape[0], H), expected_from=f"(T, H) with H = {H} from params")


def apply(params, u):
    """The layer's output (T, H) for ``u`` (T, H) in its convolution form: kernel, then FFT."""
    u = _check_u(params, u)
    return _apply(params, u)


@jax.jit
def _apply(params, u):
    K = _kernel(params, u.shape[0])  # (T, H)
    y = _causal_conv(u.astype(jnp.float32), K) + u * params["D"][None, :]
    return y.astype(u.dtype)


def apply_recurrent(params, u):
    """The same output in its recurrent form: ``x_k = A_bar x_{k-1} + B_bar u_k`` per mode, a scan."""
    u = _check_u(params, u)
    return _apply_recurrent(params, u)


@jax.jit
def _apply_recurrent(params, u):
    T = u.shape[0]
    A_bar, CB = _diagonal_system(params)  # (H, N) each
    u32 = u.astype(jnp.float32)
    x = linear_scan_sequential(jnp.broadcast_to(A_bar, (T, *A_bar.shape)),
                               jnp.broadcast_to(u32[:, :, None], (T, *A_bar.shape)).astype(A_bar.dtype))  # (T, H, N)
    y = 2 * jnp.einsum("HN,THN->TH", CB, x).real + u32 * params["D"][None, :]  # C B_bar folded into the readout
    return y.astype(u.dtype)
