"""A complete user decentralized strategy: random-pair gossip.

Each round every available node trains its own model, then the nodes are matched in random
pairs and each pair averages its two models (a time-varying, randomly drawn matching).
Run it with ``flwr run . --run-config 'strategy="examples.my_decentralized:RandomPairs"'``.
The base class keeps the stacked node models, trains through the grid (a failed node keeps
its model), evaluates x-bar and samples per-node accuracy and consensus distance.
"""

from __future__ import annotations

import numpy as np
from flwr.serverapp import Grid

from flowerbed.strategies.decentralized import DecentralizedStrategy


class RandomPairs(DecentralizedStrategy):
    def step(self, server_round: int, grid: Grid, timeout: float) -> None:
        active = sorted(int(v) for v in grid.get_node_ids())
        self.x[active], _ = self.train(grid, active, self.x[active], server_round, timeout)
        order = self.rng.permutation(self.n)
        a, b = order[0:self.n - 1:2], order[1:self.n:2]  # disjoint pairs (one left over if odd)
        mean = (self.x[a] + self.x[b]) / 2
        self.x[a], self.x[b] = mean, mean
        self.record_edges(np.concatenate([a, b]), np.concatenate([b, a]))  # both directions
