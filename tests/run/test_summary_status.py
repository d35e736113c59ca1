"""summary.json tells what the run did: 'no-updates' instead of 'completed' when nothing was
ever trained in, rounds with and without an update counted apart, the strategy's notes on
clamped values, and the file written with the user's umask."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from flowerbed.run.config import parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.run.trackers.base import write_json_atomic
from tests.conftest import tiny


def test_clamped_k_active_is_noted_in_the_log_and_the_summary(
        tmp_path: Path, flowerbed_logs: pytest.LogCaptureFixture) -> None:
    cfg = parse_run_config(tiny(strategy="teleportation", k_active=200, num_server_rounds=1,
                                local_steps=1, tracking=True, output_dir=str(tmp_path),
                                run_name="tele"))
    result = run_experiment(cfg)
    assert result.strategy.k == 10  # the effective value
    summary = json.loads((tmp_path / "tele" / "summary.json").read_text())
    note = "k-active: 200 is more than num-clients = 10; using k-active = 10"
    assert summary["notes"] == [note]
    assert summary["config"]["k-active"] == 200  # what was asked for, next to the note
    warnings = [r.getMessage() for r in flowerbed_logs.records if r.levelno == logging.WARNING]
    assert any(note in w for w in warnings)


def test_modest_notes_its_clamped_trainers_and_a_run_without_clamping_has_none() -> None:
    cfg = parse_run_config(tiny(strategy="modest", trainers=50, aggregators=2,
                                num_server_rounds=1, local_steps=1))
    result = run_experiment(cfg)
    assert result.summary["notes"] == [
        "trainers: 50 is more than num-clients = 10; using trainers = 10"]
    assert result.strategy.s == 10
    plain = run_experiment(cfg.replace(trainers=4))
    assert plain.summary["notes"] == []


def test_a_run_where_nobody_ever_participates_is_not_completed(
        flowerbed_logs: pytest.LogCaptureFixture) -> None:
    cfg = parse_run_config(tiny(participation="bernoulli", participation_mean=1e-9,
                                participation_min=1e-9, num_server_rounds=3))
    result = run_experiment(cfg)
    assert sum(r["participants"] for r in result.records) == 0
    assert result.summary["status"] == "no-updates"
    assert (result.summary["rounds_completed"], result.summary["rounds_skipped"]) == (0, 3)
    assert any(r.levelno == logging.WARNING and "NO UPDATES" in r.getMessage()
               for r in flowerbed_logs.records)


def test_skipped_rounds_are_not_counted_as_completed() -> None:
    raw = {"engine": "inprocess", "num-clients": 20, "fraction-train": 0.5, "local-steps": 3,
           "wandb": False, "progress": False, "tracking": False, "num-server-rounds": 6,
           "failure-rate": 0.7, "min-replies": 5}
    result = run_experiment(parse_run_config(raw))
    skipped = sorted(result.strategy.skipped)
    assert 0 < len(skipped) < 6, "with 70% failures and min-replies 5 of 10 some round skips"
    summary = result.summary
    assert summary["rounds_skipped"] == len(skipped)
    assert summary["rounds_completed"] == 6 - len(skipped)
    assert summary["totals"]["round_skipped"] == len(skipped)
    assert summary["status"] == "completed"  # some rounds did update the model


def test_summary_json_is_written_with_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "summary.json", {"a": 1})
        cfg = parse_run_config(tiny(tracking=True, output_dir=str(tmp_path / "out"),
                                    run_name="r", num_server_rounds=1))
        run_experiment(cfg)
    finally:
        os.umask(old)
    for path in (tmp_path / "summary.json", tmp_path / "out" / "r" / "summary.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert json.loads((tmp_path / "summary.json").read_text()) == {"a": 1}
    assert not list(tmp_path.glob(".summary.json.*"))  # no temp file left behind
