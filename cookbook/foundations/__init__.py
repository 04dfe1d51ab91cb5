"""Foundations
===========

The handful of ideas that every later chapter stands on: fitting a linear model, turning scores into
probabilities, measuring error, bending lines with nonlinearities, stacking layers into a network,
computing its gradients, starting it off well, and training it. Each recipe here is small enough to
check by hand, and each is checked against the library that practitioners already trust.

Read the recipes in order the first time: each uses the ones before it.
"""

#: The recipes in reading order.
RECIPES = (
    "linear_regression",
    "softmax_regression",
    "losses",
    "activations",
    "mlp",
    "backpropagation",
    "initialization",
    "training_loop",
)
