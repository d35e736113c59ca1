"""Memory of D-SGD with stacked node models in RAM vs memory-mapped (``models-memory-gib``).

    python -m benchmarks.out_of_core

Runs the same D-SGD workload twice in fresh processes: with the default budget (the
stacked models live in RAM) and with a budget far below their size (memory-mapped,
trained and mixed a chunk at a time). Peak RSS counts the mapped file's pages that are
resident, so the figure that shows the working set is the peak of anonymous memory
(``RssAnon`` in /proc, sampled every 5 ms). Results: ``results/out_of_core.{md,json}``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
GIB = 1024 ** 3
# 2,000 nodes x 19,466 parameters (MLP 64-256-10 on Synthetic(1, 1)): 0.145 GiB of models
WORKLOAD: dict[str, Any] = {
    "engine": "inprocess", "strategy": "dsgd", "topology": "ring", "num-clients": 2000,
    "num-server-rounds": 3, "eval-every": 3, "dataset": "synthetic", "synthetic-dim": 64,
    "synthetic-classes": 10, "synthetic-samples": 20, "partitioner": "natural-id",
    "model": "mlp", "hidden-sizes": "256", "local-steps": 2, "batch-size": 10,
    "final-merge": False, "tracking": False, "progress": False, "wandb": False,
}
BUDGETS = {"in RAM (default budget)": 0.0, "memory-mapped (budget 0.02 GiB)": 0.02}


def child(budget: float) -> None:
    """Run the workload; print the models' size, type and the run's wall time."""
    from flowerbed.run.config import parse_run_config
    from flowerbed.run.runner import run_experiment

    t0 = time.time()
    result = run_experiment(parse_run_config({**WORKLOAD, "models-memory-gib": budget}))
    x = result.strategy.x
    print("RESULT " + json.dumps({"models_gib": x.nbytes / GIB, "mapped": type(x).__name__,
                                  "wall_s": time.time() - t0,
                                  "test_accuracy": result.records[-1].get("test_accuracy")}))


def _anon_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(budget: float) -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.out_of_core", "--child",
                             str(budget)], stdout=subprocess.PIPE, text=True)
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _anon_kib(proc.pid))
            time.sleep(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, _ = proc.communicate()
    done.set()
    thread.join()
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return {**json.loads(line[7:]), "peak_anon_gib": peak[0] * 1024 / GIB, "budget": budget}


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(float(sys.argv[2]))
        return
    rows = {name: measure(budget) for name, budget in BUDGETS.items()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "out_of_core.json").write_text(json.dumps(rows, indent=2) + "\n")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = ["# D-SGD with memory-mapped node models", "",
             f"Workload: {json.dumps(WORKLOAD)}; {when}.",
             "", "| models | budget GiB | stacked models GiB | array type | peak anonymous "
             "memory GiB | wall s | final accuracy |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['budget'] or 'default'} | {r['models_gib']:.3f} | "
                     f"{r['mapped']} | {r['peak_anon_gib']:.3f} | {r['wall_s']:.1f} | "
                     f"{r['test_accuracy']:.4f} |")
    (RESULTS / "out_of_core.md").write_text("\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
