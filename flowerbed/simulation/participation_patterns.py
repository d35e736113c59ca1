"""Heterogeneous participation patterns (FedAU, Wang & Ji, NeurIPS 2023, arXiv 2306.03401).

Each node n has a probability p_n of being reachable in a round; the strategy never sees it.
The probabilities (checked against the official code, IBM/fedau ``util/util.py``):

- ``bernoulli``: p_n = p_min + (1 - p_min) * Beta(a, b) with mean p_mean (concentration
  a + b = 2): heterogeneous, unrelated to the data; each round independently.
- ``data-bernoulli`` (the paper's): m ~ Dirichlet(alpha_part) over the labels and
  p_n = max(p_min, (label distribution of n) . m * p_mean * num_labels), capped at 1, so
  nodes holding the "favoured" labels participate more; each round independently.
- ``cyclic``: with the data-tied p_n, active for round(C p_n) (at least 1) consecutive
  rounds, inactive for the rest of a C-round cycle (at least 1), at a uniformly random
  phase. The official code starts every node somewhere in its inactive stretch; a uniform
  phase over the whole cycle gives the same long-run behaviour and is stationary from
  round 1. The reported probability is the exact long-run share active/(active + inactive).
- ``markov``: with the data-tied p_n, a two-state chain with to-active probability q and
  to-inactive probability q (1/p_n - 1), both rescaled so neither exceeds 1 (stationary
  share exactly p_n); starts active with probability p_n; transitions before each round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from flowerbed.core.rng import Stream, stream
from flowerbed.simulation.participation import Participation

if TYPE_CHECKING:
    from flowerbed.clients.data import FederatedData
    from flowerbed.core.params import Config


def heterogeneous_probabilities(num_nodes: int, p_mean: float, p_min: float,
                                rng: np.random.Generator) -> np.ndarray:
    """p_n = p_min + (1 - p_min) Beta(a, b), E[p_n] = p_mean, a + b = 2."""
    if p_mean >= 1.0 or p_mean - p_min < 1e-12:
        return np.full(num_nodes, p_mean)
    mu = (p_mean - p_min) / (1.0 - p_min)
    return p_min + (1.0 - p_min) * rng.beta(2.0 * mu, 2.0 * (1.0 - mu), num_nodes)


def data_probabilities(label_counts: np.ndarray, p_mean: float, p_min: float, alpha: float,
                       rng: np.random.Generator) -> np.ndarray:
    """FedAU's p_n = max(p_min, q_n . m * p_mean * L), q_n node n's label distribution."""
    num_labels = label_counts.shape[1]
    q = label_counts / np.maximum(label_counts.sum(axis=1, keepdims=True), 1)
    m = rng.dirichlet(alpha * np.ones(num_labels))
    return np.clip(np.maximum(p_min, q @ m * p_mean * num_labels), 0.0, 1.0)


class Bernoulli(Participation):
    """Node n is available independently each round with probability p_n."""

    def __init__(self, probabilities: np.ndarray, seed: int) -> None:
        super().__init__(len(probabilities), seed)
        self.probabilities = np.asarray(probabilities, dtype=np.float64)
        self._last: tuple[int, np.ndarray] | None = None

    def draw(self) -> np.ndarray:
        return self.rng.random(self.num_nodes) < self.probabilities

    def available(self, server_round: int) -> np.ndarray:
        # the same round asked twice gives the same answer (and consumes no randomness)
        if self._last is None or self._last[0] != server_round:
            self._last = (server_round, np.flatnonzero(self.draw()))
        return self._last[1]

    def state_dict(self) -> dict[str, Any]:
        last = None if self._last is None else [self._last[0], self._last[1].tolist()]
        return {**super().state_dict(), "last": last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        last = state.get("last")
        self._last = None if last is None else (int(last[0]), np.asarray(last[1], np.int64))


class Cyclic(Participation):
    """Active for ``active_n`` rounds, then inactive for ``inactive_n``, random phase."""

    def __init__(self, target: np.ndarray, cycle: int, seed: int) -> None:
        super().__init__(len(target), seed)
        self.active = np.maximum(1, np.round(cycle * np.asarray(target))).astype(np.int64)
        self.inactive = np.maximum(1, cycle - self.active)
        period = self.active + self.inactive
        self.phase = self.rng.integers(0, period)
        self.probabilities = self.active / period

    def available(self, server_round: int) -> np.ndarray:
        pos = (server_round + self.phase) % (self.active + self.inactive)
        return np.flatnonzero(pos < self.active)


class Markov(Bernoulli):
    """Two-state on/off chain per node with stationary share p_n."""

    def __init__(self, probabilities: np.ndarray, q: float, seed: int) -> None:
        super().__init__(probabilities, seed)
        p = self.probabilities
        with np.errstate(divide="ignore"):
            to_inactive = np.where(p > 0, q * (1.0 / p - 1.0), np.inf)
        scale = np.maximum(1.0, to_inactive)  # rescale both so neither exceeds 1
        self.to_active = np.where(np.isinf(scale), 0.0, q / scale)
        self.to_inactive = np.where(np.isinf(scale), 1.0, to_inactive / scale)
        self.active_now = self.rng.random(self.num_nodes) < p

    def draw(self) -> np.ndarray:
        u = self.rng.random(self.num_nodes)
        self.active_now = np.where(self.active_now, u >= self.to_inactive, u < self.to_active)
        return self.active_now.copy()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "active_now": self.active_now.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.active_now = np.asarray(state["active_now"], dtype=bool)


def build_participation(cfg: Config, data: FederatedData) -> Participation:
    """The participation model named by ``cfg.participation``, seeded by ``cfg.seed``."""
    if cfg.participation == "always":
        return Participation(cfg.num_clients, cfg.seed)
    rng = stream(cfg.seed, Stream.PARTICIPATION_PROBABILITIES)
    if cfg.participation == "bernoulli":
        p = heterogeneous_probabilities(cfg.num_clients, cfg.participation_mean,
                                        cfg.participation_min, rng)
        return Bernoulli(p, cfg.seed)
    p = data_probabilities(data.label_counts(), cfg.participation_mean, cfg.participation_min,
                           cfg.participation_alpha, rng)
    if cfg.participation == "data-bernoulli":
        return Bernoulli(p, cfg.seed)
    if cfg.participation == "cyclic":
        return Cyclic(p, cfg.cycle_length, cfg.seed)
    if cfg.participation == "markov":
        return Markov(p, cfg.markov_q, cfg.seed)
    raise ValueError(f"unknown participation pattern {cfg.participation!r}")
