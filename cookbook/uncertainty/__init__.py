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
:doc:`bayes_by_backprop` learns a Gaussian for every weight by gradient descent on a variational
bound; on a linear model it finds the best factorised Gaussian exactly, and shows what factorising
costs (variances that are too small where weights are correlated).
:doc:`deep_ensembles` trains several networks from different random starts, each predicting a mean
and a variance, and reads the epistemic uncertainty from their disagreement. :doc:`mc_dropout` gets
a cheap imitation of that ensemble from one network trained with dropout, by keeping dropout on at
test time.

:doc:`mixture_density` changes what one network predicts rather than how many there are: a mixture
of Gaussians, for targets with several right answers, whose widths describe the data's noise but
not the model's ignorance. :doc:`evidential` asks one network to output a distribution over its own
predictions, read as evidence, in a single pass; the page measures where that uncertainty cannot be
trusted (far from the data, and between the two kinds in regression).

The four methods compete on the chapter's gap data below, each drawn as its predictive mean and two
standard deviations (the noise included). All four are sure on the data and unsure in the gap; each
of the three for networks has more than three times its on-data variance there, which the tests
check. They differ away from the data: the Gaussian process returns to its prior mean of zero, while
the ReLU networks carry on along their last trend, and how fast their bands widen there depends on
the method. The figure trains the three networks with the same settings as their tests, so that
when the book is built the runs are shared (``cookbook/_memo.py``).

.. plot::

   import jax
   import numpy as np
   from cookbook.foundations.mlp import init as mlp_init
   from cookbook.uncertainty import deep_ensembles, laplace, mc_dropout
   from cookbook.uncertainty._data import gap_data, target
   from cookbook.uncertainty.gaussian_process import posterior

   x, y = gap_data()
   grid = np.linspace(-3.0, 3.0, 121, dtype=np.float32)[:, None]
   bands = {}
   mean, cov = jax.jit(posterior)(x, y, grid, lengthscale=0.5, variance=1.0, noise=0.01)
   bands["Gaussian process"] = mean, np.diag(cov) + 0.01
   # The same training runs as the tests (shared through cookbook/_memo.py when the book is built).
   params, _ = laplace.fit_map(mlp_init(jax.random.key(0), (1, 32, 32, 1)), x, y, noise=0.01,
                               prior_precision=1.0, steps=500, learning_rate=0.02)
   H = laplace.posterior_precision(params, x, noise=0.01, prior_precision=1.0)
   bands["Laplace (last layer)"] = jax.jit(jax.vmap(lambda v: laplace.predictive(params, H, v, noise=0.01)))(grid)
   members = deep_ensembles.init(jax.random.key(0), (1, 32, 32, 2), num_members=5)
   members, _ = deep_ensembles.fit(members, x, y, steps=600)
   bands["deep ensemble (5)"] = jax.jit(jax.vmap(lambda v: deep_ensembles.predict(members, v)))(grid)
   net, _ = mc_dropout.fit(mc_dropout.init(jax.random.key(2), (1, 64, 64, 1)), x, y, jax.random.key(3),
                           rate=0.2, steps=600, learning_rate=0.01)
   keys = jax.random.split(jax.random.key(4), len(grid))
   bands["MC dropout (p = 0.2)"] = jax.jit(jax.vmap(lambda v, k: mc_dropout.predict(
       net, v, k, rate=0.2, num_samples=100, noise=0.01)))(grid, keys)
   fig, axes = plt.subplots(1, 4, figsize=(12, 3), sharey=True)
   for ax, (name, (m, v)) in zip(axes, bands.items()):
       m, s = np.asarray(m), np.sqrt(np.asarray(v))
       ax.axvspan(-1.0, 1.0, color="0.93", zorder=0)
       ax.fill_between(grid[:, 0], m - 2 * s, m + 2 * s, alpha=0.3)
       ax.plot(grid[:, 0], m)
       ax.plot(grid[:, 0], target(grid[:, 0]), "k--", lw=1)
       ax.plot(x[:, 0], y, "k.", ms=3)
       ax.set(title=name, xlabel="x", ylim=(-3, 3))
   fig.tight_layout()

The last two pages check uncertainty rather than produce it. :doc:`calibration` asks whether a
classifier's probabilities mean what they say (of its 80 % answers, are 80 % right?) and repairs
them with one temperature. :doc:`conformal` asks nothing of the model at all: held-out errors turn
any point predictor into intervals that cover the truth with a chosen probability, assuming only
that new data comes the way the old did.

Every method is written from scratch in JAX and tested against an exact answer where one exists (a
Gaussian process, a linear-Gaussian posterior) and against the library that users already trust.
"""

#: The recipes in reading order.
RECIPES = ("gaussian_process", "laplace", "sgmcmc", "bayes_by_backprop", "deep_ensembles", "mc_dropout",
           "mixture_density", "evidential", "calibration", "conformal")
