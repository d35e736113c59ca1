"""Teleportation with the paper's tuning of k (Takezawa and Stich, ICLR 2025, Algorithm 2).

K = {1, 2, 4, ..., 2^(floor(log2(n + 1)) - 1)}, so sum(K) <= n. For the first T rounds,
Teleportation runs for every k in K in parallel on disjoint sets of nodes; for the next T
rounds Teleportation runs with k = n on all nodes. The best of the |K| + 1 runs by loss on
the server's held-out set (the paper uses a validation loss) is kept.

How the disjoint sets are drawn (``tuning-sets``; the paper's exact assignment was not
checked, both are our readings):

- 'per-round' (default): every round the available nodes are shuffled and cut into
  disjoint sets of sizes k_1, k_2, ..., so no node serves two candidates in one round (this
  is what sum(K) <= n buys), and each candidate is, marginally, Teleportation with k active
  nodes drawn uniformly from all n. Its heterogeneity is that of the whole network, so the
  paper's guarantee (some k in K has k*/4 < k <= k*, hence a rate close to k*'s) applies.
- 'fixed': candidate k only ever activates a contiguous block of k * floor(n / sum(K))
  nodes. On heterogeneous data a small block optimises its own nodes' objective, not f,
  so small k cannot win (on the quadratic the block mean of c is off by ~zeta^2 / block).

``tuning-metric`` says whose loss: x-bar of the run's slot models ('xbar'), or the mean
loss of the slot models themselves ('nodes'). On a quadratic with identity Hessian x-bar
moves like centralised SGD whatever the mixing, so 'xbar' cannot see the consensus error
that a large k with a sparse slot topology brings; 'nodes' can. The kept run's x-bar is the
reported model from then on, and ``chosen_k`` is logged. With num-server-rounds = 2T the
total work is 2T rounds' worth, as in the paper. During the first phase the reported x-bar
is the current leader's.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.serverapp import Grid

from flowerbed.platform.arrays import unflatten
from flowerbed.strategies.decentralized import (
    DecentralizedStrategy,
    available_nodes,
    topology_from_config,
)
from flowerbed.strategies.teleportation import Teleportation

if TYPE_CHECKING:
    from flowerbed.platform.config import RunConfig


def tuning_set(n: int) -> list[int]:
    """K = {1, 2, 4, ..., 2^(floor(log2(n + 1)) - 1)}."""
    return [2 ** i for i in range(math.floor(math.log2(n + 1)))]


class TeleportationTuned(DecentralizedStrategy):
    def __init__(self, candidates: list[Teleportation], full: Teleportation,
                 tuning_metric: str = "xbar", tuning_sets: str = "per-round",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tuning_metric = tuning_metric
        self.tuning_sets = tuning_sets
        self.candidates = candidates
        self.full = full
        self.phase_rounds = max(self.num_rounds // 2, 1)
        self.leader: Teleportation = candidates[-1]
        self.chosen_k: int | None = None

    @classmethod
    def config_kwargs(cls, cfg: RunConfig) -> dict[str, Any]:
        n = cfg.num_clients
        base = super().config_kwargs(cfg)
        ks = tuning_set(n)
        m = n // sum(ks)
        candidates, start = [], 0
        for i, k in enumerate(ks):
            block = np.arange(start, start + k * m)
            start += k * m
            candidates.append(Teleportation(
                k_active=k, slot_topology=topology_from_config(cfg, k), universe=block,
                **{**base, "seed": cfg.seed + 1 + i}))
        full = Teleportation(k_active=n, slot_topology=topology_from_config(cfg, n),
                             **{**base, "seed": cfg.seed + 1 + len(ks)})
        return {**base, "candidates": candidates, "full": full,
                "tuning_metric": cfg.tuning_metric, "tuning_sets": cfg.tuning_sets}

    def runs(self) -> list[Teleportation]:
        return [*self.candidates, self.full]

    def init_models(self, x0: np.ndarray) -> np.ndarray:
        for run in self.runs():
            run.services, run.like = self.services, self.like
            run.model_bytes = int(sum(v.size for v in self.like.values())) * 4
            run.x = run.init_models(x0)
        return self.leader.x

    def draw_sets(self, grid: Grid) -> None:
        """This round's disjoint node sets: a shuffle of the available nodes, cut into
        consecutive pieces of k_1, k_2, ... nodes (short or empty at the end when fewer
        than sum(K) nodes are available)."""
        order = self.rng.permutation(available_nodes(grid))
        start = 0
        for run in self.candidates:
            run.universe = order[start:start + run.k]
            start += run.k

    def loss(self, run: Teleportation) -> float:
        """Validation loss of ``run``: of its x-bar, or the mean over its slot models."""
        evaluate = self.services.evaluate
        assert evaluate is not None
        models = run.x if self.tuning_metric == "nodes" else run.x.mean(axis=0, keepdims=True)
        return float(np.mean([evaluate(unflatten(v, self.like))["loss"] for v in models]))

    def step(self, server_round: int, grid: Grid, timeout: float) -> None:
        if server_round <= self.phase_rounds:
            if self.tuning_sets == "per-round":
                self.draw_sets(grid)
            for run in self.candidates:
                run.step(server_round, grid, timeout)
            if self.services.evaluate is not None:
                self.leader = min(self.candidates, key=self.loss)
        else:
            self.full.step(server_round, grid, timeout)
            if server_round == self.num_rounds and self.services.evaluate is not None:
                self.leader = min([self.leader, self.full], key=self.loss)
                self.chosen_k = self.leader.k
        self.x = self.leader.x
        self.failed[server_round] = sum(r.failed.get(server_round, 0) for r in self.runs())

    def round_metrics(self, server_round: int) -> dict[str, float]:
        out = {**super().round_metrics(server_round), "leader_k": float(self.leader.k)}
        if self.chosen_k is not None and server_round == self.num_rounds:
            out["chosen_k"] = float(self.chosen_k)
        return out

    def state_dict(self) -> dict[str, Any]:
        # x is only an alias of the leader's slots (its shape follows the leader's k)
        state = {k: v for k, v in super().state_dict().items() if k != "x"}
        return {**state, "runs": [r.state_dict() for r in self.runs()],
                "leader": self.runs().index(self.leader)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict({**state, "x": np.zeros((0, 0), np.float32)})
        for run, st in zip(self.runs(), state["runs"], strict=True):
            run.load_state_dict(st)
            run.services, run.like = self.services, self.like
        self.leader = self.runs()[int(state["leader"])]
        self.x = self.leader.x
