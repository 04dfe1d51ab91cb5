"""Niche and unconventional networks
===================================

Ideas outside the mainstream that readers still look for, each with what it does better and what
it does worse than the layers of the other chapters.

Start with :doc:`hopfield`, the oldest: a memory that stores patterns in symmetric weights and
recalls one from a corrupted copy by rolling down an energy, one neuron at a time. Its modern,
continuous form recalls in a single step, and that step turns out to be attention with the stored
patterns as keys and values, a bridge back to the attention chapter.

:doc:`kan` questions the other fixed part of a network, its activation function: a
Kolmogorov–Arnold network puts a learnable one-dimensional spline on every edge and only adds at
the nodes. It builds the B-spline basis from scratch, checks it against SciPy, and fits a smooth
function of two variables by training on a coarse grid and then on a finer one.

:doc:`nerf` changes the input instead: coordinates are passed through sinusoids of random
frequencies, so that a plain ReLU network can fit fine detail, and a field of densities and colours
is rendered along a ray as a differentiable weighted sum, the two ingredients of neural radiance
fields. Like the spline edges of a KAN, the features fix in advance the scale of detail the network
can show.

:doc:`capsules` replace the single number a neuron outputs by a vector whose length says whether
a part is present and whose direction says how it is posed, and route each part to the whole that
agrees with it, by a few rounds of voting instead of max pooling. :doc:`hypernetworks` let one network
write the weights of another from a description of the task, so that a new task is a new input
rather than a new training run.

Three pages make time continuous. :doc:`neural_ode` defines a layer by a differential equation that
a solver integrates, and trains it with the adjoint method, which computes gradients by solving a
second equation backwards instead of storing every step. :doc:`liquid` gives each neuron a time
constant that depends on its input, integrated by a solver that stays stable at any step size, and
its closed-form variant that needs no solver at all. :doc:`spiking` neurons integrate their input
until a threshold and then fire; the spike has no useful derivative, and a smooth stand-in used
only in the backward pass lets gradient descent train them anyway.

:doc:`echo_state` ends the chapter with the cheapest recurrent network to train: a fixed random
reservoir, scaled so that it forgets its starting state, and a linear readout fitted in closed form.
"""

#: The recipes in reading order.
RECIPES = (
    "hopfield",
    "kan",
    "nerf",
    "capsules",
    "hypernetworks",
    "neural_ode",
    "liquid",
    "spiking",
    "echo_state",
)
