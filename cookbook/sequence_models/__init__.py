"""Sequence models beyond attention
=================================

Attention compares every position with every other, so its cost grows with the square of the
sequence and its memory while generating grows with the length of what it has seen. The models of
this chapter mix a sequence through a fixed-size state instead: a linear recurrence whose state is
updated once a token, which can also be computed for the whole sequence at once, in parallel,
because the update is linear. They differ in what the state is (a vector, a matrix of fast
weights), in how the update depends on the input (not at all, or selectively), and in which of
their equal forms (recurrent, parallel, chunked, convolutional) they compute when.

Read it in four steps.

* **The recurrence and its forms.** :doc:`linear_recurrence` is the common core: the update
  :math:`h_t = a_t \\odot h_{t-1} + b_t`, computed step by step or by an associative scan in
  logarithmic depth, and the Linear Recurrent Unit built on it. :doc:`s4` derives such a
  recurrence from a continuous state space (HiPPO) and shows its second form, a long convolution.
* **Selection.** A time-invariant recurrence treats every token alike. :doc:`mamba` makes the
  step size and the read and write vectors depend on the token, so that the state can keep what
  matters and skip the rest; :doc:`mamba2` restricts the decay to one number per head and finds that
  the model is then also a masked, attention-like product, computed in chunks.
* **Matrix states.** Linear attention keeps a matrix of key-value associations.
  :doc:`retnet` decays it by a fixed factor per head; :doc:`rwkv` decays it per channel and reads
  it as a running softmax; :doc:`delta_rule` writes to it by the delta rule, correcting the value
  stored for a key instead of adding to it; :doc:`xlstm` gates it exponentially, with a
  stabiliser that keeps the exponentials finite. :doc:`hyena` takes the other road, long
  convolutions with filters produced by a small network, computed with the FFT.
* **What they can recall.** :doc:`associative_recall` sets them all the same two tests, selective
  copying and multi-query associative recall, in one small model, and compares what each recalls
  for the size of its state, with attention's growing cache as the yardstick: the trade-off that
  decides between them.

Every recipe shows its forms side by side, and its tests check that they agree, that changing a
later input never changes an earlier output, and that the page's claims about cost hold. ``make
bench`` measures the time and the memory of the forms against the sequence length (the growth
studies on :doc:`/docs/performance`).
"""

#: The recipes in reading order.
RECIPES = ("linear_recurrence", "s4", "mamba", "mamba2", "retnet", "rwkv", "delta_rule", "xlstm", "hyena",
           "associative_recall")
