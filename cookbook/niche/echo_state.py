r"""Echo state networks
====================

A recurrent network whose recurrent weights are random and never trained, with only a linear
readout fitted by ridge regression: reach for it to predict a chaotic or noisy time series from a
few thousand samples, with training that is one linear solve.

Equation
--------

.. math::

   x_t = (1 - a)\, x_{t-1} + a \tanh\!\big(W_{\text{in}} u_t + W x_{t-1} + b\big), \qquad
   W = \rho\, \frac{W_0}{\lambda_{\max}(W_0)}

   \hat{y}_t = W_{\text{out}}^\top x_t + c, \qquad
   W_{\text{out}}, c = \arg\min \sum_t \lVert y_t - W_{\text{out}}^\top x_t - c \rVert^2
   + \alpha \lVert W_{\text{out}} \rVert^2

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`u_t`
     - input at step :math:`t` (the series' current value)
     - row :math:`t` of ``u``
     - ``(D,)``
   * - :math:`t`
     - time step, :math:`1 \dots T`
     - the step of the scan
     - scalar
   * - :math:`x_t`
     - reservoir state (:math:`x_0` given, zero by default)
     - row :math:`t` of the result of ``reservoir_states``; ``x0``
     - ``(N,)``
   * - :math:`a`
     - leak rate in :math:`(0, 1]`: 1 replaces the state, smaller values keep a running average
     - ``leak``
     - scalar
   * - :math:`W_{\text{in}}`
     - random input weights, fixed
     - ``params["W_in"]``
     - ``(N, D)``
   * - :math:`W`
     - random recurrent weights, fixed, rescaled to spectral radius :math:`\rho`
     - ``params["W"]``
     - ``(N, N)``
   * - :math:`W_0`
     - the raw random matrix before rescaling
     - ``W0``
     - ``(N, N)``
   * - :math:`b`
     - random bias, fixed
     - ``params["b"]``
     - ``(N,)``
   * - :math:`\rho`, :math:`\lambda_{\max}`
     - spectral radius asked for; largest absolute eigenvalue of a matrix
     - ``spectral_radius`` (both)
     - scalar
   * - :math:`\hat{y}_t`, :math:`y_t`
     - prediction and target (the series :math:`h` steps later)
     - ``readout``, ``targets``
     - ``(K,)``
   * - :math:`W_{\text{out}}`, :math:`c`
     - the trained readout: weights and intercept
     - ``W_out``, ``c``
     - ``(N, K)``, ``(K,)``
   * - :math:`\alpha`
     - ridge penalty on the readout's weights (not on the intercept)
     - ``alpha``
     - scalar

Explanation
-----------

Training a recurrent network by backpropagation through time is slow and unstable, because
gradients through many steps vanish or explode. Reservoir computing :footcite:`jaeger2001echo`
:footcite:`lukosevicius2009reservoir` sidesteps it: draw the recurrent weights at random, never
train them, and train only a linear map from the states to the targets. The reservoir is a large
random nonlinear filter of the input's past; the readout picks the combination of its :math:`N`
features that predicts the target. Fitting it is ridge regression
:footcite:`hoerl1970ridge`, one linear solve.

This only works if the state is a function of the input history and not of where the reservoir
started: the **echo state property**. Two copies started from different states and driven by the
same input must converge. Each step multiplies a difference in the state by at most
:math:`\lVert W \rVert` (tanh is 1-Lipschitz), so a largest singular value below 1 guarantees it; in
practice the looser rule of a **spectral radius** :math:`\rho < 1` is used, which makes the
linearised, input-free reservoir contract. It is neither necessary (a strong input saturates tanh
and contracts too) nor strictly sufficient, but it is the knob. In the tests, two copies of a reservoir of 100 neurons started at
:math:`x_0 = \pm 1` are still more than 7 apart after one step and within :math:`10^{-5}` after
200 steps at :math:`\rho = 0.9`; at :math:`\rho = 1.5` with a weak input they stay more than 0.1
apart. Near :math:`\rho = 1` the memory of the past is longest. A first stretch of
states (the washout) is dropped before fitting, so that the arbitrary :math:`x_0` is forgotten.

The test series is Mackey–Glass :footcite:`mackey1977oscillation`, the delay equation
:math:`\dot{s}(t) = 0.2\, s(t-17) / (1 + s(t-17)^{10}) - 0.1\, s(t)`, chaotic for this delay,
integrated here by Euler steps of 0.1 and sampled every time unit. With 100 neurons and a readout
fitted on 1100 states, the tests predict it one step ahead with a normalised error (root-mean-square
error over the series' standard deviation) below 0.005, and 20 steps ahead below 0.05. The readout
is solved by an SVD of the centred states rather than the normal equations, which would square
their condition number in float32; centring leaves the intercept unpenalised, as in scikit-learn's
``Ridge``, which the tests match.

.. admonition:: Intuition

   Drop stones into a pond and watch the ripples: the surface at any moment is a complicated but
   faithful record of the recent stones, and the oldest ripples have died out. An echo state
   network is the pond (a random, fixed, fading medium) plus an observer who learns, by least
   squares, which ripples to read to say what comes next. The fading is the echo state property.

Inductive bias
--------------

The reservoir assumes that the target depends on a fading window of the input's past, through
features that a random nonlinear filter happens to provide; only their linear combination is
learned. It therefore needs little data and no gradient through time, and its fit is convex, but it
cannot learn features the reservoir lacks: a dependence longer than the reservoir's memory (set by
:math:`\rho`, :math:`a` and :math:`N`) is out of reach, and matching a trained recurrent network
takes many more neurons.

Example
-------

A reservoir of 5 neurons at spectral radius 0.9, driven by 7 steps of a one-dimensional input, and
a readout fitted to predict the next input:

>>> import jax, jax.numpy as jnp
>>> from cookbook.niche.echo_state import init, readout, reservoir_states, ridge_readout, spectral_radius
>>> params = init(jax.random.key(0), n_inputs=1, n_reservoir=5, spectral_radius=0.9)
>>> round(float(spectral_radius(params["W"])), 4)
0.9
>>> u = jnp.sin(jnp.arange(8.0))[:, None]
>>> states = reservoir_states(params, u[:-1])
>>> states.shape
(7, 5)
>>> W_out, c = ridge_readout(states, u[1:], 1e-3)
>>> W_out.shape, c.shape
((5, 1), (1,))
>>> readout(W_out, c, states).shape
(7, 1)

Implementation notes
--------------------

Reservoirs are often drawn sparse, to make the eigenvalue computation and the update cheap at
thousands of neurons :footcite:`lukosevicius2009reservoir`; at the few hundred neurons here a dense matrix is
faster on any accelerator and behaves the same. ``jnp.linalg.eigvals`` computes the spectral radius
once at initialisation. Prediction is one step ahead (teacher forcing: the true series is the
input); running the network freely, its own prediction fed back as the next input, forecasts
further but needs a well-regularised readout, and is left out. Libraries: ReservoirPy (NumPy)
implements these networks with many variants.
"""

