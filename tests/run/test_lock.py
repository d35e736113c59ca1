"""One writer per run folder: a live owner refuses a second writer, a dead one's lock is
taken over, the lock file goes at the end; a stopped run is recorded as stopped."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flowerbed.run.config import parse_run_config
from flowerbed.run.lock import LOCK_NAME, FolderBusy, FolderLock
from flowerbed.run.runner import run_experiment
from flowerbed.run.trackers.base import RunInfo, Tracker
from flowerbed.tools.cli import main as cli_main
from tests.conftest import ROOT, tiny


def checkpointed_run(tmp_path: Path) -> Path:
    """A finished 2-round run with a checkpoint, to resume (extended) from."""
    run_experiment(parse_run_config(tiny(tracking=True, output_dir=str(tmp_path),
                                         run_name="r", checkpoint_every=1)))
    return tmp_path / "r"


def resume_cfg(run_dir: Path, rounds: int = 3) -> Any:
    from flowerbed.run import checkpoint

    raw = dict(checkpoint.load(run_dir)["config"])
    raw.update({"resume-from": str(run_dir), "num-server-rounds": rounds})
    return parse_run_config(raw)


class Seen(Tracker):
    """Records the lock file's owner at every round."""

    def __init__(self) -> None:
        self.owners: list[int] = []

    def on_train_begin(self, info: RunInfo) -> None:
        self.dir = Path(info.run_dir)

    def after_round(self, record: dict[str, Any]) -> None:
        self.owners.append(json.loads((self.dir / LOCK_NAME).read_text())["pid"])


def test_a_run_holds_the_lock_while_it_writes_and_removes_it(tmp_path: Path) -> None:
    seen = Seen()
    result = run_experiment(parse_run_config(tiny(tracking=True, output_dir=str(tmp_path),
                                                  run_name="r")), extra_trackers=[seen])
    assert seen.owners == [os.getpid()] * 3  # rounds 0, 1, 2
    assert result.run_dir == tmp_path / "r"
    assert not (tmp_path / "r" / LOCK_NAME).exists()
    assert (tmp_path / "r" / "summary.json").exists()


def test_resume_next_to_a_live_writer_is_refused(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = checkpointed_run(tmp_path)
    before = (run_dir / "metrics.jsonl").read_text()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from flowerbed.run.lock import FolderLock; "
         f"FolderLock({str(run_dir)!r}).acquire(); print('held', flush=True); sys.stdin.read()"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(FolderBusy) as err:
            run_experiment(resume_cfg(run_dir))
        assert str(run_dir) in str(err.value)
        assert f"in use by pid {holder.pid}" in str(err.value)
        # the CLI: exit 2 with the message, for the in-process and the flwr run path alike
        for extra in (["--in-process"], []):
            assert cli_main(["resume", str(run_dir), *extra]) == 2
            said = capsys.readouterr().err
            assert f"resume-from = '{run_dir}'" in said
            assert f"in use by pid {holder.pid}" in said
        assert (run_dir / "metrics.jsonl").read_text() == before  # untouched
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0


def test_a_second_writer_in_one_process_is_refused(tmp_path: Path) -> None:
    with FolderLock(tmp_path), pytest.raises(FolderBusy, match=f"pid {os.getpid()}"):
        FolderLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_NAME).exists()
    with FolderLock(tmp_path):  # free again
        pass


def test_a_dead_owners_lock_is_taken_over(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    run_dir = checkpointed_run(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=60)
    (run_dir / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": "h"}))
    with caplog.at_level(logging.WARNING, logger="flowerbed.run.lock"):
        result = run_experiment(resume_cfg(run_dir))
    assert f"taking over the stale lock of pid {dead.pid}" in caplog.text
    assert [r["round"] for r in result.records] == [0, 1, 2, 3]
    rounds = [json.loads(x)["round"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rounds == [0, 1, 2, 3]
    assert not (run_dir / LOCK_NAME).exists()


class StopAt(Tracker):
    """Does what a stop does to the run at round 1."""

    def __init__(self, err: BaseException) -> None:
        self.err = err

    def after_round(self, record: dict[str, Any]) -> None:
        if record["round"] == 1:
            raise self.err


@pytest.mark.parametrize(("err", "status", "error"), [
    (SystemExit(0), "stopped", None),  # flwr stop: Flower's signal handler calls sys.exit(0)
    (KeyboardInterrupt(), "stopped", None),  # Ctrl-C of an in-process run
    (SystemExit(1), "failed", "SystemExit: 1"),  # an exit that says it failed
])
def test_a_stopped_run_is_recorded_as_stopped(tmp_path: Path, err: BaseException, status: str,
                                              error: str | None) -> None:
    cfg = parse_run_config(tiny(tracking=True, output_dir=str(tmp_path), run_name="r",
                                num_server_rounds=5))
    with pytest.raises(type(err)):
        run_experiment(cfg, extra_trackers=[StopAt(err)])
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert (summary["status"], summary["error"]) == (status, error)
    assert summary["rounds_completed"] == 1
    assert not (tmp_path / "r" / LOCK_NAME).exists()
