"""FedSpeed (Sun, Shen, Huang, Ding, Tao, "FedSpeed: Larger Local Interval, Less
Communication Round, and Higher Generalization Accuracy", ICLR 2023), the server half of
Algorithm 1 (the client half, with its prox-correction h_i kept per client and the
perturbed gradient, is :mod:`flowerbed.clients.rules.fedspeed`).

Round t sends x to the sampled clients S; client i returns x_i = y_{i,K} + h_i (its local
model plus its updated prox-correction). The server averages uniformly, as in the paper,

    x <- x + eta_g (1/|S|) sum_{i in S} (x_i - x)          (eta_g = 1: x = mean_S x_i).

One model each way per client and round, as FedAvg; h_i is client state, never traffic.
Defaults follow the official code (woodenchild95/FL-Simulator, ``train.py``: ``--lamb 0.1``,
``--rho 0.1``); see the client rule for what differs from it and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from flowerbed.core.arrays import State
from flowerbed.core.params import param, positive, unit_interval
from flowerbed.strategies.base import CentralizedParams, CentralizedStrategy, ClientUpdate


@dataclass(frozen=True)
class FedSpeedParams(CentralizedParams):
    fedspeed_lambda: float = param(0.1, "FedSpeed's prox-term weight (official 'lamb', the "
                                   "paper's 1/lambda)", positive)
    fedspeed_rho: float = param(0.1, "FedSpeed's gradient-perturbation radius rho", positive)
    fedspeed_alpha: float = param(1.0, "FedSpeed's merge weight of the perturbed gradient "
                                  "(1 = official code: the perturbed gradient only)",
                                  unit_interval)


class FedSpeed(CentralizedStrategy):
    """FedSpeed; see the module docstring."""

    Params = FedSpeedParams
    client_rule = "fedspeed"

    def rule_config(self, server_round: int) -> dict[str, Any]:
        return {"fedspeed-lambda": self.params.fedspeed_lambda,
                "fedspeed-rho": self.params.fedspeed_rho,
                "fedspeed-alpha": self.params.fedspeed_alpha}

    def aggregate(self, server_round: int, global_state: State,
                  updates: list[ClientUpdate]) -> State:
        eta_g = self.params.server_lr
        return {k: (x + eta_g * np.mean([u.state[k] - x for u in updates], axis=0)).astype(
            x.dtype) for k, x in global_state.items()}
