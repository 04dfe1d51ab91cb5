"""Recurrent networks
==================

Networks that read a sequence one step at a time and carry a state from each step to the next. The
chapter starts with the plain Elman network and the reason it struggles with long sequences (its
gradients vanish or explode as they travel back in time), then builds the gated cells that fixed
this, the LSTM and the GRU, combines cells into bidirectional and stacked layers, puts two of them
together as an encoder-decoder that maps one sequence to another, and ends with truncated
backpropagation through time, the way long sequences are trained in practice.

Every recipe writes its time loop with :func:`jax.lax.scan` and works on one sequence of shape
``(T, D)``; batches come from :func:`jax.vmap`. The LSTM and GRU cells are checked step by step
against the cells of Flax.
"""

#: The recipes in reading order.
RECIPES = (
    "rnn",
    "lstm",
    "gru",
    "bidirectional",
    "seq2seq",
    "truncated_bptt",
)
