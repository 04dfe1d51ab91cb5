r"""Deep ensembles
==============

Train the same network several times from different random starts, each predicting a mean and a
variance, and treat the members as a mixture: where they agree the ensemble is sure, where they
disagree it is not. The simplest uncertainty method for networks, and in practice one of the best.

Equation
--------

.. math::

   \begin{aligned}
   \left(\mu_m(x),\, s_m(x)\right) &= f_{\theta_m}(x), \qquad
   \sigma_m^2(x) = \operatorname{softplus}\left(s_m(x)\right) + \epsilon, \qquad m = 1, \dots, M, \\
   \mathcal{L}(\theta_m) &= \frac{1}{N} \sum_{i=1}^{N} \left[ \tfrac12 \log \sigma_m^2(x_i)
     + \frac{\left(y_i - \mu_m(x_i)\right)^2}{2 \sigma_m^2(x_i)} \right], \\
   \mu_*(x) &= \frac{1}{M} \sum_{m} \mu_m(x), \qquad
   \sigma_*^2(x) = \underbrace{\frac{1}{M} \sum_{m} \sigma_m^2(x)}_{\text{aleatoric}}
     + \underbrace{\frac{1}{M} \sum_{m} \left(\mu_m(x) - \mu_*(x)\right)^2}_{\text{epistemic}}
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`, :math:`x_i`, :math:`y_i`
     - an input; training inputs and targets
     - ``x``, ``X``, ``y``
     - ``(D,)``, ``(N, D)``, ``(N,)``
   * - :math:`f_{\theta_m}`, :math:`\theta_m`, :math:`m`, :math:`M`
     - member :math:`m`, an MLP with two outputs; its parameters; the number of members
     - ``apply``, ``params`` (stacked on a leading axis of size ``num_members``)
     - ``(M, ...)``
   * - :math:`\mu_m`, :math:`s_m`, :math:`\sigma_m^2`
     - a member's predicted mean, raw second output, and variance
     - ``mean``, ``raw``, ``variance``
     - scalars
   * - :math:`\epsilon`
     - variance floor, :math:`10^{-6}`
     - ``MIN_VARIANCE``
     - scalar
   * - :math:`\mathcal{L}`, :math:`N`, :math:`i`
     - Gaussian negative log-likelihood (constant dropped); number of examples; index
     - ``gaussian_nll``
     - scalar
   * - :math:`\mu_*`, :math:`\sigma_*^2`
     - the mixture's mean and variance
     - ``mixture_moments``, ``predict``
     - scalars

Explanation
-----------

Each member is an ordinary MLP (:doc:`/docs/chapters/foundations/mlp`) with two outputs, a mean and
a raw value that a softplus turns into a positive variance. Trained by the Gaussian negative
log-likelihood :footcite:p:`nix1994estimating`, a member learns the noise of the data (the
*aleatoric* uncertainty) as well as the function: a large residual is cheap where the predicted
variance is large, and the :math:`\log \sigma^2` term stops the variance from growing without
reason. Trained from different random initialisations (and data orders), the members agree where
the data pins the function down and go their own ways where it does not. Lakshminarayanan et al.
:footcite:p:`lakshminarayanan2017simple` treat the ensemble as a uniform mixture of Gaussians and
report its mean and variance; the variance splits into the members' average noise and their
disagreement (the *epistemic* uncertainty, which more data would remove). The law of total variance
gives the split: the variance of a mixture is the mean of the variances plus the variance of the
means.

.. admonition:: Intuition

   Ask five doctors who trained at different schools. Where the textbook case is clear they give
   the same diagnosis; on a strange case each guesses differently, and the spread of their guesses
   tells you more than any one doctor's confidence would.

The paper adds adversarial training of each member; the code leaves it out, since on the tests'
data random initialisation alone makes the members disagree in the gap. The members are trained
together, vectorised with :func:`jax.vmap` over a leading axis of the parameters, full batch, by Adam.

Inductive bias
--------------

An ensemble assumes that the ways the members can differ are the ways the truth could differ from
the data. Random initialisation explores different modes of the loss, which is why ensembles beat
methods that stay near one mode (:doc:`laplace`, :doc:`mc_dropout`) on shifted data; but a few
members can miss directions along which no member happened to vary, and every member shares the
architecture's biases (ReLU networks extrapolate linearly, with confidence that grows with
distance). It costs :math:`M` trainings and :math:`M` forward passes.

Example
-------

The mixture of two members that agree about the noise but not the mean:

>>> import jax, jax.numpy as jnp
>>> from cookbook.uncertainty.deep_ensembles import apply, fit, gaussian_nll, init, mixture_moments, predict
>>> mean, variance = mixture_moments(jnp.array([1.0, 3.0]), jnp.array([0.5, 0.5]))
>>> float(mean), float(variance)  # 0.5 of noise plus 1.0 of disagreement
(2.0, 1.5)

Three members on the line y = 2x, trained for 300 steps:

>>> params = init(jax.random.key(0), (1, 16, 2), num_members=3)
>>> params[0]["W"].shape
(3, 1, 16)
>>> [v.shape for v in apply(jax.tree.map(lambda p: p[0], params), jnp.array([0.5]))]  # member 0
[(), ()]
>>> X = jnp.linspace(-1.0, 1.0, 11)[:, None]
>>> y = 2 * X[:, 0]
>>> float(gaussian_nll(jax.tree.map(lambda p: p[0], params), X, y)) > 0
True
>>> params, losses = fit(params, X, y, steps=300)
>>> losses.shape, bool(jnp.all(losses[:, -1] < losses[:, 0]))
((3, 300), True)
>>> mean, variance = predict(params, jnp.array([0.5]))
>>> round(float(mean), 1)
1.0
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook._memo import cached
from cookbook.foundations.mlp import _apply as mlp_apply
from cookbook.foundations.mlp import init as mlp_init
from cookbook.optimization.adam import adam

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"apply": (), "gaussian_nll": (), "mixture_moments": (), "predict": (), "fit": ("steps", "learning_rate")}

#: The floor added to every predicted variance.
MIN_VARIANCE = 1e-6


def init(key, sizes, num_members):
    """Parameters of ``num_members`` ReLU MLPs of widths ``sizes = (D, hidden..., 2)``, each from its
    own key, stacked on a leading axis: a list of ``{"W", "b"}`` whose arrays are (M, ...)."""
    num_members = _checks.size(num_members, "num_members")
    if not isinstance(sizes, (tuple, list)) or len(sizes) < 2 or sizes[-1] != 2:
        raise ValueError(f"sizes must be (D, hidden..., 2), a mean and a variance out, got {sizes!r}")
    members = [mlp_init(k, sizes) for k in jax.random.split(key, num_members)]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *members)


def _check_member(params):
    """The input width D of a list of float ``{"W", "b"}`` layers (stacked or not) ending in 2 outputs."""
    if not isinstance(params, (list, tuple)) or not params:
        raise TypeError(f"params must be a non-empty list of {{'W', 'b'}} layers, got {type(params).__name__}")
    for l, layer in enumerate(params):
        for name in ("W", "b"):
            _checks.float_array(layer[name], f"params[{l}]['{name}']")
    W = jnp.asarray(params[-1]["W"])
    if W.shape[-1] != 2:
        raise ValueError(f"params[-1]['W'] must end in 2 outputs (a mean and a variance), got shape {W.shape}")
    return jnp.shape(params[0]["W"])[-2]


def apply(params, x):
    """One member's predicted mean and variance, two scalars, for one input ``x`` (D,)."""
    x = _check_input(x, _check_member(params))
    _checks.layers(params)
    return _apply_jit(params, x)


