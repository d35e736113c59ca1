"""Run-config validation: every bad value fails up front, naming key, value and what is allowed."""

from __future__ import annotations

import tomllib

import pytest

from flowerbed.run.config import KEYS, ConfigError, defaults, parse_run_config
from tests.conftest import ROOT


def test_defaults_parse_and_are_the_default_run() -> None:
    cfg = parse_run_config({})
    assert cfg.strategy == "fedavg"
    assert cfg.num_clients == 100
    assert cfg.as_dict() == defaults()


def test_pyproject_lists_every_key_with_its_default() -> None:
    """Flower rejects --run-config overrides of keys missing from pyproject."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    section = data["tool"]["flwr"]["app"]["config"]
    assert section == defaults()


@pytest.mark.parametrize(("raw", "key", "fragment"), [
    ({"lr": 0.0}, "lr", "> 0"),
    ({"lr": -1}, "lr", "> 0"),
    ({"fraction-train": 0.0}, "fraction-train", "(0, 1]"),
    ({"fraction-train": 1.5}, "fraction-train", "(0, 1]"),
    ({"partitioner-alpha": 0.0}, "partitioner-alpha", "> 0"),
    ({"num-clients": 0}, "num-clients", "> 0"),
    ({"num-clients": 5000}, "num-clients", "more clients than"),
    ({"batch-size": 1.5}, "batch-size", "integer"),
    ({"tracking": "yes"}, "tracking", "true or false"),
    ({"lr": "fast"}, "lr", "number"),
    ({"strategy": "fedsgd"}, "strategy", "fedavg"),
    ({"dataset": "mnist"}, "dataset", "digits"),
    ({"partitioner": "zipf"}, "partitioner", "dirichlet"),
    ({"model": "resnet"}, "model", "mlp"),
    ({"hidden-sizes": "64,x"}, "hidden-sizes", "comma-separated"),
    ({"engine": "spark"}, "engine", "inprocess"),
    ({"partitioner": "natural-id"}, "partitioner", "client ids"),
])
def test_bad_values_name_key_value_and_allowed(raw: dict, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_run_config(raw)
    assert info.value.key == key
    msg = str(info.value)
    assert key in msg and repr(info.value.value) in msg
    assert fragment in msg


def test_unknown_key_suggests_closest() -> None:
    with pytest.raises(ConfigError, match="did you mean 'num-server-rounds'"):
        parse_run_config({"num-server-round": 3})


def test_unknown_names_list_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        parse_run_config({"model": "vgg"})
    for name in ("logreg", "mlp", "cnn"):
        assert name in str(info.value)


def test_import_paths_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"cannot import module 'no_such_pkg\.mod'"):
        parse_run_config({"strategy": "no_such_pkg.mod:Thing"})
    with pytest.raises(ConfigError, match="has no attribute 'Nope'"):
        parse_run_config({"strategy": "flowerbed.strategies.fedavg:Nope"})
    with pytest.raises(ConfigError, match="subclass"):
        parse_run_config({"strategy": "flowerbed.simulation.ledger:Ledger"})


def test_every_key_is_documented() -> None:
    assert all(k.doc for k in KEYS)
    assert len({k.name for k in KEYS}) == len(KEYS)


def test_replace_revalidates() -> None:
    cfg = parse_run_config({})
    assert cfg.replace(lr=0.5).lr == 0.5
    with pytest.raises(ConfigError):
        cfg.replace(lr=-0.5)
