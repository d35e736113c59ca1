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

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from flwr.serverapp import Grid

from flowerbed.core.arrays import unflatten
from flowerbed.core.params import one_of, param
from flowerbed.strategies.contract import Services
from flowerbed.strategies.decentralized import (
    DecentralizedParams,
    DecentralizedStrategy,
    TopologyParams,
    available_nodes,
    check_topology_params,
    topology_of,
)
from flowerbed.strategies.teleportation import Teleportation


def tuning_set(n: int) -> list[int]:
    """K = {1, 2, 4, ..., 2^(floor(log2(n + 1)) - 1)}."""
    return [2 ** i for i in range(math.floor(math.log2(n + 1)))]


@dataclass(frozen=True)
class TeleportationTunedParams(TopologyParams, DecentralizedParams):
    tuning_metric: str = param(
        "xbar", "teleportation-tuned: choose k by the loss of x-bar ('xbar') or by the mean "
        "loss of the run's slot models ('nodes')", one_of("xbar", "nodes"))
    tuning_sets: str = param(
        "per-round", "teleportation-tuned: the candidates' disjoint node sets, drawn afresh "
        "from all nodes every round ('per-round') or fixed contiguous blocks ('fixed')",
        one_of("per-round", "fixed"))


class TeleportationTuned(DecentralizedStrategy):
    Params = TeleportationTunedParams
    state_fields = ("candidates", "full", "leader_index", "chosen_k")
    derived_fields = ("x",)  # the leader's slot models, saved with the leader

    @classmethod
    def check_params(cls, params: TeleportationTunedParams, num_nodes: int) -> None:
        super().check_params(params, num_nodes)
        for k in sorted({*tuning_set(num_nodes), num_nodes}):  # every candidate's slots
            check_topology_params(params, k, "slots of the candidate k")

    def __init__(self, params: TeleportationTunedParams, services: Services) -> None:
        super().__init__(params, services)
        n, seed = self.n, services.seed
        base = {f.name: getattr(params, f.name)
                for f in dataclasses.fields(Teleportation.Params) if hasattr(params, f.name)}
        run_params = Teleportation.Params(**base)

        def run(i: int, k: int, universe: np.ndarray | None) -> Teleportation:
            # each run draws from its own seed; the slot topology is the configured one
            return Teleportation(run_params, dataclasses.replace(services, seed=seed + 1 + i),
                                 k=k, universe=universe, topology=topology_of(params, k, seed))

        ks = tuning_set(n)
        m = n // sum(ks)
        self.candidates: list[Teleportation] = []
        start = 0
        for i, k in enumerate(ks):
            self.candidates.append(run(i, k, np.arange(start, start + k * m)))
            start += k * m
        self.full = run(len(ks), n, None)
        self.phase_rounds = max(self.num_rounds // 2, 1)
        self.leader: Teleportation = self.candidates[-1]
        self.chosen_k: int | None = None

    @property
    def leader_index(self) -> int:
        return self.runs().index(self.leader)

    @leader_index.setter
    def leader_index(self, index: int) -> None:
        self.leader = self.runs()[int(index)]

    def runs(self) -> list[Teleportation]:
        return [*self.candidates, self.full]

    def init_models(self, x0: np.ndarray) -> np.ndarray:
        for run in self.runs():
            run.like = self.like
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
        models = (run.x if self.params.tuning_metric == "nodes"
                  else run.x.mean(axis=0, keepdims=True))
        return float(np.mean([evaluate(unflatten(v, self.like))["loss"] for v in models]))

    def step(self, server_round: int, grid: Grid, timeout: float) -> None:
        if server_round <= self.phase_rounds:
            if self.params.tuning_sets == "per-round":
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

    def after_load(self) -> None:
        # x is derived (not saved): the base's copy of it back out of core does not apply
        for run in self.runs():
            run.like = self.like
        self.x = self.leader.x
