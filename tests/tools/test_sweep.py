"""Sweeps: exact grid expansion, a tiny sweep end to end, resume without redoing runs."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from flowerbed.run.config import RunConfig
from flowerbed.tools.sweep import (
    SweepError,
    load_sweep,
    run_name,
    run_sweep,
    sweep_from_dict,
    validate,
)

TINY = """
name = "tiny"
seeds = [0, 1]
wandb-group = "tiny-group"

[base]
num-clients = 10
num-server-rounds = 2
fraction-train = 1.0
local-epochs = 1
batch-size = 16
wandb = false

[grid]
lr = [0.05, 0.3]
"""


TRICKY = 'it\'s a "group" with \\ and\na newline'
TRICKY_TOML = 'wandb-group = "it\'s a \\"group\\" with \\\\ and\\na newline"'


def write(tmp_path: Path, text: str = TINY) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return path


def test_grid_expansion_is_exact(tmp_path: Path) -> None:
    raw = {"seeds": [3, 4, 5], "base": {"num-server-rounds": 7},
           "grid": {"lr": [0.1, 0.2], "batch-size": [8, 16]},
           "configs": [{"label": "FedAvg", "strategy": "fedavg"},
                       {"strategy": "fedavg", "momentum": [0.5, 0.9], "local-steps": 3}]}
    sweep = sweep_from_dict(raw, "g", tmp_path)
    runs = sweep.runs()
    # variant 1: 1 x (2 x 2) x 3 seeds; variant 2: 2 x (2 x 2) x 3 seeds
    assert len(runs) == 12 + 24
    first = runs[0]
    assert first.params == {"strategy": "fedavg", "lr": 0.1, "batch-size": 8}
    assert first.seed == 3
    assert first.name == "strategy=fedavg,lr=0.1,batch-size=8,seed=3"
    assert first.label == "FedAvg (lr=0.1, batch-size=8)"
    assert first.overrides["num-server-rounds"] == 7
    assert first.overrides["run-name"] == first.name
    assert first.overrides["wandb-group"] == "g"
    assert first.overrides["output-dir"] == str(tmp_path.resolve() / "outputs/sweeps/g/runs")
    combos = {(r.params.get("momentum"), r.params["lr"], r.params["batch-size"], r.seed)
              for r in runs[12:]}
    assert combos == {(m, lr, b, s) for m in (0.5, 0.9) for lr in (0.1, 0.2)
                      for b in (8, 16) for s in (3, 4, 5)}
    assert all(r.params["local-steps"] == 3 for r in runs[12:])
    assert len({r.name for r in runs}) == len(runs)
    # every run validates, and the seed is the run's
    cfgs = validate(sweep)
    assert all(isinstance(c, RunConfig) for c in cfgs)
    assert [c.seed for c in cfgs[:3]] == [3, 4, 5]


def test_names_are_deterministic_and_short() -> None:
    assert run_name({"lr": 0.1, "model": "a/b c"}, 2) == "lr=0.1,model=a_b_c,seed=2"
    long = run_name({f"key{i}": "x" * 20 for i in range(10)}, 0)
    assert len(long) <= 120
    assert long == run_name({f"key{i}": "x" * 20 for i in range(10)}, 0)
    assert long != run_name({f"key{i}": "x" * 20 for i in range(10)}, 1)


def test_bad_sweeps_fail_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="unknown sweep keys"):
        sweep_from_dict({"sedes": [1]}, "x", tmp_path)
    with pytest.raises(SweepError, match="may not set 'seed'"):
        sweep_from_dict({"grid": {"seed": [1, 2]}}, "x", tmp_path)
    with pytest.raises(SweepError, match="put it in"):
        sweep_from_dict({"base": {"lr": [0.1]}}, "x", tmp_path)
    with pytest.raises(SweepError, match=r"run lr=-1,seed=0: run config: lr = -1"):
        validate(sweep_from_dict({"grid": {"lr": [-1.0]}}, "x", tmp_path))


def test_tiny_sweep_runs_and_resumes_without_redoing(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path))
    out = io.StringIO()
    results = run_sweep(sweep, stream=out)
    lines = [json.loads(x) for x in results.read_text().splitlines()]
    assert [(r["params"]["lr"], r["seed"]) for r in lines] == [(0.05, 0), (0.05, 1), (0.3, 0),
                                                               (0.3, 1)]
    for r in lines:
        summary = json.loads(((sweep.folder / r["run_dir"]) / "summary.json").read_text())
        assert r["final"]["test_accuracy"] == summary["final"]["test_accuracy"]
        assert r["best"]["test_accuracy"] == summary["best"]["test_accuracy"]
        per_round = [json.loads(x) for x in
                     (sweep.folder / r["run_dir"] / "metrics.jsonl").read_text().splitlines()]
        assert r["best"]["test_loss"] == min(x["test_loss"] for x in per_round)
        assert r["final"]["test_loss"] == per_round[-1]["test_loss"]
        assert r["totals"]["bytes"] == (summary["totals"]["cum_bytes_down"]
                                        + summary["totals"]["cum_bytes_up"])
        assert summary["config"]["wandb-group"] == "tiny-group"
        assert summary["config"]["seed"] == r["seed"]
        assert summary["rounds_completed"] == 2
    # the two seeds of one configuration differ, the same config is reproducible
    assert lines[0]["final"] != lines[1]["final"]
    progress = out.getvalue().splitlines()
    assert progress[-1].startswith("[########################] 4/4 runs | done 4 skipped 0")

    # interrupt: one run lost its summary (killed before the end), another never ran
    runs = sweep.runs_dir
    (runs / lines[1]["run"] / "summary.json").unlink()
    import shutil
    shutil.rmtree(runs / lines[3]["run"])
    mtimes = {r["run"]: (runs / r["run"] / "summary.json").stat().st_mtime_ns
              for r in (lines[0], lines[2])}
    ran: list[str] = []

    def counting(cfg: RunConfig) -> None:
        from flowerbed.run.runner import run_experiment

        ran.append(cfg.run_name)
        run_experiment(cfg)

    out2 = io.StringIO()
    results = run_sweep(load_sweep(write(tmp_path)), counting, stream=out2)
    assert ran == [lines[1]["run"], lines[3]["run"]]
    for name, t in mtimes.items():
        assert (runs / name / "summary.json").stat().st_mtime_ns == t
    again = [json.loads(x) for x in results.read_text().splitlines()]
    assert [(r["run"], r["final"]) for r in again] == [(r["run"], r["final"]) for r in lines]
    assert "done 2 skipped 2" in out2.getvalue().splitlines()[-1]
    assert sorted(p.name for p in runs.iterdir()) == sorted(r["run"] for r in lines)

    # a third pass has nothing left to do
    ran.clear()
    run_sweep(load_sweep(write(tmp_path)), counting, stream=io.StringIO())
    assert ran == []


def test_a_failing_run_does_not_stop_the_sweep(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path, TINY.replace("seeds = [0, 1]", "seeds = [0]")))
    calls: list[float] = []

    def flaky(cfg: RunConfig) -> None:
        calls.append(cfg.lr)
        if cfg.lr == 0.05:
            raise RuntimeError("boom")
        from flowerbed.run.runner import run_experiment

        run_experiment(cfg)

    out = io.StringIO()
    results = run_sweep(sweep, flaky, stream=out)
    assert calls == [0.05, 0.3]
    assert [json.loads(x)["params"]["lr"] for x in results.read_text().splitlines()] == [0.3]
    assert "done 1 skipped 0 failed 1" in out.getvalue()


@pytest.mark.slow
def test_sweep_via_flwr_run(tmp_path: Path) -> None:
    """engine = "flower": every run goes through `flwr run` on one private SuperLink."""
    from flowerbed.tools.sweep import FlowerRunner
    from tests.conftest import ROOT
    from tests.tools.test_cli import processes_mentioning

    text = TINY.replace("[grid]\nlr = [0.05, 0.3]", "").replace("num-server-rounds = 2",
                                                                "num-server-rounds = 1")
    text = text.replace("seeds = [0, 1]", "seeds = [3]")
    # a string Flower's --run-config parser cannot take as key=value: the file carries it
    text = text.replace('wandb-group = "tiny-group"', TRICKY_TOML)
    sweep = load_sweep(write(tmp_path, 'engine = "flower"\n' + text))
    home = tmp_path / "flwr-home"
    with FlowerRunner(ROOT, home) as runner:
        results = run_sweep(sweep, runner, stream=io.StringIO())
    lines = [json.loads(x) for x in results.read_text().splitlines()]
    assert [r["seed"] for r in lines] == [3]
    summary = json.loads(((sweep.folder / lines[0]["run_dir"]) / "summary.json").read_text())
    assert summary["config"]["engine"] == "flower"
    assert summary["config"]["seed"] == 3
    assert summary["config"]["wandb-group"] == TRICKY
    assert summary["rounds_completed"] == 1
    deadline = time.monotonic() + 30  # Ray's actors exit a moment after the SuperLink
    while processes_mentioning(str(home)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not processes_mentioning(str(home))


def test_sweep_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flowerbed.tools.cli import main

    text = TINY.replace("seeds = [0, 1]", "seeds = [0]").replace("lr = [0.05, 0.3]",
                                                                 "lr = [0.1]")
    path = write(tmp_path, text)
    assert main(["sweep", str(path), "--output", str(tmp_path / "sw"), "--report"]) == 0
    err = capsys.readouterr().err
    assert "1/1 runs | done 1 skipped 0 failed 0" in err
    assert (tmp_path / "sw" / "runs" / "lr=0.1,seed=0" / "summary.json").exists()
    assert (tmp_path / "sw" / "report" / "report.md").exists()
    assert main(["sweep", str(path), "--output", str(tmp_path / "sw")]) == 0
    assert "1/1 runs | done 0 skipped 1" in capsys.readouterr().err
    path.write_text(text.replace("lr = [0.1]", "lr = [-0.1]"))
    assert main(["sweep", str(path), "--output", str(tmp_path / "sw2")]) == 2
    assert "lr = -0.1 is invalid" in capsys.readouterr().err


def test_sweep_command_exits_1_when_a_run_fails(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from flowerbed.tools.cli import main

    # valid config, fails at run time: a CNN needs images, synthetic data is a vector
    path = write(tmp_path, 'seeds = [0]\n[base]\ndataset = "synthetic"\npartitioner = "iid"\n'
                 'num-clients = 4\nnum-server-rounds = 1\nwandb = false\nmodel = "cnn"\n')
    assert main(["sweep", str(path), "--output", str(tmp_path / "sw")]) == 1
    assert "1 of 1 runs did not complete" in capsys.readouterr().err


def test_a_second_sweep_of_a_locked_folder_is_refused(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from flowerbed.run.lock import LOCK_NAME, FolderBusy
    from flowerbed.tools.cli import main

    path = write(tmp_path, TINY.replace("seeds = [0, 1]", "seeds = [0]"))
    sweep = load_sweep(path, tmp_path / "sw")
    calls: list[float] = []

    def second_sweep_meanwhile(cfg: RunConfig) -> None:
        calls.append(cfg.lr)
        with pytest.raises(FolderBusy, match="in use by pid"):
            run_sweep(load_sweep(path, tmp_path / "sw"), lambda c: calls.append(-1.0))
        assert main(["sweep", str(path), "--output", str(tmp_path / "sw")]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / 'sw'}" in err and "in use by pid" in err

    run_sweep(sweep, second_sweep_meanwhile, stream=io.StringIO())
    assert calls == [0.05, 0.3]  # the refused sweeps ran nothing
    assert not (tmp_path / "sw" / LOCK_NAME).exists()


def test_ctrl_c_of_a_sweep_says_how_to_continue(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from flowerbed.run.runner import run_experiment
    from flowerbed.tools import sweep as sweep_mod
    from flowerbed.tools.cli import main

    path = write(tmp_path, TINY.replace("seeds = [0, 1]", "seeds = [0]"))
    calls: list[float] = []

    def first_then_ctrl_c(cfg: RunConfig) -> None:
        calls.append(cfg.lr)
        if len(calls) > 1:
            raise KeyboardInterrupt
        run_experiment(cfg)

    monkeypatch.setattr(sweep_mod, "run_inprocess", first_then_ctrl_c)
    out_dir = tmp_path / "sw"
    assert main(["sweep", str(path), "--output", str(out_dir)]) == 130
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    said = [ln for ln in captured.err.splitlines() if ln.startswith("flowerbed:")]
    assert said == [f"flowerbed: sweep tiny interrupted: 1 of 2 runs finished; rerun "
                    f"`flowerbed sweep {path} --output {out_dir}` to continue"]
    monkeypatch.undo()
    assert main(["sweep", str(path), "--output", str(out_dir)]) == 0  # as the line says
    assert "2/2 runs | done 1 skipped 1 failed 0" in capsys.readouterr().err


def test_a_run_without_updates_is_finished(tmp_path: Path) -> None:
    """A 'no-updates' run ran to its end (a rerun would give the same): a sweep resume
    skips it and results.jsonl lists it, with its status; a failed run is redone."""
    from flowerbed.tools.sweep import is_finished

    for status, finished in (("no-updates", True), ("completed", True), ("failed", False),
                             ("stopped", False)):
        run_dir = tmp_path / status
        run_dir.mkdir()
        (run_dir / "summary.json").write_text(json.dumps({"status": status}))
        assert is_finished(run_dir) is finished, status
