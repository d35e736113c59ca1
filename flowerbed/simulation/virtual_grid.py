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
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from flowerbed.clients.compression import decompress, decompress_batch
from flowerbed.clients.injected import CORRUPT, FAIL
from flowerbed.core.arrays import State, from_record, record_nbytes, to_record
from flowerbed.core.codecs import Codec
from flowerbed.core.records import all_of, filled, first
from flowerbed.core.validation import check_reply_record
from flowerbed.core.wire import (
    CLIENT_STATE_KEY,
    CODEC_KEY,
    CODEC_PAYLOAD_KEY,
    directive,
    reply_error,
    round_and_attempt,
    with_directive,
    with_records,
    without_client_state,
)
from flowerbed.simulation.adversary import Adversary, Reply
from flowerbed.simulation.client_state import ClientStates
from flowerbed.simulation.crafted_replies import model_of, with_model
from flowerbed.simulation.deadline import Deadline
from flowerbed.simulation.faults import Fault, FaultPlan
from flowerbed.simulation.ledger import SERVER, Ledger
from flowerbed.simulation.participation import Participation
from flowerbed.simulation.transport import Transport

log = logging.getLogger(__name__)

ERROR_CLIENT_FAILED = 1
ERROR_NO_REPLY = 2
ERROR_LATE = 3
ERROR_CORRUPT = 4


def payload_nbytes(content: RecordDict) -> int:
    return sum(record_nbytes(r) for r in all_of(content, ArrayRecord))


@dataclass
class RoundStats:
    """What the grid saw in one round (read by the round hook for metrics)."""

    participants: int = 0
    failures: int = 0
    loss_sum: float = 0.0
    loss_weight: float = 0.0
    failure_reasons: dict[str, int] = field(default_factory=dict)
    # training replies not used, by cause (they add up to ``failures``)
    failed: int = 0  # the client raised
    dropped: int = 0  # no reply
    late: int = 0  # the reply arrived after the round's timeout
    corrupt: int = 0  # non-finite or wrongly shaped arrays
    injected: int = 0  # faults the fault plan injected into this round's training messages
    malicious: int = 0  # training replies of malicious clients that reached the strategy

    def count(self, cause: str, reason: str, train: bool) -> None:
        """One unusable reply; counted for training, logged (once per round) for both."""
        if train:
            self.failures += 1
            setattr(self, cause, getattr(self, cause) + 1)
        self.failure_reasons[reason] = self.failure_reasons.get(reason, 0) + 1

    @property
    def train_loss(self) -> float | None:
        return self.loss_sum / self.loss_weight if self.loss_weight else None


