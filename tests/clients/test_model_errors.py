"""A model factory that raises is a ConfigError naming the model key and the exception."""

from __future__ import annotations

import pytest

from flowerbed.clients.models import build_model
from flowerbed.core.errors import ConfigError
from flowerbed.run.config import parse_run_config
from tests.conftest import tiny
from tests.tools.test_cli_failures import APP


def exploding(input_shape: tuple[int, ...], num_classes: int, cfg: object) -> None:
    raise RuntimeError(f"cannot build for {input_shape}")


PATH = "tests.clients.test_model_errors:exploding"


def test_a_raising_factory_names_the_model_and_the_exception() -> None:
    cfg = parse_run_config(tiny(model=PATH))
    with pytest.raises(ConfigError) as info:
        build_model(cfg, (1, 8, 8), 10)
    assert info.value.key == "model" and info.value.value == PATH
    assert "RuntimeError: cannot build for (1, 8, 8)" in str(info.value)


def test_flowerbed_check_exits_2_for_it(capsys: pytest.CaptureFixture[str]) -> None:
    from flowerbed.tools.cli import main

    assert main(["check", str(APP), "-c", f'model="{PATH}"']) == 2
    err = capsys.readouterr().err
    assert f"model = '{PATH}'" in err and "RuntimeError" in err
