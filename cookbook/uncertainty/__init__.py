"""Probabilistic deep learning and uncertainty
=============================================

A network trained by least squares or cross-entropy answers every question with the same
confidence, whether the input looks like its training data or like nothing it has ever seen. This
chapter asks how a model can say how sure it is, and how to check that it is right to be. Two
questions run through it: where does the uncertainty come from (noise in the data, *aleatoric*,
which more data does not remove, or ignorance of the function, *epistemic*, which it does), and is
the stated uncertainty honest (do 90 % intervals contain the truth 90 % of the time)?

Read it in order. :doc:`gaussian_process` is the exact answer for a small regression problem: a
prior over functions, conditioned on the data in closed form, certain near the data and uncertain
away from it. It is the reference that the methods for networks are measured against, on the
chapter's one-dimensional data with a gap in the inputs: an honest method grows unsure in the gap.
:doc:`laplace` keeps one trained network and fits a Gaussian to the posterior over its weights
(the last layer's, in the cheap form), with the curvature of the loss as precision; for a model
linear in its weights it is exact. :doc:`sgmcmc` samples the posterior instead of approximating it by
a Gaussian: minibatch gradient descent with the right amount of noise added wanders over the
posterior, checked on Bayesian linear regression against the exact answer and against NUTS.
:doc:`deep_ensembles` trains several networks from different random starts, each predicting a mean
and a variance, and reads the epistemic uncertainty from their disagreement. :doc:`mc_dropout` gets
a cheap imitation of that ensemble from one network trained with dropout, by keeping dropout on at
test time.

The last two pages check uncertainty rather than produce it. :doc:`calibration` asks whether a
classifier's probabilities mean what they say (of its 80 % answers, are 80 % right?) and repairs
them with one temperature. :doc:`conformal` asks nothing of the model at all: held-out errors turn
any point predictor into intervals that cover the truth with a chosen probability, assuming only
that new data comes the way the old did.

Every method is written from scratch in JAX and tested against an exact answer where one exists (a
Gaussian process, a linear-Gaussian posterior) and against the library that users already trust.
"""

#: The recipes in reading order.
RECIPES = ("gaussian_process", "laplace", "sgmcmc", "deep_ensembles", "mc_dropout", "calibration", "conformal")
