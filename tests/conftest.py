"""Shared test setup: never touch the network, keep W&B and Flower state in temp dirs."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")
# built-in datasets kept between runs go to a folder of this session, not ~/.cache
_KEPT = tempfile.mkdtemp(prefix="flowerbed-test-cache-")
os.environ["FLOWERBED_CACHE_DIR"] = _KEPT
atexit.register(shutil.rmtree, _KEPT, ignore_errors=True)

ROOT = Path(__file__).resolve().parents[1]


def tiny(**overrides: Any) -> dict[str, Any]:
    """A small in-process run config (kebab-case keys; snake_case accepted here)."""
    cfg: dict[str, Any] = {"engine": "inprocess", "num-clients": 10, "num-server-rounds": 2,
                           "fraction-train": 1.0, "tracking": False, "progress": False,
                           "wandb": False, "local-epochs": 1, "batch-size": 16}
    cfg.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return cfg


@pytest.fixture
def tiny_config() -> Any:
    return tiny


@pytest.fixture
def flowerbed_logs(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
                   ) -> pytest.LogCaptureFixture:
    """caplog for the 'flowerbed' logger, even after setup_logging stopped it propagating."""
    monkeypatch.setattr(logging.getLogger("flowerbed"), "propagate", True)
    caplog.set_level(logging.INFO, logger="flowerbed")
    return caplog
