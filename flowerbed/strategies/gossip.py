"""Gossip learning (Ormandi, Hegedus and Jelasity, 2013), simulated in rounds.

Each round every active node sends its current model to one peer drawn uniformly from the
other nodes (the peer-sampling service). A receiver merges each incoming model into its
own, x <- (x + x_m) / 2 (in arrival order, or the variance-corrected average), and then
trains it with local SGD. Nodes that received nothing keep their model. One model-size
message per active node per round goes into the ledger.
"""

from __future__ import annotations

import numpy as np
from flwr.serverapp import Grid

from flowerbed.strategies.decentralized import DecentralizedStrategy, available_nodes


class Gossip(DecentralizedStrategy):
    def step(self, server_round: int, grid: Grid, timeout: float) -> None:
        active = available_nodes(grid)
        if self.n < 2 or active.size == 0:
            return
        # each sender picks a peer uniformly among the other n - 1 nodes
        offsets = self.rng.integers(1, self.n, size=active.size)
        peers = (active + offsets) % self.n
        sent = self.x[active].copy()  # models as they were when sent
        self.record_edges(active, peers)
        order = self.rng.permutation(active.size)  # arrival order
        for i in order:
            j = peers[i]
            pair = np.stack([self.x[j], sent[i]])
            merged = pair.mean(axis=0, keepdims=True)
            if self.params.variance_correction:
                merged = self.correct_variance(merged, self.tensor_vars(pair).mean(
                    axis=0, keepdims=True))
            self.x[j] = merged[0]
        receivers = sorted({int(p) for p in peers})
        self.x[receivers], _ = self.train(grid, receivers, self.x[receivers], server_round,
                                       timeout)
