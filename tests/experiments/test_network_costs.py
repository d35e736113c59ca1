"""Experiment 5: the ledgers of real runs agree with the course exercise numbers."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from flowerbed.tools import costs
from flowerbed.tools.experiments.network_costs import (
    Exercise,
    closed_form,
    measure_dpsgd,
    measure_fedavg,
    run_network_costs,
)
from tests.conftest import ROOT

RAW = tomllib.loads((ROOT / "experiments" / "network_costs.toml").read_text())


def test_closed_form_reproduces_the_exercise() -> None:
    cf = closed_form(Exercise.from_dict(RAW["exercise"]))
    assert (cf["n_download"], cf["n_upload"], cf["n_max"]) == (22_033, 2_203, 2_203)
    assert round(cf["download_cost_usd"], 2) == 110.65
    assert cf["dpsgd_messages"] == 67_456


def test_fedavg_ledger_bytes_per_round_are_clients_times_model_bytes() -> None:
    fed = measure_fedavg({**RAW["fedavg"], "num-server-rounds": 2})
    assert fed["num_params"] == 85_098
    assert fed["participants"] == [10, 10]
    assert fed["round_bytes_down"] == [10 * 85_098 * 4] * 2
    assert fed["round_bytes_up"] == [10 * 85_098 * 4] * 2
    cap = costs.server_capacity(fed["client_bytes_down"], 1e9, 100e6, 60)
    assert (cap.n_download, cap.n_upload) == (22_033, 2_203)


def test_dpsgd_ledger_counts_the_exercise_messages() -> None:
    d = measure_dpsgd(RAW["dsgd"])
    assert d["messages"] == 67_456
    # 128 nodes x 8 neighbours per step; the last step adds the all-reduce's 128 x 127.
    assert d["per_round"] == [0] + [1024] * 49 + [1024 + 128 * 127]


def test_runner_writes_the_report_plots_and_tracked_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    path = run_network_costs({**RAW, "name": "network-costs"}, tmp_path / "network-costs",
                             runs)
    text = path.read_text()
    assert "| clients supported by download (60 s, 1 Gbit/s) | 22,033 | 22,033 |" in text
    assert "| clients supported by upload (60 s, 100 Mbit/s) | 2,203 | 2,203 |" in text
    assert "$110.65 | $110.65" in text
    assert "| 67,456 | 67,456 |" in text
    for png in ("capacity.png", "messages.png"):
        assert (path.parent / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in text
    for section in ("fedavg", "fedavg-lstm", "dsgd"):
        summary = json.loads((runs / section / "summary.json").read_text())
        assert summary["status"] == "completed"
        assert summary["config"]["wandb-group"] == "network-costs"
        assert (runs / section / "metrics.jsonl").exists()
        assert any((runs / section / "wandb").glob("offline-run-*"))
    dsgd = json.loads((runs / "dsgd" / "summary.json").read_text())
    assert dsgd["totals"]["cum_messages"] == 67_456
