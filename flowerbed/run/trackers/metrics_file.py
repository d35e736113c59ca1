"""metrics.jsonl (one line per round, flushed as it goes) and summary.json (at the end)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flowerbed.run.trackers.base import RunInfo, Tracker, write_json_atomic


class MetricsFileTracker(Tracker):
    def on_train_begin(self, info: RunInfo) -> None:
        self.path = Path(info.run_dir) / "metrics.jsonl"
        self.summary_path = Path(info.run_dir) / "summary.json"
        if info.first_round <= 1:
            self.path.write_text("")
        else:  # resuming: drop lines of rounds that will be redone
            keep = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln)["round"] < info.first_round]
            self.path.write_text("".join(k + "\n" for k in keep))

    def after_round(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def on_train_end(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.summary_path, summary)
