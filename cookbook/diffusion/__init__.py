"""Diffusion and flow models
=========================

A generative model turns noise into data. The models of this chapter do it gradually: they learn
how data is destroyed by noise, one small step at a time, and generate by running the destruction
backwards. The recipes train the same small network on the same two moons drawn in the plane
(:doc:`score_matching` on a Gaussian mixture, whose score is known), so that what differs between
them is only the idea, and each checks its formulas against their closed
forms (a well-known annotated implementation of DDPM carried a wrong square root for a long time).

Read it in order. :doc:`ddpm` is the foundation: a fixed forward process that adds Gaussian noise,
its closed form at any step, a network trained to predict the noise that was added, and ancestral
sampling that removes it again, one of a hundred steps at a time. :doc:`ddim` keeps the trained
network and changes only the sampler: a family of updates, indexed by the amount of fresh noise, of
which the deterministic member jumps along a few of the steps and reaches the same quality in a
fraction of the network evaluations. :doc:`score_matching` explains why both work: predicting the
noise is learning the score, the gradient of the log-density of noisy data; Langevin dynamics
samples with it, and in continuous time DDPM becomes a stochastic differential equation whose
probability-flow ODE the deterministic DDIM update discretises. It is the one page whose test
knows the answer everywhere, the exact score of a Gaussian mixture. :doc:`edm` then separates the
choices that earlier papers tied together: a parameterisation by the noise level alone, a network
whose inputs and targets are scaled to unit variance at every level, and Heun's second-order
method on a schedule that crowds its steps at low noise. :doc:`guidance` steers any of these
models towards a condition, with a classifier's gradient or by extrapolating from an unconditional
prediction, and draws the trade-off between fidelity and diversity. :doc:`flow_matching` drops the
noise schedule altogether:
noise and data are joined by straight lines, a network regresses the velocity along them, and
sampling integrates the learned velocity field as an ordinary differential equation.
:doc:`rectified_flow` retrains that field on the pairs of noise and sample it produces itself,
whose paths no longer cross, and straightens the paths until one Euler step is enough.
:doc:`consistency_models` reach one-step generation from the other side: a network distilled from
the sampler of :doc:`edm` maps any point of a trajectory to its end.

Two pages leave the plane. :doc:`diffusion_transformer` replaces the small network by the transformer
that large image models use, conditioned on the noise level through layer normalisations whose
gates start at zero, so that every block begins as the identity; it learns to denoise digits cut into
patches. :doc:`masked_diffusion` carries the idea to text, where there is no Gaussian noise to add:
tokens are replaced one by one by a mask, and the loss becomes a cross-entropy on the masked
positions, weighted by how much was masked.

The samplers compete on one task in :doc:`ddim`, whose figure draws the squared maximum mean
discrepancy of 1000 samples to the data against the number of network evaluations: the
deterministic DDIM update needs 20 evaluations to come within twice the discrepancy between two
draws of the data, the ancestral sampler of DDPM 50, and Euler steps on the flow-matching field 10.

Points are rows of a ``(B, D)`` array; steps are 0-based indices into the schedule arrays, with the
data before the first step (:math:`\\bar\\alpha = 1`); flow time runs from 0 at the noise to 1 at
the data.
"""

#: The recipes in reading order.
RECIPES = ("ddpm", "ddim", "score_matching", "edm", "guidance", "flow_matching", "rectified_flow",
           "consistency_models", "diffusion_transformer", "masked_diffusion")
