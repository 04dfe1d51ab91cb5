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
QLoRA, which trains LoRA adapters on top of such a frozen 4-bit model.
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
