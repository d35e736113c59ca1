"""Checkpoints and resume: atomic, pickle-free; a SIGKILLed run resumes to the same metrics."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from flowerbed.run import checkpoint
from flowerbed.run.config import ConfigError, parse_run_config
from flowerbed.run.runner import run_experiment
from flowerbed.run.trackers.base import Tracker
from flowerbed.tools.cli import main as cli_main

torch.set_num_threads(1)

VOLATILE = ("wall_time", "elapsed_s")  # the only fields allowed to differ after a resume


def config(out: Path, name: str, **over) -> dict:
    return {"engine": "inprocess", "num-clients": 20, "fraction-train": 0.5,
            "local-epochs": 1, "num-server-rounds": 12, "checkpoint-every": 2,
            "failure-rate": 0.2, "corrupt-rate": 0.1, "min-replies": 7, "on-too-few": "retry",
            "wandb": False, "progress": False, "output-dir": str(out), "run-name": name,
            **over}


def metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(ln).items() if k not in VOLATILE} for ln in lines]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("ref")
    return run_experiment(parse_run_config(config(out, "ref")))


def test_save_load_roundtrip_without_pickle(tmp_path):
    rng = np.random.default_rng(5)
    doc = {"round": 3, "pcg": rng.bit_generator.state,  # 128-bit integers
           "models": [{"w": np.arange(6, dtype=np.float32).reshape(2, 3)},
                      {"w": np.ones(2, np.float64)}],
           "nested": {"ints": np.array([1, 2], np.int64), "none": None, "f": 0.5}}
    checkpoint.save(tmp_path, doc)
    back = checkpoint.read(tmp_path / checkpoint.CHECKPOINT_FILE)
    assert back["round"] == 3 and back["nested"]["none"] is None
    assert back["pcg"] == rng.bit_generator.state
    np.testing.assert_array_equal(back["models"][0]["w"], doc["models"][0]["w"])
    assert back["models"][1]["w"].dtype == np.float64
    with np.load(tmp_path / checkpoint.CHECKPOINT_FILE, allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.CHECKPOINT_FILE]


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    checkpoint.save(tmp_path, {"round": 1})
    with pytest.raises(TypeError):
        checkpoint.save(tmp_path, {"round": 2, "bad": object()})
    assert checkpoint.read(tmp_path / checkpoint.CHECKPOINT_FILE)["round"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.CHECKPOINT_FILE]


def test_resume_refuses_missing_checkpoints_and_changed_configs(tmp_path, reference):
    with pytest.raises(ConfigError) as err:
        run_experiment(parse_run_config(config(tmp_path, "x", **{"resume-from": str(tmp_path)})))
    assert err.value.key == "resume-from" and "no checkpoint" in str(err.value)
    changed = config(tmp_path, "ref", lr=0.05, **{"resume-from": str(reference.run_dir),
                                                  "output-dir": str(reference.run_dir.parent)})
    with pytest.raises(ConfigError) as err:
        run_experiment(parse_run_config(changed))
    assert err.value.key == "resume-from" and "lr" in str(err.value)


class Crash(Tracker):
    """Dies after a given round, like a process killed between two rounds."""

    def __init__(self, after: int) -> None:
        self.after = after

    def after_round(self, record: dict) -> None:
        if record["round"] == self.after:
            raise KeyboardInterrupt  # a BaseException: the tracker list does not swallow it


def test_in_process_interrupt_and_resume_matches_uninterrupted(tmp_path, reference):
    cfg = parse_run_config(config(tmp_path, "crash"))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, extra_trackers=[Crash(after=7)])
    run_dir = tmp_path / "crash"
    assert checkpoint.load(run_dir)["round"] == 6  # every 2 rounds; round 7 was lost
    assert cli_main(["resume", str(run_dir), "--in-process"]) == 0
    assert metrics(run_dir) == metrics(reference.run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["totals"] == reference.summary["totals"]
    assert summary["status"] == "completed"


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    """A run interrupted after round 7: checkpoints after rounds 6 (newest) and 4 (kept)."""
    out = tmp_path_factory.mktemp("crashed")
    with pytest.raises(KeyboardInterrupt):
        run_experiment(parse_run_config(config(out, "crash")), extra_trackers=[Crash(after=7)])
    return out / "crash"


def rewrite(path: Path, change) -> None:
    """Rewrite the .npz at ``path`` with ``change(arrays)`` applied (a valid zip)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def cut_json(arrays: dict) -> None:
    raw = arrays[checkpoint._JSON]
    arrays[checkpoint._JSON] = raw[: len(raw) // 2]


def wrong_shape(arrays: dict) -> None:
    key = next(k for k in arrays if k.startswith("/arrays/"))
    arrays[key] = arrays[key].reshape(-1)[:-1]


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGES = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "flipped bytes": flip_bytes,
    "cut JSON": lambda p: rewrite(p, cut_json),
    "wrong array shape": lambda p: rewrite(p, wrong_shape),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_checkpoint_resumes_from_the_previous_one(tmp_path, crashed, reference,
                                                             damage, caplog):
    run_dir = tmp_path / "crash"
    shutil.copytree(crashed, run_dir)
    assert checkpoint.read(run_dir / checkpoint.PREVIOUS_FILE)["round"] == 4
    DAMAGES[damage](run_dir / checkpoint.CHECKPOINT_FILE)
    with caplog.at_level("WARNING", logger="flowerbed.run.checkpoint"):
        assert cli_main(["resume", str(run_dir), "--in-process"]) == 0
    assert f"checkpoint {run_dir / checkpoint.CHECKPOINT_FILE} is damaged" in caplog.text
    assert "resuming from the previous checkpoint" in caplog.text
    assert metrics(run_dir) == metrics(reference.run_dir)


def test_both_checkpoints_damaged_is_a_clear_error(tmp_path, crashed, capsys):
    run_dir = tmp_path / "crash"
    shutil.copytree(crashed, run_dir)
    DAMAGES["truncated"](run_dir / checkpoint.CHECKPOINT_FILE)
    DAMAGES["cut JSON"](run_dir / checkpoint.PREVIOUS_FILE)
    assert cli_main(["resume", str(run_dir), "--in-process"]) == 2
    err = capsys.readouterr().err
    assert "no usable checkpoint" in err and "Traceback" not in err
    assert str(run_dir / checkpoint.CHECKPOINT_FILE) in err
    assert str(run_dir / checkpoint.PREVIOUS_FILE) in err


def test_resume_refuses_fewer_rounds_than_completed(tmp_path, crashed, capsys):
    run_dir = tmp_path / "crash"
    shutil.copytree(crashed, run_dir)
    before = (run_dir / "metrics.jsonl").read_text(), (run_dir / "summary.json").read_text()
    assert cli_main(["resume", str(run_dir), "--in-process", "--num-server-rounds", "5"]) == 2
    err = capsys.readouterr().err
    assert "num-server-rounds = 5 is invalid: must be more than the 6 rounds" in err
    assert ((run_dir / "metrics.jsonl").read_text(),
            (run_dir / "summary.json").read_text()) == before  # nothing was touched


@pytest.mark.parametrize("strategy, extra", [
    ("fedau", {"participation": "markov", "fedau-cutoff": 3, "min-replies": 3}),
    ("paris", {"experts": 2, "sync-every": 3, "min-replies": 6}),
    ("scaffold", {"min-replies": 6}),
])
def test_declared_state_survives_a_crash(tmp_path, strategy, extra):
    """Subclass state (FedAU's interval estimates, Paris's experts, SCAFFOLD's c), the
    clients' kept state (SCAFFOLD's c_i, held by the platform) and the base's counters
    (rejected, attempts, skipped) all come back: the resumed run equals the uninterrupted
    one row for row and in every summary total."""
    over = {"strategy": strategy, "num-server-rounds": 8, **extra}
    ref = run_experiment(parse_run_config(config(tmp_path, "ref", **over)))
    totals = ref.summary["totals"]
    assert totals["corrupt"] > 0 and totals["retries"] > 0  # the faults bite
    assert 0 < totals["round_skipped"] < 8 or strategy != "fedau"
    with pytest.raises(KeyboardInterrupt):
        run_experiment(parse_run_config(config(tmp_path, "crash", **over)),
                       extra_trackers=[Crash(after=5)])
    run_dir = tmp_path / "crash"
    assert checkpoint.load(run_dir)["round"] == 4
    assert ("client_states" in checkpoint.load(run_dir)) == (strategy == "scaffold")
    resumed = run_experiment(parse_run_config(config(
        tmp_path, "crash", **over, **{"resume-from": str(run_dir)})))
    assert metrics(run_dir) == metrics(ref.run_dir)
    assert resumed.summary["totals"] == totals
    assert resumed.summary["status"] == "completed"
    for counter in ("rejected", "attempts", "skipped"):  # the base's state, kept by subclasses
        assert getattr(resumed.strategy, counter) == getattr(ref.strategy, counter), counter
    assert sum(ref.strategy.rejected.values()) == totals["rejected_updates"]
    np.testing.assert_equal(resumed.final_state, ref.final_state)


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, reference):
    cfg = config(tmp_path, "killed")
    script = ("import json, sys, torch; torch.set_num_threads(1)\n"
              "from flowerbed.run.config import parse_run_config\n"
              "from flowerbed.run.runner import run_experiment\n"
              "run_experiment(parse_run_config(json.loads(sys.argv[1])))\n")
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (run_dir / checkpoint.CHECKPOINT_FILE).exists() and \
                    checkpoint.load(run_dir)["round"] >= 4:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = checkpoint.load(run_dir)["round"]
    assert 4 <= done < 12 and not (run_dir / "summary.json").exists()
    assert cli_main(["resume", str(run_dir), "--in-process"]) == 0
    assert metrics(run_dir) == metrics(reference.run_dir)
    assert [r["round"] for r in metrics(run_dir)] == list(range(13))


