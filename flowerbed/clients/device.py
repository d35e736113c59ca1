"""Where a worker trains and the server evaluates: ``device = "auto" | "cpu" | "cuda" |
"cuda:N"``.

``auto`` is the first GPU when this process sees one, else the CPU. A Ray worker sees a GPU
only when the federation gives it GPU resources (``client-resources-num-gpus``; Ray sets
``CUDA_VISIBLE_DEVICES`` per actor), so with ``auto`` a run without GPU resources trains on
the CPU and one with them trains on the GPU. Nothing here initialises CUDA on a machine
without it: ``torch.cuda.is_available()`` and ``device_count()`` only query the driver.
Asking for ``cuda`` where no GPU is visible is an error naming the key.
"""

from __future__ import annotations

import functools
import re

import torch

from flowerbed.core.errors import ConfigError

_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device(value: str) -> str | None:
    """The run-config check: the syntax only (the hardware is checked where it is used)."""
    return None if _PATTERN.fullmatch(value) else "must be 'auto', 'cpu', 'cuda' or 'cuda:N'"


@functools.lru_cache(maxsize=8)
def resolve(value: str) -> torch.device:
    """The torch device ``value`` names on this process's hardware."""
    if value == "cpu" or (value == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if value == "auto":
        return torch.device("cuda", 0)
    if not torch.cuda.is_available():
        raise ConfigError("device", value, "no CUDA GPU is visible to this process (with "
                          "flwr run, give the workers GPUs: client-resources-num-gpus)")
    dev = torch.device(value)
    index = 0 if dev.index is None else dev.index
    if index >= torch.cuda.device_count():
        raise ConfigError("device", value, f"this process sees {torch.cuda.device_count()} "
                          "GPU(s)")
    return torch.device("cuda", index)


__all__ = ["check_device", "resolve"]
