"""CHOCO-SGD: decentralized SGD with compressed gossip (Koloskova, Stich, Jaggi, ICML 2019,
"Decentralized Stochastic Optimization and Gossip Algorithms with Compressed Communication",
Algorithm 2; official code ``epfml/ChocoSGD``).

Every node i keeps its model x_i and a *public copy* x̂_i that all its neighbours hold too
(they apply the same updates to it). Round t, per the paper's Algorithm 2:

1. x_i^{t+1/2} = x_i^t - eta g_i (the node's local steps; an unavailable or failed node
   keeps x_i^t);
2. q_i = Q(x_i^{t+1/2} - x̂_i): the only thing node i sends, to each neighbour;
3. x̂_j += q_j for itself and every neighbour j (everyone applies the same q's);
4. x_i^{t+1} = x_i^{t+1/2} + gamma sum_j W_ij (x̂_j - x̂_i), gamma the consensus step size.

Q is the run's codec (``codec``, :mod:`flowerbed.core.codecs`), applied tensor by tensor;
the ledger charges each directed edge of the round's topology step one encoded q (e.g.
top-k: 8 k bytes per tensor). With ``codec = "none"`` (Q = identity) and gamma = 1 a round
is exactly D-SGD's x <- W x^{t+1/2}. The local training sends nothing in a deployment, so
the platform does not compress it (``compresses_itself``); ``error-feedback`` is refused:
x̂ is CHOCO's own memory of what was not yet sent.

Pinned against the paper and the official code, with these differences stated:
- x̂_i^{(0)} = x^{(0)} (the shared initial model every node knows), as the official convex
  code initialises it (``x_hat = copy(x)``); the paper and the official deep-learning code
  start from 0, which costs the first rounds sending the model itself.
- the official code (both the convex ``logistic.py`` and the deep-learning
  ``parallel_choco.py``) runs the consensus step with the x̂ of the previous round and then
  compresses x^{t+1} - x̂; here the paper's order is used (compress the half step, update
  x̂, then consensus), which makes Q = identity, gamma = 1 exactly D-SGD.
- QSGD as Q: the paper (and the official convex code's ``qsgd-biased``) rescales QSGD by
  1 / tau, tau = 1 + min(d / s^2, sqrt(d) / s), to make it a contraction; done here per
  tensor. Random-k is the unscaled (``random-biased``) variant, top-k as in the paper.
- several local steps (``local-steps`` > 1) per gossip round are our generalisation; the
  paper takes one stochastic gradient step per round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.serverapp import Grid

from flowerbed.core.arrays import flatten, unflatten
from flowerbed.core.errors import ConfigError
from flowerbed.core.params import param, unit_interval_open_left
from flowerbed.core.rng import Stream, stream
from flowerbed.strategies.contract import Services
from flowerbed.strategies.decentralized import (
    DecentralizedParams,
    TopologyParams,
    TopologyStrategy,
)


@dataclass(frozen=True)
class ChocoParams(TopologyParams, DecentralizedParams):
    consensus_step: float = param(0.5, "CHOCO-SGD: consensus step size gamma",
                                  unit_interval_open_left)


class ChocoSGD(TopologyStrategy):
    Params = ChocoParams
    compresses_itself = True  # the platform leaves its training replies uncompressed
    state_fields = ("xhat",)

    @classmethod
    def check_run(cls, values: dict[str, Any]) -> None:
        if values.get("error-feedback"):
            raise ConfigError("error-feedback", True, "must be false with strategy choco: "
                              "its public copies x̂ already keep what was not sent")

    def __init__(self, params: ChocoParams, services: Services) -> None:
        super().__init__(params, services)
        self.codec = services.codec
        self.xhat: np.ndarray = np.zeros((0, 0), np.float32)

    def init_models(self, x0: np.ndarray) -> np.ndarray:
        self.xhat = self.store.tile(x0, self.n)
        return super().init_models(x0)

    def after_load(self) -> None:
        super().after_load()
        self.xhat = self.store.copy(np.asarray(self.xhat, np.float32))

    def compress(self, v: np.ndarray, server_round: int, node: int) -> np.ndarray:
        """q = Q(v) for one node's flat vector (decoded: what every neighbour adds)."""
        if not self.codec.active:
            return v
        rng = stream(self.services.seed, Stream.CODEC, server_round, node, 1)
        tensors = unflatten(v, self.like)
        q = self.codec.decode(self.codec.encode(tensors, rng),
                              {k: np.shape(a) for k, a in self.like.items()})
        if self.codec.name == "qsgd":  # the paper's contraction: QSGD / tau, per tensor
            s = self.codec.levels
            for k, a in q.items():
                d = max(a.size, 1)
                q[k] = a / np.float32(1 + min(d / s**2, math.sqrt(d) / s))
        return flatten(q).astype(np.float32)

    def step(self, server_round: int, grid: Grid, timeout: float) -> None:
        half = self.trained_half(grid, server_round, timeout)
        for i in range(self.n):  # q_i = Q(x_i^{t+1/2} - x̂_i); x̂_i += q_i everywhere
            self.xhat[i] += self.compress(half[i] - self.xhat[i], server_round, i)
        step = server_round - 1
        gamma = np.float32(self.params.consensus_step)
        self.x = (half + gamma * (self.topology.mix(self.xhat, step) - self.xhat)
                  ).astype(np.float32)
        self.record_topology(self.topology, step)  # each edge j -> i carries q_j


__all__ = ["ChocoParams", "ChocoSGD"]
