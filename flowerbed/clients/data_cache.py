"""The built federation shared between the processes of one ``flowerbed run``.

The CLI builds the data once to validate the config; without this, the ServerApp and
every worker build it again, each importing ``datasets`` and Flower Datasets first (about
2.5 s per process on an idle core). When ``FLOWERBED_DATA_CACHE`` names a folder (the CLI
sets it, per invocation, and deletes the folder afterwards), the first build is stored
there and the other processes load it. Without the variable nothing changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV = "FLOWERBED_DATA_CACHE"


def _path(key: tuple[Any, ...]) -> Path | None:
    folder = os.environ.get(ENV)
    if not folder:
        return None
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:32]
    return Path(folder) / f"{digest}.pkl"


def load(key: tuple[Any, ...]) -> Any:
    """The stored ``FederatedData`` for ``key``, or None."""
    path = _path(key)
    if path is None or not path.exists():
        return None
    try:
        with path.open("rb") as f:
            stored_key, data = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as err:
        log.debug("data cache %s unreadable (%s); building the data", path, err)
        return None
    if stored_key != key:
        return None
    if data.x_flat is not None and data.offsets is not None:  # views, as built
        o = data.offsets
        data.x = [data.x_flat[o[i]:o[i + 1]] for i in range(len(o) - 1)]
        data.y = [data.y_flat[o[i]:o[i + 1]] for i in range(len(o) - 1)]
    return data


def store(key: tuple[Any, ...], data: Any) -> None:
    """Store ``data`` (a ``FederatedData``) for ``key`` if the cache is on."""
    path = _path(key)
    if path is None or path.exists():
        return
    slim = data
    if data.x_flat is not None and data.offsets is not None:  # x, y: views of x_flat, y_flat
        slim = dataclasses.replace(data, x=[], y=[])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".data-")
        with os.fdopen(fd, "wb") as f:
            pickle.dump((key, slim), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError as err:
        log.debug("data cache %s not written (%s)", path, err)


__all__ = ["ENV", "load", "store"]
