"""The Deep Learning Cookbook: every idea of deep learning as equation, explanation and JAX code.

Each chapter is a subpackage and each recipe a module of it. :data:`CHAPTERS` is the order in which
the book presents the chapters; a chapter that exists but is not listed follows the listed ones.
"""

#: The version of the book and of the package (pyproject.toml reads it from here).
__version__ = "0.1.0"

#: The chapters in reading order.
CHAPTERS = (
    "foundations",
    "optimization",
    "normalization",
    "regularization",
    "convolution",
    "recurrent",
    "attention",
    "transformers",
    "sequence_models",
    "graphs",
    "generative",
    "diffusion",
    "self_supervised",
    "reinforcement",
    "uncertainty",
    "theory",
    "efficiency",
    "niche",
)
