"""Failed nodes of decentralized strategies keep their last good model (no model is lost).

The platform side: a faulty reply reaches a strategy only as an error reply
(``msg.has_error()``), never as content (see ``VirtualGrid``). This test runs every
registered strategy that routes peer traffic through the server (the decentralized ones)
with and without 50% failing clients, and checks that the faulty run's ``state_dict()``
holds exactly the same models (names and shapes), all finite. With no decentralized
strategy registered yet, it has no cases.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowerbed.platform.checkpoint import split_arrays
from flowerbed.platform.config import parse_run_config
from flowerbed.platform.runner import run_experiment
from flowerbed.strategies.registry import STRATEGIES, strategy_class

torch.set_num_threads(1)

DECENTRALIZED = sorted(n for n in STRATEGIES
                       if getattr(strategy_class(n), "routes_through_server", False))


def models(name: str, failure_rate: float) -> tuple[dict[str, np.ndarray], dict]:
    cfg = parse_run_config({"strategy": name, "engine": "inprocess", "num-clients": 16,
                            "num-server-rounds": 4, "local-steps": 2, "k-active": 4,
                            "failure-rate": failure_rate, "wandb": False, "progress": False,
                            "tracking": False})
    result = run_experiment(cfg)
    _, arrays = split_arrays(result.strategy.state_dict())
    return arrays, result.summary["totals"]


@pytest.mark.parametrize("name", DECENTRALIZED)
def test_failing_nodes_lose_no_model(name):
    clean, _ = models(name, 0.0)
    faulty, totals = models(name, 0.5)
    assert clean, f"{name}.state_dict() must hold its node/slot models (checkpoints need them)"
    assert totals["failed"] > 0
    lost = sorted(set(clean) - set(faulty))
    assert lost == [], f"models lost: {lost}"
    assert {k: v.shape for k, v in faulty.items()} == {k: v.shape for k, v in clean.items()}
    assert all(np.isfinite(v).all() for v in faulty.values()
               if np.issubdtype(v.dtype, np.floating))
