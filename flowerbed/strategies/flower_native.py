"""Flower's own message-API strategies (and any written for a vanilla Flower app), unchanged.

A class of ``flwr.serverapp.strategy`` (FedAvg, FedAdam, Krum, ...) or a user's subclass of
one does not follow flowerbed's contract: it has no declared ``Params`` and is built with
keyword arguments. :func:`adopt` gives it the contract without touching its behaviour: a
subclass that overrides no Flower method (Krum, MultiKrum and Bulyan only gain a record of
whom Flower's own selection kept, :mod:`flowerbed.strategies.flower_selection`), whose
``Params`` are read off the constructor's signature (``eta_l`` is the key ``eta-l``, its
default Flower's), and whose ``__init__(params, services)`` calls the original constructor
with those values.

Keys that the built-in strategies share (``fraction-train``, ``min-train-nodes``, ...) keep
the built-ins' meaning and default, so ``strategy = "flwr.serverapp.strategy:FedAvg"``
samples like ``strategy = "fedavg"``. The ClientApp already speaks Flower's conventions:
a train reply carries the model as its one ArrayRecord and ``num-examples`` and
``train_loss`` in its one MetricRecord; a train config's ``proximal-mu`` (FedProx) sets
the client's proximal term.

What such a strategy does not get: checkpoint/resume (its internal state is its own; a
resume is refused), extra per-round metrics and a primary metric other than the server's
test accuracy. Constructor parameters without a simple default (callables, wrapped
strategies) are left at Flower's defaults; the differential-privacy wrappers, which need a
strategy instance, are not adopted this way.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Mapping
from typing import Any

from flowerbed.core.errors import ConfigError
from flowerbed.core.params import TYPES, Key, key_name, keys_of
from flowerbed.strategies.contract import PlatformStrategy, Services
from flowerbed.strategies.flower_selection import SELECTING, SelectionRecorder

UNSET = math.nan  # the default of a float parameter Flower requires (e.g. QFedAvg's)


def _required(annotation: Any) -> bool:
    """A required parameter a run config can set: a float (e.g. a learning rate)."""
    return annotation in (float, "float")


def native_params(cls: type, shared: Mapping[str, Key]) -> type:
    """A frozen params dataclass from ``cls.__init__``'s simple-typed parameters; names in
    ``shared`` take that key's default, doc and check."""
    fields = []
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        key = shared.get(key_name(p.name))
        if key is not None:
            default, doc, check = key.default, key.doc, key.check
        elif p.default is p.empty and _required(p.annotation):
            default, doc, check = UNSET, f"{cls.__name__}({p.name}=...), required", None
        elif type(p.default) in TYPES:
            default, doc, check = p.default, f"{cls.__name__}({p.name}=...)", None
        elif p.default is p.empty:
            raise ConfigError("strategy", f"{cls.__module__}:{cls.__qualname__}",
                              f"cannot be built from a run config: its parameter "
                              f"{p.name!r} has no default (wrap it in a class that sets it)")
        else:
            continue  # callables, None, wrapped strategies: Flower's default
        fields.append((p.name, type(default), dataclasses.field(
            default=default, metadata={"doc": doc, "check": check})))
    return dataclasses.make_dataclass(f"{cls.__name__}Params", fields, frozen=True)


class NativeContract(PlatformStrategy):
    """The contract for a Flower strategy that does not follow it (see :func:`adopt`)."""

    native: type  # the adopted Flower class

    def __init__(self, params: Any, services: Services) -> None:
        self.params, self.services = params, services
        kwargs = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
        self.native.__init__(self, **kwargs)

    @classmethod
    def check_params(cls, params: Any, num_nodes: int) -> None:
        for f in dataclasses.fields(params):
            value = getattr(params, f.name)
            if isinstance(value, float) and math.isnan(value):
                raise ConfigError(key_name(f.name), "(unset)",
                                  f"{cls.native.__name__} requires it; set it in the run "
                                  "config (or strategy-params)")
        need = getattr(params, "min_available_nodes", 0)
        if need > num_nodes:
            raise ConfigError("min-available-nodes", need, f"must be <= num-clients "
                              f"({num_nodes}): {cls.native.__name__} would wait forever")


@functools.cache
def _adopted(cls: type, shared: tuple[Key, ...]) -> type:
    by_name = {k.name: k for k in shared}
    # Krum / MultiKrum / Bulyan: also say whom Flower's own selection kept
    extra = (SelectionRecorder,) if issubclass(cls, SELECTING) else ()
    return type(cls.__name__, (NativeContract, *extra, cls), {
        "Params": native_params(cls, by_name), "native": cls,
        "__module__": cls.__module__, "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__})


def adopt(cls: type, shared: tuple[Key, ...]) -> type:
    """``cls`` with flowerbed's contract; the same class for the same arguments."""
    return _adopted(cls, shared)


def shared_keys(classes: list[type]) -> tuple[Key, ...]:
    """Every key the given (built-in) strategies declare, first declaration wins."""
    out: dict[str, Key] = {}
    for c in classes:
        for key in keys_of(c.Params):
            out.setdefault(key.name, key)
    return tuple(out.values())


__all__ = ["NativeContract", "adopt", "native_params", "shared_keys"]
