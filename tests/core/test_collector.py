"""The collector settles once per process: live objects frozen, higher thresholds."""

from __future__ import annotations

import gc

from flowerbed.core import collector


def test_settle_freezes_once_and_raises_the_thresholds(monkeypatch) -> None:
    monkeypatch.setattr(collector, "_done", False)
    before = gc.get_threshold()
    try:
        collector.settle()
        assert gc.get_threshold() == collector.THRESHOLDS
        frozen = gc.get_freeze_count()
        assert frozen > 0
        kept = [[i] for i in range(1000)]  # alive after the freeze: not frozen again
        collector.settle()
        assert gc.get_freeze_count() == frozen and len(kept) == 1000
        cycle: list = []
        cycle.append(cycle)  # garbage cycles created later are still collected
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
