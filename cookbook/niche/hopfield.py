r"""Hopfield networks
=================

A memory that stores patterns in its weights and recalls a whole pattern from a corrupted part of
it: the classical binary network descends an energy, and its modern continuous form recalls in one
step with an update that is exactly attention.

Equation
--------

.. math::

   \text{classical:}\quad
   W = \frac{1}{D} \sum_{\mu=1}^{N} \xi^\mu {\xi^\mu}^\top \ (W_{ii} = 0), \qquad
   E(s) = -\tfrac{1}{2}\, s^\top W s, \qquad
   s_i \leftarrow \operatorname{sign}\Big(\sum_{j} W_{ij} s_j\Big)

   \text{modern:}\quad
   \xi^{\text{new}} = X^\top \operatorname{softmax}(\beta\, X \xi)

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`\xi^\mu`
     - stored pattern :math:`\mu`, entries :math:`\pm 1` in the classical network
     - row :math:`\mu` of ``patterns``
     - ``(D,)``
   * - :math:`\mu`, :math:`N`
     - index of a pattern; number of stored patterns
     - ``N``
     - scalar
   * - :math:`D`
     - number of neurons (the length of a pattern)
     - ``D``
     - scalar
   * - :math:`W`, :math:`W_{ij}`
     - symmetric weights with a zero diagonal (Hebb's rule)
     - ``W``
     - ``(D, D)``
   * - :math:`s`, :math:`s_i`
     - state of the classical network, entries :math:`\pm 1`; neuron :math:`i`
     - ``state``, ``s``
     - ``(D,)``
   * - :math:`i`, :math:`j`
     - indices of neurons
     - ``i``
     - scalar
   * - :math:`E`
     - energy of a state
     - ``energy``
     - scalar
   * - :math:`X`
     - the stored patterns as rows (any real values in the modern network)
     - ``patterns``
     - ``(N, D)``
   * - :math:`\xi`, :math:`\xi^{\text{new}}`
     - query (a corrupted or partial pattern) and the retrieved pattern
     - ``query``, the result of ``retrieve``
     - ``(D,)``
   * - :math:`\beta`
     - inverse temperature: how sharply the softmax picks one pattern
     - ``beta``
     - scalar

Explanation
-----------

**The classical network** :footcite:`hopfield1982neural` has :math:`D` binary neurons, each
connected to every other with a symmetric weight. Hebb's rule stores :math:`N` patterns by adding
their outer products: neurons that agree in a pattern excite each other. Recall flips one neuron at
a time (asynchronously) to the sign of its input field :math:`h_i = \sum_j W_{ij} s_j`. Flipping
:math:`s_i` changes the energy by :math:`-\Delta s_i\, h_i \le 0`, since the new sign agrees with
:math:`h_i`; symmetry and the zero diagonal are what make this true. The energy therefore never
increases, and as there are finitely many states, recall stops in a local minimum. The tests follow
the energy after every single flip. Ties (:math:`h_i = 0`) are sent to :math:`+1`.

Each stored pattern is a minimum when the patterns are few: the field at a stored pattern is the
pattern itself plus crosstalk from the others, whose size grows like :math:`\sqrt{N/D}`. Hopfield's
simulations found recall breaking down beyond about :math:`0.15 D` random patterns. In the tests,
with 64 neurons, 3 random patterns are all fixed points and are recalled from queries with 10 of 64
bits flipped; at 24 patterns most of them are no longer fixed points.

**The modern network** :footcite:`ramsauer2021hopfield` keeps continuous states and replaces the
quadratic energy by a log-sum-exp of the similarities :math:`X\xi`, which separates patterns
exponentially better. Its update, one softmax-weighted average of the stored patterns, is attention
with the query :math:`\xi` and the patterns as both keys and values, scaled by :math:`\beta`
instead of :math:`1/\sqrt{D}` :footcite:`vaswani2017attention`. With a large :math:`\beta` the
softmax is nearly one-hot and one step returns the stored pattern most similar to the query; with
a small :math:`\beta` it returns a blend (a metastable state), the average of similar patterns. The
softmax subtracts its maximum, so a large :math:`\beta` does not overflow; it is computed in float32
and the result cast back to the input's dtype.

.. admonition:: Intuition

   A Hopfield network is a landscape shaped by its memories: each stored pattern digs a valley, and
   a corrupted query is a ball set down on a slope that rolls to the bottom of the nearest valley.
   Store too many memories and the valleys merge into spurious dips between them. The modern
   network does not roll: it compares the query with every memory at once and jumps to the
   closest, like recognising a face in a crowd rather than reconstructing it feature by feature.

Inductive bias
--------------

Both networks assume that the answer is (close to) one of the stored examples: recall is
nearest-neighbour search by dot product, with no generalisation beyond the memories. The classical
network assumes binary, roughly uncorrelated patterns; correlated patterns share their valleys and
lower the capacity. The modern network stores as many patterns as it has rows, at a cost linear in
:math:`N` per query, and its :math:`\beta` chooses between recalling one pattern and averaging many.

Example
-------

Three patterns of five neurons; a query with its first bit flipped is recalled in one sweep, the
energy falls, and the modern update at a large :math:`\beta` returns the nearest pattern:

>>> import jax.numpy as jnp
>>> from cookbook.niche.hopfield import async_sweep, energy, hebbian_weights, retrieve
>>> patterns = jnp.array([[1., 1., 1., -1., -1.],
...                       [1., -1., 1., -1., 1.],
...                       [-1., -1., 1., 1., 1.]])
>>> W = hebbian_weights(patterns)
>>> query = patterns[0].at[0].set(-1.0)
>>> recalled, energies = async_sweep(W, query)
>>> recalled
Array([ 1.,  1.,  1., -1., -1.], dtype=float32)
>>> round(float(energy(W, query)), 3), float(energies[-1])
(0.4, -2.0)
>>> retrieve(patterns, query, 20.0).round(3)
Array([ 1.,  1.,  1., -1., -1.], dtype=float32)
>>> retrieve(patterns, query, 0.1).round(3)  # a blend of all three
Array([ 0.427, -0.146,  1.   , -0.427,  0.146], dtype=float32)
"""

