"""Every run shows the number its strategy is judged by: summary.json, console, curves.png."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import RunResult, run_experiment
from tests.conftest import tiny


def _tracked(tmp_path: Path, name: str, **over: Any) -> tuple[RunResult, dict, list[dict]]:
    cfg = parse_run_config(tiny(tracking=True, progress=True, output_dir=str(tmp_path),
                                run_name=name, **over))
    res = run_experiment(cfg)
    summary = json.loads((tmp_path / name / "summary.json").read_text())
    lines = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return res, summary, lines


def test_paris_with_a_router_is_judged_by_its_routed_ensemble(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flowerbed.progress")
    _, summary, lines = _tracked(tmp_path, "paris", strategy="paris", experts=2,
                                 sync_every=0, router_epochs=1, num_clients=4,
                                 num_server_rounds=2, local_steps=2)
    last = lines[-1]
    assert summary["primary"]["metric"] == "ensemble_accuracy"
    assert summary["primary"]["value"] == last["ensemble_accuracy"]
    # router_accuracy needs data-cluster groups: a companion the run did not log is left out
    assert summary["primary"]["companions"] == {"averaged_accuracy": last["averaged_accuracy"]}
    assert last["ensemble_accuracy"] != last["test_accuracy"]  # a different number
    assert (tmp_path / "paris" / "curves.png").stat().st_size > 10_000
    end = [r.getMessage() for r in caplog.records if r.getMessage().startswith("done in")]
    assert len(end) == 1
    assert f"final routed ensemble accuracy {last['ensemble_accuracy']:.4f}" in end[0]
    assert f"experts' average accuracy {last['averaged_accuracy']:.4f}" in end[0]
    rounds = [r.getMessage() for r in caplog.records if r.getMessage().startswith("round   2")]
    assert f"routed ensemble accuracy {last['ensemble_accuracy']:.4f}" in rounds[0]


def test_paris_without_a_router_is_judged_by_the_experts_average(tmp_path: Path) -> None:
    _, summary, lines = _tracked(tmp_path, "avg", strategy="paris", experts=2, sync_every=1,
                                 num_clients=4, num_server_rounds=1, local_steps=1)
    assert summary["primary"]["metric"] == "test_accuracy"
    assert summary["primary"]["value"] == lines[-1]["test_accuracy"]
    assert "ensemble_accuracy" not in lines[-1]


def test_decentralized_is_judged_by_x_bar_with_the_node_mean_beside_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flowerbed.progress")
    _, summary, lines = _tracked(tmp_path, "dsgd", strategy="dsgd", topology="ring",
                                 num_clients=6, eval_nodes=3, num_server_rounds=2,
                                 local_steps=2)
    last = lines[-1]
    p = summary["primary"]
    assert (p["metric"], p["label"]) == ("test_accuracy", "x-bar accuracy")
    assert p["value"] == last["test_accuracy"]
    assert p["companions"] == {"node_accuracy_mean": last["node_accuracy_mean"]}
    end = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("done in"))
    assert f"final x-bar accuracy {last['test_accuracy']:.4f}" in end
    assert f"mean per-node accuracy {last['node_accuracy_mean']:.4f}" in end


def test_centralized_summary_names_test_accuracy(tmp_path: Path) -> None:
    _, summary, lines = _tracked(tmp_path, "fedavg", num_server_rounds=1, local_steps=1)
    assert summary["primary"] == {"metric": "test_accuracy",
                                  "value": lines[-1]["test_accuracy"],
                                  "label": "test accuracy", "companions": {}}
