"""Declared parameters: a key, its default (which fixes its type), a one-line doc, a check.

Every layer declares the run-config keys it reads next to its code: the clients their data,
model and training keys, the simulation its participation and fault keys, and every strategy
its own parameters as a frozen dataclass whose fields are made with :func:`param`. The run
layer collects the declarations into one schema and validates a run config against it, so a
bad value fails at once with a message naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flowerbed.core.errors import ConfigError

Check = Callable[[Any], str | None]  # None if the value is fine, else what is allowed
TYPES = (bool, int, float, str)  # what a Flower run config can carry


# --- checks ---------------------------------------------------------------------------------


def positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must be >= 0"


def at_least(lo: float) -> Check:
    return lambda v: None if v >= lo else f"must be >= {lo}"


def unit_interval_open_left(v: Any) -> str | None:
    return None if 0 < v <= 1 else "must be in (0, 1]"


def unit_interval(v: Any) -> str | None:
    return None if 0 <= v <= 1 else "must be in [0, 1]"


def unit_interval_open_right(v: Any) -> str | None:
    return None if 0 <= v < 1 else "must be in [0, 1)"


def one_of(*choices: str) -> Check:
    def check(v: Any) -> str | None:
        return None if v in choices else "must be one of " + ", ".join(repr(c) for c in choices)

    return check


def int_list(v: Any) -> str | None:
    if v == "":
        return None
    try:
        sizes = [int(s) for s in str(v).split(",")]
    except ValueError:
        return "must be comma-separated positive integers, e.g. '64,32'"
    return None if all(s > 0 for s in sizes) else "sizes must be > 0"


# --- keys -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One run-config key: its default (which also fixes its type), doc and check."""

    name: str
    default: Any
    doc: str
    check: Check | None = None

    def __post_init__(self) -> None:
        if type(self.default) not in TYPES:
            raise TypeError(f"key {self.name!r}: the default must be a bool, int, float or str "
                            f"(what a Flower run config carries), got {self.default!r}")

    def value(self, raw: Any) -> Any:
        """``raw`` as this key's type, checked; ConfigError naming the key otherwise."""
        value = coerce(self, raw)
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ConfigError(self.name, value, problem)
        return value


def coerce(key: Key, value: Any) -> Any:
    """Accept what Flower's TOML and --run-config produce; reject mismatched types."""
    want = type(key.default)
    if want is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(key.name, value, "must be true or false")
    if want is int:
        if isinstance(value, bool):
            raise ConfigError(key.name, value, "must be an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(key.name, value, "must be an integer")
    if want is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key.name, value, "must be a number")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(key.name, value, "must be a finite number")
        return value
    if not isinstance(value, str):
        raise ConfigError(key.name, value, "must be a string")
    return value


def toml_value(value: Any) -> str:
    """A run-config value as a TOML value (strings as basic strings with escapes, so any
    text survives: quotes, backslashes, newlines). The one encoder of run-config values."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    raise TypeError(f"not a run-config value: {value!r}")


def key_name(attr: str) -> str:
    """The run-config key of a Python name: '-' for '_' (``k_active`` -> ``k-active``)."""
    return attr.replace("_", "-")


# --- a strategy's (or any component's) parameters as a frozen dataclass ------------------------


def param(default: Any, doc: str, check: Check | None = None) -> Any:
    """A dataclass field that is also a run-config key (named after the field, kebab-case)."""
    return dataclasses.field(default=default, metadata={"doc": doc, "check": check})


def keys_of(params_cls: type) -> tuple[Key, ...]:
    """The keys a params dataclass declares, base classes' fields first."""
    out = []
    for f in dataclasses.fields(params_cls):
        if "doc" not in f.metadata:
            raise TypeError(f"{params_cls.__qualname__}.{f.name}: declare it with "
                            "flowerbed.core.params.param(default, doc, check)")
        out.append(Key(key_name(f.name), f.default, f.metadata["doc"], f.metadata["check"]))
    return tuple(out)


def build_params(params_cls: type, values: Mapping[str, Any]) -> Any:
    """An instance of ``params_cls`` from (validated) run-config values by key name."""
    return params_cls(**{f.name: values[key_name(f.name)]
                         for f in dataclasses.fields(params_cls)})


@dataclass(frozen=True)
class NoParams:
    """Parameters of a component that declares none."""


# --- the validated values -------------------------------------------------------------------


class Config:
    """Validated run-config values; attribute names are the keys with '-' -> '_'.

    Immutable and hashable, so per-process caches can key on it.
    """

    __slots__ = ("_hash", "values")

    def __init__(self, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "values", dict(values))
        object.__setattr__(self, "_hash", hash(tuple(sorted(self.values.items()))))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a run config is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.values,)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self.values == other.values

    def __getattr__(self, attr: str) -> Any:
        values = object.__getattribute__(self, "values")
        key = key_name(attr)
        if key in values:
            return values[key]
        raise AttributeError(attr)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.values!r})"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)


__all__ = ["Check", "Config", "Key", "NoParams", "build_params", "coerce", "key_name",
           "keys_of", "param", "toml_value"]
