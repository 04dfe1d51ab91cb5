r"""Energy-based models: RBMs, contrastive divergence and Langevin sampling
========================================================================

A model that scores each configuration with an energy, low for likely ones, and leaves the
normalisation implicit: the family to reach for when a compatibility score is easier to write than a
normalised density, at the price of sampling by Markov chains.

Equation
--------

.. math::

   \begin{aligned}
   p_\theta(v) &= \frac{e^{-F_\theta(v)}}{Z_\theta}, \qquad
   F_\theta(v) = -b^\top v - \sum_{j=1}^{H} \operatorname{softplus}\!\left(c_j + W_{:j}^\top v\right), \\
   \nabla_\theta \log p_\theta(v) &= -\nabla_\theta F_\theta(v)
     + \mathbb{E}_{\tilde{v} \sim p_\theta}\!\left[\nabla_\theta F_\theta(\tilde{v})\right], \\
   x_{t+1} &= x_t - \frac{\eta}{2} \nabla_x E(x_t) + \sqrt{\eta}\, \xi_t, \qquad \xi_t \sim \mathcal{N}(0, I)
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`p_\theta`
     - the model's distribution over visible vectors
     - ``free_energy`` (its unnormalised negative logarithm)
     - scalar per example
   * - :math:`v`
     - the visible units: one binary example
     - ``v``
     - ``(D,)``
   * - :math:`F_\theta`
     - the free energy of a restricted Boltzmann machine, its hidden units summed out
     - ``free_energy``
     - ``(D,)`` to scalar
   * - :math:`\theta`
     - the parameters :math:`W`, :math:`b`, :math:`c`
     - ``params``
     - dict of arrays
   * - :math:`W`, :math:`W_{:j}`
     - the weights between visible and hidden units, and column :math:`j`
     - ``params["W"]``
     - ``(D, H)``, ``(D,)``
   * - :math:`b`, :math:`c`
     - visible and hidden biases
     - ``params["b"]``, ``params["c"]``
     - ``(D,)``, ``(H,)``
   * - :math:`j`, :math:`H`
     - a hidden unit and their number
     - ``H``
     - scalar
   * - :math:`Z_\theta`
     - the partition function, the sum of :math:`e^{-F}` over all :math:`2^D` visible vectors
     - computed exactly in the tests only
     - scalar
   * - :math:`\tilde{v}`
     - a sample of the model: in contrastive divergence, the end of :math:`k` Gibbs steps from :math:`v`
     - ``v_k`` in ``cd_loss``
     - ``(D,)``
   * - :math:`E`, :math:`x_t`
     - any differentiable energy of a continuous :math:`x`, and the Langevin chain's state at step :math:`t`
     - ``energy``, ``x``
     - ``(X,)`` to scalar, ``(X,)``
   * - :math:`\eta`, :math:`\xi_t`
     - the step size and the injected noise
     - ``step_size``, ``xi``
     - scalar, ``(X,)``
   * - :math:`I`
     - the identity matrix
     - implied by ``jax.random.normal``
     - ``(X, X)``

Explanation
-----------

An energy-based model defines a density by :math:`p \propto e^{-E}`. Any function can be the
energy, but the normaliser :math:`Z` is a sum or integral over every configuration, so the
likelihood is out of reach, and so is its gradient in closed form (the second line): it pushes
the energy down at the data and up at samples of the model itself, whose expectation needs samples.

A *restricted Boltzmann machine* has binary hidden units :math:`h` and the joint energy
:math:`E(v, h) = -v^\top W h - b^\top v - c^\top h`, with no links within a layer. Summing out
:math:`h` gives the free energy of the first line, and given :math:`v` the hidden units are
independent, :math:`p(h_j = 1 \mid v) = \sigma(c_j + W_{:j}^\top v)` (and the visible ones given
:math:`h` likewise), so block Gibbs sampling alternates two cheap steps. *Contrastive divergence*
:footcite:p:`hinton2002training` replaces the model sample by a chain of only :math:`k` Gibbs
steps started at the data point itself: a biased but low-variance gradient that trains RBMs well.
``cd_loss`` is :math:`F(v) - F(\operatorname{sg}[\tilde{v}])`, whose gradient is that estimate.

For continuous data and a neural energy, :footcite:t:`du2019implicit` sample with *Langevin
dynamics* (the third line): gradient descent on the energy plus Gaussian noise, whose stationary
distribution tends to :math:`e^{-E}` as :math:`\eta \to 0`. With a finite step it is slightly too
wide: for a Gaussian of variance :math:`\sigma^2` it is :math:`\sigma^2 / (1 - \eta / 4\sigma^2)`,
which the tests check.

.. admonition:: Intuition

   An energy is a landscape and the data are its valleys. Training digs the valleys where the data
   lie and raises the ground wherever the model's own walkers have wandered but no data lie. The
   walkers are marbles shaken while they roll downhill (Langevin): the shaking lets them leave
   shallow dips and spread over the valleys in proportion to their depth.

Inductive bias
--------------

An energy-based model assumes only that compatibility is easy to score; it can express densities
with many modes and hard constraints that an explicit density would find awkward. An RBM adds that
the visible units interact only through a layer of independent binary causes. The price is that
sampling and likelihood need Markov chains, whose mixing between distant modes can be very slow.

Example
-------

The free energy of an RBM with zero weights is :math:`-H \log 2` for every :math:`v`; Gibbs steps
keep units binary; Langevin steps on a quadratic energy pull towards its minimum:

>>> import jax, jax.numpy as jnp
>>> from cookbook.generative.energy_based import free_energy, gibbs_step, cd_loss, langevin
>>> params = {"W": jnp.zeros((4, 3)), "b": jnp.zeros(4), "c": jnp.zeros(3)}
>>> round(float(free_energy(params, jnp.array([1.0, 0.0, 1.0, 1.0]))), 4)  # -3 log 2
-2.0794
>>> v = gibbs_step(params, jax.random.key(0), jnp.ones(4))
>>> bool(jnp.all((v == 0) | (v == 1)))
True
>>> float(cd_loss(params, jax.random.key(1), jnp.ones(4), k=1))  # every vector has the same energy
0.0
>>> x = langevin(lambda x: 0.5 * jnp.sum(x**2), jax.random.key(2), jnp.full(2, 10.0), steps=200, step_size=0.1)
>>> bool(jnp.all(jnp.abs(x) < 4.0))  # from 10 to within a few standard deviations of 0
True

Implementation notes
--------------------

``fit`` trains an RBM with CD-``k`` and Adam :footcite:p:`kingma2015adam` on minibatches, inside
one :func:`jax.lax.scan`. On binary vectors of 6 units drawn from two patterns with 5 % of the bits
flipped (about 1.9 nats of entropy), an RBM with 4 hidden units trained by CD-1 for 300 steps
raises the exact average log-likelihood (the tests sum :math:`Z` over all 64 vectors) from
:math:`-6 \log 2 \approx -4.16` to about -1.93 (the test asks for more than -2.3), near the
data's own entropy. The tests also check the free energy against the sum over
hidden states, the Gibbs chain against the exact :math:`p(v)`, and CD-:math:`k` with long chains
against the exact gradient. ``langevin`` takes any energy function; it runs its steps in a
:func:`jax.lax.scan`.
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook._memo import cached

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"free_energy": (), "gibbs_step": (), "cd_loss": ("k",)}


def init(key, *, D, H, dtype=jnp.float32):
    """An RBM of ``D`` visible and ``H`` hidden units: weights Gaussian with standard deviation 0.1,
    biases zero."""
    D, H = _checks.size(D, "D"), _checks.size(H, "H")
    return {"W": 0.1 * jax.random.normal(key, (D, H), dtype), "b": jnp.zeros((D,), dtype), "c": jnp.zeros((H,), dtype)}


def _check(params, v, name="v"):
    if not isinstance(params, dict) or set(params) != {"W", "b", "c"}:
        raise TypeError("params must be the dict that init returns, with keys ['W', 'b', 'c']")
    W = _checks.float_array(params["W"], "params['W']", ndim=2, what=" (D, H)")
    D, H = W.shape
    _checks.same_shape(_checks.float_array(params["b"], "params['b']"), "params['b']", (D,), expected_from="D of W")
    _checks.same_shape(_checks.float_array(params["c"], "params['c']"), "params['c']", (H,), expected_from="H of W")
    v = _checks.float_array(v, name, ndim=1, what=" (D,)")
    return _checks.same_shape(v, name, (D,), expected_from="D of params")


def _free_energy(params, v):
    return -v @ params["b"] - jnp.sum(jax.nn.softplus(params["c"] + v @ params["W"]))


def free_energy(params, v):
    """``F(v) = -log sum_h exp(-E(v, h))`` of one visible vector ``v`` (D,)."""
    return _free_energy_jit(params, _check(params, v))


# The public functions check their input, then run compiled cores like this one: the page's calls,
# the tests' and the jit check's reuse one program per shape instead of dispatching op by op.
_free_energy_jit = jax.jit(_free_energy)


def _gibbs(params, key, v):
    k_h, k_v = jax.random.split(key)
    h = jax.random.bernoulli(k_h, jax.nn.sigmoid(params["c"] + v @ params["W"])).astype(v.dtype)  # (H,)
    return jax.random.bernoulli(k_v, jax.nn.sigmoid(params["b"] + params["W"] @ h)).astype(v.dtype)  # (D,)


def gibbs_step(params, key, v):
    """One step of block Gibbs sampling: hidden units given ``v`` (D,), then visible units given them."""
    v = _check(params, v)
    for name, value in params.items():
        _checks.check_no_nan(value, f"params['{name}']")  # a NaN probability would draw 0 in silence
    _checks.check_no_nan(v, "v")
    return _gibbs_jit(params, key, v)


_gibbs_jit = jax.jit(_gibbs)


def cd_loss(params, key, v, *, k=1):
    """``F(v) - F(v_k)`` with ``v_k`` the end of ``k`` Gibbs steps from ``v`` (D,), held constant:
    its gradient is the CD-k estimate of minus the log-likelihood's gradient."""
    v = _check(params, v)
    k = _checks.size(k, "k")
    for name, value in params.items():
        _checks.check_no_nan(value, f"params['{name}']")
    return _cd_loss_jit(params, key, v, k)


