"""Teleportation (Takezawa and Stich, ICLR 2025, arXiv 2501.15259), Algorithm 1.

Only k of the n nodes are active per round, and only k models exist, one per slot.
Round r: sample k distinct available nodes uniformly and assign them to slots 1..k; slot
i's model is handed ("teleported") from the node that held slot i in round r - 1 to its
new node; each active node takes local SGD steps on its own data, x_i^{r+1/2} =
x_i^r - eta grad F_v(x_i^r); then the slots gossip over a small topology among the k slots
(ring by default), x_i^{r+1} = sum_j W^(k)_ij x_j^{r+1/2}. The per-round cost depends on
k, never on n. With k = n and no resampling it is D-SGD; with k = 1 it is SGD hopping from
node to node. x-bar is the mean of the k slot models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.serverapp import Grid

from flowerbed.core.params import param, positive
from flowerbed.strategies.contract import Services
from flowerbed.strategies.decentralized import (
    DecentralizedParams,
    DecentralizedStrategy,
    TopologyParams,
    available_nodes,
    check_topology_params,
    topology_of,
)
from flowerbed.strategies.topologies import Topology

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeleportationParams(TopologyParams, DecentralizedParams):
    k_active: int = param(8, "Teleportation: active nodes per round k (at most num-clients)",
                          positive)


class Teleportation(DecentralizedStrategy):
    Params = TeleportationParams
    state_fields = ("holders",)
    scratch_fields = ("universe",)  # per-round sets of a tuner are drawn before each step

    @classmethod
    def check_params(cls, params: TeleportationParams, num_nodes: int) -> None:
        super().check_params(params, num_nodes)
        check_topology_params(params, min(params.k_active, num_nodes), "active slots (k-active)")

    def __init__(self, params: Any, services: Services, k: int | None = None,
                 universe: np.ndarray | None = None, topology: Topology | None = None,
                 resample: bool = True) -> None:
        """``k`` (default ``k-active``, at most n) slots; ``universe``: the nodes this run
        may activate (all by default; a disjoint set when tuning); ``topology``: among the
        slots (default: the configured one over k slots)."""
        super().__init__(params, services)
        self.universe = None if universe is None else np.asarray(universe, np.int64)
        self.k = min(params.k_active, self.n) if k is None else k
        if not 1 <= self.k <= self.n:
            raise ValueError(f"k = {self.k} must be in 1..num-clients ({self.n})")
        self.topology = topology or topology_of(params, self.k, services.seed)
        self.resample = resample
        self.holders = np.full(self.k, -1, dtype=np.int64)  # node holding each slot

    def notes(self) -> dict[str, Any]:
        if self.params.k_active > self.n and self.universe is None:
            return {"k-active": f"{self.params.k_active} is more than num-clients = {self.n}; "
                    f"using k-active = {self.k}"}
        return {}

    def init_models(self, x0: np.ndarray) -> np.ndarray:
        return np.tile(x0, (self.k, 1))  # k slot models; n models never exist

    def choose_nodes(self, available: np.ndarray) -> np.ndarray:
        """Slot i -> its node this round (-1: no node available for the slot)."""
        if not self.resample:
            slots = np.arange(self.k, dtype=np.int64)
            return np.where(np.isin(slots, available), slots, -1)
        m = min(self.k, len(available))
        chosen = self.rng.choice(available, size=m, replace=False)
        return np.concatenate([chosen, np.full(self.k - m, -1, dtype=np.int64)])

    def step(self, server_round: int, grid: Grid, timeout: float) -> None:
        available = available_nodes(grid)
        if self.universe is not None:
            available = np.intersect1d(available, self.universe)
        nodes = self.choose_nodes(available)
        live = np.flatnonzero(nodes >= 0)
        moved = live[(self.holders[live] >= 0) & (self.holders[live] != nodes[live])]
        self.record_edges(self.holders[moved], nodes[moved])  # teleport the slot models
        self.holders[live] = nodes[live]
        half = self.x.copy()
        half[live], _ = self.train(grid, nodes[live].tolist(), self.x[live], server_round,
                                timeout)
        step = server_round - 1
        self.x = self.mix(self.topology, half, step)
        self.record_topology(self.topology, step, nodes=self.holders)
