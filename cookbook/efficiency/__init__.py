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
channel that one scale per tensor does not, and when a zero point pays off.
"""

#: The recipes in reading order.
RECIPES = (
    "lora",
    "quantization",
)