from functools import partial

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"reservoir_states": (), "ridge_readout": (), "spectral_radius": ()}


def spectral_radius(W):
    """The largest absolute eigenvalue of a square matrix ``W`` (N, N)."""
    W = _checks.float_array(W, "W", ndim=2, what=" (N, N)")
    if W.shape[0] != W.shape[1]:
        raise ValueError(f"W must be square (N, N), got shape {tuple(W.shape)}")
    return _radius(W.astype(jnp.float32))


@jax.jit
def _radius(W):
    return jnp.max(jnp.abs(jnp.linalg.eigvals(W)))


def init(key, *, n_inputs, n_reservoir, spectral_radius=0.9, input_scale=1.0, bias_scale=0.2):
    """Random, fixed reservoir weights: ``{"W_in": (N, D), "W": (N, N), "b": (N,)}``.

    ``W`` is Gaussian, rescaled to the given ``spectral_radius``; ``W_in`` and ``b`` are uniform in
    ``[-input_scale, input_scale]`` and ``[-bias_scale, bias_scale]``.
    """
    D = _checks.size(n_inputs, "n_inputs")
    N = _checks.size(n_reservoir, "n_reservoir")
    rho = _checks.positive(spectral_radius, "spectral_radius")
    _checks.positive(input_scale, "input_scale")
    _checks.positive(bias_scale, "bias_scale", allow_zero=True)
    W0, W_in, b = _draw(key, D, N, input_scale, bias_scale)
    return {"W_in": W_in, "W": _rescale(W0, rho, _radius(W0)), "b": b}


@partial(jax.jit, static_argnums=(1, 2))
def _draw(key, D, N, input_scale, bias_scale):
    k_w, k_in, k_b = jax.random.split(key, 3)
    W0 = jax.random.normal(k_w, (N, N))
    W_in = jax.random.uniform(k_in, (N, D), minval=-input_scale, maxval=input_scale)
    b = jax.random.uniform(k_b, (N,), minval=-bias_scale, maxval=bias_scale)
    return W0, W_in, b


@jax.jit
def _rescale(W0, rho, radius):
    return rho * W0 / radius


def _check_params(params):
    if not isinstance(params, dict) or set(params) != {"W_in", "W", "b"}:
        raise TypeError(f"params must be a dict with keys 'W_in', 'W', 'b' (from init), got "
                        f"{sorted(params) if isinstance(params, dict) else type(params).__name__}")
    W_in = _checks.float_array(params["W_in"], "params['W_in']", ndim=2, what=" (N, D)")
    N, D = W_in.shape
    W = _checks.same_shape(_checks.float_array(params["W"], "params['W']"), "params['W']", (N, N),
                           expected_from="N from params['W_in'] (N, D)")
    b = _checks.same_shape(_checks.float_array(params["b"], "params['b']"), "params['b']", (N,),
                           expected_from="N from params['W_in'] (N, D)")
    return {"W_in": W_in, "W": W, "b": b}, N, D


