"""Asynchronous gossip on Poisson clocks: randomized gossip (Boyd, Ghosh, Prabhakar, Shah,
"Randomized Gossip Algorithms", IEEE Trans. Inf. Theory 52(6), 2006), with local training.

Boyd et al.'s asynchronous time model: every node i has a clock that ticks at the times of
a rate-lambda Poisson process (``gossip-rate``, ticks per simulated second), independent of
the other nodes' clocks; at a tick node i wakes, picks a neighbour j (here uniformly among
its neighbours in ``topology``: P_ij = 1 / deg(i), the natural random walk of their sec. II)
and the two replace their values by their average, x_i, x_j <- (x_i + x_j) / 2 (the
pairwise-averaging matrix W_ij = I - (e_i - e_j)(e_i - e_j)^T / 2). Only one pair exchanges
at a time, so there is no synchronous round. With ``gossip-train`` the waking node first
takes its local SGD steps from its current model (a gossip-learning node, Ormandi et al.
2013), so computation and communication happen on the node's own clock, as in the
asynchronous decentralized methods (e.g. DADAO) this is meant to let one study.

Simulation. The n independent clocks are drawn as their superposition, a Poisson process of
rate n lambda whose every tick belongs to a node drawn uniformly (the equivalent form used
in Boyd et al.'s analysis): in each server round, which covers ``gossip-round-s`` simulated
seconds, the number of ticks is Poisson(n lambda T), their times are uniform in the window,
their nodes uniform. A server round is therefore a span of simulated time, not an exchange
step: with lambda = 1 and T = 1 every node wakes once per round on average.

Training stays batched without changing the result: the round's ticks are cut into the
longest runs in which no node appears twice (as waker or as peer); within such a run the
exchanges touch disjoint pairs, so all its wakers train together (one batched call, each
from its model at its tick) and the pairs then average, exactly as one tick after the other
would. A node that is unavailable this round (participation) neither wakes nor is picked;
a waker without an available neighbour trains alone; a node whose training fails keeps its
model. Each exchange is two model-size peer messages in the ledger (i -> j, j -> i).

Not modelled (limits): an exchange takes no simulated time (Boyd et al.'s model; the device
profiles of the virtual clock do not slow a node's clock), and the clocks do not depend on
a device's speed. No official code accompanies the paper; this follows its equations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.serverapp import Grid

from flowerbed.core.params import param, positive
from flowerbed.strategies.contract import Services
from flowerbed.strategies.decentralized import (
    DecentralizedParams,
    TopologyParams,
    TopologyStrategy,
    available_nodes,
)


@dataclass(frozen=True)
class AsyncGossipParams(TopologyParams, DecentralizedParams):
    gossip_rate: float = param(1.0, "async-gossip: ticks per simulated second of each "
                               "node's Poisson clock, lambda", positive)
    gossip_round_s: float = param(1.0, "async-gossip: simulated seconds T covered by one "
                                  "server round", positive)
    gossip_train: bool = param(True, "async-gossip: a waking node trains locally before it "
                               "averages with its peer")


@dataclass(frozen=True)
class Ticks:
    """One round's clock ticks, in time order: who woke, when, and whom it picked
    (-1: no available neighbour)."""

    times: np.ndarray
    nodes: np.ndarray
    peers: np.ndarray


class AsyncGossip(TopologyStrategy):
    """Randomized pairwise gossip on Poisson clocks (module docstring)."""

    Params = AsyncGossipParams
    state_fields = ("waves",)
    scratch_fields = ("last_ticks",)  # the latest round's ticks, drawn in that round

    def __init__(self, params: AsyncGossipParams, services: Services) -> None:
        super().__init__(params, services)
        self.waves = 0  # batched training calls so far: the seed coordinate of local steps
        self.last_ticks: Ticks | None = None  # the latest round's ticks (tests, metrics)

    def round_seconds(self, server_round: int) -> float:
        """The simulated duration of a round: T, whatever happened in it."""
        return self.params.gossip_round_s

    def draw_ticks(self, server_round: int, active: np.ndarray) -> Ticks:
        """The ticks of round r in [(r - 1) T, r T): the superposed clocks (docstring)."""
        t_len, lam = self.params.gossip_round_s, self.params.gossip_rate
        count = int(self.rng.poisson(self.n * lam * t_len))
        times = (server_round - 1) * t_len + np.sort(self.rng.uniform(0.0, t_len, count))
        nodes = self.rng.integers(0, self.n, size=count)
        is_active = np.zeros(self.n, dtype=bool)
        is_active[active] = True
        peers = np.full(count, -1, dtype=np.int64)
        for e in range(count):
            nbrs = self.topology.neighbors(int(nodes[e]), server_round - 1)
            nbrs = nbrs[is_active[nbrs]]
            if nbrs.size:
                peers[e] = nbrs[self.rng.integers(0, nbrs.size)]
        keep = is_active[nodes]  # an unavailable node's clock ticks, but it does not wake
        return Ticks(times[keep], nodes[keep], peers[keep])

    @staticmethod
    def waves_of(ticks: Ticks) -> list[tuple[int, int]]:
        """[start, stop) runs of ticks in which no node appears twice (docstring)."""
        out, start, seen = [], 0, set()
        for e in range(len(ticks.nodes)):
            pair = {int(ticks.nodes[e]), int(ticks.peers[e])} - {-1}
            if pair & seen:
                out.append((start, e))
                start, seen = e, set()
            seen |= pair
        if len(ticks.nodes) > start:
            out.append((start, len(ticks.nodes)))
        return out

    def step(self, server_round: int, grid: Grid, timeout: float) -> None:
        active = available_nodes(grid)
        ticks = self.draw_ticks(server_round, active)
        self.last_ticks = ticks
        for start, stop in self.waves_of(ticks):
            wakers = ticks.nodes[start:stop]
            peers = ticks.peers[start:stop]
            if self.params.gossip_train:
                self.waves += 1
                rows = [int(v) for v in wakers]
                self.x[rows], _ = self.train(grid, rows, self.x[rows], server_round,
                                             timeout, {"server-round": self.waves})
            pairs = peers >= 0
            a, b = wakers[pairs], peers[pairs]
            if a.size:
                merged = (self.x[a].astype(np.float64) + self.x[b]) / 2
                if self.params.variance_correction:
                    stacked = np.stack([self.x[a], self.x[b]])
                    target = (self.tensor_vars(stacked[0]) + self.tensor_vars(stacked[1])) / 2
                    merged = self.correct_variance(merged, target)
                self.x[a] = merged
                self.x[b] = merged
                self.record_edges(np.concatenate([a, b]), np.concatenate([b, a]))

    def round_metrics(self, server_round: int) -> dict[str, float]:
        out = super().round_metrics(server_round)
        if self.last_ticks is not None:
            out["gossip_ticks"] = float(len(self.last_ticks.nodes))
            out["gossip_exchanges"] = float((self.last_ticks.peers >= 0).sum())
        return out


__all__ = ["AsyncGossip", "AsyncGossipParams", "Ticks"]
