r"""Sequence parallelism: ring attention
====================================

Split a long sequence into blocks, one per device, and compute exact attention by passing the
blocks of keys and values from device to device round a ring while each device folds them into
its queries' running softmax: attention over a context too long for one device's memory.

Equation
--------

Device :math:`i` holds block :math:`i` of the queries, keys and values; at step
:math:`s = 0, \dots, N - 1` it holds key and value block :math:`j = (i - s) \bmod N`, and starting
from :math:`m^{(-1)} = -\infty`, :math:`\ell^{(-1)} = 0`, :math:`O^{(-1)} = 0`:

.. math::

   Z^{(s)} = \frac{Q_i K_j^\top}{\sqrt{D}} + M_{ij}, \qquad
   m^{(s)} = \max\!\left(m^{(s-1)}, \operatorname{rowmax} Z^{(s)}\right)

   \ell^{(s)} = e^{m^{(s-1)} - m^{(s)}}\, \ell^{(s-1)} + \operatorname{rowsum} e^{Z^{(s)} - m^{(s)}},
   \qquad
   O^{(s)} = e^{m^{(s-1)} - m^{(s)}}\, O^{(s-1)} + e^{Z^{(s)} - m^{(s)}}\, V_j

   Y_i = O^{(N-1)} / \ell^{(N-1)}, \qquad
   \text{after each step, device } i \text{ sends } (K_j, V_j) \text{ to device } (i + 1) \bmod N

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`N`
     - devices along the mesh axis that splits the sequence
     - ``n``, the size of mesh axis ``axis``
     - scalar
   * - :math:`i`
     - index of a device, and of the block of the sequence it owns
     - ``i = jax.lax.axis_index(axis)``
     - scalar
   * - :math:`s`, :math:`j`
     - step of the ring; index of the key and value block held at that step
     - ``step``, ``j``
     - scalar
   * - :math:`Q_i`
     - the queries of block :math:`i` (in the code already divided by :math:`\sqrt{D}`)
     - ``q`` inside ``on_device``
     - ``(T/N, H, D)``
   * - :math:`K_j`, :math:`V_j`
     - keys and values of block :math:`j`
     - ``k``, ``v`` inside ``on_device``
     - ``(T/N, H, D)``, ``(T/N, H, Dv)``
   * - :math:`D`
     - features per query and key
     - ``D``
     - scalar
   * - :math:`M_{ij}`
     - causal mask of the block pair: 0 where key position :math:`\le` query position, else the most
       negative float; absent when not causal
     - ``allowed``
     - ``(T/N, T/N)``
   * - :math:`Z^{(s)}`
     - scores of the local queries against the block held, the only scores ever stored
     - ``scores``
     - ``(H, T/N, T/N)``
   * - :math:`m^{(s)}`, :math:`\ell^{(s)}`, :math:`O^{(s)}`
     - running maximum, running sum of exponentials and running unnormalised output of each query
     - ``m``, ``l``, ``o``
     - ``(H, T/N)``, ``(H, T/N)``, ``(H, T/N, Dv)``
   * - :math:`Y_i`
     - block :math:`i` of the output, equal to full attention's rows of that block
     - ``y``
     - ``(T/N, H, Dv)``

Explanation
-----------

Attention's memory grows with the sequence: the scores of :math:`T` queries against :math:`T`
keys are :math:`T^2` numbers per head, and even the memory-efficient form
(:doc:`../attention/memory_efficient`), which never stores them, needs the whole sequence's keys
and values on one device. Liu et al. :footcite:`liu2024ringattention` cut the sequence itself.
Each of :math:`N` devices owns :math:`T/N` consecutive positions: their queries, keys and values.
The queries stay put; the key and value blocks travel. At every step each device scores its
queries against the block it holds, folds the result into its running softmax, and passes the
block to its neighbour with one ``jax.lax.ppermute``, so after :math:`N - 1` passes every block
has visited every device and each device's output is exact.

The folding is the online softmax :footcite:`milakov2018online`: a running maximum
:math:`m`, a sum :math:`\ell` and an output :math:`O`, all rescaled by
:math:`e^{m^{(s-1)} - m^{(s)}} \le 1` whenever a larger score appears, so no exponential
overflows and the order in which blocks arrive changes nothing but rounding. It is the loop of the
memory-efficient page with its key blocks on other devices.

.. admonition:: Intuition

   A ring of examiners each grades their own students' answers against a bundle of reference
   sheets. Nobody holds the whole library: each examiner reads the bundle in hand, updates a
   running tally per student, and passes the bundle to the left. When every bundle has gone
   round once, every student has been compared with every sheet, and no examiner ever needed a
   desk larger than one bundle.

**Memory and traffic.** A device stores :math:`T/N` rows of queries, keys and values, the
blocks in flight and one :math:`(T/N) \times (T/N)` tile of scores per head, never the
:math:`T \times T` matrix: its inputs are :math:`1/N` of the sequence (the tests read the bytes
from the compiled program). The price is
:math:`N - 1` sends of a key block and a value block by every device. In the compiled program
this is a loop of :math:`N - 1` steps holding exactly two collective permutes (the keys and the
values), and no other collective; the tests read both from the HLO. On accelerators the send of
the next block overlaps the product with the current one, so the ring costs nothing extra as long
as a block's product takes longer than its transfer: blocks must be large enough.

**Causal attention.** Query position :math:`t` may see key position :math:`u \le t`. A block pair
:math:`(i, j)` is then fully visible for :math:`j < i`, lower-triangular for :math:`j = i`, and
invisible for :math:`j > i`. Step 0 is always the diagonal block, so every query has seen a key
before any block is skipped, and the running maximum is finite from the start. The invisible
blocks are still computed and masked here (all devices run the same program), so device 0 wastes
:math:`N - 1` of its :math:`N` steps: see the implementation notes for the remedy.

The figure shows the schedule on four devices: ``ring_schedule`` gives the block that each
device holds at each step, and under a causal mask the blocks above the diagonal are computed and
thrown away.

.. plot::

   from cookbook.parallelism.sequence_parallel import ring_schedule
   blocks = ring_schedule(4)  # (steps, devices)
   devices = np.arange(4)[None, :]
   status = np.where(blocks < devices, 2, np.where(blocks == devices, 1, 0))
   fig, ax = plt.subplots(figsize=(4.2, 2.6))
   ax.imshow(status, cmap="Greens", vmin=-0.5, vmax=2.5)
   for (step, i), j in np.ndenumerate(blocks):
       ax.text(i, step, f"K{j}, V{j}", ha="center", va="center", fontsize=7)
   ax.set_xticks(range(4), [f"device {i}" for i in range(4)], fontsize=7)
   ax.set_yticks(range(4), [f"step {s}" for s in range(4)], fontsize=7)
   ax.set_title("causal: dark visible, medium diagonal, light masked", fontsize=8)
   plt.tight_layout()

**The backward pass** is differentiated by JAX: the transpose of sending a block to the right is
sending its gradient to the left, so the gradient program is a second ring running the other way
(two more collective permutes, which the tests count).

Inductive bias
--------------

None of its own: ring attention computes exactly the function of full softmax attention (the
tests check outputs and gradients against it), so the model's inductive bias is that of
attention. What it assumes is about the machine: that devices are linked in a ring where each
talks fast to its neighbour, and that the sequence is long enough for a block's computation to
hide its transfer.

Example
-------

Twenty-four positions of two heads on the eight devices of a mesh (three positions each), equal
to :func:`jax.nn.dot_product_attention` on one device:

>>> import jax, numpy as np
>>> from cookbook.parallelism.sequence_parallel import ring_attention
>>> mesh = jax.make_mesh((8,), ("seq",))
>>> q, k, v = np.random.default_rng(0).standard_normal((3, 24, 2, 5)).astype(np.float32)
>>> y = ring_attention(q, k, v, mesh, axis="seq", causal=True)
>>> y.shape, len(y.sharding.device_set)
((24, 2, 5), 8)
>>> full = jax.jit(jax.nn.dot_product_attention, static_argnames="is_causal")(q, k, v, is_causal=True)
>>> bool(np.allclose(y, full, atol=1e-5))
True

Implementation notes
--------------------

**Load balance under a causal mask.** With consecutive blocks, device :math:`i` has
:math:`i + 1` useful steps out of :math:`N`. Striped or zig-zag layouts give each device a
mixture of early and late positions (block :math:`i` and block :math:`2N - 1 - i` of :math:`2N`)
so that every device does the same useful work; the ring is unchanged, only the positions in the
mask are.

**A custom backward.** Differentiating the loop stores each step's score tile for the backward
pass (:math:`N` tiles per device). Liu et al. write the backward by hand, recomputing each tile
from the saved log-sum-exp as :doc:`../attention/memory_efficient` does, and rotating the key and
value gradients round the ring with the blocks.

**Libraries.** :func:`jax.nn.dot_product_attention` is the single-device function this page
reproduces; the ring is built from :func:`jax.shard_map` and :func:`jax.lax.ppermute`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from cookbook import _checks
from cookbook.parallelism.data_parallel import axis_size, divisible

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"ring_attention": ("mesh", "axis", "causal")}


def ring_schedule(num_devices):
    """The key and value block that each device holds at each step of the ring: a table (steps,
    devices) whose entry (s, i) is (i - s) mod N, as ``on_device`` computes it."""
    n = _checks.size(num_devices, "num_devices")
    step, device = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return (device - step) % n


def ring_attention(q, k, v, mesh, *, axis="seq", causal=False):
    """Exact softmax attention of q (T, H, D) over k (T, H, D) and v (T, H, Dv), the sequence split
    over the ``axis`` of ``mesh`` (T a multiple of its size), computed as a ring of key and value
    blocks. The layout is that of :func:`jax.nn.dot_product_attention` without a batch axis; the
    result (T, H, Dv) is split along T over the mesh axis as the inputs are."""
    if not isinstance(axis, str):
        raise TypeError(f"axis must be the name of one mesh axis (a str), got {axis!r}")
    n = axis_size(mesh, axis)
    q = _checks.float_array(q, "q", ndim=3, what=" (T, H, D)")
    k = _checks.float_array(k, "k", ndim=3, what=" (T, H, D)")
    v = _checks.float_array(v, "v", ndim=3, what=" (T, H, Dv)")
    _checks.same_shape(k, "k", q.shape, expected_from="that of q, (T, H, D)")
    _checks.same_shape(v, "v", q.shape[:2] + v.shape[2:], expected_from="(T, H, Dv), with T and H from q")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {causal!r}")
    divisible(q.shape[0], n, "q", f"length T (axis 0; mesh axis {axis!r})")
    return _ring_attention(q, k, v, mesh, axis, causal)


@functools.partial(jax.jit, static_argnames=("mesh", "axis", "causal"))
def _ring_attention(q, k, v, mesh, axis, causal):
    n = mesh.shape[axis]
    T, H, D = q.shape
    block = T // n
    lowest = jnp.finfo(jnp.float32).min
    ring = [(d, (d + 1) % n) for d in range(n)]  # device d sends to device d + 1

    def on_device(q, k, v):  # (T/N, H, D), (T/N, H, D), (T/N, H, Dv): this device's block
        i = jax.lax.axis_index(axis)
        q = q.astype(jnp.float32) / jnp.sqrt(jnp.float32(D))
        k, v = k.astype(jnp.float32), v.astype(jnp.float32)
        query_positions = i * block + jnp.arange(block)

        def fold(carry, k, v, j):  # one step of the online softmax with key block j
            m, l, o = carry
            scores = jnp.einsum("thd,uhd->htu", q, k)  # (H, T/N, T/N)
            if causal:
                allowed = j * block + jnp.arange(block)[None, :] <= query_positions[:, None]
                scores = jnp.where(allowed, scores, lowest)
            m_new = jnp.maximum(m, scores.max(axis=-1))  # (H, T/N)
            correction = jnp.exp(m - m_new)  # at most 1
            p = jnp.exp(scores - m_new[..., None])  # (H, T/N, T/N)
            if causal:
                p = jnp.where(allowed, p, 0.0)
            l = correction * l + p.sum(axis=-1)
            o = correction[..., None] * o + jnp.einsum("htu,uhd->htd", p, v)  # (H, T/N, Dv)
            return m_new, l, o

        start = (jnp.full((H, block), lowest), jnp.zeros((H, block)), jnp.zeros((H, block, v.shape[-1])))
        carry = fold(start, k, v, i)  # step 0: the device's own block (the diagonal one)

        def step(state, step):
            carry, k, v = state
            k = jax.lax.ppermute(k, axis, ring)  # receive the block of the device to the left
            v = jax.lax.ppermute(v, axis, ring)
            j = (i - step) % n
            return (fold(carry, k, v, j), k, v), None

        ((m, l, o), _, _), _ = jax.lax.scan(step, (carry, k, v), jnp.arange(1, n))
        y = o / l[..., None]  # (H, T/N, Dv)
        return y.transpose(1, 0, 2)  # (T/N, H, Dv)

    spec = P(axis)
    q, k, v = (jax.device_put(x, NamedSharding(mesh, spec)) for x in (q, k, v))
    y = jax.shard_map(on_device, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec)(q, k, v)
    return y.astype(v.dtype)
