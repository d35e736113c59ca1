"""One progress line per round: round, test accuracy and loss, elapsed time and ETA."""

from __future__ import annotations

import logging
import time
from typing import Any

from flowerbed.run.trackers.base import RunInfo, Tracker

log = logging.getLogger("flowerbed.progress")


def _fmt_time(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _eta(seconds: float, rounds_timed: int, rounds_left: int) -> float | None:
    """Rounds left times the mean of the rounds timed; None before any is timed."""
    if rounds_left <= 0:
        return 0.0
    return seconds / rounds_timed * rounds_left if rounds_timed > 0 else None


class ConsoleTracker(Tracker):
    def on_train_begin(self, info: RunInfo) -> None:
        self.info = info
        self.t0 = time.monotonic()
        log.info("run %s: %d rounds, outputs in %s", info.name, info.num_rounds, info.run_dir)

    def after_round(self, record: dict[str, Any]) -> None:
        r = record["round"]
        if r == 0:
            log.info("round   0/%d  acc %.4f  loss %.4f  (initial model)", self.info.num_rounds,
                     record.get("test_accuracy", float("nan")),
                     record.get("test_loss", float("nan")))
            self.t0 = time.monotonic()
            return
        now = time.monotonic()
        elapsed = now - self.t0
        done = r - self.info.first_round + 1
        # the first round carries the start-up (workers, imports): the ETA uses later ones
        if done == 1:
            self.t1 = now
        eta = _eta(now - getattr(self, "t1", self.t0), done - 1, self.info.num_rounds - r)
        acc = record.get("test_accuracy")
        parts = [f"round {r:3d}/{self.info.num_rounds}"]
        if acc is not None:
            parts.append(f"acc {acc:.4f}  loss {record.get('test_loss', float('nan')):.4f}")
        if record.get("train_loss") is not None:
            parts.append(f"train_loss {record['train_loss']:.4f}")
        parts.append(f"clients {record.get('participants', 0)}")
        if record.get("failures"):
            parts.append(f"failed {record['failures']}")
        parts.append(f"elapsed {_fmt_time(elapsed)}  eta "
                     f"{'--:--' if eta is None else _fmt_time(eta)}")
        log.info("  ".join(parts))

    def on_train_end(self, summary: dict[str, Any]) -> None:
        final = summary.get("final", {})
        log.info("done in %s: final accuracy %.4f (best %.4f at round %s)",
                 _fmt_time(summary.get("wall_time_s", 0.0)),
                 final.get("test_accuracy", float("nan")),
                 summary.get("best", {}).get("test_accuracy", float("nan")),
                 summary.get("best", {}).get("round"))
        log.info("outputs: %s", summary.get("run_dir"))
