"""A plug-in named by ``pkg.mod:attr`` whose module is broken is a ConfigError naming the
import path and the module's exception, whatever that exception is."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from flowerbed.core.errors import ConfigError
from flowerbed.core.imports import load_object
from flowerbed.run.config import parse_run_config


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    name = f"plugin_{uuid.uuid4().hex[:8]}"  # fresh: no cached import between cases
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


@pytest.mark.parametrize(("source", "exception"), [
    ("raise RuntimeError('no GPU here')\n", "RuntimeError: no GPU here"),
    ("def broken(:\n", "SyntaxError"),
    ("x = {}['missing']\n", "KeyError"),
])
def test_a_module_that_fails_on_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       source: str, exception: str) -> None:
    path = f"{_module(tmp_path, monkeypatch, source)}:Thing"
    with pytest.raises(ConfigError) as info:
        load_object(path, "strategy")
    assert info.value.key == "strategy" and info.value.value == path
    assert exception in str(info.value) and path in str(info.value)


def test_the_run_config_check_reports_it_for_strategy_and_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = _module(tmp_path, monkeypatch, "raise ValueError('bad plug-in')\n")
    for key in ("strategy", "model"):
        with pytest.raises(ConfigError) as info:
            parse_run_config({key: f"{name}:X"})
        assert info.value.key == key and "ValueError: bad plug-in" in str(info.value)
