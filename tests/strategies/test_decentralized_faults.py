"""Failed nodes of decentralized strategies keep their last good model (no model is lost).

The platform side: a faulty reply reaches a strategy only as an error reply
(``msg.has_error()``), never as content (see ``VirtualGrid``). :func:`lost_models` runs a
strategy with and without 50% failing clients and lists the models (``state_dict()``
arrays) that the faulty run lost or holds with other shapes or non-finite values.
It runs on every registered strategy that routes peer traffic through the server (the
decentralized ones), and on two small gossip strategies below that show the check can
tell a strategy that keeps its models from one that drops a failed node's model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from flowerbed.core.arrays import State, from_record, to_record
from flowerbed.run.checkpoint import split_arrays
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.strategies import registry
from flowerbed.strategies.contract import PlatformStrategy, Services

torch.set_num_threads(1)

DECENTRALIZED = sorted(n for n in registry.STRATEGIES
                       if getattr(registry.strategy_class(n), "routes_through_server", False))


def lost_models(name: str) -> tuple[list[str], int]:
    """(models lost or broken under 50% failures, failures injected)."""
    def models(failure_rate: float) -> tuple[dict[str, np.ndarray], dict]:
        cfg = parse_run_config({"strategy": name, "engine": "inprocess", "num-clients": 16,
                                "num-server-rounds": 4, "local-steps": 2, "k-active": 4,
                                "failure-rate": failure_rate, "wandb": False,
                                "progress": False, "tracking": False})
        result = run_experiment(cfg)
        return split_arrays(result.strategy.state_dict())[1], result.summary["totals"]

    clean, _ = models(0.0)
    faulty, totals = models(0.5)
    assert clean, f"{name}.state_dict() must hold its node/slot models (checkpoints need them)"
    lost = [k for k, v in clean.items() if k not in faulty or faulty[k].shape != v.shape
            or (np.issubdtype(faulty[k].dtype, np.floating)
                and not np.isfinite(faulty[k]).all())]
    return lost, totals["failed"]


@pytest.mark.parametrize("name", DECENTRALIZED)
def test_failing_nodes_lose_no_model(name):
    lost, failed = lost_models(name)
    assert failed > 0
    assert lost == [], f"models lost: {lost}"


class ToyGossip(PlatformStrategy, Strategy):
    """One model per node; each round every node trains its own model (a test double)."""

    routes_through_server = True
    forget_failed = False  # the bug the check must catch

    def __init__(self, params: Any, services: Services) -> None:
        self.params, self.services = params, services

    def configure_train(self, *args: Any) -> list[Message]:
        return []

    def aggregate_train(self, *args: Any) -> tuple[None, None]:
        return None, None

    def configure_evaluate(self, *args: Any) -> list[Message]:
        return []

    def aggregate_evaluate(self, *args: Any) -> MetricRecord | None:
        return None

    def summary(self) -> None:
        return None

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3,
              timeout: float = 3600, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
              first_round: int = 1) -> None:
        init = from_record(initial_arrays)
        self.models: dict[int, State] = {i: dict(init) for i in range(self.services.num_nodes)}
        if evaluate_fn:
            evaluate_fn(0, initial_arrays)
        for r in range(first_round, num_rounds + 1):
            msgs = [Message(RecordDict({"arrays": to_record(self.models[n]), "config":
                                        ConfigRecord({"server-round": r})}),
                            dst_node_id=n, message_type=MessageType.TRAIN)
                    for n in grid.get_node_ids() if n in self.models]
            for reply in grid.send_and_receive(msgs, timeout=timeout):
                node = reply.metadata.src_node_id
                if not reply.has_error():
                    self.models[node] = from_record(reply.content["arrays"])
                elif self.forget_failed:
                    del self.models[node]
            if evaluate_fn:
                evaluate_fn(r, to_record(self.models[min(self.models)]))

    def state_dict(self) -> dict[str, Any]:
        return {"models": {str(k): v for k, v in self.models.items()}}


class ForgetfulGossip(ToyGossip):
    forget_failed = True


def test_the_check_tells_keeping_from_losing(monkeypatch):
    monkeypatch.setitem(registry.STRATEGIES, "toy-gossip", f"{__name__}:ToyGossip")
    monkeypatch.setitem(registry.STRATEGIES, "forgetful", f"{__name__}:ForgetfulGossip")
    lost, failed = lost_models("toy-gossip")
    assert failed > 0 and lost == []
    lost, failed = lost_models("forgetful")
    assert len(lost) > 0
