"""One progress line per round: the primary metric (and its companions), loss, time, ETA."""

from __future__ import annotations

import logging
import time
from typing import Any

from flowerbed.run.trackers.base import RunInfo, Tracker
from flowerbed.run.trackers.primary import best_value, final_value, metric_label

log = logging.getLogger("flowerbed.progress")


def _fmt_time(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, int | float) else "n/a"


def _eta(seconds: float, rounds_timed: int, rounds_left: int) -> float | None:
    """Rounds left times the mean of the rounds timed; None before any is timed."""
    if rounds_left <= 0:
        return 0.0
    return seconds / rounds_timed * rounds_left if rounds_timed > 0 else None


class ConsoleTracker(Tracker):
    def on_train_begin(self, info: RunInfo) -> None:
        self.info = info
        self.records: list[dict[str, Any]] = []
        self.t0 = time.monotonic()
        log.info("run %s: %d rounds, outputs in %s; judged by %s (%s)", info.name,
                 info.num_rounds, info.run_dir, info.primary.label, info.primary.metric)

    def metrics_text(self, record: dict[str, Any]) -> str | None:
        """'<primary label> v  <companion> v  loss v', or None in a round not evaluated."""
        p = self.info.primary
        if record.get(p.metric) is None and record.get("test_accuracy") is None:
            return None
        parts = [f"{p.label} {_fmt(record.get(p.metric))}"]
        parts += [f"{metric_label(k)} {_fmt(record[k])}" for k in p.companions
                  if record.get(k) is not None]
        parts.append(f"loss {_fmt(record.get('test_loss'))}")
        return "  ".join(parts)

    def after_round(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        r = record["round"]
        if r == 0:
            log.info("round   0/%d  %s  (initial model)", self.info.num_rounds,
                     self.metrics_text(record) or "not evaluated")
            self.t0 = time.monotonic()
            return
        now = time.monotonic()
        elapsed = now - self.t0
        done = r - self.info.first_round + 1
        # the first round carries the start-up (workers, imports): the ETA uses later ones
        if done == 1:
            self.t1 = now
        eta = _eta(now - getattr(self, "t1", self.t0), done - 1, self.info.num_rounds - r)
        parts = [f"round {r:3d}/{self.info.num_rounds}"]
        text = self.metrics_text(record)
        if text is not None:
            parts.append(text)
        if record.get("train_loss") is not None:
            parts.append(f"train_loss {record['train_loss']:.4f}")
        parts.append(f"clients {record.get('participants', 0)}")
        if record.get("failures"):
            parts.append(f"failed {record['failures']}")
        parts.append(f"elapsed {_fmt_time(elapsed)}  eta "
                     f"{'--:--' if eta is None else _fmt_time(eta)}")
        log.info("  ".join(parts))

    def on_train_end(self, summary: dict[str, Any]) -> None:
        log.info("done in %s: %s", _fmt_time(summary.get("wall_time_s", 0.0)),
                 self.end_text(summary.get("records") or self.records))
        log.info("outputs: %s", summary.get("run_dir"))

    def end_text(self, records: list[dict[str, Any]]) -> str:
        """'final <primary> v (best v at round r); final <companion> v, ...'."""
        p = self.info.primary
        best, best_round = best_value(records, p.metric)
        text = (f"final {p.label} {_fmt(final_value(records, p.metric))} "
                f"(best {_fmt(best)} at round {best_round})")
        also = [f"{metric_label(k)} {_fmt(v)}" for k in p.companions
                if (v := final_value(records, k)) is not None]
        return text + (f"; final {', '.join(also)}" if also else "")
