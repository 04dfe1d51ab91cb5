r"""Theory you can run
==================

The theory of deep learning makes predictions about networks that nobody has trained yet: what a
wide network computes with random weights, how its signal behaves through depth, what gradient
descent does to it. Each page of this chapter states one such result, and its code measures the
quantity on real networks with sampled weights, so that the prediction and the measurement stand side
by side, on the page's figure and in its tests, within a tolerance set by the number of samples.

Read it in order. :doc:`universal_approximation` comes first, as the oldest result and a warning:
one hidden layer can approximate anything on an interval, and the ReLU proof says how wide it must
be, but nothing about training or about what lies outside the interval.

Three pages take the limit of infinite width. :doc:`nngp` shows that a network with random weights
and wide layers is a Gaussian process, whose kernel follows from a recursion layer by layer, in
closed form for the ReLU. :doc:`ntk` asks what gradient descent does to such a network and finds, in
the same limit, a second kernel built on the first that stays fixed during training, so that a wide
network learns like kernel regression: a prediction of a trained network made before training it.
:doc:`criticality` follows the first kernel through depth and finds the initialisation at which
neither the signal nor a small change of the input explodes or dies, the edge of chaos; for the ReLU
it is the He initialisation that the NNGP page's recursion already keeps fixed.

Two pages leave the limit. :doc:`finite_width` measures how far a real network is from it: its
preactivations are heavier-tailed than a Gaussian by an amount that grows with depth over width,
:math:`L/n`, exactly as a recursion predicts for the ReLU. The wide limits describe networks that do
not learn features; :doc:`mup` scales each layer's initialisation and learning rate with the width
so that features are learnt at every width, and the best learning rate of a narrow network is then
the best one for a wide network too.

The last two pages are about generalisation. :doc:`double_descent` shows the test error of least
squares rising to a peak where the model has just enough features to fit every sample and falling
again beyond it, so that the largest model is the best; its exact formula is checked against
hundreds of fits. :doc:`grokking` shows a small network that memorises a table of modular sums at
once and, thanks to weight decay, replaces the table by a circuit of waves hundreds of steps later,
when its validation accuracy jumps from chance to above 99 %.

:doc:`scaling_laws` closes the chapter with the empirical law that planned the large models: loss
falls as a power of the parameters, the data and the compute, down to a floor that no model
crosses, and a fixed compute budget is best split between a larger model and more data in
proportions that follow from the fitted law. The page fits that law to a sweep of small models
trained in one compiled program and reads back the exponent that their data were built with.

The chapter's second reference is *The Principles of Deep Learning Theory* by Roberts and Yaida
(Cambridge University Press, 2022), whose notation the pages follow where they can.
"""

#: The recipes in reading order.
RECIPES = ("universal_approximation", "nngp", "ntk", "criticality", "finite_width", "mup", "double_descent",
           "grokking", "scaling_laws")
