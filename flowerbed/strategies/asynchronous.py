"""The documented base of asynchronous strategies: updates applied as they arrive.

Synchronous FedAvg waits for its slowest sampled client every round. An asynchronous server
keeps C clients (``concurrency``) training at all times, each on the model version it
downloaded, and changes the global model as replies arrive; an update computed on version
tau and applied to version t has staleness t - tau. One *server round* here is one change of
the global model (FedAsync: every reply; FedBuff: every K replies; FedFix: every window of
fixed length), so ``num-server-rounds``, evaluation and the metrics count model versions.

The event order comes from the platform's virtual clock: the strategy runs on an event grid
(:class:`EventLoopGrid`; the platform's is ``flowerbed.simulation.event_grid.EventGrid``)
that starts clients and hands back their replies in simulated arrival order. Strategies
never see device speeds; only FedFix reads the clock, whose window length is its parameter.

Subclasses implement :meth:`AsyncStrategy.on_arrival` (arrival-driven) or override the loop
(FedFix). Checkpoints are taken at a server round's end (the platform's ``evaluate_fn``),
when every arrived reply has been read: the strategy's declared state (the model versions
clients in flight still hold, who holds which, the sampling RNG, the counters, the
staleness log; FedBuff's buffer) and the event grid's (the clock and the jobs in flight,
``EventGrid.state_dict``) are then the whole loop's state, and ``start(first_round=r + 1)``
continues the loop where it stood.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from flowerbed.core.arrays import State, from_record, to_record
from flowerbed.core.errors import ConfigError
from flowerbed.core.params import non_negative, one_of, param, positive
from flowerbed.core.records import filled
from flowerbed.core.rng import Stream, stream
from flowerbed.strategies.base import CentralizedParams, CentralizedStrategy, ClientUpdate
from flowerbed.strategies.contract import Services, messages, payload

log = logging.getLogger(__name__)


@runtime_checkable
class EventLoopGrid(Protocol):
    """What an asynchronous strategy needs from its grid, besides Flower's Grid API."""

    now: float  # simulated seconds

    def get_node_ids(self) -> Iterable[int]: ...  # clients that can be started now

    def in_flight(self) -> int: ...

    def start_clients(self, messages: Iterable[Message]) -> None: ...

    def next_arrival(self, until: float = math.inf) -> Message | None: ...

    def next_job(self, until: float = math.inf) -> Any | None: ...  # arrived, not yet read

    def replies(self, jobs: list[Any]) -> list[Message]: ...  # read arrived jobs, in order

    def wait_for_clients(self, horizon: float = math.inf) -> bool: ...


@dataclass(frozen=True)
class AsyncParams(CentralizedParams):
    concurrency: int = param(10, "asynchronous: clients training at any time, C", positive)


@dataclass(frozen=True)
class StalenessParams(AsyncParams):
    """The staleness functions s(t - tau) of FedAsync (Xie et al. 2019, sec. 5.2)."""

    staleness: str = param("polynomial", "asynchronous: staleness function s: constant, "
                           "polynomial (t-tau+1)^-a, hinge", one_of("constant", "polynomial",
                                                                    "hinge"))
    staleness_a: float = param(0.5, "asynchronous: staleness function's a", non_negative)
    staleness_b: float = param(4.0, "asynchronous: hinge staleness function's b",
                               non_negative)


def staleness_weight(kind: str, a: float, b: float) -> Callable[[int], float]:
    """s(t - tau): constant 1; polynomial (t - tau + 1)^-a; hinge 1 if t - tau <= b, else
    1 / (a (t - tau - b) + 1) (Xie et al. 2019, sec. 5.2)."""
    if kind == "constant":
        return lambda s: 1.0
    if kind == "polynomial":
        return lambda s: float((s + 1.0) ** -a)
    return lambda s: 1.0 if s <= b else 1.0 / (a * (s - b) + 1.0)


