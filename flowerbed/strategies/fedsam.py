"""FedSAM (Qu et al., "Generalized Federated Learning via Sharpness Aware Minimization",
ICML 2022): FedAvg whose clients take sharpness-aware local steps (the client rule
:mod:`flowerbed.clients.rules.sam`) of radius ``sam-rho``; the server averages as FedAvg.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowerbed.core.params import param, positive
from flowerbed.strategies.base import CentralizedParams
from flowerbed.strategies.fedavg import FedAvg


@dataclass(frozen=True)
class SAMParams:
    sam_rho: float = param(0.05, "SAM's perturbation radius rho (FedSAM, DFedSAM)", positive)


@dataclass(frozen=True)
class FedSAMParams(SAMParams, CentralizedParams):
    pass


class FedSAM(FedAvg):
    Params = FedSAMParams
    client_rule = "sam"

    def rule_config(self, server_round: int) -> dict[str, Any]:
        return {"sam-rho": self.params.sam_rho}
