r"""Hyena: implicit long convolutions
=================================

Mix a sequence with causal convolutions as long as the sequence itself, whose filters are drawn
by a small network from the position (so their parameters do not grow with the length), computed
with the FFT in :math:`O(T \log T)`, and interleaved with elementwise gates: a replacement for
attention whose cost grows almost linearly with the length.

Equation
--------

.. math::

   \begin{aligned}
   (v, x^1, x^2) &= \operatorname{shortconv}(u\, W_{\mathrm{in}}), \qquad
   z^1 = v, \qquad z^{n+1}_t = x^n_t \odot (h^n * z^n)_t, \qquad y = z^3\, W_{\mathrm{out}}, \\
   (h * z)_t &= \sum_{s=0}^{t} h_{t-s} \odot z_s, \qquad
   h^n_t = e^{-\alpha^n t} \odot \operatorname{FFN}^n\big(\rho(t)\big), \qquad
   \rho(t) = \big(\cos \omega_k t,\ \sin \omega_k t\big)_{k=1}^{K}
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`u`, :math:`y`
     - input and output sequences
     - ``u``, output of ``hyena``
     - ``(T, D)``
   * - :math:`W_{\mathrm{in}}`, :math:`W_{\mathrm{out}}`
     - input projection (to three sequences), output projection
     - ``params["W_in"]``, ``params["W_out"]``
     - ``(D, 3D)``, ``(D, D)``
   * - :math:`v`, :math:`x^1`, :math:`x^2`
     - the projections after a short causal convolution of width 3: a value and two gates
     - ``v``, ``x1``, ``x2``
     - ``(T, D)``
   * - :math:`z^n`
     - the running sequence of the recurrence over the order :math:`n = 1, 2`
     - ``z``
     - ``(T, D)``
   * - :math:`h^n`
     - long implicit filter of step :math:`n`, one per channel, as long as the sequence
     - ``h1``, ``h2``, output of ``implicit_filter``
     - ``(T, D)``
   * - :math:`*`, :math:`t`, :math:`s`
     - causal convolution along positions; output position, input position
     - ``fft_conv``, ``direct_conv``; ``t`` (the input position is summed over inside them)
     - scalars
   * - :math:`\rho(t)`
     - positional features: sines and cosines of the position
     - ``positional_features``
     - ``(2K,)``
   * - :math:`\omega_k`, :math:`k`, :math:`K`
     - their frequencies, :math:`2 \pi k / L_{\max}` for :math:`k = 1, \dots, K`
     - ``params["filter"]["freqs"]``
     - ``(K,)``
   * - :math:`\operatorname{FFN}^n`
     - the filter network: two layers with sine activations and a linear read-out
     - ``params["filter"]["W1"]`` to ``["W3"]``
     - ``(2K, F)``, ``(F, F)``, ``(F, 2D)``
   * - :math:`\alpha^n`
     - decay rates of the window, per channel
     - ``params["filter"]["decay"]``
     - ``(2D,)``
   * - :math:`n`
     - step of the recurrence (the operator's order is 2)
     - the two steps of ``hyena``
     - scalar

Explanation
-----------

Hyena :footcite:`poli2023hyena` asks what attention does that a cheaper operator could do too: it
mixes information across the whole sequence, and its weights depend on the input. A causal
convolution with a filter as long as the sequence does the first; multiplying elementwise by
projections of the input (gates) does the second. Two convolutions and two gates, alternated,
give the order-2 operator of the equation; the gates make the whole map depend on the input,
multiplicatively, as attention's scores do. It generalises H3 :footcite:`fu2023hungry`, whose
filters come from state-space models.

**Implicit filters.** A filter of length :math:`T` per channel, stored explicitly, would need
:math:`TD` parameters and could not be used at another length. Instead a small network draws the
filter value at every position from positional features, as CKConv :footcite:`romero2022ckconv`
does: the number of parameters does not depend on :math:`T`. The network uses sine activations,
which let it draw filters with fine detail, and its output is multiplied by a window
:math:`e^{-\alpha t}` with one decay rate per channel, so that some channels look far back and
others only at the recent past. ``init`` spreads the rates so that the window falls to 1% of its
start between 30% and 150% of the longest sequence :math:`L_{\max}`. The filter of length
:math:`T` is the first :math:`T` values of the filter of length :math:`L_{\max}`, whatever
:math:`T`.

.. plot::

   from cookbook.sequence_models.hyena import init, implicit_filter
   import jax
   params = init(jax.random.key(0), 4, max_len=256)
   h = np.asarray(implicit_filter(params["filter"], 256))
   plt.figure(figsize=(5, 3))
   for c in (0, 2, 4, 6):
       plt.plot(h[:, c], label=f"channel {c}")
   plt.xlabel("lag t - s")
   plt.ylabel("filter value")
   plt.title("Implicit filters at initialisation, T = 256")
   plt.legend(fontsize=7)
   plt.tight_layout()

**The FFT.** A causal convolution computed directly costs :math:`O(T^2)` per channel. The
convolution theorem turns it into a product of Fourier transforms, and the FFT
:footcite:`cooley1965algorithm` computes those in :math:`O(T \log T)`. The trap: the discrete
Fourier transform computes a *circular* convolution, in which the end of the sequence wraps around
onto its start, so that outputs would depend on later inputs. Padding the input and the filter
with zeros to length :math:`2T` leaves room for every product, and the first :math:`T` outputs are
the causal convolution, exactly in arithmetic and up to rounding in floating point (every output
of an FFT mixes all inputs, so a later input moves an earlier output by the order of float32's
precision times the largest value in the sequence; the direct form is exactly causal). ``fft_conv`` does this; ``direct_conv`` is the direct form, and the
tests check both against ``numpy.convolve`` and show what the circular version gets wrong.

.. admonition:: Intuition

   An echo chamber with tunable walls: every sound (token) reverberates into the future with an
   echo pattern (the filter) set per frequency band (channel), and gates decide, moment by moment,
   which echoes are let through. A small network designs the echo patterns, so one design serves
   a room of any size.

Inductive bias
--------------

A convolution applies the same filter at every position: Hyena assumes that how a token should be
influenced by one :math:`d` steps back depends on :math:`d`, not on where it is, and the window
adds that the near past matters more. The input dependence comes only through the elementwise
gates, which is weaker than attention's pairwise scores: exact recall of a token from far back
needs the filter and the gates to line up, and in-context recall is where such models trail
attention most :footcite:`arora2024zoology`.

Example
-------

The FFT convolution equals the direct one, and the order-2 operator maps a sequence to one of the
same shape:

>>> import jax, jax.numpy as jnp
>>> from cookbook.sequence_models.hyena import init, hyena, implicit_filter, fft_conv, direct_conv
>>> fft_conv(jnp.array([[1.0], [2.0], [3.0]]), jnp.array([[1.0], [0.5], [0.25]]))
Array([[1.  ],
       [2.5 ],
       [4.25]], dtype=float32)
>>> k_p, k_u = jax.random.split(jax.random.key(0))
>>> params = init(k_p, 4, max_len=64)
>>> u = jax.random.normal(k_u, (11, 4))
>>> h = implicit_filter(params["filter"], 11)
>>> h.shape, bool(jnp.allclose(fft_conv(u, h[:, :4]), direct_conv(u, h[:, :4]), atol=1e-5))
((11, 8), True)
>>> hyena(params, u).shape
(11, 4)

Implementation notes
--------------------

The FFT form wins over the direct one once the sequence is long; where exactly depends on the
machine, and the benchmark suite times both against :math:`T`
(``benchmarks/cases_sequence_models_2.py``). On GPUs the FFT convolution is limited by memory
traffic rather than arithmetic, which FlashFFTConv :footcite:`fu2024flashfftconv` addresses by
writing the FFT as matrix products.
The paper's filter network also takes the position :math:`t` itself as a feature, keeps the
frequencies fixed (here they are parameters like the rest, to be masked out of the optimiser if
they should stay fixed), and adds a learned bias term :math:`d \odot u_t` to each convolution;
Hyena's order goes above 2 with more projections. When generating token by token, a long
convolution has no constant-size state: each new output needs the whole history, unless the filter
is distilled into a recurrence :footcite:`massaroli2023laughing`.
"""

