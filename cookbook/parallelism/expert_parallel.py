r"""Expert parallelism
==================

Place the experts of a mixture-of-experts layer on different devices and send each token to the
device of its expert with one all-to-all, and the result back with another: the parameters of the
layer are divided among the devices while each token still pays for only :math:`k` experts.

Equation
--------

Device :math:`n` holds tokens :math:`X_n` (its group) and experts :math:`E_n`, the :math:`n`-th of
:math:`N` equal slices of the :math:`M` experts:

.. math::

   \mathcal{T}(x_t) = \operatorname{topk}\big(\operatorname{softmax}(x_t W_r)\big), \qquad
   C = \min\Big(G, \left\lceil \alpha \frac{G k}{M} \right\rceil\Big)

   B_{n, e} = \{\, x_t \in X_n : e \in \mathcal{T}(x_t) \text{ and a slot of the } C
   \text{ is free} \,\}

   \tilde{B}_{n} = \big(B_{1, e}, \dots, B_{N, e}\big)_{e \in E_n}
   \quad \text{(all-to-all)}, \qquad
   y_t = \sum_{e \in \mathcal{T}(x_t),\ x_t \in B_{n, e}} p_e(x_t)\, \operatorname{FFN}_e(x_t)
   \quad \text{(all-to-all back)}

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`N`, :math:`n`
     - devices along the mesh axis; index of one
     - ``n``, the size of mesh axis ``axis``
     - scalar
   * - :math:`M`, :math:`e`
     - number of experts (a multiple of :math:`N`); index of an expert
     - ``M``
     - scalar
   * - :math:`E_n`
     - the experts that device :math:`n` holds, :math:`M / N` of them
     - ``local_experts`` inside ``on_device``
     - ``(M/N, ...)``
   * - :math:`X_n`, :math:`x_t`, :math:`G`
     - the group of tokens of device :math:`n`; a token of it; tokens per group, :math:`T / N`
     - ``x`` inside ``on_device``; ``G``
     - ``(G, d_model)``
   * - :math:`t`
     - index of a token
     - row of ``x``
     - scalar
   * - :math:`W_r`
     - router weights, replicated on every device
     - ``W_r``
     - ``(d_model, M)``
   * - :math:`p_e(x_t)`, :math:`\mathcal{T}(x_t)`, :math:`k`
     - router probability of expert :math:`e`; the :math:`k` experts of largest probability
     - ``gates``, ``chosen``; ``k``
     - ``(G, k)``
   * - :math:`C`, :math:`\alpha`
     - slots per expert and group; the capacity factor
     - ``C``, ``capacity_factor``
     - scalar
   * - :math:`B_{n, e}`
     - the buffer of tokens of group :math:`n` for expert :math:`e` (:math:`C` slots, zeros where
       empty)
     - ``buffers``
     - ``(M, C, d_model)``
   * - :math:`\tilde{B}_{n}`
     - what device :math:`n` receives: for each of its experts, the buffers of every group
     - ``received``
     - ``(N, M/N, C, d_model)``
   * - :math:`\operatorname{FFN}_e`
     - expert :math:`e`, a two-layer perceptron
     - ``params["experts"]`` (stacked)
     - ``(M, ...)``
   * - :math:`y_t`
     - the layer's output for token :math:`t` (zero if all its experts were full)
     - row of ``y``
     - ``(d_model,)``

Explanation
-----------

A mixture of experts (:doc:`../transformers/mixture_of_experts`) holds :math:`M` perceptrons but
runs only :math:`k` per token, so its parameters, not its compute, outgrow one device. GShard
:footcite:`lepikhin2021gshard` and the Switch Transformer :footcite:`fedus2022switch` spread the
experts over the devices that already split the batch: device :math:`n` keeps its group of tokens
and its :math:`M/N` experts. The router is small and replicated, so each device routes its own
tokens, writes each into a slot of the buffer of its expert (:math:`C` slots per expert, filled
first by all tokens' first choices in token order, then by second choices), and the
:math:`M` buffers go out in one all-to-all: the buffers for the experts of device :math:`m` go to
device :math:`m`. Each device now holds, for each of its experts, :math:`N` buffers (one from
every group), runs the expert on all of them, and a second all-to-all returns every result to
the group it came from, where the chosen experts' outputs are added, weighted by their router
probabilities.

.. admonition:: Intuition

   A mail sorting centre: every post office (device) sorts its letters (tokens) into one sack per
   destination town (expert), every sack of a fixed size; once a day the lorries swap sacks so
   that each town's sacks reach it (all-to-all), the letters are answered there, and the answers
   travel back the same way. A letter for a town whose sack is full waits for another day: it is
   dropped.

**Capacity, and what dropping does.** An all-to-all exchanges arrays of fixed shape, so every
buffer has :math:`C` slots, the capacity factor :math:`\alpha` times a fair share of the group.
A token whose expert's buffer is full loses that expert: it gets no contribution from it, and if
all its :math:`k` experts are full its output is zero, so that in a transformer block it passes
through the residual connection unchanged. Capacity is counted per group, on the device that
routes: the layer equals the single-device layer applied to each group of :math:`G = T/N` tokens,
drops included, and with room for every token (``capacity_factor=None``) it equals the dense
reference that runs every expert on every token, whatever :math:`N`. The tests check both.

**Memory and traffic.** A device stores :math:`1/N` of the experts and :math:`1/N` of the
tokens; the router is replicated. The forward program holds exactly two all-to-alls, each moving
:math:`M C` rows of :math:`d_{\text{model}}` features per device, of which the share
:math:`(N-1)/N` leaves the device. The backward pass is the same exchange transposed: two more
all-to-alls, and one all-reduce that sums the replicated router's gradient over the devices (the
tests count them in the compiled programs).

Inductive bias
--------------

That of the mixture of experts: tokens fall into groups that want different computations, which
a linear router can tell apart. Spreading the experts adds no assumption about the data, but the
capacity per group adds one about the batch: every group of :math:`T/N` tokens must be roughly
balanced across the experts, or its excess tokens are dropped, even when the batch as a whole is
balanced.

Example
-------

Sixteen experts on eight devices (two each), forty tokens (five per device), each routed to its
two best experts:

>>> import jax, numpy as np
>>> from cookbook.transformers import mixture_of_experts as moe
>>> from cookbook.parallelism.expert_parallel import apply
>>> mesh = jax.make_mesh((8,), ("expert",))
>>> rng = np.random.default_rng(0)  # weights of the shapes of moe.init(key, 6, 7, num_experts=16)
>>> w = lambda *shape: (rng.standard_normal(shape) / np.sqrt(shape[-2])).astype(np.float32)
>>> params = {"W_r": w(6, 16), "experts": [{"W": w(16, 6, 7), "b": np.zeros((16, 7), np.float32)},
...                                       {"W": w(16, 7, 6), "b": np.zeros((16, 6), np.float32)}]}
>>> x = rng.standard_normal((40, 6)).astype(np.float32)
>>> y, dropped = apply(params, x, mesh, axis="expert", k=2, capacity_factor=None)
>>> y.shape, int(dropped.sum())
((40, 6), 0)
>>> dense = jax.jit(moe.dense_reference, static_argnames="k")(params, x, k=2)
>>> bool(np.allclose(y, dense, atol=1e-5))
True

With a capacity of :math:`\lceil 1.0 \cdot 5 \cdot 2 / 16 \rceil = 1` slot per expert and group,
some assignments find their buffer full:

>>> y, dropped = apply(params, x, mesh, axis="expert", k=2, capacity_factor=1.0)
>>> int(dropped.sum())  # of 80 assignments, to 16 experts x 8 groups x 1 slot
21

Implementation notes
--------------------

**Other layouts.** Here the experts share the devices of the data axis, as in GShard; with more
devices than experts, an expert can itself be split by tensor parallelism, or replicated across
a second mesh axis. Large systems replace the fixed buffers by sorting tokens by expert and
sending variable-sized pieces, which drops nothing but needs a ragged all-to-all.

**Libraries.** The single-device twin is ``cookbook.transformers.mixture_of_experts.apply``
applied to each group; the exchange is :func:`jax.lax.all_to_all` inside :func:`jax.shard_map`.
"""

