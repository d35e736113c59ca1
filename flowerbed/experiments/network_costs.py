"""Experiment 5, network costs: the closed-form calculator next to what real runs' ledgers say.

Measured runs (in-process, tracking off): FedAvg with an MLP of exactly the exercise's
parameter count (on digits, hidden sizes 762,46 give 85,098 parameters; 816,5922 give the
LSTM's 4,950,544), whose per-client bytes per round feed the calculator; and, when the
``dsgd`` strategy is registered, D-PSGD on 128 nodes of degree 8 whose ledger message count
is compared with 50 n d + n (n - 1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowerbed.platform import costs
from flowerbed.platform.config import parse_run_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Exercise:
    """The exercise's inputs (defaults: ../shared/ALGORITHMS.md)."""

    params: int = 85_098
    bytes_per_param: int = 4
    down_bps: float = 1e9
    up_bps: float = 100e6
    budget_s: float = 60.0
    lstm_params: int = 4_950_544
    clients_per_round: int = 200
    rounds: int = 1000
    price_per_gib: float = 0.03
    dpsgd_nodes: int = 128
    dpsgd_degree: int = 8
    dpsgd_steps: int = 50

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Exercise:
        return cls(**{k.replace("-", "_"): v for k, v in raw.items()})


def closed_form(ex: Exercise) -> dict[str, float]:
    cap = costs.server_capacity(costs.model_bytes(ex.params, ex.bytes_per_param), ex.down_bps,
                                ex.up_bps, ex.budget_s)
    lstm = costs.model_bytes(ex.lstm_params, ex.bytes_per_param)
    return {"n_download": cap.n_download, "n_upload": cap.n_upload, "n_max": cap.n_max,
            "download_cost_usd": costs.download_cost(lstm, ex.clients_per_round, ex.rounds,
                                                     ex.price_per_gib),
            "dpsgd_messages": costs.dpsgd_messages(ex.dpsgd_nodes, ex.dpsgd_degree,
                                                   ex.dpsgd_steps)
            + costs.naive_allreduce_messages(ex.dpsgd_nodes)}


def measure_fedavg(overrides: dict[str, Any]) -> dict[str, Any]:
    """One FedAvg run; bytes per client per round (down and up) from its ledger."""
    from flowerbed.clients.data import load_federation
    from flowerbed.clients.models import build_model
    from flowerbed.platform.runner import run_experiment

    cfg = parse_run_config({"engine": "inprocess", "tracking": False, "progress": False,
                            **overrides})
    data = load_federation(cfg)
    num_params = sum(p.numel() for p in build_model(cfg, data.input_shape,
                                                    data.num_classes).parameters())
    result = run_experiment(cfg)
    rounds = [r for r in result.records if r["round"] >= 1]
    per_client_down = {r["round_bytes_down"] / r["participants"] for r in rounds}
    per_client_up = {r["round_bytes_up"] / r["participants"] for r in rounds}
    if len(per_client_down) != 1 or len(per_client_up) != 1:
        raise RuntimeError(f"bytes per client vary across rounds: {per_client_down}, "
                           f"{per_client_up}")
    return {"num_params": num_params, "participants": [r["participants"] for r in rounds],
            "round_bytes_down": [r["round_bytes_down"] for r in rounds],
            "round_bytes_up": [r["round_bytes_up"] for r in rounds],
            "client_bytes_down": int(per_client_down.pop()),
            "client_bytes_up": int(per_client_up.pop()),
            "messages": result.summary["totals"]["cum_messages"]}


def dsgd_available() -> bool:
    from flowerbed.strategies.registry import STRATEGIES

    return "dsgd" in STRATEGIES


def measure_dpsgd(overrides: dict[str, Any]) -> dict[str, Any]:
    """One D-PSGD run with a final all-reduce; total messages from its ledger."""
    from flowerbed.platform.runner import run_experiment

    cfg = parse_run_config({"engine": "inprocess", "tracking": False, "progress": False,
                            **overrides})
    result = run_experiment(cfg)
    return {"messages": result.summary["totals"]["cum_messages"],
            "per_round": [r.get("round_messages") for r in result.records]}


