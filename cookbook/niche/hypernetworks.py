r"""Hypernetworks
=============

A network whose output is the weights of another network: reach for it when one model must serve a
whole family of tasks (one set of weights per task, written on demand from a task's description)
or when a large network's weights should be generated from a few parameters.

Equation
--------

.. math::

   \theta(z) = \tanh(z A + a)\, B + c, \qquad
   \theta = (W_1, b_1, W_2, b_2)

   y = \tanh(x W_1 + b_1)\, W_2 + b_2, \qquad
   \frac{\partial L}{\partial \phi} = \frac{\partial \theta}{\partial \phi}^{\!\top} \frac{\partial L}{\partial \theta}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`z`
     - the task embedding (here a task's description, such as its amplitude and phase)
     - ``z``
     - ``(Z,)``
   * - :math:`A`, :math:`a`
     - the hypernetwork's first layer: weights and bias
     - ``params["A"]``, ``params["a"]``
     - ``(Z, M)``, ``(M,)``
   * - :math:`B`, :math:`c`
     - the hypernetwork's output layer, writing the :math:`P` target weights
     - ``params["B"]``, ``params["c"]``
     - ``(M, P)``, ``(P,)``
   * - :math:`\phi`
     - all the hypernetwork's parameters, :math:`(A, a, B, c)`: the only trained ones
     - ``params``
     - a dict
   * - :math:`\theta`
     - the generated weights of the target network, one vector of :math:`P` numbers cut into layers
     - the result of ``generate``
     - ``(P,)``
   * - :math:`W_1`, :math:`b_1`, :math:`W_2`, :math:`b_2`
     - the target network's layers, a two-layer MLP :math:`D \to H \to O`
     - ``W1``, ``b1``, ``W2``, ``b2``
     - ``(D, H)``, ``(H,)``, ``(H, O)``, ``(O,)``
   * - :math:`x`, :math:`y`
     - the target network's input and output
     - ``x``, the result of ``apply``
     - ``(D,)``, ``(O,)``
   * - :math:`L`
     - the loss of the target network's outputs
     - the caller's loss
     - scalar

Explanation
-----------

A hypernetwork :footcite:`ha2017hypernetworks` is an ordinary network used in an unusual place: its
output is read as the weight matrices of a second, *target* network, which then processes the data.
Only the hypernetwork is trained. The target network's weights :math:`\theta(z)` are not
parameters but activations, so the loss reaches the hypernetwork by the chain rule, through the
target network and then through the generator: the last line of the equation, which the tests
check against an explicit Jacobian. Nothing special is needed for this; automatic differentiation
sees one composite function of :math:`\phi`.

Two uses follow. With one embedding :math:`z_j` per layer of a deep network, a small hypernetwork
writes all the layers, and the layers share structure through it (Ha et al. generate the kernels of
a residual network this way, with fewer parameters than the network itself). With one embedding
per *task*, one hypernetwork writes a specialised network for every task, and a new task's network
is one forward pass away; this page does that. The tests train it on 32 sine waves
:math:`y = \alpha \sin(x + \beta)`, each described by :math:`z = (\alpha, \beta)`, and it fits
sine waves it never saw, from their description alone, to a mean squared error below a hundredth
of their variance.

The scale of the generated weights matters as in any initialisation: a target network whose weights
come out far too large saturates its tanh units. Here :math:`c` starts at a normally initialised
target network and :math:`B` is small, so training starts from ordinary target networks that
differ slightly between tasks.

.. admonition:: Intuition

   A hypernetwork is a tailor who cuts a suit from your measurements rather than a shop that sells
   one size: the tailor's skill (the hypernetwork) is learned once from many customers, and each
   new customer's suit (the target network) is made from a few numbers (the embedding) without
   being fitted from scratch.

Inductive bias
--------------

A hypernetwork assumes that the weights of the networks in a family lie near a low-dimensional,
smooth manifold, parametrised by the embedding: similar tasks get similar networks. It can then
share what tasks have in common and generalise to new embeddings between the ones it was trained
on, but it cannot write a network for a task its embedding does not describe, and it is bound by
the capacity of the target network it writes. The output layer :math:`B` has :math:`M \times P`
entries, so hypernetworks stay economical only for target networks of modest size, or when they
write the weights in chunks.

Example
-------

A hypernetwork that writes a target network :math:`1 \to 5 \to 1` from a two-number embedding:

>>> import jax, jax.numpy as jnp
>>> from cookbook.niche.hypernetworks import apply, generate, init, n_target_params
>>> sizes = (1, 5, 1)
>>> n_target_params(sizes)  # 1*5 + 5 + 5*1 + 1
16
>>> params = init(jax.random.key(0), embed_dim=2, hidden=7, sizes=sizes)
>>> params["B"].shape
(7, 16)
>>> z = jnp.array([1.0, 0.5])
>>> generate(params, z, sizes)["W1"].shape
(1, 5)
>>> apply(params, z, jnp.array([0.3]), sizes).shape
(1,)

Implementation notes
--------------------

Written for one embedding and one input; ``jax.vmap`` over inputs reuses one generated network,
and over embeddings writes one per task. Generating the weights once per task and reusing them
for a batch is what makes the method cheap: here the page's ``apply`` regenerates them at every
call for clarity, which under :func:`jax.jit` with a batch of inputs vmapped inside is computed
once. A related, lighter idea is the FiLM layer :footcite:`perez2018film`, a hypernetwork that writes
only a scale and a shift per unit of the target network.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"generate": ("sizes",), "apply": ("sizes",)}


def _sizes(sizes):
    if not isinstance(sizes, tuple) or len(sizes) != 3:
        raise TypeError(f"sizes must be a tuple (D, H, O) of the target network's widths, got {sizes!r}")
    return tuple(_checks.size(s, f"sizes[{i}]") for i, s in enumerate(sizes))


def n_target_params(sizes):
    """The number of weights P of a target MLP ``D -> H -> O``: ``D*H + H + H*O + O``."""
    D, H, O = _sizes(sizes)
    return D * H + H + H * O + O


def init(key, *, embed_dim, hidden, sizes):
    """The hypernetwork's parameters ``{"A": (Z, M), "a": (M,), "B": (M, P), "c": (P,)}``.

    ``c`` is a normally initialised target network (flattened) and ``B`` is small, so that at first
    every embedding is given nearly that network.
    """
    Z, M = _checks.size(embed_dim, "embed_dim"), _checks.size(hidden, "hidden")
    return _init(key, Z, M, _sizes(sizes))


@partial(jax.jit, static_argnums=(1, 2, 3))
def _init(key, Z, M, sizes):
    D, H, O = sizes
    k_A, k_B, k_1, k_2 = jax.random.split(key, 4)
    P = D * H + H + H * O + O
    target = jnp.concatenate([jax.random.normal(k_1, (D * H,)) / np.sqrt(D), jnp.zeros(H),
                              jax.random.normal(k_2, (H * O,)) / np.sqrt(H), jnp.zeros(O)])
    return {"A": jax.random.normal(k_A, (Z, M)) / np.sqrt(Z), "a": jnp.zeros(M),
            "B": 0.1 * jax.random.normal(k_B, (M, P)) / np.sqrt(M), "c": target}


def _check(params, z, sizes):
    sizes = _sizes(sizes)
    if not isinstance(params, dict) or set(params) != {"A", "a", "B", "c"}:
        raise TypeError(f"params must be a dict with keys 'A', 'a', 'B', 'c' (from init), got "
                        f"{sorted(params) if isinstance(params, dict) else type(params).__name__}")
    A = _checks.float_array(params["A"], "params['A']", ndim=2, what=" (Z, M)")
    Z, M = A.shape
    P = n_target_params(sizes)
    _checks.same_shape(_checks.float_array(params["a"], "params['a']"), "params['a']", (M,),
                       expected_from="M from params['A'] (Z, M)")
    _checks.same_shape(_checks.float_array(params["B"], "params['B']"), "params['B']", (M, P),
                       expected_from=f"M from params['A'], P = {P} from sizes {sizes}")
    _checks.same_shape(_checks.float_array(params["c"], "params['c']"), "params['c']", (P,),
                       expected_from=f"P = {P} from sizes {sizes}")
    z = _checks.float_array(z, "z", ndim=1, what=" (Z,)")
    _checks.same_shape(z, "z", (Z,), expected_from="Z from params['A'] (Z, M)")
    return sizes, z


def _unflatten(theta, sizes):
    """Cut the flat weights theta (P,) into the target network's layers."""
    D, H, O = sizes
    W1, b1, W2, b2 = jnp.split(theta, np.cumsum([D * H, H, H * O]))
    return {"W1": W1.reshape(D, H), "b1": b1, "W2": W2.reshape(H, O), "b2": b2}


