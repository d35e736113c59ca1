"""`flowerbed report <run folders>`: ad-hoc runs, grouped by configuration, judged by their
primary metric; report plots follow the plot rules."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.tools.cli import main
from flowerbed.tools.report import plot, runs_results
from tests.conftest import tiny
from tests.figures import capture_figures

RUNS = {"fedavg-s0": {"seed": 0}, "fedavg-s1": {"seed": 1},
        "paris-s0": {"strategy": "paris", "experts": 2, "router-epochs": 1, "seed": 0}}


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three tiny tracked in-process runs: FedAvg with two seeds, Paris with a router."""
    out = tmp_path_factory.mktemp("runs")
    for name, over in RUNS.items():
        run_experiment(parse_run_config(tiny(tracking=True, output_dir=str(out), run_name=name,
                                             num_clients=4, num_server_rounds=2,
                                             local_steps=2, **over)))
    return {name: out / name for name in RUNS}


@pytest.fixture
def saved_figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    return capture_figures(monkeypatch)


def _summary(d: Path) -> dict[str, Any]:
    return json.loads((d / "summary.json").read_text())


def _pm(cell: str) -> tuple[float, float]:
    mean, std = (float(x) for x in re.findall(r"[-0-9.]+", cell))
    return mean, std


def test_report_of_run_folders(run_dirs: dict[str, Path], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str],
                               saved_figures: dict[str, Any]) -> None:
    out = tmp_path / "rep"
    assert main(["report", *map(str, run_dirs.values()), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"report {out / 'report.md'}" in printed and str(out) in printed
    for name in ("report.md", "accuracy_vs_round.png", "accuracy_vs_bytes.png",
                 "final_accuracy.png", "results.jsonl"):
        assert (out / name).stat().st_size > 0, name

    text = (out / "report.md").read_text()
    rows = {c[0]: c for line in text.splitlines() if line.startswith("| strategy=")
            for c in [[x.strip() for x in line.split("|")[1:-1]]]}
    assert set(rows) == {"strategy=fedavg, experts=4, router-epochs=20",
                         "strategy=paris, experts=2, router-epochs=1"}
    fed = rows["strategy=fedavg, experts=4, router-epochs=20"]
    vals = [_summary(run_dirs[n])["primary"]["value"] for n in ("fedavg-s0", "fedavg-s1")]
    assert fed[1] == "2" and "`test_accuracy`" in fed[2]
    mean, std = _pm(fed[3])
    assert mean == pytest.approx(statistics.mean(vals), abs=5e-5)
    assert std == pytest.approx(statistics.stdev(vals), abs=5e-5)
    paris = rows["strategy=paris, experts=2, router-epochs=1"]
    p = _summary(run_dirs["paris-s0"])["primary"]
    assert paris[1] == "1" and "`ensemble_accuracy`" in paris[2]
    assert _pm(paris[3]) == pytest.approx((p["value"], 0.0), abs=5e-5)

    # the final-value bars: one per configuration, at the table's means, error bars <= 1
    ax = saved_figures["final_accuracy.png"].axes[0]
    widths = sorted(b.get_width() for b in ax.patches)
    assert widths == pytest.approx(sorted([statistics.mean(vals), p["value"]]))
    segs = [s for c in ax.collections for s in c.get_segments()]
    assert segs and max(x for s in segs for x, _ in s) <= 1.0
    rounds_ax = saved_figures["accuracy_vs_round.png"].axes
    assert len(rounds_ax) == 1 and rounds_ax[0].get_ylabel().startswith("accuracy")


def test_a_folder_of_run_folders_and_bad_paths(run_dirs: dict[str, Path],
                                               tmp_path: Path) -> None:
    results, left = runs_results([next(iter(run_dirs.values())).parent])
    assert [r["run"] for r in results] == sorted(RUNS) and left == []
    assert [r["seed"] for r in results] == [0, 1, 0]
    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")]) == 2


def _fake_runs(tmp_path: Path, n_configs: int, metric: str) -> list[dict[str, Any]]:
    """results lines of ``n_configs`` configurations x 2 seeds, with metrics.jsonl files."""
    lines = []
    for c in range(n_configs):
        for seed in range(2):
            d = tmp_path / f"c{c}s{seed}"
            d.mkdir()
            v = [min(0.1 + 0.3 * t, 1.0) - 0.1 * seed for t in range(4)]
            d.joinpath("metrics.jsonl").write_text("".join(
                json.dumps({"round": t, metric: v[t], "cum_bytes_up": 10 * t}) + "\n"
                for t in range(4)))
            lines.append({"label": f"config {c}", "params": {"n": 16 if c < 12 else 64},
                          "seed": seed, "final": {metric: v[-1]}, "run_dir": str(d)})
    return lines


def test_report_plots_facet_and_clip(tmp_path: Path, saved_figures: dict[str, Any]) -> None:
    from matplotlib.ticker import MaxNLocator

    results = _fake_runs(tmp_path, 14, "node_loss_mean")
    paths = plot(results, "node_loss_mean", Path("."), tmp_path, "t", facet_by="n")
    assert [p.name for p in paths] == ["node_loss_mean_vs_round.png",
                                       "node_loss_mean_vs_bytes.png"]
    axes = saved_figures["node_loss_mean_vs_round.png"].axes
    # n = 16: 12 curves -> 2 panels of 6; n = 64: 2 curves
    assert [len(ax.get_lines()) for ax in axes] == [6, 6, 2]
    assert [ax.get_title() for ax in axes] == ["n = 16 (1/2)", "n = 16 (2/2)", "n = 64"]
    for ax in axes:
        assert ax.get_ylabel() == "mean node loss, f(x_j) - f*"
        loc = ax.xaxis.get_major_locator()
        assert isinstance(loc, MaxNLocator) and loc._integer

    (tmp_path / "acc").mkdir()
    plot(_fake_runs(tmp_path / "acc", 2, "test_accuracy"), "test_accuracy", Path("."),
         tmp_path, "t")
    ax = saved_figures["accuracy_vs_round.png"].axes[0]
    # the seeds end at 1.0 and 0.9: mean + std = 1.02, the band stops at 1.0
    tops = [v[:, 1].max() for c in ax.collections for v in [np.asarray(
        c.get_paths()[0].vertices)]]
    assert tops and max(tops) == pytest.approx(1.0)


def test_report_bytes_count_the_chosen_links(tmp_path: Path,
                                             saved_figures: dict[str, Any]) -> None:
    """``[report] links``: the bytes axis and the MiB column count only those links (a codec
    compresses what clients send, not the server's model); ``log-bytes``: a log axis."""
    from flowerbed.tools.report import render, table_rows

    d = tmp_path / "run"
    d.mkdir()
    d.joinpath("metrics.jsonl").write_text("".join(json.dumps(
        {"round": t, "test_accuracy": 0.1 * t, "cum_bytes_down": 100 * t,
         "cum_bytes_up": 10 * t, "cum_bytes_p2p": 1 * t}) + "\n" for t in range(1, 4)))
    totals = {"cum_bytes_down": 300, "cum_bytes_up": 30, "cum_bytes_p2p": 3, "bytes": 333}
    results = [{"label": "c", "params": {}, "seed": 0, "final": {"test_accuracy": 0.3},
                "best": {"test_accuracy": 0.3}, "run_dir": "run", "totals": totals}]
    up = table_rows(results, ["test_accuracy"], ["up", "p2p"])[0]
    assert up.mib[0] * 2**20 == pytest.approx(33)
    assert table_rows(results, ["test_accuracy"])[0].mib[0] * 2**20 == pytest.approx(333)
    spec = {"name": "t", "report": {"metric": "test_accuracy", "links": ["up", "p2p"],
                                    "log-bytes": True}}
    text = render(results, tmp_path, tmp_path / "rep", spec, "1 run.").read_text()
    assert "uplink + peer-to-peer for MiB" in text
    ax = saved_figures["accuracy_vs_bytes.png"].axes[0]
    assert ax.get_xscale() == "log" and "uplink + peer-to-peer" in ax.get_xlabel()
    # round 0 (nothing sent yet) is left off the log axis
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata() * 2**20, [11, 22, 33])
    with pytest.raises(ValueError, match="links"):
        render(results, tmp_path, tmp_path / "rep", {"report": {"links": ["sideways"]}}, "")
