"""Sharpness-aware local steps: FedSAM's client (Qu et al., "Generalized Federated Learning
via Sharpness Aware Minimization", ICML 2022; Caldarola et al., ECCV 2022) and the local
step of DFedSAM (Shi et al., "Improving the Model Consistency of Decentralized Federated
Learning", ICML 2023).

Each local step is SAM's (Foret et al., ICLR 2021): with g = grad f(y) on the mini-batch,
the ascent point is y + rho g / ||g|| and the step is ``y <- y - lr grad f(y + rho g/||g||)``
on the same mini-batch; the norm is over all of a client's parameters. Momentum, weight
decay and FedProx's mu apply to that gradient as in the platform's local SGD. The radius
rho is the train config's ``sam-rho`` (set by the strategy). The DFedSAM code
(``mathfinder/DFedSAM`` per the paper) was not found in the stored index; the rule follows
the papers' pseudocode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowerbed.clients.rules.base import GradAt, Tensors, per_client, per_client_norm
from flowerbed.clients.rules.sgd import LocalSGD

if TYPE_CHECKING:
    from flowerbed.clients.training import TrainParams

EPS = 1e-12  # a zero gradient gives no ascent step (not a division by zero)


class SAMClient(LocalSGD):
    name = "sam"

    @property
    def rho(self) -> float:
        return float(self.config.get("sam-rho", 0.05))

    def step(self, w: Tensors, grad_at: GradAt, opt: Tensors, p: TrainParams, s: int
             ) -> tuple[Tensors, Tensors]:
        g = grad_at(w)
        scale = self.rho / (per_client_norm(g) + EPS)
        ascent = {k: v + per_client(scale, v) * g[k] for k, v in w.items()}
        g_sam = grad_at(ascent)
        return super().step(w, lambda _: g_sam, opt, p, s)
