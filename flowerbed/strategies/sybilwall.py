"""SybilWall: similarity-based Sybil-resistant aggregation with probabilistic gossip
(Werthenbach and Pouwelse, "Towards Sybil Resilience in Decentralized Learning", 2023;
official code ThomasWerthenbach/Sybil-Resilient-Decentralized-Learning,
``ml/aggregators/sybilwall.py`` and ``foolsgold.py``, read to pin the score below).

Sybils controlled by one attacker push the same poison, so their accumulated updates point
the same way. Every node i keeps, for each peer j it hears from, the peer's accumulated
update history H_j (the sum of its updates so far) and scores its neighbours as FoolsGold
does (Fung et al.): with cs the cosine similarities of the histories (diagonal 0),

1. pardoning: cs_jk <- cs_jk * m_j / m_k whenever m_j < m_k (m the row maxima + 1e-5),
2. w_j = clip(1 - max_k cs_jk, 0, 1), rescaled so the largest is 1,
3. w_j = clip(ln(w_j / (1 - w_j)) + 0.5, 0, 1) (the logit; 1 stays 1, 0 stays 0),

then averages its own half-step model (weight 1, trusted) with its neighbours' half-step
models weighted by w and normalised. Probabilistic gossip: besides its neighbours, node i
also receives the histories of ``sybilwall-gossip`` nodes drawn at random each round
(distant models forwarded by peers), which join the similarity comparison only, so that
Sybils attached to different honest nodes still meet each other in i's comparison.

Simplifications, said plainly: histories are the simulation's exact per-node accumulated
updates (a real node accumulates the differences of what it received, which is the same
when it hears the peer every round); the official code accumulates received models from the
first one, here the common initial model is left out (FoolsGold's accumulated updates).
The gossip is a uniform sample per round, counted as one model-size message per sample;
the official forwarding protocol (which peer forwards which distant model) is not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.serverapp import Grid

from flowerbed.core.params import non_negative, param
from flowerbed.strategies.contract import Services
from flowerbed.strategies.decentralized import (
    DecentralizedParams,
    TopologyParams,
    TopologyStrategy,
)


@dataclass(frozen=True)
class SybilWallParams(TopologyParams, DecentralizedParams):
    sybilwall_gossip: int = param(4, "SybilWall: distant histories each node compares per "
                                  "round (probabilistic gossip)", non_negative)


def foolsgold_weights(histories: np.ndarray) -> np.ndarray:
    """FoolsGold's similarity weights of the rows of ``histories`` (see the docstring)."""
    m = len(histories)
    if m == 0:
        return np.zeros(0)
    if m == 1:
        return np.ones(1)
    norms = np.linalg.norm(histories, axis=1)
    unit = histories / np.maximum(norms, 1e-300)[:, None]
    cs = unit @ unit.T - np.eye(m)
    top = cs.max(axis=1) + 1e-5
    ratio = top[:, None] / top[None, :]
    cs = np.where((top[:, None] < top[None, :]) & ~np.eye(m, dtype=bool), cs * ratio, cs)
    w = np.clip(1.0 - cs.max(axis=1), 0.0, 1.0)
    if w.max() <= 0:
        return np.zeros(m)
    w = w / w.max()
    out = np.ones(m)  # the logit of 1 is +inf, clipped to 1
    part = w < 1
    with np.errstate(divide="ignore"):  # the logit of 0 is -inf, clipped to 0
        out[part] = np.log(w[part] / (1 - w[part])) + 0.5
    return np.clip(out, 0.0, 1.0)


class SybilWall(TopologyStrategy):
    Params = SybilWallParams
    peer_views = True
    state_fields = ("history",)

    def __init__(self, params: SybilWallParams, services: Services) -> None:
        super().__init__(params, services)
        self.history: np.ndarray = np.zeros((0, 0), np.float64)

    def step(self, server_round: int, grid: Grid, timeout: float) -> None:
        if self.history.shape != self.x.shape:
            self.history = np.zeros(self.x.shape, np.float64)
        half = self.trained_half(grid, server_round, timeout)
        self.history += np.asarray(half, np.float64) - self.x
        step = server_round - 1
        new = np.empty_like(half)
        gossip_src, gossip_dst = [], []
        for i in range(self.n):
            peers = self.topology.in_neighbors(i, step)
            k = min(self.params.sybilwall_gossip, self.n - 1 - len(peers))
            others = np.setdiff1d(np.arange(self.n), np.concatenate([[i], peers]))
            distant = (self.rng.choice(others, size=k, replace=False) if k > 0
                       else np.zeros(0, np.int64))
            gossip_src.extend(distant.tolist())
            gossip_dst.extend([i] * len(distant))
            w = foolsgold_weights(self.history[np.concatenate([peers, distant])])[:len(peers)]
            weights = np.concatenate([[1.0], w])
            got = np.concatenate([half[i:i + 1], self.peer_rows(i, peers, half)])
            new[i] = (weights / weights.sum()) @ got
        self.x = new
        self.record_topology(self.topology, step)
        if gossip_src:
            self.record_edges(gossip_src, gossip_dst)
