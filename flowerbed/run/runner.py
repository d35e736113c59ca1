"""Run one experiment: build everything from the config, run the strategy, write outputs.

The ServerApp calls :func:`run_experiment` with Flower's grid; tests, sweeps and the
in-process engine call it without one. Either way the same strategy code runs against a
:class:`~flowerbed.simulation.virtual_grid.VirtualGrid`.
"""

from __future__ import annotations

import inspect
import logging
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord
from flwr.serverapp import Grid

from flowerbed.clients.data import load_federation
from flowerbed.clients.models import build_model
from flowerbed.clients.training import evaluate
from flowerbed.core.arrays import State, module_state, to_record
from flowerbed.core.errors import ConfigError
from flowerbed.run.checkpoint import Checkpointer, Resume, open_resume, set_rng_states
from flowerbed.run.config import RunConfig
from flowerbed.run.logging_setup import run_log
from flowerbed.run.rounds import FAULT_COUNTS, RoundLoop
from flowerbed.run.trackers import RunInfo, Tracker, TrackerList
from flowerbed.simulation.faults import FaultPlan
from flowerbed.simulation.ledger import Ledger
from flowerbed.simulation.participation_patterns import build_participation
from flowerbed.simulation.transport import FlowerTransport, InProcessTransport, Transport
from flowerbed.simulation.virtual_grid import VirtualGrid
from flowerbed.strategies.contract import Services
from flowerbed.strategies.registry import build_strategy

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path | None
    records: list[dict[str, Any]]
    summary: dict[str, Any]
    final_state: State | None = None
    strategy: Any = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_name(cfg: RunConfig) -> str:
    if cfg.run_name:
        return cfg.run_name
    strat = re.sub(r"[^A-Za-z0-9_.-]+", "_", cfg.strategy.split(":")[-1])
    ds = re.sub(r"[^A-Za-z0-9_.-]+", "_", cfg.dataset)
    return f"{strat}-{ds}-{time.strftime('%Y%m%d-%H%M%S')}"


def make_run_dir(cfg: RunConfig) -> Path:
    base = Path(cfg.output_dir).expanduser().resolve() / run_name(cfg)
    path, i = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}-{i}")
        i += 1
    path.mkdir(parents=True)
    return path


def build_trackers(cfg: RunConfig) -> list[Tracker]:
    from flowerbed.run.trackers.console import ConsoleTracker
    from flowerbed.run.trackers.metrics_file import MetricsFileTracker
    from flowerbed.run.trackers.plots import PlotTracker
    from flowerbed.run.trackers.wandb_tracker import WandbTracker

    trackers: list[Tracker] = []
    if cfg.tracking:
        trackers.append(PlotTracker())  # before W&B, which uploads the plot
        if cfg.wandb:
            trackers.append(WandbTracker(cfg.wandb_project, cfg.wandb_group))
        trackers.append(MetricsFileTracker())  # last: writes summary.json with artifacts
    if cfg.progress:
        trackers.append(ConsoleTracker())
    return trackers


def summarize(cfg: RunConfig, records: list[dict[str, Any]], ledger: Ledger, run_dir: Path | None,
              t0: float, status: str, error: str | None = None) -> dict[str, Any]:
    ev = [r for r in records if r.get("test_accuracy") is not None]
    best = max(ev, key=lambda r: r["test_accuracy"]) if ev else {}
    final = records[-1] if records else {}
    return {
        "status": status,
        "error": error,
        "run_dir": str(run_dir) if run_dir else None,
        "config": cfg.as_dict(),
        "rounds_completed": max((r["round"] for r in records), default=0),
        "wall_time_s": time.time() - t0,
        "final": {k: final.get(k) for k in ("round", "test_accuracy", "test_loss", "train_loss")
                  if k in final},
        "best": {"test_accuracy": best.get("test_accuracy"), "round": best.get("round")},
        "totals": {**ledger.cumulative(),
                   "participants": sum(r.get("participants", 0) for r in records),
                   "failures": sum(r.get("failures", 0) for r in records),
                   "rejected_updates": sum(r.get("rejected_updates", 0) for r in records),
                   **{k: sum(r.get(k, 0) for r in records)
                      for k in (*FAULT_COUNTS, "faults_injected", "round_skipped")},
                   "retries": sum(max(r.get("attempts", 1) - 1, 0) for r in records)},
    }


def ensure_task_identity() -> None:
    """Outside a Flower process, give Flower's Message a (dummy) identity to stamp."""
    from flwr.supercore.task_identity import TaskIdentity

    if TaskIdentity._run_id is None:
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 0, 0, 0


