r"""Mixture of experts
==================

Replace the perceptron of a transformer block by many perceptrons (experts) and a router that sends
each token to only :math:`k` of them: parameters grow with the number of experts while the compute
per token stays that of :math:`k` perceptrons, the layer to reach for when a model must be larger
than its compute budget allows.

Equation
--------

.. math::

   p(x) = \operatorname{softmax}(x W_r), \qquad
   \mathcal{T}(x) = \text{the } k \text{ experts of largest } p_e(x), \qquad
   y = \sum_{e \in \mathcal{T}(x)} p_e(x)\, \operatorname{FFN}_e(x)

   C = \min\Big(T, \left\lceil \alpha \frac{T k}{M} \right\rceil\Big), \qquad
   \mathcal{L}_{\text{balance}} = M \sum_{e=1}^{M} f_e P_e, \qquad
   f_e = \frac{1}{T k} \sum_{t=1}^{T} \mathbb{1}[e \in \mathcal{T}(x_t)], \qquad
   P_e = \frac{1}{T} \sum_{t=1}^{T} p_e(x_t)

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x`, :math:`x_t`
     - a token's features; token :math:`t` of the sequence (or batch of tokens)
     - row :math:`t` of ``x``
     - ``(d_model,)``
   * - :math:`t`, :math:`T`
     - index of a token; number of tokens routed together
     - ``T = x.shape[0]``
     - scalar
   * - :math:`W_r`
     - router weights (:math:`r` for router)
     - ``params["W_r"]``
     - ``(d_model, M)``
   * - :math:`p(x)`, :math:`p_e(x)`
     - router probabilities over the experts; that of expert :math:`e`
     - ``probs``
     - ``(T, M)``
   * - :math:`e`, :math:`M`
     - index of an expert; number of experts
     - ``num_experts``
     - scalar
   * - :math:`k`
     - experts per token
     - ``k``
     - scalar
   * - :math:`\mathcal{T}(x)`
     - the experts chosen for :math:`x`
     - ``experts`` from ``route``
     - ``(T, k)``
   * - :math:`\operatorname{FFN}_e`
     - expert :math:`e`, a two-layer perceptron
     - ``params["experts"]`` (stacked)
     - ``(M, ...)``
   * - :math:`y`
     - the layer's output (added to the residual stream by the block)
     - ``apply(params, x, k=..., capacity_factor=...)[0]``
     - ``(T, d_model)``
   * - :math:`C`, :math:`\alpha`
     - capacity: the most tokens an expert processes (never more than :math:`T`); the capacity factor
     - ``capacity``, ``capacity_factor``
     - scalar
   * - :math:`f_e`, :math:`P_e`
     - fraction of assignments sent to expert :math:`e`; its mean router probability
     - inside ``load_balancing_loss``
     - ``(M,)``
   * - :math:`\mathcal{L}_{\text{balance}}`
     - the auxiliary load-balancing loss, added to the task loss with a small weight
     - ``load_balancing_loss(probs, k)``
     - ``()``

Explanation
-----------

**Conditional computation.** :footcite:t:`jacobs1991adaptive` trained several networks together
with a gating network that learned which of them should handle each input, so that each became an
expert on part of the data. :footcite:t:`shazeer2017outrageously` made a layer of thousands of
experts trainable by keeping only the few that a learned router picks per token: each token pays
for :math:`k` experts, while the model holds all :math:`M`. GShard :footcite:`lepikhin2021gshard`
put such layers, with top-2 routing and a fixed capacity per expert, into every other block of a
transformer, and the Switch Transformer :footcite:`fedus2022switch` simplified them to
:math:`k = 1`.

.. admonition:: Intuition

   A mixture of experts is triage in a hospital: a nurse at the door (the router) glances at each
   patient and sends them to one or two specialists, so each patient costs the time of a few
   doctors while the hospital employs many. Each specialist's waiting room has a fixed number of
   chairs (the capacity); a patient who finds them all taken is sent home untreated, which in a
   block means passing through the residual connection unchanged.

**Gates.** The router is a linear map followed by a softmax, and the chosen experts' outputs are
weighted by their router probabilities :math:`p_e(x)` themselves, *not* renormalised over the
:math:`k` chosen ones: for :math:`k = 1` this is the Switch Transformer's gate, while Shazeer et al.
take a softmax over the :math:`k` kept logits and GShard divides its two gates by their sum, so
that their gates sum to 1 where these sum to at most 1. Either way the router receives a gradient
through the gate values: the choice itself is discrete, but the weight of the chosen expert is not.

**Capacity and dropped tokens.** On an accelerator every expert must process a fixed-size buffer,
so each gets :math:`C` slots, a capacity factor :math:`\alpha \ge 1` times its fair share
:math:`Tk/M`, and never more than the :math:`T` tokens there are. Slots are filled first by all
tokens' first choices in token order, then by the second choices, and so on. A token whose expert
is full is *dropped* by that expert: it gets no contribution from it, and if all its experts are
full, the layer outputs zero for it, so that in a block the token passes through the residual
connection unchanged. ``capacity_factor=None`` gives every expert room for all tokens, and then the
routed computation equals the *dense reference* that runs every expert on every token and combines
them with the gates (the tests check this).

**Load balancing.** Left alone, a router collapses: the experts that happen to be chosen early get
trained, become better, and are chosen more, while the rest starve, and the capacity limit then
drops most tokens. The auxiliary loss :math:`M \sum_e f_e P_e` of the Switch Transformer pushes
back. :math:`f_e` (the share of assignments sent to :math:`e`) has no gradient, so the loss lowers
each :math:`P_e` in proportion to the load :math:`f_e`: probability moves from busy experts to idle
ones. It equals 1 whenever either vector is uniform: a uniform router (:math:`P_e = 1/M`) whatever
the routing, or a balanced routing (:math:`f_e = 1/M`) whatever the probabilities, since
:math:`\sum_e P_e = 1`. It is *not* bounded below by 1: a busy expert with a low mean probability
brings it under 1 (three tokens split 0.5/0.5 between two experts and sent to the first, and one
sent to the second with probability 0.99, score 0.8775; with two experts and top-1 nothing scores
below 7/8). For a confident top-1 router, whose probabilities are one-hot, :math:`P_e = f_e` and the
loss :math:`M \sum_e f_e^2` is at least 1, with equality exactly when the load is balanced; a
router that sends everything to one expert with probability near 1 scores near :math:`M`.

The figure routes 64 random tokens through four experts with top-1 and a capacity factor of 1.25
(20 slots each), once with the random router at initialisation and once with expert 0's router
column scaled by four, which makes it win for more tokens: expert 0 overflows its capacity (27
tokens for 20 slots), its extra tokens are dropped (gray), and the balancing loss rises from 1.02
to 1.13. Even the random router overflows expert 3 by two tokens: this is what the capacity
factor's slack above 1 is for.

.. plot::

   import jax, jax.numpy as jnp
   from cookbook.transformers.mixture_of_experts import init, apply
   k_p, k_x = jax.random.split(jax.random.key(0))
   params = init(k_p, d_model=16, d_ff=32, num_experts=4)
   x = jax.random.normal(k_x, (64, 16))
   biased = dict(params, W_r=params["W_r"].at[:, 0].multiply(4.0))  # sharper logits for expert 0
   fig, axes = plt.subplots(1, 2, figsize=(7, 2.8), sharey=True)
   for ax, p, title in ((axes[0], params, "random router"), (axes[1], biased, "router favouring expert 0")):
       _, aux = apply(p, x, k=1, capacity_factor=1.25)
       ax.bar(np.arange(4), np.asarray(aux["wanted"]), color="lightgray", label="tokens routed")
       ax.bar(np.arange(4), np.asarray(aux["load"]), color="tab:blue", label="tokens processed")
       ax.axhline(aux["capacity"], color="k", ls="--", label="capacity C")
       ax.set_title(f"{title}: loss {float(aux['balance_loss']):.2f}")
       ax.set_xlabel("expert")
   axes[0].set_ylabel("tokens")
   axes[0].legend(fontsize=7)
   plt.tight_layout()

**Numerics.** The router's softmax runs in float32 (routing decisions are sensitive to rounding).
The dispatch is written as dense one-hot tensors of shape ``(T, M, C)``, simple and jit-able with
static shapes, but of a size quadratic in :math:`T` (see the implementation notes).

**Bad input.** Shapes, dtypes and sizes are checked always, at each public function, with a
``ValueError`` or ``TypeError`` that names the argument; nothing here depends on values.

Inductive bias
--------------

The layer assumes that tokens fall into groups that want different computations, and that a cheap
linear router can tell the groups apart: each expert specialises in the tokens it is sent. It does
not assume what the groups are; the router learns them. The capacity limit adds the assumption that
no group is much larger than its share, and the balancing loss enforces it, even where the data
are in fact unbalanced.

Example
-------

>>> import jax, jax.numpy as jnp
>>> from cookbook.transformers.mixture_of_experts import (
...     init, route, apply, dense_reference, load_balancing_loss, expert_capacity)
>>> k_p, k_x = jax.random.split(jax.random.key(0))
>>> params = init(k_p, d_model=8, d_ff=16, num_experts=4)
>>> x = jax.random.normal(k_x, (10, 8))
>>> probs, gates, experts = route(params, x, k=2)
>>> probs.shape, gates.shape, experts.shape
((10, 4), (10, 2), (10, 2))
>>> expert_capacity(10, 4, k=2, capacity_factor=1.0)  # ceil(1.0 * 10 * 2 / 4)
5
>>> y, aux = apply(params, x, k=2, capacity_factor=None)  # unlimited: nothing dropped
>>> bool(jnp.allclose(y, dense_reference(params, x, k=2), atol=1e-5))
True
>>> y, aux = apply(params, x, k=1, capacity_factor=1.0)
>>> int(aux["capacity"]), aux["load"].tolist(), int(aux["dropped"].sum())
(3, [3, 2, 1, 3], 1)
>>> float(load_balancing_loss(jnp.full((10, 4), 0.25), k=2))  # uniform router
1.0
>>> probs = jnp.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.01, 0.99]])
>>> round(float(load_balancing_loss(probs, k=1)), 4)  # ties go to expert 0: below 1
0.8775

Implementation notes
--------------------

**Memory of the one-hot dispatch.** ``dispatch`` and ``combine`` have shape ``(T, M, C)`` and the
intermediate ``slots`` has shape ``(T, k, M, C)``. With :math:`C \approx \alpha k T / M`, the first
two hold :math:`T M C \approx \alpha k T^2` entries each and ``slots`` :math:`k` times more,
:math:`\alpha k^2 T^2`: quadratic in the number of tokens routed together, whatever the number of
experts. For the figure's 64 tokens with :math:`k = 2`, four experts and :math:`\alpha = 1.25`,
:math:`C = 40` and ``slots`` holds 20480 entries, the largest array of the layer (the test reads it
from the compiled program). This is why GShard routes tokens in groups of fixed size, and why large
systems replace the one-hot tensors by sorting the tokens by expert and gathering them.
"""

