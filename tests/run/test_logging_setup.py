"""Every run keeps run.log in its folder; the console format marks warnings and errors."""

from __future__ import annotations

import logging
from pathlib import Path

from flowerbed.run.config import parse_run_config
from flowerbed.run.logging_setup import ConsoleFormatter, run_log
from flowerbed.run.runner import run_experiment
from tests.conftest import tiny


def test_inprocess_run_writes_run_log_with_everything(tmp_path: Path) -> None:
    cfg = parse_run_config(tiny(tracking=True, progress=True, output_dir=str(tmp_path),
                                run_name="r", num_server_rounds=2))
    run_experiment(cfg)
    text = (tmp_path / "r" / "run.log").read_text()
    # flowerbed's own lines, the console tracker's included
    assert "INFO flowerbed.clients.data: data digits: 10 clients" in text
    assert "INFO flowerbed.progress: round   2/2" in text
    assert "flowerbed.progress: done in" in text
    # and Flower's, which the console does not show by default
    assert "WARNING flwr: fraction_evaluate is set to 0.0" in text


def test_run_log_stops_at_the_end_of_the_run(tmp_path: Path) -> None:
    log = logging.getLogger("flowerbed.test")
    with run_log(tmp_path) as path:
        log.info("inside")
        logging.getLogger("flwr").info("from flower")
    log.info("after")
    assert path == tmp_path / "run.log"
    text = path.read_text()
    assert "INFO flowerbed.test: inside" in text
    assert "INFO flwr: from flower" in text
    assert "after" not in text
    assert not any(getattr(h, "_flowerbed_run_log", False)
                   for h in logging.getLogger("flowerbed").handlers)


def test_console_format_names_level_from_warning_up() -> None:
    f = ConsoleFormatter()

    def line(level: int) -> str:
        return f.format(logging.LogRecord("flowerbed.x", level, __file__, 1, "hello %s",
                                          ("you",), None))

    assert line(logging.INFO).endswith(" flowerbed hello you")
    assert line(logging.WARNING).endswith(" flowerbed WARNING hello you")
    assert line(logging.ERROR).endswith(" flowerbed ERROR hello you")
    assert line(logging.INFO)[2] == ":" and line(logging.INFO)[5] == ":"  # HH:MM:SS first
