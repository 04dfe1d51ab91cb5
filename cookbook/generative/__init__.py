"""Generative models before diffusion
===================================

A generative model learns a distribution from examples so that it can draw new ones, and, for some
families, say how probable a given example is. Before diffusion, each family paid for tractability
in a different coin, and diffusion borrows from several of them. This chapter writes each family's
objective down exactly (a likelihood, a bound on it, or a game) and tests that identity, not only
that the samples look plausible.

Read it in order. :doc:`autoencoder` is the starting point without any probability: squeeze the
data through a narrow code and back, and the code keeps what matters most (a linear autoencoder finds
the subspace of principal component analysis); corrupting the input first makes it learn to denoise.
:doc:`vae` turns the code into a distribution and gives up the exact likelihood for a lower bound,
the evidence lower bound, trained through the reparameterisation trick; its Gaussian latent code and
its bound are the ancestors of the diffusion objective. :doc:`vq_vae` makes the code discrete, a
choice among a learnt codebook's entries, which is how images become tokens for the autoregressive
models of today.

:doc:`gan` drops the likelihood altogether: a generator and a discriminator play a game whose
equilibrium is the data distribution, and the value of the game at the best discriminator is a
divergence between the two. :doc:`wasserstein_gan` replaces that divergence by the earth mover's
distance, whose gradient does not vanish when the two distributions do not overlap, and enforces the
critic's Lipschitz constraint with clipping or a gradient penalty.

Three families keep an exact likelihood. :doc:`realnvp` makes the model an invertible map with a
cheap Jacobian determinant, at the price of a latent space as large as the data.
:doc:`autoregressive` factorises the density into one conditional per dimension and computes them
all in one pass with masks (MADE's masked weights, PixelCNN's masked convolutions).
:doc:`energy_based` gives only an unnormalised density, an energy, and samples it with Markov chains:
the restricted Boltzmann machine trained by contrastive divergence, and Langevin dynamics, which the
score-based models of the diffusion chapter inherit.

The data are small enough to train in seconds: scikit-learn's digits, binarised or not, and one- and
two-dimensional sets generated in code (two moons, mixtures of Gaussians).
"""

#: The recipes in reading order.
RECIPES = (
    "autoencoder",
    "vae",
    "vq_vae",
    "gan",
    "wasserstein_gan",
    "realnvp",
    "autoregressive",
    "energy_based",
)