import functools
import math

import jax
import jax.numpy as jnp

from cookbook import _checks
from cookbook.foundations import mlp
from cookbook.transformers._boundary import check_params
from cookbook.transformers.transformer_block import feed_forward

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "route": ("k",),
    "apply": ("k", "capacity_factor"),
    "dense_reference": ("k",),
    "load_balancing_loss": ("k",),
}


def init(key, d_model, d_ff, num_experts):
    """A router and ``num_experts`` perceptrons ``d_model -> d_ff -> d_model``, stacked on a leading axis."""
    d_model, d_ff = _checks.size(d_model, "d_model"), _checks.size(d_ff, "d_ff")
    num_experts = _checks.size(num_experts, "num_experts")
    return _init(key, d_model, d_ff, num_experts)


# The sizes are checked above; the draws run as one compiled program per set of sizes, rather than
# a dozen eager operations (splits, draws, a scaling) that each compile.
@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _init(key, d_model, d_ff, num_experts):
    k_router, k_experts = jax.random.split(key)
    experts = jax.vmap(lambda k: mlp.init(k, (d_model, d_ff, d_model)))(jax.random.split(k_experts, num_experts))
    return {"W_r": jax.random.normal(k_router, (d_model, num_experts)) / jnp.sqrt(d_model), "experts": experts}


