"""The CLI finds the run folder in the stream and keeps the full stream there."""

from __future__ import annotations

from pathlib import Path

from flowerbed.tools.run_folder import STREAM_LOG, keep_stream_log, run_folder_in


def test_stream_log_moves_into_the_folder_the_stream_names(tmp_path: Path) -> None:
    run = tmp_path / "out" / "fedavg-digits-1"
    run.mkdir(parents=True)
    log = tmp_path / "home" / "x.log"
    log.parent.mkdir()
    log.write_text("everything\n")
    output = ("\x1b[92mINFO \x1b[0m:      Starting\n"
              f"14:00:00 flowerbed run fedavg-digits-1: 3 rounds, outputs in {run}\n")
    assert keep_stream_log(log, output, tmp_path / "out") == run
    assert (run / STREAM_LOG).read_text() == "everything\n"
    assert not log.exists()


def test_without_progress_lines_the_newest_run_folder(tmp_path: Path) -> None:
    import os

    for i, name in enumerate(("a", "b")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.log").write_text("x")
        os.utime(tmp_path / name / "run.log", (1000 + i, 1000 + i))
    assert run_folder_in("no folder named here\n", tmp_path) == tmp_path / "b"
    assert run_folder_in("", tmp_path / "missing") is None
