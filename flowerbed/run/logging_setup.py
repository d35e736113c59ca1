"""One readable log format for flowerbed's own messages, the console's verbosity, and the
``run.log`` every run keeps in its folder.

Console lines look like ``12:00:00 flowerbed message`` (``12:00:00 flowerbed WARNING
message`` from warnings up), in this process and when they come back through Flower's log
stream, so :mod:`flowerbed.tools.console_filter` recognises them. The console shows only
flowerbed's lines by default (``quiet``: errors only; ``verbose``: everything, Flower's
and Ray's too); ``run.log`` always receives everything this process logs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

# the console's verbosity
QUIET, NORMAL, VERBOSE = -1, 0, 1

RUN_LOG = "run.log"
_VERBOSITY_ENV = "FLOWERBED_VERBOSITY"  # inherited by the ServerApp and the workers
# loggers of other libraries whose records (INFO and up) run.log keeps; Ray reformats the
# handlers of its own logger and W&B keeps its own debug.log, so they are not here
FOREIGN_LOGGERS = ("flwr", "py.warnings", "datasets")


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS flowerbed message``; the level name from WARNING up."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s flowerbed %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if record.levelno >= logging.WARNING:
            head, _, rest = line.partition(" flowerbed ")
            line = f"{head} flowerbed {record.levelname} {rest}"
        return line


def verbosity() -> int:
    try:
        return int(os.environ.get(_VERBOSITY_ENV, NORMAL))
    except ValueError:
        return NORMAL


def set_verbosity(level: int) -> None:
    """The console's verbosity for this process and the processes it starts."""
    os.environ[_VERBOSITY_ENV] = str(level)
    if level < VERBOSE:
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    logger = logging.getLogger("flowerbed")
    for h in logger.handlers:
        if getattr(h, "_flowerbed", False):
            h.setLevel(logging.ERROR if level <= QUIET else logging.INFO)
    quiet_foreign_consoles(level)


def quiet_foreign_consoles(level: int | None = None) -> None:
    """Below verbose: Flower's console handler shows errors only, Python warnings (Ray's
    FutureWarning, ...) go to the log, so to run.log, instead of stderr, and datasets'
    progress bars are off. For the CLI's own process; Flower's processes are left alone
    (their output is filtered where the CLI echoes it)."""
    level = verbosity() if level is None else level
    if level >= VERBOSE:
        return
    logging.captureWarnings(True)
    warnings_logger = logging.getLogger("py.warnings")
    warnings_logger.propagate = False
    if not warnings_logger.handlers:
        warnings_logger.addHandler(logging.NullHandler())
    from flwr.supercore.logger import ConsoleHandler

    for h in logging.getLogger("flwr").handlers:
        if isinstance(h, ConsoleHandler):
            h.setLevel(logging.ERROR)
    if "datasets" in sys.modules:  # imported already: the variable came too late
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()


def setup_logging(level: int = logging.INFO) -> None:
    logger = logging.getLogger("flowerbed")
    if not any(getattr(h, "_flowerbed", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(ConsoleFormatter())
        handler._flowerbed = True  # type: ignore[attr-defined]
        handler.setLevel(logging.ERROR if verbosity() <= QUIET else level)
        logger.addHandler(handler)
    logger.setLevel(min(level, logging.DEBUG))  # run.log gets debug lines too
    logger.propagate = False


def _own_debug_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.INFO or record.name.startswith("flowerbed")


@contextlib.contextmanager
def run_log(run_dir: Path | None) -> Iterator[Path | None]:
    """While the block runs, append every record of flowerbed's, Flower's, Ray's and
    Python's warnings to ``run_dir/run.log``, whatever the console shows."""
    if run_dir is None:
        yield None
        return
    path = Path(run_dir) / RUN_LOG
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG)
    handler.addFilter(_own_debug_only)
    handler._flowerbed_run_log = True  # type: ignore[attr-defined]
    names = ("flowerbed", *FOREIGN_LOGGERS)
    loggers = [logging.getLogger(n) for n in names]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        if lg.level == logging.NOTSET or lg.level > logging.INFO:
            lg.setLevel(logging.INFO if lg.name != "flowerbed" else logging.DEBUG)
    try:
        yield path
    finally:
        for lg, lvl in zip(loggers, saved, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(lvl)
        handler.close()
