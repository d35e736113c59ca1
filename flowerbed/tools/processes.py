"""The processes of a private SuperLink, found and stopped; a watchdog for when we die.

A :class:`~flowerbed.tools.superlink.LocalSuperLink` starts ``flower-superlink`` in its own
session (process group) with a marker variable in its environment. Everything it spawns
(``flwr-simulation``, Ray's GCS, raylet, its agents and ``ClientAppActor`` workers) is its
descendant, and mostly inherits the group and the marker. Neither is enough alone: Ray's
``DashboardAgent`` and ``RuntimeEnvAgent`` rewrite their command line over the start of their
environment (the marker may be gone from it) and, once raylet dies, are nobody's descendant
any more. So a :class:`Link` remembers every descendant it has seen (pid and start time, so a
reused pid is not mistaken for one) and scans again each time: group, marker, and the
descendants of everything known. Scan while the tree is whole (before stopping anything);
:func:`reap` then waits a bounded time for them to exit and stops the rest (SIGTERM, then
SIGKILL).

SIGKILL of the CLI cannot be caught: :func:`start_watchdog` starts a small process in a
session of its own that polls its parent, scanning the link now and then; when the parent is
gone it reaps the link's processes and exits
(``python -m flowerbed.tools.processes PARENT LEADER MARKER``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import NamedTuple

log = logging.getLogger(__name__)

MARKER_ENV = "FLOWERBED_SUPERLINK"  # its value identifies one LocalSuperLink's processes


class _Proc(NamedTuple):
    ppid: int
    pgid: int
    start: int  # clock ticks after boot: a pid and its start time name one process


def _table() -> dict[int, _Proc]:
    """Every live (not zombie) process but this one."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if fields[0] != b"Z":
                out[int(name)] = _Proc(int(fields[1]), int(fields[2]), int(fields[19]))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return out


def _has_marker(pid: int, tag: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return tag in f.read().split(b"\0")
    except OSError:
        return False  # gone meanwhile, or not ours to read


class Link:
    """The processes of the SuperLink ``leader`` (also its group id) marked ``marker``."""

    def __init__(self, leader: int, marker: str) -> None:
        self.leader = leader
        self.tag = f"{MARKER_ENV}={marker}".encode()
        self.seen: dict[int, int] = {}  # pid -> start time
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def scan(self) -> list[int]:
        """The link's live processes now: the group, the marked, everything seen before and
        their descendants. Remembers them for the next scan."""
        with self._lock:
            return self._scan()

    def keep_scanning(self, every: float = 1.0) -> None:
        """Scan in a background thread every ``every`` s until :meth:`stop_scanning`, so that
        processes orphaned later (Ray's agents when raylet exits) are still known."""
        def loop() -> None:
            while not self._stop.wait(every):
                self.scan()
        self._thread = threading.Thread(target=loop, name="link-scan", daemon=True)
        self._thread.start()

    def stop_scanning(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _scan(self) -> list[int]:
        table = _table()
        known = {pid for pid, start in self.seen.items()
                 if pid in table and table[pid].start == start}
        known |= {pid for pid, p in table.items()
                  if pid == self.leader or p.pgid == self.leader or _has_marker(pid, self.tag)}
        children: dict[int, list[int]] = {}
        for pid, p in table.items():
            children.setdefault(p.ppid, []).append(pid)
        todo = list(known)
        while todo:
            for child in children.get(todo.pop(), []):
                if child not in known:
                    known.add(child)
                    todo.append(child)
        self.seen = {pid: table[pid].start for pid in known}
        return sorted(known)


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


def group_alive(pgid: int, wait: float = 0.0, poll: float = 0.02) -> bool:
    """Whether a process of group ``pgid`` is left after waiting up to ``wait`` s for
    the group to empty (returns as soon as it is)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # a member we may not signal: still a member
        if time.monotonic() >= deadline:
            return True
        time.sleep(poll)


def wait_gone(link: Link, timeout: float, poll: float = 0.2) -> list[int]:
    """Poll until no process of the link is left or ``timeout`` passed; those left."""
    deadline = time.monotonic() + timeout
    while True:
        left = link.scan()
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(poll)


def reap(link: Link, wait: float = 15.0, grace: float = 5.0) -> None:
    """Give the link's processes ``wait`` s to exit on their own, then SIGTERM the rest,
    then (after ``grace`` s) SIGKILL what is still there."""
    left = wait_gone(link, wait)
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
        left = wait_gone(link, grace)
    if left:
        log.warning("SuperLink processes %s survived SIGKILL", left)


def start_watchdog(leader: int, marker: str) -> subprocess.Popen[bytes]:
    """A process that reaps the link's processes once this process is gone."""
    env = {k: v for k, v in os.environ.items() if k not in (MARKER_ENV, "FLWR_HOME")}
    return subprocess.Popen([sys.executable, "-m", __name__, str(os.getpid()), str(leader),
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


def watch(parent: int, leader: int, marker: str, poll: float = 0.2, rescan: float = 1.0
          ) -> None:
    """The watchdog's loop: wait for ``parent`` to die, scanning the link every ``rescan``
    s so that its whole tree is known, then reap the link."""
    link = Link(leader, marker)
    link.keep_scanning(rescan)
    while os.getppid() == parent:
        time.sleep(poll)
    link.stop_scanning()
    reap(link, wait=0.0)


if __name__ == "__main__":
    watch(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