import functools
import math

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"fft_conv": (), "direct_conv": (), "implicit_filter": ("T",), "hyena": ()}


def _pair(u, h):
    u = _checks.float_array(u, "u", ndim=2, what=" (T, D)")
    h = _checks.float_array(h, "h", ndim=2, what=" (T, D)")
    if u.shape != h.shape:
        raise ValueError(f"u and h must have the same shape (T, D), got u {u.shape} and h {h.shape}")
    return u, h


def fft_conv(u, h):
    """The causal convolution ``y[t] = sum_{s <= t} h[t - s] u[s]`` of ``u`` (T, D) with ``h``
    (T, D), per channel, by the FFT: both zero-padded to length 2T so that nothing wraps around.
    O(T log T) per channel, computed in float32 (float64 for float64 input)."""
    u, h = _pair(u, h)
    return _fft_conv(u, h).astype(u.dtype)


@jax.jit  # one compiled program also when called eagerly
def _fft_conv(u, h):
    T = u.shape[0]
    dtype = jnp.promote_types(u.dtype, jnp.float32)  # the FFT has no bfloat16
    U = jnp.fft.rfft(u.astype(dtype), n=2 * T, axis=0)  # (T + 1, D), complex
    H = jnp.fft.rfft(h.astype(dtype), n=2 * T, axis=0)
    return jnp.fft.irfft(U * H, n=2 * T, axis=0)[:T]  # the first T of 2T: the causal part


