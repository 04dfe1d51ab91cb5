"""Graphs, sets and symmetry
==========================

Some data is neither a grid nor a sequence: the atoms of a molecule, the members of a club and who
talks to whom, a cloud of points. Such data has no first element and no left or right, so a network
for it must give the same answer however its parts are numbered. This chapter builds such networks
from one idea, passing messages along the edges of a graph and summing them at each node, and asks
of each recipe which symmetry it respects exactly and what it therefore cannot tell apart.

Every recipe comes with an exact test of the symmetry it claims.
"""
