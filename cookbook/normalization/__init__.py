"""Normalization
=============

A deep network is a long product of layers, and the scale of the numbers flowing through it can
grow or shrink from layer to layer until training stalls or blows up. A normalisation layer
re-centres and re-scales its input with statistics measured on the fly, then hands back a learned
scale and shift, so that every layer sees numbers of a sensible size whatever the layers before it
did. The recipes of this chapter differ mainly in *which* numbers they pool to measure those
statistics: the examples of a batch (batch normalisation), the features of one example (layer and
RMS normalisation), groups of channels of one image (group and instance normalisation), or the
weights themselves instead of the activations (weight and spectral normalisation). The last recipe
pools nothing at all: Dynamic Tanh replaces LayerNorm in a transformer by a learned, element-wise
soft limiter, and asks what normalisation was really doing.

Throughout the chapter the features (channels) are on the **last axis**: a batch of images has
shape ``(B, H, W, C)``, a batch of token vectors ``(B, T, D)``. Every recipe computes its
statistics in float32, even for float16 or bfloat16 inputs, and casts the result back; each is
checked against the layer of the same kind in :mod:`flax.linen` (Dynamic Tanh, which flax does not have,
against its formula).
"""

#: The recipes in reading order.
RECIPES = (
    "batch_norm",
    "layer_norm",
    "rms_norm",
    "group_norm",
    "weight_norm",
    "dynamic_tanh",
)
