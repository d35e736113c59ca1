"""MoDeST-style decentralized sampling (Dhasade et al., 2023).

Each round a pseudo-random sample of s trainers and a aggregators is drawn (seeded, so
every node could compute it). Trainers download the model from one of the previous
round's aggregators, train it, and send it to every current aggregator; the aggregators
average what they receive (weighted equally) and become the next round's source. All
aggregators of a round hold the same average, so one model describes the system state.
The ledger counts s downloads and s * a uploads per round, all peer-to-peer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.serverapp import Grid

from flowerbed.core.params import param, positive
from flowerbed.strategies.contract import Services
from flowerbed.strategies.decentralized import (
    DecentralizedParams,
    DecentralizedStrategy,
    available_nodes,
)


@dataclass(frozen=True)
class MoDeSTParams(DecentralizedParams):
    trainers: int = param(10, "MoDeST: trainers sampled per round (at most num-clients)",
                          positive)
    aggregators: int = param(2, "MoDeST: aggregators sampled per round (at most "
                             "num-clients)", positive)


class MoDeST(DecentralizedStrategy):
    Params = MoDeSTParams
    state_fields = ("sources",)

    def __init__(self, params: MoDeSTParams, services: Services) -> None:
        super().__init__(params, services)
        self.s = min(params.trainers, self.n)
        self.a = min(params.aggregators, self.n)
        self.sources = np.zeros(0, dtype=np.int64)  # previous round's aggregators

    def notes(self) -> dict[str, Any]:
        return {k: f"{v} is more than num-clients = {self.n}; using {k} = {used}"
                for k, v, used in (("trainers", self.params.trainers, self.s),
                                   ("aggregators", self.params.aggregators, self.a))
                if v > self.n}

    def init_models(self, x0: np.ndarray) -> np.ndarray:
        return x0[None, :].copy()  # the aggregators' common model

    def step(self, server_round: int, grid: Grid, timeout: float) -> None:
        available = available_nodes(grid)
        if available.size == 0:
            return
        trainers = self.rng.choice(available, size=min(self.s, available.size), replace=False)
        aggregators = self.rng.choice(available, size=min(self.a, available.size),
                                      replace=False)
        if self.sources.size:  # each trainer downloads from one previous aggregator
            self.record_edges(self.rng.choice(self.sources, size=trainers.size), trainers)
        trained, ok = self.train(grid, trainers.tolist(),
                                 np.repeat(self.x, trainers.size, axis=0), server_round, timeout)
        self.record_edges(np.repeat(trainers[ok], aggregators.size),
                          np.tile(aggregators, int(ok.sum())))
        if ok.any():
            self.x = trained[ok].mean(axis=0, keepdims=True)
        self.sources = aggregators
