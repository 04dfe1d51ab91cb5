"""Attention
=========

Attention lets every position of a sequence gather information from every other position, weighted
by how well a *query* it asks matches the *key* each other position offers. It is the layer that
transformers are made of, and this chapter builds it from the single scaled dot product up.

The first five recipes are the layer itself: one head (:doc:`scaled_dot_product`), several heads
with their projections (:doc:`multi_head`), and two ways to shrink the memory kept while generating
text: sharing keys and values between heads (:doc:`grouped_query`), or compressing them into one
small latent per token from which every head reads its own (:doc:`multi_head_latent`). :doc:`differential` subtracts
one attention map from another so that attention spread over irrelevant tokens cancels. Attention by itself
sees a set, not a sequence, so the next three recipes give it a sense of order: positions added to
the tokens (:doc:`positional_encoding`), rotations of queries and keys (:doc:`rope`) and linear
distance biases (:doc:`alibi`). The last three make it cheaper: the same numbers computed in blocks,
without ever holding the full score matrix (:doc:`memory_efficient`); a window of recent positions, so
that the cost and the cache stop growing with the sequence (:doc:`sliding_window`); and a kernel in
place of the softmax, so that the cost grows linearly with the sequence (:doc:`linear_attention`).

Shapes follow one convention throughout: ``T`` queries, ``S`` keys, ``H`` heads and ``D`` features
per head; every function is written for one example and batched with :func:`jax.vmap`.
"""

#: The recipes in reading order.
RECIPES = (
    "scaled_dot_product",
    "multi_head",
    "grouped_query",
    "multi_head_latent",
    "differential",
    "positional_encoding",
    "rope",
    "alibi",
    "memory_efficient",
    "sliding_window",
    "linear_attention",
)
