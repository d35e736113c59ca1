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

from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.serverapp import Grid

from flowerbed.strategies.decentralized import (
    DecentralizedStrategy,
    available_nodes,
    topology_from_config,
)

if TYPE_CHECKING:
    from flowerbed.platform.config import RunConfig
    from flowerbed.platform.topologies import Topology


class Teleportation(DecentralizedStrategy):
    def __init__(self, k_active: int, slot_topology: Topology, resample: bool = True,
                 universe: np.ndarray | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # the nodes this run may activate (all by default; a disjoint set when tuning)
        self.universe = None if universe is None else np.asarray(universe, np.int64)
        if not 1 <= k_active <= self.n:
            raise ValueError(f"k-active = {k_active} must be in 1..num-clients ({self.n})")
        self.k = k_active
        self.topology = slot_topology
        self.resample = resample
        self.holders = np.full(self.k, -1, dtype=np.int64)  # node holding each slot

    @classmethod
    def config_kwargs(cls, cfg: RunConfig) -> dict[str, Any]:
        k = min(cfg.k_active, cfg.num_clients)
        return {**super().config_kwargs(cfg), "k_active": k,
                "slot_topology": topology_from_config(cfg, k)}

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

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "holders": self.holders.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.holders = np.asarray(state["holders"], np.int64)
