r"""Dilated causal convolutions
===========================

Convolve a sequence only with its past, and spread the kernel's taps further apart in each layer, so
that a stack of :math:`L` layers sees :math:`2^L` steps back with :math:`L` small kernels: WaveNet's
way to model audio sample by sample, and a fast alternative to recurrence for long sequences.

Equation
--------

.. math::

   y_t = \sum_{k=0}^{K-1} x_{t - d k}\, W_k \qquad (x_{t} = 0 \text{ for } t < 0)

   R = 1 + (K - 1) \sum_{\ell=1}^{L} d_\ell, \qquad d_\ell = 2^{\ell - 1} \;\Rightarrow\; R = 1 + (K-1)(2^L - 1)

   z = \tanh(W_f * h) \odot \sigma(W_g * h), \qquad h' = h + z\, W_r, \qquad s = s + z\, W_s

Legend
------

.. list-table::
   :header-rows: 1

   * - Symbol
     - Meaning
     - In code
     - Shape
   * - :math:`x_t`, :math:`y_t`
     - the input and output at time :math:`t`
     - rows of ``x`` and of the result
     - ``(T, C_in)``, ``(T, C_out)``
   * - :math:`W_k`
     - the kernel's tap :math:`k`, applied :math:`d k` steps back
     - ``w[k]``
     - ``(C_in, C_out)``
   * - :math:`K`
     - the number of taps
     - ``K``
     - integer
   * - :math:`d`, :math:`d_\ell`
     - the dilation: the gap between taps; layer :math:`\ell`'s dilation
     - ``dilation``; ``dilations``
     - integers
   * - :math:`L`, :math:`\ell`
     - the number of layers; a layer's index
     - ``len(dilations)``; the loop over ``params["blocks"]``
     - integers
   * - :math:`R`
     - the receptive field: how many steps of the input one output depends on
     - ``receptive_field``'s result
     - integer
   * - :math:`h`, :math:`h'`
     - a residual block's input and output
     - ``h``
     - ``(T, C)``
   * - :math:`W_f * h`, :math:`W_g * h`
     - the filter and gate convolutions of a block
     - ``filter_w``, ``gate_w`` applied with ``causal_conv``
     - ``(T, C)``
   * - :math:`z`, :math:`\sigma`
     - the gated activation; the logistic sigmoid
     - ``z``; ``jax.nn.sigmoid``
     - ``(T, C)``
   * - :math:`W_r`, :math:`W_s`, :math:`s`
     - the residual and skip projections; the running sum of skips
     - ``residual_w``, ``skip_w``; ``skip``
     - ``(C, C)``; ``(T, C)``

Explanation
-----------

A convolution over time is *causal* when an output depends only on the present and the past: pad
:math:`d (K - 1)` zeros on the left and none on the right. Causality is what lets a model be
trained on whole sequences at once (every position predicts its next sample in parallel) and then
generate one sample at a time, as a recurrent network would, but without a recurrence in training.

A causal stack of ordinary convolutions sees :math:`1 + L (K - 1)` steps: far too few for audio at
16 000 samples a second. Dilation spreads a kernel's taps :math:`d` steps apart; doubling
:math:`d` from layer to layer, as WaveNet :footcite:`oord2016wavenet` does, makes the receptive field
grow exponentially with depth, and every input step inside it is still reached by exactly one path
per output when :math:`K = 2` (the taps tile the past like the digits of a binary number). Ten
layers with :math:`K = 2` see 1024 steps back. The tests measure the receptive field from the
gradient and find the formula exactly.

WaveNet wraps each dilated convolution in a gated residual block: a tanh "filter" multiplied by a
sigmoid "gate" (as in LSTMs, :doc:`../recurrent/lstm`), a residual connection so that deep stacks
train, and a skip connection from every block to the output, which sums what each time scale found.

.. admonition:: Intuition

   Think of a family tree. Asking only your parents about the past reaches back one generation per
   question; asking your parents, then the parents' parents, then theirs, each question reaching
   twice as far, spans centuries in a dozen questions, while everyone in between is still
   accounted for exactly once.

Inductive bias
--------------

The layer assumes that the relevant past lies within a fixed window (the receptive field) and that
the same local pattern matters wherever it occurs in time (translation equivariance). Dilations
assume that structure exists at every scale, so that a coarse view of the distant past combined
with a fine view of the recent past suffices. Anything further back than :math:`R` is invisible.

Example
-------

A delay of 3 steps is a causal convolution with one tap at :math:`k = 3` (or one tap at :math:`k = 1`
with dilation 3); five layers with :math:`K = 2` and dilations 1 to 16 see 32 steps:

>>> import jax, jax.numpy as jnp
>>> from cookbook.convolution.dilated_causal import causal_conv, receptive_field, wavenet_apply, wavenet_init
>>> x = jnp.arange(1.0, 8.0)[:, None]
>>> w = jnp.zeros((2, 1, 1)).at[1].set(1.0)
>>> causal_conv(x, w, dilation=3)[:, 0]
Array([0., 0., 0., 1., 2., 3., 4.], dtype=float32)
>>> receptive_field(2, (1, 2, 4, 8, 16)), receptive_field(2, (1, 1, 1, 1, 1))
(32, 6)
>>> params = wavenet_init(jax.random.key(0), in_channels=1, channels=8, kernel_size=2, dilations=(1, 2, 4))
>>> wavenet_apply(params, jax.random.normal(jax.random.key(1), (20, 1)), (1, 2, 4)).shape
(20, 1)
"""

import functools
import math

