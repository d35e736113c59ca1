"""A user's client-side algorithm: local SGD whose every step is clipped, and its strategy.

The client rule (:class:`ClippedSGD`) changes how a client trains; the strategy
(:class:`FedAvgClipped`) names it and sends it its hyperparameter. Both are found by import
path, so no fork is needed:
``flowerbed run . -c 'strategy="examples.my_client_rule:FedAvgClipped" step-clip=0.5'``.

A rule sees every client of a worker's batch at once: each tensor has a leading client axis,
and the worker runs the rule under ``vmap`` (or client by client, with the same results).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowerbed.clients.rules.base import (
    ClientRule,
    GradAt,
    Tensors,
    per_client,
    per_client_norm,
)
from flowerbed.clients.training import TrainParams
from flowerbed.core.params import param, positive
from flowerbed.strategies.base import CentralizedParams
from flowerbed.strategies.fedavg import FedAvg


class ClippedSGD(ClientRule):
    """y <- y - lr * g * min(1, C / ||g||): each step's gradient clipped to norm C
    (``step-clip`` in the train config), the norm over all of a client's parameters."""

    name = "clipped-sgd"

    def step(self, w: Tensors, grad_at: GradAt, opt: Tensors, p: TrainParams, s: int
             ) -> tuple[Tensors, Tensors]:
        g = grad_at(w)
        clip = float(self.config["step-clip"])
        scale = (clip / per_client_norm(g).clamp_min(1e-12)).clamp(max=1.0)  # (clients,)
        return {k: v - p.lr * per_client(scale, v) * g[k] for k, v in w.items()}, opt


@dataclass(frozen=True)
class FedAvgClippedParams(CentralizedParams):
    step_clip: float = param(1.0, "largest norm of a local step's gradient", positive)


class FedAvgClipped(FedAvg):
    """FedAvg whose clients run :class:`ClippedSGD`."""

    Params = FedAvgClippedParams
    client_rule = "examples.my_client_rule:ClippedSGD"

    def rule_config(self, server_round: int) -> dict[str, Any]:
        return {"step-clip": self.params.step_clip}
