"""One writer per folder: a lock file holding its owner's pid and host.

A run folder (metrics.jsonl, summary.json, checkpoints) and a sweep folder (runs/,
results.jsonl) each have one writer at a time. The writer keeps ``.flowerbed.lock`` open
with an exclusive ``fcntl.flock`` for its lifetime and removes it at the end. The kernel
drops the lock when its process dies, so a lock file left by a killed process is stale: the
next writer takes it over (with a log line naming the dead owner). A second writer while the
owner lives gets :class:`FolderBusy`, a :class:`ConfigError` naming the folder and the pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

from flowerbed.core.errors import ConfigError

log = logging.getLogger(__name__)

LOCK_NAME = ".flowerbed.lock"


class FolderBusy(ConfigError):
    """Another live process writes this folder."""

    def __init__(self, key: str, folder: Path, owner: dict[str, Any]) -> None:
        self.folder, self.owner = folder, owner
        super().__init__(key, str(folder),
                         f"the folder is in use by pid {owner.get('pid', '?')} on host "
                         f"{owner.get('host', '?')} (lock file {folder / LOCK_NAME}); "
                         "wait for that process to finish or stop it")


def read_owner(folder: Path) -> dict[str, Any]:
    """The owner recorded in ``folder``'s lock file ({} if none or unreadable)."""
    try:
        doc = json.loads((Path(folder) / LOCK_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FolderLock:
    """``with FolderLock(folder): ...`` holds the folder's lock, or raises FolderBusy.

    ``key`` is the run-config key the error names (``resume-from``, ``output-dir``, ...).
    """

    def __init__(self, folder: str | Path, key: str = "output-dir") -> None:
        self.folder = Path(folder).resolve()
        self.key = key
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> FolderLock:
        if self.fd is not None:
            raise FolderBusy(self.key, self.folder, read_owner(self.folder))
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise FolderBusy(self.key, self.folder, read_owner(self.folder)) from None
            # the file we locked may have been removed by its previous owner meanwhile
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = read_owner(self.folder)
        if previous:
            log.warning("%s: taking over the stale lock of pid %s on host %s (%s)",
                        self.folder, previous.get("pid", "?"), previous.get("host", "?"),
                        "no longer running" if not pid_alive(int(previous.get("pid", 0) or 0))
                        else "it no longer holds the lock")
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # while still locked: no one else can hold this inode
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def check_free(folder: str | Path, key: str = "output-dir") -> None:
    """Raise FolderBusy if a live process holds ``folder``'s lock; take and drop it otherwise.

    For a process that starts the writer elsewhere (``flowerbed run`` before its ServerApp):
    it must not hold the lock itself, or its own ServerApp would be refused.
    """
    if not (Path(folder) / LOCK_NAME).exists():
        return
    FolderLock(folder, key).acquire().release()  # a stale lock file goes with it


__all__ = ["LOCK_NAME", "FolderBusy", "FolderLock", "check_free", "read_owner"]
