"""Quickstart-style ServerApp: Flower's FedAvg, every client every round.

Writes one JSON line per round (wall time, test accuracy) for the harness.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from vanilla_app import task

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    workload = str(context.run_config["workload"])
    rounds = int(context.run_config["num-server-rounds"])
    log_path = Path(str(context.run_config["log-path"]))
    cfg, _ = task.load(workload)
    model = task.model_for(workload)
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0,
                      min_train_nodes=cfg.num_clients, min_available_nodes=cfg.num_clients)

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        acc = task.accuracy(model, workload)
        with log_path.open("a") as f:
            f.write(json.dumps({"round": server_round, "wall_time": time.time(),
                                "accuracy": acc}) + "\n")
        return MetricRecord({"accuracy": acc})

    strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
                   num_rounds=rounds, train_config=ConfigRecord({"lr": cfg.lr}),
                   evaluate_fn=evaluate)
