"""The virtual-time benchmark: ``python -m benchmarks.async_time``.

Three in-process runs on W1 (1,000 Synthetic(1, 1) clients, logistic regression, one local
epoch), each in a fresh process with one torch thread, steady-state client-rounds/s from
the rounds after the first (wall time of rounds 2..R), the best of two interleaved runs
(the machine is shared; other jobs only ever slow a run down):

- ``fedavg``: synchronous FedAvg, every client every round, no clock (W1 as in run.py);
- ``fedavg-clock``: the same with device profiles (lognormal speeds, sigma 1, 1 s a step on
  a median device, 20/5 Mbit/s client links, 1 Gbit/s / 100 Mbit/s server) and a 60 s
  round deadline (the late clients train and are discarded, so they count: clients sent);
- ``fedbuff``: FedBuff with K = 100, concurrency C = 1,000 (every client always busy), on
  the same profiles; a client-round is a reply applied (K per server round).

Targets: fedavg-clock >= 0.9x fedavg, fedbuff >= 0.7x fedavg. Writes
``benchmarks/results/async.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.workloads import config

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CLOCK = {"step-seconds": 1.0, "speed-spread": 1.0, "client-down-mbps": 20.0,
         "client-up-mbps": 5.0, "server-down-mbps": 1000.0, "server-up-mbps": 100.0}
REPEATS = 2
RUNS: dict[str, dict[str, Any]] = {
    "fedavg": {"num-server-rounds": 6},
    "fedavg-clock": {"num-server-rounds": 6, **CLOCK, "round-deadline-s": 60.0},
    "fedbuff": {"num-server-rounds": 31, **CLOCK, "strategy": "fedbuff",
                "buffer-size": 100, "concurrency": 1000},
}


def measure(name: str) -> dict[str, Any]:
    import torch

    from flowerbed.run.config import parse_run_config
    from flowerbed.run.runner import run_experiment

    torch.set_num_threads(1)
    changes = RUNS[name]
    cfg = config("W1", **changes, **{"eval-every": changes["num-server-rounds"]})
    records = run_experiment(parse_run_config({**cfg, "engine": "inprocess"})).records
    rounds = records[1:]
    if name == "fedbuff":
        per_round = [float(r["participants"]) for r in rounds]
    else:  # every client is sent the model and trains, late or not
        per_round = [float(cfg["num-clients"])] * len(rounds)
    walls = [r["wall_time"] for r in records]
    steady = sum(per_round[1:]) / (walls[-1] - walls[1])
    return {"name": name, "client_rounds_per_s": steady, "rounds": len(rounds),
            "client_rounds": sum(per_round), "final_accuracy": records[-1].get("test_accuracy"),
            "sim_time_s": records[-1].get("sim_time_s"), "late": sum(
                r.get("late", 0) for r in rounds)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", choices=list(RUNS))
    args = ap.parse_args()
    if args.one:
        print("ASYNC_RESULT " + json.dumps(measure(args.one)))
        return
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    load = os.getloadavg()
    results: dict[str, dict[str, Any]] = {}
    for _ in range(REPEATS):  # interleaved; the best of each (others' jobs only slow one)
        for name in RUNS:
            out = subprocess.run([sys.executable, "-m", "benchmarks.async_time", "--one",
                                  name], cwd=REPO, env=env, capture_output=True, text=True,
                                 check=True)
            line = next(ln for ln in out.stdout.splitlines()
                        if ln.startswith("ASYNC_RESULT "))
            r = json.loads(line.removeprefix("ASYNC_RESULT "))
            r["all_client_rounds_per_s"] = [*results.get(name, {}).get(
                "all_client_rounds_per_s", []), r["client_rounds_per_s"]]
            r["client_rounds_per_s"] = max(r["all_client_rounds_per_s"])
            results[name] = r
    base = results["fedavg"]["client_rounds_per_s"]
    rows = [(n, r, r["client_rounds_per_s"] / base) for n, r in results.items()]
    md = ["# Virtual time: client-rounds/s with the clock, deadlines and FedBuff", "",
          f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {os.cpu_count()} cores, "
          f"load average {load[0]:.1f} at the start, one torch thread, in-process, W1 "
          "(1,000 clients); `python -m benchmarks.async_time`.", "",
          "| run | client-rounds/s (best of 2) | each run | vs FedAvg | target | rounds "
          "| final acc |", "|---|---|---|---|---|---|---|"]
    targets = {"fedavg-clock": 0.9, "fedbuff": 0.7}
    for name, r, q in rows:
        t = targets.get(name)
        verdict = "" if t is None else (f">= {t}x: " + ("met" if q >= t else "missed"))
        each = ", ".join(f"{v:.0f}" for v in r["all_client_rounds_per_s"])
        md.append(f"| {name} | {r['client_rounds_per_s']:.0f} | {each} | {q:.2f}x | {verdict} | "
                  f"{r['rounds']} | {r['final_accuracy']:.4f} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "async.md").write_text("\n".join(md) + "\n")
    (RESULTS / "async.json").write_text(json.dumps({"load": load, "results": results},
                                                   indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()