def reservoir_states(params, u, x0=None, leak=1.0):
    """The reservoir's states (T, N) driven by the inputs ``u`` (T, D), from ``x0`` (N,) (zero by
    default), with leak rate ``leak`` in (0, 1]. One sequence; batch with :func:`jax.vmap`."""
    params, N, D = _check_params(params)
    u = _checks.float_array(u, "u", ndim=2, what=" (T, D)")
    _checks.same_shape(u, "u", (u.shape[0], D), expected_from="D from params['W_in'] (N, D)")
    if x0 is not None:  # None: zeros, made inside the core
        x0 = _checks.same_shape(_checks.float_array(x0, "x0"), "x0", (N,), expected_from="N from params['W'] (N, N)")
    leak = _checks.positive(leak, "leak")
    if isinstance(leak, float) and leak > 1:
        raise ValueError(f"leak must lie in (0, 1], got {leak}")
    return _states(params, u, x0, leak)


@jax.jit
def _states(params, u, x0, a):
    if x0 is None:
        x0 = jnp.zeros(params["b"].shape, params["W"].dtype)
    def step(x, u_t):
        x = (1 - a) * x + a * jnp.tanh(params["W_in"] @ u_t + params["W"] @ x + params["b"])  # (N,)
        return x, x

    return jax.lax.scan(step, x0, u)[1]  # (T, N)


def ridge_readout(states, targets, alpha):
    """The readout ``(W_out (N, K), c (K,))`` minimising the squared error of ``states @ W_out + c``
    against ``targets`` (T, K) plus ``alpha * |W_out|^2``; the intercept ``c`` is not penalised."""
    X = _checks.float_array(states, "states", ndim=2, what=" (T, N)")
    Y = _checks.float_array(targets, "targets", ndim=2, what=" (T, K)")
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"targets must have one row per row of states ({X.shape[0]}), got shape {tuple(Y.shape)}")
    alpha = _checks.positive(alpha, "alpha")
    return _ridge(X, Y, alpha)


@jax.jit
def _ridge(X, Y, alpha):
    x_mean, y_mean = X.mean(0), Y.mean(0)
    U, s, Vt = jnp.linalg.svd(X - x_mean[None], full_matrices=False)  # (T, r), (r,), (r, N)
    W_out = Vt.T @ ((s / (s**2 + alpha))[:, None] * (U.T @ (Y - y_mean[None])))  # (N, K)
    return W_out, y_mean - x_mean @ W_out


def readout(W_out, c, states):
    """The predictions ``states @ W_out + c``, (T, K), of states (T, N)."""
    W_out = _checks.float_array(W_out, "W_out", ndim=2, what=" (N, K)")
    c = _checks.same_shape(_checks.float_array(c, "c"), "c", W_out.shape[1:], expected_from="K from W_out (N, K)")
    X = _checks.float_array(states, "states", ndim=2, what=" (T, N)")
    _checks.same_shape(X, "states", (X.shape[0], W_out.shape[0]), expected_from="N from W_out (N, K)")
    return _readout(W_out, c, X)


@jax.jit
def _readout(W_out, c, X):
    return X @ W_out + c[None]


def mackey_glass(n, *, tau=17, dt=0.1, every=10, s0=1.2):
    """``n`` samples (n,) of the Mackey–Glass series ``ds/dt = 0.2 s(t - tau) / (1 + s(t - tau)^10)
    - 0.1 s(t)``, by Euler steps of ``dt`` from the constant history ``s0``, one sample every
    ``every`` steps. ``tau / dt`` must be a whole number of steps."""
    n = _checks.size(n, "n")
    every = _checks.size(every, "every")
    tau, dt = _checks.positive(tau, "tau"), _checks.positive(dt, "dt")
    lag = round(tau / dt)
    if lag < 1 or abs(lag * dt - tau) > 1e-9 * tau:
        raise ValueError(f"tau / dt must be a whole number of steps, got tau={tau}, dt={dt}")
    return _mackey_glass(n, lag, every, float(dt), float(s0))


@partial(jax.jit, static_argnums=(0, 1, 2))
def _mackey_glass(n, lag, every, dt, s0):
    def euler(carry, _):
        history, s = carry  # history[0] is s(t - tau)
        delayed = history[0]
        s_next = s + dt * (0.2 * delayed / (1 + delayed**10) - 0.1 * s)
        return (jnp.concatenate([history[1:], s[None]]), s_next), s

    def sample(carry, _):
        carry, s = jax.lax.scan(euler, carry, None, length=every)
        return carry, s[0]

    start = (jnp.full((lag,), s0, jnp.float32), jnp.float32(s0))
    return jax.lax.scan(sample, start, None, length=n)[1]
