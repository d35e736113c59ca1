"""ClippedGossip (He, Karimireddy, Jaggi, "Byzantine-Robust Decentralized Learning via
ClippedGossip", 2022; official code epfml/byzantine-robust-decentralized-optimizer).

Round t: every available node takes its local SGD steps, x_i^{t+1/2}; then each node moves
towards its neighbours by the gossip weights, but every neighbour's pull is clipped to
radius tau_i around its own model ("self-centred clipping"):

    x_i^{t+1} = x_i^{t+1/2} + sum_j W_ij CLIP(x_j^{t+1/2} - x_i^{t+1/2}, tau_i),
    CLIP(z, tau) = z min(1, tau / ||z||).

With tau = infinity it is plain gossip (D-SGD); a Byzantine neighbour can move node i by at
most W_ij tau per round. The paper also gives an adaptive rule for tau_i (chosen from the
distances to the neighbours so that the honest ones' total clipped mass is bounded); it
relies on knowing the honest neighbours' weight and is not implemented: tau is one fixed
``gossip-clip-tau`` for every node, as in the official code's ``scp<tau>`` runs
(``scp0.1``, ``scp1``). The paper's experiments add local momentum; it is not part of this
strategy (a client-side rule). Unavailable or failed nodes keep x_i^t for the half step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from flwr.serverapp import Grid

from flowerbed.core.params import param, positive
from flowerbed.strategies.decentralized import (
    DecentralizedParams,
    TopologyParams,
    TopologyStrategy,
)


@dataclass(frozen=True)
class ClippedGossipParams(TopologyParams, DecentralizedParams):
    gossip_clip_tau: float = param(1.0, "ClippedGossip: clipping radius tau", positive)


def clipped_mix(half: np.ndarray, weights: list[tuple[int, np.ndarray, np.ndarray]],
                tau: float, received: Callable[[int, np.ndarray], np.ndarray] | None = None
                ) -> np.ndarray:
    """x_i + sum_j W_ij clip(x_j - x_i, tau) for (i, neighbours j, W_ij) in ``weights``;
    ``received(i, cols)``: the models node i got from ``cols`` (default ``half[cols]``)."""
    out = np.array(half, np.float64, copy=True)
    for i, cols, w in weights:
        if not len(cols):
            continue
        got = half[cols] if received is None else received(i, cols)
        diff = got.astype(np.float64) - half[i]
        norms = np.linalg.norm(diff, axis=1)
        scale = np.minimum(1.0, tau / np.maximum(norms, 1e-300))
        out[i] += (w * scale) @ diff
    return out.astype(half.dtype)


class ClippedGossip(TopologyStrategy):
    Params = ClippedGossipParams
    peer_views = True

    def weights(self, step: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Per node i: its in-neighbours j and W_ij (off-diagonal entries of W_step)."""
        w = self.topology.matrix(step)
        out = []
        for i in range(self.n):
            cols = w.indices[w.indptr[i]:w.indptr[i + 1]]
            vals = w.data[w.indptr[i]:w.indptr[i + 1]]
            off = cols != i
            out.append((i, cols[off], vals[off]))
        return out

    def step(self, server_round: int, grid: Grid, timeout: float) -> None:
        half = self.trained_half(grid, server_round, timeout)
        step = server_round - 1
        half = np.asarray(half)
        self.x = clipped_mix(half, self.weights(step), self.params.gossip_clip_tau,
                             lambda i, cols: self.peer_rows(i, cols, half))
        self.record_topology(self.topology, step)