@pytest.mark.slow
def test_resume_through_flwr_run_matches_uninterrupted(tmp_path, reference):
    """Interrupted in this process, resumed by `flowerbed resume` on Flower's Ray backend
    (FlowerTransport, packed messages): same metrics as the uninterrupted in-process run,
    to the float tolerance the execution paths promise."""
    cfg = parse_run_config(config(tmp_path, "via-flwr", engine="flower"))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, extra_trackers=[Crash(after=11)])
    run_dir = tmp_path / "via-flwr"
    assert checkpoint.load(run_dir)["round"] == 10
    app = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "flowerbed"), "resume", str(run_dir), str(app),
         "--federation-config", "num-supernodes=2 client-resources-num-cpus=1"],
        env={**os.environ, "FLWR_HOME": str(tmp_path / "home")}, cwd=app, text=True,
        capture_output=True, timeout=400, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got, want = metrics(run_dir), metrics(reference.run_dir)
    assert [r["round"] for r in got] == list(range(13))
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for k in w:
            if isinstance(w[k], float):
                assert g[k] == pytest.approx(w[k], abs=1e-5), (g["round"], k)
            else:
                assert g[k] == w[k], (g["round"], k)


def test_a_checkpoint_gets_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = checkpoint.save(tmp_path, {"round": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


ASYNC = {"step-seconds": 1.0, "speed-spread": 1.0, "client-down-mbps": 20.0,
         "client-up-mbps": 5.0, "bandwidth-spread": 0.5, "availability": "on-off",
         "online-mean-s": 30.0, "offline-mean-s": 20.0, "concurrency": 6, "local-steps": 3,
         "failure-rate": 0.1, "corrupt-rate": 0.1, "min-replies": 1, "on-too-few": "skip"}


@pytest.mark.parametrize("strategy, extra", [
    ("fedbuff", {"buffer-size": 3, "num-server-rounds": 10}),
    ("fedasync", {"num-server-rounds": 14}),
    ("fedfix", {"fix-interval-s": 2.0, "num-server-rounds": 10}),
])
def test_an_asynchronous_run_resumes_to_the_uninterrupted_metrics(tmp_path, strategy, extra):
    """Stopped after a server round (model version) between two checkpoints, then resumed:
    the clock, the jobs in flight (trained and untrained, each with the model version it
    downloaded), the sampling RNG, FedBuff's buffer and the staleness log come back, so the
    resumed run equals the uninterrupted one row for row (simulated time, staleness,
    participants, faults, losses, accuracy), in every summary total and in its model."""
    over = {"strategy": strategy, **ASYNC, **extra}
    ref = run_experiment(parse_run_config(config(tmp_path, "ref", **over)))
    stop = 2 * (extra["num-server-rounds"] // 4) + 1  # odd: the checkpoint before it is stop - 1
    with pytest.raises(KeyboardInterrupt):
        run_experiment(parse_run_config(config(tmp_path, "crash", **over)),
                       extra_trackers=[Crash(after=stop)])
    run_dir = tmp_path / "crash"
    doc = checkpoint.load(run_dir)
    assert doc["round"] == stop - 1
    jobs = doc["event_grid"]["jobs"]
    assert len(jobs) > 0 and doc["event_grid"]["now"] > 0  # work in flight at the checkpoint
    resumed = run_experiment(parse_run_config(config(
        tmp_path, "crash", **over, **{"resume-from": str(run_dir)})))
    assert metrics(run_dir) == metrics(ref.run_dir)
    assert resumed.summary["totals"] == ref.summary["totals"]
    assert ref.summary["totals"]["corrupt"] + ref.summary["totals"]["failed"] > 0
    assert resumed.summary["status"] == "completed"
    assert resumed.strategy.staleness_log == ref.strategy.staleness_log
    np.testing.assert_equal(resumed.final_state, ref.final_state)
