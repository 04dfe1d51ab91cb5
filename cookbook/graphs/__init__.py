"""Graphs, sets and symmetry
==========================

Some data is neither a grid nor a sequence: the atoms of a molecule, the members of a club and who
talks to whom, a cloud of points. Such data has no first element and no left or right, so a network
for it must give the same answer however its parts are numbered. This chapter builds such networks
from one idea, passing messages along the edges of a graph and summing them at each node, and asks
of each recipe which symmetry it respects exactly and what it therefore cannot tell apart.

Read it in order. :doc:`message_passing` is the framework that the rest fill in: an update for each
edge from its two ends, an aggregation of the messages at each node, an update of the node, and
optionally a summary of the whole graph, all on edge lists with segment sums. :doc:`gcn` is the
simplest choice of message, a neighbour average weighted by degrees, and shows what happens when
such layers are stacked deep (every node ends up alike). :doc:`gat` lets each node weigh its
neighbours by attention instead of by degree. :doc:`gin` asks how much any of these can tell apart
and answers with the Weisfeiler–Lehman colour refinement: no message-passing network separates two
graphs that it cannot, and a sum aggregation with an injective update reaches that bound where a
mean or a maximum does not. :doc:`graph_transformer` goes past that bound by letting every node
attend to every other, with positions taken from the eigenvectors of the graph's Laplacian (defined
only up to sign) and distances as attention biases. :doc:`deep_sets` removes the edges altogether: a set is a graph with no
edges, or with all of them, and the same sum (or attention over all elements) gives networks that
ignore the order of their inputs exactly.

The last pages add the symmetries of space. :doc:`group_convolution` starts on the grid: an image
turned by a quarter turn is the same image, and a convolution over the four rotations as well as
the positions makes that exact. A molecule or a point cloud also has coordinates, and turning or
mirroring it changes nothing about it. :doc:`egnn` passes messages built from distances,
which no rotation changes, and moves each point along the differences to its neighbours, which turn
with the cloud, so its outputs turn with its inputs exactly. :doc:`spherical_harmonics` gives the
vocabulary for richer equivariant features than vectors: functions on the sphere sorted by degree,
the matrices by which each degree turns, and the tensor product that combines two degrees into a third.

The aggregations compete on one task in :doc:`gin`: of the 12 086 pairs of six-node graphs that three
rounds of colour refinement tell apart, random three-layer networks separate more than 12 000 with a
sum, 4434 with a mean and 4181 with a maximum.

Graphs are held as edge lists (``senders``, ``receivers``) with features per node and per edge, and
as dense adjacency matrices where a page says so. Every recipe comes with an exact test of the
symmetry it claims: numbering the nodes (and edges) differently numbers the outputs differently and
changes nothing else.
"""

#: The recipes in reading order.
RECIPES = (
    "message_passing",
    "gcn",
    "gat",
    "gin",
    "graph_transformer",
    "deep_sets",
    "group_convolution",
    "egnn",
    "spherical_harmonics",
)