import jax
import jax.numpy as jnp
import numpy as np

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"retrieve": (), "hebbian_weights": (), "energy": (), "async_sweep": ()}


def _plus_minus_one(x, name):
    """A float (..., D) array whose entries are +1 or -1 (checked when concrete: a NaN or a 0.5 would
    be turned into a sign in silence)."""
    if _checks.is_concrete(x) and x.size and not bool(np.all(np.abs(np.asarray(x)) == 1)):
        raise ValueError(f"{name} must hold only +1 and -1 (binary neurons), got other values "
                         f"(for instance {np.asarray(x)[np.abs(np.asarray(x)) != 1].ravel()[0]})")
    return x


def retrieve(patterns, query, beta):
    """The modern Hopfield update: ``patterns.T @ softmax(beta * patterns @ query)``, shape (D,).

    ``patterns`` (N, D) holds the stored patterns as rows (any real values), ``query`` (D,) is the
    state to update, ``beta`` > 0 the inverse temperature. One query; batch with :func:`jax.vmap`.
    """
    patterns = _checks.float_array(patterns, "patterns", ndim=2, what=" (N, D)")
    query = _checks.float_array(query, "query", ndim=1, what=" (D,)")
    beta = _checks.positive(beta, "beta")
    _checks.same_shape(query, "query", (patterns.shape[1],), expected_from="D from patterns (N, D)")
    return _retrieve(patterns, query, beta)


# The public functions check their input in Python, then hand it as it comes to one compiled core
# each: repeated calls of the same shapes reuse one program instead of dispatching op by op (and
# async_sweep's scan, traced afresh at every eager call, compiles once per shape).
@jax.jit
def _retrieve(patterns, query, beta):
    X = patterns.astype(jnp.float32)
    scores = beta * (X @ query.astype(jnp.float32))  # (N,)
    p = jax.nn.softmax(scores)  # subtracts the max: no overflow at a large beta
    return (p @ X).astype(jnp.result_type(patterns, query))  # (D,)


def hebbian_weights(patterns):
    """Hebb's rule: ``W = patterns.T @ patterns / D`` with a zero diagonal, (D, D), for ±1 patterns (N, D)."""
    patterns = _checks.float_array(patterns, "patterns", ndim=2, what=" (N, D)")
    _plus_minus_one(patterns, "patterns")
    return _hebbian_weights(patterns)


@jax.jit
def _hebbian_weights(patterns):
    N, D = patterns.shape
    W = patterns.T @ patterns / D  # (D, D)
    return W * (1.0 - jnp.eye(D, dtype=W.dtype))


def _weights_and_state(W, state):
    W = _checks.float_array(W, "W", ndim=2, what=" (D, D)")
    if W.shape[0] != W.shape[1]:
        raise ValueError(f"W must be square (D, D), got shape {W.shape}")
    _checks.check_no_nan(W, "W")
    state = _checks.float_array(state, "state", ndim=1, what=" (D,)")
    _checks.same_shape(state, "state", (W.shape[0],), expected_from="D from W (D, D)")
    _plus_minus_one(state, "state")
    return W, state


def energy(W, state):
    """The energy ``-1/2 state @ W @ state`` of a ±1 state (D,) under weights W (D, D)."""
    W, s = _weights_and_state(W, state)
    return _energy(W, s)


@jax.jit
def _energy(W, s):
    return -0.5 * s @ W @ s


def async_sweep(W, state, order=None):
    """One asynchronous sweep: neurons updated one at a time, in ``order`` (a permutation of
    ``range(D)``; index order by default), each set to the sign of its field (ties to +1).

    Returns the new state (D,) and the energy after each of the D single-neuron updates (D,). Under
    :func:`jax.jit` the checks on values (entries ±1, no NaN) cannot run; a NaN field then sets its
    neuron to -1, and the energies show NaN.
    """
    W, s = _weights_and_state(W, state)
    D = W.shape[0]
    if order is not None:
        order = _checks.int_array(order, "order", ndim=1, what=" (D,)")
        _checks.same_shape(order, "order", (D,), expected_from="D from W (D, D)")
        if _checks.is_concrete(order) and sorted(np.asarray(order).tolist()) != list(range(D)):
            raise ValueError(f"order must be a permutation of range({D}), got {np.asarray(order).tolist()}")
    return _async_sweep(W, s, order)


@jax.jit
def _async_sweep(W, s, order):
    if order is None:
        order = jnp.arange(W.shape[0])

    def step(s, i):
        h_i = W[i] @ s  # the field on neuron i
        s = s.at[i].set(jnp.where(h_i >= 0, 1.0, -1.0).astype(s.dtype))
        return s, -0.5 * s @ W @ s

    return jax.lax.scan(step, s, order)
