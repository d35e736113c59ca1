"""The Flower ServerApp: validate the run config, then run the experiment on the grid."""

from __future__ import annotations

import logging

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from flowerbed.core.errors import ConfigError
from flowerbed.run.config import parse_run_config
from flowerbed.run.logging_setup import setup_logging
from flowerbed.run.runner import run_experiment

log = logging.getLogger("flowerbed")

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    setup_logging()
    try:
        cfg = parse_run_config(dict(context.run_config))
    except ConfigError as err:
        # Flower marks the run failed only for an exception (SystemExit counts as success)
        log.error("%s", err)
        raise ConfigError(err.key, err.value, err.allowed) from None
    result = run_experiment(cfg, grid)
    log.debug("flowerbed run finished: %s", result.summary.get("run_dir") or "(tracking off)")