class AsyncStrategy(CentralizedStrategy):
    """The arrival-driven loop (module docstring); subclasses define :meth:`on_arrival`."""

    Params = AsyncParams
    asynchronous: ClassVar[bool] = True
    # the in-flight jobs themselves live in the event grid, checkpointed beside this
    state_fields = ("async_rng", "version", "sent", "models", "jobs", "staleness_log")
    # the current version's record (rebuilt on demand); arrivals read before the next version
    scratch_fields = ("_content", "_deferred")

    def __init__(self, params: AsyncParams, services: Services) -> None:
        super().__init__(params, services)
        self.async_rng = stream(services.seed, Stream.ASYNC_SAMPLING)
        self.version = 0  # model versions so far: the t of staleness t - tau
        self.sent: dict[int, int] = {}  # client in flight -> version it was sent
        self.models: dict[int, State] = {}  # versions still held by a client in flight
        self.jobs = 0  # start batches so far: a job's seed coordinate
        self.staleness_log: dict[int, list[int]] = {}  # server round -> staleness applied
        self._content: tuple[int, Any] | None = None  # (version, payload) being sent
        # arrived jobs not yet read: (job, version it was sent, staleness at arrival)
        self._deferred: list[tuple[Any, State, int]] = []

    @classmethod
    def check_params(cls, params: AsyncParams, num_nodes: int) -> None:
        super().check_params(params, num_nodes)
        if params.concurrency > num_nodes:
            raise ConfigError("concurrency", params.concurrency,
                              f"must be <= num-clients ({num_nodes})")

    # --- the loop
    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3,
              timeout: float = 3600, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
              first_round: int = 1) -> Result:
        """Keep C clients busy; apply replies in arrival order until ``num_rounds`` model
        versions exist (or no client will ever be reachable again). ``first_round`` > 1
        resumes after version ``first_round - 1`` from the loaded state."""
        events = self._events(grid)
        result = Result()
        if not self.resumed(first_round, initial_arrays):
            self.global_state = from_record(initial_arrays)
            if evaluate_fn:
                evaluate_fn(0, initial_arrays)
        while self.version < num_rounds:
            self.fill(events)
            job = events.next_job()
            if job is None:  # nobody in flight: wait until somebody can start
                self.read_arrived(events)  # (cannot change the model: see due())
                if not events.wait_for_clients():
                    log.warning("%s: no client will be reachable again; stopping after %d "
                                "of %d versions", type(self).__name__, self.version, num_rounds)
                    break
                continue
            self.defer(job)
            if self.due() and self.read_arrived(events) and evaluate_fn:
                evaluate_fn(self.version, to_record(self.global_state))
        self.read_arrived(events)
        result.arrays = to_record(self.global_state)
        return result

    def resumed(self, first_round: int, initial_arrays: ArrayRecord) -> bool:
        """Whether this start resumes (the state was loaded from a checkpoint after version
        ``first_round - 1``, whose global model is ``initial_arrays``)."""
        if first_round <= 1:
            return False
        if self.version != first_round - 1 or self.global_state is None:
            raise RuntimeError(f"{type(self).__name__}: resuming at version {first_round} "
                               f"needs the checkpointed state of version {first_round - 1} "
                               f"(loaded: version {self.version})")
        return True

    @staticmethod
    def _events(grid: Grid) -> EventLoopGrid:
        if not isinstance(grid, EventLoopGrid):
            raise TypeError("an asynchronous strategy runs on the platform's event grid "
                            "(flowerbed's runner builds it, in both engines); got "
                            f"{type(grid).__name__}")
        return grid

    def fill(self, grid: EventLoopGrid) -> None:
        """Start idle, reachable clients on the current model, up to C in flight."""
        free = self.params.concurrency - grid.in_flight()
        idle = sorted(grid.get_node_ids())
        if free <= 0 or not idle:
            return
        k = min(free, len(idle))
        chosen = sorted(idle[i] for i in self.async_rng.choice(len(idle), size=k,
                                                               replace=False))
        self.jobs += 1
        if self._content is None or self._content[0] != self.version:
            self._content = (self.version, to_record(self.global_state))
        config = filled(ConfigRecord(), {"server-round": self.jobs, "attempt": 0})
        content = payload(self._content[1], config)  # one shared payload: carried once
        self.models.setdefault(self.version, self.global_state)  # type: ignore[arg-type]
        for node in chosen:
            self.sent[node] = self.version
        grid.start_clients(messages(((n, content) for n in chosen), MessageType.TRAIN,
                                    str(self.version)))

    def arrive(self, reply: Message) -> bool:
        """Handle one reply; True when the global model changed (a new version)."""
        tau, sent = self._arrived(reply.metadata.src_node_id)
        return self._apply(reply, sent, self.version - tau)

    def defer(self, job: Any) -> None:
        """A job has arrived (its client is free again); its reply is read later, by
        :meth:`read_arrived`, with the staleness it has now."""
        tau, sent = self._arrived(job.node)
        self._deferred.append((job, sent, self.version - tau))

    def due(self) -> bool:
        """Must the arrived replies be read now? They must before the model can change;
        an arrival-driven strategy reads each at once. FedBuff waits until K have arrived:
        results are the same (a reply's content never decides when it arrives, and invalid
        ones only delay the step), but the jobs started meanwhile train in one batch."""
        return True

    def read_arrived(self, grid: EventLoopGrid) -> bool:
        """Read the deferred replies in arrival order; True when the model changed."""
        if not self._deferred:
            return False
        deferred, self._deferred = self._deferred, []
        replies = grid.replies([job for job, _, _ in deferred])
        changed = False
        for reply, (_, sent, staleness) in zip(replies, deferred, strict=True):
            if changed:
                raise RuntimeError(f"{type(self).__name__}: a deferred reply arrived after "
                                   "the model changed (due() waited too long)")
            changed = self._apply(reply, sent, staleness)
        return changed

    def _arrived(self, node: int) -> tuple[int, State]:
        tau = self.sent.pop(node)
        sent = self.models[tau]
        self._release(tau)
        return tau, sent

    def _apply(self, reply: Message, sent: State, staleness: int) -> bool:
        updates = self.decode(self.version + 1, [reply])
        if not updates:
            return False
        self.staleness_log.setdefault(self.version + 1, []).append(staleness)
        new_state = self.on_arrival(updates[0], sent, staleness)
        if new_state is None:
            return False
        self.global_state = new_state
        self.version += 1
        held = set(self.sent.values())
        self.models = {v: m for v, m in self.models.items() if v in held}
        return True

    def _release(self, tau: int) -> None:
        """Forget model version tau once no client in flight holds it."""
        if tau != self.version and tau not in self.sent.values():
            self.models.pop(tau, None)

    def on_arrival(self, update: ClientUpdate, sent: State, staleness: int) -> State | None:
        """The new global state after ``update`` (trained on ``sent``, ``staleness``
        versions ago), or None while the server model stays as it is."""
        raise NotImplementedError

    def round_metrics(self, server_round: int) -> dict[str, float]:
        s = self.staleness_log.get(server_round, [])
        return {**super().round_metrics(server_round),
                "updates_applied": float(len(s)),
                "staleness_mean": float(sum(s) / len(s)) if s else 0.0,
                "staleness_max": float(max(s, default=0))}


def delta(update: ClientUpdate, sent: State) -> dict[str, Any]:
    """x_i - x_tau, in float64."""
    return {k: update.state[k].astype("float64") - sent[k] for k in sent}


__all__ = ["AsyncParams", "AsyncStrategy", "EventLoopGrid", "StalenessParams", "delta",
           "staleness_weight"]
