"""Generative models before diffusion
===================================

A generative model learns a distribution from examples so that it can draw new ones, and, for some
families, say how probable a given example is. Before diffusion, each family paid for tractability
in a different coin, and diffusion borrows from several of them. This chapter writes each family's
objective down exactly (a likelihood, a bound on it, or a game) and tests that identity, not only
that the samples look plausible.

Read it in order. :doc:`vae` gives up the exact likelihood for a lower bound, the evidence lower
bound, and trains an encoder and a decoder together through the reparameterisation trick; its
Gaussian latent code and its bound are the ancestors of the diffusion objective. :doc:`realnvp` keeps
the likelihood exact by making the model an invertible map with a cheap Jacobian determinant, at the
price of a latent space as large as the data.

The data are small enough to train in seconds: scikit-learn's digits, binarised, and two-dimensional
sets generated in code (two moons).
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
