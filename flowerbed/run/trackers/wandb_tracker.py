"""One W&B run per experiment: config, per-round metrics, summary and the plot.

W&B never kills or hangs a run: with no API key (or ``WANDB_MODE=offline``) it logs
offline to a folder that ``wandb sync`` uploads later; an online init that fails falls back
to offline with one warning.

``wandb.init`` (importing wandb, starting its service process) takes 1.5-3 s on two cores;
it runs in a thread while the run evaluates round 0 and waits for its first round, which
is when a ``flwr run`` waits for its Ray worker to start. Rounds that end before it is
ready are kept and logged, in order, once it is.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from flowerbed.run.trackers.base import RunInfo, Tracker

log = logging.getLogger(__name__)


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def choose_mode() -> str:
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return "offline" if mode == "dryrun" else mode
    return "online" if has_api_key() else "offline"


class WandbTracker(Tracker):
    def __init__(self, project: str, group: str = "") -> None:
        self.project = project
        self.group = group or None
        self.run: Any = None
        self._starting: threading.Thread | None = None
        self._error: BaseException | None = None
        self._pending: list[dict[str, Any]] = []  # rounds that ended before the init

    def on_train_begin(self, info: RunInfo) -> None:
        self.info = info
        self._starting = threading.Thread(target=self._init_in_thread, args=(info,),
                                          name="wandb-init", daemon=True)
        self._starting.start()

    def _init_in_thread(self, info: RunInfo) -> None:
        try:
            self._init(info)
        except BaseException as err:  # handed to the run's thread by _ready()
            self._error = err

    def _ready(self, wait: bool) -> bool:
        """Whether the run is initialised (``wait``: wait for it); raises its init error."""
        if self._starting is not None:
            if self._starting.is_alive() and not wait:
                return False
            self._starting.join()
            self._starting = None
            if self._error is not None:
                raise self._error
            for record in self._pending:
                self._log(record)
            self._pending.clear()
        return self.run is not None

    def _init(self, info: RunInfo) -> None:
        import wandb

        mode = choose_mode()
        kwargs = dict(project=self.project, group=self.group, name=info.name,
                      config=info.config, dir=str(info.run_dir), reinit="finish_previous")
        try:
            self.run = wandb.init(mode=mode, settings=wandb.Settings(init_timeout=30,
                                                                     silent=True), **kwargs)
        except Exception as err:
            if mode != "online":
                raise
            log.warning("W&B online init failed (%s); logging offline instead, "
                        "upload later with `wandb sync`", err)
            self.run = wandb.init(mode="offline", settings=wandb.Settings(silent=True),
                                  **kwargs)
        log.info("W&B run %s (%s) in %s", self.run.id, mode, info.run_dir)

    def after_round(self, record: dict[str, Any]) -> None:
        if self._ready(wait=False):
            self._log(record)
        elif self._starting is not None:
            self._pending.append(dict(record))

    def _log(self, record: dict[str, Any]) -> None:
        self.run.log({k: v for k, v in record.items() if isinstance(v, int | float)},
                     step=int(record["round"]))

    def on_train_end(self, summary: dict[str, Any]) -> None:
        if not self._ready(wait=True):
            return
        import wandb

        for section in ("final", "best", "totals"):
            for k, v in (summary.get(section) or {}).items():
                if isinstance(v, int | float):
                    self.run.summary[f"{section}/{k}"] = v
        curves = Path(self.info.run_dir) / "curves.png"
        if curves.exists():
            self.run.log({"curves": wandb.Image(str(curves))})
        artifacts = summary.setdefault("artifacts", {})
        artifacts["wandb_dir"] = str(self.run.dir)
        if self.run.settings.mode == "offline":
            # the folder `wandb sync` takes is the run's, one above its files/ dir
            command = f"wandb sync {Path(self.run.dir).parent}"
            artifacts["wandb_sync"] = command
            log.info("W&B logged offline; to upload: %s", command)
        self.run.finish()
        self.run = None
