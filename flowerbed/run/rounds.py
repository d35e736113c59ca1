"""The round lifecycle: what the platform does at every round boundary, for any strategy.

A strategy's ``start()`` owns its loop (Flower's contract); the platform gets control once
per round through Flower's ``evaluate_fn`` (after round 0, the initial model, and after every
round). :class:`RoundLoop` is that callback, and its two steps are explicit:

- :meth:`RoundLoop.end` closes round r: centralized evaluation, the round's participation,
  fault and ledger figures, the strategy's extra metrics, the trackers, the checkpoint;
- :meth:`RoundLoop.begin` opens round r + 1: the grid draws who is reachable and the
  ledger starts the round's counts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, MetricRecord

from flowerbed.clients.data import FederatedData
from flowerbed.clients.device import resolve
from flowerbed.clients.injected import flip_pair
from flowerbed.clients.training import evaluate
from flowerbed.core.arrays import State, from_record, unflatten
from flowerbed.run.checkpoint import Checkpointer
from flowerbed.run.config import RunConfig
from flowerbed.run.trackers import TrackerList
from flowerbed.simulation.availability import AvailableAt
from flowerbed.simulation.clock import Clock, local_steps
from flowerbed.simulation.event_grid import EventGrid
from flowerbed.simulation.ledger import SERVER, Ledger
from flowerbed.simulation.virtual_grid import VirtualGrid
from flowerbed.strategies.contract import PlatformStrategy

log = logging.getLogger(__name__)

FAULT_COUNTS = ("failed", "dropped", "late", "corrupt")


@dataclass
class RoundLoop:
    """Flower's ``evaluate_fn`` of a run: ``end(r)`` then ``begin(r + 1)`` at each boundary."""

    cfg: RunConfig
    data: FederatedData
    model: torch.nn.Module
    grid: VirtualGrid
    ledger: Ledger
    strategy: Any
    trackers: TrackerList
    records: list[dict[str, Any]] = field(default_factory=list)
    final_state: State | None = None
    t_start: float = field(default_factory=time.time)
    checkpointer: Checkpointer | None = None
    clock: Clock | None = None  # virtual time, when the run config sets it

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        out = self.end(server_round, arrays)
        self.begin(server_round + 1)
        return out

    def begin(self, server_round: int) -> None:
        """Open ``server_round``: who is reachable, and the ledger's new round (once: the
        run opens its first round before ``start()``, and round 0 ends just before it)."""
        if self.grid.server_round != server_round:
            if isinstance(self.grid.participation, AvailableAt):  # who is online at t
                self.grid.participation.now = self.sim_time_so_far()
            self.grid.begin_round(server_round)

    def sim_time_so_far(self) -> float:
        """Simulated seconds at the end of the last recorded round (0 before any)."""
        return float(self.records[-1].get("sim_time_s", 0.0)) if self.records else 0.0

    def end(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Close ``server_round``: evaluate, record, track, checkpoint."""
        state = from_record(arrays)
        if isinstance(self.strategy, PlatformStrategy):
            state = self.strategy.evaluation_state(state)
        self.final_state = state
        rec: dict[str, Any] = {"round": server_round, "wall_time": time.time(),
                               "elapsed_s": time.time() - self.t_start}
        last = server_round == self.cfg.num_server_rounds
        out = None
        if server_round == 0 or last or server_round % self.cfg.eval_every == 0:
            m = evaluate(self.model, state, self.data.test_x, self.data.test_y,
                         device=resolve(self.cfg.device))
            rec["test_accuracy"], rec["test_loss"] = m["accuracy"], m["loss"]
            out = MetricRecord({"test_accuracy": m["accuracy"], "test_loss": m["loss"]})
        stats = self.grid.round_stats(server_round)
        rec["participants"] = stats.participants
        rec["failures"] = stats.failures
        rec.update({k: getattr(stats, k) for k in FAULT_COUNTS})
        rec["faults_injected"] = stats.injected
        if stats.failure_reasons:
            log.warning("round %d: %d unusable replies (%s)", server_round,
                        sum(stats.failure_reasons.values()),
                        ", ".join(f"{k}: {v}" for k, v in stats.failure_reasons.items()))
        rec["train_loss"] = stats.train_loss
        rec.update({f"round_{k}": v for k, v in self.ledger.round_summary(server_round).items()})
        rec.update(self.ledger.cumulative())
        if self.clock is not None:
            rec.update(self.simulated_time(server_round))
        if isinstance(self.strategy, PlatformStrategy):
            rec.update(self.strategy.round_metrics(server_round))
        if self.grid.adversary.active:
            rec.update(self.threat_metrics(server_round, rec, stats.malicious))
        self.records.append(rec)
        self.trackers.after_round(rec)
        if self.checkpointer and self.checkpointer.due(server_round, self.cfg.num_server_rounds):
            # the participation state is that of the round boundary (before begin)
            self.checkpointer.save(server_round, from_record(arrays), self.strategy,
                                   self.grid.participation, self.ledger, self.records,
                                   self.grid.client_states, self.grid if isinstance(
                                       self.grid, EventGrid) else None)
        return out

    def threat_metrics(self, server_round: int, rec: dict[str, Any], malicious: int
                       ) -> dict[str, float]:
        """How many malicious updates reached the strategy (and, for a defence that says
        whom it kept, ``malicious_accepted``: how many of its kept messages came from
        malicious senders), and the honest clients' accuracy.

        Centralized: every honest client gets the global model, so its test accuracy is
        theirs. Decentralized: the mean test accuracy of (up to ``eval-nodes``) honest nodes'
        own models, evaluated when the round is; malicious nodes' models are left out. With a
        targeted label flip 's:t', ``attack_success``: the share of the test examples of
        class s that the same model(s) predict as t.
        """
        out: dict[str, float] = {"malicious_updates": float(malicious)}
        if hasattr(self.strategy, "accepted_senders"):  # a defence that can tell whom it kept
            kept = np.asarray(self.strategy.accepted_senders())
            out["malicious_accepted"] = float(np.isin(kept, self.grid.adversary.malicious).sum())
        if "test_accuracy" not in rec:
            return out
        models = (self.strategy.node_models() if hasattr(self.strategy, "node_models")
                  else None)
        if models is None or len(models) != self.cfg.num_clients:
            out["honest_accuracy"] = rec["test_accuracy"]
            states = [self.final_state] if self.final_state is not None else []
        else:
            honest = np.setdiff1d(np.arange(len(models)), self.grid.adversary.malicious)
            k = min(len(honest), int(getattr(self.strategy.params, "eval_nodes", 20)))
            rows = honest[np.linspace(0, len(honest) - 1, k).round().astype(int)]
            states = [unflatten(models[i], self.strategy.like) for i in rows]
            out["honest_accuracy"] = float(np.mean([evaluate(
                self.model, s, self.data.test_x, self.data.test_y)["accuracy"] for s in states]))
        pair = flip_pair(self.cfg.label_flip_classes)
        if pair is not None and states:
            # the share of class-s test examples the honest model(s) label t
            src = self.data.test_y == pair[0]
            if src.any():
                x, y = self.data.test_x[src], np.full(int(src.sum()), pair[1])
                out["attack_success"] = float(np.mean(
                    [evaluate(self.model, s, x, y)["accuracy"] for s in states]))
        return out

    def simulated_time(self, server_round: int) -> dict[str, float]:
        """The round's duration on the virtual clock, and the run's so far."""
        assert self.clock is not None
        traffic = self.ledger.rounds.get(server_round)
        seconds = 0.0
        deadline = self.grid.deadline
        own = getattr(self.strategy, "round_seconds", None)
        if callable(own) and server_round > 0:  # a round that is a span of time (async gossip)
            seconds = float(own(server_round))
            return {"sim_round_s": seconds, "sim_time_s": self.sim_time_so_far() + seconds}
        if isinstance(self.grid, EventGrid):  # asynchronous: the event loop's own clock
            now = self.grid.now
            return {"sim_round_s": now - self.sim_time_so_far(), "sim_time_s": now}
        if deadline is not None and server_round in deadline.seconds:
            seconds = deadline.seconds[server_round]
        elif server_round > 0 and traffic is not None:
            trained = sorted(k for k in traffic.received if k != SERVER)
            seconds = self.clock.round_seconds(
                traffic, local_steps(self.cfg, self.data.sizes, trained))
        return {"sim_round_s": seconds, "sim_time_s": self.sim_time_so_far() + seconds}


__all__ = ["FAULT_COUNTS", "RoundLoop"]
