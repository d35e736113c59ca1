"""Client-side rules by name: the built-ins, or ``"package.module:Class"`` for a plug-in.

A strategy selects a rule for its clients with the train-config key ``client-rule``; the
default (no key) is :class:`~flowerbed.clients.rules.sgd.LocalSGD`. See
:mod:`flowerbed.clients.rules.base` for the interface.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from flowerbed.clients.rules.base import ClientRule
from flowerbed.clients.rules.fedamd import AnchorClient, MinerClient
from flowerbed.clients.rules.fedspeed import FedSpeedClient
from flowerbed.clients.rules.sam import SAMClient
from flowerbed.clients.rules.scaffold import ScaffoldClient
from flowerbed.clients.rules.sgd import LocalSGD
from flowerbed.clients.rules.zeroth_order import ZerothOrderClient
from flowerbed.core.errors import ConfigError
from flowerbed.core.imports import is_import_path, load_object
from flowerbed.core.wire import INPUTS_KEY, OUTPUTS_KEY, RULE_KEY

BUILT_IN: dict[str, type[ClientRule]] = {r.name: r for r in (LocalSGD, ScaffoldClient,
                                                             SAMClient, FedSpeedClient,
                                                             ZerothOrderClient,
                                                             AnchorClient, MinerClient)}


@functools.lru_cache(maxsize=32)
def rule_class(name: str) -> type[ClientRule]:
    """The rule class called ``name`` (built-in) or at the import path ``name``."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    if not is_import_path(name):
        raise ConfigError(RULE_KEY, name, f"unknown client rule: built-in rules are "
                          f"{', '.join(sorted(BUILT_IN))}, or give 'package.module:Class'")
    cls: type[ClientRule] = load_object(name, RULE_KEY, ClientRule)
    return cls


def rule_for(config: Mapping[str, Any]) -> ClientRule | None:
    """The rule a train config asks for; None for the default local SGD (its own fast
    path, unchanged)."""
    name = str(config.get(RULE_KEY, "sgd"))
    if name == "sgd":
        return None
    return rule_class(name)(config)


__all__ = ["BUILT_IN", "INPUTS_KEY", "OUTPUTS_KEY", "RULE_KEY", "ClientRule", "rule_class",
           "rule_for"]
