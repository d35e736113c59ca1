"""MoNNA: local Polyak momentum, then nearest-neighbour averaging (Farhadkhani, Guerraoui,
Gupta, Hoang, Pinot, Stephan, "Robust Collaborative Learning with Linear Gradient Overhead",
ICML 2023; official code LPD-EPFL/robust-collaborative-learning, ``peerToPeer.py`` with the
``cva`` rule and the pivot at the node's own model, read to pin the steps below).

Round t, every node i:

1. momentum on its local update: m_i <- beta m_i + (1 - beta) g_i, where g_i is the node's
   round update x_i - SGD(x_i) (the learning rate times the summed gradients of its local
   steps; with one local step exactly eta g as in the paper), and the half step
   x_i^{t+1/2} = x_i - m_i;
2. it receives the half-step models of its neighbours, keeps the d_i + 1 - f closest to its
   own (its own included, distance 0), i.e. drops the f farthest, and averages them
   uniformly: x_i^{t+1} = mean of the kept ones (NNA, "nearest neighbour averaging").

The paper's analysis is on the complete graph (every node hears everyone) and f is the
number of Byzantine nodes tolerated; any topology runs here, with f capped at the node's
degree. Differences from the official code, said plainly: its momentum default is beta =
0.99 over thousands of steps (``--momentum 0.99 --dampening 0.99``); 0.9 is the default here
for runs of tens of rounds (set ``monna-momentum`` to 0.99 to match). The simulation keeps
every node's momentum on the server side, Byzantine nodes' too: a malicious node's crafted
update therefore passes through its momentum (a static attack such as sign flip or ALIE is
unaffected in the limit; a time-varying one is smoothed). A node that is unavailable or fails
keeps its model and momentum for the half step, and still averages. The senders of the
models each node kept are exposed (:meth:`MoNNA.accepted_senders`), so the platform, which
knows who is malicious, can count the malicious models NNA let through.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.serverapp import Grid

from flowerbed.core.params import non_negative, param, unit_interval_open_right
from flowerbed.strategies.contract import Services
from flowerbed.strategies.decentralized import (
    DecentralizedParams,
    TopologyParams,
    TopologyStrategy,
)


@dataclass(frozen=True)
class MoNNAParams(TopologyParams, DecentralizedParams):
    monna_momentum: float = param(0.9, "MoNNA: local momentum beta (official code 0.99)",
                                  unit_interval_open_right)
    nna_f: int = param(1, "MoNNA: f, the farthest received models each node drops",
                       non_negative)


def nearest_neighbour_average(models: np.ndarray, own: int, f: int) -> np.ndarray:
    """The mean of the rows closest to row ``own``, dropping the f farthest (own kept)."""
    return models[nearest(models, own, f)].mean(axis=0)


def nearest(models: np.ndarray, own: int, f: int) -> np.ndarray:
    """The rows NNA keeps: all but the f farthest from row ``own`` (which is always kept)."""
    dist = np.linalg.norm(models - models[own], axis=1)
    dist[own] = -1.0  # always kept
    return np.argsort(dist, kind="stable")[:max(len(models) - f, 1)]


class MoNNA(TopologyStrategy):
    Params = MoNNAParams
    peer_views = True
    state_fields = ("momentum",)
    scratch_fields = ("accepted",)  # the round's kept senders, reported in that round

    def __init__(self, params: MoNNAParams, services: Services) -> None:
        super().__init__(params, services)
        self.momentum: np.ndarray = np.zeros((0, 0), np.float32)
        self.accepted: np.ndarray = np.zeros(0, np.int64)

    def accepted_senders(self) -> np.ndarray:
        """Who sent the models the last round's NNA kept (one entry per kept message)."""
        return self.accepted

    def step(self, server_round: int, grid: Grid, timeout: float) -> None:
        if self.momentum.shape != self.x.shape:
            self.momentum = np.zeros_like(self.x)
        active = sorted(int(v) for v in grid.get_node_ids())
        trained = self.store.copy(self.x)
        ok = self.train_rows(grid, active, self.x, trained, server_round, timeout)
        done = np.asarray(active, np.int64)[ok]
        beta = self.params.monna_momentum
        g = self.x[done] - trained[done]
        self.momentum[done] = beta * self.momentum[done] + (1 - beta) * g
        half = np.array(self.x, np.float32, copy=True)
        half[done] = self.x[done] - self.momentum[done]
        step = server_round - 1
        new = np.empty_like(half)
        kept: list[np.ndarray] = []
        for i in range(self.n):
            peers = self.topology.in_neighbors(i, step)
            group = np.concatenate([[i], peers]).astype(np.int64)
            f = min(self.params.nna_f, len(peers))
            got = np.concatenate([half[i:i + 1], self.peer_rows(i, peers, half)])
            keep = nearest(got, 0, f)
            new[i] = got[keep].mean(axis=0)
            kept.append(group[keep[keep != 0]])
        self.x = new
        self.accepted = np.concatenate(kept) if kept else np.zeros(0, np.int64)
        self.record_topology(self.topology, step)
