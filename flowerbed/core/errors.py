"""The one error type of bad input: a run-config value that cannot work."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A run-config value that cannot work. The message names key, value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"run config: {key} = {value!r} is invalid: {allowed}")


__all__ = ["ConfigError"]
