"""Plug-in strategies with parameters of their own, through `flowerbed run` and plain
`flwr run`: the README's TrimmedMean, its client-side FedAvgClipped (a client rule the Ray
workers import by path), and Flower's own FedAdam and Krum.

The README's TrimmedMean (``examples/my_strategy.py``) declares ``trim-fraction`` and
``min-kept``. `flowerbed run` takes them as ordinary keys; plain `flwr run` only accepts
keys listed in pyproject, so there they travel in the one ``strategy-params`` key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from flowerbed.tools.superlink import LocalSuperLink
from tests.conftest import ROOT
from tests.tools.test_cli import flowerbed, processes_mentioning

TRIMMED = "examples.my_strategy:TrimmedMean"
# TOML text of a string with quotes, a backslash and a newline (a run-config file carries
# it; Flower's key=value override parser could not)
TRICKY = 'it\'s a "group" with \\ and\na newline'
TRICKY_TOML = '"it\'s a \\"group\\" with \\\\ and\\na newline"'
SMALL = {"num-clients": 6, "num-server-rounds": 2, "fraction-train": 1.0, "wandb": False,
         "local-epochs": 1, "model": "logreg", "partitioner": "iid"}


def toml_lines(values: dict) -> str:
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def test_bad_plugin_value_exits_2_before_flower_starts() -> None:
    out = flowerbed("check", "-c", f"strategy='{TRIMMED}' trim-fraction=0.7")
    assert out.returncode == 2
    assert "trim-fraction = 0.7 is invalid: must be in [0, 0.5)" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_plugin_parameters_through_flowerbed_run(tmp_path: Path) -> None:
    """A config file (with a string holding quotes, a backslash and a newline) plus
    overrides that set the plug-in and its two parameters; later -c wins."""
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home")}
    cfg_file = tmp_path / "small.toml"
    cfg_file.write_text(toml_lines({**SMALL, "num-server-rounds": 5, "run-name": "plugin",
                                    "output-dir": str(tmp_path / "out")})
                        + f"wandb-group = {TRICKY_TOML}\n")
    out = flowerbed("run", "-c", str(cfg_file), "-c", f"strategy='{TRIMMED}' "
                    "trim-fraction=0.2 min-kept=2 num-server-rounds=2", env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "plugin" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_completed"] == 2
    cfg = summary["config"]
    assert cfg["strategy"] == TRIMMED
    assert (cfg["trim-fraction"], cfg["min-kept"]) == (0.2, 2)
    assert cfg["wandb-group"] == TRICKY
    assert not processes_mentioning(str(tmp_path / "flwr-home"))


@pytest.mark.slow
def test_plugin_parameters_through_plain_flwr_run(tmp_path: Path) -> None:
    """Plain `flwr run . --run-config "... strategy-params='...'"`: the values arrive; a bad
    one fails the run with a message naming the parameter."""
    base = " ".join(f"{k}={json.dumps(v).lower() if isinstance(v, bool) else json.dumps(v)}"
                    for k, v in SMALL.items())
    out_dir = tmp_path / "out"
    with LocalSuperLink(tmp_path / "flwr-home", cwd=ROOT) as link:
        def run(name: str, params: str, strategy: str = TRIMMED) -> tuple[str, str]:
            over = (f"{base} strategy='{strategy}' strategy-params='{params}' "
                    f"run-name='{name}' output-dir='{out_dir}'")
            res = link.flwr("run", ".", "--stream", "--run-config", over,
                            "--federation-config", "num-supernodes=2", capture=True,
                            timeout=300)
            run_id = int(next(w for line in res.stdout.splitlines() if "started run" in line
                              for w in line.split() if w.isdigit()))
            status, _ = link.wait_finished(run_id, timeout=300)
            return status, res.stdout + res.stderr

        status, _ = run("good", "trim-fraction = 0.2, min-kept = 2")
        assert status == "finished:completed"
        cfg = json.loads((out_dir / "good" / "summary.json").read_text())["config"]
        assert (cfg["trim-fraction"], cfg["min-kept"]) == (0.2, 2)
        status, text = run("bad", "trim-fraction = 0.9")
        assert status == "finished:failed"
        assert "trim-fraction = 0.9 is invalid: must be in [0, 0.5)" in text
        # Flower's own strategies, unchanged, with their constructor's parameters
        for name, params, strategy in (
                ("FedAdam", "eta = 0.05", "flwr.serverapp.strategy:FedAdam"),
                ("Krum", "num-malicious-nodes = 1", "flwr.serverapp.strategy:Krum"),
                ("Clipped", "step-clip = 0.5", "examples.my_client_rule:FedAvgClipped")):
            status, _ = run(name, params, strategy)
            assert status == "finished:completed", name
            summary = json.loads((out_dir / name / "summary.json").read_text())
            assert summary["rounds_completed"] == 2
            key, value = params.split(" = ")
            assert summary["config"][key] == (float(value) if "." in value else int(value))
    assert not processes_mentioning(str(tmp_path / "flwr-home"))
