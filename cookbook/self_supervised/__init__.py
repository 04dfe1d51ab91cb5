"""Self-supervised and contrastive learning
=========================================

Labels are scarce and images, sentences and their pairings are plentiful. The recipes of this
chapter learn a representation from the data alone, by inventing a task whose answer the data
already holds: pick out the other view of the same image among many, or the caption that belongs
to a picture. Every such task has a trivial solution, the encoder that maps everything to one
point, and each recipe is first of all a device against that collapse; its tests measure the
collapse directly.

Read :doc:`simclr` first: two augmentations of each image, and a softmax over the batch that makes
each embedding find its twin and push away the rest (the NT-Xent or InfoNCE loss). The negatives
are what keeps the embeddings apart: a batch of identical embeddings scores the chance level
:math:`\\log(2B - 1)` exactly. :doc:`clip` applies the same loss across two modalities, images
and their captions, and sets beside it SigLIP's sigmoid loss, which judges every image-text pair on
its own instead of normalising over the batch.
"""

#: The recipes in reading order.
RECIPES = (
    "word2vec",
    "simclr",
    "byol",
    "barlow_twins",
    "vicreg",
    "clip",
)
