"""One W&B run per experiment: config, per-round metrics, summary and the plot.

W&B never kills or hangs a run: with no API key (or ``WANDB_MODE=offline``) it logs
offline to a folder that ``wandb sync`` uploads later; an online init that fails falls back
to offline with one warning.
"""

from __future__ import annotations

import logging
import os
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

    def on_train_begin(self, info: RunInfo) -> None:
        import wandb

        self.info = info
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
        if self.run is None:
            return
        self.run.log({k: v for k, v in record.items() if isinstance(v, int | float)},
                     step=int(record["round"]))

    def on_train_end(self, summary: dict[str, Any]) -> None:
        if self.run is None:
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