def direct_conv(u, h):
    """The same convolution computed directly, O(T^2) per channel: for every lag ``j``, add
    ``h[j]`` times the input delayed by ``j`` steps (a :func:`jax.lax.scan` over the T lags, with
    O(T D) memory)."""
    u, h = _pair(u, h)
    return _direct_conv(u, h).astype(u.dtype)


@jax.jit
def _direct_conv(u, h):
    T, D = u.shape
    dtype = jnp.promote_types(u.dtype, jnp.float32)
    u_padded = jnp.concatenate([jnp.zeros((T, D), dtype), u.astype(dtype)])  # (2T, D): zeros before t = 0

    def add_lag(y, j):
        delayed = jax.lax.dynamic_slice(u_padded, (T - j, 0), (T, D))  # row t holds u[t - j]
        return y + h[j].astype(dtype)[None] * delayed, None

    y, _ = jax.lax.scan(add_lag, jnp.zeros((T, D), dtype), jnp.arange(T))
    return y


def positional_features(freqs, T):
    """``rho(t) = (cos(freqs t), sin(freqs t))`` for the positions ``t = 0, ..., T - 1``: (T, 2K)."""
    t = jnp.arange(T, dtype=freqs.dtype)[:, None]  # (T, 1)
    return jnp.concatenate([jnp.cos(freqs[None] * t), jnp.sin(freqs[None] * t)], axis=1)


def init(key, D, *, max_len, bands=4, width=16, dtype=jnp.float32):
    """Parameters of an order-2 Hyena operator of width ``D`` for sequences of at most ``max_len``
    tokens: projections, short convolutions, and a filter network with ``bands`` frequencies and
    ``width`` hidden units that draws both filters (2D channels)."""
    D, max_len = _checks.size(D, "D"), _checks.size(max_len, "max_len")
    bands, width = _checks.size(bands, "bands"), _checks.size(width, "width")
    return _init(key, D, max_len, bands, width, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))  # one compiled program
def _init(key, D, max_len, bands, width, dtype):
    shapes = {"W_in": (D, 3 * D), "W_out": (D, D), "W1": (2 * bands, width), "W2": (width, width),
              "W3": (width, 2 * D)}
    sizes = [math.prod(shape) for shape in shapes.values()]
    z = jax.random.normal(key, (sum(sizes),), dtype)  # one draw, cut into the matrices
    cuts = [sum(sizes[:j]) for j in range(1, len(sizes))]
    W = {name: piece.reshape(shape) / math.sqrt(shape[0])
         for (name, shape), piece in zip(shapes.items(), jnp.split(z, cuts))}
    # Window e^{-alpha t} down to 1% at 30% (fastest channel) to 150% (slowest) of max_len.
    decay = math.log(100.0) / (max_len * jnp.linspace(1.5, 0.3, 2 * D, dtype=dtype))
    short = jnp.zeros((3, 3 * D), dtype).at[0].set(1.0)  # width-3 causal filters, identity at start
    filter_params = {
        "freqs": 2 * math.pi * jnp.arange(1, bands + 1, dtype=dtype) / max_len,
        "W1": W["W1"], "b1": jnp.zeros((width,), dtype), "W2": W["W2"], "b2": jnp.zeros((width,), dtype),
        "W3": W["W3"], "decay": decay,
    }
    return {"W_in": W["W_in"], "short": short, "filter": filter_params, "W_out": W["W_out"]}