import jax
import jax.numpy as jnp

from cookbook import _checks

#: Functions that compile under :func:`jax.jit`, with the names of their static arguments.
JIT = {
    "causal_conv": ("dilation",),
    "receptive_field": ("kernel_size", "dilations"),
    "wavenet_init": ("in_channels", "channels", "kernel_size", "dilations"),
    "wavenet_apply": ("dilations",),
}


def causal_conv(x, w, dilation=1):
    """``y_t = Σ_k x_{t - dilation k} w[k]`` for x (T, C_in) and w (K, C_in, C_out); returns (T, C_out)."""
    x = _checks.float_array(x, "x", ndim=2, what=" (T, C_in)")
    w = _checks.float_array(w, "w", ndim=3, what=" (K, C_in, C_out)")
    _checks.same_shape(w, "w", (w.shape[0], x.shape[1], w.shape[2]), expected_from="C_in from x")
    return _causal_conv(x, w, _checks.size(dilation, "dilation", minimum=1))


@functools.partial(jax.jit, static_argnums=2)  # one compiled program per shape, not one per operation
def _causal_conv(x, w, dilation):
    T = x.shape[0]
    K = w.shape[0]
    padded = jnp.pad(x, ((dilation * (K - 1), 0), (0, 0)))  # zeros before the start: the past only
    y = jnp.zeros((T, w.shape[2]), jnp.result_type(x, w))
    for k in range(K):
        start = dilation * (K - 1 - k)  # x_{t - d k} sits at row t + d (K - 1 - k) of the padded input
        y = y + padded[start : start + T] @ w[k]
    return y


def receptive_field(kernel_size, dilations):
    """``1 + (kernel_size - 1) · Σ dilations``: the steps of input one output of the stack depends on."""
    _checks.size(kernel_size, "kernel_size", minimum=1)
    if not isinstance(dilations, tuple) or not dilations:
        raise TypeError(f"dilations must be a non-empty tuple of ints, got {dilations!r}")
    for d in dilations:
        _checks.size(d, "dilations[...]", minimum=1)
    return 1 + (kernel_size - 1) * sum(dilations)


def wavenet_init(key, in_channels, channels, kernel_size, dilations):
    """An input projection, one gated residual block per dilation, and an output head back to
    ``in_channels`` (a regression of the next sample, say)."""
    receptive_field(kernel_size, dilations)
    _checks.size(in_channels, "in_channels", minimum=1)
    _checks.size(channels, "channels", minimum=1)
    k_in, k_out, *k_blocks = jax.random.split(key, 2 + len(dilations))
    dense = lambda k, shape, fan_in: jax.random.normal(k, shape) / math.sqrt(fan_in)
    blocks = []
    for k, d in zip(k_blocks, dilations):
        k_f, k_g, k_r, k_s = jax.random.split(k, 4)
        blocks.append({
            "filter_w": dense(k_f, (kernel_size, channels, channels), kernel_size * channels),
            "gate_w": dense(k_g, (kernel_size, channels, channels), kernel_size * channels),
            "residual_w": dense(k_r, (channels, channels), channels),
            "skip_w": dense(k_s, (channels, channels), channels),
        })
    return {"in_w": dense(k_in, (in_channels, channels), in_channels), "blocks": blocks,
            "out_w": dense(k_out, (channels, in_channels), channels)}


def _check_params(params, dilations):
    """``in_channels`` of a stack from ``wavenet_init``, with every weight's shape checked."""
    receptive_field(2, dilations)
    in_w = _checks.float_array(params["in_w"], 'params["in_w"]', ndim=2, what=" (in_channels, channels)")
    C_in, C = in_w.shape
    _checks.same_shape(_checks.float_array(params["out_w"], 'params["out_w"]'), 'params["out_w"]', (C, C_in),
                       expected_from="channels and in_channels from in_w")
    if len(dilations) != len(params["blocks"]):
        raise ValueError(f"dilations must give one dilation per block ({len(params['blocks'])}), got {dilations}")
    K = jnp.shape(params["blocks"][0]["filter_w"])[0] if params["blocks"] else 1
    for i, block in enumerate(params["blocks"]):
        for name, shape in [("filter_w", (K, C, C)), ("gate_w", (K, C, C)), ("residual_w", (C, C)), ("skip_w", (C, C))]:
            where = f'params["blocks"][{i}]["{name}"]'
            _checks.same_shape(_checks.float_array(block[name], where), where, shape,
                               expected_from="K from the first block, channels from in_w")
    return C_in


def wavenet_apply(params, x, dilations):
    """The causal WaveNet stack on x (T, in_channels), one block per dilation (the ``dilations`` it was
    built with); returns (T, in_channels)."""
    in_channels = _check_params(params, dilations)
    x = _checks.float_array(x, "x", ndim=2, what=" (T, in_channels)")
    _checks.same_shape(x, "x", (x.shape[0], in_channels), expected_from="in_channels from params")
    return _wavenet_apply(params, x, dilations)


@functools.partial(jax.jit, static_argnums=2)  # the checks above run in Python; the stack is one program
def _wavenet_apply(params, x, dilations):
    h = x @ params["in_w"]
    skip = jnp.zeros_like(h)
    for block, d in zip(params["blocks"], dilations):
        z = jnp.tanh(_causal_conv(h, block["filter_w"], d)) * jax.nn.sigmoid(_causal_conv(h, block["gate_w"], d))
        h = h + z @ block["residual_w"]
        skip = skip + z @ block["skip_w"]
    return jax.nn.relu(skip) @ params["out_w"]
