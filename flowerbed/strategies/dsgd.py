"""Decentralized SGD / D-PSGD (Lian et al., NeurIPS 2017).

Every node keeps its own model. Round t (a gossip step): each available node takes I
local SGD steps, x_i^{t+1/2} = x_i^t - eta sum g_i; then every node averages with its
neighbours, x_i^{t+1} = sum_j W_ij x_j^{t+1/2}, W the topology's doubly stochastic mixing
matrix at step t (time-varying for one-peer exponential and Base-(k+1) graphs). A node
that is unavailable or fails keeps x_i^t for its half step. One peer message per directed
edge per step goes into the ledger. With ``final-merge`` the last round ends with a naive
all-reduce (n (n - 1) messages) after which every node holds x-bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.serverapp import Grid

from flowerbed.core.params import param
from flowerbed.strategies.decentralized import (
    DecentralizedParams,
    TopologyParams,
    TopologyStrategy,
)


@dataclass(frozen=True)
class DSGDParams(TopologyParams, DecentralizedParams):
    final_merge: bool = param(True, "decentralized: report the globally merged model x-bar")


class DSGD(TopologyStrategy):
    Params = DSGDParams
    peer_views = True
    scratch_fields = ("premerge",)  # computed and reported in the last round

    def step(self, server_round: int, grid: Grid, timeout: float) -> None:
        half = self.trained_half(grid, server_round, timeout, self.local_config())
        for step in self.gossip_schedule(server_round):
            half = self.mix_received(self.topology, half, step)
            self.record_topology(self.topology, step)
        self.x = half
        if self.params.final_merge and server_round == self.num_rounds:
            # the per-node models just before the single global merge (x-bar is unchanged)
            self.premerge = {f"premerge_{k}": v for k, v in self.node_metrics().items()}
            self.all_reduce()

    def local_config(self) -> dict[str, Any] | None:
        """Extra train-config entries for the local steps (e.g. a client rule)."""
        return None

    def gossip_schedule(self, server_round: int) -> list[int]:
        """The topology steps of this round's gossip: one, step t - 1."""
        return [server_round - 1]

    def round_metrics(self, server_round: int) -> dict[str, float]:
        out = super().round_metrics(server_round)
        if server_round == self.num_rounds and self.params.final_merge:
            out.update(getattr(self, "premerge", {}))
        return out

    def all_reduce(self) -> None:
        """Naive all-reduce: every node sends its model to every other node."""
        n = self.n
        src = np.repeat(np.arange(n), n - 1)
        dst = np.array([j for i in range(n) for j in range(n) if j != i], dtype=np.int64)
        self.record_edges(src, dst)
        self.x[:] = self.x.mean(axis=0)
