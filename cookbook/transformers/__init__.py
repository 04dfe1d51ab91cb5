"""Transformers
============

A transformer is a stack of identical blocks, each made of the attention of the previous chapter, a
small multilayer perceptron applied to every position, residual connections and layer
normalisation. This chapter assembles those parts into the models built from them.

The :doc:`transformer_block` comes first, in its original post-norm form and in the pre-norm form
that trains more easily at depth; the :doc:`modern_block` is the block of today's open language models,
the same idea with five fixes for training at scale. Stacked under a causal mask it becomes :doc:`gpt`, a language
model that writes one token at a time with a key-value cache; :doc:`sampling` turns its logits into
tokens (greedy, temperature, top-k and nucleus), and :doc:`beam_search` searches for the most
probable continuation with a shortlist of candidates. The :doc:`encoder_decoder` is the original
transformer, which translates by reading the whole source with an encoder and writing the target
with a decoder that attends to it. The :doc:`vision_transformer` reads an image as a
sequence of patches, and the :doc:`mixture_of_experts` replaces the perceptron by many experts of
which each token visits a few.

Shapes follow the attention chapter: ``T`` query positions, ``S`` key positions, ``H`` heads and
``D`` features per head, with ``d_model = H * D`` the width of the residual stream. Every function is
written for one sequence (or one image) and batched with :func:`jax.vmap`.
"""

#: The recipes in reading order.
RECIPES = (
    "transformer_block",
    "modern_block",
    "gpt",
    "sampling",
    "beam_search",
    "encoder_decoder",
    "vision_transformer",
    "mixture_of_experts",
)