def _check_input(x, D):
    x = _checks.float_array(x, "x")
    return _checks.same_shape(x, "x", (D,), expected_from="to match params[0]['W']")


def _apply(params, x):
    mean, raw = mlp_apply(params, x, "relu")
    variance = jax.nn.softplus(raw) + MIN_VARIANCE
    return mean, variance


# The public functions check their input, then hand it as it comes to a compiled core like this one:
# called eagerly, each of their operations would compile on its own for every new shape, and the
# training loop's lax.scan would compile again at every call.
_apply_jit = jax.jit(_apply)


def _check_data(X, y, D):
    X = _checks.float_array(X, "X", ndim=2, what=" (N, D)")
    _checks.same_shape(X, "X", (X.shape[0], D), expected_from="D from params[0]['W']")
    y = _checks.float_array(y, "y", ndim=1, what=" (N,)")
    return X, _checks.same_shape(y, "y", X.shape[:1], expected_from="N from X")


def gaussian_nll(params, X, y):
    """One member's mean Gaussian negative log-likelihood on ``X`` (N, D), ``y`` (N,), without the
    constant ``log(2 pi) / 2``."""
    X, y = _check_data(X, y, _check_member(params))
    _checks.layers(params)
    return _gaussian_nll_jit(params, X, y)


def _gaussian_nll(params, X, y):
    mean, variance = jax.vmap(_apply, in_axes=(None, 0))(params, X)  # (N,), (N,)
    return jnp.mean(0.5 * jnp.log(variance) + 0.5 * (y - mean) ** 2 / variance)


