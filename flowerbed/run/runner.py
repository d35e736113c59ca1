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
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord
from flwr.serverapp import Grid

from flowerbed.clients.data import load_federation
from flowerbed.clients.device import resolve
from flowerbed.clients.models import build_model
from flowerbed.clients.training import evaluate
from flowerbed.core import collector
from flowerbed.core.arrays import State, module_state, to_record
from flowerbed.core.codecs import Codec
from flowerbed.core.errors import ConfigError
from flowerbed.core.validation import shapes_of
from flowerbed.run.checkpoint import Checkpointer, Resume, open_resume, set_rng_states
from flowerbed.run.config import RunConfig, check_paths
from flowerbed.run.lock import FolderLock
from flowerbed.run.logging_setup import run_log
from flowerbed.run.rounds import FAULT_COUNTS, RoundLoop
from flowerbed.run.trackers import RunInfo, Tracker, TrackerList
from flowerbed.run.trackers.primary import primary_summary
from flowerbed.simulation.adversary import Adversary
from flowerbed.simulation.availability import AvailableAt, build_availability
from flowerbed.simulation.clock import Clock, local_steps
from flowerbed.simulation.clock import enabled as clock_enabled
from flowerbed.simulation.deadline import Deadline
from flowerbed.simulation.deadline import enabled as deadline_enabled
from flowerbed.simulation.event_grid import EventGrid
from flowerbed.simulation.faults import FaultPlan
from flowerbed.simulation.ledger import Ledger
from flowerbed.simulation.participation_patterns import build_participation
from flowerbed.simulation.transport import FlowerTransport, InProcessTransport, Transport
from flowerbed.simulation.virtual_grid import VirtualGrid
from flowerbed.strategies.contract import PlatformStrategy, Services, primary_of
from flowerbed.strategies.dp import wrap_dp
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


def had_update(record: dict[str, Any]) -> bool:
    """Whether round ``record`` applied an update: a training reply arrived that the strategy
    did not reject, and it did not skip the round (too few replies); round 0 is the initial
    model."""
    return (record["round"] >= 1
            and record.get("participants", 0) > record.get("rejected_updates", 0)
            and not record.get("round_skipped", 0))


# statuses of a run that ran to its end (rerunning it would give the same): sweeps skip it
FINISHED = frozenset({"completed", "no-updates"})


def summarize(cfg: RunConfig, records: list[dict[str, Any]], ledger: Ledger, run_dir: Path | None,
              t0: float, status: str, error: str | None = None) -> dict[str, Any]:
    updated = sum(1 for r in records if had_update(r))
    if status == "completed" and updated == 0:
        status = "no-updates"  # it ran to the end, but nothing was ever trained in
    ev = [r for r in records if r.get("test_accuracy") is not None]
    best = max(ev, key=lambda r: r["test_accuracy"]) if ev else {}
    final = records[-1] if records else {}
    return {
        "status": status,
        "error": error,
        "run_dir": str(run_dir) if run_dir else None,
        "config": cfg.as_dict(),
        "rounds_completed": updated,  # rounds whose update changed the model(s)
        "rounds_skipped": sum(1 for r in records if r["round"] >= 1 and not had_update(r)),
        "wall_time_s": time.time() - t0,
        "final": {k: final.get(k) for k in ("round", "test_accuracy", "test_loss", "train_loss")
                  if k in final},
        "best": {"test_accuracy": best.get("test_accuracy"), "round": best.get("round")},
        "totals": {**ledger.cumulative(),
                   "participants": sum(r.get("participants", 0) for r in records),
                   "failures": sum(r.get("failures", 0) for r in records),
                   "rejected_updates": sum(r.get("rejected_updates", 0) for r in records),
                   **{k: sum(r.get(k, 0) for r in records)
                      for k in (*FAULT_COUNTS, "faults_injected", "round_skipped",
                                "malicious_updates")},
                   "retries": sum(max(r.get("attempts", 1) - 1, 0) for r in records),
                   **({"sim_time_s": final["sim_time_s"]} if "sim_time_s" in final else {})},
    }


