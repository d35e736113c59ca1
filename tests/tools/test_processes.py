"""A SuperLink's processes are found by group, marker or descent and stopped, even ones that
ignore SIGTERM, left the group, lost the marker or were orphaned; the watchdog stops them when
its parent is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

from flowerbed.tools.processes import MARKER_ENV, Link, group_alive, reap, wait_gone
from tests.conftest import ROOT

STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
           "print('up', flush=True); time.sleep(600)"


def stubborn(marker: str) -> subprocess.Popen[str]:
    """A process that left the group (own session) but carries the marker, as a Ray worker
    may, and ignores SIGTERM."""
    proc = subprocess.Popen([sys.executable, "-c", STUBBORN], text=True,
                            env={**os.environ, MARKER_ENV: marker}, start_new_session=True,
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == "up\n"
    return proc


def test_reap_stops_a_marked_process_that_ignores_sigterm() -> None:
    marker = uuid.uuid4().hex
    proc = stubborn(marker)
    try:
        link = Link(-1, marker)
        assert link.scan() == [proc.pid]
        reap(link, wait=0.2, grace=2.0)
        assert proc.wait(timeout=20) == -signal.SIGKILL
        assert not Link(-1, marker).scan()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_watchdog_stops_the_link_when_its_parent_is_killed() -> None:
    """The parent starts the 'link' and the watchdog, then is SIGKILLed (cannot clean up)."""
    marker = uuid.uuid4().hex
    parent_code = (
        "import os, subprocess, sys; from flowerbed.tools.processes import *; "
        f"link = subprocess.Popen([sys.executable, '-c', {STUBBORN!r}], start_new_session=True,"
        f" env={{**os.environ, MARKER_ENV: {marker!r}}}, stdout=subprocess.PIPE, text=True); "
        "link.stdout.readline(); "
        f"start_watchdog(link.pid, {marker!r}); print(link.pid, flush=True); sys.stdin.read()")
    parent = subprocess.Popen([sys.executable, "-c", parent_code], cwd=ROOT, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert parent.stdout is not None
    link_pid = int(parent.stdout.readline())
    try:
        assert Link(link_pid, marker).scan() == [link_pid]
        parent.kill()
        parent.wait(timeout=20)
        assert wait_gone(Link(link_pid, marker), timeout=30) == []
    finally:
        try:
            os.kill(link_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=20)


def test_an_orphan_without_the_marker_is_still_reaped() -> None:
    """Ray's agents: a grandchild in its own session whose environment lost the marker, and
    whose parent (the raylet) dies first. Seen once while the tree was whole, it is reaped."""
    marker = uuid.uuid4().hex
    spawn_orphan = (
        "import os, subprocess, sys; "
        "env = {k: v for k, v in os.environ.items() if k != " f"{MARKER_ENV!r}" "}; "
        f"g = subprocess.Popen([sys.executable, '-c', {STUBBORN!r}], env=env, "
        "start_new_session=True, stdout=subprocess.PIPE, text=True); "
        "g.stdout.readline(); print(g.pid, flush=True); sys.stdin.read()")
    parent = subprocess.Popen([sys.executable, "-c", spawn_orphan], text=True,
                              env={**os.environ, MARKER_ENV: marker}, start_new_session=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert parent.stdout is not None
    orphan = int(parent.stdout.readline())
    try:
        link = Link(parent.pid, marker)
        assert link.scan() == sorted([parent.pid, orphan])
        parent.kill()
        parent.wait(timeout=20)
        assert Link(parent.pid, marker).scan() == []  # a fresh look cannot find it
        reap(link, wait=0.2, grace=2.0)
        assert wait_gone(link, timeout=20) == []
        assert not os.path.exists(f"/proc/{orphan}/cmdline") or \
            open(f"/proc/{orphan}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    finally:
        try:
            os.kill(orphan, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=20)


def test_group_alive_returns_as_soon_as_the_group_is_empty() -> None:
    """The stop waits for the SuperLink's group to empty, not a fixed time."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                            start_new_session=True)
    try:
        assert group_alive(proc.pid)  # a member is there
        assert group_alive(proc.pid, wait=0.3)  # and stays: the whole wait is used
        proc.kill()
        proc.wait(timeout=20)
        started = time.monotonic()
        assert not group_alive(proc.pid, wait=30.0)
        assert time.monotonic() - started < 5.0  # returned at once, not after 30 s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
