"""Reports: files exist and the table's numbers are the mean/std of results.jsonl."""

from __future__ import annotations

import io
import json
import re
import statistics
from pathlib import Path

import pytest

from flowerbed.tools.cli import main
from flowerbed.tools.report import curves
from flowerbed.tools.sweep import Sweep, load_sweep, run_sweep

SWEEP = """
name = "tiny-report"
seeds = [0, 1]

[base]
num-clients = 5
num-server-rounds = 2
fraction-train = 1.0
local-steps = 2
batch-size = 16
wandb = false

[[configs]]
label = "slow"
lr = 0.02

[[configs]]
label = "fast"
lr = 0.3
"""


def _sweep_and_report(tmp_path: Path, text: str) -> tuple[Sweep, Path]:
    """Run the sweep file ``text``, then ``flowerbed report`` it into tmp_path/report."""
    path = tmp_path / "s.toml"
    path.write_text(text)
    sweep = load_sweep(path)
    run_sweep(sweep, stream=io.StringIO())
    out = tmp_path / "report"
    assert main(["report", str(sweep.folder), "--out", str(out)]) == 0
    return sweep, out


def test_report_from_a_tiny_sweep(tmp_path: Path) -> None:
    sweep, out = _sweep_and_report(tmp_path, SWEEP)
    for name in ("report.md", "accuracy_vs_round.png", "accuracy_vs_bytes.png",
                 "results.jsonl"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "accuracy_vs_round.png").stat().st_size > 10_000

    results = [json.loads(x) for x in (sweep.folder / "results.jsonl").read_text().splitlines()]
    text = (out / "report.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| slow") or
            line.startswith("| fast")}
    assert set(rows) == {"slow", "fast"}
    for label, cells in rows.items():
        mine = [r for r in results if r["label"] == label]
        assert len(mine) == 2 and cells[0] == "2"
        for col, section in ((1, "final"), (2, "best")):
            vals = [r[section]["test_accuracy"] for r in mine]
            mean, std = (float(x) for x in re.findall(r"[-0-9.]+", cells[col]))
            assert abs(mean - statistics.mean(vals)) < 5e-5
            assert abs(std - statistics.stdev(vals)) < 5e-5
        mib = [r["totals"]["bytes"] / 2**20 for r in mine]
        mean, std = (float(x) for x in re.findall(r"[-0-9.]+", cells[3]))
        assert abs(mean - statistics.mean(mib)) < 5e-3
        assert abs(std - statistics.stdev(mib)) < 5e-3
    assert "![accuracy_vs_round](accuracy_vs_round.png)" in text

    # the plotted band is the per-round mean/std over the seeds' metrics.jsonl
    c = curves(results, "test_accuracy", sweep.folder)
    rounds, mean, std, _ = c["fast"]
    assert list(rounds) == [0, 1, 2]
    per_seed = [[json.loads(x)["test_accuracy"] for x in
                 ((sweep.folder / r["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
                for r in results if r["label"] == "fast"]
    for t in range(3):
        vals = [s[t] for s in per_seed]
        assert abs(mean[t] - statistics.mean(vals)) < 1e-12
        assert abs(std[t] - statistics.stdev(vals)) < 1e-12


def test_tuning_choice_picks_the_best_mean_over_seeds() -> None:
    from flowerbed.tools.report import choice_table, choose

    def res(n: int, k: int, seed: int, loss: float) -> dict:
        return {"params": {"num-clients": n, "k-active": k}, "seed": seed,
                "final": {"test_loss": loss}}

    results = [res(16, 1, 0, 0.9), res(16, 1, 1, 0.5),  # mean 0.7
               res(16, 4, 0, 0.6), res(16, 4, 1, 0.7),  # mean 0.65: chosen
               res(64, 1, 0, 0.3), res(64, 8, 0, 0.4),
               {"params": {"num-clients": 64, "topology": "ring"}, "seed": 0,
                "final": {"test_loss": 0.0}}]  # not a candidate: no k-active
    rows = choose(results, "k-active", "num-clients", "test_loss", maximize=False)
    assert [(n, k) for n, k, _, _ in rows] == [(16, 4), (64, 1)]
    assert abs(rows[0][2] - 0.65) < 1e-12
    assert rows[0][3] == pytest.approx({1: 0.7, 4: 0.65})
    assert choose(results, "k-active", "num-clients", "test_loss", True)[0][1] == 1
    assert "| 16 | 4 | 0.6500 | 1: 0.7000, 4: 0.6500 |" in choice_table(
        rows, "k-active", "num-clients", "test_loss")


def _run(config: str, n: int, lr: float, seed: int, loss: float, k: float | None = None
         ) -> dict:
    final = {"node_loss_mean": loss, **({"chosen_k": k} if k is not None else {})}
    return {"label": f"{config} (num-clients={n}, lr={lr})", "config": config,
            "params": {"num-clients": n, "lr": lr}, "seed": seed, "final": final}


def test_choice_per_configuration_and_parameter(tmp_path: Path) -> None:
    from flowerbed.tools.report import choice_table, choose, chosen_runs, scaling_plot

    results = [_run("ring", 16, 0.1, 0, 0.4), _run("ring", 16, 0.1, 1, 0.6),  # mean 0.5
               _run("ring", 16, 0.05, 0, 0.3), _run("ring", 16, 0.05, 1, 0.5),  # 0.4: chosen
               _run("ring", 64, 0.1, 0, 0.9), _run("ring", 64, 0.05, 0, 1.1),
               _run("tele", 16, 0.1, 0, 0.05, k=8), _run("tele", 16, 0.1, 1, 0.07, k=4),
               _run("tele", 16, 0.05, 0, 0.2, k=16)]
    per = ["config", "num-clients"]
    rows = choose(results, "lr", per, "node_loss_mean", maximize=False)
    assert [(key, lr) for key, lr, _, _ in rows] == [
        (("ring", 16), 0.05), (("ring", 64), 0.1), (("tele", 16), 0.1)]
    assert rows[0][2] == pytest.approx(0.4) and rows[2][2] == pytest.approx(0.06)
    picked = chosen_runs(results, "lr", per, ("tele", 16), 0.1)
    assert sorted(r["final"]["chosen_k"] for r in picked) == [4, 8]
    shown = [{"chosen_k": (6.0, statistics.stdev([8, 4]))}] * 3
    table = choice_table(rows, "lr", per, "node_loss_mean", shown)
    assert table.splitlines()[0] == ("| config | num-clients | chosen lr | final node_loss_mean "
                                     "| final chosen_k | all candidates |")
    assert "| ring | 16 | 0.05 | 0.4000 | 6.0000 ± 2.8284 | 0.1: 0.5000, 0.05: 0.4000 |" \
        in table
    path = scaling_plot(results, {"among": "lr"}, "num-clients", "node_loss_mean", False,
                        tmp_path, "t")
    assert path == tmp_path / "scaling.png" and path.stat().st_size > 10_000


def test_sweep_results_keep_the_configuration_label(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(SWEEP.replace("seeds = [0, 1]", "seeds = [0]"))
    sweep = load_sweep(path)
    assert {s.config for s in sweep.runs()} == {"slow", "fast"}
    run_sweep(sweep, stream=io.StringIO())
    results = [json.loads(x) for x in (sweep.folder / "results.jsonl").read_text().splitlines()]
    assert [r["config"] for r in results] == ["slow", "fast"]


THEORY_SWEEP = """
name = "tiny-theory"
seeds = [0, 1]

[base]
dataset = "quadratic"
partitioner = "natural-id"
model = "flowerbed.clients.quadratic:model"
synthetic-dim = 3
synthetic-samples = 4
synthetic-alpha = 5.0
synthetic-beta = 0.0
quadratic-offset = 1.0
local-steps = 1
batch-size = 1
num-server-rounds = 12
eval-every = 12
final-merge = false
strategy = "dsgd"
wandb = false

[grid]
lr = [0.1, 0.2]

[[configs]]
label = "ring"
topology = "ring"
num-clients = [6, 12]

[report]
metric = "node_loss_mean"
theory = "flowerbed.tools.experiments.quadratic_theory:expected_node_loss"

[[report.choose]]
among = "lr"
per = ["config", "num-clients"]
metric = "node_loss_mean"
maximize = false

[report.scaling]
x = "num-clients"
"""


def test_report_puts_the_theory_next_to_the_measurement(tmp_path: Path) -> None:
    """Noiseless D-SGD on the quadratic is deterministic, so the report's expected column
    must equal the measured final node loss of the chosen runs."""
    _, out = _sweep_and_report(tmp_path, THEORY_SWEEP)
    text = (out / "report.md").read_text()
    assert "| final node_loss_mean | expected node_loss_mean (theory) |" in text
    rows = [line for line in text.splitlines() if line.startswith("| ring | ")]
    assert len(rows) == 2
    for line in rows:
        cells = [c.strip() for c in line.split("|")[1:-1]]
        measured = float(cells[3])
        expected = float(re.findall(r"[-0-9.]+", cells[4])[0])
        assert measured > 0.01 and expected == pytest.approx(measured, abs=2e-4)
    assert (out / "scaling.png").stat().st_size > 10_000
