"""Every built-in strategy's state is declared: a fresh strategy loaded from a checkpoint
of a run in progress equals the running one, attribute by attribute, except what its
classes list as ``scratch_fields`` (caches, values recomputed before each use).

An attribute a strategy changes during a run but lists nowhere would be lost on resume;
this finds it without knowing the strategy (it caught FedAU's ``last_omega``, which feeds
the ``fedau_mean_omega`` metric of later rounds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from flowerbed.core.state import scratch_fields
from flowerbed.run import checkpoint
from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.strategies.registry import STRATEGIES, build_strategy
from tests.conftest import tiny

EXTRA: dict[str, dict[str, Any]] = {
    "paris": {"experts": 2, "sync-every": 2},
    "teleportation": {"k-active": 3},
    "teleportation-tuned": {"tuning-metric": "nodes"},
    "modest": {"trainers": 3},
    **{name: {"step-seconds": 1.0, "speed-spread": 0.5, "concurrency": 3, "buffer-size": 2,
              "fix-interval-s": 20.0} for name in ("fedasync", "fedbuff", "fedfix")},
}


def fingerprint(value: Any, depth: int = 0) -> Any:
    """A comparable picture of ``value``: arrays by bytes, generators by state, objects by
    their attributes less their declared scratch (a few levels deep), callables by kind."""
    if isinstance(value, torch.Tensor):
        value = value.detach().numpy()
    if isinstance(value, np.ndarray):
        return ("array", str(value.dtype), value.shape, value.tobytes())
    if isinstance(value, np.random.Generator):
        return ("rng", repr(value.bit_generator.state))
    if isinstance(value, np.generic | int | float | str | bool | type(None)):
        return value
    if isinstance(value, dict):
        return sorted((repr(k), fingerprint(v, depth)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return [fingerprint(v, depth) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(repr(v) for v in value)
    if callable(value) or depth >= 3 or not hasattr(value, "__dict__"):
        return type(value).__name__
    scratch = scratch_fields(type(value))
    return (type(value).__name__, fingerprint(
        {k: v for k, v in vars(value).items() if k not in scratch}, depth + 1))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_checkpointed_strategy_is_the_running_one(tmp_path: Path, name: str) -> None:
    cfg = parse_run_config(tiny(strategy=name, num_clients=8, num_server_rounds=3,
                                fraction_train=0.5, failure_rate=0.2, seed=3,
                                **EXTRA.get(name, {})))
    running = run_experiment(cfg).strategy
    checkpoint.save(tmp_path, {"strategy": running.state_dict()})  # through the file format
    fresh = build_strategy(name, cfg, running.services)
    fresh.load_state_dict(checkpoint.read(tmp_path / checkpoint.CHECKPOINT_FILE)["strategy"])
    scratch = scratch_fields(type(running))
    differ = [attr for attr in sorted((set(vars(running)) | set(vars(fresh))) - set(scratch))
              if fingerprint(getattr(running, attr, None))
              != fingerprint(getattr(fresh, attr, None))]
    assert not differ, f"{name}: state not declared in state_fields: {differ}"
