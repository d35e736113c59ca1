"""The console tracker's ETA leaves the first round (start-up) out."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from flowerbed.run.trackers import console
from flowerbed.run.trackers.base import RunInfo


def test_eta_from_rounds_after_the_first(monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    clock = iter([0.0, 0.0, 30.0, 31.0, 32.0, 40.0])  # begin, r0, r1 (start-up), r2, r3, r10
    monkeypatch.setattr(console.time, "monotonic", lambda: next(clock))
    t = console.ConsoleTracker()
    caplog.set_level(logging.INFO, logger="flowerbed.progress")
    t.on_train_begin(RunInfo(Path("."), {}, num_rounds=10, name="x"))
    for r in (0, 1, 2, 3, 10):
        t.after_round({"round": r, "test_accuracy": 0.5, "test_loss": 1.0})
    etas = [m.split("eta ")[1] for m in caplog.messages if "eta " in m]
    # after round 1 nothing is timed yet; round 2 took 1 s: 8 left; rounds 2-3: 1 s each
    assert etas == ["--:--", "00:08", "00:07", "00:00"]
