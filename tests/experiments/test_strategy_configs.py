"""experiments/strategies/: one run config per strategy, each valid as it stands."""

from __future__ import annotations

import tomllib

import pytest

from flowerbed.run.config import parse_run_config
from flowerbed.strategies.registry import STRATEGIES
from tests.conftest import ROOT

CONFIGS = sorted((ROOT / "experiments" / "strategies").glob("*.toml"))


def test_every_strategy_has_a_run_config() -> None:
    named = {tomllib.loads(p.read_text())["strategy"] for p in CONFIGS}
    assert named == set(STRATEGIES) - {"fedavg"}  # fedavg is the pyproject default


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_run_config_is_valid(path) -> None:
    cfg = parse_run_config(tomllib.loads(path.read_text()))
    assert cfg.strategy in STRATEGIES
