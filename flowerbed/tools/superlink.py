"""A local simulation SuperLink that we start and stop ourselves, by PID.

``flwr run`` against the magic local connection starts a ``flower-superlink`` daemon on a
fixed port and leaves it running, with whatever settings the first run had (runtime
dependency installation on, for one). flowerbed instead starts its own on free ports with
runtime dependency installation off (the venv's packages are used: no CUDA torch
downloads), points ``flwr`` at it through ``FLWR_LOCAL_*_PORT`` and a private
``FLWR_HOME``, and stops its whole process group at the end, waiting (bounded) until every
process it spawned is gone (:mod:`flowerbed.tools.processes`); a watchdog does that too if
our process is killed. The run's final status is read over the SuperLink's Control API.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from flowerbed.core.params import toml_value
from flowerbed.tools.processes import (
    MARKER_ENV,
    Link,
    group_alive,
    reap,
    running,
    start_watchdog,
    stop_watchdog,
)

log = logging.getLogger(__name__)


BIN_DIR = str(Path(sys.executable).parent)  # the venv's bin: flwr, flower-superlink, ...

# Ray settings for the simulation the SuperLink runs (read by its raylet from the
# environment). Ray starts one idle Python worker per CPU when it starts and when the
# first driver connects; Flower's actors never use them (they need the job's runtime
# environment, so Ray starts a worker of their own), and on two cores the idle ones
# only take CPU from the ServerApp and the actor while the run starts.
RAY_ENV = {"RAY_enable_worker_prestart": "0", "RAY_prestart_worker_first_driver": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_run_config(values: Mapping[str, Any], path: Path) -> Path:
    """``values`` as a flat TOML file, what ``flwr run --run-config <file>.toml`` reads.

    A file rather than ``key=value`` pairs: Flower's pair parser takes a quoted value up to
    the next quote of its kind, so strings holding quotes, backslashes or newlines would
    not survive; a TOML file carries any string.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in values.items()))
    return path


@dataclass
class RunOutcome:
    """How a ``flwr run`` ended: its id (None if it never started), status, output."""

    run_id: int | None
    status: str
    details: str
    output: str

    @property
    def completed(self) -> bool:
        return self.status == "finished:completed"


def end_client(proc: subprocess.Popen[str], grace: float = 5.0) -> None:
    """Stop a ``flwr`` client process of ours: SIGTERM, then SIGKILL after ``grace`` s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)


def _stage(app_dir: Path, dest: Path) -> Path | None:
    """The app's FAB files in ``dest`` (``flwr run`` lists every file of the folder it
    gets, the venv's too); None, and the app folder is used, if staging fails."""
    from flowerbed.tools.fab_stage import stage_app

    try:
        return stage_app(app_dir, dest)
    except (OSError, ValueError) as err:
        log.warning("building the FAB from %s itself (staging failed: %s)", app_dir, err)
        return None


def _open_log(path: Path | None) -> TextIO:
    """The stream's log file (its folder created), or a sink when ``path`` is None."""
    if path is None:
        return open(os.devnull, "w")
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "a", encoding="utf-8")