def strategy_notes(strategy: Any) -> list[str]:
    """The strategy's notes on how it set itself up (e.g. a clamped value), each logged as a
    WARNING now and kept for summary.json."""
    notes = strategy.notes() if isinstance(strategy, PlatformStrategy) else {}
    out = [f"{key}: {text}" for key, text in notes.items()]
    for note in out:
        log.warning("strategy %s: %s", type(strategy).__name__, note)
    return out


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
        try:
            strategy.load_state_dict(doc["strategy"])
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise ConfigError("resume-from", str(resume.run_dir), "the checkpoint's strategy "
                              f"state does not load into {type(strategy).__name__}: "
                              f"{type(err).__name__}: {err}") from None
    if isinstance(loop.grid, EventGrid):  # asynchronous: the clock and the jobs in flight
        if "event_grid" not in doc:
            raise ConfigError("resume-from", str(resume.run_dir), "the checkpoint has no "
                              "event grid section (not written by an asynchronous run)")
        loop.grid.load_state_dict(doc["event_grid"])
    loop.grid.participation.load_state_dict(doc["participation"])
    loop.grid.client_states.load_state_dict(doc.get("client_states", {}))
    loop.ledger.load_state_dict(doc["ledger"])
    loop.records.extend(doc["records"])
    set_rng_states(doc["rng"])
    log.info("resuming %s after round %d", resume.run_dir, resume.last_round)
    return resume.arrays


def ended_by(err: BaseException) -> tuple[str, str | None]:
    """(status, error) of a run that ``err`` ended: a stop is not a failure.

    Flower stops a run (``flwr stop``, Ctrl-C) by SIGINT/SIGTERM of the ServerApp's process,
    whose handler calls ``sys.exit(0)``; the in-process engine sees KeyboardInterrupt.
    """
    from flwr.supercore.run import RunNotRunningException

    if isinstance(err, KeyboardInterrupt | RunNotRunningException) or (
            isinstance(err, SystemExit) and err.code in (0, None)):
        return "stopped", None
    return "failed", f"{type(err).__name__}: {err}"


def build_grid(cfg: RunConfig, strategy: Any, transport: Transport, ledger: Ledger,
               participation: Any, clock: Clock | None, steps: Any,
               adversary: Adversary | None = None) -> VirtualGrid:
    """The virtual grid of the run, with the time services the config asks for: an
    event grid for an asynchronous strategy; else availability at each round's simulated
    start and the round deadline / over-selection."""
    kwargs: dict[str, Any] = {
        "count_server_traffic": not getattr(strategy, "routes_through_server", False),
        "faults": FaultPlan.from_config(cfg), "round_timeout": cfg.round_timeout,
        "adversary": adversary or Adversary.from_config(cfg)}
    availability = build_availability(cfg, cfg.num_clients)
    if getattr(strategy, "asynchronous", False):
        assert clock is not None  # the run config requires it
        return with_codec(EventGrid(transport, cfg.num_clients, ledger, participation,
                                    clock=clock, availability=availability, steps=steps,
                                    **kwargs), cfg, strategy)
    if cfg.availability != "always":
        participation = AvailableAt(participation, availability)
    vgrid = VirtualGrid(transport, cfg.num_clients, ledger, participation, **kwargs)
    if clock is not None and deadline_enabled(cfg):
        vgrid.deadline = Deadline(clock, cfg.round_deadline_s, cfg.over_selection, steps)
    return with_codec(vgrid, cfg, strategy)


def with_codec(vgrid: VirtualGrid, cfg: RunConfig, strategy: Any) -> VirtualGrid:
    """The grid compressing training replies with the run's codec, unless the strategy
    compresses its own messages (CHOCO-SGD: its local training sends nothing)."""
    if not getattr(strategy, "compresses_itself", False):
        vgrid.use_codec(Codec.from_config(cfg))
    return vgrid


def run_experiment(cfg: RunConfig, grid: Grid | None = None,
                   extra_trackers: list[Tracker] | None = None) -> RunResult:
    """Run ``cfg``: on Flower's ``grid`` (engine 'flower') or in this process.

    The run holds its folder's lock (:mod:`flowerbed.run.lock`) while it writes there, and
    the folder keeps ``run.log``: every log record of the run, whatever the console shows.
    """
    with ExitStack() as stack:
        return _run_experiment(cfg, grid, extra_trackers, stack)


