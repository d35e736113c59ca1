"""`flowerbed run` and `resume` fail loudly: non-zero exit, the reason visible."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowerbed.tools.cli import main
from flowerbed.tools.superlink import write_run_config
from tests.tools.test_cli import processes_mentioning

APP = Path(__file__).resolve().parents[2]
FLOWERBED = Path(sys.executable).parent / "flowerbed"


def test_a_bad_value_exits_2_before_flower_starts(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "home"))
    assert main(["run", str(APP), "-c", "lr=-0.1"]) == 2
    err = capsys.readouterr().err
    assert "lr = -0.1" in err and "must be > 0" in err
    # the SuperLink started beside the config's checks is gone when the command returns
    assert processes_mentioning(str(tmp_path / "home")) == []
    assert not list((tmp_path / "home").rglob("run-logs"))  # no run was submitted


def test_the_superlink_starts_before_the_config_is_read(monkeypatch, tmp_path):
    """Its seconds of start-up overlap the config's imports and the preflight."""
    from flowerbed.tools import cli
    from flowerbed.tools.superlink import LocalSuperLink

    order: list[str] = []
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(LocalSuperLink, "start", lambda self: order.append("superlink") or self)
    monkeypatch.setattr(LocalSuperLink, "stop", lambda self: order.append("stop"))

    def resolve(*args: object) -> None:
        deadline = time.monotonic() + 10  # the start runs in a thread: give it the moment
        while "superlink" not in order and time.monotonic() < deadline:
            time.sleep(0.01)
        order.append("config")
        raise cli.ConfigError("lr", -1, "must be > 0")

    monkeypatch.setattr(cli, "resolve_config", resolve)
    assert main(["run", str(APP)]) == 2
    assert order == ["superlink", "config", "stop"]


def test_a_bad_combination_names_its_key(capsys):
    assert main(["check", str(APP), "-c", "failure-rate=0.6 dropout-rate=0.6"]) == 2
    assert "dropout-rate" in capsys.readouterr().err


def test_resume_without_a_checkpoint_exits_2(tmp_path, capsys):
    assert main(["resume", str(tmp_path), "--in-process"]) == 2
    err = capsys.readouterr().err
    assert "resume-from" in err and "no checkpoint" in err


def test_run_config_files_round_trip_through_flowers_parser(tmp_path):
    """What flowerbed hands `flwr run` is a TOML file, so any string survives."""
    from flwr.common.config import parse_config_args

    values = {"a": 'x "quoted" \\ path', "b": True, "c": 3, "d": 0.1, "e": "",
              "f": "it's", "g": "/tmp/out dir", "h": "both ' and \" and\na newline\ttab",
              "i": 1e-05, "j": "ünïcode"}
    path = write_run_config(values, tmp_path / "cfg.toml")
    assert dict(parse_config_args([str(path)])) == values


@pytest.mark.slow
def test_a_serverapp_failure_makes_flowerbed_run_exit_non_zero(tmp_path):
    """An Erdos-Renyi graph that is never connected passes the pre-flight checks (config,
    data, model) but not the ServerApp, which samples the topology: `flwr run` itself exits
    0 (Flower's behaviour), and flowerbed must still exit non-zero from the run's final status."""
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [str(FLOWERBED), "run", str(APP), "-c",
         f'strategy="dsgd" topology="erdos-renyi" edge-probability=0.01 num-clients=10 '
         f'num-server-rounds=1 wandb=false '
         f'output-dir="{tmp_path}"',
         "--federation-config", "num-supernodes=1 client-resources-num-cpus=1"],
        env=env, cwd=APP, text=True, capture_output=True, timeout=400, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "finished:failed" in out and "was disconnected in" in out
    # the ServerApp's own message: one line naming key and value, ahead of the traceback
    line = "flowerbed: run config: topology = 'erdos-renyi' is invalid"
    assert line in out, out
    assert "Traceback" not in out or out.index(line) < out.index("Traceback"), out
