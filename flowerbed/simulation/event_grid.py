"""The virtual grid of asynchronous runs: clients start and finish on the simulated clock.

An asynchronous strategy (:mod:`flowerbed.strategies.asynchronous`) does not run rounds; it
starts clients on the model it has now (:meth:`EventGrid.start_clients`) and takes their
replies one at a time, in the order they would arrive (:meth:`EventGrid.next_arrival`).
A job's duration is its client's :meth:`~flowerbed.simulation.clock.Clock.client_seconds`
(its own links and speed; the reply is taken to be as large as the model sent, so the order
is known before anything trains), so the event order is a pure function of the seed: same
seed, same result.

Training is lazy and batched: a started job is not trained until its reply is read; then
*every* started, untrained job is trained in one call of the transport (each on the model
version it was sent: clients started together share one payload), so FedBuff's or
FedAsync's many small starts still reach a worker as large vmap batches. A strategy that
can wait before reading replies (:meth:`EventGrid.next_job`, then :meth:`EventGrid.replies`:
FedBuff reads its K buffered jobs when the K-th arrives) makes the batches larger still:
a batch is every job started since the last one, whatever order they finish in.

Bookkeeping follows simulated time: the ledger counts a job's download when it starts and
its upload when it arrives; participants, losses and failures are counted in the server
round (model version) in which the reply arrives. A client is busy (not offered again)
from its start to its arrival; who can be started is who is online now
(:mod:`flowerbed.simulation.availability`) and allowed by the participation model.
Not modelled: the server link shared by concurrent transfers (each job sees the server
link alone) and a client going offline while it trains.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Message, MetricRecord

from flowerbed.core.records import first
from flowerbed.simulation.availability import Availability
from flowerbed.simulation.clock import Clock
from flowerbed.simulation.ledger import SERVER
from flowerbed.simulation.virtual_grid import (
    ERROR_CLIENT_FAILED,
    ERROR_CORRUPT,
    ERROR_LATE,
    ERROR_NO_REPLY,
    VirtualGrid,
    payload_nbytes,
)

CAUSES = {ERROR_CLIENT_FAILED: "failed", ERROR_NO_REPLY: "dropped", ERROR_LATE: "late",
          ERROR_CORRUPT: "corrupt"}
_TRAINING = -1  # the grid's round while a lazy batch trains (its stats are discarded)


@dataclass(order=True)
class Job:
    """One client's work: sent at ``start``, its reply arrives at ``finish``."""

    finish: float
    seq: int  # start order: breaks ties of equal finish times
    node: int = field(compare=False)
    start: float = field(compare=False)
    message: Message = field(compare=False)
    reply: Message | None = field(default=None, compare=False)


class EventGrid(VirtualGrid):
    """A :class:`VirtualGrid` with an event queue on simulated time (module docstring)."""

    tracks_uplink = True

    def __init__(self, *args: object, clock: Clock, availability: Availability,
                 steps: Callable[[int], int], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.clock = clock
        self.availability = availability
        self.steps = steps
        self.now = 0.0
        self._queue: list[Job] = []
        self._untrained: list[Job] = []
        self._busy = np.zeros(self.num_nodes, dtype=bool)  # started, not yet arrived
        self._seq = 0
        self.batches: list[int] = []  # size of every lazy training batch (for tests, logs)

    # --- what a strategy sees
    def get_node_ids(self) -> Iterable[int]:
        """Clients that can be started now: allowed this round, online now, not busy."""
        ids = self._available
        ids = ids[self.availability.online(self.now)[ids] & ~self._busy[ids]]
        return ids.tolist()  # Python ints, built in C (called at every arrival)

    def in_flight(self) -> int:
        return len(self._queue)

    def start_clients(self, messages: Iterable[Message]) -> None:
        """Send these training messages now; their replies arrive at their finish times."""
        for msg in messages:
            k = msg.metadata.dst_node_id
            if self._busy[k]:
                raise ValueError(f"client {k} is busy (started at an earlier time)")
            nbytes = payload_nbytes(msg.content)
            if self.count_server_traffic:
                self.ledger.record(SERVER, k, nbytes)
            finish = self.now + self.clock.client_seconds(k, nbytes, nbytes, self.steps(k))
            job = Job(finish, self._seq, k, self.now, msg)
            self._seq += 1
            heapq.heappush(self._queue, job)
            self._untrained.append(job)
            self._busy[k] = True

    def next_arrival(self, until: float = math.inf) -> Message | None:
        """The next reply to arrive by ``until``, with the clock moved to its arrival; None
        (the clock moved to ``until``, if finite) when none arrives by then."""
        job = self.next_job(until)
        return None if job is None else self.replies([job])[0]

    def next_job(self, until: float = math.inf) -> Job | None:
        """The next job to arrive by ``until``, its reply not yet read: the clock moves to
        its arrival and the client is free again, but nothing trains until
        :meth:`replies` asks for it (None, the clock moved to ``until`` if finite, when none
        arrives by then).

        A strategy that needs no reply's content for a while (FedBuff, until its buffer
        is full) collects jobs and reads them together, so that every job started in the
        meantime trains in the same batch. It must read them before the server round (model
        version) changes: their traffic and losses count in the round they arrived in.
        """
        if not self._queue or self._queue[0].finish > until:
            if math.isfinite(until):
                self.now = max(self.now, until)
            return None
        job = heapq.heappop(self._queue)
        self.now = max(self.now, job.finish)
        self._busy[job.node] = False
        return job

    def replies(self, jobs: list[Job]) -> list[Message]:
        """The replies of arrived ``jobs``, in order, counted as arrivals of this round;
        trains every started, untrained job first if one of them is untrained."""
        if any(j.reply is None for j in jobs):
            self._train_pending()
        out = []
        for job in jobs:
            assert job.reply is not None
            self._count_arrival(job.reply)
            out.append(job.reply)
        return out

    def wait_for_clients(self, horizon: float = math.inf) -> bool:
        """Move the clock to the first time some client can be started (False if none will
        by ``horizon``: the availability process has no more changes)."""
        t = self.now
        while not self.get_node_ids():
            t = self.availability.next_change(t)
            if not math.isfinite(t) or t > horizon:
                return False
            self.now = t
        return True

    # --- internals
    def _train_pending(self) -> None:
        """Train every started, untrained job in one batch (each on the model it was sent)."""
        jobs, self._untrained = self._untrained, []
        self.batches.append(len(jobs))
        counting, self.count_server_traffic = self.count_server_traffic, False
        server_round, self.server_round = self.server_round, _TRAINING
        try:
            replies = list(self.send_and_receive([j.message for j in jobs]))
        finally:
            self.count_server_traffic, self.server_round = counting, server_round
            self.stats.pop(_TRAINING, None)
        by_node = {r.metadata.src_node_id: r for r in replies}
        for job in jobs:
            job.reply = by_node[job.node]

    def _count_arrival(self, reply: Message) -> None:
        stats = self.round_stats(self.server_round)
        if reply.has_error():
            cause = CAUSES.get(reply.error.code, "failed")
            stats.count(cause, reply.error.reason.split(":")[0], True)
            return
        if self.count_server_traffic:
            self.ledger.record(reply.metadata.src_node_id, SERVER, self.uplink_nbytes(reply))
        stats.participants += 1
        m = first(reply.content, MetricRecord)
        if m is not None and "train_loss" in m:
            w = float(m.get("num-examples", 1.0))
            stats.loss_sum += float(m["train_loss"]) * w
            stats.loss_weight += w


__all__ = ["EventGrid", "Job"]
