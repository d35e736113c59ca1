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

Checkpoints (:meth:`EventGrid.state_dict`): taken at a server round's end, when every
arrived reply has been read, so the grid's state is the clock, the start counter and the
jobs in flight: each one's times, client, the message it was sent (the model version it
downloaded, stored once however many clients share it) and, if it has trained already,
its reply. A resumed run pops the same jobs in the same order and trains the untrained
ones in the same batches as the uninterrupted run.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Error, Message, MetricRecord

from flowerbed.core.records import first
from flowerbed.core.stored_records import RecordReader, RecordStore
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
            job = Job(finish, self._seq, k, self.now, _tagged(msg, self._seq))
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

    # --- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The clock and the jobs in flight (module docstring), as arrays and JSON."""
        queued = {id(j) for j in self._queue}
        if any(id(j) not in queued for j in self._untrained):
            raise RuntimeError("an arrived job is still unread: checkpoint at a server "
                               "round's end, after the strategy read its replies")
        store = RecordStore()
        jobs = []
        for job in sorted(self._queue):
            msg = job.message
            entry: dict[str, Any] = {
                "finish": job.finish, "seq": job.seq, "node": job.node, "start": job.start,
                "type": msg.metadata.message_type, "group": msg.metadata.group_id,
                "sent": store.put(msg.content)}
            if job.reply is not None:
                if job.reply.has_error():
                    entry["error"] = [int(job.reply.error.code), job.reply.error.reason]
                else:
                    entry["reply"] = store.put(job.reply.content)
                    if id(job.reply) in self._uplink:
                        entry["uplink"] = self._uplink[id(job.reply)]
            jobs.append(entry)
        return {"now": self.now, "seq": self._seq, "batches": list(self.batches),
                "jobs": jobs, "records": store.blobs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` saved (into a grid built from the same config)."""
        reader = RecordReader(list(state["records"]))
        self.now, self._seq = float(state["now"]), int(state["seq"])
        self.batches = [int(b) for b in state["batches"]]
        self._queue, self._untrained = [], []
        self._busy[:] = False
        for e in state["jobs"]:
            node = int(e["node"])
            msg = _tagged(Message(content=reader.get(e["sent"]), dst_node_id=node,
                                  message_type=str(e["type"]), group_id=str(e["group"])),
                          int(e["seq"]))
            job = Job(float(e["finish"]), int(e["seq"]), node, float(e["start"]), msg)
            if "error" in e:
                code, reason = e["error"]
                job.reply = Message(Error(int(code), str(reason)), reply_to=msg)
            elif "reply" in e:
                job.reply = Message(reader.get(e["reply"]), reply_to=msg)
                if "uplink" in e:
                    self._uplink[id(job.reply)] = int(e["uplink"])
            else:
                self._untrained.append(job)
            self._queue.append(job)
            self._busy[node] = True
        heapq.heapify(self._queue)
        self._untrained.sort(key=lambda j: j.seq)  # start order, as they were appended

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
        # by job, not by client: an arrived job not yet read and its client's next job
        # (FedBuff restarts a client before its buffer is read) train in the same batch
        by_job = {r.metadata.reply_to_message_id: r for r in replies}
        for job in jobs:
            job.reply = by_job[job.message.metadata.message_id]

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


def _tagged(msg: Message, seq: int) -> Message:
    """``msg`` with the message id ``job-<seq>``, which its reply carries back as
    ``reply_to_message_id`` (a virtual message never reaches Flower, which would set its
    own id when it is pushed; Flower's Metadata has no setter for it)."""
    msg.metadata.__dict__["_message_id"] = f"job-{seq}"
    return msg


__all__ = ["EventGrid", "Job"]