import functools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from cookbook import _checks
from cookbook.parallelism.data_parallel import axis_size, divisible
from cookbook.transformers import mixture_of_experts as moe
from cookbook.transformers.transformer_block import feed_forward

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"apply": ("mesh", "axis", "k", "capacity_factor")}


def apply(params, x, mesh, *, axis="expert", k=1, capacity_factor=1.25):
    """The mixture-of-experts layer of ``moe.init`` on tokens ``x`` (T, d_model), its experts split
    over the ``axis`` of ``mesh`` (M a multiple of its size) and its tokens in groups of T/N, one per
    device. Returns ``y`` (T, d_model) and ``dropped`` (T, k), True for an assignment that found its
    expert's buffer full; both split along T over the mesh axis."""
    if not isinstance(axis, str):
        raise TypeError(f"axis must be the name of one mesh axis (a str), got {axis!r}")
    n = axis_size(mesh, axis)
    moe._check_params(params)
    d_model, M = params["W_r"].shape
    x = _checks.float_array(x, "x", ndim=2, what=f" (T, d_model) = (T, {d_model})")
    _checks.same_shape(x, "x", (x.shape[0], d_model), expected_from="(T, d_model)")
    if not 1 <= _checks.size(k, "k") <= M:
        raise ValueError(f"k must be between 1 and the number of experts {M}, got k={k}")
    divisible(M, n, "params['W_r']", f"number of experts (axis 1; mesh axis {axis!r})")
    divisible(x.shape[0], n, "x", f"number of tokens T (axis 0; mesh axis {axis!r})")
    C = moe.expert_capacity(x.shape[0] // n, M, k, capacity_factor)
    return _apply(params, x, mesh, axis, k, C)


def _buffers(gates, chosen, M, C):
    """Which token fills which slot of which expert's buffer, for one group: ``dispatch`` (G, M, C)
    of 0/1, ``combine`` (G, M, C) holding the gate there, and ``dropped`` (G, k)."""
    G, k = chosen.shape
    wants = jax.nn.one_hot(chosen, M, dtype=jnp.int32)  # (G, k, M)
    by_rank = wants.transpose(1, 0, 2).reshape(k * G, M)  # all first choices, then all second ...
    position = jnp.cumsum(by_rank, axis=0).reshape(k, G, M).transpose(1, 0, 2) - 1  # (G, k, M)
    placed = wants * (position < C)  # (G, k, M): found a free slot
    slot = placed[..., None] * jax.nn.one_hot(position, C, dtype=jnp.int32)  # (G, k, M, C)
    dispatch = slot.sum(axis=1)  # (G, M, C)
    combine = jnp.einsum("gkmc,gk->gmc", slot.astype(jnp.float32), gates)  # (G, M, C)
    return dispatch, combine, placed.sum(axis=-1) == 0


@functools.partial(jax.jit, static_argnames=("mesh", "axis", "k", "C"))
def _apply(params, x, mesh, axis, k, C):
    n = mesh.shape[axis]
    d_model, M = params["W_r"].shape

    def on_device(W_r, local_experts, x):  # (d_model, M), M/N experts, (G, d_model)
        probs = jax.nn.softmax(x.astype(jnp.float32) @ W_r.astype(jnp.float32), axis=-1)  # (G, M)
        gates, chosen = jax.lax.top_k(probs, k)  # (G, k): not renormalised over the k
        dispatch, combine, dropped = _buffers(gates, chosen, M, C)
        buffers = jnp.einsum("gmc,gd->mcd", dispatch.astype(x.dtype), x)  # (M, C, d_model)
        outgoing = buffers.reshape(n, M // n, C, d_model)  # [m]: for the experts of device m
        received = jax.lax.all_to_all(outgoing, axis, 0, 0)  # [m]: from the group of device m
        rows = received.transpose(1, 0, 2, 3).reshape(M // n, n * C, d_model)  # per local expert
        out = jax.vmap(feed_forward)(local_experts, rows)  # (M/N, N C, d_model)
        out = out.reshape(M // n, n, C, d_model).transpose(1, 0, 2, 3)  # [m]: for group m
        returned = jax.lax.all_to_all(out, axis, 0, 0).reshape(M, C, d_model)  # this group's results
        y = jnp.einsum("gmc,mcd->gd", combine, returned.astype(jnp.float32))  # (G, d_model)
        return y.astype(x.dtype), dropped

    put = lambda a, spec: jax.device_put(a, NamedSharding(mesh, spec))
    W_r = put(params["W_r"], P())
    experts = jax.tree.map(lambda a: put(a, P(axis)), params["experts"])
    x = put(x, P(axis))
    return jax.shard_map(on_device, mesh=mesh, in_specs=(P(), P(axis), P(axis)),
                         out_specs=(P(axis), P(axis)))(W_r, experts, x)
