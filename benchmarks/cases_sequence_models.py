"""Growth studies of the sequence models chapter: time and memory against the sequence length.

* ``linear_scan`` against ``linear_scan_sequential``: the associative scan does about twice the
  arithmetic of the step-by-step scan in O(log T) rounds instead of T steps, so which one wins depends
  on how many cores can share a round.
* Retention's three equal forms: the parallel form is O(T^2) in time and memory, the chunkwise form
  O(T * chunk), the recurrent form O(T) in time with a state of fixed size.
"""

from __future__ import annotations

import jax

from benchmarks.cases import GrowthStudy, _normal

D = 64  # features of the recurrence; width of the retention head (Dk = Dv)
GAMMA = 1 - 2**-5  # the first head of multi-scale retention
CHUNK = 64


def _scan_inputs(T):
    a = jax.random.uniform(jax.random.key(0), (T, D), minval=0.5, maxval=1.0)
    return a, _normal((T, D), 1)


def _retention_inputs(T):
    return _normal((T, D)), _normal((T, D), 1), _normal((T, D), 2)


def growth_studies() -> list[GrowthStudy]:
    from cookbook.sequence_models import linear_recurrence, retnet

    return [
        GrowthStudy(
            "linear recurrence in sequence length", "T", [256, 1024, 4096, 16384], _scan_inputs,
            {
                "sequential scan": linear_recurrence.linear_scan_sequential,
                "associative scan": linear_recurrence.linear_scan,
            },
        ),
        GrowthStudy(
            "retention in sequence length", "T", [256, 512, 1024, 2048, 4096], _retention_inputs,
            {
                "parallel": lambda q, k, v: retnet.retention(q, k, v, GAMMA),
                f"chunkwise ({CHUNK})": lambda q, k, v: retnet.retention(
                    q, k, v, GAMMA, form="chunkwise", chunk_size=CHUNK),
                "recurrent": lambda q, k, v: retnet.retention(q, k, v, GAMMA, form="recurrent"),
            },
        ),
    ]
