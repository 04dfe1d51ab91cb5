r"""Bidirectional and stacked recurrent layers
==========================================

Run one recurrent layer forwards and another backwards over the same sequence and concatenate
their states, so that every position sees its whole context; stack such layers for depth. Reach
for it whenever the whole input is available before any output is needed (tagging, encoding).

Equation
--------

.. math::

   \overrightarrow{h}_t = \operatorname{cell}_{\rightarrow}\left(\overrightarrow{h}_{t-1}, x_t\right),
   \qquad
   \overleftarrow{h}_t = \operatorname{cell}_{\leftarrow}\left(\overleftarrow{h}_{t+1}, x_t\right),
   \qquad
   y_t = \left[\overrightarrow{h}_t ; \overleftarrow{h}_t\right]

.. math::

   y^{(0)}_t = x_t, \qquad
   y^{(l)}_{1:T} = \operatorname{layer}_l\left(y^{(l-1)}_{1:T}\right), \quad l = 1, \dots, L

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_t`
     - input at step :math:`t`
     - a row of ``xs``
     - ``(D,)``
   * - :math:`\overrightarrow{h}_t`
     - state of the forward layer after reading :math:`x_1, \dots, x_t`
     - ``forward``, row :math:`t` of ``layer(params["forward"], xs)``
     - ``(H,)``
   * - :math:`\overleftarrow{h}_t`
     - state of the backward layer after reading :math:`x_T, \dots, x_t`
     - ``backward``, row :math:`t` of ``layer(params["backward"], xs[::-1])[::-1]``
     - ``(H,)``
   * - :math:`y_t`
     - output: the two states concatenated
     - a row of ``bidirectional(layer, params, xs)``
     - ``(2H,)``
   * - :math:`y^{(l)}_{1:T}`
     - outputs of layer :math:`l` of a stack; :math:`y^{(0)}` is the input
     - ``stacked(layer, params, xs)`` for :math:`l = L`
     - ``(T, 2H)``
   * - :math:`t`, :math:`T`
     - time step; sequence length
     - the row index of ``xs``; the number of its rows
     - scalar
   * - :math:`l`, :math:`L`
     - layer index; number of layers
     - the loop over ``layer_params`` in ``stacked``; the length of its ``params``
     - scalar

Explanation
-----------

A recurrent layer's state :math:`h_t` summarises only the past :math:`x_1, \dots, x_t`. To tag
the word at position :math:`t` of a sentence the future matters as much, and the fix of
:footcite:t:`schuster1997bidirectional` is to run a second, independent layer from the end of the
sequence to its start and give each position both states. The backward layer is the forward
layer's code applied to the reversed sequence, with its outputs reversed back into place, so
:math:`\overleftarrow{h}_t` lines up with :math:`x_t`. The two directions share no parameters and do
not interact within a layer; gradients from :math:`y_t` flow to earlier inputs through the forward
layer and to later inputs through the backward one.

The functions here take the layer as an argument, ``layer(params, xs) -> hs``, so the
``apply`` of :doc:`rnn`, :doc:`lstm` or :doc:`gru` all fit (a cell that needs a different initial
state can be adapted with ``functools.partial``). ``init`` makes the two parameter sets with the
matching ``init`` function.

**Stacking.** Feeding the output sequence of one recurrent layer to the next, as in
:footcite:t:`graves2013speech`, gives each step a deeper function of its input and lets upper
layers work at a coarser level of abstraction. With bidirectional layers, layer :math:`l` reads
the :math:`2H` features of layer :math:`l-1`, so only the first layer has :math:`D` inputs.
``stacked`` threads the sequence through a list of layer parameters; any of them can be a
bidirectional pair, which is the usual deep bidirectional encoder.

.. admonition:: Intuition

   It is how a careful reader annotates a sentence: one pass from the left, one from the right,
   and each word gets notes from both. In "she sat on the bank of the river", the word *bank* is
   resolved only by what comes after it; the forward reading alone would have had to guess.

*Numerical traps.* None beyond those of the cells; the reversal is an index permutation. Padding
matters, though: when sequences of different lengths are padded to a common :math:`T`, the
backward layer would start reading padding; reverse each sequence within its own length instead
(or run it one sequence at a time with :func:`jax.vmap`, as here, on unpadded data).

Inductive bias
--------------

The output at every position may depend on the whole sequence, so the model cannot be used to
predict the future (a bidirectional language model would see the word it is asked to predict); it
assumes the whole input is known before any output is produced. Within each direction the
recurrent assumptions (one rule at every step, a fixed-size summary) still hold.

Example
-------

A bidirectional GRU over 7 steps of 3 features, then a stack of two bidirectional LSTM layers:

>>> import jax, jax.numpy as jnp
>>> from cookbook.recurrent import gru, lstm
>>> from cookbook.recurrent.bidirectional import init, bidirectional, stacked
>>> k_p, k_s, k_x = jax.random.split(jax.random.key(0), 3)
>>> xs = jax.random.normal(k_x, (7, 3))
>>> params = init(k_p, gru.init, 3, 5)
>>> ys = bidirectional(gru.apply, params, xs)
>>> ys.shape
(7, 10)
>>> bool(jnp.allclose(ys[:, :5], gru.apply(params["forward"], xs)))
True
>>> k_1, k_2 = jax.random.split(k_s)
>>> layers = [init(k_1, lstm.init, 3, 5), init(k_2, lstm.init, 10, 5)]
>>> stacked(lstm.apply, layers, xs).shape
(7, 10)
"""

