"""A Flower ``Grid`` whose nodes are the virtual clients.

Strategies stay plain Flower strategies: they see one node id per virtual client (the
client's partition id), build one message per client, and get one reply per client. Here
the messages of a round are recorded in the communication ledger (what a real deployment
would send: one model per client per direction), handed to a transport that packs them
per worker, and the replies are split back into per-client reply messages.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Error, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from flowerbed.clients.worker import reply_error
from flowerbed.platform.arrays import record_nbytes
from flowerbed.platform.ledger import SERVER, Ledger
from flowerbed.platform.participation import Participation
from flowerbed.platform.transport import Transport

log = logging.getLogger(__name__)

ERROR_CLIENT_FAILED = 1
ERROR_NO_REPLY = 2


def payload_nbytes(content: RecordDict) -> int:
    return sum(record_nbytes(r) for r in content.array_records.values())


@dataclass
class RoundStats:
    """What the grid saw in one round (read by the round hook for metrics)."""

    participants: int = 0
    failures: int = 0
    loss_sum: float = 0.0
    loss_weight: float = 0.0
    failure_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def train_loss(self) -> float | None:
        return self.loss_sum / self.loss_weight if self.loss_weight else None


class VirtualGrid(Grid):
    def __init__(self, transport: Transport, num_nodes: int, ledger: Ledger,
                 participation: Participation, run: Run | None = None,
                 count_server_traffic: bool = True) -> None:
        self.transport = transport
        # False for decentralized strategies: their server traffic is simulation plumbing;
        # they record the peer-to-peer messages a real deployment would send instead.
        self.count_server_traffic = count_server_traffic
        self.num_nodes = num_nodes
        self.ledger = ledger
        self.participation = participation
        self._run = run or Run.create_empty(run_id=0)
        self.server_round = 0
        self._available = np.arange(num_nodes)
        self.stats: dict[int, RoundStats] = {}
        self._pending: dict[str, Message] = {}

    # --- round bookkeeping (driven by the platform's round hook)
    def begin_round(self, server_round: int) -> None:
        self.server_round = server_round
        self.ledger.begin_round(server_round)
        self._available = self.participation.available(server_round)

    def round_stats(self, server_round: int) -> RoundStats:
        return self.stats.setdefault(server_round, RoundStats())

    # --- Grid API
    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type,
                       group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        """The virtual clients reachable this round (participation decides)."""
        return [int(v) for v in self._available]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            mid = f"v{len(self._pending)}-{time.monotonic_ns()}"
            self._pending[mid] = msg
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        msgs = [self._pending.pop(m) for m in message_ids if m in self._pending]
        return self.send_and_receive(msgs)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        if not messages:
            return []
        by_type: dict[str, list[Message]] = {}
        for msg in messages:
            dst = msg.metadata.dst_node_id
            if not 0 <= dst < self.num_nodes:
                raise ValueError(
                    f"message to unknown node {dst} (nodes are 0..{self.num_nodes - 1})")
            if self.count_server_traffic:
                self.ledger.record(SERVER, dst, payload_nbytes(msg.content))
            by_type.setdefault(msg.metadata.message_type, []).append(msg)
        replies: list[Message] = []
        for mtype, msgs in by_type.items():
            kind = "train" if mtype == MessageType.TRAIN else "evaluate"
            out = self.transport.run(kind, [(m.metadata.dst_node_id, m.content) for m in msgs],
                                     timeout)
            stats = self.round_stats(self.server_round)
            for msg, content in zip(msgs, out, strict=True):
                vid = msg.metadata.dst_node_id
                if content is None:
                    reason = "no reply before the round's timeout"
                    replies.append(Message(Error(ERROR_NO_REPLY, reason), reply_to=msg))
                    stats.failures += kind == "train"
                    stats.failure_reasons[reason] = stats.failure_reasons.get(reason, 0) + 1
                    continue
                reason = reply_error(content)
                if reason is not None:
                    replies.append(Message(Error(ERROR_CLIENT_FAILED, reason), reply_to=msg))
                    if kind == "train":
                        stats.failures += 1
                    short = reason.split(":")[0]
                    stats.failure_reasons[short] = stats.failure_reasons.get(short, 0) + 1
                    continue
                if self.count_server_traffic:
                    self.ledger.record(vid, SERVER, payload_nbytes(content))
                replies.append(Message(content, reply_to=msg))
                if kind == "train":
                    stats.participants += 1
                    m = next(iter(content.metric_records.values()), None)
                    if m is not None and "train_loss" in m:
                        w = float(m.get("num-examples", 1.0))
                        stats.loss_sum += float(m["train_loss"]) * w
                        stats.loss_weight += w
        return replies