def run_network_costs(raw: dict[str, Any], results_dir: Path) -> Path:
    """Compute, measure, and write ``report.md`` into ``results_dir``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and fair on shared cores
    try:
        return _run(raw, results_dir)
    finally:
        torch.set_num_threads(threads)


def _run(raw: dict[str, Any], results_dir: Path) -> Path:
    ex = Exercise.from_dict(raw.get("exercise", {}))
    cf = closed_form(ex)
    fed = measure_fedavg(raw["fedavg"])
    lstm = measure_fedavg(raw["fedavg-lstm"]) if "fedavg-lstm" in raw else None
    cap = costs.server_capacity(fed["client_bytes_down"], ex.down_bps, ex.up_bps, ex.budget_s)
    cap_up = costs.server_capacity(fed["client_bytes_up"], ex.down_bps, ex.up_bps, ex.budget_s)
    rows = [
        ("model parameters (FedAvg run)", f"{ex.params:,}", f"{fed['num_params']:,}"),
        ("bytes per client per round, down / up", f"{costs.model_bytes(ex.params):,}",
         f"{fed['client_bytes_down']:,} / {fed['client_bytes_up']:,}"),
        ("clients supported by download (60 s, 1 Gbit/s)", f"{cf['n_download']:,}",
         f"{cap.n_download:,}"),
        ("clients supported by upload (60 s, 100 Mbit/s)", f"{cf['n_upload']:,}",
         f"{cap_up.n_upload:,}"),
        ("clients supported (min)", f"{cf['n_max']:,}",
         f"{min(cap.n_download, cap_up.n_upload):,}"),
    ]
    if lstm is not None:
        measured_cost = costs.download_cost(lstm["client_bytes_down"], ex.clients_per_round,
                                             ex.rounds, ex.price_per_gib)
        rows.append((f"download cost, {ex.lstm_params:,}-parameter model, "
                     f"{ex.clients_per_round} clients x {ex.rounds:,} rounds",
                     f"${cf['download_cost_usd']:.2f}",
                     f"${measured_cost:.2f} ({lstm['client_bytes_down']:,} B per client "
                     f"per round in the ledger)"))
    dpsgd_note = ""
    if dsgd_available() and "dsgd" in raw:
        d = measure_dpsgd(raw["dsgd"])
        rows.append((f"D-PSGD {ex.dpsgd_nodes} nodes, degree {ex.dpsgd_degree}, "
                     f"{ex.dpsgd_steps} steps + naive all-reduce",
                     f"{cf['dpsgd_messages']:,}", f"{d['messages']:,}"))
    else:
        rows.append((f"D-PSGD {ex.dpsgd_nodes} nodes, degree {ex.dpsgd_degree}, "
                     f"{ex.dpsgd_steps} steps + naive all-reduce",
                     f"{cf['dpsgd_messages']:,}", "not measured"))
        dpsgd_note = ("\nThe D-PSGD row is not measured: the `dsgd` strategy is not in this "
                      "build's registry. Rerun `flowerbed experiment network-costs` once it "
                      "is.\n")
    results_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# network-costs", "",
             "The course exercise numbers of issue 5, computed in closed form "
             "by `flowerbed.platform.costs` and measured from the communication ledger of "
             "real in-process runs (`flowerbed experiment network-costs`). Measured rows "
             "feed the ledger's bytes per client into the same calculator.", "",
             f"FedAvg run: {fed['participants'][0]} clients per round, "
             f"{len(fed['participants'])} rounds, {fed['messages']:,} messages in total; "
             f"bytes per round down {fed['round_bytes_down'][0]:,} = "
             f"{fed['participants'][0]} x {fed['client_bytes_down']:,}.", "",
             "| quantity | closed form | from a real run's ledger |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines.append(dpsgd_note)
    path = results_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


__all__ = ["Exercise", "closed_form", "dsgd_available", "measure_dpsgd", "measure_fedavg",
           "run_network_costs"]
