"""Growth studies of the graphs chapter: the cost claims of its pages, measured.

A graph convolution over a sparse graph (here an average of four edges per node) costs
``O(N^2)`` with the dense normalised adjacency of :mod:`cookbook.graphs.gcn` and ``O(E)`` with the
edge list and segment sums of :mod:`cookbook.graphs.message_passing`; global attention over the
nodes (:mod:`cookbook.graphs.graph_transformer`) is quadratic in ``N`` however sparse the graph.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks.cases import GrowthStudy


def growth_studies() -> list[GrowthStudy]:
    from cookbook.graphs import gcn, message_passing

    D = 32
    sizes = [256, 512, 1024, 2048, 4096]

    def graph_inputs(N):
        k_x, k_s, k_r = jax.random.split(jax.random.key(N), 3)
        senders = jax.random.randint(k_s, (4 * N,), 0, N)
        receivers = jax.random.randint(k_r, (4 * N,), 0, N)
        adjacency = jnp.zeros((N, N)).at[receivers, senders].set(1.0)
        return jax.random.normal(k_x, (N, D)), gcn.normalized_adjacency(adjacency), senders, receivers

    return [
        GrowthStudy(
            "graph convolution on a sparse graph (4 edges per node) in the number of nodes", "N", sizes, graph_inputs,
            {
                "dense adjacency (gcn)": lambda x, A, s, r: A @ x,
                "edge list, segment sum (message_passing)": lambda x, A, s, r: message_passing.aggregate(x[s], r, x.shape[0]),
            },
        ),
    ]