def expert_capacity(T, M, k, capacity_factor):
    """Slots per expert, ``min(T, ceil(capacity_factor * T * k / M))``; ``None`` means room for every token."""
    T, M, k = _checks.size(T, "T"), _checks.size(M, "M"), _checks.size(k, "k")
    if capacity_factor is None:
        return T
    capacity_factor = _checks.positive(capacity_factor, "capacity_factor")
    return min(T, math.ceil(capacity_factor * T * k / M))


def _check_params(params):
    """``params`` shaped as :func:`init` makes them, for the sizes read from the first expert's weights."""
    try:
        M, d_model, d_ff = params["experts"][0]["W"].shape
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"params must be the dict that init returns, got one without the usual shapes ({error!r})")
    return check_params(params, init, d_model=d_model, d_ff=d_ff, num_experts=M)


def route(params, x, k):
    """Router probabilities (T, M) and, per token, the ``k`` largest of them (T, k) and their experts (T, k)."""
    return _route(params, _check_route(params, x, k), k)


def _check_route(params, x, k):
    _check_params(params)
    d_model, M = params["W_r"].shape
    x = _checks.float_array(x, "x", ndim=2, what=f" (T, d_model) = (T, {d_model})")
    _checks.same_shape(x, "x", (x.shape[0], d_model), expected_from="(T, d_model)")
    if not 1 <= _checks.size(k, "k") <= M:
        raise ValueError(f"k must be between 1 and the number of experts {M}, got k={k}")
    return x