class VirtualGrid(Grid):
    """What a strategy gets back for a message that produced no usable reply is an
    error reply (``msg.has_error()``), with code ERROR_CLIENT_FAILED (the client raised),
    ERROR_NO_REPLY (dropped out), ERROR_LATE (answered after ``round_timeout``) or
    ERROR_CORRUPT (non-finite arrays, or an array sent as shape s that came back with
    another shape, or an undecodable compressed update). The faulty content itself never
    reaches the strategy, so a strategy that keeps state per node simply keeps that node's
    last good state.
    """

    tracks_uplink = False  # EventGrid: counts replies later, by uplink_nbytes()

    def __init__(self, transport: Transport, num_nodes: int, ledger: Ledger,
                 participation: Participation, run: Run | None = None,
                 count_server_traffic: bool = True, faults: FaultPlan | None = None,
                 round_timeout: float = float("inf"), adversary: Adversary | None = None
                 ) -> None:
        self.transport = transport
        self.faults = faults or FaultPlan(0)
        self.adversary = adversary or Adversary(0, num_nodes)
        self.round_timeout = round_timeout
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
        self.client_states = ClientStates()  # what clients keep between rounds
        self._pending: dict[str, Message] = {}
        # virtual time: replies finishing after the round's deadline (or past the first m of
        # over-selection) are late (flowerbed.simulation.deadline); None: off
        self.deadline: Deadline | None = None
        # update compression (flowerbed.core.codecs): None = replies carry full models
        self.codec: Codec | None = None
        self._uplink: dict[int, int] = {}  # id(reply) -> encoded bytes (for EventGrid)

    def use_codec(self, codec: Codec | None) -> None:
        """Compress every training reply with ``codec`` (None or 'none': off)."""
        self.codec = codec if codec is not None and codec.active else None
        self._codec_marker = ConfigRecord({"codec": self.codec.name if self.codec else ""})

    def uplink_nbytes(self, reply: Message) -> int:
        """The bytes a reply cost on the uplink: its encoded size when compressed."""
        return self._uplink.pop(id(reply), None) or payload_nbytes(reply.content)

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
        return self._available.tolist()  # Python ints, built in C

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
        sizes: dict[int, int] = {}  # per content (a strategy sends one to many nodes)
        for msg in messages:
            dst = msg.metadata.dst_node_id
            if not 0 <= dst < self.num_nodes:
                raise ValueError(
                    f"message to unknown node {dst} (nodes are 0..{self.num_nodes - 1})")
            if self.count_server_traffic:
                content = msg.content
                if id(content) not in sizes:
                    sizes[id(content)] = payload_nbytes(content)
                self.ledger.record(SERVER, dst, sizes[id(content)])
            by_type.setdefault(msg.metadata.message_type, []).append(msg)
        replies: list[Message] = []
        stats = self.round_stats(self.server_round)
        for mtype, msgs in by_type.items():
            kind = "train" if mtype == MessageType.TRAIN else "evaluate"
            train = kind == "train"
            delivered, late = [], set()
            for msg in msgs:
                fault = (self.faults.fault(*round_and_attempt(msg.content),
                                           msg.metadata.dst_node_id)
                         if self.faults.active else None)
                stats.injected += train and fault is not None
                if fault is Fault.DROPPED:  # the node is gone: the message gets no reply
                    reason = "no reply before the round's timeout"
                    replies.append(Message(Error(ERROR_NO_REPLY, reason), reply_to=msg))
                    stats.count("dropped", reason, train)
                    continue
                if fault is Fault.LATE:
                    late.add(len(delivered))
                content = (with_directive(msg.content, FAIL) if fault is Fault.FAILED
                           else with_directive(msg.content, CORRUPT)
                           if fault is Fault.CORRUPT else self._poisoned(msg, train))
                kept = self.client_states.record_for(msg.metadata.dst_node_id) if train \
                    else None
                added: dict[str, ArrayRecord | ConfigRecord] = {}
                if kept is not None:  # after the ledger counted the message: not traffic
                    added[CLIENT_STATE_KEY] = kept
                if train and self.codec is not None:  # compress the reply (plumbing too)
                    added[CODEC_KEY] = self._codec_marker
                if added:  # one copy of the content for both
                    content = with_records(content, added)
                delivered.append((msg, content))
            shapes: dict[int, dict[str, tuple[int, ...]] | None] = {}  # per sent record
            received: dict[int, State] = {}  # per sent model record (decoding)
            out = self.transport.run(
                kind, [(m.metadata.dst_node_id, c) for m, c in delivered], timeout)
            up_sizes: dict[int, int] = {}  # position -> reply bytes, once computed
            if train and self.deadline is not None:
                late |= self._late_by_clock(delivered, out, len(msgs), up_sizes)
            if train and self.adversary.active:
                out = self._attacked(delivered, out, late, stats)
            models = self._decoded_together(delivered, out, late, received) if train else {}
            for pos, ((msg, _), content) in enumerate(zip(delivered, out, strict=True)):
                vid = msg.metadata.dst_node_id
                if content is None:
                    reason = "no reply before the round's timeout"
                    replies.append(Message(Error(ERROR_NO_REPLY, reason), reply_to=msg))
                    stats.count("dropped", reason, train)
                    continue
                content, kept = without_client_state(content)
                reason = reply_error(content)
                if reason is not None:
                    replies.append(Message(Error(ERROR_CLIENT_FAILED, reason), reply_to=msg))
                    stats.count("failed", reason.split(":")[0], train)
                    continue
                if pos in late:  # it answered, but after the round's deadline
                    reason = "reply after the round's timeout (discarded)"
                    replies.append(Message(Error(ERROR_LATE, reason), reply_to=msg))
                    stats.count("late", reason, train)
                    continue
                up = up_sizes.get(pos)  # encoded, as it travelled
                if up is None:
                    up = payload_nbytes(content)
                content, reason = self._decompressed(msg.content, content, received,
                                                     models.get(pos))
                reason = reason or self._corrupt(msg.content, content, shapes)
                if reason is not None:
                    replies.append(Message(Error(ERROR_CORRUPT, reason), reply_to=msg))
                    stats.count("corrupt", reason.split(":")[0], train)
                    continue
                if self.count_server_traffic:
                    self.ledger.record(vid, SERVER, up)
                if kept is not None and train:
                    self.client_states.keep(vid, kept)
                replies.append(Message(content, reply_to=msg))
                if self.codec is not None and self.tracks_uplink:
                    self._uplink[id(replies[-1])] = up
                if kind == "train":
                    stats.participants += 1
                    m = first(content, MetricRecord)
                    if m is not None and "train_loss" in m:
                        w = float(m.get("num-examples", 1.0))
                        stats.loss_sum += float(m["train_loss"]) * w
                        stats.loss_weight += w
        return replies

    def _late_by_clock(self, delivered: list[tuple[Message, RecordDict]],
                       out: list[RecordDict | None], n_sent: int, up_sizes: dict[int, int]
                       ) -> set[int]:
        """Positions of ``delivered`` whose usable replies the deadline makes late; fills
        ``up_sizes`` (position -> the reply's bytes, its kept client state left out: that
        is plumbing, not traffic), which the ledger reuses."""
        assert self.deadline is not None
        usable = [p for p, c in enumerate(out) if c is not None and reply_error(c) is None]
        sizes: dict[int, int] = {}  # per sent record (a broadcast model is one record)
        down = []
        for p in usable:
            sent = delivered[p][0].content
            if id(sent) not in sizes:
                sizes[id(sent)] = payload_nbytes(sent)
            down.append(sizes[id(sent)])
        for p in usable:
            up_sizes[p] = payload_nbytes(without_client_state(out[p])[0])  # type: ignore[arg-type]
        up = [up_sizes[p] for p in usable]
        nodes = [delivered[p][0].metadata.dst_node_id for p in usable]
        late = self.deadline.late(self.server_round, nodes, down, up, n_sent)
        return {usable[i] for i in late}

    # --- the threat model (simulation.adversary): strategies only see its effects
    def _poisoned(self, msg: Message, train: bool) -> RecordDict:
        """The message as delivered: a malicious node's training data may be poisoned."""
        action = self.adversary.directive(msg.metadata.dst_node_id) if train else None
        return msg.content if action is None else with_directive(msg.content, action)

    def _attacked(self, delivered: list[tuple[Message, RecordDict]],
                  out: list[RecordDict | None], late: set[int], stats: RoundStats
                  ) -> list[RecordDict | None]:
        """The round's replies with the malicious nodes' models replaced by crafted ones.

        Only replies that the strategy will receive are read or crafted: not the failed,
        dropped, late or fault-corrupted ones (an omniscient attacker reads every honest
        update that arrives in time). With a codec the attack reads the decoded models and
        a crafted one is encoded like any other update (:mod:`.crafted_replies`).
        """
        usable: list[tuple[int, Reply]] = []
        sent_cache: dict[int, dict[str, np.ndarray]] = {}
        for pos, ((msg, content), reply) in enumerate(zip(delivered, out, strict=True)):
            if (reply is None or pos in late or reply_error(reply) is not None
                    or directive(content) in (FAIL, CORRUPT)):
                continue
            sent_rec = first(msg.content, ArrayRecord)
            if sent_rec is None:
                continue
            if id(sent_rec) not in sent_cache:
                sent_cache[id(sent_rec)] = from_record(sent_rec, copy=False)
            trained = model_of(reply, sent_cache[id(sent_rec)], self.codec)
            if trained is None:
                continue
            usable.append((pos, Reply(msg.metadata.dst_node_id, sent_cache[id(sent_rec)],
                                      trained)))
        crafted = self.adversary.craft(self.server_round, [r for _, r in usable])
        out = list(out)
        for pos, r in usable:
            if not self.adversary.is_malicious(r.node):
                continue
            stats.malicious += 1
            if r.node in crafted:
                reply = out[pos]
                assert reply is not None
                out[pos] = with_model(reply, crafted[r.node], r.sent, self.codec,
                                      delivered[pos][1], self.adversary.seed,
                                      self.server_round, r.node)
        return out

    def _decoded_together(self, delivered: list[tuple[Message, RecordDict]],
                          out: list[RecordDict | None], late: set[int],
                          received: dict[int, State]) -> dict[int, State]:
        """The models x + C(y - x) of the round's compressed replies, decoded together per
        sent model (:func:`~flowerbed.clients.compression.decompress_batch`): position ->
        model. Payloads that cannot be decoded together are left out (decoded one by one
        by :meth:`_decompressed`, which names what is wrong)."""
        if self.codec is None:
            return {}
        groups: dict[int, tuple[ArrayRecord, list[int], list[ArrayRecord]]] = {}
        for pos, ((msg, _), content) in enumerate(zip(delivered, out, strict=True)):
            payload = None if content is None or pos in late else content.get(
                CODEC_PAYLOAD_KEY)
            ref = first(msg.content, ArrayRecord)
            if isinstance(payload, ArrayRecord) and ref is not None:
                group = groups.setdefault(id(ref), (ref, [], []))
                group[1].append(pos)
                group[2].append(payload)
        models: dict[int, State] = {}
        for key, (ref, positions, payloads) in groups.items():
            if len(payloads) < 2:
                continue
            if key not in received:
                received[key] = from_record(ref, copy=False)
            decoded = decompress_batch(self.codec, payloads, received[key])
            if decoded is not None:
                models.update(zip(positions, decoded, strict=True))
        return models

    def _decompressed(self, sent: RecordDict, reply: RecordDict, received: dict[int, State],
                      model: State | None = None) -> tuple[RecordDict, str | None]:
        """(the reply with its model x + C(y - x) decoded, or why the payload is unusable).

        A reply without a codec payload (no codec, or an update sent uncompressed because
        it was not finite) is returned as it is. ``model``: the reply's model, already
        decoded (:meth:`_decoded_together`).
        """
        payload = reply.get(CODEC_PAYLOAD_KEY)
        if self.codec is None or not isinstance(payload, ArrayRecord):
            return reply, None
        ref = first(sent, ArrayRecord)
        if ref is None:
            return reply, "corrupt: a compressed reply to a message without a model"
        if model is None:
            if id(ref) not in received:
                received[id(ref)] = from_record(ref, copy=False)
            try:
                model = decompress(self.codec, payload, received[id(ref)])
            except (KeyError, ValueError, IndexError) as err:
                return reply, f"corrupt: undecodable {self.codec.name} payload ({err})"
        rest = {k: v for k, v in reply.items() if k != CODEC_PAYLOAD_KEY}
        return filled(RecordDict(), {"arrays": to_record(model), **rest}), None

    @staticmethod
    def _corrupt(sent: RecordDict, reply: RecordDict,
                 shapes: dict[int, dict[str, tuple[int, ...]] | None]) -> str | None:
        """Why the reply's arrays are unusable (see :func:`check_reply_record`), or None.

        ``shapes`` caches the sent arrays' shapes per sent record (a broadcast model is
        one record shared by all of a round's messages).
        """
        got = first(reply, ArrayRecord)
        if got is None:
            return None
        if id(sent) not in shapes:
            ref = first(sent, ArrayRecord)
            shapes[id(sent)] = ({k: tuple(a.shape) for k, a in ref.items()}
                                if ref is not None else None)
        return check_reply_record(shapes[id(sent)], got)
