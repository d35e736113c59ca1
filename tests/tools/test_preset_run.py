"""A preset through the real `flowerbed run` (flwr run, Ray backend) on a Hub-schema
fixture: the path a user takes with `preset = "cifar10-dirichlet"` and the real dataset."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.hub_fixtures import write_cifar10
from tests.tools.test_cli import flowerbed, processes_mentioning


@pytest.mark.slow
def test_cifar10_preset_runs_end_to_end(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path / "cifar10")
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home")}
    cfg_file = tmp_path / "preset.toml"
    cfg_file.write_text(f"preset = 'cifar10-dirichlet'\ndataset = 'hf:{folder}'\n"
                        "num-clients = 4\nnum-server-rounds = 2\nlocal-steps = 2\n"
                        f"wandb = false\nrun-name = 'preset'\noutput-dir = '{tmp_path}/out'\n")
    check = flowerbed("check", "-c", str(cfg_file), env=env)
    assert check.returncode == 0, check.stderr[-2000:]
    assert "features img, input shape (3, 32, 32), 10 classes, 4 clients" in check.stdout
    out = flowerbed("run", "-c", str(cfg_file), env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run_dir = tmp_path / "out" / "preset"
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in lines] == [0, 1, 2]
    assert lines[-1]["participants"] == 4  # the preset trains every client each round
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    log = (run_dir / "run.log").read_text()
    assert "input shape (3, 32, 32), 10 classes" in log
    assert not processes_mentioning(str(tmp_path / "flwr-home"))  # SuperLink stopped