def restore(resume: Resume, strategy: Any, loop: RoundLoop) -> State:
    """Put the checkpointed state back; return the global arrays to start from."""
    if "first_round" not in inspect.signature(strategy.start).parameters:
        raise ConfigError("resume-from", str(resume.run_dir),
                          f"strategy {type(strategy).__name__} cannot resume: its start() "
                          "takes no first_round")
    doc = resume.doc
    if hasattr(strategy, "load_state_dict"):
        strategy.load_state_dict(doc["strategy"])
    loop.grid.participation.load_state_dict(doc["participation"])
    loop.ledger.load_state_dict(doc["ledger"])
    loop.records.extend(doc["records"])
    set_rng_states(doc["rng"])
    log.info("resuming %s after round %d", resume.run_dir, resume.last_round)
    return resume.arrays


def run_experiment(cfg: RunConfig, grid: Grid | None = None,
                   extra_trackers: list[Tracker] | None = None) -> RunResult:
    """Run ``cfg``: on Flower's ``grid`` (engine 'flower') or in this process. The run
    folder keeps ``run.log``: every log record of the run, whatever the console shows."""
    t0 = time.time()
    resume = open_resume(cfg.resume_from, cfg.as_dict()) if cfg.resume_from else None
    if resume is not None:
        run_dir: Path | None = resume.run_dir
    else:
        run_dir = make_run_dir(cfg) if cfg.tracking else None
    with run_log(run_dir):
        return _run(cfg, grid, extra_trackers, resume, run_dir, t0)


def _run(cfg: RunConfig, grid: Grid | None, extra_trackers: list[Tracker] | None,
         resume: Resume | None, run_dir: Path | None, t0: float) -> RunResult:
    if grid is None:
        ensure_task_identity()
    seed_everything(cfg.seed)
    data = load_federation(cfg)
    model = build_model(cfg, data.input_shape, data.num_classes)
    ledger = Ledger()
    participation = build_participation(cfg, data)
    transport: Transport
    if cfg.engine == "flower" and grid is not None:
        transport = FlowerTransport(grid, cfg)
    else:
        transport = InProcessTransport(cfg)

    def central_eval(state: State) -> dict[str, float]:
        return evaluate(model, state, data.test_x, data.test_y)

    services = Services(num_nodes=cfg.num_clients, seed=cfg.seed,
                        num_rounds=cfg.num_server_rounds, eval_every=cfg.eval_every,
                        ledger=ledger, evaluate=central_eval,
                        true_probabilities=participation.probabilities,
                        label_counts=data.label_counts(), client_clusters=data.client_clusters,
                        test_clusters=data.test_clusters,
                        test_data=(data.test_x, data.test_y),
                        build_model=lambda seed, k: build_model(cfg, data.input_shape, k, seed))
    strategy = build_strategy(cfg.strategy, cfg, services)
    vgrid = VirtualGrid(transport, cfg.num_clients, ledger, participation,
                        count_server_traffic=not getattr(strategy, "routes_through_server",
                                                         False),
                        faults=FaultPlan.from_config(cfg), round_timeout=cfg.round_timeout)
    trackers = TrackerList(build_trackers(cfg) + list(extra_trackers or []))
    loop = RoundLoop(cfg, data, model, vgrid, ledger, strategy, trackers)
    if run_dir is not None and cfg.checkpoint_every > 0:
        loop.checkpointer = Checkpointer(run_dir, cfg.checkpoint_every, cfg.as_dict())
    start_kwargs: dict[str, Any] = {}
    initial = module_state(model)
    first_round = 1
    if resume is not None:
        initial = restore(resume, strategy, loop)
        first_round = resume.last_round + 1
        start_kwargs["first_round"] = first_round
    loop.begin(first_round)
    info = RunInfo(run_dir=run_dir or Path("."), config=cfg.as_dict(),
                   num_rounds=cfg.num_server_rounds, name=run_name(cfg) if run_dir is None
                   else run_dir.name, first_round=first_round)
    trackers.on_train_begin(info)
    status, error = "completed", None
    try:
        strategy.start(grid=vgrid, initial_arrays=to_record(initial),
                       num_rounds=cfg.num_server_rounds, timeout=cfg.round_timeout,
                       train_config=ConfigRecord(), evaluate_config=ConfigRecord(),
                       evaluate_fn=loop, **start_kwargs)
    except BaseException as err:
        status, error = "failed", f"{type(err).__name__}: {err}"
        raise
    finally:
        summary = summarize(cfg, loop.records, ledger, run_dir, t0, status, error)
        summary["records"] = loop.records
        trackers.on_train_end(summary)
        summary.pop("records", None)
    return RunResult(run_dir, loop.records, summary, loop.final_state, strategy)
