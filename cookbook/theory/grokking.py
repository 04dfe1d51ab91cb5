r"""Grokking
========

A network trained on a small algorithmic task can fit its training set early and only much later,
after its training accuracy has long been perfect, suddenly generalise; weight decay is what carries
it from the memorising solution to the general one. The page to read before stopping a run because
the validation accuracy has not moved.

Equation
--------

.. math::

   \begin{aligned}
   y &= (a + b) \bmod p, \qquad
   \hat{y} = \big((e_a \oplus e_b)\, W_1\big)^{\circ 2} \, W_2 , \\
   \theta_{t+1} &= \theta_t - \eta \Big( \frac{\hat{m}_t}{\sqrt{\hat{v}_t} + \epsilon} + \lambda\, \theta_t \Big)
   \end{aligned}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`a`, :math:`b`, :math:`y`
     - the two operands and their sum modulo :math:`p`
     - ``a``, ``b``, ``y``
     - ``(N,)`` integers
   * - :math:`p`
     - the modulus, 23 on this page
     - ``p``
     - scalar
   * - :math:`e_a`, :math:`e_b`
     - one-hot vectors of the operands, concatenated (:math:`\oplus`)
     - rows ``a`` and ``p + b`` of ``W_in``
     - ``(p,)`` each
   * - :math:`W_1`, :math:`W_2`
     - the two layers, with a square as activation (:math:`{}^{\circ 2}`, elementwise)
     - ``params["W_in"]``, ``params["W_out"]``
     - ``(2p, H)``, ``(H, p)``
   * - :math:`\hat{y}`
     - the logits over the :math:`p` answers
     - ``logits``
     - ``(N, p)``
   * - :math:`\theta_t`, :math:`t`
     - all the parameters after :math:`t` steps
     - ``params``
     - a pytree
   * - :math:`\hat{m}_t`, :math:`\hat{v}_t`, :math:`\epsilon`
     - Adam's bias-corrected moments of the gradient of the cross-entropy, and its epsilon
     - inside ``adamw``
     - as ``params``
   * - :math:`\eta`
     - learning rate
     - ``learning_rate``
     - scalar
   * - :math:`\lambda`
     - weight decay, decoupled from the gradient
     - ``weight_decay``
     - scalar

Explanation
-----------

:footcite:t:`power2022grokking` trained small transformers on tables of modular arithmetic with half
of the table held out. Training accuracy reached 100 % within a few hundred steps, while validation
accuracy stayed at chance for thousands more and then rose, within a short stretch, to 100 %: the
network *grokked* the operation. Weight decay was the intervention that mattered most.

The explanation of :footcite:t:`nanda2023progress` is a race between two solutions that both fit
the training set. Memorising a look-up table is found first, because it is easy to reach. The
general solution is a small circuit: embed each operand as waves :math:`\cos(\omega a)`,
:math:`\sin(\omega a)` of a few frequencies :math:`\omega = 2\pi k/p`, combine them with the identity
:math:`\cos(\omega(a + b)) = \cos\omega a \cos\omega b - \sin\omega a \sin\omega b`, and read off the
answer :math:`c` that makes :math:`\cos(\omega(a + b - c))` largest. It needs far smaller weights
than a table of :math:`p^2/2` entries. Weight decay shrinks every weight at a constant rate, so once
the training loss is near zero it slowly trades the table for the circuit, and validation accuracy
jumps when the circuit takes over. Without weight decay nothing pushes the network off the table it
has found. The square activation used here (after :footcite:t:`gromov2023grokking`) multiplies the
two operands' embeddings, which is exactly what the trigonometric identity needs, and makes the
effect appear within two thousand steps of a tiny network.

.. admonition:: Intuition

   A student cramming for an exam learns the answers to past papers by heart and passes every mock
   test, but fails new questions. Made to keep studying with a penalty on how much they memorise,
   they eventually find the short rule that produces all the answers, and the old table is
   forgotten. The score on new questions jumps on the day the rule replaces the table.

``modular_addition`` builds the table and splits it at random; ``train`` runs full-batch AdamW
(:doc:`/docs/chapters/optimization/adamw`) and records both accuracies at every step. The tests find,
with weight decay :math:`\lambda = 1`, 100 % training accuracy within 200 steps and 95 % validation
accuracy more than three times later; without it, validation accuracy stays below 95 % over the
whole run of 2000 steps. They also see the circuit: ``fourier_concentration`` measures how much of a
hidden unit's input weights, read as a function of :math:`a`, lie in a single frequency. After
grokking the median unit is a single wave (above 80 % of its power in one frequency); without weight
decay, or at initialisation, it is spread out (below 50 %).

.. plot::

   import jax
   from cookbook.theory.grokking import init, modular_addition, train

   data = modular_addition(jax.random.key(0), p=23, train_fraction=0.5)
   params = init(jax.random.key(1), p=23, width=128)
   fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
   for ax, weight_decay in zip(axes, (1.0, 0.0)):
       _, (train_acc, val_acc) = train(params, data, learning_rate=3e-3, weight_decay=weight_decay, steps=2000)
       ax.plot(train_acc, label="training")
       ax.plot(val_acc, label="validation")
       ax.set(xscale="log", xlabel="step", title=f"weight decay {weight_decay}")
   axes[0].set_ylabel("accuracy")
   axes[0].legend(fontsize=8)
   fig.tight_layout()

Inductive bias
--------------

The architecture can represent both the table and the circuit; it is the optimiser's implicit and
explicit preferences that choose. Weight decay is a prior for small weights, and on this task the
smallest-norm solution that fits the data is the one that generalises; on a task where the
general rule needs larger weights than memorising, the same prior would not help.

Example
-------

>>> import jax
>>> from cookbook.theory.grokking import init, apply, modular_addition
>>> (a, b, y), (a_val, b_val, y_val) = modular_addition(jax.random.key(0), p=23, train_fraction=0.5)
>>> a.shape, a_val.shape, int((a[0] + b[0]) % 23 == y[0])
((264,), (265,), 1)
>>> params = init(jax.random.key(1), p=23, width=128)
>>> apply(params, a[:5], b[:5]).shape
(5, 23)

At initialisation a hidden unit's weights over :math:`a` are spread over all 11 frequencies:

>>> from cookbook.theory.grokking import fourier_concentration
>>> import jax.numpy as jnp
>>> round(float(jnp.median(fourier_concentration(params))), 2)
0.26

Implementation notes
--------------------

Training is full batch (all 264 training pairs every step), with :math:`\beta_2 = 0.98` as in the
grokking papers. The run is decorated with ``cookbook._memo.cached`` so that the page's figure and
the tests share it when the book is built. Grokking is sensitive to the fraction of the table used
for training (less data, longer delay), to the scale of the initialisation, and to the learning
rate; with a ReLU instead of the square the same network needs many more steps on this task.
:footcite:t:`liu2023omnigrok` relate the delay to the norm of the weights at initialisation.
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook._memo import cached
from cookbook.optimization.adamw import adamw
from cookbook.optimization.sgd import apply_updates

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"modular_addition": ("p", "train_fraction"), "init": ("p", "width"), "apply": (),
       "fourier_concentration": ()}


def modular_addition(key, p, train_fraction):
    """The table of (a + b) mod p over all p^2 pairs, shuffled and split: ``(a, b, y)`` for training
    (the first ``int(train_fraction p^2)`` pairs) and for validation (the rest)."""
    p = _checks.size(p, "p", minimum=2)
    if isinstance(train_fraction, bool) or not isinstance(train_fraction, float) or not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be a float in (0, 1), got {train_fraction!r}")
    return _table(key, p, int(train_fraction * p * p))


@functools.partial(jax.jit, static_argnums=(1, 2))  # compiled once per size, also when called eagerly
def _table(key, p, n):
    a, b = jnp.divmod(jnp.arange(p * p), p)
    order = jax.random.permutation(key, p * p)
    a, b = a[order], b[order]
    y = (a + b) % p
    return (a[:n], b[:n], y[:n]), (a[n:], b[n:], y[n:])


def init(key, p, width):
    """``{"W_in": (2p, H), "W_out": (H, p)}``, Gaussian with variance 1 / fan-in."""
    p, width = _checks.size(p, "p", minimum=2), _checks.size(width, "width")
    return _init(key, p, width)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _init(key, p, width):
    eps = jax.random.normal(key, (2 * p * width + width * p,))  # one draw for both layers
    return {"W_in": eps[: 2 * p * width].reshape(2 * p, width) / jnp.sqrt(2.0 * p),
            "W_out": eps[2 * p * width :].reshape(width, p) / jnp.sqrt(1.0 * width)}


def _check_params(params):
    W_in = _checks.float_array(params["W_in"], "params['W_in']", ndim=2, what=" (2p, H)")
    W_out = _checks.float_array(params["W_out"], "params['W_out']", ndim=2, what=" (H, p)")
    p = W_out.shape[1]
    _checks.same_shape(W_in, "params['W_in']", (2 * p, W_out.shape[0]), expected_from="(2p, H) to match params['W_out']")
    return p


def apply(params, a, b):
    """The logits (N, p) for operands ``a`` and ``b`` (N,), integers in [0, p)."""
    p = _check_params(params)
    a = _checks.check_range(_checks.int_array(a, "a", ndim=1, what=" (N,)"), "a", 0, p)
    b = _checks.check_range(_checks.int_array(b, "b", ndim=1, what=" (N,)"), "b", 0, p)
    _checks.same_shape(b, "b", a.shape, expected_from="as a")
    return _logits(params, a, b)


@jax.jit
def _logits(params, a, b):
    p = params["W_out"].shape[1]
    hidden = params["W_in"][a] + params["W_in"][p + b]  # (e_a + e_b) W_1, (N, H)
    return hidden**2 @ params["W_out"]  # (N, p)


def _accuracy(params, split):
    a, b, y = split
    return jnp.mean(jnp.argmax(_logits(params, a, b), axis=-1) == y)


@cached  # the page's figure and the tests share these runs when the book is built (cookbook/_memo.py)
def train(params, data, *, learning_rate, weight_decay, steps):
    """Full-batch AdamW on the cross-entropy of the training split. Returns the parameters and the
    training and validation accuracies after every step, ``(steps,)`` each."""
    p = _check_params(params)
    (a, b, y), (a_val, b_val, y_val) = data
    for name, value in (("a", a), ("b", b), ("y", y), ("a_val", a_val), ("b_val", b_val), ("y_val", y_val)):
        _checks.check_range(_checks.int_array(value, f"data: {name}", ndim=1), f"data: {name}", 0, p)
    steps = _checks.size(steps, "steps")
    learning_rate = _checks.positive(learning_rate, "learning_rate")
    weight_decay = _checks.positive(weight_decay, "weight_decay", allow_zero=True)
    return _train(params, data, float(learning_rate), float(weight_decay), steps)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _train(params, data, learning_rate, weight_decay, steps):
    train_split, val_split = data
    a, b, y = train_split
    opt = adamw(learning_rate, b1=0.9, b2=0.98, eps=1e-8, weight_decay=weight_decay)

    def loss(params):
        logits = _logits(params, a, b)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    def step(carry, _):
        params, state = carry
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        params = apply_updates(params, updates)
        return (params, state), (_accuracy(params, train_split), _accuracy(params, val_split))

    (params, _), history = jax.lax.scan(step, (params, opt.init(params)), length=steps)
    return params, history


def fourier_concentration(params):
    """For each hidden unit (H,), the share of its input weights' power over the operand a (the rows
    0..p-1 of ``W_in``, as a function of a) that lies in its strongest frequency, the constant left
    out: near 1 for a unit that computes one wave cos(2 pi k a / p + phase)."""
    _check_params(params)
    return _concentration(params)


@jax.jit
def _concentration(params):
    p = params["W_out"].shape[1]
    power = jnp.abs(jnp.fft.rfft(params["W_in"][:p], axis=0)) ** 2  # (p // 2 + 1, H)
    power = power[1:]  # without the constant
    return jnp.max(power, axis=0) / jnp.sum(power, axis=0)
