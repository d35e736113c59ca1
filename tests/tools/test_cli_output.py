"""-q / -v on the CLI, in this process: -q prints the final line only."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowerbed.tools import cli
from flowerbed.tools.cli import build_parser
from tests.tools.test_sweep import TINY

# the sweep tests' tiny sweep: one run, with progress lines on
SWEEP = (TINY.replace('name = "tiny"', 'name = "q"').replace("seeds = [0, 1]", "seeds = [0]")
         .replace("[grid]\nlr = [0.05, 0.3]\n", "")
         .replace("wandb = false\n", "wandb = false\nprogress = true\n"))


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("FLOWERBED_VERBOSITY", "0")
    yield
    logging.captureWarnings(False)


def test_flags_before_or_after_the_command() -> None:
    p = build_parser()
    assert p.parse_args(["-q", "check"]).verbosity == -1
    assert p.parse_args(["check", "-q"]).verbosity == -1
    assert p.parse_args(["run", "--verbose"]).verbosity == 1
    assert p.parse_args(["run"]).verbosity == 0
    with pytest.raises(SystemExit):
        p.parse_args(["run", "-q", "-v"])


def test_quiet_inprocess_sweep_prints_only_the_end_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "q.toml"
    spec.write_text(SWEEP)
    code = cli.main(["-q", "sweep", str(spec), "--engine", "inprocess",
                     "--output", str(tmp_path / "sw")])
    out = capsys.readouterr()
    assert code == 0
    assert out.err == ""
    assert out.out.splitlines() == [f"flowerbed: sweep q: results in "
                                    f"{tmp_path / 'sw' / 'results.jsonl'}"]
    logs = list((tmp_path / "sw").rglob("run.log"))
    assert len(logs) == 1  # nothing lost: the run's own folder has its log
    assert "flowerbed.progress: round   2/2" in logs[0].read_text()


def test_quiet_check_prints_only_the_end_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-q", "check", "-c", "num-clients=10"]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    assert out.out.splitlines() == ["run config OK: strategy=fedavg dataset=digits clients=10 "
                                    "rounds=20 engine=flower"]


def test_small_runs_get_one_ray_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowerbed.run.config import parse_run_config
    from tests.conftest import tiny

    monkeypatch.setattr(cli.os, "cpu_count", lambda: 4)
    small = parse_run_config(tiny(num_clients=100))
    large = parse_run_config(tiny(num_clients=101))
    assert cli.default_federation(small) == ["num-supernodes=4 client-resources-num-cpus=4"]
    assert cli.default_federation(large) == ["num-supernodes=4 client-resources-num-cpus=1"]


@pytest.mark.parametrize("flag", ["", "-v"])
def test_check_shows_no_hugging_face_progress_bars_unless_verbose(tmp_path: Path,
                                                                 flag: str) -> None:
    """A fresh datasets cache makes datasets build the split and show progress bars while
    it does; `check` shows them only with -v."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "train.csv").write_text("a,b,y\n" + "".join(f"{i % 5}.5,{i}.0,{i % 2}\n"
                                                          for i in range(40)))
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf-cache")}
    for leaked in ("FLOWERBED_VERBOSITY", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        env.pop(leaked, None)  # set by the in-process CLI calls of other tests
    out = subprocess.run([sys.executable, "-m", "flowerbed.tools.cli", *([flag] if flag else []),
                          "check", "-c", f"dataset='hf:{folder}' label-column='y' "
                          "num-clients=2 partitioner='iid'"], cwd=ROOT, env=env, text=True,
                         capture_output=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    bars = "examples/s" in out.stderr
    assert bars == (flag == "-v"), out.stderr[-2000:]
    assert out.stdout.splitlines()[0].startswith("run config OK:")
