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
:doc:`dino` keeps the moving teacher but drops the predictor: the student matches the teacher's
output distribution, which is centred (against collapse onto one output) and sharpened (against
collapse onto the uniform distribution); its tests remove each in turn and watch the matching
detector fire. :doc:`barlow_twins` and :doc:`vicreg` prevent collapse by a term in the loss instead:
the first drives the cross-correlation of the two views' features to the identity, the second
keeps every feature's spread above a floor and decorrelates the features. Each page trains the same small encoder on
digits without labels and measures what a nearest-neighbour classifier reads from its embeddings,
against the same encoder untrained.

The masking methods invent the task by hiding part of the input. :doc:`masked_language_model` is
BERT's: hide 15 % of the tokens of a sentence and predict them from both sides.
:doc:`masked_autoencoder` does the same for images, hiding three quarters of the patches; its
encoder sees only the visible ones, so hiding more makes it cheaper. :doc:`jepa` predicts not the
hidden pixels but the hidden blocks' embeddings, given by a moving-average copy of the encoder, so
that it need not spend capacity on detail that no embedding keeps.

:doc:`clip` applies the contrastive loss across two modalities, images and their captions, and sets
beside it SigLIP's sigmoid loss, which judges every image-text pair on its own instead of
normalising over the batch.
"""

#: The recipes in reading order.
RECIPES = (
    "word2vec",
    "simclr",
    "byol",
    "dino",
    "barlow_twins",
    "vicreg",
    "masked_language_model",
    "masked_autoencoder",
    "jepa",
    "clip",
)
