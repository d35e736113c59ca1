"""One in-process run: it learns, is reproducible, and leaves every output file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from tests.conftest import tiny


def test_fedavg_learns_and_is_reproducible() -> None:
    cfg = parse_run_config(tiny(num_clients=20, num_server_rounds=5, fraction_train=0.5, lr=0.3))
    a = run_experiment(cfg)
    b = run_experiment(cfg)
    accs = [r["test_accuracy"] for r in a.records]
    assert accs[-1] > accs[0] + 0.3
    assert [r["test_accuracy"] for r in b.records] == accs
    assert [r["train_loss"] for r in b.records] == [r["train_loss"] for r in a.records]


def test_outputs_and_offline_wandb_without_api_key(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """No API key and no network: W&B logs offline, the run neither dies nor hangs."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a key
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    cfg = parse_run_config(tiny(tracking=True, wandb=True, output_dir=str(tmp_path / "out"),
                                run_name="r1", num_server_rounds=3))
    result = run_experiment(cfg)
    run_dir = tmp_path / "out" / "r1"
    assert result.run_dir == run_dir
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in lines] == [0, 1, 2, 3]
    for key in ("wall_time", "train_loss", "test_accuracy", "test_loss", "participants",
                "cum_bytes_up", "cum_bytes_down", "cum_messages"):
        assert key in lines[-1]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["config"]["num-clients"] == 10
    assert summary["final"]["test_accuracy"] == lines[-1]["test_accuracy"]
    assert summary["best"]["test_accuracy"] == max(r["test_accuracy"] for r in lines)
    assert summary["totals"]["cum_messages"] == lines[-1]["cum_messages"]
    assert (run_dir / "curves.png").stat().st_size > 10_000
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    assert list(offline[0].glob("*.wandb"))
    assert summary["artifacts"]["wandb_sync"] == f"wandb sync {offline[0]}"  # exact command


def test_tracking_off_writes_nothing(tmp_path: Path) -> None:
    cfg = parse_run_config(tiny(tracking=False, output_dir=str(tmp_path / "out")))
    result = run_experiment(cfg)
    assert result.run_dir is None
    assert not (tmp_path / "out").exists()