class LocalSuperLink:
    """``with LocalSuperLink(flwr_home) as link: link.flwr("run", ".", ...)``."""

    def __init__(self, flwr_home: str | Path, cwd: str | Path | None = None,
                 startup_timeout: float = 60.0) -> None:
        self.flwr_home = Path(flwr_home).resolve()
        self.cwd = Path(cwd or os.getcwd()).resolve()
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.link: Link | None = None  # its processes, once started
        self.watchdog: subprocess.Popen[bytes] | None = None
        self.marker = uuid.uuid4().hex  # in the environment of everything the link spawns
        self.run_id: int | None = None  # the run run_app started, once flwr run says so
        self.http_port = free_port()
        self.control_port = free_port()
        self._cancelled = threading.Event()  # set by cancel_start()

    @property
    def env(self) -> dict[str, str]:
        env = os.environ.copy()
        # the SuperLink spawns flower-superexec & co. by name: the venv's must come first
        env["PATH"] = BIN_DIR + os.pathsep + env.get("PATH", "")
        env.update({
            "FLWR_HOME": str(self.flwr_home),
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(self.http_port),
            "FLWR_LOCAL_CONTROL_API_PORT": str(self.control_port),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            MARKER_ENV: self.marker,
        })
        for key, value in RAY_ENV.items():  # the user's own settings win
            env.setdefault(key, value)
        return env

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/health",
                                        timeout=0.5) as r:
                return r.status == 200
        except OSError:
            return False

    def start(self) -> LocalSuperLink:
        run_dir = self.flwr_home / "local-superlink"
        run_dir.mkdir(parents=True, exist_ok=True)
        cmd = [str(Path(BIN_DIR) / "flower-superlink"), "--insecure", "--simulation",
               "--isolation", "subprocess",
               "--disable-runtime-dependency-installation",
               "--control-api-address", f"127.0.0.1:{self.control_port}",
               "--host", "127.0.0.1", "--port", str(self.http_port),
               "--database", str(run_dir / "state.db"),
               "--log-file", str(run_dir / "superlink.log")]
        self.proc = subprocess.Popen(cmd, env=self.env, cwd=self.cwd, start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.link = Link(self.proc.pid, self.marker)
        self.link.keep_scanning()
        try:
            self.watchdog = start_watchdog(self.proc.pid, self.marker)
            return self._wait_healthy(run_dir)
        except BaseException:  # a Ctrl-C while starting must not leave the SuperLink behind
            self.stop()
            raise

    def _wait_healthy(self, run_dir: Path) -> LocalSuperLink:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline and not self._cancelled.is_set():
            if self.proc.poll() is not None:
                raise RuntimeError(f"flower-superlink exited with code {self.proc.returncode};"
                                   f" see {run_dir / 'superlink.log'}")
            if self.healthy():
                log.info("local SuperLink pid %d on port %d", self.proc.pid, self.http_port)
                return self
            self._cancelled.wait(0.2)
        if self._cancelled.is_set():
            return self  # called off: the caller stops it
        self.stop()
        raise RuntimeError(f"flower-superlink did not start within {self.startup_timeout} s")

    def cancel_start(self) -> None:
        """Make a :meth:`start` running in another thread return at once instead of waiting
        for the SuperLink to be up (the caller then :meth:`stop`s it)."""
        self._cancelled.set()

    def stop(self) -> None:
        """Stop the SuperLink and everything it spawned (its own process group, and whatever
        carries its marker); returns once they are all gone."""
        if self.proc is None or self.link is None:
            return
        try:
            self.link.stop_scanning()
            self.link.scan()  # the whole tree, while it is whole
            self._stop_group()
            reap(self.link)
        finally:
            if self.watchdog is not None:
                stop_watchdog(self.watchdog)
                self.watchdog = None
            self.proc = None
            self.link = None

    def _stop_group(self) -> None:
        assert self.proc is not None
        pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # the leader is gone; its children get a moment to follow, then no child of
            # the group survives it
            if group_alive(pgid, wait=0.5):
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            break

    def flwr(self, *args: str, capture: bool = False, timeout: float | None = None
             ) -> subprocess.CompletedProcess[str]:
        """Run a ``flwr`` command against this SuperLink."""
        return subprocess.run([str(Path(BIN_DIR) / "flwr"), *args], env=self.env, cwd=self.cwd,
                              text=True,
                              capture_output=capture, timeout=timeout, check=False)

    def run_app(self, app_dir: Path, values: Mapping[str, Any],
                federation_config: Sequence[str] = (), echo: TextIO | None = None,
                timeout: float = 3600.0, log_path: Path | None = None) -> RunOutcome:
        """``flwr run <app_dir> --stream`` with ``values`` as its run config; waits for the
        run to finish (``flwr run`` returns early, and exits 0 even when the run failed).

        Every line of the stream goes to ``echo`` (a :class:`~flowerbed.tools.console_filter.
        FilteredEcho` shows only some) and, unfiltered, to ``log_path`` as it arrives."""
        cfg_file = write_run_config(values, self.flwr_home / "run-configs"
                                    / f"{uuid.uuid4().hex}.toml")
        stage = _stage(app_dir, self.flwr_home / "stages" / cfg_file.stem)
        cmd = [str(Path(BIN_DIR) / "flwr"), "run", str(stage or app_dir), "--stream",
               "--run-config", str(cfg_file)]
        for fc in federation_config:
            cmd += ["--federation-config", fc]
        try:
            proc = subprocess.Popen(cmd, env=self.env, cwd=app_dir, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            assert proc.stdout is not None
            lines = []
            self.run_id = None
            try:
                with _open_log(log_path) as full:
                    for line in proc.stdout:
                        lines.append(line)
                        full.write(line)
                        full.flush()
                        started = re.search(r"Successfully started run (\d+)", line)
                        if started:
                            self.run_id = int(started.group(1))
                        if echo is not None:
                            echo.write(line)
                            echo.flush()
                code = proc.wait()
            except BaseException:  # interrupted (a signal): stop the flwr run client too
                end_client(proc)
                raise
        finally:
            cfg_file.unlink(missing_ok=True)
            if stage is not None:
                shutil.rmtree(stage, ignore_errors=True)
        output = "".join(lines)
        found = re.search(r"Successfully started run (\d+)", output)
        if code != 0 or found is None:
            return RunOutcome(None, "not started", f"flwr run exited with {code}", output)
        run_id = int(found.group(1))
        status, details = self.wait_finished(run_id, timeout)
        return RunOutcome(run_id, status, details, output)

    def stop_run(self, timeout: float = 30.0) -> str | None:
        """``flwr stop`` the run run_app started (if it did), and wait (bounded) until it is
        finished; its final status, or None if there was no run to stop."""
        if self.run_id is None or self.link is None:
            return None
        try:
            out = self.flwr("stop", str(self.run_id), capture=True, timeout=timeout)
            if out.returncode != 0:
                log.warning("flwr stop %d: %s", self.run_id, (out.stdout + out.stderr)[-2000:])
            status = self.wait_finished(self.run_id, timeout)[0]
            # let the ServerApp write its summary and exit before the SuperLink goes
            deadline = time.monotonic() + timeout
            while running(self.link.scan(), "flwr-simulation"):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            return status
        except (subprocess.TimeoutExpired, RuntimeError) as err:
            log.warning("could not stop run %d cleanly: %s", self.run_id, err)
            return None

    def run_status(self, run_id: int) -> tuple[str, str]:
        """(status, details) of a run, e.g. ('finished:completed', ''): asked over the
        SuperLink's Control API from this process (``flwr ls`` would start a process that
        imports Flower's CLI first, 1-3 s on two cores); ``flwr ls`` if that fails."""
        try:
            return self._control_run_status(run_id)
        except Exception as err:  # e.g. a Flower whose internals moved: the CLI still works
            log.debug("Control API status of run %d failed (%s); asking flwr ls", run_id, err)
        return self._flwr_ls_status(run_id)

    def _control_run_status(self, run_id: int) -> tuple[str, str]:
        from flwr.proto.control_pb2 import ListRunsRequest
        from flwr.supercore.control import ControlHttpClient
        from flwr.supercore.interceptors.http.runtime_version import (
            RuntimeVersionHttpInterceptor,
        )

        client = ControlHttpClient.from_server_address(
            f"127.0.0.1:{self.http_port}", insecure=True, root_certificates=None,
            interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr CLI")])
        try:
            status = client.ListRuns(ListRunsRequest(run_id=run_id)).run_dict[run_id].status
        finally:
            client.close()
        # as flwr ls shows it: 'status:sub-status', or 'status' alone
        text = f"{status.status}:{status.sub_status}" if status.sub_status else status.status
        return str(text), str(status.details)

    def _flwr_ls_status(self, run_id: int) -> tuple[str, str]:
        out = self.flwr("ls", "--run-id", str(run_id), "--format", "json", capture=True)
        try:
            runs = json.loads(out.stdout)["runs"]
        except (ValueError, KeyError) as err:
            raise RuntimeError(f"cannot read run status: {out.stdout}{out.stderr}") from err
        run = runs[0]
        return str(run.get("status")), str(run.get("status-details", ""))

    def wait_finished(self, run_id: int, timeout: float = 3600.0, poll: float = 0.2
                      ) -> tuple[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            status, details = self.run_status(run_id)
            if status.startswith("finished") or time.monotonic() > deadline:
                return status, details
            time.sleep(poll)

    def __enter__(self) -> LocalSuperLink:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
