r"""Self-supervised and contrastive learning
=========================================

Labels are scarce and images, sentences and their pairings are plentiful. The recipes of this
chapter learn a representation from the data alone, by inventing a task whose answer the data
already holds: pick out the other view of the same image among many, or the caption that belongs
to a picture. Every such task has a trivial solution, the encoder that maps everything to one
point, and each recipe is first of all a device against that collapse; its tests measure the
collapse directly.

:doc:`word2vec` comes first, as the oldest: predict the words around a word, against a few words
drawn at random, and words that appear in the same company end up with nearby vectors, so that
analogies become arithmetic.

Then the image methods. :doc:`simclr`: two augmentations of each image, and a softmax over the
batch that makes each embedding find its twin and push away the rest (the NT-Xent or InfoNCE
loss). The negatives are what keeps the embeddings apart: a batch of identical embeddings scores the
chance level :math:`\log(2B - 1)` exactly. :doc:`byol` needs no negatives: an online network
predicts the embedding that a slowly moving copy of itself gives the other view, and the
stop-gradient on that target is what prevents collapse, which its test shows by removing it.
:doc:`barlow_twins` and :doc:`vicreg` prevent collapse by a term in the loss instead: the first drives
the cross-correlation of the two views' features to the identity, the second keeps every feature's
spread above a floor and decorrelates the features. Each page trains the same small encoder on
digits without labels and measures what a nearest-neighbour classifier reads from its embeddings,
against the same encoder untrained.

:doc:`clip` applies the contrastive loss across two modalities, images and their captions, and sets
beside it SigLIP's sigmoid loss, which judges every image-text pair on its own instead of
normalising over the batch.
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
