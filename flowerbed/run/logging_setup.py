"""One readable log format for flowerbed's own messages."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: int = logging.INFO) -> None:
    logger = logging.getLogger("flowerbed")
    if any(getattr(h, "_flowerbed", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s flowerbed %(message)s", "%H:%M:%S"))
    handler._flowerbed = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
