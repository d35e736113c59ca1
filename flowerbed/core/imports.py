"""Load a user's class or function named by ``pkg.mod:attr`` with errors that name the path."""

from __future__ import annotations

import importlib
from typing import Any

from flowerbed.core.errors import ConfigError


def is_import_path(name: str) -> bool:
    return ":" in name


def load_object(path: str, key: str, base: type | None = None) -> Any:
    """Import ``pkg.mod:attr``; if ``base`` is given, the object must be a subclass of it."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(key, path, "an import path must look like 'pkg.module:Name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(key, path, f"cannot import module {module_name!r} ({err})") from err
    except Exception as err:  # the module itself is broken: a syntax error, a raise, ...
        raise ConfigError(key, path, f"importing module {module_name!r} failed: "
                          f"{type(err).__name__}: {err}") from err
    try:
        obj = getattr(module, attr)
    except AttributeError as err:
        raise ConfigError(key, path, f"module {module_name!r} has no attribute {attr!r}") from err
    if base is not None and not (isinstance(obj, type) and issubclass(obj, base)):
        raise ConfigError(key, path, f"must be a subclass of {base.__module__}.{base.__name__}")
    return obj
