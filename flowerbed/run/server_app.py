"""The Flower ServerApp: validate the run config, then run the experiment on the grid."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from flowerbed.core.errors import ConfigError
from flowerbed.run.config import parse_run_config
from flowerbed.run.logging_setup import setup_logging
from flowerbed.run.runner import RunResult, run_experiment

log = logging.getLogger("flowerbed")

app = ServerApp()


def serve(grid: Grid | None, run_config: Mapping[str, Any]) -> RunResult:
    """Validate Flower's run config and run it. A value that cannot work (found while parsing
    or while building the run) is logged first, as one ERROR line naming key and value, so
    it heads what the run prints, before Flower's traceback."""
    try:
        return run_experiment(parse_run_config(dict(run_config)), grid)
    except ConfigError as err:
        log.error("flowerbed: %s", err)
        # Flower marks the run failed only for an exception (SystemExit counts as success)
        raise ConfigError(err.key, err.value, err.allowed) from None


@app.main()
def main(grid: Grid, context: Context) -> None:
    setup_logging()
    result = serve(grid, context.run_config)
    log.info("flowerbed run finished: %s", result.summary.get("run_dir") or "(tracking off)")