def implicit_filter(params, T):
    """Both filters (T, 2D) of an operator, from ``params = init(...)["filter"]``: the filter
    network on the positional features, times the exponential window. Past the ``max_len`` of
    ``init`` the features repeat (their longest period is ``max_len``) while the window decays on."""
    T = _checks.size(T, "T")
    _filter_channels(params, "params")
    return _implicit_filter(params, T)


def _filter_channels(params, where):
    """The number of channels (2D) that the filter network ``params`` draws, after checking its
    shapes; ``where`` names it in the messages."""
    freqs = _checks.float_array(params["freqs"], f"{where}['freqs']", ndim=1, what=" (K,)")
    W3 = _checks.float_array(params["W3"], f"{where}['W3']", ndim=2, what=" (F, 2D)")
    K, F, C = freqs.shape[0], W3.shape[0], W3.shape[1]
    for name, shape in (("W1", (2 * K, F)), ("b1", (F,)), ("W2", (F, F)), ("b2", (F,)), ("decay", (C,))):
        _checks.same_shape(_checks.float_array(params[name], f"{where}['{name}']"), f"{where}['{name}']", shape,
                           expected_from=f"K = {K} from {where}['freqs'], F and 2D = {C} from {where}['W3']")
    return C


@functools.partial(jax.jit, static_argnums=1)
def _implicit_filter(params, T):
    freqs = params["freqs"]
    rho = positional_features(freqs, T)  # (T, 2K)
    a = jnp.sin(rho @ params["W1"] + params["b1"][None])  # (T, F)
    a = jnp.sin(a @ params["W2"] + params["b2"][None])
    t = jnp.arange(T, dtype=freqs.dtype)[:, None]
    window = jnp.exp(-params["decay"][None] * t)  # (T, 2D)
    return window * (a @ params["W3"])


def _short_conv(x, w):
    """Depthwise causal convolution of ``x`` (T, C) with the width-3 filters ``w`` (3, C)."""
    shifted = [jnp.pad(x, [(j, 0), (0, 0)])[: x.shape[0]] for j in range(w.shape[0])]  # x[t - j]
    return sum(w[j][None] * shifted[j] for j in range(w.shape[0]))


def hyena(params, u):
    """The order-2 Hyena operator on ``u`` (T, D) with ``params = init(...)``: projections and short
    convolutions, two long FFT convolutions with implicit filters, each followed by a gate, and
    the output projection; T may be anything, the filters are drawn at that length."""
    u = _checks.float_array(u, "u", ndim=2, what=" (T, D)")
    T, D = u.shape
    for name, shape in (("W_in", (D, 3 * D)), ("short", (3, 3 * D)), ("W_out", (D, D))):
        where = f"params['{name}']"
        _checks.same_shape(_checks.float_array(params[name], where), where, shape,
                           expected_from=f"D = {D} from u of shape {u.shape}")
    C = _filter_channels(params["filter"], "params['filter']")
    if C != 2 * D:
        raise ValueError(f"params['filter'] draws {C} channels, expected 2D = {2 * D} for u of shape {u.shape}")
    return _hyena(params, u)


@jax.jit
def _hyena(params, u):
    T, D = u.shape
    h = _implicit_filter(params["filter"], T)  # (T, 2D)
    v, x1, x2 = jnp.split(_short_conv(u @ params["W_in"], params["short"]), 3, axis=1)  # (T, D) each
    h1, h2 = h[:, :D].astype(u.dtype), h[:, D:].astype(u.dtype)
    z = x1 * _fft_conv(v, h1).astype(u.dtype)
    z = x2 * _fft_conv(z, h2).astype(u.dtype)
    return z @ params["W_out"]  # (T, D)
