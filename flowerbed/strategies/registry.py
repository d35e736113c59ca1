"""Strategy registry: a name -> ``module:Class``, imported only when used."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flwr.serverapp.strategy import Strategy

from flowerbed.platform.config import ConfigError
from flowerbed.platform.imports import is_import_path, load_object

if TYPE_CHECKING:
    from flowerbed.platform.config import RunConfig
    from flowerbed.strategies.base import Services

STRATEGIES: dict[str, str] = {
    "fedavg": "flowerbed.strategies.fedavg:FedAvg",
    "fedau": "flowerbed.strategies.fedau:FedAU",
    "fedavg-known": "flowerbed.strategies.fedavg_known:FedAvgKnown",
    "paris": "flowerbed.strategies.paris:Paris",
    "dsgd": "flowerbed.strategies.dsgd:DSGD",
    "gossip": "flowerbed.strategies.gossip:Gossip",
    "teleportation": "flowerbed.strategies.teleportation:Teleportation",
    "teleportation-tuned": "flowerbed.strategies.teleportation_tuned:TeleportationTuned",
    "modest": "flowerbed.strategies.modest:MoDeST",
}


def check_strategy_name(name: str) -> None:
    if is_import_path(name):
        _user_class(name)
    elif name not in STRATEGIES:
        raise ConfigError("strategy", name, "must be one of " + ", ".join(sorted(STRATEGIES))
                          + " or 'pkg.module:Class'")


def _user_class(path: str) -> type:
    from flowerbed.strategies.base import PlatformStrategy

    cls = load_object(path, "strategy", base=Strategy)
    if not issubclass(cls, PlatformStrategy):
        raise ConfigError("strategy", path, "must subclass flowerbed.strategies.base."
                          "CentralizedStrategy or flowerbed.strategies.decentralized."
                          "DecentralizedStrategy")
    return cls


def strategy_class(name: str) -> type:
    if is_import_path(name):
        return _user_class(name)
    check_strategy_name(name)
    return load_object(STRATEGIES[name], "strategy")


def build_strategy(cfg: RunConfig, services: Services) -> Strategy:
    return strategy_class(cfg.strategy).from_config(cfg, services)