def _cd_loss(params, key, v, k):
    v_k, _ = jax.lax.scan(lambda v, key: (_gibbs(params, key, v), None), v, jax.random.split(key, k))
    return _free_energy(params, v) - _free_energy(params, jax.lax.stop_gradient(v_k))


def langevin(energy, key, x, *, steps, step_size):
    """``steps`` steps of unadjusted Langevin dynamics on the scalar function ``energy`` from ``x``:
    ``x - step_size / 2 * grad energy(x) + sqrt(step_size) * xi``, ``xi`` standard Gaussian."""
    if not callable(energy):
        raise TypeError(f"energy must be a function of x, got {type(energy).__name__}")
    x = _checks.float_array(x, "x", min_ndim=1)
    steps = _checks.size(steps, "steps")
    _checks.positive(step_size, "step_size")
    grad = jax.grad(energy)

    def step(x, key):
        xi = jax.random.normal(key, x.shape, x.dtype)
        return x - 0.5 * step_size * grad(x) + jnp.sqrt(step_size) * xi, None

    x, _ = jax.lax.scan(step, x, jax.random.split(key, steps))
    return x


_cd_loss_jit = jax.jit(_cd_loss, static_argnums=3)


@cached  # the tests' run is stored when the book is built (cookbook/_memo.py)
def fit(params, key, V, *, steps, batch, k=1, learning_rate=1e-2):
    """Adam on the mean ``cd_loss`` of random minibatches of ``batch`` rows of ``V`` (N, D);
    returns the trained parameters and the minibatch loss before each step, (steps,)."""
    V = _checks.float_array(V, "V", ndim=2, what=" (N, D)")
    _check(params, V[0], "V[0]")
    steps, batch, k = _checks.size(steps, "steps"), _checks.size(batch, "batch"), _checks.size(k, "k")
    _checks.positive(learning_rate, "learning_rate")
    return _train(params, key, V, steps, batch, k, learning_rate)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _train(params, key, V, steps, batch, k, learning_rate):
    b1, b2, tiny = 0.9, 0.999, 1e-8
    zeros = jax.tree.map(jnp.zeros_like, params)

    def mean_loss(params, key, Vb):
        keys = jax.random.split(key, Vb.shape[0])
        return jnp.mean(jax.vmap(lambda key, v: _cd_loss(params, key, v, k))(keys, Vb))

    def step(carry, inputs):
        params, m, v = carry
        t, key = inputs
        k_rows, k_chain = jax.random.split(key)
        rows = jax.random.randint(k_rows, (batch,), 0, V.shape[0])
        value, grads = jax.value_and_grad(mean_loss)(params, k_chain, V[rows])
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
        scale = learning_rate * jnp.sqrt(1 - b2**t) / (1 - b1**t)
        params = jax.tree.map(lambda p, m, v: p - scale * m / (jnp.sqrt(v) + tiny), params, m, v)
        return (params, m, v), value

    inputs = (jnp.arange(1, steps + 1, dtype=jnp.float32), jax.random.split(key, steps))
    (params, _, _), values = jax.lax.scan(step, (params, zeros, zeros), inputs)
    return params, values
