"""Experiment 5, network costs: the closed-form calculator next to what real runs' ledgers say.

Measured runs (in-process): FedAvg with an MLP of exactly the exercise's parameter count
(on digits, hidden sizes 762,46 give 85,098 parameters; 816,5922 give the LSTM's
4,950,544), whose per-client bytes per round feed the calculator; and D-PSGD on 128 nodes
of degree 8 whose ledger message count is compared with 50 n d + n (n - 1). With a
``runs_dir`` every run is tracked like a sweep's (run folder, metrics file, W&B run in the
experiment's group). The report has two plots: ``capacity.png`` (clients a server supports
vs model size, calculator curves with the runs' ledger points) and ``messages.png`` (the
D-PSGD run's cumulative messages per step against 50 n d + n (n - 1)).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowerbed.run.config import RunConfig, parse_run_config
from flowerbed.tools import costs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Exercise:
    """The exercise's inputs (defaults: the course exercise's numbers)."""

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


def _run_config(overrides: dict[str, Any], tracking: dict[str, Any] | None) -> RunConfig:
    """In-process, quiet; ``tracking`` (run-name, output-dir, wandb-group) turns tracking on."""
    raw: dict[str, Any] = {"engine": "inprocess", "progress": False, "tracking": False,
                           **overrides}
    if tracking:
        raw |= {"tracking": True, **tracking}
    return parse_run_config(raw)


def ledger_capacity(ex: Exercise, client_bytes_down: int, client_bytes_up: int
                    ) -> tuple[int, int]:
    """Clients supported by download and by upload for a run's ledger bytes per client."""
    return (costs.server_capacity(client_bytes_down, ex.down_bps, ex.up_bps,
                                  ex.budget_s).n_download,
            costs.server_capacity(client_bytes_up, ex.down_bps, ex.up_bps,
                                  ex.budget_s).n_upload)


def measure_fedavg(overrides: dict[str, Any],
                   tracking: dict[str, Any] | None = None) -> dict[str, Any]:
    """One FedAvg run; bytes per client per round (down and up) from its ledger."""
    from flowerbed.clients.data import load_federation
    from flowerbed.clients.models import build_model
    from flowerbed.run.runner import run_experiment

    cfg = _run_config(overrides, tracking)
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


def measure_dpsgd(overrides: dict[str, Any],
                  tracking: dict[str, Any] | None = None) -> dict[str, Any]:
    """One D-PSGD run with a final all-reduce; total messages from its ledger."""
    from flowerbed.run.runner import run_experiment

    result = run_experiment(_run_config(overrides, tracking))
    return {"messages": result.summary["totals"]["cum_messages"],
            "per_round": [r.get("round_messages") for r in result.records]}


