"""Efficient deep learning
=======================

A trained network is expensive three times over: to fine-tune (every weight needs a gradient and an
optimiser's state), to store (every weight is a 32- or 16-bit number) and to run. This chapter
collects what practitioners do about each, and every page measures what it saves (parameters,
bytes) against what it costs in accuracy.

Read it in order. :doc:`lora` makes fine-tuning cheap: the pretrained weights stay frozen and a
thin low-rank correction beside them is trained instead, then merged in so that inference costs
nothing extra.
"""

#: The recipes in reading order.
RECIPES = (
    "lora",
)
