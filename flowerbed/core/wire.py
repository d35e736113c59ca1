"""The worker <-> server wire protocol: packed messages, error replies, fault directives.

Packing many virtual clients' messages into one Flower message, and unpacking them:

A worker (one Flower SuperNode) hosts a shard of the virtual clients. Flower's simulation
engine pays per message and per poll, not per FLOP, so a round sends one message per
worker. Inside that message:
- a record shared by several virtual messages (the global model that FedAvg puts in every
  message) is stored once: records are deduplicated by identity;
- per-client records of the same layout (every client's trained model, every client's
  metrics) are stacked: one ``Array`` of shape (clients, *shape) per parameter and one
  list per metric, instead of thousands of small records, each of which Flower would
  hash, serialise and store as separate objects.
Unpacking restores one RecordDict per virtual client with the same keys and values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from flowerbed.core.arrays import fast_array, fast_numpy
from flowerbed.core.records import copied

PACK_KEY = "flowerbed.pack"
ERROR_KEY = "flowerbed.error"  # a worker reply for a client whose work raised
INJECT_KEY = "flowerbed.inject"  # the simulation tells a node to misbehave (see below)
# a client's kept state (client rules), carried between the platform's store and the node;
# platform plumbing, never counted as traffic and never seen by the strategy
CLIENT_STATE_KEY = "flowerbed.client-state"
# client rules (flowerbed.clients.rules): the train-config key naming the rule, the server's
# arrays for it and the client's extra arrays back (both real traffic, counted)
RULE_KEY = "client-rule"
INPUTS_KEY = "rule-inputs"
OUTPUTS_KEY = "rule-outputs"
# update compression (flowerbed.core.codecs): the grid marks a train message whose reply is
# to be compressed (platform plumbing, attached after the ledger counted the message); the
# worker then replies with the encoded update under CODEC_PAYLOAD_KEY instead of "arrays",
# and the grid decodes it before the strategy sees the reply
CODEC_KEY = "flowerbed.codec"
CODEC_PAYLOAD_KEY = "flowerbed.codec-payload"
Item = tuple[int, RecordDict]  # (virtual node id, content)
Record = ArrayRecord | ConfigRecord | MetricRecord


def _signature(record: Record) -> tuple[Any, ...] | None:
    """Records with equal signatures can be stacked into one; None: never stacked."""
    if isinstance(record, ArrayRecord) and len(record):
        return ("a", *((k, a.dtype, tuple(a.shape)) for k, a in record.items()))
    if isinstance(record, MetricRecord) and len(record) and all(
            type(v) in (int, float) for v in record.values()):
        return ("m", *((k, type(v).__name__) for k, v in record.items()))
    return None


def _stack(records: list[Record]) -> Record:
    first = records[0]
    if isinstance(first, ArrayRecord):
        out = ArrayRecord()
        for k in first:
            out[k] = fast_array(np.stack([fast_numpy(r[k], copy=False) for r in records]))  # type: ignore[arg-type]
        return out
    return MetricRecord({k: [r[k] for r in records] for k in first})  # type: ignore[misc]


def _unstack(stacked: Record, kinds: list[str] | None, count: int) -> list[Record]:
    if isinstance(stacked, ArrayRecord):
        cols = {k: fast_numpy(a) for k, a in stacked.items()}
        out = []
        for i in range(count):
            rec = ArrayRecord()
            for k, v in cols.items():
                rec[k] = fast_array(v[i])
            out.append(rec)
        return out
    casts = {"int": int, "float": float}
    keys = list(stacked.keys())
    cast = [casts[t] for t in kinds or []]
    return [MetricRecord({k: c(stacked[k][i])  # type: ignore[index]
                          for k, c in zip(keys, cast, strict=True)}) for i in range(count)]


def pack(items: Sequence[Item]) -> RecordDict:
    """One RecordDict holding every item; shared records once, per-client ones stacked."""
    uses: dict[int, int] = {}
    for _, content in items:
        for record in content.values():
            uses[id(record)] = uses.get(id(record), 0) + 1
    groups: dict[tuple[Any, ...], list[Record]] = {}
    for _, content in items:
        for record in content.values():
            sig = _signature(record) if uses[id(record)] == 1 else None
            if sig is not None:
                groups.setdefault(sig, []).append(record)
    out = RecordDict()
    where: dict[int, str] = {}  # id(record) -> "slot" or "slot:row"
    stacks: list[list[Any]] = []  # [slot, metric value kinds or None, count]
    for sig, members in groups.items():
        if len(members) < 2:
            continue
        slot = f"s{len(stacks)}"
        out[slot] = _stack(members)
        kinds = [t for _, t in sig[1:]] if sig[0] == "m" else None
        stacks.append([slot, kinds, len(members)])
        for row, record in enumerate(members):
            where[id(record)] = f"{slot}:{row}"
    layout: list[list[list[str]]] = []
    for _, content in items:
        entry = []
        for name, record in content.items():
            ref = where.get(id(record))
            if ref is None:
                ref = str(len(where))
                where[id(record)] = ref
                out[ref] = record
            entry.append([name, ref])
        layout.append(entry)
    out[PACK_KEY] = ConfigRecord({"ids": [int(i) for i, _ in items],
                                  "layout": json.dumps(layout),
                                  "stacks": json.dumps(stacks)})
    return out


def unpack(packed: RecordDict) -> list[Item]:
    """Inverse of :func:`pack`; items that shared a record share the same object again."""
    meta = packed[PACK_KEY]
    ids = list(meta["ids"])  # type: ignore[arg-type]
    layout = json.loads(str(meta["layout"]))
    rows: dict[str, list[Record]] = {}
    for slot, kinds, count in json.loads(str(meta.get("stacks", "[]"))):
        rows[slot] = _unstack(packed[slot], kinds, count)  # type: ignore[arg-type]
    items: list[Item] = []
    for vid, entry in zip(ids, layout, strict=True):
        content = RecordDict()
        for name, ref in entry:
            slot, _, row = ref.partition(":")
            content[name] = rows[slot][int(row)] if row else packed[slot]
        items.append((int(vid), content))
    return items


# --- per-client replies and directives ---------------------------------------------------------


def error_reply(reason: str) -> RecordDict:
    """The reply for a client whose work raised: the reason, never partial results."""
    return RecordDict({ERROR_KEY: ConfigRecord({"reason": reason})})


def reply_error(content: RecordDict) -> str | None:
    """The failure reason carried by a worker reply, or None if it succeeded."""
    if ERROR_KEY in content:
        return str(content[ERROR_KEY]["reason"])
    return None


def round_and_attempt(content: RecordDict) -> tuple[int, int]:
    """(server-round, attempt) from a message's first config record (0 when absent).

    The grid and the worker both read a message's coordinates from here (seeded draws of
    faults and local shuffling), so they agree for any strategy that puts ``server-round``
    in its configs, as Flower's own strategies do.
    """
    for record in content.values():
        if isinstance(record, ConfigRecord) and record is not content.get(INJECT_KEY):
            return int(record.get("server-round", 0)), int(record.get("attempt", 0))
    return 0, 0


def with_directive(content: RecordDict, action: str) -> RecordDict:
    """``content`` plus a directive to the node (``action``: 'fail' or 'corrupt').

    A new RecordDict holding the same records, so a payload shared by many messages stays
    shared (packing stores it once) and the strategy's own message is left as it was.
    """
    return copied(content, {INJECT_KEY: ConfigRecord({"action": action})})


def directive(content: RecordDict) -> str | None:
    """The action the simulation asks of the node for this message, or None."""
    record = content.get(INJECT_KEY)
    return None if record is None else str(record["action"])


# --- a client's kept state ---------------------------------------------------------------------


def with_records(content: RecordDict, records: Mapping[str, Record]) -> RecordDict:
    """``content`` plus ``records`` (e.g. the client's kept state under
    :data:`CLIENT_STATE_KEY`, the codec marker under :data:`CODEC_KEY`): one new RecordDict
    per message, whose shared payloads stay shared."""
    return copied(content, records)


def client_state_of(content: RecordDict) -> ArrayRecord | None:
    record = content.get(CLIENT_STATE_KEY)
    return record if isinstance(record, ArrayRecord) else None


def without_client_state(content: RecordDict) -> tuple[RecordDict, ArrayRecord | None]:
    """(the reply as the strategy sees it, the client's new kept state or None)."""
    state = client_state_of(content)
    if state is None:
        return content, None
    return copied(content, drop=CLIENT_STATE_KEY), state