def _generate(params, z, sizes):
    theta = jnp.tanh(z @ params["A"] + params["a"]) @ params["B"] + params["c"]  # (P,)
    return _unflatten(theta, sizes)


def generate(params, z, sizes):
    """The target network's layers ``{"W1", "b1", "W2", "b2"}`` that the hypernetwork writes for
    the embedding ``z`` (Z,); ``sizes = (D, H, O)`` are the target network's widths."""
    sizes, z = _check(params, z, sizes)
    return jax.jit(_generate, static_argnums=2)(params, z, sizes)


def target_apply(weights, x):
    """The target network ``tanh(x W1 + b1) W2 + b2`` (O,) on one input ``x`` (D,)."""
    return jnp.tanh(x @ weights["W1"] + weights["b1"]) @ weights["W2"] + weights["b2"]


def apply(params, z, x, sizes):
    """The output (O,) on one input ``x`` (D,) of the target network written for ``z`` (Z,)."""
    sizes, z = _check(params, z, sizes)
    x = _checks.float_array(x, "x", ndim=1, what=" (D,)")
    _checks.same_shape(x, "x", (sizes[0],), expected_from=f"D from sizes {sizes}")
    return _apply(params, z, x, sizes)


@partial(jax.jit, static_argnums=3)
def _apply(params, z, x, sizes):
    return target_apply(_generate(params, z, sizes), x)
