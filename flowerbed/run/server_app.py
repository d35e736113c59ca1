"""The Flower ServerApp: validate the run config, then run the experiment on the grid.

The run's modules (torch and the runner) are imported when the run starts, not with this
module: ``flwr-simulation`` loads the ServerApp and the ClientApp under one lock, and the
ClientApp's load is what it waits for before it starts Ray; a light module here lets Ray
start while the ServerApp imports what it needs.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from flowerbed.core.errors import ConfigError
from flowerbed.run.logging_setup import setup_logging

if TYPE_CHECKING:
    from flowerbed.run.runner import RunResult

log = logging.getLogger("flowerbed")

app = ServerApp()

STOP_GRACE_S = 20.0  # how long a stopped run may take to write its summary


def end_this_thread_on_flower_exit(done: threading.Event) -> None:
    """When Flower exits this process (``flwr stop``, SIGTERM, SIGINT), end the run too.

    In ``flwr-simulation`` the ServerApp runs in a thread of its own; Flower's signal handler
    calls ``sys.exit`` in the main thread and force-exits the process 5 s later, so the run
    would be cut off wherever it is, without a summary. This exit handler (run before that
    timer starts) raises SystemExit in the run's thread, where :func:`run_experiment`
    records status "stopped" and writes its summary, and waits for that (bounded).
    """
    from flwr.supercore.exit.exit_handler import add_exit_handler

    ident = threading.get_ident()

    def handler() -> None:
        if done.is_set():
            return
        log.warning("flowerbed run stopped by Flower; writing its summary")
        if ident != threading.get_ident():
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                                       ctypes.py_object(SystemExit))
            done.wait(STOP_GRACE_S)

    add_exit_handler(handler, run_before_force_exit=True)


def serve(grid: Grid | None, run_config: Mapping[str, Any]) -> RunResult:
    """Validate Flower's run config and run it. A value that cannot work (found while parsing
    or while building the run) is logged first, as one ERROR line naming key and value, so
    it heads what the run prints, before Flower's traceback."""
    from flowerbed.run.config import parse_run_config
    from flowerbed.run.runner import run_experiment

    try:
        return run_experiment(parse_run_config(dict(run_config)), grid)
    except ConfigError as err:
        log.error("flowerbed: %s", err)
        # Flower marks the run failed only for an exception (SystemExit counts as success)
        raise ConfigError(err.key, err.value, err.allowed) from None


@app.main()
def main(grid: Grid, context: Context) -> None:
    setup_logging()
    done = threading.Event()
    end_this_thread_on_flower_exit(done)
    try:
        result = serve(grid, context.run_config)
    finally:
        done.set()
    log.debug("flowerbed run finished: %s", result.summary.get("run_dir") or "(tracking off)")
