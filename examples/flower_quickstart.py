"""A strategy written for a vanilla Flower app, run by flowerbed unchanged.

Flower's quickstarts subclass ``flwr.serverapp.strategy.FedAvg`` and override one of its
message-API methods. Nothing here knows flowerbed: name it by import path,
``strategy = "examples.flower_quickstart:FedAvgWithHistory"``, and its constructor's
parameters (``fraction-train``, ``min-available-nodes``, ...) become run-config keys.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAvg


class FedAvgWithHistory(FedAvg):
    """FedAvg that remembers how many replies it aggregated in each round."""

    def __init__(self, fraction_train: float = 1.0, min_available_nodes: int = 2) -> None:
        super().__init__(fraction_train=fraction_train, fraction_evaluate=0.0,
                         min_available_nodes=min_available_nodes)
        self.history: dict[int, int] = {}

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        self.history[server_round] = sum(not m.has_error() for m in replies)
        return super().aggregate_train(server_round, replies)
