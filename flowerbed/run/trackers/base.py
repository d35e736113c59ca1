"""The tracker interface (pfl-research style callbacks) and a fan-out list."""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowerbed.strategies.contract import Primary

log = logging.getLogger(__name__)


@dataclass
class RunInfo:
    run_dir: Path
    config: dict[str, Any]
    num_rounds: int
    name: str
    first_round: int = 1  # > 1 when resuming
    primary: Primary = field(default_factory=Primary)  # the metric the run is judged by


class Tracker:
    """Override any of the three hooks."""

    def on_train_begin(self, info: RunInfo) -> None:
        return None

    def after_round(self, record: dict[str, Any]) -> None:
        return None

    def on_train_end(self, summary: dict[str, Any]) -> None:
        return None


class TrackerList(Tracker):
    """Calls every tracker; a tracker that raises is logged and disabled, never fatal."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = list(trackers)

    def _call(self, hook: str, arg: Any) -> None:
        for t in list(self.trackers):
            try:
                getattr(t, hook)(arg)
            except Exception:
                log.exception("tracker %s failed in %s; disabling it", type(t).__name__, hook)
                self.trackers.remove(t)

    def on_train_begin(self, info: RunInfo) -> None:
        self._call("on_train_begin", info)

    def after_round(self, record: dict[str, Any]) -> None:
        self._call("after_round", record)

    def on_train_end(self, summary: dict[str, Any]) -> None:
        self._call("on_train_end", summary)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON via a temp file + rename, so a crash never leaves half a file.

    The file gets the user's umask like every other output (``mkstemp`` would make it 0600).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=float)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
