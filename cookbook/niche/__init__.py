"""Niche and unconventional networks
===================================

Ideas outside the mainstream that readers still look for, each with what it does better and what
it does worse than the layers of the other chapters.

Start with :doc:`hopfield`, the oldest: a memory that stores patterns in symmetric weights and
recalls one from a corrupted copy by rolling down an energy, one neuron at a time. Its modern,
continuous form recalls in a single step, and that step turns out to be attention with the stored
patterns as keys and values, a bridge back to the attention chapter.
"""

#: The recipes in reading order.
RECIPES = (
    "hopfield",
)
