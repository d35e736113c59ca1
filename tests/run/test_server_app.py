"""What the ServerApp logs for a bad run config: first, one line naming the key and value
(plain `flwr run` then prints its traceback and exits 0, which flowerbed cannot change)."""

from __future__ import annotations

import logging

import pytest

from flowerbed.core.errors import ConfigError
from flowerbed.run.server_app import serve
from tests.conftest import tiny


def _first_error(caplog: pytest.LogCaptureFixture) -> str:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors, "nothing was logged at ERROR"
    return errors[0].getMessage()


@pytest.mark.parametrize(("raw", "line"), [
    ({"lr": -1}, "flowerbed: run config: lr = -1.0 is invalid: must be > 0"),
    ({"strategy-params": "nmu = 1"}, "flowerbed: run config: nmu = 1 is invalid: unknown key"),
    ({"seed": -1}, "flowerbed: run config: seed = -1 is invalid"),
])
def test_a_bad_value_is_the_first_error_line(flowerbed_logs: pytest.LogCaptureFixture,
                                             raw: dict, line: str) -> None:
    with pytest.raises(ConfigError):
        serve(None, tiny(**raw))
    assert _first_error(flowerbed_logs).startswith(line)


def test_a_value_found_bad_while_building_the_run_too(
        flowerbed_logs: pytest.LogCaptureFixture) -> None:
    """Not visible to the config check: the topology is sampled when the strategy is built."""
    raw = tiny(strategy="dsgd", topology="erdos-renyi", edge_probability=0.01)
    with pytest.raises(ConfigError):
        serve(None, raw)
    first = _first_error(flowerbed_logs)
    assert first.startswith("flowerbed: run config: topology = 'erdos-renyi' is invalid")
    assert "disconnected" in first and "\n" not in first
