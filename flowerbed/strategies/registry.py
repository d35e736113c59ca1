"""Strategy registry: a name -> ``module:Class``, imported only when used."""

from __future__ import annotations

import inspect
from typing import Any

from flwr.serverapp.strategy import Strategy

from flowerbed.core.errors import ConfigError
from flowerbed.core.imports import is_import_path, load_object
from flowerbed.strategies.contract import PlatformStrategy, Services, build
from flowerbed.strategies.flower_native import adopt, shared_keys

STRATEGIES: dict[str, str] = {
    "fedavg": "flowerbed.strategies.fedavg:FedAvg",
    "fedau": "flowerbed.strategies.fedau:FedAU",
    "fedavg-known": "flowerbed.strategies.fedavg_known:FedAvgKnown",
    "scaffold": "flowerbed.strategies.scaffold:Scaffold",
    "fedsam": "flowerbed.strategies.fedsam:FedSAM",
    "fedspeed": "flowerbed.strategies.fedspeed:FedSpeed",
    "zo-sgd": "flowerbed.strategies.zo_sgd:ZOSGD",
    "dzo-sgd": "flowerbed.strategies.dzo_sgd:DZOSGD",
    "fedamd": "flowerbed.strategies.fedamd:FedAMD",
    "paris": "flowerbed.strategies.paris:Paris",
    "dsgd": "flowerbed.strategies.dsgd:DSGD",
    "choco": "flowerbed.strategies.choco:ChocoSGD",
    "dfedsam": "flowerbed.strategies.dfedsam:DFedSAM",
    "gossip": "flowerbed.strategies.gossip:Gossip",
    "async-gossip": "flowerbed.strategies.async_gossip:AsyncGossip",
    "teleportation": "flowerbed.strategies.teleportation:Teleportation",
    "teleportation-tuned": "flowerbed.strategies.teleportation_tuned:TeleportationTuned",
    "modest": "flowerbed.strategies.modest:MoDeST",
    "fedasync": "flowerbed.strategies.fedasync:FedAsync",
    "fedbuff": "flowerbed.strategies.fedbuff:FedBuff",
    "fedfix": "flowerbed.strategies.fedfix:FedFix",
    "geometric-median": "flowerbed.strategies.geometric_median:GeometricMedian",
    "centered-clipping": "flowerbed.strategies.centered_clipping:CenteredClipping",
    "flag": "flowerbed.strategies.flag:FlagAggregator",
    "monna": "flowerbed.strategies.monna:MoNNA",
    "clipped-gossip": "flowerbed.strategies.clipped_gossip:ClippedGossip",
    "sybilwall": "flowerbed.strategies.sybilwall:SybilWall",
    "bristle": "flowerbed.strategies.bristle:Bristle",
}


def _user_class(path: str) -> type:
    """A plug-in: a flowerbed strategy, or any Flower message-API strategy (adopted)."""
    cls = load_object(path, "strategy", base=Strategy)
    if issubclass(cls, PlatformStrategy):
        return cls
    if inspect.isabstract(cls):
        raise ConfigError("strategy", path, "is an abstract Flower strategy; name a concrete "
                          "one (e.g. flwr.serverapp.strategy:FedAvg)")
    return adopt(cls, shared_keys([strategy_class(n) for n in STRATEGIES]))


def strategy_class(name: str) -> type:
    """The class a run-config ``strategy`` names (ConfigError if it names none)."""
    if is_import_path(name):
        return _user_class(name)
    if name not in STRATEGIES:
        raise ConfigError("strategy", name, "must be one of " + ", ".join(sorted(STRATEGIES))
                          + " or 'pkg.module:Class'")
    return load_object(STRATEGIES[name], "strategy")


def builtin_classes() -> list[type]:
    """Every registered strategy class, in registry order."""
    return [strategy_class(name) for name in STRATEGIES]


def build_strategy(name: str, values: Any, services: Services) -> Strategy:
    """The strategy ``name`` built from validated run-config values and the services."""
    return build(strategy_class(name), values, services)


__all__ = ["STRATEGIES", "build_strategy", "builtin_classes", "strategy_class"]
