"""The CLI validates before Flower starts and turns a failed run into a non-zero exit."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from flowerbed.tools.superlink import LocalSuperLink
from tests.conftest import ROOT


def flowerbed(*args: str, env: dict[str, str] | None = None, timeout: float = 600
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowerbed.tools.cli", *args], cwd=ROOT, text=True,
                          capture_output=True, env=env, timeout=timeout, check=False)


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            env = (proc / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmd or text in env:
            found.append(f"{proc.name}: {cmd[:120]}")
    return found


@pytest.mark.parametrize(("override", "expected"), [
    ("lr=-1", "lr = -1.0 is invalid: must be > 0"),
    ("num-server-round=3", "did you mean 'num-server-rounds'"),
    ("strategy='fedsgd'", "fedavg, fedavg-known"),
    ("dataset='synthetic' model='cnn' partitioner='iid'", "needs (C, H, W) images"),
])
def test_bad_config_exits_2_before_flower_starts(override: str, expected: str) -> None:
    out = flowerbed("check", "-c", override)
    assert out.returncode == 2
    assert expected in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_flowerbed_run_end_to_end_on_ray(tmp_path: Path) -> None:
    """The real `flwr run .` on the Ray backend, its own FLWR_HOME and SuperLink."""
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home")}
    cfg_file = tmp_path / "small.toml"  # a run-config file, as in experiments/strategies/
    cfg_file.write_text("num-clients = 10\nnum-server-rounds = 2\nfraction-train = 1.0\n"
                        "wandb = false\nlocal-epochs = 2\nrun-name = 'e2e'\n"
                        f"output-dir = '{tmp_path}/out'\n")
    out = flowerbed("run", "-c", str(cfg_file), env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run_dir = tmp_path / "out" / "e2e"
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in lines] == [0, 1, 2]
    assert lines[-1]["test_accuracy"] > lines[0]["test_accuracy"] + 0.2
    assert lines[-1]["participants"] == 10
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert (run_dir / "curves.png").exists()
    assert "round   2/2" in out.stdout + out.stderr  # progress lines reach the user
    assert not processes_mentioning(str(tmp_path / "flwr-home"))  # SuperLink stopped
    # a quiet console: flowerbed's lines only, no colour codes, the end line once
    console = (out.stdout + out.stderr).splitlines()
    foreign = [ln for ln in console if ln.strip()
               and not re.match(r"(\d\d:\d\d:\d\d flowerbed |flowerbed: )", ln)]
    assert foreign == [], foreign
    end = [ln for ln in console if ln.startswith("flowerbed: run ")]
    assert end == [f"flowerbed: run {end[0].split()[2]} completed; outputs in {run_dir}"]
    assert sum("outputs" in ln and str(run_dir) in ln for ln in console) == 3  # begin, end
    # nothing lost: the run's own log and the whole stream, Flower's lines included
    assert "INFO flowerbed.progress: round   2/2" in (run_dir / "run.log").read_text()
    stream = (run_dir / "flwr-run.log").read_text()
    assert "fraction_evaluate is set to 0.0" in stream and "round   2/2" in stream


def test_ray_prestart_is_off_unless_the_user_sets_it(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    """Ray's idle prestarted workers are never used by Flower's actors: off by default."""
    monkeypatch.delenv("RAY_enable_worker_prestart", raising=False)
    monkeypatch.setenv("RAY_prestart_worker_first_driver", "1")
    env = LocalSuperLink(tmp_path).env
    assert env["RAY_enable_worker_prestart"] == "0"
    assert env["RAY_prestart_worker_first_driver"] == "1"  # the user's own value


@pytest.mark.slow
def test_raw_flwr_run_failure_is_reported_as_failed(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`flwr run` exits 0 when the ServerApp fails; the run status says failed, with the
    config error visible in the stream. The status comes from the Control API in this
    process, without a `flwr ls` process."""
    def no_flwr_ls(self: LocalSuperLink, run_id: int) -> tuple[str, str]:
        raise AssertionError("flwr ls was started")

    monkeypatch.setattr(LocalSuperLink, "_flwr_ls_status", no_flwr_ls)
    with LocalSuperLink(tmp_path / "flwr-home", cwd=ROOT) as link:
        out = link.flwr("run", ".", "--stream", "--run-config", "lr=-1", capture=True,
                        timeout=300)
        assert out.returncode == 0  # Flower's: flwr run exits 0 when the ServerApp fails
        assert "lr = -1.0 is invalid" in out.stdout + out.stderr
        run_id = int(next(w for line in out.stdout.splitlines() if "started run" in line
                          for w in line.split() if w.isdigit()))
        status, _ = link.wait_finished(run_id, timeout=120)
        assert status == "finished:failed"
    assert not processes_mentioning(str(tmp_path / "flwr-home"))


def wait_for(condition: Callable[[], object], timeout: float, poll: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return bool(condition())


def rounds_done(run_dir: Path) -> int:
    try:
        return len((run_dir / "metrics.jsonl").read_text().splitlines())
    except OSError:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_killed_flowerbed_run_stops_its_run(tmp_path: Path, how: str) -> None:
    """SIGTERM of the CLI stops the run and its SuperLink (status stopped, one line saying
    so); SIGKILL of the CLI's process group leaves the watchdog to stop the SuperLink."""
    home = tmp_path / "flwr-home"
    env = {**os.environ, "FLWR_HOME": str(home)}
    cfg_file = tmp_path / "long.toml"
    cfg_file.write_text("num-clients = 10\nnum-server-rounds = 500\nfraction-train = 1.0\n"
                        "wandb = false\nlocal-epochs = 1\nrun-name = 'long'\n"
                        f"output-dir = '{tmp_path}/out'\n")
    run_dir = tmp_path / "out" / "long"
    cli = subprocess.Popen([sys.executable, "-m", "flowerbed.tools.cli", "run", "-c",
                            str(cfg_file)], cwd=ROOT, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           start_new_session=True)  # its own group, as a shell job has
    try:
        # round 1 done: the SuperLink, the simulation and Ray's ClientApp actors all exist
        assert wait_for(lambda: rounds_done(run_dir) >= 2 or cli.poll() is not None, 300)
        assert cli.poll() is None, cli.communicate()[0][-3000:]
        if how == "SIGTERM":
            cli.send_signal(signal.SIGTERM)
        else:
            os.killpg(cli.pid, signal.SIGKILL)
        out, _ = cli.communicate(timeout=120)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()
    assert wait_for(lambda: not processes_mentioning(str(home)), 20), \
        processes_mentioning(str(home))
    if how == "SIGTERM":
        assert cli.returncode == 128 + signal.SIGTERM, out[-3000:]
        said = [ln for ln in out.splitlines() if ln.startswith("flowerbed:")]
        assert len(said) == 1 and re.fullmatch(
            rf"flowerbed: run \d+ stopped \(SIGTERM\); its folder: {re.escape(str(run_dir))}",
            said[0]), said
        summary = json.loads((run_dir / "summary.json").read_text())
        assert (summary["status"], summary["error"]) == ("stopped", None)
