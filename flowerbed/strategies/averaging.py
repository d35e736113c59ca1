"""Weighted sums of client model states, in float64, a chunk of clients at a time.

A loop over clients and tensors costs one NumPy call per (client, tensor): with thousands of
small client models a round that Python overhead outweighs the arithmetic. Stacking a chunk
of clients per tensor makes it one call per (chunk, tensor), while memory stays bounded by
the chunk (never all clients' models at once). The chunk is also bounded in bytes, per
tensor: a stacked chunk is converted to float64 by the product, so 256 copies of a large
layer (LEAF's FEMNIST CNN has a 25 MiB dense layer) would need gigabytes of temporaries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

State = Mapping[str, np.ndarray]

CHUNK = 256  # clients stacked per tensor at most
CHUNK_BYTES = 64 * 2**20  # ... and at most this many bytes of float64 stacked copies


def weighted_sum(states: Sequence[State], weights: Sequence[float],
                 like: State, chunk: int = CHUNK) -> dict[str, np.ndarray]:
    """sum_i weights[i] * states[i], per tensor of ``like``, in float64."""
    if len(states) != len(weights):
        raise ValueError(f"{len(states)} states but {len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64)
    out = {k: np.zeros(np.shape(v), dtype=np.float64) for k, v in like.items()}
    for k, acc in out.items():
        step = max(1, min(chunk, CHUNK_BYTES // max(8 * acc.size, 1)))
        for start in range(0, len(states), step):
            part = states[start:start + step]
            if len(part) == 1:  # no stacked copy: one float64 product
                acc += w[start] * np.asarray(part[0][k], dtype=np.float64)
            else:
                stacked = np.stack([np.asarray(s[k]) for s in part])
                acc += np.tensordot(w[start:start + step], stacked, axes=1)
    return out


__all__ = ["CHUNK", "CHUNK_BYTES", "weighted_sum"]
