"""Sequence models beyond attention
=================================

Attention compares every position with every other, so its cost grows with the square of the
sequence and its memory while generating grows with the length of what it has seen. The models of
this chapter mix a sequence through a fixed-size state instead: a linear recurrence whose state is
updated once a token, which can also be computed for the whole sequence at once, in parallel,
because the update is linear. They differ in what the state is (a vector, a matrix of fast
weights), in how the update depends on the input (not at all, or selectively), and in which of
their equal forms (recurrent, parallel, chunked, convolutional) they compute when.

Every recipe shows its forms side by side and its tests check that they agree.
"""