_gaussian_nll_jit = jax.jit(_gaussian_nll)


def mixture_moments(means, variances):
    """Mean and variance of a uniform mixture of Gaussians with ``means`` and ``variances``, (M,) each."""
    means = _checks.float_array(means, "means", ndim=1, what=" (M,)")
    variances = _checks.float_array(variances, "variances", ndim=1, what=" (M,)")
    _checks.same_shape(variances, "variances", means.shape, expected_from="M from means")
    return _mixture_moments_jit(means, variances)


def _mixture_moments(means, variances):
    mean = jnp.mean(means)
    variance = jnp.mean(variances) + jnp.mean((means - mean) ** 2)  # aleatoric + epistemic
    return mean, variance


_mixture_moments_jit = jax.jit(_mixture_moments)


def _check_ensemble(params):
    """The number of members M and the input width D of stacked parameters."""
    D = _check_member(params)
    M = jnp.shape(params[0]["W"])[0]
    for l, layer in enumerate(params):
        for name in ("W", "b"):
            if jnp.ndim(layer[name]) < 1 or jnp.shape(layer[name])[0] != M:
                raise ValueError(f"params[{l}]['{name}'] must have the leading member axis of size {M}, "
                                 f"got shape {jnp.shape(layer[name])}")
    # Each member's layers must chain: the check of one member, on shapes alone (nothing compiles).
    jax.eval_shape(lambda p: _checks.layers([{k: v[0] for k, v in layer.items()} for layer in p]), params)
    return M, D


def predict(params, x):
    """The ensemble's mixture mean and variance for one input ``x`` (D,): two scalars."""
    _, D = _check_ensemble(params)
    return _predict_jit(params, _check_input(x, D))


def _predict(params, x):
    means, variances = jax.vmap(_apply, in_axes=(0, None))(params, x)  # (M,), (M,)
    return _mixture_moments(means, variances)


_predict_jit = jax.jit(_predict)


@cached  # the chapter's figure and the tests share this run when the book is built (cookbook/_memo.py)
def fit(params, X, y, *, steps, learning_rate=0.01):
    """Train every member of ``params`` (stacked, as from :func:`init`) on :func:`gaussian_nll` by
    full-batch Adam. Returns the trained parameters and each member's loss before each step, (M, steps)."""
    _, D = _check_ensemble(params)
    X, y = _check_data(X, y, D)
    steps = _checks.size(steps, "steps")
    _checks.positive(learning_rate, "learning_rate")
    return _fit(params, X, y, steps=steps, learning_rate=_checks.static_number(learning_rate, "learning_rate"))


# One compiled program per set of shapes, steps and step size (static, as the Python number it is).
@functools.partial(jax.jit, static_argnames=("steps", "learning_rate"))
def _fit(params, X, y, *, steps, learning_rate):
    optimizer = adam(1.0)  # the step size is applied below

    def train_one(member):
        def step(carry, _):
            member, state = carry
            value, grads = jax.value_and_grad(_gaussian_nll)(member, X, y)
            updates, state = optimizer.update(grads, state, member)
            member = jax.tree.map(lambda p, u: p + learning_rate * u, member, updates)
            return (member, state), value

        (member, _), losses = jax.lax.scan(step, (member, optimizer.init(member)), length=steps)
        return member, losses

    return jax.vmap(train_one)(params)