import functools

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {"bidirectional": ("layer",), "stacked": ("layer",)}


def init(key, layer_init, D, H):
    """Parameters ``{"forward": ..., "backward": ...}`` of two layers made by ``layer_init(key, D, H)``."""
    k_f, k_b = jax.random.split(key)
    return {"forward": layer_init(k_f, D, H), "backward": layer_init(k_b, D, H)}


def bidirectional(layer, params, xs):
    """Forward and backward states of ``xs`` (T, D), concatenated per step: shape (T, 2H).

    ``layer(params, xs) -> hs`` runs one direction, such as ``rnn.apply`` or ``lstm.apply``.
    """
    xs = _checks.float_array(xs, "xs", ndim=2, what=" (T, D)")
    if not isinstance(params, dict) or set(params) != {"forward", "backward"}:
        raise ValueError(f"params must have the keys 'forward' and 'backward', got {sorted(params) if isinstance(params, dict) else type(params).__name__}")
    return _bidirectional(layer, params, xs)


# One compiled program per layer function and shapes: called eagerly, the layer's scan would trace
# and compile again on every call (its step is a new closure each time).
@functools.partial(jax.jit, static_argnums=0)
def _bidirectional(layer, params, xs):
    forward = layer(params["forward"], xs)  # (T, H)
    backward = layer(params["backward"], xs[::-1])[::-1]  # (T, H), realigned with xs
    return jnp.concatenate([forward, backward], axis=-1)  # (T, 2H)


def stacked(layer, params, xs):
    """The output of a stack of layers, the first reading ``xs`` (T, D) and each the previous one's.

    ``params`` is a list with one entry per layer: a bidirectional pair (a dict with keys
    ``"forward"`` and ``"backward"``) or the parameters of a single forward layer.
    """
    if len(params) == 0:
        raise ValueError("params must hold at least one layer, got an empty list")
    return _stacked(layer, list(params), _checks.float_array(xs, "xs", ndim=2, what=" (T, D)"))


@functools.partial(jax.jit, static_argnums=0)
def _stacked(layer, params, ys):
    for layer_params in params:  # over layers, not time: each layer is a different function
        if isinstance(layer_params, dict) and set(layer_params) == {"forward", "backward"}:
            ys = bidirectional(layer, layer_params, ys)
        else:
            ys = layer(layer_params, ys)
    return ys
