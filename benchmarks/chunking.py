"""Chunked vmap training bounds a worker's memory: ``python -m benchmarks.chunking``.

LEAF's FEMNIST CNN (6.6 M parameters, 25 MiB a copy) on FEMNIST-schema data generated
offline (the test fixture's writer: 28x28 grey images, 62 classes, ``writer_id`` as the
natural partition), 64 clients of ~200 examples, FedAvg, every client every round, one
local epoch of batch 10, in-process, one torch thread. Each row is a fresh process with a
different ``vmap-memory-mb``: 0 trains all 64 clients in one vmapped call (their stacked
weights, gradients and the step's temporaries side by side), the default 4,096 MiB in
chunks of 32, 1,024 MiB in chunks of 8. Reported: the process's peak resident memory
(``ru_maxrss``), the median round time after the first, the final accuracy (equal on
every row: chunking does not change what is computed). Writes
``benchmarks/results/chunking.{md,json}``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CLIENTS, ROWS, ROUNDS = 64, 64 * 200, 3
BUDGETS = (0, 4096, 1024)


def config(folder: Path, budget: int) -> dict[str, Any]:
    return {"dataset": f"hf:{folder}", "feature-column": "image", "label-column": "character",
            "partitioner": "natural-id", "partition-by": "writer_id", "num-clients": CLIENTS,
            "model": "femnist-cnn", "lr": 0.004, "batch-size": 10, "local-epochs": 1,
            "local-steps": 0, "fraction-train": 1.0, "num-server-rounds": ROUNDS,
            "eval-every": ROUNDS, "test-fraction": 0.1, "engine": "inprocess",
            "tracking": False, "progress": False, "wandb": False, "vmap-memory-mb": budget,
            "vmap-max-params": 0}  # batched, as the study needs (a CPU would not)


def measure(folder: Path, budget: int) -> dict[str, Any]:
    import torch

    from flowerbed.clients.batched import clients_per_call
    from flowerbed.clients.models import build_model
    from flowerbed.run.config import parse_run_config
    from flowerbed.run.runner import run_experiment

    torch.set_num_threads(1)
    cfg = parse_run_config(config(folder, budget))
    result = run_experiment(cfg)
    walls = [r["wall_time"] for r in result.records]
    rounds = sorted(b - a for a, b in itertools.pairwise(walls[1:]))
    per_call = clients_per_call(build_model(cfg, (1, 28, 28), 62, 0), budget)
    return {"budget_mb": budget, "peak_rss_gib": resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "round_s": rounds[len(rounds) // 2], "clients_per_call": per_call or CLIENTS,
            "final_accuracy": result.records[-1].get("test_accuracy")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", type=int)
    ap.add_argument("--data")
    args = ap.parse_args()
    if args.one is not None:
        print("CHUNK_RESULT " + json.dumps(measure(Path(args.data), args.one)))
        return
    sys.path.insert(0, str(REPO))
    from tests.hub_fixtures import write_femnist

    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_femnist(Path(tmp) / "femnist", rows=ROWS, writers=CLIENTS)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        for budget in BUDGETS:
            out = subprocess.run([sys.executable, "-m", "benchmarks.chunking", "--one",
                                  str(budget), "--data", str(folder)], cwd=REPO, env=env,
                                 capture_output=True, text=True, check=True)
            line = next(ln for ln in out.stdout.splitlines() if ln.startswith("CHUNK_"))
            rows.append(json.loads(line.removeprefix("CHUNK_RESULT ")))
    md = ["# Chunked vmap training: FEMNIST CNN, 64 clients, in-process", "",
          f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {os.cpu_count()} cores, "
          f"load average {load[0]:.1f} at the start, one torch thread; "
          "`python -m benchmarks.chunking`.", "",
          "| vmap-memory-mb | clients per vmapped call | peak RSS GiB | round s (median) | "
          "final acc |", "|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['budget_mb']} | {min(r['clients_per_call'], CLIENTS)} | "
                  f"{r['peak_rss_gib']:.2f} | {r['round_s']:.1f} | {r['final_accuracy']:.4f} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "chunking.md").write_text("\n".join(md) + "\n")
    (RESULTS / "chunking.json").write_text(json.dumps({"load": load, "rows": rows}, indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()