# The checks run in Python; each computation below is one compiled program rather than dozens of
# eager operations that each compile on first use, for every new shape.
@functools.partial(jax.jit, static_argnums=2)
def _route(params, x, k):
    logits = x.astype(jnp.float32) @ params["W_r"].astype(jnp.float32)  # (T, M)
    probs = jax.nn.softmax(logits, axis=-1)
    gates, experts = jax.lax.top_k(probs, k)  # (T, k), largest first; not renormalised over the k
    return probs, gates, experts


def load_balancing_loss(probs, k):
    """Switch Transformer's ``M * sum_e f_e P_e`` from router probabilities (T, M), routed to their top ``k``."""
    probs = _checks.float_array(probs, "probs", ndim=2, what=" (T, M)")
    M = probs.shape[1]
    if not 1 <= _checks.size(k, "k") <= M:
        raise ValueError(f"k must be between 1 and the number of experts M = {M} (probs.shape[1]), got k={k}")
    return _load_balancing_loss(probs, k)


@functools.partial(jax.jit, static_argnums=1)
def _load_balancing_loss(probs, k):
    M = probs.shape[1]
    _, experts = jax.lax.top_k(probs, k)  # (T, k): the routing of route
    f = jnp.mean(jax.nn.one_hot(experts, M), axis=(0, 1))  # (M,): share of the T k assignments
    P = jnp.mean(probs, axis=0)  # (M,)
    return M * jnp.sum(jax.lax.stop_gradient(f) * P)


def _experts_apply(experts, h):
    """Expert e applied to the rows h[e]: (M, C, d_model) -> (M, C, d_model)."""
    return jax.vmap(feed_forward)(experts, h)


def apply(params, x, *, k=1, capacity_factor=1.25):
    """The routed layer on tokens ``x`` (T, d_model); returns ``(y, aux)``.

    ``y`` (T, d_model) is the weighted sum of each token's kept experts (zero for a token all of whose
    experts were full). ``aux`` holds ``balance_loss``, ``capacity``, ``wanted`` and ``load`` (tokens
    routed to and processed by each expert, (M,)) and ``dropped`` ((T, k), an assignment over capacity).
    """
    x = _check_route(params, _checks.float_array(x, "x", ndim=2, what=" (T, d_model)"), k)
    C = expert_capacity(x.shape[0], params["W_r"].shape[1], k, capacity_factor)
    return _apply(params, x, k, C)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _apply(params, x, k, C):
    probs, gates, experts = _route(params, x, k)
    T, M = probs.shape
    choice = jax.nn.one_hot(experts, M, dtype=jnp.int32)  # (T, k, M)
    in_order = choice.transpose(1, 0, 2).reshape(k * T, M)  # first choices of all tokens, then second...
    slot = (jnp.cumsum(in_order, axis=0) - 1).reshape(k, T, M).transpose(1, 0, 2)  # (T, k, M)
    kept = choice * (slot < C)  # (T, k, M): an assignment that found a free slot
    slots = kept[..., None] * jax.nn.one_hot(slot, C, dtype=jnp.int32)  # (T, k, M, C)
    dispatch = slots.sum(axis=1).astype(x.dtype)  # (T, M, C): which token fills which slot
    combine = jnp.einsum("tkmc,tk->tmc", slots.astype(jnp.float32), gates)  # (T, M, C): its gate
    expert_in = jnp.einsum("tmc,td->mcd", dispatch, x)  # (M, C, d_model)
    expert_out = _experts_apply(params["experts"], expert_in)  # (M, C, d_model)
    y = jnp.einsum("tmc,mcd->td", combine, expert_out.astype(jnp.float32)).astype(x.dtype)
    aux = {
        "balance_loss": _load_balancing_loss(probs, k),
        "capacity": jnp.asarray(C),
        "wanted": choice.sum(axis=(0, 1)),
        "load": kept.sum(axis=(0, 1)),
        "dropped": kept.sum(axis=-1) == 0,
    }
    return y, aux


def dense_reference(params, x, k):
    """Every expert on every token, combined with the top-k gates (zero for the others): (T, d_model)."""
    x = _check_route(params, _checks.float_array(x, "x", ndim=2, what=" (T, d_model)"), k)
    return _dense_reference(params, x, k)


@functools.partial(jax.jit, static_argnums=2)
def _dense_reference(params, x, k):
    probs, gates, experts = _route(params, x, k)
    T, M = probs.shape
    G = jnp.zeros((T, M)).at[jnp.arange(T)[:, None], experts].set(gates)  # (T, M)
    all_out = jax.vmap(feed_forward, in_axes=(0, None))(params["experts"], x)  # (M, T, d_model)
    return jnp.einsum("tm,mtd->td", G, all_out)
