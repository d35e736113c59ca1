"""Built federations, stored so that they are not built again.

Two folders, the same file format:

- **One run's** (``FLOWERBED_DATA_CACHE``): the CLI builds the data once to validate the
  config; without this, the ServerApp and every worker would build it again, each importing
  ``datasets`` and Flower Datasets first (about 2.5 s per process on an idle core). The CLI
  names a fresh folder per invocation (it reaches the other processes through the
  SuperLink's environment) and deletes it afterwards. Without the variable nothing is
  stored there.
- **Kept between runs** (``FLOWERBED_CACHE_DIR``, default ``$XDG_CACHE_HOME/flowerbed`` or
  ``~/.cache/flowerbed``; empty or ``off`` turns it off): only the built-in datasets
  (digits, synthetic, quadratic), whose data is a function of the config alone. Their
  entries are keyed by the config's data keys, flowerbed's data code (a hash of its
  sources) and the versions of the libraries that build them, so a change to any of them
  builds anew. A later run of the same config loads the file instead of importing
  scikit-learn, ``datasets`` and Flower Datasets and building (seconds of the CLI's start-up).
  At most ``KEEP_FILES`` entries of at most ``KEEP_MAX_BYTES`` each are kept, the least
  recently used deleted first.

A file that cannot be read is ignored (the data is built again), never an error.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import pickle
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV = "FLOWERBED_DATA_CACHE"
KEEP_ENV = "FLOWERBED_CACHE_DIR"
KEEP_FILES = 16
KEEP_MAX_BYTES = 512 * 2**20
# the libraries whose code builds the built-in datasets (their version is in the key)
BUILDERS = ("numpy", "scikit-learn", "scipy", "datasets", "flwr-datasets", "pyarrow")


def _file(folder: Path, key: tuple[Any, ...], salt: str = "") -> Path:
    digest = hashlib.sha256((repr(key) + salt).encode()).hexdigest()[:32]
    return folder / f"{digest}.pkl"


def _path(key: tuple[Any, ...]) -> Path | None:
    folder = os.environ.get(ENV)
    return _file(Path(folder), key) if folder else None


def kept_folder() -> Path | None:
    """Where built-in datasets are kept between runs; None when that is turned off."""
    value = os.environ.get(KEEP_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off") else Path(value).expanduser()
    try:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    except RuntimeError:  # no home folder to be found: keep nothing
        return None
    return Path(base) / "flowerbed"


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """flowerbed's data code and the builders' versions, as one hash: a kept entry
    built by other code is never loaded."""
    from importlib import metadata

    h = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for sub in ("clients", "core"):
        for source in sorted((package / sub).rglob("*.py")):
            h.update(source.relative_to(package).as_posix().encode())
            h.update(source.read_bytes())
    for name in BUILDERS:
        try:
            h.update(f"{name}=={metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{name} missing".encode())
    return h.hexdigest()


def _kept_path(key: tuple[Any, ...]) -> Path | None:
    folder = kept_folder()
    return _file(folder / "data", key, code_fingerprint()) if folder else None


def _read(path: Path | None, key: tuple[Any, ...]) -> Any:
    if path is None or not path.exists():
        return None
    try:
        with path.open("rb") as f:
            stored_key, data = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, AttributeError,
            ImportError, IndexError, TypeError) as err:
        log.debug("data cache %s unreadable (%s); building the data", path, err)
        return None
    if stored_key != key:
        return None
    if data.x_flat is not None and data.offsets is not None:  # views, as built
        o = data.offsets
        data.x = [data.x_flat[o[i]:o[i + 1]] for i in range(len(o) - 1)]
        data.y = [data.y_flat[o[i]:o[i + 1]] for i in range(len(o) - 1)]
    return data


def _write(path: Path, key: tuple[Any, ...], data: Any) -> bool:
    slim = data
    if data.x_flat is not None and data.offsets is not None:  # x, y: views of x_flat, y_flat
        slim = dataclasses.replace(data, x=[], y=[])
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"  # the user's umask applies
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with tmp.open("wb") as f:
                pickle.dump((key, slim), f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as err:
        log.debug("data cache %s not written (%s)", path, err)
        return False
    return True


def load(key: tuple[Any, ...]) -> Any:
    """The ``FederatedData`` this run's cache holds for ``key``, or None."""
    return _read(_path(key), key)


def store(key: tuple[Any, ...], data: Any) -> None:
    """Store ``data`` (a ``FederatedData``) for ``key`` in this run's cache, if it is on."""
    path = _path(key)
    if path is not None and not path.exists():
        _write(path, key, data)


def load_kept(key: tuple[Any, ...]) -> Any:
    """The ``FederatedData`` kept from an earlier run for ``key`` (built-in datasets only:
    the caller decides), or None."""
    path = _kept_path(key)
    data = _read(path, key)
    if data is not None and path is not None:
        try:
            os.utime(path)  # recently used: evicted last
        except OSError:
            pass
    return data


def keep(key: tuple[Any, ...], data: Any) -> None:
    """Keep ``data`` for later runs (if on and not too large); the oldest entries beyond
    ``KEEP_FILES`` go."""
    path = _kept_path(key)
    size = sum(getattr(a, "nbytes", 0) for a in (data.x_flat, data.y_flat, data.test_x,
                                                 data.test_y))
    if path is None or size > KEEP_MAX_BYTES or not _write(path, key, data):
        return
    entries = sorted(path.parent.glob("*.pkl"), key=_mtime, reverse=True)
    for old in entries[KEEP_FILES:]:
        try:
            old.unlink()
        except OSError:
            pass


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


__all__ = ["ENV", "KEEP_ENV", "keep", "kept_folder", "load", "load_kept", "store"]
