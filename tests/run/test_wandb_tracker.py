"""W&B's init runs beside the run: rounds that end first are not held up, and reach W&B
in order once it is ready; an init that fails disables W&B, not the run."""

from __future__ import annotations

import sys
import threading
import types
from pathlib import Path
from typing import Any

import pytest

from flowerbed.run.trackers import RunInfo, TrackerList
from flowerbed.run.trackers.wandb_tracker import WandbTracker


class FakeRun:
    def __init__(self, run_dir: str) -> None:
        self.id, self.dir = "abc123", f"{run_dir}/wandb/offline-run-x-abc123/files"
        self.settings = types.SimpleNamespace(mode="offline")
        self.summary: dict[str, Any] = {}
        self.logged: list[tuple[int, dict[str, Any]]] = []
        self.finished = False

    def log(self, values: dict[str, Any], step: int | None = None) -> None:
        self.logged.append((step if step is not None else -1, values))

    def finish(self) -> None:
        self.finished = True


def fake_wandb(monkeypatch: pytest.MonkeyPatch, gate: threading.Event,
               error: Exception | None = None) -> list[FakeRun]:
    runs: list[FakeRun] = []

    def init(**kwargs: Any) -> FakeRun:
        assert gate.wait(30), "the test never released the init"
        if error is not None:
            raise error
        runs.append(FakeRun(kwargs["dir"]))
        return runs[-1]

    module = types.ModuleType("wandb")
    module.init = init  # type: ignore[attr-defined]
    module.Settings = lambda **kw: kw  # type: ignore[attr-defined]
    module.Image = lambda path: path  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.setenv("WANDB_MODE", "offline")
    return runs


def info(tmp_path: Path) -> RunInfo:
    return RunInfo(run_dir=tmp_path, config={"lr": 0.1}, num_rounds=3, name="r")


def test_rounds_before_the_init_is_done_are_not_held_up_and_logged_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    runs = fake_wandb(monkeypatch, gate)
    tracker = WandbTracker("p")
    tracker.on_train_begin(info(tmp_path))  # returns while wandb.init still waits
    tracker.after_round({"round": 0, "test_accuracy": 0.1})
    tracker.after_round({"round": 1, "test_accuracy": 0.2, "note": "text is not logged"})
    assert runs == []  # the init has not finished, and the rounds went on regardless
    gate.set()
    assert tracker._starting is not None
    tracker._starting.join(30)
    tracker.after_round({"round": 2, "test_accuracy": 0.3})
    summary: dict[str, Any] = {"final": {"test_accuracy": 0.3}}
    tracker.on_train_end(summary)
    (run,) = runs
    assert run.logged == [(0, {"round": 0, "test_accuracy": 0.1}),
                          (1, {"round": 1, "test_accuracy": 0.2}),
                          (2, {"round": 2, "test_accuracy": 0.3})]
    assert run.summary == {"final/test_accuracy": 0.3} and run.finished
    assert summary["artifacts"]["wandb_sync"] == (
        f"wandb sync {tmp_path}/wandb/offline-run-x-abc123")


def test_the_end_waits_for_an_init_still_running(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    runs = fake_wandb(monkeypatch, gate)
    tracker = WandbTracker("p")
    tracker.on_train_begin(info(tmp_path))
    tracker.after_round({"round": 0, "test_accuracy": 0.1})
    threading.Timer(0.2, gate.set).start()
    tracker.on_train_end({})
    assert runs[0].logged == [(0, {"round": 0, "test_accuracy": 0.1})] and runs[0].finished


def test_a_failed_init_disables_wandb_not_the_run(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    gate = threading.Event()
    gate.set()
    fake_wandb(monkeypatch, gate, error=RuntimeError("disk full"))
    trackers = TrackerList([WandbTracker("p")])
    trackers.on_train_begin(info(tmp_path))
    trackers.on_train_end({})  # waits for the init, gets its error, disables W&B
    assert trackers.trackers == []
    assert "disk full" in caplog.text