def _run_experiment(cfg: RunConfig, grid: Grid | None, extra_trackers: list[Tracker] | None,
                    stack: ExitStack) -> RunResult:
    t0 = time.time()
    check_paths(cfg)
    if grid is None:
        ensure_task_identity()
    run_dir: Path | None
    if cfg.resume_from:
        run_dir = Path(cfg.resume_from)
        stack.enter_context(FolderLock(run_dir, "resume-from"))
    else:
        run_dir = make_run_dir(cfg) if cfg.tracking else None
        if run_dir is not None:
            stack.enter_context(FolderLock(run_dir))
    stack.enter_context(run_log(run_dir))
    seed_everything(cfg.seed)
    data = load_federation(cfg)
    log.info("data %s: %s", cfg.dataset, data.describe())
    model = build_model(cfg, data.input_shape, data.num_classes)
    resume = open_resume(cfg.resume_from, cfg.as_dict(), shapes_of(module_state(model))
                         ) if cfg.resume_from else None
    ledger = Ledger()
    participation = build_participation(cfg, data)
    transport: Transport
    if cfg.engine == "flower" and grid is not None:
        transport = FlowerTransport(grid, cfg)
    else:
        transport = InProcessTransport(cfg)

    def central_eval(state: State) -> dict[str, float]:
        return evaluate(model, state, data.test_x, data.test_y, device=resolve(cfg.device))

    adversary = Adversary.from_config(cfg)
    services = Services(num_nodes=cfg.num_clients, seed=cfg.seed,
                        num_rounds=cfg.num_server_rounds, eval_every=cfg.eval_every,
                        ledger=ledger, evaluate=central_eval,
                        true_probabilities=participation.probabilities,
                        label_counts=data.label_counts(), client_clusters=data.client_clusters,
                        test_clusters=data.test_clusters,
                        test_data=(data.test_x, data.test_y),
                        build_model=lambda seed, k: build_model(cfg, data.input_shape, k, seed),
                        codec=Codec.from_config(cfg),
                        peer_views=adversary.neighbour_views if adversary.per_neighbour
                        else None)
    strategy = wrap_dp(build_strategy(cfg.strategy, cfg, services), cfg, cfg.num_clients)
    notes = strategy_notes(strategy)
    clock = Clock(cfg, cfg.num_clients) if clock_enabled(cfg) else None
    steps = local_steps(cfg, data.sizes, list(range(data.num_clients)))  # once, not per start
    vgrid = build_grid(cfg, strategy, transport, ledger, participation, clock,
                       steps.__getitem__, adversary)
    if vgrid.adversary.active:
        log.info("threat model: attack %s by %d malicious clients %s", cfg.attack,
                 len(vgrid.adversary.malicious), vgrid.adversary.malicious.tolist())
    trackers = TrackerList(build_trackers(cfg) + list(extra_trackers or []))
    loop = RoundLoop(cfg, data, model, vgrid, ledger, strategy, trackers, clock=clock)
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
                   else run_dir.name, first_round=first_round, primary=primary_of(strategy))
    trackers.on_train_begin(info)
    status, error = "completed", None
    collector.settle()  # set up: the collector stops scanning what lives now
    try:
        strategy.start(grid=vgrid, initial_arrays=to_record(initial),
                       num_rounds=cfg.num_server_rounds, timeout=cfg.round_timeout,
                       train_config=ConfigRecord(), evaluate_config=ConfigRecord(),
                       evaluate_fn=loop, **start_kwargs)
    except BaseException as err:
        status, error = ended_by(err)
        raise
    finally:
        summary = summarize(cfg, loop.records, ledger, run_dir, t0, status, error)
        summary["primary"] = primary_summary(info.primary, loop.records)
        summary["notes"] = notes
        if hasattr(strategy, "privacy"):  # a DP run (flowerbed.strategies.dp)
            summary["privacy"] = strategy.privacy()
        if summary["status"] == "no-updates":
            log.warning("NO UPDATES: none of the %d rounds applied a single update (no "
                        "training reply arrived, or every round was skipped); the model is "
                        "the initial one. Check participation, faults and min-replies.",
                        cfg.num_server_rounds)
        summary["records"] = loop.records
        trackers.on_train_end(summary)
        summary.pop("records", None)
    return RunResult(run_dir, loop.records, summary, loop.final_state, strategy)
