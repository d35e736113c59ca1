"""The processes of a private SuperLink, found and stopped; a watchdog for when we die.

A :class:`~flowerbed.tools.superlink.LocalSuperLink` starts ``flower-superlink`` in its own
session (process group) with a marker variable in its environment. Everything it spawns
(``flwr-simulation``, Ray's GCS, raylet and ``ClientAppActor`` workers) inherits the marker
and mostly the group, so :func:`link_processes` finds them by either. :func:`reap` waits a
bounded time for them to exit and then stops the rest (SIGTERM, then SIGKILL).

SIGKILL of the CLI cannot be caught: :func:`start_watchdog` starts a small process in a
session of its own that polls its parent; when the parent is gone it reaps the SuperLink's
processes and exits (``python -m flowerbed.tools.processes PARENT PGID MARKER``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

log = logging.getLogger(__name__)

MARKER_ENV = "FLOWERBED_SUPERLINK"  # its value identifies one LocalSuperLink's processes


def link_processes(pgid: int, marker: str) -> list[int]:
    """Live (not zombie) processes in group ``pgid`` or whose environment holds the marker;
    never this process."""
    tag = f"{MARKER_ENV}={marker}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if fields[0] == b"Z":
                continue
            if int(fields[2]) == pgid:
                found.append(int(name))
                continue
            with open(f"/proc/{name}/environ", "rb") as f:
                if tag in f.read().split(b"\0"):
                    found.append(int(name))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
    return found


def running(pids: list[int], name: str) -> list[int]:
    """Those of ``pids`` whose command line mentions ``name``."""
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if name.encode() in f.read():
                    out.append(pid)
        except OSError:
            continue
    return out


def wait_gone(pgid: int, marker: str, timeout: float, poll: float = 0.2) -> list[int]:
    """Poll until no process of the link is left or ``timeout`` passed; those left."""
    deadline = time.monotonic() + timeout
    while True:
        left = link_processes(pgid, marker)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(poll)


def reap(pgid: int, marker: str, wait: float = 15.0, grace: float = 5.0) -> None:
    """Give the link's processes ``wait`` s to exit on their own, then SIGTERM the rest,
    then (after ``grace`` s) SIGKILL what is still there."""
    left = wait_gone(pgid, marker, wait)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not left:
            return
        log.info("stopping %d leftover SuperLink process(es) with %s: %s", len(left),
                 sig.name, left)
        for pid in left:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        left = wait_gone(pgid, marker, grace)
    if left:
        log.warning("SuperLink processes %s survived SIGKILL", left)


def start_watchdog(pgid: int, marker: str) -> subprocess.Popen[bytes]:
    """A process that reaps the link's processes once this process is gone."""
    env = {k: v for k, v in os.environ.items() if k not in (MARKER_ENV, "FLWR_HOME")}
    return subprocess.Popen([sys.executable, "-m", __name__, str(os.getpid()), str(pgid),
                             marker], env=env, start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def stop_watchdog(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def watch(parent: int, pgid: int, marker: str, poll: float = 0.2) -> None:
    """The watchdog's loop: wait for ``parent`` to die, then reap the link."""
    while os.getppid() == parent:
        time.sleep(poll)
    reap(pgid, marker, wait=0.0)


if __name__ == "__main__":
    watch(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
