"""Regularization
==============

A network with far more parameters than training examples can fit its training set exactly,
noise included; regularization is everything done to make it prefer the solutions that also work
on data it has not seen. This chapter collects the standard tools, each small enough to check by
hand: dropping random units (dropout) and whole residual branches (stochastic depth), shrinking the
weights towards zero (weight decay, with its Bayesian reading as a Gaussian prior), softening the
targets (label smoothing), training on blends of examples (mixup and CutMix), and stopping before
the validation loss turns up (early stopping).

Each one encodes an assumption about what a good solution looks like: redundant features, small
weights, calibrated rather than over-confident outputs, predictions that vary linearly between
examples. The recipes say which, so that the right tool can be chosen for the data at hand.
"""

#: The recipes in reading order.
RECIPES = (
    "dropout",
    "weight_decay",
    "label_smoothing",
    "mixup",
    "stochastic_depth",
    "early_stopping",
)
