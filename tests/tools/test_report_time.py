"""Reports on simulated time: step functions, time to target, jitter, the table and plot."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from flowerbed.tools.cli import main
from flowerbed.tools.report_time import jitter, time_table, time_to_target, value_at
from flowerbed.tools.sweep import load_sweep, run_sweep

# evaluations at 0, 10, 25, 40 s
TL = (np.array([0.0, 10.0, 25.0, 40.0]), np.array([0.1, 0.5, 0.9, 0.7]))


def test_value_at_is_the_last_evaluation_at_or_before_t() -> None:
    got = value_at(TL, np.array([0.0, 9.9, 10.0, 24.0, 25.0, 100.0]))
    np.testing.assert_array_equal(got, [0.1, 0.1, 0.5, 0.5, 0.9, 0.7])


def test_time_to_target_is_the_first_evaluation_that_reaches_it() -> None:
    assert time_to_target(TL, 0.5) == 10.0
    assert time_to_target(TL, 0.8) == 25.0
    assert time_to_target(TL, 0.95) is None
    assert time_to_target(TL, 0.6, higher=False) == 0.0  # a loss: <= target


def test_jitter_is_the_mean_change_on_the_grid_of_the_second_half() -> None:
    """H = 40, g = 5: grid 20, 25, 30, 35, 40 -> values 0.5, 0.9, 0.9, 0.9, 0.7; changes
    0.4, 0, 0, 0.2: mean 0.15."""
    assert jitter(TL, 40.0, 5.0) == pytest.approx(0.15)


def test_time_table_rows() -> None:
    other = (np.array([0.0, 30.0]), np.array([0.2, 0.8]))
    table = time_table({"a": [TL, other]}, "test_accuracy",
                       {"time-target": 0.8, "time-horizon-s": 40.0, "time-grid-s": 5.0})
    row = [c.strip() for c in table.splitlines()[2].split("|")[1:-1]]
    # reached at 25 and 30 s: 27.5 ± 3.5; at 40 s: 0.7 and 0.8 (the second run ended at
    # 30 s: said); jitter 0.15 and (grid 0.2, 0.2, 0.8, 0.8, 0.8) 0.6 / 4 = 0.15
    assert row[:4] == ["a", "2", "28 ± 4", "2/2"]
    assert row[4] == "0.7500 ± 0.0707 (ran shorter)"
    assert row[5] == "0.1500 ± 0.0000"
    assert row[6] == "35 ± 7"


SWEEP = """
name = "tiny-timed"
seeds = [0, 1]

[base]
num-clients = 6
num-server-rounds = 3
fraction-train = 0.5
local-steps = 2
batch-size = 16
wandb = false
step-seconds = 1.0
speed-spread = 1.0

[[configs]]
label = "FedAvg"
strategy = "fedavg"

[[configs]]
label = "FedBuff"
strategy = "fedbuff"
concurrency = 3
buffer-size = 2

[report]
metric = "test_accuracy"
time-target = 0.0
time-horizon-s = 4.0
"""


def test_a_timed_sweep_gets_the_time_plot_and_table(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(SWEEP)
    sweep = load_sweep(path)
    run_sweep(sweep, stream=io.StringIO())
    out = tmp_path / "report"
    assert main(["report", str(sweep.folder), "--out", str(out)]) == 0
    assert (out / "accuracy_vs_time.png").stat().st_size > 10_000
    text = (out / "report.md").read_text()
    assert "## On simulated time" in text and "![accuracy_vs_time](accuracy_vs_time.png)" in text
    rows = {ln.split("|")[1].strip(): ln for ln in text.split("## On simulated time")[1]
            .splitlines() if ln.startswith("| Fed")}
    assert set(rows) == {"FedAvg", "FedBuff"}
    # target 0: reached at the first evaluation, t = 0, by both seeds
    assert all("| 0 ± 0 | 2/2 |" in ln for ln in rows.values())
    results = [json.loads(x) for x in (sweep.folder / "results.jsonl").read_text().splitlines()]
    assert all(r["totals"]["sim_time_s"] > 0 for r in results)
