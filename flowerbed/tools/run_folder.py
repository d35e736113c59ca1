"""Find the run folder a ``flwr run`` wrote, and keep the run's full stream in it."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from flowerbed.tools.console_filter import strip_ansi

log = logging.getLogger(__name__)

STREAM_LOG = "flwr-run.log"
# the console tracker's first and last lines name the run folder
_FOLDER_LINE = re.compile(r" flowerbed (?:run \S+: \d+ rounds, outputs in|outputs:) (\S.*)$")


def run_folder_in(output: str, out_dir: Path) -> Path | None:
    """The run folder named in the stream, else the newest folder of ``out_dir`` with a
    ``run.log`` (progress lines off); None if there is none."""
    for line in reversed(strip_ansi(output).splitlines()):
        m = _FOLDER_LINE.search(line.rstrip())
        if m and Path(m.group(1)).is_dir():
            return Path(m.group(1))
    try:
        runs = [p.parent for p in out_dir.glob("*/run.log")]
    except OSError:
        return None
    return max(runs, key=lambda p: (p / "run.log").stat().st_mtime, default=None)


def keep_stream_log(stream_log: Path, output: str, out_dir: Path) -> Path | None:
    """Move ``stream_log`` (the whole ``flwr run --stream`` output) into the run folder as
    ``flwr-run.log``; returns the run folder (None: the log stays where it is)."""
    run_dir = run_folder_in(output, out_dir)
    if run_dir is None or not stream_log.exists():
        if stream_log.exists():
            log.info("full flwr run output: %s", stream_log)
        return run_dir
    shutil.move(str(stream_log), run_dir / STREAM_LOG)
    return run_dir


__all__ = ["STREAM_LOG", "keep_stream_log", "run_folder_in"]