def run_network_costs(raw: dict[str, Any], results_dir: Path,
                      runs_dir: Path | None = None) -> Path:
    """Compute, measure, and write ``report.md`` and the plots into ``results_dir``.

    With ``runs_dir`` each measured run is tracked into ``runs_dir/<section>`` and logged to
    W&B under the group ``wandb-group`` (default: the experiment's ``name``).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and fair on shared cores
    try:
        return _run(raw, results_dir, runs_dir)
    finally:
        torch.set_num_threads(threads)


def _run(raw: dict[str, Any], results_dir: Path, runs_dir: Path | None) -> Path:
    ex = Exercise.from_dict(raw.get("exercise", {}))
    cf = closed_form(ex)
    group = str(raw.get("wandb-group", raw.get("name", "network-costs")))

    def tracking(section: str) -> dict[str, Any] | None:
        return None if runs_dir is None else {"run-name": section, "output-dir": str(runs_dir),
                                              "wandb-group": group}

    fed = measure_fedavg(raw["fedavg"], tracking("fedavg"))
    lstm = (measure_fedavg(raw["fedavg-lstm"], tracking("fedavg-lstm"))
            if "fedavg-lstm" in raw else None)
    n_down, n_up = ledger_capacity(ex, fed["client_bytes_down"], fed["client_bytes_up"])
    rows = [
        ("model parameters (FedAvg run)", f"{ex.params:,}", f"{fed['num_params']:,}"),
        ("bytes per client per round, down / up", f"{costs.model_bytes(ex.params):,}",
         f"{fed['client_bytes_down']:,} / {fed['client_bytes_up']:,}"),
        ("clients supported by download (60 s, 1 Gbit/s)", f"{cf['n_download']:,}",
         f"{n_down:,}"),
        ("clients supported by upload (60 s, 100 Mbit/s)", f"{cf['n_upload']:,}",
         f"{n_up:,}"),
        ("clients supported (min)", f"{cf['n_max']:,}", f"{min(n_down, n_up):,}"),
    ]
    if lstm is not None:
        measured_cost = costs.download_cost(lstm["client_bytes_down"], ex.clients_per_round,
                                             ex.rounds, ex.price_per_gib)
        rows.append((f"download cost, {ex.lstm_params:,}-parameter model, "
                     f"{ex.clients_per_round} clients x {ex.rounds:,} rounds",
                     f"${cf['download_cost_usd']:.2f}",
                     f"${measured_cost:.2f} ({lstm['client_bytes_down']:,} B per client "
                     f"per round in the ledger)"))
    d = measure_dpsgd(raw["dsgd"], tracking("dsgd")) if "dsgd" in raw else None
    rows.append((f"D-PSGD {ex.dpsgd_nodes} nodes, degree {ex.dpsgd_degree}, "
                 f"{ex.dpsgd_steps} steps + naive all-reduce", f"{cf['dpsgd_messages']:,}",
                 f"{d['messages']:,}" if d else "not run (no [dsgd] section)"))
    results_dir.mkdir(parents=True, exist_ok=True)
    measured = [(fed["num_params"], fed["client_bytes_down"], fed["client_bytes_up"])]
    if lstm is not None:
        measured.append((lstm["num_params"], lstm["client_bytes_down"],
                         lstm["client_bytes_up"]))
    plots = [capacity_plot(ex, measured, results_dir / "capacity.png")]
    if d is not None:
        plots.append(messages_plot(ex, d["per_round"], results_dir / "messages.png"))
    lines = ["# network-costs", "",
             "The course exercise numbers on network costs, computed in closed form "
             "by `flowerbed.tools.costs` and measured from the communication ledger of "
             "real in-process runs (`flowerbed experiment network-costs`). Measured rows "
             "feed the ledger's bytes per client into the same calculator.", "",
             f"FedAvg run: {fed['participants'][0]} clients per round, "
             f"{len(fed['participants'])} rounds, {fed['messages']:,} messages in total; "
             f"bytes per round down {fed['round_bytes_down'][0]:,} = "
             f"{fed['participants'][0]} x {fed['client_bytes_down']:,}.", "",
             "| quantity | closed form | from a real run's ledger |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += ["", *(f"![{p.stem}]({p.name})" for p in plots)]
    if runs_dir is not None:
        shown = runs_dir.relative_to(Path.cwd()) if runs_dir.is_relative_to(Path.cwd()) \
            else runs_dir
        lines += ["", f"Run folders: `{shown}` (W&B group "
                  f"`{group}`)."]
    path = results_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def capacity_plot(ex: Exercise, measured: list[tuple[int, int, int]], path: Path) -> Path:
    """Clients a FedAvg server supports within the budget vs model size, down and up.

    ``measured`` holds (parameters, ledger bytes down, ledger bytes up) per client per
    round of real runs, plotted at their parameter counts on the calculator's curves.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sizes = np.unique(np.geomspace(1e3, 1e8, 200).astype(int))
    caps = [costs.server_capacity(costs.model_bytes(int(p), ex.bytes_per_param), ex.down_bps,
                                  ex.up_bps, ex.budget_s) for p in sizes]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.loglog(sizes, [max(c.n_download, 0.5) for c in caps],
              label=f"by download ({ex.down_bps / 1e9:g} Gbit/s)")
    ax.loglog(sizes, [max(c.n_upload, 0.5) for c in caps],
              label=f"by upload ({ex.up_bps / 1e6:g} Mbit/s)")
    for i, (params, down, up) in enumerate(measured):
        cap_d, cap_u = ledger_capacity(ex, down, up)
        ax.plot([params, params], [cap_d, cap_u], "ko", label="from a run's ledger"
                if i == 0 else None)
        ax.annotate(f"{params:,} params:\n{cap_d:,} down / {cap_u:,} up", (params, cap_u),
                    textcoords="offset points", xytext=(-8, -6), ha="right", va="top",
                    fontsize=8)
    ax.set_xlabel("model parameters (float32)")
    ax.set_ylabel(f"clients per round within {ex.budget_s:g} s")
    ax.set_title("FedAvg server capacity")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def messages_plot(ex: Exercise, per_round: list[int | None], path: Path) -> Path:
    """The D-PSGD run's cumulative messages per step from its ledger vs the closed form."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    measured = np.cumsum([m or 0 for m in per_round])
    steps = np.arange(len(per_round))
    gossip = ex.dpsgd_nodes * ex.dpsgd_degree * np.minimum(steps, ex.dpsgd_steps)
    expected = gossip + np.where(steps >= ex.dpsgd_steps,
                                 costs.naive_allreduce_messages(ex.dpsgd_nodes), 0)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.plot(steps, expected, "-", color="0.6", lw=3,
            label=f"closed form: n d t, + n (n - 1) at t = {ex.dpsgd_steps}")
    ax.plot(steps, measured, "k.", label="the run's ledger")
    ax.annotate(f"{int(measured[-1]):,}", (steps[-1], measured[-1]),
                textcoords="offset points", xytext=(-40, -14), fontsize=9)
    ax.set_xlabel("step")
    ax.set_ylabel("cumulative messages")
    ax.set_title(f"D-PSGD, {ex.dpsgd_nodes} nodes of degree {ex.dpsgd_degree}, "
                 "then one naive all-reduce")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = ["Exercise", "capacity_plot", "closed_form", "ledger_capacity", "measure_dpsgd",
           "measure_fedavg", "messages_plot", "run_network_costs"]
