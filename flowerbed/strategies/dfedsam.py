"""DFedSAM and DFedSAM-MGS (Shi et al., "Improving the Model Consistency of Decentralized
Federated Learning", ICML 2023).

D-SGD (:mod:`flowerbed.strategies.dsgd`) whose nodes take sharpness-aware local steps (the
client rule :mod:`flowerbed.clients.rules.sam`, radius ``sam-rho``), followed by Q gossip
steps per round (``gossip-steps``; Q = 1 is DFedSAM, Q > 1 is DFedSAM-MGS, "multiple gossip
steps", which the paper shows narrows the gap to the centralized model as Q grows, at Q
times the peer traffic: every gossip step is in the ledger). With a time-varying topology,
gossip step q of round t uses the topology at step (t - 1) Q + q. The authors' code was not
found in the stored index; the rule follows the paper's Algorithms 1 and 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowerbed.core.params import param, positive
from flowerbed.strategies.dsgd import DSGD, DSGDParams
from flowerbed.strategies.fedsam import SAMParams


@dataclass(frozen=True)
class DFedSAMParams(SAMParams, DSGDParams):
    gossip_steps: int = param(1, "dfedsam: gossip steps Q per round (Q > 1: DFedSAM-MGS)",
                              positive)


class DFedSAM(DSGD):
    Params = DFedSAMParams

    def local_config(self) -> dict[str, Any]:
        return {"client-rule": "sam", "sam-rho": self.params.sam_rho}

    def gossip_schedule(self, server_round: int) -> list[int]:
        q = self.params.gossip_steps
        return [(server_round - 1) * q + g for g in range(q)]
