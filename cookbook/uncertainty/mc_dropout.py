r"""Monte Carlo dropout
===================

Keep dropout switched on at test time and run the network several times: the spread of the answers
is an estimate of the model's uncertainty. It turns any network trained with dropout into an
approximate Bayesian one at no training cost, for the price of several forward passes.

Equation
--------

.. math::

   \begin{aligned}
   \hat{y}_t &= f\left(x;\, \hat{W}_t\right), \qquad
   \hat{W}_t = \left\{ \tfrac{1}{1 - p} \operatorname{diag}\left(z_{t,l}\right) W_l \right\}_l, \qquad
   z_{t,l,j} \sim \operatorname{Bernoulli}(1 - p), \qquad t = 1, \dots, T, \\
   \mathbb{E}[y \mid x] &\approx \frac{1}{T} \sum_{t=1}^{T} \hat{y}_t, \qquad
   \operatorname{Var}[y \mid x] \approx \tau^{-1}
     + \frac{1}{T} \sum_{t=1}^{T} \hat{y}_t^{\,2} - \mathbb{E}[y \mid x]^2
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
     - an input and its target
     - ``x``, ``y``
     - ``(D,)``, scalar
   * - :math:`f`, :math:`W_l`
     - the network, a ReLU MLP; the weights of layer :math:`l`
     - ``apply``, ``layer["W"]`` for each ``layer`` of ``params``
     - ``(sizes[l], sizes[l + 1])``
   * - :math:`z_{t,l,j}`, :math:`p`
     - whether unit :math:`j` of layer :math:`l` is kept in pass :math:`t`; the drop rate
     - the mask inside ``dropout``, ``rate``
     - ``(sizes[l],)``, scalar
   * - :math:`\hat{W}_t`, :math:`\hat{y}_t`, :math:`t`, :math:`T`
     - the thinned weights of pass :math:`t` and its output; the number of passes
     - ``samples``, ``num_samples``
     - ``(T,)``
   * - :math:`\tau^{-1}`
     - the observation noise variance (the model's precision :math:`\tau`, inverted)
     - ``noise``
     - scalar
   * - :math:`\mathbb{E}`, :math:`\operatorname{Var}`
     - predictive mean and variance
     - ``mean``, ``variance``
     - scalars

Explanation
-----------

Dropout :footcite:p:`srivastava2014dropout` multiplies each hidden unit by an independent Bernoulli
variable during training. Gal and Ghahramani :footcite:p:`gal2016dropout` showed that training
with dropout and weight decay minimises, up to constants, the variational free energy of a Bayesian
network whose approximate posterior over each weight matrix is the one dropout samples from: the
trained matrix with random rows set to zero. Sampling a mask is then sampling weights from the
approximate posterior, and averaging the outputs of :math:`T` passes is Monte Carlo integration of
the predictive distribution. The spread of the passes is the model's (epistemic) uncertainty; the
noise of the data, :math:`\tau^{-1}`, is added to it. The paper ties :math:`\tau` to the weight decay
and the prior's lengthscale; here it is a hyperparameter ``noise``, set to the data's noise.

The code drops the units of every hidden layer with the same rate, during training and at test
time, with the inverted scaling :math:`1 / (1 - p)` of :doc:`/docs/chapters/regularization/dropout`,
and averages :math:`T` passes of the same input. Without ``key`` the network runs with dropout off,
which gives the usual deterministic prediction; it is close to, but not equal to, the Monte Carlo
mean.

.. admonition:: Intuition

   A committee in which, for each question, a random fifth of the members stay home. If the answer
   hardly depends on who showed up, the committee knows it; if it changes with every attendance,
   the question lies outside what the committee agrees on.

Inductive bias
--------------

MC dropout assumes the posterior is the family that dropout samples from: each weight matrix with
random rows removed, independently across layers. That family is fixed by the architecture and the
rate, not learned, so the uncertainty it reports is tied to both, and the rate has to be tuned. For networks with one hidden layer it provably cannot be more uncertain
between two clusters of data than at their edges :footcite:p:`foong2019between`; with two hidden
ReLU layers, on the chapter's gap data, the tests measure more than three times the variance in the
gap as on the data. It costs :math:`T` forward passes per prediction.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.uncertainty.mc_dropout import apply, fit, init, predict
>>> params = init(jax.random.key(0), (1, 16, 16, 1))
>>> x = jnp.array([0.5])
>>> a = apply(params, x, jax.random.key(1), rate=0.5)
>>> b = apply(params, x, jax.random.key(2), rate=0.5)
>>> bool(a[0] != b[0]), bool(apply(params, x, None, rate=0.5)[0] == apply(params, x, None, rate=0.5)[0])
(True, True)

Trained on a line, then 100 passes:

>>> X = jnp.linspace(-1.0, 1.0, 11)[:, None]
>>> params, losses = fit(params, X, 2 * X[:, 0], jax.random.key(3), rate=0.1, steps=300)
>>> bool(losses[-1] < losses[0])
True
>>> mean, variance = predict(params, x, jax.random.key(4), rate=0.1, num_samples=100, noise=0.01)
>>> round(float(mean), 1), bool(variance > 0.01)
(1.0, True)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks
from cookbook._memo import cached
from cookbook.foundations.mlp import init as mlp_init
from cookbook.optimization.adam import adam
from cookbook.regularization.dropout import dropout

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"apply": ("rate",), "predict": ("rate", "num_samples"), "fit": ("rate", "steps")}


def init(key, sizes):
    """A ReLU MLP of widths ``sizes = (D, hidden..., out)``: a list of ``{"W", "b"}`` layers."""
    return mlp_init(key, sizes, activation="relu")


def _check_params(params):
    """The input width D of a list of float ``{"W", "b"}`` layers that chain."""
    return _checks.layers(params)[0]


def _check_rate(rate):
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise ValueError(f"rate must be a Python float in [0, 1), got {rate!r}")
    return float(rate)


def _forward(params, x, key, rate):
    """One pass; ``key=None`` runs with dropout off."""
    keys = [None] * len(params) if key is None else jax.random.split(key, len(params))
    h = x
    for layer, k in zip(params[:-1], keys):
        h = jax.nn.relu(h @ layer["W"] + layer["b"])  # (sizes[l],)
        h = dropout(k, h, rate, deterministic=key is None)
    return h @ params[-1]["W"] + params[-1]["b"]


def apply(params, x, key, *, rate):
    """One stochastic pass for one input ``x`` (D,), dropping hidden units with probability ``rate``;
    ``key=None`` switches dropout off. Shape (sizes[-1],)."""
    D = _check_params(params)
    x = _checks.same_shape(_checks.float_array(x, "x", ndim=1, what=" (D,)"), "x", (D,),
                           expected_from="D from params[0]['W']")
    return _apply(params, x, key, _check_rate(rate))


# The public functions check their input, then run compiled cores like this one: the page's calls,
# the tests' and the jit check's reuse one program per shape instead of dispatching op by op.
_apply = jax.jit(_forward, static_argnums=3)


def predict(params, x, key, *, rate, num_samples, noise):
    """Monte Carlo mean and variance (two scalars) of a one-output network at one input ``x`` (D,) from
    ``num_samples`` passes with fresh masks; the variance adds the observation ``noise``."""
    D = _check_params(params)
    if jnp.shape(params[-1]["W"])[-1] != 1:
        raise ValueError(f"params[-1]['W'] must have one output, got shape {jnp.shape(params[-1]['W'])}")
    x = _checks.same_shape(_checks.float_array(x, "x", ndim=1, what=" (D,)"), "x", (D,),
                           expected_from="D from params[0]['W']")
    rate = _check_rate(rate)
    num_samples = _checks.size(num_samples, "num_samples", minimum=2)
    _checks.positive(noise, "noise", allow_zero=True)
    return _predict(params, x, key, noise, rate, num_samples)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _predict(params, x, key, noise, rate, num_samples):
    keys = jax.random.split(key, num_samples)
    samples = jax.vmap(lambda k: _forward(params, x, k, rate)[0])(keys)  # (T,)
    mean = jnp.mean(samples)
    variance = noise + jnp.mean(samples**2) - mean**2
    return mean, variance


@cached  # the chapter's figure and the tests share this run when the book is built (cookbook/_memo.py)
def fit(params, X, y, key, *, rate, steps, weight_decay=1e-4, learning_rate=0.005):
    """Full-batch Adam on the mean squared error of a one-output network with dropout, a fresh mask per
    example and step, plus ``weight_decay`` times the squared norm of the weights. Returns the
    parameters and the loss before each step, (steps,)."""
    D = _check_params(params)
    X = _checks.float_array(X, "X", ndim=2, what=" (N, D)")
    _checks.same_shape(X, "X", (X.shape[0], D), expected_from="D from params[0]['W']")
    y = _checks.same_shape(_checks.float_array(y, "y", ndim=1, what=" (N,)"), "y", X.shape[:1], expected_from="N from X")
    rate = _check_rate(rate)
    _checks.size(steps, "steps")
    _checks.positive(weight_decay, "weight_decay", allow_zero=True)
    _checks.positive(learning_rate, "learning_rate")
    dtype = jnp.result_type(*jax.tree.leaves(params))  # the dtype the two rates are used in
    return _fit(params, X, y, key, rate=rate, steps=steps,
                weight_decay=_static_number(weight_decay, "weight_decay", dtype),
                learning_rate=_static_number(learning_rate, "learning_rate", dtype))


def _static_number(value, name, dtype):
    """A rate that ``_fit`` is compiled for, as the Python float of its value in ``dtype``: values that
    are one number there (0.005 and a float32 0.005, which differ as Python floats) share one program,
    and the run is the same, since the core uses the rate in ``dtype``."""
    return float(np.asarray(_checks.static_number(value, name), dtype))


# The rates are static, as they were when this loop ran eagerly with them as constants: fit traced
# under jax.jit with its defaults then passes its inputs straight to this core.
@functools.partial(jax.jit, static_argnames=("rate", "steps", "weight_decay", "learning_rate"))
def _fit(params, X, y, key, *, rate, steps, weight_decay, learning_rate):
    N = X.shape[0]

    def loss(params, key):
        pred = jax.vmap(lambda x, k: _forward(params, x, k, rate)[0])(X, jax.random.split(key, N))  # (N,)
        return jnp.mean((y - pred) ** 2) + weight_decay * sum(jnp.sum(layer["W"] ** 2) for layer in params)

    optimizer = adam(1.0)  # the step size is applied below

    def step(carry, key):
        params, state = carry
        value, grads = jax.value_and_grad(loss)(params, key)
        updates, state = optimizer.update(grads, state, params)
        return (jax.tree.map(lambda p, u: p + learning_rate * u, params, updates), state), value

    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), jax.random.split(key, steps))
    return params, losses
