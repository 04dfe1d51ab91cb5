"""Efficient deep learning
=======================

A trained network is expensive three times over: to fine-tune (every weight needs a gradient and an
optimiser's state), to store (every weight is a 32- or 16-bit number) and to run. This chapter
collects what practitioners do about each, and every page measures what it saves (parameters,
bytes) against what it costs in accuracy.

Read it in order. :doc:`lora` makes fine-tuning cheap: the pretrained weights stay frozen and a
thin low-rank correction beside them is trained instead, then merged in so that inference costs
nothing extra. :doc:`quantization` makes a model cheap to store and to move through memory:
each weight becomes an 8-bit (or smaller) integer and a group of them shares one floating-point
scale; the page measures the half-step error bound, why one scale per channel survives an outlier
channel that one scale per tensor does not, and when a zero point pays off. :doc:`nf4` goes down to
4 bits with levels that are not evenly spaced but placed at quantiles of the normal distribution,
which trained weights roughly follow, one scale per block of 64 weights: the storage format of
QLoRA, which trains LoRA adapters on top of such a frozen 4-bit model. :doc:`gptq` quantises a trained
layer one input row at a time and moves the rounding error of each row onto the rows still to come,
using the layer's inputs to know which directions matter, the optimal brain surgeon's idea at the
scale of a language model.

:doc:`distillation` and :doc:`pruning` make the model itself smaller: a small student trained on a
large teacher's softened predictions learns what the labels alone do not say, which wrong answers
are nearly right; and most weights of a trained network can be set to zero, by magnitude, in
hardware-friendly groups of two in four, or weighted by the size of their inputs, if the network is
retrained or the mask found early.

The last two pages make running and training faster without changing the result.
:doc:`speculative_decoding` lets a cheap draft model propose several tokens that the large model
checks in one pass, and a rejection rule makes the output distribution exactly the large model's.
:doc:`mixed_precision` computes in 16-bit floats while keeping 32-bit master weights, and scales the
loss so that small gradients do not vanish in float16's narrow range.
"""

#: The recipes in reading order.
RECIPES = (
    "lora",
    "quantization",
    "nf4",
    "gptq",
    "distillation",
    "pruning",
    "speculative_decoding",
    "mixed_precision",
)
